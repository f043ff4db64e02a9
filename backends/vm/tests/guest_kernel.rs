//! The guest kernel built by kernel-config/build (from the cache when its inputs did not change)
//! is an ELF our loader boots through PVH, and carries the options the fragment asked for.

use std::path::PathBuf;
use std::process::Command;

use strata_vm::boot::{self, EntryMode};

fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernel-config/build")
}

#[test]
fn the_built_guest_kernel_boots_through_pvh() {
    let have_source = std::fs::read_dir("/usr/src")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("linux-source-"))
        })
        .unwrap_or(false);
    if !have_source {
        if std::env::var("STRATA_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("STRATA_REQUIRE_KVM=1 but Debian's linux-source is not installed");
        }
        eprintln!("\n*** SKIPPED: no linux-source package; the guest kernel was not built ***\n");
        return;
    }
    // Cached after the first build (CI builds it before the tests run).
    let out = Command::new("bash").arg(build_script()).output().unwrap();
    assert!(
        out.status.success(),
        "kernel-config/build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vmlinux = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(boot::probe(&vmlinux).unwrap(), EntryMode::Pvh);
    let config = std::fs::read_to_string(vmlinux.with_file_name("config")).unwrap();
    for option in [
        "CONFIG_PVH=y",
        "CONFIG_VIRTIO_FS=y",
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_SECCOMP_FILTER=y",
        "CONFIG_OVERLAY_FS=y",
    ] {
        assert!(
            config.lines().any(|l| l == option),
            "{option} missing from the built config"
        );
    }
    assert!(config.lines().any(|l| l == "# CONFIG_MODULES is not set"));
    // The key changes with the fragment: a different fragment would not reuse this build.
    let key = Command::new("bash")
        .arg(build_script())
        .arg("--print-key")
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap();
    assert!(vmlinux.to_string_lossy().contains(key.trim()));
}

#[test]
fn the_build_script_refuses_unknown_arguments() {
    let out = Command::new("bash")
        .arg(build_script())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument"));
}
