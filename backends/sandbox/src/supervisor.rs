//! The supervisor: one process per sandboxed container, forked by the runtime at `create`
//! and living until the container's init is gone. It receives the seccomp notify fd of the
//! init and of every exec'd process on a Unix socket in the container's state directory (the
//! profile's `listenerPath`), joins the container's mount namespace and root, and starts the
//! threads that perform each trapped call (see `serving` and `emulate`).
//!
//! Fail closed: if the supervisor dies, the kernel fails every trapped call with ENOSYS, so
//! nothing runs unsupervised, and the guard (see `guard`) kills the container.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::emulate::Emulator;
use crate::notif;
use crate::policy::Policy;
use crate::serving;
use crate::{Ctx, Error, Result};

/// The supervisor's life: serves `listener` until the container is gone. Called in a
/// process of its own (the runtime starts it afresh, so that it carries none of the
/// runtime's memory).
/// (The runtime gives it its own session and /dev/null for stdio.)
/// What the supervisor enforces for one container, as the runtime records it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub policy: Policy,
    /// The container's device rules (its `linux.resources.devices`, then the defaults), for
    /// the device nodes the supervisor opens on its behalf.
    pub devices: Vec<strata_linux::cgroups::devices::Rule>,
    /// The container shares the host's network namespace.
    pub host_network: bool,
}

