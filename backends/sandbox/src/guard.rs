//! Fail closed: a small process, forked by the supervisor once it knows the container's
//! init, that kills the container if the supervisor dies before the container does.
//!
//! Without it a dead supervisor would leave the container running with every trapped call
//! failing (the kernel answers ENOSYS for a listener nobody holds): confined still, but
//! half-working and silently so. The guard makes the failure whole and visible: the
//! container stops, its state says so, and its manager restarts it.
//!
//! Forked from the supervisor, the guard shares its pages until either writes them, so it
//! adds little memory. It learns how the supervisor ended through a pipe: a byte written
//! when the container ended, end of file if the supervisor died.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{Ctx, Error, Result};

/// The supervisor's end of the link to its guard.
pub struct Guard {
    link: OwnedFd,
}

impl Guard {
    /// Tells the guard that the container ended and the supervisor is leaving for that
    /// reason: the guard then exits without acting. (A supervisor that dies closes the link
    /// without this, which is how the guard tells the two apart: the init's own exit can
    /// become visible later than the supervisor's reaction to it.)
    pub fn container_ended(self) {
        // SAFETY: writes one byte from a static buffer to our pipe end.
        unsafe { libc::write(self.link.as_raw_fd(), b"e".as_ptr().cast(), 1) };
    }
}

/// Forks the guard for the container whose init is `init` (a PID in the supervisor's pid
/// namespace). Returns in the supervisor; the guard never returns.
pub fn spawn(init: i32) -> Result<Guard> {
    let init_fd = strata_linux::proc::pidfd_open(init)
        .map_err(|e| Error::Setup(format!("pidfd of the container's init {init}: {e}")))?;
    // The cgroup directories themselves, held open: should they be removed and made again
    // for a new container with the same name, these still name the old ones, whose
    // processes (none) are all the guard may ever touch.
    let cgroups: Vec<OwnedFd> = cgroup_dirs(init)
        .into_iter()
        .filter_map(|(d, _)| {
            nix::fcntl::open(
                &d,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        })
        .collect();
    let (link_in, link_out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .ctx(|| "a pipe to the sandbox guard".into())?;
    // SAFETY: the supervisor is single-threaded; the child runs only the loop below.
    match unsafe { nix::unistd::fork() }.ctx(|| "forking the sandbox guard".into())? {
        nix::unistd::ForkResult::Parent { .. } => Ok(Guard { link: link_out }),
        nix::unistd::ForkResult::Child => {
            // SAFETY: prctl with a static NUL-terminated name.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"strata-guard".as_ptr()) };
            drop(link_out);
            // Nothing of the supervisor's but what the guard uses: above all not the notify
            // fds, whose last holder must be the supervisor so that the kernel fails
            // trapped calls the moment it dies.
            let mut keep: Vec<RawFd> = vec![init_fd.as_raw_fd(), link_in.as_raw_fd()];
            keep.extend(cgroups.iter().map(|f| f.as_raw_fd()));
            strata_linux::proc::close_all_but(&keep);
            if supervisor_died(&init_fd, &link_in) {
                tracing::error!(
                    "sandbox supervisor died under a running container; killing the container"
                );
                kill_container(&init_fd, &cgroups);
            }
            // SAFETY: ends the child without the supervisor's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Waits for the container's end or the supervisor's; says whether the supervisor died
/// first.
fn supervisor_died(init: &OwnedFd, link: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(init.as_fd(), PollFlags::POLLIN),
            PollFd::new(link.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            // Cannot watch: the supervisor's own fail-closed (ENOSYS) still holds.
            Err(_) => return false,
            Ok(_) => {}
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return false;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let mut b = [0u8; 1];
            // SAFETY: reads at most one byte into our buffer.
            let n = unsafe { libc::read(link.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            // A byte: the supervisor saw the container end. End of file: it died.
            return n <= 0;
        }
    }
}

fn kill_container(init: &OwnedFd, cgroups: &[OwnedFd]) {
    strata_linux::proc::pidfd_send_signal(init, nix::sys::signal::Signal::SIGKILL);
    // Without a pid namespace of its own the container's other processes outlive its init:
    // they are found in its cgroup. Several rounds, for processes forked while we read.
    for _ in 0..100 {
        let pids: Vec<i32> = cgroups
            .iter()
            .filter_map(|d| {
                let f = nix::fcntl::openat(
                    d,
                    "cgroup.procs",
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .ok()?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut text).ok()?;
                Some(text)
            })
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
/// runs in the host's mount namespace when this is called), each with whether it is the
/// cgroup v2 one.
pub(crate) fn cgroup_dirs(pid: i32) -> Vec<(PathBuf, bool)> {
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
                dirs.push((h.mount_point.join(rel), h.unified));
            }
        }
    }
    dirs
}
