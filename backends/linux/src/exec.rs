//! Running an extra process in a running container (`exec`): into its cgroup and namespaces,
//! with the same process setup as the init, then execve.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType as NsType, Process};

use crate::cgroups::CgroupSet;
use crate::container::prepare_process;
use crate::container::ProcessIo;
use crate::error::{Context, Error, Result};
use crate::lsm::Plan;
use crate::namespaces::{self, JOIN_ORDER};
use crate::proc::{clone_into_cgroup, clone_process, pidfd_open};
use crate::process;
use crate::seccomp;
use crate::sync::{Channel, Message};
use crate::trampoline::Trampoline;

/// One `exec` as the runtime's caller asked for it, carried down unchanged.
#[derive(Clone)]
pub struct ExecRequest<'a> {
    pub process: &'a Process,
    /// What the process gets of its caller's (console, fds, environment).
    pub io: ProcessIo,
    /// Sub-cgroups of the container's to place the process in (`exec --cgroup`).
    pub sub_cgroups: &'a crate::cgroups::SubCgroups,
}

/// The backend's part of one `exec`, around the caller's request.
pub struct ExecOptions<'a> {
    pub request: &'a ExecRequest<'a>,
    /// Host PID of the container's init.
    pub init_pid: i32,
    pub cgroups: &'a CgroupSet,
    /// The container's seccomp profiles (the bundle's, then the backend's): exec'd processes
    /// are confined like the init.
    pub seccomp: Vec<&'a oci_spec::runtime::LinuxSeccomp>,
    /// Runs in the process right before execve, as for the init.
    pub before_exec: Option<&'a crate::container::BeforeExec>,
    /// The container's state JSON, for a seccomp `listenerPath`.
    pub state: Vec<u8>,
    /// The container's `linux.personality`, for personality(2).
    pub personality: Option<libc::c_ulong>,
    /// Whether `init_pid` is still the container's init (by its start time), asked once a
    /// pidfd holds the process: the number may have been reused since the state was read.
    pub is_init: &'a dyn Fn() -> bool,
}

/// The init's root directory, opened through /proc while the pidfd proves that `pid` is still
/// the init (its number was not reused in between).
fn open_root_of(pid: i32, pidfd: &OwnedFd) -> Result<OwnedFd> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("opening the root of the container's init {pid}"))?;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).ctx(|| "poll".into())? != 0 {
        return Err(Error::Child(format!(
            "the container's init {pid} has exited"
        )));
    }
    Ok(root)
}

/// Starts the process; returns its host PID once the workload's execve has succeeded.
pub fn spawn(opts: &ExecOptions) -> Result<i32> {
    let pidfd: OwnedFd =
        pidfd_open(opts.init_pid).ctx(|| format!("container init {}", opts.init_pid))?;
    if !(opts.is_init)() {
        return Err(Error::Child(format!(
            "the container's init {} has exited",
            opts.init_pid
        )));
    }
    let root = open_root_of(opts.init_pid, &pidfd)?;
    let mut flags = CloneFlags::empty();
    for typ in JOIN_ORDER {
        if typ != NsType::Pid && namespaces::differs_from_ours(opts.init_pid, typ) {
            flags |= namespaces::clone_flag(typ);
        }
    }
    // The container's pid namespace is entered last, by a second fork (see `exec_child`):
    // born in it, a process is the container's to signal and, with CAP_SYS_PTRACE, to
    // ptrace, and it must by then have nothing of the host's left.
    let enter_pid_ns = namespaces::differs_from_ours(opts.init_pid, NsType::Pid);
    if enter_pid_ns {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    // Born in the v2 cgroup and moving itself into the v1 ones: no global cgroup lock (see
    // cgroups::Placement).
    let placement = opts.cgroups.placement_in(opts.request.sub_cgroups)?;
    let v2_procs = placement
        .v2_procs
        .as_ref()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .ctx(|| format!("opening {}", p.display()))
        })
        .transpose()?;
    let filters = seccomp::compile_chain(&opts.seccomp)?;
    let keep = 3 + opts.request.io.preserve_fds;
    // The workload's exec goes through the trampoline (see `trampoline`), which reports its
    // failure on this pipe; a successful exec closes the write end.
    let mut trampoline = match Trampoline::new(keep) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("the workload is exec'd without the trampoline: {e}");
            None
        }
    };
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe for exec".into())?;
    let lsm = Plan::for_process(opts.request.process)?;
    let (parent_chan, child_chan) = Channel::pair()?;
    let into = placement.v2_dir.as_ref().map(|f| f.as_raw_fd());
    let affinity = crate::affinity::ExecAffinity::of(opts.request.process)?;
    let (pid, born_in_v2) = affinity.spawning(|| {
        Ok(
            match into.and_then(|fd| clone_into_cgroup(CloneFlags::empty(), fd)) {
                Some(p) => (p, true),
                None => (clone_process(CloneFlags::empty())?, false),
            },
        )
    })?;
    let fork_result = if pid == 0 {
        ForkResult::Child
    } else {
        ForkResult::Parent {
            child: Pid::from_raw(pid),
        }
    };
    let v2_procs = if born_in_v2 { None } else { v2_procs };
    match fork_result {
        ForkResult::Child => {
            drop(parent_chan);
            drop(err_r);
            let Ok(chan_fd) = process::move_fd_above(child_chan.raw(), keep) else {
                // SAFETY: ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(127) }
            };
            // The number was moved; the old one is already closed.
            std::mem::forget(child_chan);
            // SAFETY: chan_fd is the channel socket, owned by this child alone.
            let chan = unsafe { Channel::from_raw(chan_fd) };
            let exec = FinalExec {
                trampoline: trampoline.as_mut(),
                errfd: err_w.as_raw_fd(),
            };
            let err = match exec_child(
                opts, pidfd, root, flags, placement, v2_procs, keep, &chan, &filters, &lsm, exec,
            ) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = chan.send(&Message::Failed(err.to_string()));
            // SAFETY: ends the child without the parent's atexit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(child_chan);
            drop(err_w);
            drop(trampoline);
            let setup = Setup {
                deadline: std::time::Instant::now() + SETUP_DEADLINE,
                first: child,
                process: (!enter_pid_ns).then_some(child),
            };
            setup.drive(&parent_chan, err_r, opts, &filters)
        }
    }
}

