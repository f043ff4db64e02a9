//! The seccomp user-notification ioctls (seccomp_unotify(2)) on a listener fd, reading and
//! writing the caller's memory, and answering the caller.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

pub type Notif = libc::seccomp_notif;

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6), not yet in the libc crate.
const SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand the CPU straight from the trapped caller to the supervisor and
/// back, instead of waking the other side through the scheduler. Measured here: a bare
/// notify round trip takes ~41 µs when caller and supervisor sit on different CPUs (the
/// wake-up crosses CPUs) and ~3.8 µs with this flag. Older kernels refuse the flag; the
/// supervisor then works as before, only slower.
pub fn set_sync_wakeup(fd: BorrowedFd) -> nix::Result<()> {
    // SAFETY: the ioctl takes the flags by value; no memory is passed.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SYNC_WAKE_UP,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// Receives the next notification. EINTR and ENOENT (the caller died before we looked) are
/// returned for the loop to skip.
pub fn recv(fd: BorrowedFd) -> nix::Result<Notif> {
    // SAFETY: seccomp_notif is plain data; all-zero is the state the kernel requires on input.
    let mut n: Notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `n`, which is that size and ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
    nix::errno::Errno::result(r)?;
    Ok(n)
}

/// Whether the notification is still pending: the caller has not died (so its PID and
/// memory are still the ones the notification was about).
pub fn still_valid(fd: BorrowedFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from the pointer, which is ours.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// Completes the call with a result (`error` 0) or an errno (positive).
pub fn respond(fd: BorrowedFd, id: u64, val: i64, errno: i32) -> nix::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error: -errno,
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp, which is ours and initialised.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    nix::errno::Errno::result(r).map(drop)
}

/// Lets the kernel run the call as the caller made it. Only for execve, whose target the
/// supervisor cannot run for the caller; see emulate::exec for what still holds.
pub fn continue_call(fd: BorrowedFd, id: u64) -> nix::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: as in `respond`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    nix::errno::Errno::result(r).map(drop)
}

/// Installs `src` in the caller as the syscall's result, atomically (ADDFD_FLAG_SEND): a
/// signal that interrupts the caller cannot leave it holding an fd its restarted call does
/// not know of.
///
/// This is the costly part of an emulated open on this host. The kernel wakes the caller to
/// install the fd with an ordinary wake-up, not the synchronous one [`set_sync_wakeup`]
/// asks for, so with an idle CPU the caller is moved there and back (~40 µs here on 2
/// vCPUs; ~7 µs with caller and supervisor on one CPU). Splitting it into ADDFD then SEND
/// measured the same in a container, so the atomic form stays.
pub fn send_fd(fd: BorrowedFd, id: u64, src: RawFd, cloexec: bool) -> nix::Result<()> {
    let mut add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: src as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the ioctl reads one seccomp_notif_addfd, which is ours and initialised.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut add) };
    nix::errno::Errno::result(r).map(drop)
}

/// Reads `len` bytes at `addr` in process `pid`.
pub fn read_mem(pid: u32, addr: u64, len: usize) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        Pid::from_raw(pid as i32),
        &mut [IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads a NUL-terminated string (a path) of at most PATH_MAX bytes. Reads page by page so a
/// string that ends just before an unmapped page is still read.
pub fn read_cstr(pid: u32, addr: u64) -> nix::Result<Vec<u8>> {
    if addr == 0 {
        return Err(nix::Error::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let to_page_end = 4096 - (at as usize % 4096);
        let chunk = read_mem(pid, at, to_page_end)?;
        if chunk.is_empty() {
            return Err(nix::Error::EFAULT);
        }
        if let Some(end) = chunk.iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(nix::Error::ENAMETOOLONG)
}

/// Writes `data` at `addr` in process `pid` (a stat buffer, a readlink result).
pub fn write_mem(pid: u32, addr: u64, data: &[u8]) -> nix::Result<()> {
    let n = process_vm_writev(
        Pid::from_raw(pid as i32),
        &[std::io::IoSlice::new(data)],
        &[RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }],
    )?;
    if n == data.len() {
        Ok(())
    } else {
        Err(nix::Error::EFAULT)
    }
}

/// What to answer the caller.
pub(crate) enum Outcome {
    Value(i64),
    Errno(Errno),
    /// Install the fd in the caller as the result.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    /// Let the kernel run it (execve and the credential changes).
    Continue,
    /// Handed to a worker thread that answers the caller itself: a call that may block
    /// (a blocking connect, a FIFO's open) must not hold up every other trapped call.
    Deferred,
}

impl From<Errno> for Outcome {
    fn from(e: Errno) -> Self {
        Outcome::Errno(e)
    }
}

/// Completes the notification `id` with `outcome`.
pub(crate) fn answer(fd: BorrowedFd, id: u64, outcome: Outcome) {
    let result = match outcome {
        Outcome::Value(v) => respond(fd, id, v, 0),
        Outcome::Errno(e) => respond(fd, id, -1, e as i32),
        Outcome::Fd { fd: src, cloexec } => send_fd(fd, id, src.as_raw_fd(), cloexec),
        Outcome::Continue => continue_call(fd, id),
        Outcome::Deferred => return,
    };
    if let Err(e) = result {
        if e != Errno::ENOENT {
            tracing::debug!("sandbox supervisor: answering notification {id}: {e}");
            // Never leave a caller waiting: if the answer could not be given, fail the call.
            let _ = respond(fd, id, -1, e as i32);
        }
    }
}