pub fn serve(listener: UnixListener, config: Config) -> Result<()> {
    let Config {
        policy,
        devices,
        host_network,
    } = config;
    // The supervisor enters the container's mount namespace and root with the host's
    // privileges: no process of the container may reach its /proc entry (its exe, its
    // memory), even one sharing the host's pid namespace.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // A panic anywhere, a worker thread's too, ends the whole supervisor like any death
    // (rather than leave a caller unanswered): its guard then kills the container.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("sandbox supervisor panicked: {info}; the container goes with it");
        std::process::abort();
    }));
    // No terminal's signals reach the supervisor or its guard (forked from here, with these
    // dispositions): neither ever has a controlling terminal, but a hang-up or ^C must not
    // end them should one appear.
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        // SAFETY: setting a signal's disposition to "ignore" has no memory effects.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    crate::waits::install_handler();
    let mut checked_waits = std::time::Instant::now();
    let host_proc = nix::fcntl::open(
        "/proc",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "opening /proc".into())?;
    // The emulator the serving threads' own are made from (see `serving`); this thread
    // serves no call, so it keeps the supervisor's own identity to start them with.
    let mut template: Option<Emulator> = None;
    let max_threads = serving::max_threads();
    let mut guard: Option<crate::guard::Guard> = None;
    let hooks: serving::KernelHooks = Default::default();
    let mut policy = Some(policy);
    let mut devices = Some(devices);
    // A serving thread asks for another through this eventfd (it lives as long as the
    // process: the loop returns only for the process to exit).
    // SAFETY: eventfd with integer flags returns a new fd or -1.
    let more = Errno::result(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
        .ctx(|| "eventfd".into())?;
    // SAFETY: eventfd returned a new fd that nothing else owns.
    let more = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(more) });
    // The first wait wakes the loop through it too, to poll with a timeout from then on.
    crate::waits::set_waker(more.as_raw_fd());
    // Notify fds; the first is the init's, whose hang-up means the container is gone.
    let mut served: Vec<std::sync::Arc<serving::Fd>> = Vec::new();
    loop {
        let mut fds = vec![
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(more.as_fd(), PollFlags::POLLIN),
        ];
        // The notify fds' hang-ups only: their notifications are the serving threads'.
        fds.extend(
            served
                .iter()
                .map(|f| PollFd::new(f.fd.as_fd(), PollFlags::empty())),
        );
        // With workers waiting, wake at least once a second to cut short the stale waits.
        let timeout = if crate::waits::any() {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll".into()),
        }
        if crate::waits::any() && checked_waits.elapsed() >= std::time::Duration::from_secs(1) {
            crate::waits::interrupt_stale();
            checked_waits = std::time::Instant::now();
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if ready[0].contains(PollFlags::POLLIN) {
            match accept_notify_fd(&listener) {
                Ok((pid, fd)) => {
                    if let Err(e) = notif::set_sync_wakeup(fd.as_fd()) {
                        tracing::debug!("sandbox supervisor: no synchronous wake-ups: {e}");
                    }
                    if template.is_none() {
                        let p = policy.take().unwrap_or_else(Policy::builtin);
                        // The guard first: from here a supervisor that gives up takes the
                        // container with it.
                        guard = Some(crate::guard::spawn(pid)?);
                        let hook_dir = cgroup_v2_dir(&p, pid);
                        let user_ns = std::fs::read_link(format!("/proc/{pid}/ns/user"))
                            .map_err(|e| Error::Setup(format!("the init's user namespace: {e}")))?
                            .to_string_lossy()
                            .into_owned();
                        enter_container(pid)?;
                        let proc_dup = host_proc
                            .try_clone()
                            .map_err(|e| Error::Setup(e.to_string()))?;
                        let hook_policy = hook_dir.is_some().then(|| p.clone());
                        let rules = devices.take().unwrap_or_default();
                        template = Some(
                            Emulator::new(proc_dup, p, rules, user_ns, host_network)
                                .ctx(|| "setting up the supervisor".into())?,
                        );
                        shed_startup_pages(&host_proc);
                        // Loading and attaching the programs takes ~1 ms (the verifier):
                        // done aside, and waited for before the first execve is let
                        // through, since no code of the container's own runs before it.
                        *hooks.lock().unwrap_or_else(|p| p.into_inner()) =
                            hook_dir.zip(hook_policy).map(|((dir, level), policy)| {
                                std::thread::spawn(move || hook_kernel(&policy, dir, level))
                            });
                    }
                    let f = serving::Fd::new(fd, more.clone(), hooks.clone(), max_threads);
                    if let Some(t) = template.as_ref() {
                        // A notify fd nobody serves would leave its callers waiting for ever.
                        let em = t
                            .for_another_thread()
                            .ctx(|| "a serving thread's emulator".into())?;
                        f.spawn(em, true)
                            .map_err(|e| Error::Setup(format!("a serving thread: {e}")))?;
                    }
                    served.push(f);
                }
                Err(e) => tracing::warn!("sandbox supervisor: a listener connection failed: {e}"),
            }
        }
        if ready[1].contains(PollFlags::POLLIN) {
            let mut count = [0u8; 8];
            // SAFETY: reads the eventfd's 8-byte counter into a local array.
            unsafe { libc::read(more.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
            for f in &served {
                if let (true, Some(t)) = (f.take_ask(), template.as_ref()) {
                    // One more is an optimisation: without it the fd is still served.
                    let started = t
                        .for_another_thread()
                        .map_err(|e| e.to_string())
                        .and_then(|em| f.spawn(em, false).map_err(|e| e.to_string()));
                    if let Err(e) = started {
                        f.not_started();
                        tracing::debug!("sandbox supervisor: no further serving thread: {e}");
                    }
                }
            }
        }
        let mut gone = Vec::new();
        for (i, flags) in ready.iter().enumerate().skip(2) {
            if flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                gone.push(i - 2);
            }
        }
        for i in gone.into_iter().rev() {
            // Its serving threads see the hang-up too, and end.
            served.remove(i);
            if i == 0 {
                // The init's filter has no process left: the container is gone.
                if let Some(g) = guard.take() {
                    g.container_ended();
                }
                return Ok(());
            }
        }
    }
}

/// The container's cgroup v2 directory, open, with its depth in the hierarchy as seen from
/// here, for the kernel's socket programs (see `netfilter`). Opened in the host's mount
/// namespace, before the supervisor enters the container's. None without one: the runtime
/// refuses a network policy that needs the programs on a host without cgroup v2, and should
/// the directory still be missing, the supervisor fails closed; the Unix sendmsg hook alone
/// is an extra wall, gone without a word beyond debug.
fn cgroup_v2_dir(policy: &Policy, init: i32) -> Option<(OwnedFd, u32)> {
    let dir = crate::guard::cgroup_dirs(init)
        .into_iter()
        .find_map(|(d, unified)| unified.then_some(d));
    let opened = match &dir {
        Some(d) => nix::fcntl::open(
            d,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Setup(format!("{}: {e}", d.display()))),
        None => Err(Error::Setup(
            "the container has no cgroup v2 directory".into(),
        )),
    };
    match opened {
        Ok(fd) => Some((fd, dir.as_deref().map_or(0, cgroup_level))),
        Err(e) if crate::netfilter::needed(policy) => unenforced("the network policy", &e),
        Err(e) => {
            tracing::debug!("sandbox: no Unix sendmsg hook: {e}");
            None
        }
    }
}

/// The depth of a cgroup v2 directory below its hierarchy's mount point (the root is 0).
fn cgroup_level(dir: &std::path::Path) -> u32 {
    let root = strata_linux::cgroups::hierarchies()
        .unwrap_or_default()
        .into_iter()
        .find(|h| h.unified && dir.starts_with(&h.mount_point));
    root.and_then(|h| {
        dir.strip_prefix(&h.mount_point)
            .ok()
            .map(|r| r.iter().count())
    })
    .unwrap_or(0) as u32
}

/// Holds the container's IP traffic to the policy in the kernel, and its Unix datagrams
/// sent by sendmsg(2), whose address the supervisor never sees, to the supervisor's checks.
fn hook_kernel(policy: &Policy, dir: OwnedFd, level: u32) {
    if crate::netfilter::needed(policy) {
        if let Err(e) = crate::netfilter::attach(policy, dir.as_fd()) {
            unenforced("the network policy", &e);
        }
    }
    if let Err(e) = crate::netfilter::attach_unix_sendmsg(dir.as_fd(), level) {
        if crate::netfilter::unix_hooks_supported() {
            unenforced("the write set for Unix datagrams", &e);
        }
        tracing::debug!("sandbox: no Unix sendmsg hook (before Linux 6.7): {e}");
    }
}

/// What the kernel holds for the policy cannot be set up: the supervisor ends, and with it
/// (by its guard) the container, before any code of the container's own has run.
fn unenforced(what: &str, e: &Error) -> ! {
    tracing::error!("sandbox: {what} cannot be enforced for this container: {e}");
    std::process::exit(1)
}

/// MADV_PAGEOUT (Linux 5.4), not in the libc crate.
const MADV_PAGEOUT: libc::c_int = 21;

/// Gives back the file pages that starting up touched (code for parsing arguments, setting
/// up logging, entering the container): they stay in the page cache, and the ones the
/// serving loop uses come back on first use. A supervisor lives as long as its container,
/// and these pages would otherwise count against it all that time (measured: the idle
/// supervisor's PSS falls from ~1.2 MiB to ~0.87 MiB). Only a hint: pages another process
/// maps, and anonymous ones on a host without swap, stay.
fn shed_startup_pages(host_proc: &OwnedFd) {
    let Ok(maps) = crate::procfs::read_at(host_proc, "self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // File-backed mappings only (those with a path), never [stack] and friends.
        if !line.contains(" /") || perms.starts_with("rw") {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        // SAFETY: MADV_PAGEOUT only asks the kernel to reclaim pages of a mapping we own;
        // their contents are unchanged (they fault back in from the file).
        unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, MADV_PAGEOUT) };
    }
}

