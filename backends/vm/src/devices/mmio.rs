//! The virtio-mmio transport (virtio 1.2 §4.2, version 2 "modern" layout only), shared by every
//! virtio device of the VMM. A device implements [`VirtioDevice`]; the transport owns the
//! register file, the feature negotiation and the queues until the driver sets DRIVER_OK, then
//! hands the queues to the device.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemory;

pub const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
pub const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5354_5241; // "STRA"

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const INT_USED_RING: u32 = 1;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 0x80;

/// The interrupt line of one device: the status bits the driver reads and acknowledges, and the
/// eventfd registered with KVM as an irqfd for the device's IRQ.
pub struct Interrupt {
    status: AtomicU32,
    line: EventFd,
}

impl Interrupt {
    pub fn new(line: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            line,
        }
    }

    pub fn line(&self) -> &EventFd {
        &self.line
    }

    /// Tells the driver that a used ring has new entries.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tells the driver of new used entries of `queue`, unless it asked not to hear
    /// (VIRTIO_F_EVENT_IDX) or the check cannot be made (then it is told).
    pub fn signal_used(&self, queue: &mut Queue, mem: &GuestMemory) {
        if queue.needs_notification(mem).unwrap_or(true) {
            self.signal_used_queue();
        }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.line.write(1) {
            tracing::warn!("cannot raise a virtio interrupt: {e}");
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

/// What a virtio device provides to the transport.
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2 §5): 19 vsock, 26 fs, 3 console.
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered (VIRTIO_F_VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver set DRIVER_OK: the device now owns the queues.
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), String>;
    /// The driver notified queue `index`.
    fn queue_notify(&mut self, index: u32);
    /// The driver reset the device: drop the queues and any device state.
    fn reset(&mut self) {}
}

/// One virtio-mmio device window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
}

impl MmioTransport {
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, String> {
        let sizes = lock(&device).queue_max_sizes();
        let queues = sizes
            .iter()
            .map(|size| Queue::new(*size).map_err(|e| format!("virtio queue of size {size}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            activated: false,
        })
    }

    fn offered_features(&self) -> u64 {
        lock(&self.device).features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.activated {
            // Queue registers are read-only once the device runs.
            return None;
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            lock(&self.device).read_config(offset - 0x100, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            0x000 => MMIO_MAGIC,
            0x004 => MMIO_VERSION,
            0x008 => lock(&self.device).device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let features = self.offered_features();
                match self.device_features_select {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x044 => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt.status(),
            0x070 => self.status,
            0x0fc => 0, // config generation: our config spaces never change under the driver
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            // Config spaces of our devices are read-only.
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            0x014 => self.device_features_select = value,
            0x020 => match self.driver_features_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_select = value,
            0x030 => self.queue_select = value,
            0x038 => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16)
                }
            }
            0x044 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1)
                }
            }
            0x050 if self.activated => lock(&self.device).queue_notify(value),
            0x064 => {
                self.interrupt.status.fetch_and(!value, Ordering::SeqCst);
            }
            0x070 => self.set_status(value),
            0x080 => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            0x084 => self.with_queue(|q| q.set_desc_table_address(None, Some(value))),
            0x090 => self.with_queue(|q| q.set_avail_ring_address(Some(value), None)),
            0x094 => self.with_queue(|q| q.set_avail_ring_address(None, Some(value))),
            0x0a0 => self.with_queue(|q| q.set_used_ring_address(Some(value), None)),
            0x0a4 => self.with_queue(|q| q.set_used_ring_address(None, Some(value))),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q)
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // The driver may accept only what was offered, and a modern device needs VERSION_1.
            let offered = self.offered_features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
        }
        self.status = value;
        let ready = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        if !self.activated && value & ready == ready && value & STATUS_FAILED == 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & (1 << 29) != 0;
        for q in self.queues.iter_mut() {
            q.set_event_idx(event_idx);
        }
        let queues: Vec<Queue> = self.queues.iter().filter_map(clone_queue).collect();
        if queues.iter().any(|q| q.ready() && !q.is_valid(&self.mem)) {
            tracing::warn!("virtio driver set up an invalid queue; device left inactive");
            self.status |= 0x40; // DEVICE_NEEDS_RESET
            return;
        }
        match lock(&self.device).activate(self.mem.clone(), queues, self.interrupt.clone()) {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::warn!("virtio device failed to activate: {e}");
                self.status |= 0x40;
            }
        }
    }

    fn reset(&mut self) {
        if self.activated {
            lock(&self.device).reset();
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.interrupt.status.store(0, Ordering::SeqCst);
        for q in self.queues.iter_mut() {
            q.reset();
        }
    }
}

/// The queue as configured by the driver, handed to the device (the transport keeps its copy
/// only to answer register reads).
fn clone_queue(q: &Queue) -> Option<Queue> {
    // Queue::new only fails for a max size that is not a power of two; this one came from a queue.
    let mut copy = Queue::new(q.max_size()).ok()?;
    copy.set_size(q.size());
    copy.set_ready(q.ready());
    copy.set_desc_table_address(
        Some(q.desc_table() as u32),
        Some((q.desc_table() >> 32) as u32),
    );
    copy.set_avail_ring_address(
        Some(q.avail_ring() as u32),
        Some((q.avail_ring() >> 32) as u32),
    );
    copy.set_used_ring_address(
        Some(q.used_ring() as u32),
        Some((q.used_ring() >> 32) as u32),
    );
    copy.set_event_idx(q.event_idx_enabled());
    Some(copy)
}

