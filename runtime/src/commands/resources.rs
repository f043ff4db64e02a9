//! Commands about a container's resources: pause/resume, update, ps, events.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Value};

use super::globals::Globals;
use super::inputs::parse_json;
use crate::backend;
use crate::cli::{ListFormat, UpdateArgs};
use crate::state::{self, ContainerDir, Record, Status};

fn backend_of(rec: &Record) -> Result<Box<dyn backend::Backend>> {
    backend::of(rec.backend)
}

pub fn pause(g: &Globals, id: &str, pause: bool) -> Result<i32> {
    let dir = ContainerDir::open(g.root, id)?;
    let rec = dir.load()?;
    let status = rec.live_status();
    let be = backend_of(&rec)?;
    match (pause, status) {
        (true, Status::Running) => be.pause(&rec)?,
        (false, Status::Paused) => be.resume(&rec)?,
        (true, s) => bail!("cannot pause container {id:?}: it is {s}, not running"),
        (false, s) => bail!("cannot resume container {id:?}: it is {s}, not paused"),
    }
    Ok(0)
}

/// Sizes as runc takes them: bytes, or with a k/m/g/t suffix (powers of 1024); -1 = no limit.
pub fn parse_size(s: &str, flag: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag}: {s:?} is not a size (e.g. 512m, 1g, 1048576)"))?;
    if n < 0.0 {
        bail!("{flag}: {s:?} must not be negative (use -1 for no limit)");
    }
    Ok((n * mul as f64) as i64)
}

/// Recursively lays `patch` over `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn flags_patch(a: &UpdateArgs) -> Result<Value> {
    let mut p = json!({});
    let mut set = |path: &[&str], v: Value| {
        let mut cur = &mut p;
        for k in &path[..path.len() - 1] {
            cur = cur
                .as_object_mut()
                .expect("patch levels are objects")
                .entry(k.to_string())
                .or_insert(json!({}));
        }
        cur[path[path.len() - 1]] = v;
    };
    if let Some(m) = &a.memory {
        set(&["memory", "limit"], json!(parse_size(m, "--memory")?));
    }
    if let Some(m) = &a.memory_reservation {
        set(
            &["memory", "reservation"],
            json!(parse_size(m, "--memory-reservation")?),
        );
    }
    if let Some(m) = &a.memory_swap {
        set(&["memory", "swap"], json!(parse_size(m, "--memory-swap")?));
    }
    if a.kernel_memory.is_some() || a.kernel_memory_tcp.is_some() {
        tracing::warn!("--kernel-memory and --kernel-memory-tcp are not supported by the kernel and are ignored");
    }
    if let Some(v) = a.cpu_share {
        set(&["cpu", "shares"], json!(v));
    }
    if let Some(v) = a.cpu_quota {
        set(&["cpu", "quota"], json!(v));
    }
    if let Some(v) = a.cpu_period {
        set(&["cpu", "period"], json!(v));
    }
    if let Some(v) = a.cpu_rt_runtime {
        set(&["cpu", "realtimeRuntime"], json!(v));
    }
    if let Some(v) = a.cpu_rt_period {
        set(&["cpu", "realtimePeriod"], json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        set(&["cpu", "cpus"], json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        set(&["cpu", "mems"], json!(v));
    }
    if let Some(v) = a.pids_limit {
        set(&["pids", "limit"], json!(v));
    }
    if let Some(v) = a.blkio_weight {
        set(&["blockIO", "weight"], json!(v));
    }
    Ok(p)
}

pub fn update(g: &Globals, a: &UpdateArgs) -> Result<i32> {
    let dir = ContainerDir::open(g.root, &a.id)?;
    let mut rec = dir.load()?;
    match rec.live_status() {
        Status::Running | Status::Paused | Status::Created => {}
        s => bail!("cannot update container {:?}: it is {s}", a.id),
    }
    let mut patch = match &a.resources {
        Some(p) => {
            let mut text = String::new();
            if p == Path::new("-") {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("--resources -: reading stdin")?;
            } else {
                text = std::fs::read_to_string(p)
                    .with_context(|| format!("--resources {}", p.display()))?;
            }
            // Check the shape first, for an error that names the field.
            let _: LinuxResources = parse_json(&text, p)?;
            serde_json::from_str(&text)?
        }
        None => json!({}),
    };
    merge(&mut patch, flags_patch(a)?);
    // Device rules are fixed at create time, as with runc.
    if let Some(o) = patch.as_object_mut() {
        o.remove("devices");
    }
    let mut spec_linux = rec.spec.linux().clone().unwrap_or_default();
    let mut merged = serde_json::to_value(spec_linux.resources().clone().unwrap_or_default())?;
    merge(&mut merged, patch.clone());
    let merged: LinuxResources = serde_json::from_value(merged).context("merging resources")?;
    let delta: LinuxResources = serde_json::from_value(patch).context("resources")?;
    backend_of(&rec)?.update(&rec, &delta)?;
    spec_linux.set_resources(Some(merged));
    rec.spec.set_linux(Some(spec_linux));
    dir.save(&rec)?;
    Ok(0)
}

pub fn ps(g: &Globals, id: &str, format: ListFormat, ps_args: &[String]) -> Result<i32> {
    state::validate_id(id)?;
    let path = g.root.join(id).join("state.json");
    if !path.exists() {
        bail!("container {id:?} does not exist");
    }
    let rec = state::read_record(&path)?;
    let pids = backend_of(&rec)?.pids(&rec)?;
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow::anyhow!("ps {}: no PID column", args.join(" ")))?;
    println!("{header}");
    for l in lines {
        if let Some(pid) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&pid) {
                println!("{l}");
            }
        }
    }
    Ok(0)
}

