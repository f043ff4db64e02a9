//! virtio-net (virtio 1.2 §5.1) over a tap device the caller opened (`IFF_TAP | IFF_NO_PI`,
//! without `IFF_VNET_HDR`): one frame per read and write. No offloads are offered, so every
//! header the guest sends is a plain one and every frame fits the guest's MTU; the device
//! strips the guest's header on transmit and puts a zeroed one (`num_buffers` 1) before each
//! frame it receives. The MAC and MTU come from the caller (the interface the tap stands for).
//!
//! Transmit runs on the vCPU thread that notifies; receive on a thread of the device's own,
//! which reads the tap while the guest has buffers and waits for an rx notify when it has none.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::mmio::{lock, read_config_bytes, Interrupt, VirtioDevice};
use crate::GuestMemory;

pub const VIRTIO_ID_NET: u32 = 1;
const VIRTIO_NET_F_MTU: u64 = 1 << 3;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const QUEUE_SIZE: u16 = 256;
const RXQ: usize = 0;
const TXQ: usize = 1;
/// `struct virtio_net_hdr_v1`: with VIRTIO_F_VERSION_1 it always has `num_buffers`.
pub const HDR_LEN: usize = 12;
/// The largest frame read from the tap: a tap never hands over more than 64 KiB.
const MAX_FRAME: usize = 65536;

const TOKEN_TAP: u64 = 1;
const TOKEN_KICK: u64 = 2;
const TOKEN_STOP: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("virtio-net: MTU {0} is outside 68..=65521")]
    Mtu(u16),
    #[error("virtio-net device setup: {0}")]
    Setup(#[from] std::io::Error),
}

/// What the guest's interface is: its MAC and, when given, its MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub mac: [u8; 6],
    pub mtu: Option<u16>,
}

struct NetState {
    tap: std::fs::File,
    mem: Option<GuestMemory>,
    queues: Vec<Queue>,
    interrupt: Option<Arc<Interrupt>>,
    /// A frame read from the tap while the guest had no receive buffer.
    pending: Option<Vec<u8>>,
    rx_buf: Vec<u8>,
}

