//! The message channel between the runtime and the process it is turning into a container.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is one JSON datagram;
//! an empty read means the other side is gone (e.g. the child called execve or died).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
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
    /// exec's first process → parent: it forked the process that becomes the workload, this
    /// (host) PID, into the container's pid namespace; it exits next.
    ProcessPid(i32),
    /// init → parent: put me in my cgroup, then tell me to go on (before a cgroup unshare).
    AwaitProceed,
    Proceed,
    /// init → parent: mounts are done; run prestart and createRuntime hooks.
    RunHooks,
    /// parent → init: hooks done; carries the init's host PID (it may only know itself as 1).
    HooksDone(i32),
    /// child → parent, with an fd attached: the notify fd of filter N of the chain, for its
    /// `listenerPath`.
    NotifyFd(usize),
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

    /// Sends `msg` with `fd` attached (SCM_RIGHTS).
    pub fn send_with_fd(&self, msg: &Message, fd: RawFd) -> Result<()> {
        let buf = serde_json::to_vec(msg).map_err(|e| Error::Child(e.to_string()))?;
        crate::tty::send_fd(self.fd.as_raw_fd(), &buf, fd)
    }

    /// `None` when the peer has closed its end.
    pub fn recv(&self) -> Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Like [`Channel::recv`], also returning an fd sent along.
    pub fn recv_with_fd(&self) -> Result<Option<(Message, Option<OwnedFd>)>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let (n, fd) = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fd = None;
                    for c in m.cmsgs().ctx(|| "reading the init channel".into())? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: the kernel installed these fds in our table for us.
                            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
                        }
                    }
                    (m.bytes, fd)
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e).ctx(|| "reading the init channel".into()),
            };
            if n == 0 {
                return Ok(None);
            }
            let msg = serde_json::from_slice(&buf[..n])
                .map_err(|e| Error::Child(format!("malformed message on the init channel: {e}")))?;
            return Ok(Some((msg, fd)));
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