fn stats_event(rec: &Record) -> Result<Value> {
    let stats = backend_of(rec)?.stats(rec)?;
    Ok(json!({"type": "stats", "id": rec.id, "data": stats}))
}

pub fn events(g: &Globals, id: &str, once: bool, interval: &str) -> Result<i32> {
    state::validate_id(id)?;
    let path = g.root.join(id).join("state.json");
    if !path.exists() {
        bail!("container {id:?} does not exist");
    }
    let rec = state::read_record(&path)?;
    if rec.live_status() == Status::Stopped {
        bail!("container {id:?} is stopped");
    }
    if once {
        println!("{}", stats_event(&rec)?);
        return Ok(0);
    }
    let every =
        humantime::parse_duration(interval).with_context(|| format!("--interval {interval:?}"))?;
    if every.is_zero() {
        bail!("--interval must be above zero");
    }
    let be = backend_of(&rec)?;
    let pidfd = strata_linux::proc::pidfd_open(rec.pid).context("the container is not running")?;
    let notifier = be.oom_notifier(&rec)?;
    let mut ooms = be.oom_kills(&rec);
    let mut next = std::time::Instant::now();
    loop {
        let now = std::time::Instant::now();
        if now >= next {
            println!("{}", stats_event(&rec)?);
            next = now + every;
        }
        let wait = next.saturating_duration_since(std::time::Instant::now());
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some((fd, _)) = &notifier {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(nix::Error::EINTR) | Ok(0) => continue,
            Err(e) => return Err(e).context("waiting for events"),
            Ok(_) => {}
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            // The container has exited.
            return Ok(0);
        }
        if let Some((fd, every_wake_is_oom)) = &notifier {
            let mut buf = [0u8; 4096];
            let _ = nix::unistd::read(fd, &mut buf);
            let now_ooms = be.oom_kills(&rec);
            if *every_wake_is_oom || now_ooms > ooms {
                println!("{}", json!({"type": "oom", "id": rec.id}));
            }
            ooms = now_ooms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576", "x").unwrap(), 1 << 20);
        assert_eq!(parse_size("512m", "x").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G", "x").unwrap(), 1 << 30);
        assert_eq!(parse_size("64kb", "x").unwrap(), 64 << 10);
        assert_eq!(parse_size("-1", "x").unwrap(), -1);
        assert!(parse_size("lots", "x").is_err());
    }

    #[test]
    fn merge_overlays_objects() {
        let mut a = json!({"memory": {"limit": 1, "swap": 2}, "pids": {"limit": 3}});
        merge(
            &mut a,
            json!({"memory": {"limit": 5}, "cpu": {"shares": 7}}),
        );
        assert_eq!(
            a,
            json!({"memory": {"limit": 5, "swap": 2}, "pids": {"limit": 3}, "cpu": {"shares": 7}})
        );
    }
}
