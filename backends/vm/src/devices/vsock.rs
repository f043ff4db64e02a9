//! virtio-vsock in user space (this host has no vhost-vsock), exposed to the host the way
//! Firecracker's hybrid vsock is:
//! - the guest connects to host port N: the device connects to the Unix socket `<uds>_N`;
//! - a host process connects to `<uds>` and writes `CONNECT N\n`: the device opens a stream to
//!   guest port N and answers `OK <host port>\n` once the guest accepted (or closes the stream).
//!
//! One thread per device waits on the Unix sockets (epoll); queue notifications from the vCPU
//! are handled on the vCPU thread. Both work on [`VsockState`] under one lock.
//!
//! Flow control follows the virtio-vsock credit scheme: we never send a guest connection more
//! than the buffer it advertised minus what it has not consumed, and we advertise a fixed buffer
//! per connection whose consumption (`fwd_cnt`) only advances when bytes reach the host socket,
//! so a slow host reader throttles the guest instead of growing our memory.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::{lock, read_config_bytes, Interrupt, VirtioDevice};
use crate::GuestMemory;

pub const VIRTIO_ID_VSOCK: u32 = 19;
pub const HOST_CID: u64 = 2;
const QUEUE_SIZE: u16 = 256;
const RXQ: usize = 0;
const TXQ: usize = 1;

const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_RCV: u32 = 1;
const SHUTDOWN_SEND: u32 = 2;

/// Receive buffer we advertise per connection.
const CONN_BUF: u32 = 256 * 1024;
/// Largest payload of one packet we put on the rx queue.
const MAX_PKT_DATA: usize = 64 * 1024;
/// First port number handed to host-initiated connections (as Firecracker: high, unlikely to
/// collide with a port the guest listens on).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_STOP: u64 = u64::MAX - 1;

/// The virtio-vsock packet header (virtio 1.2 §5.10.6), little endian on the wire.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

// SAFETY: PacketHeader is plain old data: integers only, packed, so any byte pattern is valid.
unsafe impl ByteValued for PacketHeader {}

pub const HEADER_LEN: usize = std::mem::size_of::<PacketHeader>();

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    /// Our (host) side port.
    local: u32,
    /// The guest side port.
    peer: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum ConnState {
    /// Host-initiated, REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Conn {
    stream: UnixStream,
    state: ConnState,
    /// The guest's receive buffer and how much of what we sent it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes we have sent the guest.
    rx_cnt: u32,
    /// Bytes from the guest that reached the host socket, and the value last told the guest.
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// Guest data not yet written to the host socket (bounded by CONN_BUF through credit).
    to_host: VecDeque<u8>,
    /// Host data read but not yet placed in the rx queue.
    to_guest: Vec<u8>,
    host_eof: bool,
    /// The guest will send no more: shut our write side once `to_host` drains.
    peer_done_sending: bool,
    /// Interest currently registered with epoll.
    interest: EventSet,
}

impl Conn {
    fn new(stream: UnixStream, state: ConnState, peer: &PacketHeader) -> Self {
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

    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn wanted_interest(&self) -> EventSet {
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
    fn flush_to_host(&mut self) -> std::io::Result<()> {
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

/// A host stream that connected to `<uds>` and has not finished its `CONNECT N` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

pub struct VsockState {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Arc<Epoll>,
    mem: Option<GuestMemory>,
    queues: Vec<Queue>,
    interrupt: Option<Arc<Interrupt>>,
    conns: HashMap<ConnKey, Conn>,
    by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    /// Control packets (no payload) waiting for rx buffers.
    control: VecDeque<PacketHeader>,
    next_local_port: u32,
}

/// The vsock device. Dropping it stops its thread and removes its socket.
pub struct Vsock {
    state: Arc<Mutex<VsockState>>,
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot listen on the vsock socket {path}: {source}")]
    Listen {
        path: String,
        source: std::io::Error,
    },
    #[error("vsock device setup: {0}")]
    Setup(#[from] std::io::Error),
}

impl Vsock {
    /// Listens on `uds_path` (host-initiated connections) right away, so a host process can
    /// connect before the guest is up; its `CONNECT` waits until the guest driver is ready.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let listener = UnixListener::bind(uds_path).map_err(|source| VsockError::Listen {
            path: uds_path.display().to_string(),
            source,
        })?;
        listener.set_nonblocking(true)?;
        let epoll = Arc::new(Epoll::new()?);
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        let state = Arc::new(Mutex::new(VsockState {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            epoll: epoll.clone(),
            mem: None,
            queues: Vec::new(),
            interrupt: None,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            control: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        }));
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("vsock".into())
            .spawn(move || event_loop(listener, epoll, thread_state))?;
        Ok(Vsock {
            state,
            stop,
            thread: Some(thread),
            uds_path: uds_path.to_path_buf(),
        })
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

fn event_loop(listener: UnixListener, epoll: Arc<Epoll>, state: Arc<Mutex<VsockState>>) {
    crate::seccomp::apply_current_thread(crate::seccomp::ThreadRole::Vsock);
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("vsock event loop: {e}");
                return;
            }
        };
        let mut st = lock(&state);
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => return,
                TOKEN_LISTENER => st.accept_all(&listener),
                token => st.socket_event(token as RawFd, ev.event_set()),
            }
        }
        st.fill_rx();
    }
}

