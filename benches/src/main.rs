//! strata-bench: whole-process latency, memory and syscall cost of strata's backends and of
//! the peers installed on the host (runc, crun, runsc), on one busybox bundle, interleaved run
//! by run so that drift hits every runtime alike.

mod bundles;
mod memory;
mod report;
mod runtime;
mod scale;
mod stats;
mod vm;

pub use bundles::container_id;
use bundles::make_bundles;
use memory::container_pss_kib;
pub use memory::max_rss_kib;
pub use runtime::Runtime;
use runtime::{private_mount_namespace, which};
use scale::scale;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Benchmarks strata's backends against runc, crun and runsc")]
struct Args {
    /// Measured iterations per operation and runtime (after 3 warm-up rounds).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Containers in the scale test.
    #[arg(long, default_value_t = 50)]
    scale: usize,
    /// Where results (JSON, markdown table, SVG plot) go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The strata binary (release build).
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Only these runtimes (comma-separated names as printed).
    #[arg(long)]
    only: Option<String>,
    /// Node config for the vm backend (guest kernel and agent); benches/run writes one.
    #[arg(long)]
    vm_config: Option<PathBuf>,
    /// strata's VMM (release build), for the tiny-guest launch benchmark.
    #[arg(long, default_value = "target/release/strata-vmm")]
    vmm: PathBuf,
    /// Measured iterations of the vm figures.
    #[arg(long, default_value_t = 10)]
    vm_iterations: usize,
    /// Leave the vm backend out.
    #[arg(long)]
    no_vm: bool,
}

