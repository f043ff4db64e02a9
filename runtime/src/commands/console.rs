//! Where a process's pty master goes: the caller's --console-socket, or back to strata for a
//! foreground run.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A pty whose master comes back to us rather than to a --console-socket.
fn own_console() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair for the terminal")
}

/// The console the process's pty master goes to: the caller's socket, or our own pair.
pub(super) enum Console {
    None,
    Caller(OwnedFd),
    Ours { ours: OwnedFd, theirs: OwnedFd },
}

impl Console {
    pub(super) fn setup(
        terminal: bool,
        socket: Option<&Path>,
        detach: bool,
        what: &str,
    ) -> Result<Console> {
        match (terminal, socket) {
            (false, _) => Ok(Console::None),
            (true, Some(p)) => Ok(Console::Caller(strata_linux::tty::connect_console_socket(
                p,
            )?)),
            (true, None) if detach => bail!(
                "{what}: process.terminal is set, so --console-socket is needed to receive the \
                 pty master"
            ),
            (true, None) => {
                let (ours, theirs) = own_console()?;
                Ok(Console::Ours { ours, theirs })
            }
        }
    }

    pub(super) fn child_fd(&self) -> Option<i32> {
        match self {
            Console::None => None,
            Console::Caller(fd) => Some(fd.as_raw_fd()),
            Console::Ours { theirs, .. } => Some(theirs.as_raw_fd()),
        }
    }

    /// After the process was set up: the pty master, if it came to us.
    pub(super) fn into_master(self) -> Result<Option<OwnedFd>> {
        match self {
            Console::Ours { ours, theirs } => {
                drop(theirs);
                Ok(Some(strata_linux::tty::recv_fd(ours.as_raw_fd())?))
            }
            _ => Ok(None),
        }
    }
}
