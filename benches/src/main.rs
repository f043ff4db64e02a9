//! strata-bench: whole-process latency, memory and syscall cost of strata's backends and of
//! the peers installed on the host (runc, crun, runsc), on one busybox bundle, interleaved run
//! by run so that drift hits every runtime alike.

mod report;
mod stats;
mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};

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

/// One runtime under test: how to call it.
#[derive(Clone, Serialize)]
pub struct Runtime {
    pub name: String,
    bin: PathBuf,
    global: Vec<String>,
    #[serde(skip)]
    root: PathBuf,
    /// runsc only accepts `delete --force` and needs its network switched off.
    gvisor: bool,
    /// Runs in the host's mount namespace, with its cgroup v2 mount: the sandbox's network
    /// policy is held by cgroup v2 programs, and the sandbox refuses to run without them.
    host_mounts: bool,
}

/// The mount namespace the harness started in, kept open before it leaves it.
static HOST_MOUNTS: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

impl Runtime {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(&self.global).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(ns) = HOST_MOUNTS.get().filter(|_| self.host_mounts) {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: between fork and exec the child makes one setns(2) call on an fd that
            // stays open for the harness's life; nothing else.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    /// Runs to completion. Errors go through a file, not a pipe: a created container keeps
    /// the runtime's stderr open long after the runtime exits.
    fn ok(&self, args: &[&str]) -> Result<()> {
        let errfile = self
            .root
            .with_extension(format!("stderr-{}", std::process::id()));
        let f = std::fs::File::create(&errfile)?;
        let status = self
            .cmd(args)
            .stderr(f)
            .status()
            .with_context(|| format!("{} {args:?}", self.name))?;
        if !status.success() {
            let err = std::fs::read_to_string(&errfile).unwrap_or_default();
            bail!("{} {args:?}: {}", self.name, err.trim());
        }
        Ok(())
    }

    fn timed(&self, args: &[&str]) -> Result<Duration> {
        let t = Instant::now();
        self.ok(args)?;
        Ok(t.elapsed())
    }

    fn status(&self, id: &str) -> String {
        let out = self.cmd(&["state", id]).stdout(Stdio::piped()).output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn wait_stopped(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id) != "stopped" {
            if Instant::now() > deadline {
                bail!("{}: {id} did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn force_delete(&self, id: &str) -> Result<Duration> {
        self.timed(&["delete", "--force", id])
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// crun 1.8 refuses this host's hybrid cgroups while the cgroup2 mount is there; every
/// runtime runs in a private mount namespace without it, so they are measured alike.
fn private_mount_namespace() -> Result<Vec<String>> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let host = std::fs::File::open("/proc/self/ns/mnt").context("/proc/self/ns/mnt")?;
    let _ = HOST_MOUNTS.set(host.into());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    let mut notes = vec!["every runtime runs in a private mount namespace".to_string()];
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH)
            .context("unmounting /sys/fs/cgroup/unified")?;
        notes.push("with /sys/fs/cgroup/unified unmounted (crun 1.8 refuses this host's hybrid layout otherwise), except for strata-sandbox, which runs in the host's mount namespace: its network policy is held by cgroup v2 programs".into());
    }
    Ok(notes)
}

struct Bundles {
    dir: PathBuf,
    rootfs: PathBuf,
}

impl Bundles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Busybox rootfs (shared) plus one bundle per workload: `true`, `sleep`, `sysbench`.
fn make_bundles(strata: &Path) -> Result<Bundles> {
    let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("busybox-static is needed")?;
    for a in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("syscalls.c");
    let st = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(rootfs.join("bin/sysbench"))
        .arg(&src)
        .status()
        .context("gcc (for the syscall benchmark)")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("maxrss.c");
    let st = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(dir.join("maxrss"))
        .arg(&src)
        .status()
        .context("gcc (for the peak RSS helper)")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    MAXRSS
        .set(dir.join("maxrss"))
        .map_err(|_| anyhow::anyhow!("bundles made twice"))?;
    let spec_dir = dir.join("spec");
    std::fs::create_dir_all(&spec_dir)?;
    let st = Command::new(strata)
        .args(["spec", "--bundle"])
        .arg(&spec_dir)
        .status()?;
    if !st.success() {
        bail!("strata spec failed");
    }
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_dir.join("config.json"))?)?;
    for (name, args) in [
        ("true", vec!["/bin/true"]),
        ("sleep", vec!["/bin/sleep", "100000"]),
        ("sysbench", vec!["/bin/sysbench"]),
    ] {
        let mut c = base.clone();
        // The oldest peer (crun 1.8) accepts versions up to 1.0.x.
        c["ociVersion"] = json!("1.0.2");
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(args);
        c["root"] = json!({"path": rootfs, "readonly": true});
        let b = dir.join(name);
        std::fs::create_dir_all(&b)?;
        std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&c)?)?;
    }
    Ok(Bundles { dir, rootfs })
}