/// A poisoned device lock means a device thread panicked; the VMM keeps serving the others.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies the part of a little-endian config space the driver asked for; out of range reads 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let start = offset as usize;
    if start < config.len() {
        let end = (start + data.len()).min(config.len());
        data[..end - start].copy_from_slice(&config[start..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::testing::{interrupt, memory, Driver};

    #[derive(Default)]
    struct Probe {
        activated_with: Option<usize>,
        notified: Vec<u32>,
        resets: usize,
    }

    struct ProbeDevice(Arc<Mutex<Probe>>);

    impl VirtioDevice for ProbeDevice {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![64, 64]
        }
        fn features(&self) -> u64 {
            1 << 3
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn activate(
            &mut self,
            _mem: GuestMemory,
            queues: Vec<Queue>,
            _i: Arc<Interrupt>,
        ) -> Result<(), String> {
            lock(&self.0).activated_with = Some(queues.len());
            Ok(())
        }
        fn queue_notify(&mut self, index: u32) {
            lock(&self.0).notified.push(index);
        }
        fn reset(&mut self) {
            lock(&self.0).resets += 1;
        }
    }

    fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
        t.write(offset, &v.to_le_bytes());
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, d: &Driver) {
        let q = d.queue();
        wr(t, 0x030, index);
        assert_eq!(rd(t, 0x034), 64, "QueueNumMax");
        wr(t, 0x038, u32::from(q.size()));
        wr(t, 0x080, q.desc_table() as u32);
        wr(t, 0x084, (q.desc_table() >> 32) as u32);
        wr(t, 0x090, q.avail_ring() as u32);
        wr(t, 0x094, 0);
        wr(t, 0x0a0, q.used_ring() as u32);
        wr(t, 0x0a4, 0);
        wr(t, 0x044, 1);
    }

    #[test]
    fn a_driver_negotiates_sets_up_queues_and_notifies() {
        let mem = memory();
        let probe = Arc::new(Mutex::new(Probe::default()));
        let irq = interrupt();
        let mut t = MmioTransport::new(
            Arc::new(Mutex::new(ProbeDevice(probe.clone()))),
            mem.clone(),
            irq.clone(),
        )
        .unwrap();
        assert_eq!(rd(&mut t, 0x000), MMIO_MAGIC);
        assert_eq!(rd(&mut t, 0x004), 2);
        assert_eq!(rd(&mut t, 0x008), 42);
        wr(&mut t, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(&mut t, 0x014, 0);
        assert_eq!(rd(&mut t, 0x010), 1 << 3);
        wr(&mut t, 0x014, 1);
        assert_eq!(rd(&mut t, 0x010), 1, "VIRTIO_F_VERSION_1 offered");
        wr(&mut t, 0x024, 0);
        wr(&mut t, 0x020, 1 << 3);
        wr(&mut t, 0x024, 1);
        wr(&mut t, 0x020, 1);
        wr(
            &mut t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(
            rd(&mut t, 0x070) & STATUS_FEATURES_OK,
            0,
            "features accepted"
        );
        let q0 = Driver::new(&mem, 0x0, 0x100_0000, 64);
        let q1 = Driver::new(&mem, 0x10000, 0x200_0000, 64);
        setup_queue(&mut t, 0, &q0);
        setup_queue(&mut t, 1, &q1);
        wr(&mut t, 0x050, 1);
        assert!(
            lock(&probe).notified.is_empty(),
            "no notify reaches an inactive device"
        );
        wr(
            &mut t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(lock(&probe).activated_with, Some(2));
        wr(&mut t, 0x050, 1);
        assert_eq!(lock(&probe).notified, vec![1]);
        // Queue registers are frozen once running.
        wr(&mut t, 0x030, 0);
        wr(&mut t, 0x038, 8);
        assert_eq!(t.queues[0].size(), 64);
        // Interrupt status and acknowledge.
        irq.signal_used_queue();
        assert_eq!(rd(&mut t, 0x060), INT_USED_RING);
        wr(&mut t, 0x064, INT_USED_RING);
        assert_eq!(rd(&mut t, 0x060), 0);
        // Config space.
        let mut cfg = [0u8; 2];
        t.read(0x102, &mut cfg);
        assert_eq!(cfg, [3, 3]);
        // Reset.
        wr(&mut t, 0x070, 0);
        assert_eq!(lock(&probe).resets, 1);
        assert_eq!(rd(&mut t, 0x070), 0);
    }

    #[test]
    fn features_without_version_1_or_beyond_the_offer_are_refused() {
        let mem = memory();
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut t = MmioTransport::new(
            Arc::new(Mutex::new(ProbeDevice(probe.clone()))),
            mem,
            interrupt(),
        )
        .unwrap();
        wr(&mut t, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(&mut t, 0x024, 0);
        wr(&mut t, 0x020, 1 << 3);
        wr(
            &mut t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(
            rd(&mut t, 0x070) & STATUS_FEATURES_OK,
            0,
            "legacy driver refused"
        );
        wr(&mut t, 0x024, 1);
        wr(&mut t, 0x020, 1 | 2);
        wr(
            &mut t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(
            rd(&mut t, 0x070) & STATUS_FEATURES_OK,
            0,
            "unoffered feature refused"
        );
        wr(
            &mut t,
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(lock(&probe).activated_with, None);
    }
}
