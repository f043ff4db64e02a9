//! The vm part of the benchmark: our VMM against QEMU microvm on the tiny test guest
//! (launch to exit, peak RSS), and `run /bin/true` on the vm backend (a real Linux guest; under
//! QEMU with TCG on hosts whose KVM cannot boot Linux) next to the native backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::stats::summarize;

/// Builds the command of one benchmark case, afresh for every run.
type CommandMaker<'a> = Box<dyn Fn() -> Command + 'a>;

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Launch-to-exit of the tiny guest, interleaved: strata-vmm (no devices, and with a vsock and a
/// virtio-fs device) and QEMU microvm (no devices, KVM). Returns samples and peak RSS.
pub fn tiny_guest(vmm: &Path, work: &Path, iterations: usize) -> Result<Value> {
    std::fs::create_dir_all(work.join("share"))?;
    let bare = work.join("tiny0.elf");
    let with_devices = work.join("tiny2.elf");
    let bases: Vec<u64> = (0..2)
        .map(|i| strata_vm::layout::virtio_slot(i).0)
        .collect();
    std::fs::write(&bare, strata_vm::tiny_guest::elf(&[]))?;
    std::fs::write(&with_devices, strata_vm::tiny_guest::elf(&bases))?;
    let uds = work.join("v.sock");
    let share = work.join("share");
    let strata_bare = || {
        let mut c = Command::new(vmm);
        c.arg("--kernel").arg(&bare);
        c
    };
    let strata_devices = || {
        let mut c = Command::new(vmm);
        c.arg("--kernel").arg(&with_devices);
        c.arg("--vsock").arg(format!("3:{}", uds.display()));
        c.arg("--fs").arg(format!("share={}", share.display()));
        c
    };
    let qemu = which("qemu-system-x86_64");
    let qemu_bare = || {
        let mut c = Command::new(qemu.clone().unwrap_or_default());
        c.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-accel",
            "kvm",
            "-m",
            "128",
        ]);
        c.args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-device",
            "i8042",
        ]);
        c.arg("-kernel").arg(&bare);
        c
    };
    let mut cases: Vec<(&str, CommandMaker)> = vec![
        ("strata-vmm", Box::new(strata_bare)),
        ("strata-vmm + vsock + virtio-fs", Box::new(strata_devices)),
    ];
    if qemu.is_some() {
        cases.push(("qemu microvm (KVM)", Box::new(qemu_bare)));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..iterations + 3 {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let d = timed(&mut cases[i].1())?;
            if round >= 3 {
                samples[i].push(ms(d));
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (i, (name, make)) in cases.iter().enumerate() {
        let rss = crate::max_rss_kib({
            let mut c = make();
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        })?;
        out.insert(
            name.to_string(),
            json!({"launch_to_exit_ms": summarize(&samples[i]), "peak_rss_kib": rss, "samples": samples[i]}),
        );
    }
    Ok(Value::Object(out))
}

/// `run /bin/true` on the vm backend next to native, interleaved.
pub fn vm_run(
    strata: &Path,
    config: &Path,
    bundle: &str,
    state: &Path,
    iterations: usize,
) -> Result<Value> {
    let mut native = Vec::new();
    let mut vm = Vec::new();
    for round in 0..iterations + 1 {
        let id = format!("vmb-{round}");
        let mut c = Command::new(strata);
        c.arg("--root")
            .arg(state)
            .args(["run", "--bundle", bundle])
            .arg(format!("{id}-n"));
        let dn = timed(&mut c)?;
        let mut c = Command::new(strata);
        c.arg("--root")
            .arg(state)
            .arg("--config")
            .arg(config)
            .args(["--backend", "vm", "run", "--bundle", bundle])
            .arg(&id);
        let dv = timed(&mut c).context("strata --backend vm run")?;
        if round >= 1 {
            native.push(ms(dn));
            vm.push(ms(dv));
        }
    }
    Ok(json!({
        "strata-native": {"run_ms": summarize(&native), "samples": native},
        "strata-vm": {"run_ms": summarize(&vm), "samples": vm},
    }))
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The markdown section for the vm figures.
pub fn markdown(tiny: Option<&Value>, run: Option<&Value>, skipped: &[String]) -> String {
    let mut s = String::from("\n## vm backend\n\n");
    let median = |v: &Value, key: &str| {
        v[key]["median"]
            .as_f64()
            .map_or("-".to_string(), |m| format!("{m:.2}"))
    };
    if let Some(t) = tiny {
        s.push_str("Tiny test guest (PVH entry, prints on COM1, reads the virtio-mmio windows, resets through the i8042), launch to exit under /dev/kvm:\n\n");
        s.push_str("| VMM | median ms | p90 ms | peak RSS KiB |\n|---|---|---|---|\n");
        if let Some(map) = t.as_object() {
            for (name, v) in map {
                s.push_str(&format!(
                    "| {name} | {} | {} | {} |\n",
                    median(v, "launch_to_exit_ms"),
                    v["launch_to_exit_ms"]["p90"]
                        .as_f64()
                        .map_or("-".into(), |m| format!("{m:.2}")),
                    v["peak_rss_kib"]
                ));
            }
        }
    }
    if let Some(r) = run {
        s.push_str("\n`run /bin/true` (create, boot the guest, run, power off, delete):\n\n| backend | median ms | p90 ms |\n|---|---|---|\n");
        for name in ["strata-native", "strata-vm"] {
            let v = &r[name];
            s.push_str(&format!(
                "| {name} | {} | {} |\n",
                median(v, "run_ms"),
                v["run_ms"]["p90"]
                    .as_f64()
                    .map_or("-".into(), |m| format!("{m:.2}"))
            ));
        }
    }
    for why in skipped {
        s.push_str(&format!("\nSkipped: {why}\n"));
    }
    s
}