/// IDs of one width per tag, so that none is a prefix of another (runsc matches prefixes).
pub fn container_id(tag: &str, rt: usize, n: usize) -> String {
    format!("{tag}{rt:02}{n:06}")
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

fn ms(d: Duration) -> f64 {
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

/// Processes of one container: those in a cgroup named after it, those whose root is the
/// bundle's rootfs, and any runtime helper whose command line names the container (runsc's
/// sandbox and gofer, a supervisor, a VMM).
fn container_pids(rootfs: &Path, id: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let in_cgroup = cgroup.lines().any(|l| l.split('/').any(|part| part == id));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let named = cmdline.contains(id) && !cmdline.contains(" state ");
            in_cgroup || root.starts_with(rootfs) || named
        })
        .collect()
}

fn container_pss_kib(rootfs: &Path, id: &str) -> u64 {
    container_pids(rootfs, id)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// The peak RSS helper (benches/maxrss.c), built with the bundles.
static MAXRSS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Peak RSS of a command, measured by a small static helper that forks it (see maxrss.c for
/// why not from here).
pub fn max_rss_kib(cmd: Command) -> Result<u64> {
    let helper = MAXRSS.get().context("the peak RSS helper is not built")?;
    let out = Command::new(helper)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("peak RSS of {:?}: {text:?}", cmd.get_program()))
}

/// N containers up, then down: one at a time and two at a time; then a leak check.
fn scale(rt: &Runtime, ri: usize, count: usize, bundle: &str, rootfs: &Path) -> Result<Value> {
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    let ids: Vec<String> = (0..count).map(|i| container_id("scl", ri, i)).collect();
    let t = Instant::now();
    for id in &ids {
        rt.ok(&["run", "--detach", "--bundle", bundle, id])?;
    }
    let seq_up = ms(t.elapsed());
    let t = Instant::now();
    for id in &ids {
        rt.force_delete(id)?;
    }
    let seq_down = ms(t.elapsed());
    let halves: Vec<Vec<String>> = ids.chunks(count.div_ceil(2)).map(|c| c.to_vec()).collect();
    let parallel = |f: &(dyn Fn(&str) -> Result<()> + Sync)| -> Result<f64> {
        let t = Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = halves
                .iter()
                .map(|h| s.spawn(move || h.iter().try_for_each(|id| f(id))))
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
        })?;
        Ok(ms(t.elapsed()))
    };
    let par_up = parallel(&|id| rt.ok(&["run", "--detach", "--bundle", bundle, id]))?;
    let par_down = parallel(&|id| rt.force_delete(id).map(|_| ()))?;
    // Leak check: mounts, state dirs, processes, cgroups. Some runtimes finish removing
    // cgroups just after their CLI returns; give everyone the same 2 s grace.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && (cgroup_dirs_named(&ids) > 0
            || ids.iter().any(|id| !container_pids(rootfs, id).is_empty()))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut leaks = Vec::new();
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    if mounts_after != mounts_before {
        leaks.push(format!(
            "{} mounts",
            mounts_after as i64 - mounts_before as i64
        ));
    }
    let left: Vec<String> = std::fs::read_dir(&rt.root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| ids.contains(n))
        .collect();
    if !left.is_empty() {
        leaks.push(format!("{} state dirs", left.len()));
    }
    let procs = ids
        .iter()
        .map(|id| container_pids(rootfs, id).len())
        .sum::<usize>();
    if procs > 0 {
        leaks.push(format!("{procs} processes"));
    }
    let cgroups = cgroup_dirs_named(&ids);
    if cgroups > 0 {
        leaks.push(format!("{cgroups} cgroups"));
    }
    Ok(json!({
        "containers": count,
        "sequential_up_ms": seq_up, "sequential_down_ms": seq_down,
        "two_at_a_time_up_ms": par_up, "two_at_a_time_down_ms": par_down,
        "leaks": leaks,
    }))
}

fn cgroup_dirs_named(ids: &[String]) -> usize {
    let mut n = 0;
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return 0;
    };
    for c in ctrls.flatten() {
        for sub in ["", "strata", "machine.slice"] {
            let base = c.path().join(sub);
            n += ids.iter().filter(|id| base.join(id).exists()).count();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_prefixes_of_each_other() {
        let ids: Vec<String> = (0..200).map(|i| container_id("run", 1, i)).collect();
        for a in &ids {
            for b in &ids {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
    }
}