impl VsockState {
    fn accept_all(&mut self, listener: &UnixListener) {
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

    fn socket_event(&mut self, fd: RawFd, events: EventSet) {
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

    fn remove_conn(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            let fd = conn.stream.as_raw_fd();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.by_fd.remove(&fd);
        }
    }

    fn update_interest(&mut self, key: ConnKey) {
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

    fn header(&self, key: ConnKey, op: u16, flags: u32, len: u32) -> PacketHeader {
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

    /// Handles every packet the guest queued on tx.
    pub fn process_tx(&mut self) {
        let (Some(mem), Some(_)) = (self.mem.clone(), self.interrupt.clone()) else {
            return;
        };
        let mut used_any = false;
        while let Some(chain) = self
            .queues
            .get_mut(TXQ)
            .and_then(|q| q.pop_descriptor_chain(&mem))
        {
            let head = chain.head_index();
            match chain.reader::<()>(&mem) {
                Ok(mut reader) => match reader.read_obj::<PacketHeader>() {
                    Ok(hdr) => {
                        let len = (hdr.len as usize).min(reader.available_bytes());
                        let mut data = vec![0u8; len];
                        if reader.read_exact(&mut data).is_ok() {
                            self.guest_packet(hdr, data);
                        }
                    }
                    Err(_) => tracing::debug!("vsock: short tx packet"),
                },
                Err(e) => tracing::debug!("vsock: bad tx chain: {e}"),
            }
            if let Some(q) = self.queues.get_mut(TXQ) {
                let _ = q.add_used(&mem, head, 0);
                used_any = true;
            }
        }
        if used_any {
            self.notify(TXQ);
        }
    }

    fn guest_packet(&mut self, hdr: PacketHeader, data: Vec<u8>) {
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

    /// Moves control packets, then host data, into the guest's rx buffers.
    pub fn fill_rx(&mut self) {
        let Some(mem) = self.mem.clone() else { return };
        let mut used_any = false;
        loop {
            let packet = if let Some(hdr) = self.control.pop_front() {
                if let Some(conn) = self.conns.get_mut(&ConnKey {
                    local: hdr.src_port,
                    peer: hdr.dst_port,
                }) {
                    conn.fwd_cnt_sent = hdr.fwd_cnt;
                }
                (hdr, Vec::new())
            } else if let Some(key) = self
                .conns
                .iter()
                .find(|(_, c)| !c.to_guest.is_empty())
                .map(|(k, _)| *k)
            {
                let data = self
                    .conns
                    .get_mut(&key)
                    .map(|c| std::mem::take(&mut c.to_guest))
                    .unwrap_or_default();
                (self.header(key, OP_RW, 0, data.len() as u32), data)
            } else {
                break;
            };
            let Some(chain) = self
                .queues
                .get_mut(RXQ)
                .and_then(|q| q.pop_descriptor_chain(&mem))
            else {
                // No buffer from the guest: put the packet back and wait for an rx notify.
                let (hdr, data) = packet;
                if data.is_empty() && hdr.op != OP_RW {
                    self.control.push_front(hdr);
                } else if let Some(c) = self.conns.get_mut(&ConnKey {
                    local: hdr.src_port,
                    peer: hdr.dst_port,
                }) {
                    c.to_guest = data;
                }
                break;
            };
            let head = chain.head_index();
            let (hdr, data) = packet;
            let written = match chain.writer::<()>(&mem) {
                Ok(mut w) if w.available_bytes() >= HEADER_LEN + data.len() => w
                    .write_obj(hdr)
                    .and_then(|_| w.write_all(&data))
                    .map(|_| w.bytes_written()),
                Ok(_) => Err(std::io::Error::other("rx buffer too small")),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let key = ConnKey {
                local: hdr.src_port,
                peer: hdr.dst_port,
            };
            match written {
                Ok(n) => {
                    if let Some(q) = self.queues.get_mut(RXQ) {
                        let _ = q.add_used(&mem, head, n as u32);
                        used_any = true;
                    }
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.rx_cnt = c.rx_cnt.wrapping_add(data.len() as u32);
                        c.fwd_cnt_sent = hdr.fwd_cnt;
                    }
                }
                Err(e) => {
                    tracing::warn!("vsock: cannot deliver a packet to the guest: {e}");
                    if let Some(q) = self.queues.get_mut(RXQ) {
                        let _ = q.add_used(&mem, head, 0);
                        used_any = true;
                    }
                }
            }
            self.update_interest(key);
        }
        if used_any {
            self.notify(RXQ);
        }
    }

    fn notify(&mut self, queue: usize) {
        let (Some(mem), Some(irq)) = (self.mem.as_ref(), self.interrupt.as_ref()) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(queue) {
            if q.needs_notification(mem).unwrap_or(true) {
                irq.signal_used_queue();
            }
        }
    }

    /// Re-arms host streams whose CONNECT line arrived before the guest driver was ready.
    fn rearm_handshakes(&mut self) {
        for fd in self.handshakes.keys() {
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                *fd,
                EpollEvent::new(EventSet::IN, *fd as u64),
            );
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cid = lock(&self.state).guest_cid.to_le_bytes();
        read_config_bytes(&cid, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), String> {
        if queues.len() != 3 {
            return Err(format!(
                "vsock needs 3 queues, the driver set up {}",
                queues.len()
            ));
        }
        let mut st = lock(&self.state);
        st.mem = Some(mem);
        st.queues = queues;
        st.interrupt = Some(interrupt);
        st.rearm_handshakes();
        Ok(())
    }

    fn queue_notify(&mut self, index: u32) {
        let mut st = lock(&self.state);
        if index as usize == TXQ {
            st.process_tx();
        }
        st.fill_rx();
    }

    fn reset(&mut self) {
        let mut st = lock(&self.state);
        let keys: Vec<ConnKey> = st.conns.keys().copied().collect();
        for key in keys {
            st.remove_conn(key);
        }
        st.control.clear();
        st.mem = None;
        st.queues.clear();
        st.interrupt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::testing::{interrupt, memory, Buf, Driver, Used};
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    const CID: u64 = 3;

    struct Rig<'a> {
        dev: Vsock,
        rx: Driver<'a>,
        tx: Driver<'a>,
        dir: PathBuf,
        uds: PathBuf,
    }

    impl Drop for Rig<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig<'a>(mem: &'a GuestMemory, name: &str) -> Rig<'a> {
        let dir = std::env::temp_dir().join(format!("strata-vsock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let mut dev = Vsock::new(CID, &uds).unwrap();
        let mut rx = Driver::new(mem, 0x0, 0x100_0000, 64);
        let tx = Driver::new(mem, 0x10000, 0x200_0000, 64);
        let ev = Driver::new(mem, 0x20000, 0x300_0000, 64);
        for _ in 0..32 {
            rx.push(&[Buf::In(4096)]);
        }
        dev.activate(
            mem.clone(),
            vec![rx.queue(), tx.queue(), ev.queue()],
            interrupt(),
        )
        .unwrap();
        Rig {
            dev,
            rx,
            tx,
            dir,
            uds,
        }
    }

    fn hdr(
        op: u16,
        src_port: u32,
        dst_port: u32,
        len: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
    ) -> PacketHeader {
        PacketHeader {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    impl Rig<'_> {
        fn guest_send(&mut self, h: PacketHeader, data: &[u8]) {
            let mut bytes = h.as_slice().to_vec();
            bytes.extend_from_slice(data);
            self.tx.push(&[Buf::Out(bytes)]);
            self.dev.queue_notify(TXQ as u32);
        }

        /// Packets the device put on rx, waiting for at least one.
        fn guest_recv(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
            let used: Vec<Used> = self.rx.wait_used();
            let n = used.len();
            for _ in 0..n {
                self.rx.push(&[Buf::In(4096)]);
            }
            self.dev.queue_notify(RXQ as u32);
            used.into_iter()
                .map(|u| {
                    let h = PacketHeader::from_slice(&u.written[..HEADER_LEN])
                        .copied()
                        .unwrap();
                    (h, u.written[HEADER_LEN..].to_vec())
                })
                .collect()
        }

        fn guest_recv_one(&mut self) -> (PacketHeader, Vec<u8>) {
            let mut packets = self.guest_recv();
            assert_eq!(
                packets.len(),
                1,
                "expected one packet, got {:?}",
                packets.iter().map(|p| p.0).collect::<Vec<_>>()
            );
            packets.remove(0)
        }
    }

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

    #[test]
    fn config_space_holds_the_guest_cid() {
        let mem = memory();
        let r = rig(&mem, "cfg");
        let mut cid = [0u8; 8];
        r.dev.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), CID);
        let mut hi = [0u8; 4];
        r.dev.read_config(4, &mut hi);
        assert_eq!(hi, [0; 4]);
    }
}
