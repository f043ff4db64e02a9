//! The message channel between the runtime and the process it is turning into a container.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is one JSON datagram;
//! an empty read means the other side is gone (e.g. the child called execve or died).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// child → parent: write uid/gid maps for the sender's new user namespace.
    MapIds,
    /// parent → child: maps written.
    IdsMapped,
    /// stage 1 → parent: the container's init is this (host) PID; stage 1 exits next.
    InitPid(i32),
    /// init → parent: put me in my cgroup, then tell me to go on (before a cgroup unshare).
    AwaitProceed,
    Proceed,
    /// init → parent: mounts are done; run prestart and createRuntime hooks.
    RunHooks,
    HooksDone,
    /// init → parent: set up, waiting for `start`.
    Ready,
    /// child → parent: setting up failed.
    Failed(String),
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ctx(|| "socketpair for the init channel".into())?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Message) -> Result<()> {
        let buf = serde_json::to_vec(msg).map_err(|e| Error::Child(e.to_string()))?;
        send(self.fd.as_raw_fd(), &buf, MsgFlags::MSG_NOSIGNAL)
            .ctx(|| "sending on the init channel".into())?;
        Ok(())
    }

    /// `None` when the peer has closed its end.
    pub fn recv(&self) -> Result<Option<Message>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    let msg = serde_json::from_slice(&buf[..n]).map_err(|e| {
                        Error::Child(format!("malformed message on the init channel: {e}"))
                    })?;
                    return Ok(Some(msg));
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e).ctx(|| "reading the init channel".into()),
            }
        }
    }

    /// Waits for exactly `want`; a failure report or a closed channel becomes an error.
    pub fn expect(&self, want: Message) -> Result<()> {
        match self.recv()? {
            Some(m) if std::mem::discriminant(&m) == std::mem::discriminant(&want) => Ok(()),
            Some(Message::Failed(msg)) => Err(Error::Child(msg)),
            Some(other) => Err(Error::Child(format!(
                "init channel: expected {want:?}, got {other:?}"
            ))),
            None => Err(Error::Child(format!(
                "init channel closed while waiting for {want:?}"
            ))),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// # Safety
    /// `fd` must be an open socket this process owns.
    pub unsafe fn from_raw(fd: RawFd) -> Channel {
        Channel {
            // SAFETY: the caller guarantees ownership of an open fd.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
