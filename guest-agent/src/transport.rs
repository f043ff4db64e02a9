//! How the agent reaches the host and is reached by it: vsock in a guest (peers other than the
//! host refused), Unix sockets in the loopback tests.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};
use strata_agent_protocol::{write_frame, Response};

use crate::Endpoint;

pub(crate) enum Listener {
    Unix(UnixListener),
    Vsock(OwnedFd),
}

impl Listener {
    /// The next connection, or None for one refused (and closed) because of its peer.
    pub(crate) fn accept(&self) -> std::io::Result<Option<UnixStream>> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Some(s)),
            Listener::Vsock(fd) => {
                let conn = socket::accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
                // SAFETY: accept4 returned a new socket fd that nothing else owns.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
                let peer = socket::getpeername::<VsockAddr>(fd.as_raw_fd()).ok();
                if !peer.is_some_and(|p| admits(p.cid())) {
                    log_refused(peer);
                    return Ok(None);
                }
                // A vsock stream is driven with the same read/write/shutdown calls as a Unix
                // stream; UnixStream is only the owner and the Read/Write impls here.
                Ok(Some(UnixStream::from(fd)))
            }
        }
    }
}

/// Whether a vsock peer may talk to the agent: the host only. Anything inside the guest (a
/// container allowed vsock, through the loopback CID, the guest's own CID, or a transport that
/// reflects it) must not, for the agent obeys whoever reaches it.
pub fn admits(peer_cid: u32) -> bool {
    peer_cid == strata_agent_protocol::HOST_CID
}

/// Says that a peer (None: one whose address could not be read) was refused; the 1st, 2nd,
/// 4th, 8th, ... time only, so that a container that keeps trying cannot fill the host's copy
/// of the console.
pub(crate) fn log_refused(peer: Option<VsockAddr>) {
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        let from = peer.map_or_else(
            || "an unknown peer".to_string(),
            |p| format!("CID {} port {}", p.cid(), p.port()),
        );
        eprintln!(
            "strata-agent: refused a vsock connection from {from}: only the host (CID {}) is \
             served ({n} refused so far)",
            libc::VMADDR_CID_HOST
        );
    }
}

pub(crate) fn vsock_socket() -> Result<OwnedFd> {
    socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("vsock socket (is virtio-vsock in the guest kernel?)")
}

pub(crate) fn listen(at: &Endpoint) -> Result<Listener> {
    match at {
        Endpoint::Unix(path) => {
            let _ = std::fs::remove_file(path);
            Ok(Listener::Unix(UnixListener::bind(path).with_context(
                || format!("listening on {}", path.display()),
            )?))
        }
        Endpoint::Vsock { cid, port } => {
            let fd = vsock_socket()?;
            socket::bind(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))
                .with_context(|| format!("binding vsock port {port}"))?;
            socket::listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))
                .context("vsock listen")?;
            Ok(Listener::Vsock(fd))
        }
    }
}

pub(crate) fn connect(to: &Endpoint) -> Result<UnixStream> {
    match to {
        Endpoint::Unix(path) => {
            UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))
        }
        Endpoint::Vsock { cid, port } => {
            let fd = vsock_socket()?;
            socket::connect(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))
                .with_context(|| format!("connecting to host vsock port {port}"))?;
            Ok(UnixStream::from(fd))
        }
    }
}

/// Tells the host the agent is listening.
pub(crate) fn announce(to: &Endpoint) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match connect(to) {
            Ok(mut s) => {
                write_frame(&mut s, &Response::Ok).context("sending ready")?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no ready endpoint")))
        .context("telling the host the agent is up")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_is_served_over_vsock() {
        assert!(admits(libc::VMADDR_CID_HOST));
        // Loopback, the guest's own CID, the hypervisor, "any", and some other VM.
        for cid in [
            libc::VMADDR_CID_LOCAL,
            strata_agent_protocol::GUEST_CID,
            libc::VMADDR_CID_HYPERVISOR,
            libc::VMADDR_CID_ANY,
            4,
        ] {
            assert!(!admits(cid), "CID {cid} admitted");
        }
    }
}