/// One connection to the listener: the runtime's container state JSON and a notify fd.
fn accept_notify_fd(listener: &UnixListener) -> Result<(i32, OwnedFd)> {
    let (conn, _) = listener
        .accept()
        .map_err(|e| Error::Setup(format!("accept: {e}")))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receiving a notify fd".into())?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(|e| Error::Setup(e.to_string()))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&f) = fds.first() {
                // SAFETY: SCM_RIGHTS gave us this fd; nothing else owns it.
                fd = Some(unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
    }
    let len = msg.bytes;
    let fd = fd.ok_or_else(|| Error::Setup("a listener message without an fd".into()))?;
    let state: serde_json::Value = serde_json::from_slice(&buf[..len])
        .map_err(|e| Error::Setup(format!("listener message: {e}")))?;
    let pid = state["pid"]
        .as_i64()
        .ok_or_else(|| Error::Setup("listener message without a pid".into()))?;
    Ok((pid as i32, fd))
}

/// Into the container's namespaces (all but pid and user) and its root: from here every path
/// the supervisor resolves is the container's, and what a namespace decides for the opener
/// is decided for the container (a tun device attaches to the opener's network namespace,
/// /proc/sys/net and /proc/sysvipc show the reader's).
fn enter_container(pid: i32) -> Result<()> {
    use nix::sched::CloneFlags as F;
    let open = |p: String| {
        nix::fcntl::open(
            p.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| p.clone())
    };
    let root = open(format!("/proc/{pid}/root"))?;
    // The mount namespace last: the others are opened through the host's /proc.
    for (name, flag) in [
        ("net", F::CLONE_NEWNET),
        ("ipc", F::CLONE_NEWIPC),
        ("uts", F::CLONE_NEWUTS),
        ("cgroup", F::CLONE_NEWCGROUP),
        ("mnt", F::CLONE_NEWNS),
    ] {
        let ns = open(format!("/proc/{pid}/ns/{name}"))?;
        nix::sched::setns(ns, flag).ctx(|| format!("joining the container's {name} namespace"))?;
    }
    nix::unistd::fchdir(root.as_fd()).ctx(|| "entering the container's root".into())?;
    nix::unistd::chroot(".").ctx(|| "chroot into the container's root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    Ok(())
}
