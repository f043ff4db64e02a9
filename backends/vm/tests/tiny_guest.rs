//! The tiny test guest booted end to end through `strata-vmm` under /dev/kvm: PVH entry, serial
//! output, the virtio-mmio windows of a vsock and a virtio-fs device, i8042 reset, exit status,
//! with the VMM's seccomp filters on.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_vm::devices::fs::VIRTIO_ID_FS;
use strata_vm::devices::vsock::VIRTIO_ID_VSOCK;
use strata_vm::layout::virtio_slot;
use strata_vm::tiny_guest;

/// True when /dev/kvm can run a VM. Without it the test says so loudly and skips, unless
/// STRATA_REQUIRE_KVM=1 (CI), where a missing KVM is a failure.
pub fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("STRATA_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("STRATA_REQUIRE_KVM=1 but /dev/kvm cannot be opened");
        }
        eprintln!("\n*** SKIPPED: /dev/kvm cannot be opened; the VMM boot tests did not run ***\n");
    }
    ok
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("strata-vm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata-vmm"))
}

fn write_guest(dir: &Path, devices: usize) -> PathBuf {
    let bases: Vec<u64> = (0..devices).map(|i| virtio_slot(i).0).collect();
    let path = dir.join("tiny.elf");
    std::fs::write(&path, tiny_guest::elf(&bases)).unwrap();
    path
}

/// Runs `kernel` through strata-vmm with `args` and the serial console to a file: how it
/// ended, and what the guest printed.
fn run_vmm(dir: &Path, kernel: &Path, args: &[String]) -> (std::process::Output, Vec<u8>) {
    let serial = dir.join("serial.log");
    let out = vmm()
        .arg("--kernel")
        .arg(kernel)
        .arg("--serial")
        .arg(&serial)
        .args(args)
        .output()
        .unwrap();
    (out, std::fs::read(&serial).unwrap())
}

/// [`run_vmm`], asserting a clean exit.
fn boot(dir: &Path, kernel: &Path, args: &[String]) -> Vec<u8> {
    let (out, console) = run_vmm(dir, kernel, args);
    assert!(
        out.status.success(),
        "strata-vmm failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    console
}

#[test]
fn tiny_guest_boots_reads_devices_and_resets() {
    if !kvm_usable() {
        return;
    }
    let dir = TempDir::new("boot");
    let share = dir.0.join("share");
    std::fs::create_dir(&share).unwrap();
    let kernel = write_guest(&dir.0, 2);
    let uds = dir.0.join("vsock.sock");
    let console = boot(
        &dir.0,
        &kernel,
        &[
            "--vsock".into(),
            format!("3:{}", uds.display()),
            "--fs".into(),
            format!("rootfs={}", share.display()),
        ],
    );
    assert_eq!(
        console,
        tiny_guest::expected_output(&[VIRTIO_ID_VSOCK, VIRTIO_ID_FS]),
        "serial output: {}",
        String::from_utf8_lossy(&console)
    );
    assert!(
        !uds.exists(),
        "the vsock socket is removed when the VMM exits"
    );
}

#[test]
fn the_64_bit_boot_protocol_path_boots_too() {
    if !kvm_usable() {
        return;
    }
    let dir = TempDir::new("linux64");
    let kernel = dir.0.join("tiny64.elf");
    std::fs::write(&kernel, tiny_guest::elf_without_pvh_note()).unwrap();
    assert_eq!(boot(&dir.0, &kernel, &[]), tiny_guest::expected_output(&[]));
}

#[test]
fn several_vcpus_with_an_mp_table() {
    if !kvm_usable() {
        return;
    }
    let dir = TempDir::new("smp");
    let kernel = write_guest(&dir.0, 0);
    // The secondary vCPUs wait for a SIPI the tiny guest never sends; the boot vCPU's reset
    // still ends the VMM.
    let console = boot(&dir.0, &kernel, &["--vcpus".into(), "2".into()]);
    assert_eq!(console, tiny_guest::expected_output(&[]));
}

#[test]
fn a_device_window_nobody_declared_reads_as_all_ones() {
    if !kvm_usable() {
        return;
    }
    let dir = TempDir::new("nodev");
    // Built for one device window, run with none: the guest reads unbacked MMIO.
    let kernel = write_guest(&dir.0, 1);
    let console = boot(&dir.0, &kernel, &[]);
    let mut expected = tiny_guest::MARKER.to_vec();
    expected.extend_from_slice(&[
        0xff,
        0xff,
        0xff,
        0xff,
        0xff_u8.wrapping_add(b'0'),
        0xff,
        b'\n',
    ]);
    assert_eq!(console, expected);
}

#[test]
fn a_guest_that_triple_faults_is_an_error_not_a_reset() {
    if !kvm_usable() {
        return;
    }
    let dir = TempDir::new("fault");
    let kernel = dir.0.join("fault.elf");
    std::fs::write(&kernel, tiny_guest::elf_triple_fault()).unwrap();
    let (out, console) = run_vmm(&dir.0, &kernel, &[]);
    assert_eq!(console, tiny_guest::MARKER);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("triple-faulted"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let dir = TempDir::new("bad");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--kernel".into(),
                dir.0.join("missing").display().to_string(),
            ],
            "cannot open the guest kernel",
        ),
        (
            vec!["--kernel".into(), "/etc/hostname".into()],
            "cannot load the guest kernel",
        ),
        (
            vec![
                "--kernel".into(),
                "/etc/hostname".into(),
                "--memory-mib".into(),
                "1".into(),
            ],
            "guest memory must be",
        ),
        (
            vec![
                "--kernel".into(),
                "/etc/hostname".into(),
                "--vsock".into(),
                "x".into(),
            ],
            "--vsock expects CID:PATH",
        ),
        (
            vec![
                "--kernel".into(),
                "/etc/hostname".into(),
                "--fs".into(),
                "nodir".into(),
            ],
            "--fs expects TAG=DIR",
        ),
    ];
    for (args, wanted) in cases {
        let out = vmm().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}