/// Bounds the whole setup of an exec'd process: from its clone to the workload's execve.
/// Real setups take milliseconds; a process the container stops (it may signal what is in
/// its pid namespace) or that blocks on a file of the container's would otherwise hold
/// `exec`, and with it the container's lock, forever.
const SETUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The parent's side of an exec's setup.
struct Setup {
    deadline: std::time::Instant,
    /// The process cloned first, in the host's pid namespace.
    first: Pid,
    /// The process that becomes the workload, once known: `first` itself, or the one it
    /// forks into the container's pid namespace.
    process: Option<Pid>,
}

impl Setup {
    fn drive(
        mut self,
        chan: &Channel,
        err_r: OwnedFd,
        opts: &ExecOptions,
        filters: &[seccomp::Filter],
    ) -> Result<i32> {
        let mut pending = Vec::new();
        loop {
            self.wait_readable(chan.raw())?;
            match chan.recv_with_fd()? {
                None => {
                    let Some(process) = self.process else {
                        let _ = waitpid(self.first, None);
                        return Err(Error::Child("exec: the setup process ended".into()));
                    };
                    // The child exec'd (the trampoline, or the workload itself): the pipe
                    // says whether the workload's exec worked.
                    self.wait_readable(err_r.as_raw_fd())?;
                    let mut reply = Vec::new();
                    let _ = std::fs::File::from(err_r).read_to_end(&mut reply);
                    let arg0 = opts.request.process.args().as_ref().and_then(|a| a.first());
                    let path = arg0.map(String::as_str).unwrap_or("");
                    if let Some(msg) = crate::trampoline::decode_reply(&reply, path) {
                        let _ = waitpid(process, None);
                        return Err(Error::Child(msg));
                    }
                    return Ok(process.as_raw());
                }
                Some((Message::ProcessPid(pid), _)) if self.process.is_none() => {
                    // The first process forked it (as our child, CLONE_PARENT) and ends.
                    let _ = waitpid(self.first, None);
                    self.process = Some(Pid::from_raw(pid));
                    for (i, fd) in std::mem::take(&mut pending) {
                        if let Some(f) = filters.get(i) {
                            seccomp::send_to_listener(f, &fd, &opts.state, pid)?;
                        }
                    }
                }
                Some((Message::NotifyFd(i), Some(fd))) => match self.process {
                    Some(p) => {
                        if let Some(f) = filters.get(i) {
                            seccomp::send_to_listener(f, &fd, &opts.state, p.as_raw())?;
                        }
                    }
                    // The new process can be quicker to speak than its parent.
                    None => pending.push((i, fd)),
                },
                Some((Message::Failed(msg), _)) => {
                    let _ = waitpid(self.process.unwrap_or(self.first), None);
                    return Err(Error::Child(msg));
                }
                Some((other, _)) => {
                    self.kill();
                    return Err(Error::Child(format!(
                        "unexpected message from exec: {other:?}"
                    )));
                }
            }
        }
    }

