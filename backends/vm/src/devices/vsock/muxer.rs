//! The host side of the device: the Unix socket listener and its `CONNECT N` handshakes, the
//! connections out to `<uds>_N` the guest asks for, and the table that maps each (host port,
//! guest port) pair to its connection and its socket in the epoll set. Each packet from the
//! guest is routed here; what we answer waits in `control` until the device places it.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Conn, ConnKey, ConnState, CONN_BUF};
use super::packet::{
    PacketHeader, HOST_CID, MAX_PKT_DATA, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST,
    OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::devices::mmio::Interrupt;
use crate::GuestMemory;

/// First port number handed to host-initiated connections (as Firecracker: high, unlikely to
/// collide with a port the guest listens on).
pub(super) const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// A host stream that connected to `<uds>` and has not finished its `CONNECT N` line.
pub(super) struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What the device's socket thread and the vCPU thread share, under one lock: the host side
/// (the epoll set, the connections by port pair and by socket, the unfinished handshakes),
/// the control packets waiting for rx buffers, and the queues once the driver activated the
/// device (`mem` is None until then).
pub struct VsockState {
    pub(super) guest_cid: u64,
    pub(super) uds_path: PathBuf,
    pub(super) epoll: Arc<Epoll>,
    pub(super) mem: Option<GuestMemory>,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Option<Arc<Interrupt>>,
    pub(super) conns: HashMap<ConnKey, Conn>,
    pub(super) by_fd: HashMap<RawFd, ConnKey>,
    pub(super) handshakes: HashMap<RawFd, Handshake>,
    /// Control packets (no payload) waiting for rx buffers.
    pub(super) control: VecDeque<PacketHeader>,
    pub(super) next_local_port: u32,
}

impl VsockState {
    pub(super) fn accept_all(&mut self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if self
                        .epoll
                        .ctl(
                            ControlOperation::Add,
                            fd,
                            EpollEvent::new(EventSet::IN, fd as u64),
                        )
                        .is_ok()
                    {
                        self.handshakes.insert(
                            fd,
                            Handshake {
                                stream,
                                line: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("vsock accept: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn socket_event(&mut self, fd: RawFd, events: EventSet) {
        if self.handshakes.contains_key(&fd) {
            self.handshake_readable(fd);
        } else if let Some(key) = self.by_fd.get(&fd).copied() {
            self.conn_event(key, events);
        }
    }

    /// Reads the `CONNECT <port>\n` line; a bad line closes the stream.
    fn handshake_readable(&mut self, fd: RawFd) {
        if self.mem.is_none() {
            // Guest driver not ready: the line waits in the socket (level-triggered, so stop
            // listening until activation re-arms it).
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                fd,
                EpollEvent::new(EventSet::empty(), fd as u64),
            );
            return;
        }
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => {
                    break std::str::from_utf8(&hs.line)
                        .ok()
                        .and_then(|l| l.strip_prefix("CONNECT "))
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        .ok_or(());
                }
                Ok(_) if hs.line.len() < 32 => hs.line.push(byte[0]),
                Ok(_) => break Err(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break Err(()),
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let Ok(peer_port) = port else {
            tracing::debug!("vsock: malformed CONNECT line from a host stream");
            return;
        };
        let local = self.next_local_port;
        self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
        let key = ConnKey {
            local,
            peer: peer_port,
        };
        let conn = Conn::new(hs.stream, ConnState::Connecting, &PacketHeader::default());
        self.insert_conn(key, conn);
        self.queue_control(key, OP_REQUEST, 0);
    }

    fn insert_conn(&mut self, key: ConnKey, conn: Conn) {
        let fd = conn.stream.as_raw_fd();
        if self
            .epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::empty(), fd as u64),
            )
            .is_err()
        {
            return;
        }
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.update_interest(key);
    }

    pub(super) fn remove_conn(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            let fd = conn.stream.as_raw_fd();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.by_fd.remove(&fd);
        }
    }

    pub(super) fn update_interest(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            let fd = conn.stream.as_raw_fd();
            if self
                .epoll
                .ctl(
                    ControlOperation::Modify,
                    fd,
                    EpollEvent::new(wanted, fd as u64),
                )
                .is_ok()
            {
                conn.interest = wanted;
            }
        }
    }

    fn conn_event(&mut self, key: ConnKey, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::OUT) {
            if conn.flush_to_host().is_err() {
                self.reset(key);
                return;
            }
            self.maybe_credit_update(key);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::IN) && conn.to_guest.is_empty() {
            let want = (conn.peer_credit() as usize).min(MAX_PKT_DATA);
            let mut buf = vec![0u8; want];
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.host_eof = true;
                    self.queue_control(key, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
                }
                Ok(n) => {
                    buf.truncate(n);
                    conn.to_guest = buf;
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.reset(key);
                    return;
                }
            }
        }
        self.update_interest(key);
    }

    /// Tells the guest how much of its data reached the host once half the buffer was consumed
    /// without a packet to carry the news.
    fn maybe_credit_update(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get(&key) {
            if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= CONN_BUF / 2 {
                self.queue_control(key, OP_CREDIT_UPDATE, 0);
            }
        }
    }

    fn reset(&mut self, key: ConnKey) {
        self.remove_conn(key);
        self.queue_control(key, OP_RST, 0);
    }

    pub(super) fn header(&self, key: ConnKey, op: u16, flags: u32, len: u32) -> PacketHeader {
        let (buf_alloc, fwd_cnt) = self
            .conns
            .get(&key)
            .map_or((CONN_BUF, 0), |c| (CONN_BUF, c.fwd_cnt));
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.local,
            dst_port: key.peer,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn queue_control(&mut self, key: ConnKey, op: u16, flags: u32) {
        let hdr = self.header(key, op, flags, 0);
        self.control.push_back(hdr);
    }

    pub(super) fn guest_packet(&mut self, hdr: PacketHeader, data: Vec<u8>) {
        let key = ConnKey {
            local: hdr.dst_port,
            peer: hdr.src_port,
        };
        if hdr.dst_cid != HOST_CID || hdr.src_cid != self.guest_cid || hdr.type_ != TYPE_STREAM {
            if hdr.op != OP_RST {
                self.control.push_back(PacketHeader {
                    op: OP_RST,
                    ..self.header(key, OP_RST, 0, 0)
                });
            }
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.peer_buf_alloc = hdr.buf_alloc;
            conn.peer_fwd_cnt = hdr.fwd_cnt;
        }
        match hdr.op {
            OP_REQUEST => self.guest_connect(key, &hdr),
            OP_RESPONSE => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return self.queue_control(key, OP_RST, 0);
                };
                if conn.state != ConnState::Connecting {
                    return self.reset(key);
                }
                conn.state = ConnState::Established;
                let reply = format!("OK {}\n", key.local);
                conn.to_host.extend(reply.as_bytes());
                // The OK line is not guest data: it does not count against the guest's credit.
                conn.fwd_cnt = conn.fwd_cnt.wrapping_sub(reply.len() as u32);
                if conn.flush_to_host().is_err() {
                    return self.reset(key);
                }
            }
            OP_RW => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return self.queue_control(key, OP_RST, 0);
                };
                if conn.state != ConnState::Established {
                    return self.reset(key);
                }
                conn.to_host.extend(&data);
                if conn.flush_to_host().is_err() {
                    return self.reset(key);
                }
                self.maybe_credit_update(key);
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => self.queue_control(key, OP_CREDIT_UPDATE, 0),
            OP_SHUTDOWN => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                if hdr.flags & SHUTDOWN_SEND != 0 {
                    conn.peer_done_sending = true;
                    if conn.flush_to_host().is_err() {
                        return self.reset(key);
                    }
                }
                if hdr.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == (SHUTDOWN_SEND | SHUTDOWN_RCV) {
                    // Both directions closed: data already written stays with the host socket.
                    self.reset(key);
                }
            }
            OP_RST => self.remove_conn(key),
            _ => self.reset(key),
        }
        self.update_interest(key);
    }

    /// The guest connects to host port `key.local`: connect to `<uds>_<port>`.
    fn guest_connect(&mut self, key: ConnKey, hdr: &PacketHeader) {
        if self.conns.contains_key(&key) {
            return self.reset(key);
        }
        let path = format!("{}_{}", self.uds_path.display(), key.local);
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
            Ok(stream) => {
                self.insert_conn(key, Conn::new(stream, ConnState::Established, hdr));
                self.queue_control(key, OP_RESPONSE, 0);
            }
            Err(e) => {
                tracing::debug!(
                    "vsock: guest connect to host port {} ({path}): {e}",
                    key.local
                );
                self.queue_control(key, OP_RST, 0);
            }
        }
    }

    /// Re-arms host streams whose CONNECT line arrived before the guest driver was ready.
    pub(super) fn rearm_handshakes(&mut self) {
        for fd in self.handshakes.keys() {
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                *fd,
                EpollEvent::new(EventSet::IN, *fd as u64),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;

    use crate::devices::mmio::lock;
    use crate::devices::testing::memory;
    use crate::devices::vsock::packet::{
        PacketHeader, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV,
        SHUTDOWN_SEND,
    };
    use crate::devices::vsock::testing::{hdr, rig, CID};

    #[test]
    fn guest_connects_to_a_host_port_and_data_flows_both_ways() {
        let mem = memory();
        let mut r = rig(&mem, "g2h");
        let listener = UnixListener::bind(format!("{}_1024", r.uds.display())).unwrap();
        r.guest_send(hdr(OP_REQUEST, 5000, 1024, 0, 65536, 0), &[]);
        let (h, _) = r.guest_recv_one();
        let (op, src, dst, dcid) = (h.op, h.src_port, h.dst_port, h.dst_cid);
        assert_eq!((op, src, dst, dcid), (OP_RESPONSE, 1024, 5000, CID));
        let (mut host, _) = listener.accept().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        r.guest_send(hdr(OP_RW, 5000, 1024, 5, 65536, 0), b"hello");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");

        host.write_all(b"world").unwrap();
        let (h, data) = r.guest_recv_one();
        let op = h.op;
        assert_eq!(op, OP_RW);
        assert_eq!(data, b"world");
        let fwd = h.fwd_cnt;
        assert_eq!(fwd, 5, "the guest's 5 bytes reached the host");

        // The host closes: the guest is told both directions are shut, and its RST ends it.
        drop(host);
        let (h, _) = r.guest_recv_one();
        let (op, flags) = (h.op, h.flags);
        assert_eq!((op, flags), (OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
        r.guest_send(hdr(OP_RST, 5000, 1024, 0, 65536, 0), &[]);
        assert!(lock(&r.dev.state).conns.is_empty());
    }

    #[test]
    fn guest_connect_to_a_port_nobody_serves_is_reset() {
        let mem = memory();
        let mut r = rig(&mem, "nolisten");
        r.guest_send(hdr(OP_REQUEST, 5001, 4242, 0, 65536, 0), &[]);
        let (h, _) = r.guest_recv_one();
        let op = h.op;
        assert_eq!(op, OP_RST);
    }

    #[test]
    fn host_connects_with_a_connect_line() {
        let mem = memory();
        let mut r = rig(&mem, "h2g");
        let mut host = UnixStream::connect(&r.uds).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(b"CONNECT 1024\n").unwrap();
        let (h, _) = r.guest_recv_one();
        let (op, dst, dcid) = (h.op, h.dst_port, h.dst_cid);
        assert_eq!((op, dst, dcid), (OP_REQUEST, 1024, CID));
        let local = h.src_port;
        // The guest accepts.
        r.guest_send(
            PacketHeader {
                src_port: 1024,
                dst_port: local,
                ..hdr(OP_RESPONSE, 1024, local, 0, 65536, 0)
            },
            &[],
        );
        let mut line = String::new();
        BufReader::new(&host).read_line(&mut line).unwrap();
        assert_eq!(line, format!("OK {local}\n"));
        host.write_all(b"ping").unwrap();
        let (h, data) = r.guest_recv_one();
        let op = h.op;
        assert_eq!((op, data.as_slice()), (OP_RW, &b"ping"[..]));
        r.guest_send(hdr(OP_RW, 1024, local, 4, 65536, 4), b"pong");
        let mut buf = [0u8; 4];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        // The guest resets: the host sees end of stream.
        r.guest_send(hdr(OP_RST, 1024, local, 0, 65536, 4), &[]);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn host_connect_refused_by_the_guest_closes_the_stream() {
        let mem = memory();
        let mut r = rig(&mem, "h2g-rst");
        let mut host = UnixStream::connect(&r.uds).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(b"CONNECT 7\n").unwrap();
        let (h, _) = r.guest_recv_one();
        let local = h.src_port;
        r.guest_send(hdr(OP_RST, 7, local, 0, 0, 0), &[]);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "no OK line for a refused connection");

        let mut bad = UnixStream::connect(&r.uds).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bad.write_all(b"HELLO\n").unwrap();
        let mut rest = Vec::new();
        bad.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a malformed line closes the stream");
    }

    #[test]
    fn packets_from_a_wrong_cid_are_refused() {
        let mem = memory();
        let mut r = rig(&mem, "cid");
        let _listener = UnixListener::bind(format!("{}_1024", r.uds.display())).unwrap();
        let mut h = hdr(OP_REQUEST, 5004, 1024, 0, 65536, 0);
        h.src_cid = 99;
        r.guest_send(h, &[]);
        let (h, _) = r.guest_recv_one();
        let op = h.op;
        assert_eq!(op, OP_RST);
        assert!(lock(&r.dev.state).conns.is_empty());
    }
}
