//! One stream between a guest port and a host Unix socket: its state, the bytes held each way,
//! and the virtio-vsock credit accounting (how much the guest can still take from us, how much
//! of its data reached the host).

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::packet::PacketHeader;

/// Receive buffer we advertise per connection.
pub(super) const CONN_BUF: u32 = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    /// Our (host) side port.
    pub(super) local: u32,
    /// The guest side port.
    pub(super) peer: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Host-initiated, REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

pub(super) struct Conn {
    pub(super) stream: UnixStream,
    pub(super) state: ConnState,
    /// The guest's receive buffer and how much of what we sent it has consumed.
    pub(super) peer_buf_alloc: u32,
    pub(super) peer_fwd_cnt: u32,
    /// Bytes we have sent the guest.
    pub(super) rx_cnt: u32,
    /// Bytes from the guest that reached the host socket, and the value last told the guest.
    pub(super) fwd_cnt: u32,
    pub(super) fwd_cnt_sent: u32,
    /// Guest data not yet written to the host socket (bounded by CONN_BUF through credit).
    pub(super) to_host: VecDeque<u8>,
    /// Host data read but not yet placed in the rx queue.
    pub(super) to_guest: Vec<u8>,
    pub(super) host_eof: bool,
    /// The guest will send no more: shut our write side once `to_host` drains.
    pub(super) peer_done_sending: bool,
    /// Interest currently registered with epoll.
    pub(super) interest: EventSet,
}

impl Conn {
    pub(super) fn new(stream: UnixStream, state: ConnState, peer: &PacketHeader) -> Self {
        Conn {
            stream,
            state,
            peer_buf_alloc: peer.buf_alloc,
            peer_fwd_cnt: peer.fwd_cnt,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            to_guest: Vec::new(),
            host_eof: false,
            peer_done_sending: false,
            interest: EventSet::empty(),
        }
    }

    pub(super) fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    pub(super) fn wanted_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.state == ConnState::Established
            && self.to_guest.is_empty()
            && !self.host_eof
            && self.peer_credit() > 0
        {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }

    /// Writes what the socket takes now.
    pub(super) fn flush_to_host(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.to_host.is_empty() && self.peer_done_sending {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    use crate::devices::testing::memory;
    use crate::devices::vsock::packet::{
        OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RW, OP_SHUTDOWN, SHUTDOWN_SEND,
    };
    use crate::devices::vsock::testing::{hdr, rig};

    #[test]
    fn the_guest_gets_no_more_than_its_credit() {
        let mem = memory();
        let mut r = rig(&mem, "credit");
        let listener = UnixListener::bind(format!("{}_1024", r.uds.display())).unwrap();
        // The guest has a 16-byte receive buffer.
        r.guest_send(hdr(OP_REQUEST, 5002, 1024, 0, 16, 0), &[]);
        r.guest_recv_one();
        let (mut host, _) = listener.accept().unwrap();
        host.write_all(&[7u8; 100]).unwrap();
        let (_, data) = r.guest_recv_one();
        assert_eq!(data.len(), 16);
        std::thread::sleep(Duration::from_millis(50));
        assert!(r.rx.take_used().is_empty(), "nothing beyond the credit");
        // The guest consumed its 16 bytes.
        r.guest_send(hdr(OP_CREDIT_UPDATE, 5002, 1024, 0, 16, 16), &[]);
        let (_, data) = r.guest_recv_one();
        assert_eq!(data.len(), 16);
        // A credit request is answered with our counters.
        r.guest_send(hdr(OP_CREDIT_REQUEST, 5002, 1024, 0, 16, 32), &[]);
        let packets = r.guest_recv();
        assert!(packets.iter().any(|(h, _)| {
            let op = h.op;
            op == OP_CREDIT_UPDATE
        }));
    }

    #[test]
    fn guest_shutdown_of_its_sending_side_half_closes_the_host_stream() {
        let mem = memory();
        let mut r = rig(&mem, "shut");
        let listener = UnixListener::bind(format!("{}_1024", r.uds.display())).unwrap();
        r.guest_send(hdr(OP_REQUEST, 5003, 1024, 0, 65536, 0), &[]);
        r.guest_recv_one();
        let (mut host, _) = listener.accept().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        r.guest_send(hdr(OP_RW, 5003, 1024, 3, 65536, 0), b"bye");
        let mut sd = hdr(OP_SHUTDOWN, 5003, 1024, 0, 65536, 0);
        sd.flags = SHUTDOWN_SEND;
        r.guest_send(sd, &[]);
        let mut all = Vec::new();
        host.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"bye", "data, then end of stream");
        // The host can still answer on its half.
        host.write_all(b"ok").unwrap();
        let (_, data) = r.guest_recv_one();
        assert_eq!(data, b"ok");
    }
}
