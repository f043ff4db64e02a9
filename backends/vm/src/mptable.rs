//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI (ours) finds its
//! vCPUs, the IOAPIC and the IRQ routing. Written at the top of conventional memory
//! (0x9fc00), where Linux looks for the floating pointer.

use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;

pub const MPTABLE_START: u64 = 0x9fc00;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// IOAPIC input lines the guest may use (the KVM IOAPIC has 24).
pub const IRQ_LINES: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const SPEC_REV: u8 = 4;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs do not fit an MP table (1 to 254)")]
    TooManyCpus(u8),
    #[error("cannot write the MP table into guest memory: {0}")]
    Write(String),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table's bytes for `cpus` vCPUs (APIC IDs 0..cpus), to be placed at [`MPTABLE_START`].
pub fn build(cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = 1 | if id == 0 { 2 } else { 0 }; // enabled, bootstrap processor
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // CPU signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IRQ_LINES {
        // ISA bus IRQ n arrives on IOAPIC input n, with the bus's default polarity and trigger.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    // The legacy PIC on LINT0, NMIs on LINT1, for every local APIC (0xff).
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START as u32 + 16;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum, below
    header.extend_from_slice(b"STRATA  ");
    header.extend_from_slice(b"strata-vmm  ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    header.push(0); // extended table checksum
    header.push(0);
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(SPEC_REV);
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]); // feature bytes: the configuration table is present
    floating[10] = checksum(&floating);

    let mut out = floating;
    out.extend_from_slice(&table);
    Ok(out)
}

pub fn write(mem: &GuestMemory, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|e| MpTableError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn structures_check_out_and_list_every_cpu() {
        for cpus in [1u8, 2, 8] {
            let t = build(cpus).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[0..16]), 0, "floating pointer checksum");
            let table_at = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64 - MPTABLE_START;
            let table = &t[table_at as usize..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes(table[4..6].try_into().unwrap()) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "configuration table checksum");
            let count = u16::from_le_bytes(table[34..36].try_into().unwrap()) as usize;
            // Walk the entries: processors are 20 bytes, the rest 8.
            let (mut at, mut processors, mut seen) = (44, 0, 0);
            while at < len {
                let size = if table[at] == ENTRY_PROCESSOR { 20 } else { 8 };
                if table[at] == ENTRY_PROCESSOR {
                    assert_eq!(table[at + 1], processors, "APIC IDs in order");
                    assert_eq!(table[at + 3] & 2 != 0, processors == 0, "only CPU 0 boots");
                    processors += 1;
                }
                at += size;
                seen += 1;
            }
            assert_eq!((processors, seen), (cpus, count));
            assert!(t.len() as u64 + MPTABLE_START <= crate::layout::HIMEM_START);
        }
        assert!(build(0).is_err());
        assert!(build(255).is_err());
    }
}
