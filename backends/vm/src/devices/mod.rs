//! Devices of the microVM: legacy port I/O (serial, i8042) and virtio-mmio (vsock, fs, net).

pub mod fs;
pub mod legacy;
pub mod mmio;
pub mod net;
pub mod vsock;

#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// A vm-superio [`vm_superio::Trigger`] that signals an eventfd: the serial port's interrupt
/// line (an irqfd) or the i8042's reset request (the VMM's exit event).
pub struct EventFdTrigger(pub Arc<EventFd>);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
