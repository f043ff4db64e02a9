//! The native backend: strata-linux on the host, like runc and crun.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};
use strata_linux::cgroups::stats::Stats;
use strata_linux::container::{self, BeforeExec, CreateOptions};
use strata_linux::exec::{self, ExecOptions};
use strata_linux::proc::pidfd_open;

use crate::backend::{Backend, CreateRequest, Created, ExecRequest};
use crate::state::{self, hook_state_json, ContainerDir, Record};

pub struct Native;

/// How long `delete --force` waits for SIGKILLed processes to be gone.
const KILL_WAIT_MS: u16 = 10_000;

/// What a stronger backend adds to a native container: seccomp profiles after the bundle's,
/// and a last step before execve.
#[derive(Default, Clone, Copy)]
pub struct Extras<'a> {
    pub seccomp: &'a [LinuxSeccomp],
    pub before_exec: Option<&'a BeforeExec>,
}

/// `create` as the native backend does it, with `spec` (possibly the backend's amended copy
/// of the bundle's) and the backend's extras.
pub fn create_with(req: &CreateRequest, spec: &Spec, extras: Extras) -> Result<Created> {
    let hook_state =
        |pid: i32, status: &str| hook_state_json(req.id, pid, status, req.bundle, spec);
    let opts = CreateOptions {
        id: req.id,
        bundle: req.bundle,
        spec,
        no_pivot: req.no_pivot,
        console: req.console,
        preserve_fds: req.preserve_fds,
        extra_env: req.extra_env.clone(),
        start_listener: req.start_listener,
        close_in_child: req.close_in_child.clone(),
        hook_state: &hook_state,
        on_cgroups: req.on_cgroups,
        extra_seccomp: extras.seccomp,
        before_exec: extras.before_exec,
    };
    let rootfs = container::rootfs_of(spec, req.bundle)?;
    let created = container::create(&opts)?;
    Ok(Created {
        pid: created.pid,
        rootfs,
        cgroups: created.cgroups,
    })
}

/// `exec` as the native backend does it, with the backend's extras.
pub fn exec_with(rec: &Record, req: &ExecRequest, extras: Extras) -> Result<i32> {
    let seccomp = rec
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .into_iter()
        .chain(extras.seccomp.iter())
        .collect();
    let opts = ExecOptions {
        init_pid: rec.pid,
        process: req.process,
        console: req.console,
        preserve_fds: req.preserve_fds,
        extra_env: req.extra_env.clone(),
        cgroups: &rec.cgroups,
        seccomp,
        before_exec: extras.before_exec,
        state: rec.hook_state(rec.pid, "running"),
        personality: container::personality_of_spec(&rec.spec)?,
        close_in_child: req.close_in_child.clone(),
        is_init: &|| state::process_alive(rec.pid, rec.pid_start),
    };
    Ok(exec::spawn(&opts)?)
}

impl Backend for Native {
    fn create(&self, req: &CreateRequest) -> Result<Created> {
        create_with(req, req.spec, Extras::default())
    }

    fn start(&self, dir: &ContainerDir, rec: &Record) -> Result<()> {
        // Relative to the state dir: socket paths are limited to 108 bytes.
        std::env::set_current_dir(&dir.path)?;
        let mut conn = UnixStream::connect(state::START_SOCKET)
            .context("the container's init is no longer waiting for start")?;
        conn.write_all(b"1")?;
        // Gone socket = started, for `state` even if we die before recording it.
        let _ = std::fs::remove_file(state::START_SOCKET);
        strata_linux::fault::point("start:after-signal");
        // The init's copy closes on a successful execve; anything it writes is its error
        // (its own text, or the exec trampoline's errno).
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        let arg0 = rec
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        if let Some(msg) = strata_linux::trampoline::decode_reply(&reply, &arg0) {
            bail!("{msg}");
        }
        Ok(())
    }

    fn signal(&self, rec: &Record, sig: Signal, all: bool) -> Result<()> {
        if !all {
            return signal_init(rec, sig);
        }
        if sig == Signal::SIGKILL && rec.cgroups.kill_all_v2() {
            return Ok(());
        }
        // Frozen, the processes cannot fork new ones between our reading the list and the
        // signal arriving.
        let freeze = !rec.cgroups.is_frozen() && rec.cgroups.set_frozen(true).is_ok();
        for pid in rec.cgroups.pids() {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        if freeze {
            rec.cgroups.set_frozen(false)?;
        }
        Ok(())
    }

    fn pause(&self, rec: &Record) -> Result<()> {
        Ok(rec.cgroups.set_frozen(true)?)
    }

    fn resume(&self, rec: &Record) -> Result<()> {
        Ok(rec.cgroups.set_frozen(false)?)
    }

    fn update(&self, rec: &Record, resources: &LinuxResources) -> Result<()> {
        let devices = rec
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        Ok(rec.cgroups.apply(resources, &devices)?)
    }

    fn stats(&self, rec: &Record) -> Result<Stats> {
        Ok(strata_linux::cgroups::stats::read(&rec.cgroups))
    }

    fn pids(&self, rec: &Record) -> Result<Vec<i32>> {
        Ok(rec.cgroups.pids())
    }

    fn oom_kills(&self, rec: &Record) -> u64 {
        rec.cgroups.oom_kills()
    }

    fn oom_notifier(&self, rec: &Record) -> Result<Option<(std::os::fd::OwnedFd, bool)>> {
        Ok(rec.cgroups.oom_notifier()?)
    }

    fn exec(&self, rec: &Record, req: &ExecRequest) -> Result<i32> {
        exec_with(rec, req, Extras::default())
    }

    fn destroy(&self, rec: &Record) -> Result<()> {
        // pidfds first, so that we wait on exactly the processes we kill.
        let mut pidfds = Vec::new();
        // A create killed before its clone recorded no init (pid 0).
        let init = if rec.pid > 0 {
            pidfd_open(rec.pid).ok()
        } else {
            None
        };
        if let Some(fd) = init {
            if state::process_alive(rec.pid, rec.pid_start) {
                pidfds.push((rec.pid, fd));
            }
        }
        for pid in rec.cgroups.pids() {
            if pid != rec.pid {
                if let Ok(fd) = pidfd_open(pid) {
                    pidfds.push((pid, fd));
                }
            }
        }
        for (_, fd) in &pidfds {
            pidfd_send_signal(fd, Signal::SIGKILL);
        }
        if rec.cgroups.is_frozen() {
            // Frozen tasks cannot act on SIGKILL until thawed.
            rec.cgroups.set_frozen(false)?;
        }
        for (pid, fd) in &pidfds {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            if let Ok(0) = poll(&mut fds, PollTimeout::from(KILL_WAIT_MS)) {
                bail!("process {pid} of the container did not die after SIGKILL");
            }
        }
        rec.cgroups.remove();
        Ok(())
    }
}

pub fn pidfd_send_signal(fd: &std::os::fd::OwnedFd, sig: Signal) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

/// Signals the init through a pidfd opened while its start time still matches, so a reused
/// PID is never hit.
fn signal_init(rec: &Record, sig: Signal) -> Result<()> {
    let fd = pidfd_open(rec.pid).context("container not running")?;
    if !state::process_alive(rec.pid, rec.pid_start) {
        bail!("container not running");
    }
    if !pidfd_send_signal(&fd, sig) {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sending {sig} to pid {}", rec.pid));
    }
    Ok(())
}