#[derive(Default, Serialize)]
struct Results {
    host: BTreeMap<String, String>,
    notes: Vec<String>,
    runtimes: Vec<String>,
    /// op → runtime → samples in ms
    latency: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// runtime → KiB
    idle_pss_kib: BTreeMap<String, u64>,
    cli_max_rss_kib: BTreeMap<String, u64>,
    scale: BTreeMap<String, Value>,
    /// runtime ("host" too) → op → ns
    syscalls: BTreeMap<String, BTreeMap<String, f64>>,
    skipped: BTreeMap<String, String>,
    vm_tiny_guest: Option<Value>,
    vm_run: Option<Value>,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: containers need namespaces, mounts and cgroups");
    }
    let strata = std::fs::canonicalize(&args.strata).with_context(|| {
        format!(
            "{} (build with cargo build --release)",
            args.strata.display()
        )
    })?;
    let mut res = Results {
        notes: private_mount_namespace()?,
        host: host_facts(),
        ..Default::default()
    };
    let bundles = make_bundles(&strata)?;
    let state = bundles.dir.join("state");
    std::fs::create_dir_all(&state)?;

    let mut runtimes = vec![
        Runtime {
            name: "strata-native".into(),
            bin: strata.clone(),
            global: vec!["--root".into(), state.join("strata").display().to_string()],
            root: state.join("strata"),
            gvisor: false,
            host_mounts: false,
        },
        Runtime {
            name: "strata-sandbox".into(),
            bin: strata.clone(),
            global: vec![
                "--root".into(),
                state.join("strata-sandbox").display().to_string(),
                "--backend".into(),
                "sandbox".into(),
            ],
            root: state.join("strata-sandbox"),
            gvisor: false,
            host_mounts: true,
        },
    ];
    for peer in ["crun", "runc", "runsc"] {
        match which(peer) {
            Some(bin) => {
                let root = state.join(peer);
                let mut global = vec!["--root".to_string(), root.display().to_string()];
                if peer == "runsc" {
                    global.push("--network=none".into());
                }
                runtimes.push(Runtime {
                    name: peer.into(),
                    bin,
                    global,
                    root,
                    gvisor: peer == "runsc",
                    host_mounts: false,
                });
            }
            None => {
                res.skipped.insert(peer.into(), "not installed".into());
            }
        }
    }
    if let Some(only) = &args.only {
        let keep: Vec<&str> = only.split(',').collect();
        runtimes.retain(|r| keep.contains(&r.name.as_str()));
    }
    // A runtime that cannot run the bundle here is reported and left out.
    runtimes.retain(|r| {
        let id = container_id("chk", 99, 0);
        let ok = r.ok(&[
            "run",
            "--bundle",
            bundles.path("true").to_str().unwrap_or_default(),
            &id,
        ]);
        let _ = r.force_delete(&id);
        match ok {
            Ok(()) => true,
            Err(e) => {
                res.skipped
                    .insert(r.name.clone(), format!("cannot run here: {e:#}"));
                false
            }
        }
    });
    res.runtimes = runtimes.iter().map(|r| r.name.clone()).collect();

    let warmup = 3;
    let rounds = warmup + args.iterations;
    let steps = (rounds * runtimes.len()) as u64 + runtimes.len() as u64 * 3;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b_true = bundles.path("true");
    let b_sleep = bundles.path("sleep");
    let (b_true, b_sleep) = (
        b_true.to_str().unwrap_or_default(),
        b_sleep.to_str().unwrap_or_default(),
    );
    let mut n = 0;
    for round in 0..rounds {
        // Each runtime goes first equally often: the first after a pause pays for cold
        // kernel state (an idle RCU sync on the cgroup lock, caches).
        let order = (0..runtimes.len()).map(|k| (k + round) % runtimes.len());
        for ri in order {
            let rt = &runtimes[ri];
            bar.set_message(format!("latency: {}", rt.name));
            n += 1;
            let mut record = |op: &str, d: Duration| {
                if round >= warmup {
                    res.latency
                        .entry(op.into())
                        .or_default()
                        .entry(rt.name.clone())
                        .or_default()
                        .push(ms(d));
                }
            };
            let id = container_id("run", ri, n);
            record(
                "run /bin/true",
                rt.timed(&["run", "--bundle", b_true, &id])?,
            );
            let _ = rt.force_delete(&id);
            let id = container_id("lif", ri, n);
            record("create", rt.timed(&["create", "--bundle", b_true, &id])?);
            record("start", rt.timed(&["start", &id])?);
            rt.wait_stopped(&id)?;
            record("delete", rt.timed(&["delete", &id])?);
            let id = container_id("slp", ri, n);
            rt.ok(&["run", "--detach", "--bundle", b_sleep, &id])?;
            record("exec /bin/true", rt.timed(&["exec", &id, "/bin/true"])?);
            record("delete --force", rt.force_delete(&id)?);
            bar.inc(1);
        }
    }

    for (ri, rt) in runtimes.iter().enumerate() {
        bar.set_message(format!("memory: {}", rt.name));
        let id = container_id("mem", ri, 0);
        rt.ok(&["run", "--detach", "--bundle", b_sleep, &id])?;
        std::thread::sleep(Duration::from_millis(300));
        res.idle_pss_kib
            .insert(rt.name.clone(), container_pss_kib(&bundles.rootfs, &id));
        res.cli_max_rss_kib
            .insert(rt.name.clone(), max_rss_kib(rt.cmd(&["state", &id]))?);
        rt.force_delete(&id)?;
        bar.inc(1);

        bar.set_message(format!("scale: {}", rt.name));
        res.scale.insert(
            rt.name.clone(),
            scale(rt, ri, args.scale, b_sleep, &bundles.rootfs)?,
        );
        bar.inc(1);

        bar.set_message(format!("syscalls: {}", rt.name));
        let out = rt
            .cmd(&[
                "run",
                "--bundle",
                bundles.path("sysbench").to_str().unwrap_or_default(),
                &container_id("sys", ri, 0),
            ])
            .stdout(Stdio::piped())
            .output()?;
        let _ = rt.force_delete(&container_id("sys", ri, 0));
        res.syscalls.insert(
            rt.name.clone(),
            serde_json::from_slice(&out.stdout)
                .with_context(|| format!("{}: sysbench output", rt.name))?,
        );
        bar.inc(1);
    }
    let mut vm_skipped = Vec::new();
    if !args.no_vm {
        bar.set_message("vm: tiny guest");
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
        {
            match vm::tiny_guest(&args.vmm, &bundles.dir.join("vm"), args.iterations) {
                Ok(v) => res.vm_tiny_guest = Some(v),
                Err(e) => vm_skipped.push(format!("tiny guest: {e:#}")),
            }
        } else {
            vm_skipped.push("tiny guest: /dev/kvm cannot be opened".into());
        }
        bar.set_message("vm: run /bin/true");
        match &args.vm_config {
            Some(cfg) => {
                match vm::vm_run(&strata, cfg, b_true, &state.join("vm"), args.vm_iterations) {
                    Ok(v) => res.vm_run = Some(v),
                    Err(e) => vm_skipped.push(format!("vm backend: {e:#}")),
                }
            }
            None => vm_skipped.push("vm backend: no --vm-config (benches/run writes one)".into()),
        }
    }
    let host = Command::new(bundles.rootfs.join("bin/sysbench")).output()?;
    res.syscalls
        .insert("host".into(), serde_json::from_slice(&host.stdout)?);
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out)?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let table = report::markdown(
        &res.runtimes,
        &res.latency,
        &res.idle_pss_kib,
        &res.cli_max_rss_kib,
        &res.scale,
        &res.syscalls,
        &res.notes,
        &res.skipped,
        &res.host,
        &stamp,
    );
    let table = table + &vm::markdown(res.vm_tiny_guest.as_ref(), res.vm_run.as_ref(), &vm_skipped);
    println!("{table}");
    std::fs::write(args.out.join("latest.md"), &table)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_vec_pretty(&res)?,
    )?;
    std::fs::write(
        args.out.join("latency.svg"),
        report::svg(&res.runtimes, &res.latency),
    )?;
    eprintln!(
        "results: {}/latest.{{md,json}}, {}/latency.svg",
        args.out.display(),
        args.out.display()
    );
    let _ = std::fs::remove_dir_all(&bundles.dir);
    Ok(())
}

fn host_facts() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    let cpu = read("/proc/cpuinfo");
    if let Some(model) = cpu.lines().find_map(|l| l.strip_prefix("model name\t: ")) {
        m.insert("cpu".into(), model.to_string());
    }
    m.insert(
        "cpus".into(),
        cpu.lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .to_string(),
    );
    m.insert(
        "loadavg".into(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    m
}
