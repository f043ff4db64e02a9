//! The native backend: strata-linux on the host, like runc and crun.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Spec};
use strata_linux::container::{self, BeforeExec, CreateOptions};
use strata_linux::exec::{self, ExecOptions};
use strata_linux::proc::{pidfd_open, pidfd_send_signal};

use strata_agent_protocol::NOT_RUNNING;

use crate::backend::contract::{Backend, CreateRequest, Created, ExecRequest};
use crate::state::{self, hook_state_json, Record};

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
    let request = &req.container;
    let hook_state =
        |pid: i32, status: &str| hook_state_json(request.id, pid, status, request.bundle, spec);
    let opts = CreateOptions {
        request,
        spec,
        hook_state: &hook_state,
        extra_seccomp: extras.seccomp,
        before_exec: extras.before_exec,
    };
    let rootfs = container::rootfs_of(spec, request.bundle)?;
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
        request: req,
        init_pid: rec.pid,
        cgroups: &rec.cgroups,
        seccomp,
        before_exec: extras.before_exec,
        state: rec.hook_state(rec.pid, "running"),
        personality: container::personality_of_spec(&rec.spec)?,
        is_init: &|| state::process_alive(rec.pid, rec.pid_start),
    };
    Ok(exec::spawn(&opts)?)
}

impl Backend for Native {
    fn create(&self, req: &CreateRequest) -> Result<Created> {
        create_with(req, req.container.spec, Extras::default())
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
        let freeze = !rec.cgroups.is_none()
            && !rec.cgroups.is_frozen()
            && rec.cgroups.set_frozen(true).is_ok();
        for pid in crate::backend::contract::container_pids(rec) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        if freeze {
            rec.cgroups.set_frozen(false)?;
        }
        Ok(())
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
        for pid in crate::backend::contract::container_pids(rec) {
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

/// Signals the init through a pidfd opened while its start time still matches, so a reused
/// PID is never hit.
fn signal_init(rec: &Record, sig: Signal) -> Result<()> {
    let fd = pidfd_open(rec.pid).context(NOT_RUNNING)?;
    if !state::process_alive(rec.pid, rec.pid_start) {
        bail!("{NOT_RUNNING}");
    }
    if !pidfd_send_signal(&fd, sig) {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sending {sig} to pid {}", rec.pid));
    }
    Ok(())
}
