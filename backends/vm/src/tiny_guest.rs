//! A guest of a few dozen instructions, for hosts whose KVM cannot boot Linux (ours: nested PVM)
//! and for measuring the VMM's own launch-to-exit time.
//!
//! It is an ELF64 file with a PVH note, so it boots exactly as `vmlinux` does: 32-bit protected
//! mode, paging off. It prints [`MARKER`] on COM1, then for each virtio-mmio window it was built
//! for reads the magic (printed as its four bytes, "virt"), the version (printed as a digit) and
//! the device ID (printed as a raw byte), prints a newline, and asks the i8042 for a reset, which
//! ends the VMM.

/// What the guest prints first.
pub const MARKER: &[u8] = b"strata tiny guest\n";
/// Where the code is loaded and entered.
const LOAD_ADDR: u32 = 0x10_0000;
const CODE_OFFSET: usize = 0x100;

/// The serial output expected from a guest built for devices with these IDs.
pub fn expected_output(device_ids: &[u32]) -> Vec<u8> {
    let mut out = MARKER.to_vec();
    for id in device_ids {
        out.extend_from_slice(b"virt2");
        out.push(*id as u8);
    }
    out.push(b'\n');
    out
}

/// Machine code, one instruction a line.
fn code(mmio_bases: &[u64]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8      ; COM1 data port
    for b in MARKER {
        c.extend_from_slice(&[0xb0, *b]); //             mov al, <byte>
        c.push(0xee); //                                  out dx, al
    }
    for base in mmio_bases {
        let base = *base as u32;
        c.push(0xa1); //                                  mov eax, [base]    ; MagicValue
        c.extend_from_slice(&base.to_le_bytes());
        for i in 0..4 {
            c.push(0xee); //                              out dx, al
            if i < 3 {
                c.extend_from_slice(&[0xc1, 0xe8, 0x08]); // shr eax, 8
            }
        }
        c.push(0xa1); //                                  mov eax, [base+4]  ; Version
        c.extend_from_slice(&(base + 4).to_le_bytes());
        c.extend_from_slice(&[0x04, b'0']); //            add al, '0'
        c.push(0xee); //                                  out dx, al
        c.push(0xa1); //                                  mov eax, [base+8]  ; DeviceID
        c.extend_from_slice(&(base + 8).to_le_bytes());
        c.push(0xee); //                                  out dx, al
    }
    c.extend_from_slice(&[0xb0, b'\n']); //               mov al, '\n'
    c.push(0xee); //                                      out dx, al
    c.extend_from_slice(&[0xb0, 0xfe]); //                mov al, 0xfe       ; CPU reset command
    c.extend_from_slice(&[0xe6, 0x64]); //                out 0x64, al       ; i8042 command port
    c.push(0xf4); //                                      hlt
    c.extend_from_slice(&[0xeb, 0xfd]); //                jmp <hlt>
    c
}

/// The whole ELF image: header, a PT_LOAD for the code and a PT_NOTE holding the PVH entry.
pub fn elf(mmio_bases: &[u64]) -> Vec<u8> {
    image(&code(mmio_bases), true)
}

/// The same guest without the PVH note, so the VMM takes the 64-bit Linux boot protocol path
/// (long mode, identity page tables). It reads no device windows: those lie above the 1 GiB
/// the boot page tables map. Its instructions (port I/O with 8-bit immediates and DX) encode the
/// same in 64-bit mode.
pub fn elf_without_pvh_note() -> Vec<u8> {
    image(&code(&[]), false)
}

/// A guest that prints [`MARKER`] and then crashes: `ud2` with no IDT (the boot state has
/// none) escalates to a double and then a triple fault, which KVM reports as a shutdown.
pub fn elf_triple_fault() -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    for b in MARKER {
        c.extend_from_slice(&[0xb0, *b]); //             mov al, <byte>
        c.push(0xee); //                                  out dx, al
    }
    c.extend_from_slice(&[0x0f, 0x0b]); //                ud2
    image(&c, true)
}

fn image(code: &[u8], pvh_note: bool) -> Vec<u8> {
    let mut f = vec![0u8; CODE_OFFSET];
    // ELF header
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // EM_X86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, u64::from(LOAD_ADDR)); // e_entry
    put64(&mut f, 32, 64); // e_phoff
    put16(&mut f, 52, 64); // e_ehsize
    put16(&mut f, 54, 56); // e_phentsize
    put16(&mut f, 56, if pvh_note { 2 } else { 1 }); // e_phnum
                                                     // PT_LOAD: the code at LOAD_ADDR
    let ph = 64;
    put32(&mut f, ph, 1);
    put32(&mut f, ph + 4, 5); // R+X
    put64(&mut f, ph + 8, CODE_OFFSET as u64);
    put64(&mut f, ph + 16, u64::from(LOAD_ADDR));
    put64(&mut f, ph + 24, u64::from(LOAD_ADDR));
    put64(&mut f, ph + 32, code.len() as u64);
    put64(&mut f, ph + 40, code.len() as u64);
    put64(&mut f, ph + 48, 16);
    if !pvh_note {
        f.extend_from_slice(code);
        return f;
    }
    // PT_NOTE: XEN_ELFNOTE_PHYS32_ENTRY
    let note = 176;
    let ph = 120;
    put32(&mut f, ph, 4);
    put64(&mut f, ph + 8, note as u64);
    put64(&mut f, ph + 32, 20);
    put64(&mut f, ph + 40, 20);
    put64(&mut f, ph + 48, 4);
    put32(&mut f, note, 4); // namesz
    put32(&mut f, note + 4, 4); // descsz
    put32(&mut f, note + 8, 18); // type
    f[note + 12..note + 16].copy_from_slice(b"Xen\0");
    put32(&mut f, note + 16, LOAD_ADDR);
    f.extend_from_slice(code);
    f
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{self, EntryMode};

    #[test]
    fn the_loader_finds_the_pvh_entry_or_falls_back_to_64_bit() {
        let path = std::env::temp_dir().join(format!("strata-tiny-{}", std::process::id()));
        std::fs::write(&path, elf(&[0xd000_0000])).unwrap();
        assert_eq!(boot::probe(&path).unwrap(), EntryMode::Pvh);
        std::fs::write(&path, elf_without_pvh_note()).unwrap();
        assert_eq!(boot::probe(&path).unwrap(), EntryMode::Linux64);
        std::fs::remove_file(&path).unwrap();
    }
}
