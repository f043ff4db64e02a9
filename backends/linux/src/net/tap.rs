//! Tap devices: a frame per read and write, no packet-info prefix and no virtio-net header
//! (`IFF_TAP | IFF_NO_PI`), which is what the VMM's virtio-net device and QEMU's
//! `-netdev tap,fd=` without `vnet_hdr` read and write. The device lives in the network
//! namespace of the thread that opens it, and goes away with its last open fd.

use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?}: 1 to 15 bytes, no '/' or NUL")]
    Name(String),
    #[error("opening /dev/net/tun: {0}")]
    Open(std::io::Error),
    // Not named `source`: the message already says it, and a chained error would repeat it.
    #[error("creating tap device {name}: {error}")]
    Create { name: String, error: std::io::Error },
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the tap `name` in the calling thread's network namespace (or attaches to it, if a
/// persistent one exists) and returns its fd, close-on-exec.
pub fn open(name: &str) -> Result<OwnedFd, TapError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
        return Err(TapError::Name(name.to_string()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads (and may write back the name into) a `struct ifreq`, which
    // IfReq lays out with its full 40 bytes; `req` lives across the call and the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(TapError::Create {
            name: name.to_string(),
            error: std::io::Error::last_os_error(),
        });
    }
    Ok(OwnedFd::from(file))
}

/// Runs `f` on a thread of its own that has joined the network namespace `netns` (an open
/// nsfs fd): setns(CLONE_NEWNET) changes only the calling thread, so the caller's namespace
/// is untouched whatever `f` does.
pub fn in_netns<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns takes an fd this closure borrows and a namespace type; it changes
            // only this thread, which ends when the scope does.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("the network namespace thread panicked"))?
    })
}

/// Keeps `fd` open across exec (for handing a tap to the VMM or QEMU by number).
pub fn inheritable(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: F_SETFD on an fd this function borrows; no memory is passed.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