    /// Waits until `fd` is readable, failing (and killing the setup) if the process is
    /// stopped or the deadline passes.
    fn wait_readable(&self, fd: RawFd) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            // SAFETY: `fd` is open for the duration of this call (the caller owns it).
            let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let mut fds = [PollFd::new(bfd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::Error::EINTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(Error::Child(format!("exec: poll: {e}"))),
            }
            if self.stopped() {
                self.kill();
                return Err(Error::Child(
                    "exec: the process was stopped before its execve (by a signal from the container?)".into(),
                ));
            }
            if std::time::Instant::now() > self.deadline {
                self.kill();
                return Err(Error::Child(format!(
                    "exec: the process did not reach its execve within {} s",
                    SETUP_DEADLINE.as_secs()
                )));
            }
        }
    }

    fn stopped(&self) -> bool {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let Some(p) = self.process else {
            return false;
        };
        matches!(
            waitid(
                Id::Pid(p),
                WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
            ),
            Ok(WaitStatus::Stopped(..))
        )
    }

    /// Kills and reaps the setup: the workload's process once known (the first one is then
    /// already reaped), else the first.
    ///
    /// The reap waits a second at most: a process in a frozen v1 freezer cgroup (an exec
    /// into a paused container) cannot die before the container is resumed, and the exec
    /// must not wait for that; left unreaped, it is reaped by whoever inherits it.
    fn kill(&self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus};
        let p = self.process.unwrap_or(self.first);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..100 {
            match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => return,
            }
        }
    }
}

/// How the exec'd process ends its setup.
struct FinalExec<'a> {
    trampoline: Option<&'a mut Trampoline>,
    /// The write end of the pipe the parent reads the exec's outcome on.
    errfd: RawFd,
}

#[allow(clippy::too_many_arguments)]
fn exec_child(
    opts: &ExecOptions,
    pidfd: OwnedFd,
    root: OwnedFd,
    flags: CloneFlags,
    placement: crate::cgroups::Placement,
    v2_procs: Option<std::fs::File>,
    keep: i32,
    chan: &Channel,
    filters: &[seccomp::Filter],
    lsm: &Plan,
    exec: FinalExec,
) -> Result<std::convert::Infallible> {
    use std::io::Write;
    process::set_non_dumpable()?;
    for fd in &opts.request.io.close_in_child {
        // SAFETY: the runtime named these fds as its own, unused by the child.
        unsafe { libc::close(*fd) };
    }
    placement.join_v1_self()?;
    if let Some(mut f) = v2_procs {
        f.write_all(b"0")
            .ctx(|| "joining the container's cgroup".into())?;
    }
    crate::affinity::ExecAffinity::of(opts.request.process)?.apply_final()?;
    // The cgroup files are writable host files: not carried into the container.
    drop(placement);
    setns(pidfd.as_fd(), flags).ctx(|| "joining the container's namespaces".into())?;
    drop(pidfd);
    // The init's root, whether it pivoted into it (a mount namespace of its own: then setns
    // already put us there) or only chrooted (then setns changed nothing). Without this, a
    // process exec'd into a container that shares the host's mount namespace would run in
    // the host's root.
    nix::unistd::fchdir(root.as_fd()).ctx(|| "entering the container's root".into())?;
    nix::unistd::chroot(".").ctx(|| "chroot into the container's root".into())?;
    drop(root);
    if flags.contains(CloneFlags::CLONE_NEWPID) {
        // Now nothing of the host's is left (root, cwd, fds): the process that runs the
        // workload is forked into the container's pid namespace, as the runtime's child.
        let pid = clone_process(CloneFlags::CLONE_PARENT)?;
        if pid != 0 {
            let _ = chan.send(&Message::ProcessPid(pid));
            // SAFETY: ends this forked child without the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
    }
    let console_fd = match opts.request.io.console {
        Some(c) => Some(process::move_fd_above(c, keep)?),
        None => None,
    };
    if opts.request.process.terminal().unwrap_or(false) {
        nix::unistd::setsid().ctx(|| "setsid".into())?;
    }
    lsm.apply_before_exec()?;
    let mut ready = prepare_process(
        opts.request.process,
        opts.personality,
        &opts.request.io.extra_env,
        console_fd,
        true,
        filters,
        keep,
        &|i, fd| chan.send_with_fd(&Message::NotifyFd(i), fd.as_raw_fd()),
    )?;
    ready.notify_fds.clear();
    if let Some(fd) = console_fd {
        // SAFETY: the console socket has served its purpose; the fd is ours.
        unsafe { libc::close(fd) };
    }
    if ready.late_filter {
        for f in filters {
            f.load()?;
        }
    }
    if let Some(before_exec) = opts.before_exec {
        before_exec()?;
    }
    if let Some(t) = exec.trampoline {
        let e = t.exec(exec.errfd, &ready.exe, &ready.args, &ready.env);
        tracing::debug!("exec without the trampoline: {e}");
    }
    Err(process::exec(&ready.exe, &ready.args, &ready.env))
}
