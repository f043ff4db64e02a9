//! Reading the host's /proc (opened before the supervisor entered the container).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

/// The text of `path` beneath the directory `dir` (a /proc).
pub(crate) fn read_at(dir: &OwnedFd, path: &str) -> Result<String, Errno> {
    let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let fd = openat(dir.as_raw_fd(), &p)?;
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd)
        .read_to_string(&mut s)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(s)
}

fn openat(dir: i32, path: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is NUL-terminated; openat returns a new fd or -1.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the fd was just returned to us and is owned by nothing else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
