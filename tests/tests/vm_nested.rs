//! strata's own VMM running Linux containers under a hardware-virtualization KVM.
//!
//! This host's /dev/kvm (nested PVM) cannot boot Linux, but QEMU TCG with `-cpu max`
//! emulates an AMD CPU with SVM: tests/nested/boot-l1 boots Debian's kernel there ("L1"),
//! which loads kvm-amd, and runs tests/nested/checks in it: strata's vm backend with its
//! default driver choice (our VMM wherever KVM has VMX/SVM) runs the busybox bundle, the
//! detached lifecycle, a terminal, stats, parallel execs, fast output, virtio-fs traffic and
//! `delete --force`, with nothing left behind in L1. See shared/notes/nested-svm.md.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::json;
use strata_integration::*;

/// Every check of tests/nested/checks; each must print `CHECK ok NAME`.
const CHECKS: &[&str] = &[
    "kvm",
    "run",
    "run-leaves-nothing",
    "kvm-clock",
    "smp",
    "create",
    "auto-driver",
    "start",
    "exec",
    "exec-tty",
    "stats",
    "parallel-execs",
    "fast-stdout",
    "virtiofs",
    "kill",
    "delete",
    "lifecycle-leaves-nothing",
    "delete-force",
];

/// Well above a loaded run: one takes ~1-2 min at low load, 2-3x that under load.
const L1_TIMEOUT_SECS: u64 = 900;

#[test]
fn strata_vmm_runs_linux_containers_under_nested_svm() {
    if !is_root() {
        eprintln!("SKIPPED: the nested-KVM test needs root");
        return;
    }
    let Some(pieces) = vm_pieces() else { return };
    let vmm = match built_by("backends/vm/build") {
        Ok(v) => v,
        Err(e) => {
            vm_skip::<()>(&format!("the static strata-vmm cannot be built: {e}"));
            return;
        }
    };
    let bundle = Bundle::new(&["sh", "/cmd"]);
    // The same bundle with two vCPUs, for the guest's SMP bring-up.
    let mut smp = bundle.config.clone();
    smp["annotations"] = json!({"dev.strata.vm.vcpus": "2"});
    std::fs::write(
        bundle.path().join("config-smp.json"),
        serde_json::to_string_pretty(&smp).unwrap(),
    )
    .unwrap();
    let ws = workspace_dir();
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(ws.join("tests/nested/boot-l1"))
        .arg("--strata")
        .arg(strata_bin())
        .arg("--vmm")
        .arg(&vmm)
        .arg("--agent")
        .arg(&pieces.agent)
        .arg("--guest-kernel")
        .arg(&pieces.kernel)
        .arg("--bundle")
        .arg(bundle.path())
        .arg("--checks")
        .arg(ws.join("tests/nested/checks"))
        .args(["--timeout", &L1_TIMEOUT_SECS.to_string()])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    let mut results = BTreeMap::new();
    for line in console.lines() {
        if let Some(name) = line.strip_prefix("CHECK ok ") {
            results.insert(name.trim().to_string(), Ok(()));
        } else if let Some(rest) = line.strip_prefix("CHECK FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            results.insert(name.to_string(), Err(why.to_string()));
        } else if let Some(figure) = line.strip_prefix("TIME ") {
            // Figures, not assertions: nested emulation, not a real host.
            eprintln!("nested-svm timing: {figure} s");
        } else if let Some(figure) = line.strip_prefix("FIGURE ") {
            eprintln!("nested-svm figure: {figure}");
        } else if let Some(note) = line.strip_prefix("NOTE ") {
            eprintln!("nested-svm note: {note}");
        }
    }
    eprintln!(
        "nested-svm: whole L1 run {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = CHECKS
        .iter()
        .filter_map(|c| match results.get(*c) {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(format!("{c}: {why}")),
            None => Some(format!("{c}: did not run")),
        })
        .collect();
    assert!(
        failed.is_empty() && out.status.success() && console.contains("L1-END rc=0"),
        "in L1 (boot-l1 exit {:?}):\n  {}\n--- L1 console (without kernel lines) ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        failed.join("\n  "),
        console
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}
