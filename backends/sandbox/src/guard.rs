//! Fail closed: a small process, forked by the supervisor once it knows the container's
//! init, that kills the container if the supervisor dies before the container does.
//!
//! Without it a dead supervisor would leave the container running with every trapped call
//! failing (the kernel answers ENOSYS for a listener nobody holds): confined still, but
//! half-working and silently so. The guard makes the failure whole and visible: the
//! container stops, its state says so, and its manager restarts it.
//!
//! Forked from the supervisor, the guard shares its pages until either writes them, so it
//! adds little memory.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{Ctx, Result};

/// Forks the guard for the container whose init is `init` (a PID in the supervisor's pid
/// namespace). Returns in the supervisor; the guard never returns.
pub fn spawn(init: i32) -> Result<()> {
    let init_fd = pidfd_open(init).ctx(|| format!("pidfd of the container's init {init}"))?;
    let cgroups = cgroup_dirs(init);
    let supervisor = std::process::id() as i32;
    // SAFETY: the supervisor is single-threaded; the child runs only the loop below.
    match unsafe { nix::unistd::fork() }.ctx(|| "forking the sandbox guard".into())? {
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
        nix::unistd::ForkResult::Child => {
            // SAFETY: prctl with a static NUL-terminated name.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"strata-guard".as_ptr()) };
            // Nothing of the supervisor's but the init's pidfd: above all not the notify
            // fds, whose last holder must be the supervisor so that the kernel fails
            // trapped calls the moment it dies.
            let keep = init_fd.as_raw_fd() as libc::c_uint;
            // SAFETY: closes fd ranges in this (single-threaded) child; nothing uses them.
            unsafe {
                libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
                libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
            }
            watch(supervisor, &init_fd, &cgroups);
            // SAFETY: ends the child without the supervisor's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

fn watch(supervisor: i32, init: &OwnedFd, cgroups: &[PathBuf]) {
    let sup = match pidfd_open(supervisor) {
        // Still our parent after the pidfd was opened: the pidfd is the supervisor's.
        Ok(fd) if nix::unistd::getppid().as_raw() == supervisor => Some(fd),
        _ => None,
    };
    if let Some(sup) = &sup {
        loop {
            let mut fds = [
                PollFd::new(init.as_fd(), PollFlags::POLLIN),
                PollFd::new(sup.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(Errno::EINTR) => continue,
                Err(_) => break,
                Ok(_) => {}
            }
            let init_done = fds[0].revents().is_some_and(|r| !r.is_empty());
            let sup_done = fds[1].revents().is_some_and(|r| !r.is_empty());
            if init_done {
                // The container ended first: the supervisor is leaving with it.
                return;
            }
            if sup_done {
                break;
            }
        }
    }
    // The supervisor is gone and the container is not: end it.
    tracing::error!("sandbox supervisor died under a running container; killing the container");
    kill_container(init, cgroups);
}

fn kill_container(init: &OwnedFd, cgroups: &[PathBuf]) {
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            init.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // Without a pid namespace of its own the container's other processes outlive its init:
    // they are found in its cgroup. Several rounds, for processes forked while we read.
    for _ in 0..100 {
        let pids: Vec<i32> = cgroups
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) with integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The directories of the init's cgroups, in every hierarchy mounted here (the supervisor
/// runs in the host's mount namespace when this is called).
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let hierarchies = strata_linux::cgroups::hierarchies().unwrap_or_default();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if path == "/" {
            // The container is not in a cgroup of its own here: nothing to sweep.
            continue;
        }
        let rel = path.trim_start_matches('/');
        for h in &hierarchies {
            let matches = if ctrls.is_empty() {
                h.unified
            } else {
                !h.unified
                    && ctrls
                        .split(',')
                        .all(|c| h.controllers.iter().any(|k| k == c))
            };
            if matches {
                dirs.push(h.mount_point.join(rel));
            }
        }
    }
    dirs
}

fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open with integers; returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = Errno::result(fd)? as RawFd;
    // SAFETY: a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
