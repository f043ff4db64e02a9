//! The guest physical memory map (x86_64). Fixed addresses below 1 MiB hold the boot structures;
//! the kernel loads at its ELF physical addresses (1 MiB and up); virtio-mmio devices live in
//! the 32-bit gap below 4 GiB, where RAM never goes.

use vm_memory::GuestAddress;

/// GDT for the boot vCPU state (PVH and 64-bit entry both need flat segments).
pub const GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`, and its module list right after it.
pub const PVH_START_INFO: u64 = 0x6000;
pub const PVH_MODLIST: u64 = 0x6800;
/// PVH memory map, or the zero page (`boot_params`) for the 64-bit boot protocol.
pub const PVH_MEMMAP: u64 = 0x7000;
pub const ZERO_PAGE: u64 = 0x7000;
/// Identity page tables for the 64-bit boot protocol (PML4, PDPT, PD: first 1 GiB).
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
/// End of the conventional memory the BIOS area would start at.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory: kernels load here or above.
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO gap: RAM stops at 3 GiB and resumes at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio devices: one 4 KiB window each, from here up.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First legacy IRQ line handed to virtio devices (4 is COM1).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Line of the serial port.
pub const SERIAL_IRQ: u32 = 4;
/// Most virtio-mmio devices one VM can have (IRQ lines 5..=23 on the IOAPIC).
pub const MAX_VIRTIO_DEVICES: usize = 19;

/// The RAM regions for `mem_size` bytes of guest memory, split around the MMIO gap.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_size - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// Base address and IRQ line of the `index`-th virtio-mmio device.
pub fn virtio_slot(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE,
        VIRTIO_IRQ_BASE + index as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_splits_around_the_mmio_gap() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let split = ram_regions(4 << 30);
        assert_eq!(split[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(split[1], (GuestAddress(MMIO_GAP_END), (1 << 30)));
        let (addr, irq) = virtio_slot(2);
        assert_eq!((addr, irq), (0xd000_2000, 7));
        assert!((MMIO_GAP_START..MMIO_GAP_END).contains(&addr));
    }
}
