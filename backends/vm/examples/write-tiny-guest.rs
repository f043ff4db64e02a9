//! Writes the tiny test guest for N virtio-mmio devices to PATH, for benchmarks and by-hand runs:
//! `cargo run -p strata-vm --example write-tiny-guest -- PATH N`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(count)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: write-tiny-guest PATH DEVICE_COUNT");
        std::process::exit(2);
    };
    let bases: Vec<u64> = (0..count)
        .map(|i| strata_vm::layout::virtio_slot(i).0)
        .collect();
    if let Err(e) = std::fs::write(path, strata_vm::tiny_guest::elf(&bases)) {
        eprintln!("write-tiny-guest: cannot write {path}: {e}");
        std::process::exit(1);
    }
}
