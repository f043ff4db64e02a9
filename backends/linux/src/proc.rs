//! Process primitives: pidfds, a process's state and start time from `/proc/<pid>/stat`,
//! fd ranges closed or marked close-on-exec, and the clone(2)/clone3(2) forks the init and
//! exec'd processes are made with.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::error::{Context, Result};

/// A pidfd for `pid` (pidfd_open(2)), close-on-exec.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` through a pidfd, so a reused PID is never hit; false on failure (errno).
pub fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> bool {
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

/// `/proc/<pid>/stat`: alive means not a zombie and started when we recorded.
pub fn process_alive(pid: i32, start: u64) -> bool {
    match proc_stat(pid) {
        Some((state, st)) => !matches!(state, 'Z' | 'X') && (start == 0 || st == start),
        None => false,
    }
}

pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parens; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Marks every fd from `first` up close-on-exec, so nothing of the runtime's survives execve
/// except stdio and the preserved fds.
pub fn cloexec_from(first: i32) -> Result<()> {
    close_range(
        first as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    )
    .ctx(|| "close_range".into())
}

/// close_range(2): closes (or, with `CLOSE_RANGE_CLOEXEC`, marks close-on-exec) the fds
/// `first..=last`. Async-signal-safe (one system call, no allocation), so a forked child may
/// call it before exec.
pub fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: libc::c_uint,
) -> std::io::Result<()> {
    // SAFETY: close_range only closes or flags fds of this process; it takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd from 3 up but those in `keep` (a forked child's cleanup before it runs
/// code of its own); errors are ignored.
pub fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<libc::c_uint> = keep.iter().map(|f| *f as libc::c_uint).collect();
    keep.sort_unstable();
    let mut from: libc::c_uint = 3;
    for k in keep {
        if k > from {
            let _ = close_range(from, k - 1, 0);
        }
        from = from.max(k + 1);
    }
    let _ = close_range(from, libc::c_uint::MAX, 0);
}

/// clone3(2) like [`clone_process`], with the child born in the v2 cgroup `cgroup_fd`
/// (CLONE_INTO_CGROUP): no migration, so no wait for the kernel's global threadgroup lock.
/// None when the kernel refuses (then the caller falls back to clone and cgroup.procs).
pub(crate) fn clone_into_cgroup(flags: CloneFlags, cgroup_fd: RawFd) -> Option<i32> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_fd as u64,
    };
    // SAFETY: as clone_process: no CLONE_VM and no stack, so the child continues on a
    // copy-on-write copy of this single-threaded process; args is valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    (r >= 0).then_some(r as i32)
}

/// clone(2) without CLONE_VM: a fork that also creates the namespaces in `flags`.
pub(crate) fn clone_process(flags: CloneFlags) -> Result<i32> {
    // SAFETY: with a NULL stack and without CLONE_VM/CLONE_THREAD, clone behaves like fork:
    // the child runs on a copy-on-write copy of our stack. The runtime is single-threaded
    // here, so no lock (malloc's included) can be held by another thread at this point.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "clone".into());
    }
    Ok(r as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let me = std::process::id() as i32;
        let (state, start) = proc_stat(me).unwrap();
        assert!(matches!(state, 'R' | 'S'));
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
    }
}
