//! Running an extra process in a running container (`exec`): into its cgroup and namespaces,
//! with the same process setup as the init, then execve.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType as NsType, Process};

use crate::cgroups::CgroupSet;
use crate::container::{clone_into_cgroup, clone_process, prepare_process};
use crate::error::{Context, Error, Result};
use crate::hooks::pidfd_open;
use crate::lsm::Plan;
use crate::namespaces::{self, JOIN_ORDER};
use crate::process;
use crate::seccomp;
use crate::sync::{Channel, Message};
use crate::trampoline::Trampoline;

pub struct ExecOptions<'a> {
    /// Host PID of the container's init.
    pub init_pid: i32,
    pub process: &'a Process,
    /// A socket connected to whoever receives the pty master (`--console-socket`).
    pub console: Option<RawFd>,
    pub preserve_fds: i32,
    pub extra_env: Vec<String>,
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
    /// The runtime's own fds (the state lock), closed in the child before it joins the
    /// container.
    pub close_in_child: Vec<RawFd>,
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
    let root = open_root_of(opts.init_pid, &pidfd)?;
    let mut flags = CloneFlags::empty();
    for typ in JOIN_ORDER {
        if typ != NsType::Pid && namespaces::differs_from_ours(opts.init_pid, typ) {
            flags |= namespaces::clone_flag(typ);
        }
    }
    if namespaces::differs_from_ours(opts.init_pid, NsType::Pid) {
        // Affects only our children, which is the process we are about to fork.
        setns(pidfd.as_fd(), CloneFlags::CLONE_NEWPID)
            .ctx(|| "joining the container's pid namespace".into())?;
    }
    // Born in the v2 cgroup and moving itself into the v1 ones: no global cgroup lock (see
    // cgroups::Placement).
    let placement = opts.cgroups.placement()?;
    let v2_procs = match &placement.v2_dir {
        Some(_) => opts
            .cgroups
            .dirs
            .iter()
            .find(|d| d.unified)
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.dir.join("cgroup.procs"))
                    .ctx(|| format!("opening {}", d.dir.display()))
            })
            .transpose()?,
        None => None,
    };
    let filters = seccomp::compile_chain(&opts.seccomp)?;
    let keep = 3 + opts.preserve_fds;
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
    let lsm = Plan::for_process(opts.process)?;
    let (parent_chan, child_chan) = Channel::pair()?;
    let into = placement.v2_dir.as_ref().map(|f| f.as_raw_fd());
    let (pid, born_in_v2) = match into.and_then(|fd| clone_into_cgroup(CloneFlags::empty(), fd)) {
        Some(p) => (p, true),
        None => (clone_process(CloneFlags::empty())?, false),
    };
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
            loop {
                match parent_chan.recv_with_fd()? {
                    None => {
                        // The child exec'd (the trampoline, or the workload itself): the
                        // pipe says whether the workload's exec worked.
                        let mut reply = Vec::new();
                        let _ = std::fs::File::from(err_r).read_to_end(&mut reply);
                        let arg0 = opts.process.args().as_ref().and_then(|a| a.first());
                        let path = arg0.map(String::as_str).unwrap_or("");
                        if let Some(msg) = crate::trampoline::decode_reply(&reply, path) {
                            let _ = waitpid(child, None);
                            return Err(Error::Child(msg));
                        }
                        return Ok(child.as_raw());
                    }
                    Some((Message::NotifyFd(i), Some(fd))) => {
                        if let Some(f) = filters.get(i) {
                            seccomp::send_to_listener(f, &fd, &opts.state, child.as_raw())?;
                        }
                    }
                    Some((Message::Failed(msg), _)) => {
                        let _ = waitpid(child, None);
                        return Err(Error::Child(msg));
                    }
                    Some((other, _)) => {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = waitpid(Pid::from_raw(child.as_raw()), None);
                        return Err(Error::Child(format!(
                            "unexpected message from exec: {other:?}"
                        )));
                    }
                }
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
    for fd in &opts.close_in_child {
        // SAFETY: the runtime named these fds as its own, unused by the child.
        unsafe { libc::close(*fd) };
    }
    placement.join_v1_self()?;
    if let Some(mut f) = v2_procs {
        f.write_all(b"0")
            .ctx(|| "joining the container's cgroup".into())?;
    }
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
    let console_fd = match opts.console {
        Some(c) => Some(process::move_fd_above(c, keep)?),
        None => None,
    };
    if opts.process.terminal().unwrap_or(false) {
        nix::unistd::setsid().ctx(|| "setsid".into())?;
    }
    lsm.apply_before_exec()?;
    let mut ready = prepare_process(
        opts.process,
        opts.personality,
        &opts.extra_env,
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