/// The device. Dropping it stops its receive thread; the tap closes with the last handle.
pub struct Net {
    config: NetConfig,
    state: Arc<Mutex<NetState>>,
    kick: Arc<EventFd>,
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Net {
    /// Takes the tap's fd (made non-blocking here) and starts the receive thread.
    pub fn new(tap: OwnedFd, config: NetConfig) -> Result<Self, NetError> {
        if let Some(mtu) = config.mtu {
            if !(68..=65521).contains(&mtu) {
                return Err(NetError::Mtu(mtu));
            }
        }
        set_nonblocking(&tap)?;
        let epoll = Epoll::new()?;
        let kick = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        // Edge-triggered: the thread reads the tap until it would block, or until the guest
        // has no buffer left (then the rx notify, not the tap, wakes it).
        epoll.ctl(
            ControlOperation::Add,
            tap.as_raw_fd(),
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, TOKEN_TAP),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            kick.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_KICK),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        let state = Arc::new(Mutex::new(NetState {
            tap: std::fs::File::from(tap),
            mem: None,
            queues: Vec::new(),
            interrupt: None,
            pending: None,
            rx_buf: vec![0u8; MAX_FRAME],
        }));
        let thread_state = state.clone();
        let thread_kick = kick.clone();
        let thread = std::thread::Builder::new()
            .name("net".into())
            .spawn(move || rx_loop(epoll, thread_kick, thread_state))?;
        Ok(Net {
            config,
            state,
            kick,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd this function borrows; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn rx_loop(epoll: Epoll, kick: Arc<EventFd>, state: Arc<Mutex<NetState>>) {
    crate::seccomp::apply_current_thread(crate::seccomp::ThreadRole::Net);
    let mut events = vec![EpollEvent::default(); 4];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio-net receive loop: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => return,
                TOKEN_KICK => {
                    let _ = kick.read();
                }
                _ => {}
            }
        }
        lock(&state).receive();
    }
}

impl NetState {
    /// Guest frames on the transmit queue go to the tap. A frame the tap cannot take now is
    /// dropped, as a full NIC queue drops: TCP resends it.
    fn transmit(&mut self) {
        let Some(mem) = self.mem.clone() else { return };
        let mut used_any = false;
        while let Some(chain) = self
            .queues
            .get_mut(TXQ)
            .and_then(|q| q.pop_descriptor_chain(&mem))
        {
            let head = chain.head_index();
            match chain.reader::<()>(&mem) {
                // The guest sizes the chain: past a header and the largest frame a tap takes
                // it is dropped unread, never allocated.
                Ok(reader) if reader.available_bytes() > HDR_LEN + MAX_FRAME => {
                    tracing::debug!(
                        "virtio-net: a {}-byte transmit chain dropped",
                        reader.available_bytes()
                    );
                }
                Ok(mut reader) if reader.available_bytes() > HDR_LEN => {
                    let mut frame = vec![0u8; reader.available_bytes()];
                    if reader.read_exact(&mut frame).is_ok() {
                        if let Err(e) = self.tap.write(&frame[HDR_LEN..]) {
                            tracing::debug!("virtio-net: a frame the tap did not take: {e}");
                        }
                    }
                }
                Ok(_) => tracing::debug!("virtio-net: a transmit chain without a frame"),
                Err(e) => tracing::debug!("virtio-net: bad transmit chain: {e}"),
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

    /// Frames from the tap go into the guest's receive buffers while it has some.
    fn receive(&mut self) {
        let Some(mem) = self.mem.clone() else { return };
        let mut used_any = false;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.tap.read(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(n) => self.rx_buf[..n].to_vec(),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("virtio-net: reading the tap: {e}");
                        break;
                    }
                },
            };
            let Some(chain) = self
                .queues
                .get_mut(RXQ)
                .and_then(|q| q.pop_descriptor_chain(&mem))
            else {
                self.pending = Some(frame);
                break;
            };
            let head = chain.head_index();
            let written = match chain.writer::<()>(&mem) {
                Ok(mut w) if w.available_bytes() >= HDR_LEN + frame.len() => {
                    let mut hdr = [0u8; HDR_LEN];
                    hdr[10] = 1; // num_buffers, little-endian u16
                    w.write_all(&hdr)
                        .and_then(|_| w.write_all(&frame))
                        .map(|_| w.bytes_written())
                        .ok()
                }
                // Larger than the buffers the guest gives for its MTU: dropped, as a NIC
                // drops a frame over its MTU; the buffer is returned empty.
                _ => None,
            };
            if written.is_none() {
                tracing::debug!(
                    "virtio-net: a {}-byte frame dropped: no guest buffer holds it",
                    frame.len()
                );
            }
            if let Some(q) = self.queues.get_mut(RXQ) {
                let _ = q.add_used(&mem, head, written.unwrap_or(0) as u32);
                used_any = true;
            }
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

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 2]
    }

    fn features(&self) -> u64 {
        let mtu = if self.config.mtu.is_some() {
            VIRTIO_NET_F_MTU
        } else {
            0
        };
        VIRTIO_NET_F_MAC | mtu
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status, max_virtqueue_pairs, mtu (status is only read with F_STATUS).
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&self.config.mac);
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.config.mtu.unwrap_or(0).to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), String> {
        if queues.len() != 2 {
            return Err(format!(
                "virtio-net needs 2 queues, the driver set up {}",
                queues.len()
            ));
        }
        let mut st = lock(&self.state);
        st.mem = Some(mem);
        st.queues = queues;
        st.interrupt = Some(interrupt);
        drop(st);
        // Frames may have queued on the tap before the driver was up.
        let _ = self.kick.write(1);
        Ok(())
    }

    fn queue_notify(&mut self, index: u32) {
        match index as usize {
            TXQ => lock(&self.state).transmit(),
            RXQ => {
                let _ = self.kick.write(1);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        let mut st = lock(&self.state);
        st.mem = None;
        st.queues.clear();
        st.interrupt = None;
        st.pending = None;
    }
}

/// Parses a MAC address written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::testing::{interrupt, memory, Buf, Driver};
    use std::os::unix::net::UnixDatagram;

    const MAC: [u8; 6] = [0x02, 0x53, 0x54, 0, 0, 1];

    /// A device whose "tap" is one end of a datagram socket pair: a frame per message.
    fn rig(mtu: Option<u16>) -> (Net, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let dev = Net::new(OwnedFd::from(ours), NetConfig { mac: MAC, mtu }).unwrap();
        (dev, theirs)
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        (0..len).map(|i| fill ^ (i as u8)).collect()
    }

    #[test]
    fn config_space_and_features_describe_the_interface() {
        let (dev, _peer) = rig(Some(1400));
        assert_eq!(dev.device_type(), VIRTIO_ID_NET);
        assert_eq!(dev.features(), VIRTIO_NET_F_MAC | VIRTIO_NET_F_MTU);
        let mut mac = [0u8; 6];
        dev.read_config(0, &mut mac);
        assert_eq!(mac, MAC);
        let mut mtu = [0u8; 2];
        dev.read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 1400);
        let (dev, _peer) = rig(None);
        assert_eq!(
            dev.features(),
            VIRTIO_NET_F_MAC,
            "no MTU offered unless given"
        );
        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        assert!(Net::new(
            OwnedFd::from(ours),
            NetConfig {
                mac: MAC,
                mtu: Some(20)
            }
        )
        .is_err());
    }

