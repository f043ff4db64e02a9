//! The virtio device: [`Vsock`] starts the thread that waits on the host sockets, implements
//! [`VirtioDevice`] (rx, tx and event queues; the config space holds the guest's CID), and
//! moves packets between the queues and the muxer: tx packets are handed to it, its control
//! packets and the host's data go into the guest's rx buffers.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::connection::ConnKey;
use super::muxer::{VsockState, FIRST_LOCAL_PORT};
use super::packet::{PacketHeader, HEADER_LEN, OP_RW};
use crate::devices::mmio::{lock, read_config_bytes, Interrupt, VirtioDevice};

pub const VIRTIO_ID_VSOCK: u32 = 19;
const QUEUE_SIZE: u16 = 256;
pub(super) const RXQ: usize = 0;
pub(super) const TXQ: usize = 1;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_STOP: u64 = u64::MAX - 1;

/// The vsock device. Dropping it stops its thread and removes its socket.
pub struct Vsock {
    pub(super) state: Arc<Mutex<VsockState>>,
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
        if let (Some(mem), Some(irq), Some(q)) = (
            self.mem.as_ref(),
            self.interrupt.as_ref(),
            self.queues.get_mut(queue),
        ) {
            irq.signal_used(q, mem);
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
    use crate::devices::mmio::VirtioDevice;
    use crate::devices::testing::memory;
    use crate::devices::vsock::testing::{rig, CID};

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
