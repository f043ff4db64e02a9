//! A guest driver for device tests: lays out a split virtqueue (descriptor table, available and
//! used rings) in real guest memory, makes descriptor chains available and reads the used ring
//! back, with no VM. (virtio-queue 0.17's `MockSplitQueue` places its used ring from the entry
//! count rather than the byte size of the available ring, so the two rings overlap once the
//! driver has made more than about half the entries available; the layout is done here.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::Interrupt;
use crate::GuestMemory;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
}

pub fn interrupt() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()))
}

pub enum Buf {
    /// Driver-to-device bytes.
    Out(Vec<u8>),
    /// A device-writable buffer of this size.
    In(u32),
}

pub struct Driver<'a> {
    mem: &'a GuestMemory,
    desc_table: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    next_desc: u16,
    next_data: u64,
    data_end: u64,
    used_seen: u16,
    size: u16,
    /// Buffers of each chain, by head index, to read device writes back.
    chains: std::collections::HashMap<u16, Vec<(u64, u32, bool)>>,
}

pub struct Used {
    pub head: u16,
    pub len: u32,
    /// Bytes the device wrote, concatenated over the chain's writable buffers.
    pub written: Vec<u8>,
}

impl<'a> Driver<'a> {
    /// A queue of `size` entries with its rings at `ring_base` and data buffers in
    /// [`data_base`, `data_base` + 8 MiB).
    pub fn new(mem: &'a GuestMemory, ring_base: u64, data_base: u64, size: u16) -> Self {
        Driver {
            mem,
            desc_table: ring_base,
            avail: ring_base + 16 * u64::from(size),
            used: (ring_base + 16 * u64::from(size) + 6 + 2 * u64::from(size)).next_multiple_of(4),
            avail_idx: 0,
            next_desc: 0,
            next_data: data_base,
            data_end: data_base + (8 << 20),
            used_seen: 0,
            size,
            chains: Default::default(),
        }
    }

    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_ready(true);
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q
    }

    /// Makes one chain available; returns its head index.
    pub fn push(&mut self, bufs: &[Buf]) -> u16 {
        let size = self.queue_len();
        let head = self.next_desc;
        let mut layout = Vec::new();
        for (i, buf) in bufs.iter().enumerate() {
            let (len, writable) = match buf {
                Buf::Out(bytes) => (bytes.len() as u32, false),
                Buf::In(len) => (*len, true),
            };
            if self.next_data + u64::from(len) > self.data_end {
                self.next_data = self.data_end - (8 << 20);
            }
            let addr = self.next_data;
            self.next_data += u64::from(len).max(1).next_multiple_of(64);
            if let Buf::Out(bytes) = buf {
                self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
            }
            let idx = (head + i as u16) % size;
            let last = i + 1 == bufs.len();
            let mut flags = if writable { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            let at = self.desc_table + 16 * u64::from(idx);
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem
                .write_obj((idx + 1) % size, GuestAddress(at + 14))
                .unwrap();
            layout.push((addr, len, writable));
        }
        let slot = u64::from(self.avail_idx % size);
        self.mem
            .write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        self.next_desc = (head + bufs.len() as u16) % size;
        self.chains.insert(head, layout);
        head
    }

    fn queue_len(&self) -> u16 {
        self.size
    }

    /// Used entries the device added since the last call.
    pub fn take_used(&mut self) -> Vec<Used> {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % self.queue_len());
            let at = self.used + 4 + slot * 8;
            let head: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            let mut written = Vec::new();
            let mut left = len as usize;
            for (addr, size, writable) in
                self.chains.get(&(head as u16)).cloned().unwrap_or_default()
            {
                if !writable || left == 0 {
                    continue;
                }
                let n = left.min(size as usize);
                let mut buf = vec![0u8; n];
                self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                written.extend_from_slice(&buf);
                left -= n;
            }
            out.push(Used {
                head: head as u16,
                len,
                written,
            });
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// Waits up to 5 s for at least one used entry.
    pub fn wait_used(&mut self) -> Vec<Used> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let used = self.take_used();
            if !used.is_empty() || Instant::now() > deadline {
                return used;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