    #[test]
    fn frames_cross_both_ways_and_wait_for_guest_buffers() {
        let mem = memory();
        let (mut dev, peer) = rig(Some(1500));
        let mut rx = Driver::new(&mem, 0x0, 0x100_0000, 256);
        let mut tx = Driver::new(&mem, 0x10000, 0x200_0000, 256);
        dev.activate(mem.clone(), vec![rx.queue(), tx.queue()], interrupt())
            .unwrap();

        // Transmit: the header is stripped, the frame reaches the tap whole, header and
        // frame in one buffer or in two.
        let out = frame(1000, 0x5a);
        let mut one = vec![0u8; HDR_LEN];
        one.extend_from_slice(&out);
        tx.push(&[Buf::Out(one)]);
        tx.push(&[Buf::Out(vec![0u8; HDR_LEN]), Buf::Out(out.clone())]);
        dev.queue_notify(TXQ as u32);
        assert_eq!(tx.take_used().len(), 2);
        let mut got = vec![0u8; 4096];
        for _ in 0..2 {
            let n = peer.recv(&mut got).unwrap();
            assert_eq!(&got[..n], &out[..]);
        }

        // Receive before the guest gave a buffer: held, then delivered on the rx notify,
        // with the frames after it, in order.
        let a = frame(60, 1);
        let b = frame(1514, 2);
        peer.send(&a).unwrap();
        peer.send(&b).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.take_used().is_empty());
        rx.push(&[Buf::In(2048)]);
        rx.push(&[Buf::In(HDR_LEN as u32), Buf::In(2036)]);
        dev.queue_notify(RXQ as u32);
        let mut used = rx.wait_used();
        if used.len() < 2 {
            used.extend(rx.wait_used());
        }
        assert_eq!(used.len(), 2);
        for (u, f) in used.iter().zip([&a, &b]) {
            assert_eq!(u.len as usize, HDR_LEN + f.len());
            let mut hdr = [0u8; HDR_LEN];
            hdr[10] = 1;
            assert_eq!(&u.written[..HDR_LEN], &hdr, "a plain header, num_buffers 1");
            assert_eq!(&u.written[HDR_LEN..], &f[..]);
        }

        // A frame larger than the guest's buffer is dropped, the buffer handed back empty,
        // and the next frame still arrives.
        rx.push(&[Buf::In(600)]);
        rx.push(&[Buf::In(600)]);
        peer.send(&frame(1514, 3)).unwrap();
        let small = frame(100, 4);
        peer.send(&small).unwrap();
        let mut used = rx.wait_used();
        if used.len() < 2 {
            used.extend(rx.wait_used());
        }
        assert_eq!(used.len(), 2);
        assert_eq!(used[0].len, 0);
        assert_eq!(&used[1].written[HDR_LEN..], &small[..]);

        // A transmit chain longer than any frame is dropped, not read into memory.
        tx.push(&[
            Buf::Out(vec![0u8; HDR_LEN]),
            Buf::Out(vec![7u8; MAX_FRAME + 1]),
        ]);
        tx.push(&[Buf::Out(vec![0u8; HDR_LEN]), Buf::Out(out.clone())]);
        dev.queue_notify(TXQ as u32);
        assert_eq!(tx.take_used().len(), 2);
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &out[..], "only the frame that fits went out");

        // After a reset nothing reaches the guest's old queues.
        dev.reset();
        peer.send(&frame(60, 5)).unwrap();
        rx.push(&[Buf::In(2048)]);
        dev.queue_notify(RXQ as u32);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.take_used().is_empty());
    }

    #[test]
    fn macs_parse_only_in_their_written_form() {
        assert_eq!(parse_mac("02:53:54:00:00:01"), Some(MAC));
        for bad in [
            "02:53:54:00:00",
            "02:53:54:00:00:01:02",
            "2:53:54:00:00:01",
            "zz:53:54:00:00:01",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
