//! The container's terminal: a pty made inside the container, its master handed to the
//! caller over `--console-socket` with SCM_RIGHTS, its slave made the process's stdio and
//! controlling terminal.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::error::{Context, Error, Result};

/// Connects to the caller's console socket (done by the runtime, in the host's view).
pub fn connect_console_socket(path: &Path) -> Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx(|| "console socket".into())?;
    let addr = UnixAddr::new(path).ctx(|| format!("--console-socket {}", path.display()))?;
    connect(sock.as_raw_fd(), &addr)
        .ctx(|| format!("connecting to --console-socket {}", path.display()))?;
    Ok(sock)
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

// _IO('T', 0x41)
const TIOCGPTPEER: libc::c_ulong = 0x5441;

/// Opens a new pty from the current /dev/ptmx (the container's, once pivoted).
pub fn open_pty(size: Option<(u16, u16)>) -> Result<Pty> {
    // /dev/ptmx is the container's: reached inside its root and without /proc magic links
    // (a `/dev/ptmx -> /proc/self/fd/N` would reopen an fd of the runtime's), and only if
    // it is the pty multiplexer (not a FIFO or another device).
    let ptmx =
        crate::process::open_in_own_root(Path::new("/dev/ptmx"), OFlag::O_RDWR | OFlag::O_NOCTTY)
            .ctx(|| "opening /dev/ptmx".into())?;
    let st = nix::sys::stat::fstat(&ptmx).ctx(|| "/dev/ptmx".into())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(5, 2) {
        return Err(Error::Child(
            "/dev/ptmx in the container is not the pty multiplexer (c 5:2)".into(),
        ));
    }
    // SAFETY: the fd is an open ptmx that `master` now owns alone.
    let master = unsafe { PtyMaster::from_owned_fd(ptmx) };
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname_r(&master).ctx(|| "ptsname".into())?;
    // The slave through the master (TIOCGPTPEER), not by a path the container could swap.
    // SAFETY: an ioctl on the master we own; the kernel returns a new fd or -1.
    let peer = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if peer < 0 {
        return Err(Error::Child(format!(
            "opening {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(peer) };
    if let Some((h, w)) = size {
        set_size(slave.as_raw_fd(), h, w)?;
    }
    let master: OwnedFd = master.into();
    Ok(Pty {
        master,
        slave,
        name,
    })
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct that lives across the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "TIOCSWINSZ".into());
    }
    Ok(())
}

/// Sends `fd` over `sock` with `payload` (for a pty master: its name, as runc does).
pub fn send_fd(sock: RawFd, payload: &[u8], fd: RawFd) -> Result<()> {
    let fds = [fd];
    let iov = [IoSlice::new(payload)];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "sending an fd over a unix socket".into())?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .ctx(|| "receiving the pty master".into())?;
    for c in msg.cmsgs().ctx(|| "reading control messages".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel installed this fd in our table for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Child("no fd received on the console socket".into()))
}

/// Makes `slave` stdin/stdout/stderr and the controlling terminal of this process's session
/// (the caller has already called setsid).
pub fn make_controlling_tty(slave: &OwnedFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument; the fd is an open tty.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "TIOCSCTTY".into());
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds; both are valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "dup2 of the pty slave".into());
        }
    }
    Ok(())
}
