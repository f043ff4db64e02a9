//! Loading a guest kernel and writing what its entry point expects to find.
//!
//! An ELF `vmlinux` with a `XEN_ELFNOTE_PHYS32_ENTRY` note is booted through PVH: 32-bit
//! protected mode, paging off, `%ebx` pointing at an `hvm_start_info` with the memory map, the
//! command line and the initramfs as a module. Without the note, the 64-bit Linux boot protocol:
//! long mode on identity page tables, `%rsi` pointing at a zero page with an e820 map.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use crate::layout::*;
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open the guest kernel {path}: {source}")]
    OpenKernel {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load the guest kernel {path} (an ELF vmlinux is expected): {source}")]
    LoadKernel {
        path: String,
        source: linux_loader::loader::Error,
    },
    #[error("cannot read the initramfs {path}: {source}")]
    ReadInitrd {
        path: String,
        source: std::io::Error,
    },
    #[error("the initramfs ({size} bytes) does not fit in guest memory below the kernel's limit")]
    InitrdTooLarge { size: usize },
    #[error("the kernel command line is too long or malformed: {0}")]
    Cmdline(String),
    #[error("cannot write the boot parameters into guest memory: {0}")]
    BootParams(String),
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, `%ebx` = start info.
    Pvh,
    /// 64-bit long mode, `%rsi` = zero page.
    Linux64,
}

#[derive(Debug, Clone, Copy)]
pub struct BootEntry {
    pub mode: EntryMode,
    pub entry: u64,
}

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Builds the command line, refusing one that does not fit the page it is copied into.
pub fn cmdline(text: &str) -> Result<Cmdline, BootError> {
    let mut line = Cmdline::new(CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    line.insert_str(text)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(line)
}

/// Loads `kernel` (and `initrd`) into `mem` and writes the boot structures for its entry mode.
pub fn load(
    mem: &GuestMemory,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline_text: &str,
) -> Result<BootEntry, BootError> {
    let mut file = File::open(kernel).map_err(|source| BootError::OpenKernel {
        path: kernel.display().to_string(),
        source,
    })?;
    let loaded =
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::LoadKernel {
                path: kernel.display().to_string(),
                source,
            }
        })?;
    let line = cmdline(cmdline_text)?;
    load_cmdline(mem, GuestAddress(CMDLINE), &line)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = line
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();

    let initrd = match initrd {
        Some(path) => Some(load_initrd(mem, path, loaded.kernel_end)?),
        None => None,
    };
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            write_pvh_start_info(mem, initrd)?;
            Ok(BootEntry {
                mode: EntryMode::Pvh,
                entry: entry.raw_value(),
            })
        }
        _ => {
            write_zero_page(mem, cmdline_len, initrd)?;
            write_page_tables(mem)?;
            Ok(BootEntry {
                mode: EntryMode::Linux64,
                entry: loaded.kernel_load.raw_value(),
            })
        }
    }
}

/// Places the initramfs at the top of low memory (below the MMIO gap), page aligned, as
/// firmware does; returns (address, size).
fn load_initrd(mem: &GuestMemory, path: &Path, kernel_end: u64) -> Result<(u64, usize), BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::ReadInitrd {
        path: path.display().to_string(),
        source,
    })?;
    let low_end = low_memory_end(mem);
    let size = data.len();
    let addr = low_end
        .checked_sub(size as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or(BootError::InitrdTooLarge { size })?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|e| BootError::BootParams(e.to_string()))?;
    Ok((addr, size))
}

fn low_memory_end(mem: &GuestMemory) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|end| *end <= MMIO_GAP_START)
        .max()
        .unwrap_or(0)
}

/// The e820 view of guest RAM: conventional memory, high memory up to the gap, and memory above
/// 4 GiB.
fn memory_map(mem: &GuestMemory) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

fn write_pvh_start_info(mem: &GuestMemory, initrd: Option<(u64, usize)>) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size: size as u64,
            ..Default::default()
        })
        .into_iter()
        .collect();
    if !modules.is_empty() {
        start_info.nr_modules = modules.len() as u32;
        start_info.modlist_paddr = PVH_MODLIST;
    }
    let mut params = BootParams::new::<hvm_start_info>(&start_info, GuestAddress(PVH_START_INFO));
    params.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(PVH_MEMMAP));
    if !modules.is_empty() {
        params.set_modules::<hvm_modlist_entry>(&modules, GuestAddress(PVH_MODLIST));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemory>(&params, mem)
        .map_err(|e| BootError::BootParams(e.to_string()))
}

fn write_zero_page(
    mem: &GuestMemory,
    cmdline_len: usize,
    initrd: Option<(u64, usize)>,
) -> Result<(), BootError> {
    const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
    const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
    const KERNEL_LOADER_OTHER: u8 = 0xff;
    const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
    let mut params = boot_params::default();
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = memory_map(mem);
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].type_ = *type_;
    }
    params.e820_entries = map.len() as u8;
    let boot = BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams::<GuestMemory>(&boot, mem)
        .map_err(|e| BootError::BootParams(e.to_string()))
}

/// Identity-maps the first 1 GiB with 2 MiB pages, enough for the kernel to set up its own.
fn write_page_tables(mem: &GuestMemory) -> Result<(), BootError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE: u64 = 0x80;
    let w = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|e| BootError::BootParams(e.to_string()))
    };
    w(PDPT | PRESENT_WRITABLE, PML4)?;
    w(PD | PRESENT_WRITABLE, PDPT)?;
    for i in 0..512u64 {
        w((i << 21) | PRESENT_WRITABLE | HUGE, PD + i * 8)?;
    }
    Ok(())
}

/// Flat GDT: null, null, 32/64-bit code (0x10), data (0x18), TSS (0x20).
pub fn gdt_entries(long_mode: bool) -> [u64; 5] {
    let code = if long_mode {
        0x00af_9b00_0000_ffff // L=1, D=0, present, exec/read, accessed
    } else {
        0x00cf_9b00_0000_ffff // D=1, present, exec/read, accessed, 4 GiB
    };
    [0, 0, code, 0x00cf_9300_0000_ffff, 0x0080_8b00_0000_0000]
}

pub fn write_gdt(mem: &GuestMemory, long_mode: bool) -> Result<(), BootError> {
    for (i, entry) in gdt_entries(long_mode).iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|e| BootError::BootParams(e.to_string()))?;
    }
    Ok(())
}

/// Checks that `kernel` is an ELF our loader accepts and says how it would boot, without a VM.
pub fn probe(kernel: &Path) -> Result<EntryMode, BootError> {
    let mem = GuestMemory::from_ranges(&ram_regions(512 << 20))
        .map_err(|e| BootError::BootParams(e.to_string()))?;
    Ok(load(&mem, kernel, None, "console=ttyS0")?.mode)
}
