//! What the front end asks of a backend: one trait, and the requests it is handed. What
//! acts only on the container's host processes and cgroups (start through the start socket,
//! pause, limits, stats, OOM) is written once here as default methods; a backend overrides
//! what it does differently.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use strata_linux::cgroups::stats::Stats;
use strata_linux::cgroups::CgroupSet;

use crate::config::NodeConfig;
use crate::state::{ContainerDir, Record, START_SOCKET};

/// One `create`: the caller's request as strata-linux takes it, plus what only the runtime
/// knows (its state directory, the node's config).
pub struct CreateRequest<'a> {
    pub container: strata_linux::container::CreateRequest<'a>,
    /// The container's state directory (the runtime's cwd during create).
    pub state_dir: &'a Path,
    pub node: &'a NodeConfig,
}

pub struct Created {
    pub pid: i32,
    pub rootfs: PathBuf,
    pub cgroups: CgroupSet,
}

/// One `exec`, as strata-linux takes it.
pub use strata_linux::exec::ExecRequest;

pub trait Backend {
    /// Builds the container; its process waits for `start`. Leaves nothing behind on error.
    fn create(&self, req: &CreateRequest) -> Result<Created>;
    fn signal(&self, rec: &Record, sig: Signal, all: bool) -> Result<()>;
    /// Starts an extra process; returns its host PID.
    fn exec(&self, rec: &Record, req: &ExecRequest) -> Result<i32>;
    /// Ends every process of the container and releases what it held.
    fn destroy(&self, rec: &Record) -> Result<()>;

    /// Lets a created container's process run: one byte on the start socket the container's
    /// host process waits on.
    fn start(&self, dir: &ContainerDir, rec: &Record) -> Result<()> {
        // Relative to the state dir: socket paths are limited to 108 bytes.
        std::env::set_current_dir(&dir.path)?;
        let mut conn = UnixStream::connect(START_SOCKET)
            .context("the container's init is no longer waiting for start")?;
        conn.write_all(b"1")?;
        // Gone socket = started, for `state` even if we die before recording it.
        let _ = std::fs::remove_file(START_SOCKET);
        strata_linux::fault::point("start:after-signal");
        // The init's copy closes on a successful execve; anything it writes is its error
        // (its own text, or the exec trampoline's errno).
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        let arg0 = rec
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        if let Some(msg) = strata_linux::trampoline::decode_reply(&reply, &arg0) {
            bail!("{msg}");
        }
        Ok(())
    }

    fn pause(&self, rec: &Record) -> Result<()> {
        needs_cgroup(rec, "pause")?;
        Ok(rec.cgroups.set_frozen(true)?)
    }

    fn resume(&self, rec: &Record) -> Result<()> {
        needs_cgroup(rec, "resume")?;
        Ok(rec.cgroups.set_frozen(false)?)
    }

    /// Applies new resource limits to a running container.
    fn update(&self, rec: &Record, resources: &LinuxResources) -> Result<()> {
        needs_cgroup(rec, "update")?;
        let devices = rec
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        Ok(rec.cgroups.apply(resources, &devices)?)
    }

    fn stats(&self, rec: &Record) -> Result<Stats> {
        Ok(strata_linux::cgroups::stats::read(&rec.cgroups))
    }

    /// Host PIDs of every process of the container.
    fn pids(&self, rec: &Record) -> Result<Vec<i32>> {
        Ok(container_pids(rec))
    }

    /// OOM kills so far.
    fn oom_kills(&self, rec: &Record) -> u64 {
        rec.cgroups.oom_kills()
    }

    /// An fd that wakes on OOM; true if every wake-up is an OOM event.
    fn oom_notifier(&self, rec: &Record) -> Result<Option<(OwnedFd, bool)>> {
        Ok(rec.cgroups.oom_notifier()?)
    }

    /// Annotations the backend adds to `state` output beyond the bundle's and
    /// `dev.strata.backend` (the vm backend names its hypervisor driver).
    fn state_annotations(&self, _rec: &Record) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A rootless container the user could make no cgroup for has none: what needs one says so.
pub fn needs_cgroup(rec: &Record, what: &str) -> Result<()> {
    if rec.cgroups.is_none() {
        anyhow::bail!(
            "cannot {what} container {:?}: it has no cgroup (rootless, and the user may create \
             none here; a cgroup v2 subtree delegated to the user gives it one)",
            rec.id
        );
    }
    Ok(())
}

/// Every process of the container: its cgroup's, or, without a cgroup (rootless), those in
/// the init's pid namespace when it has one of its own, else the init alone.
pub fn container_pids(rec: &Record) -> Vec<i32> {
    if !rec.cgroups.is_none() {
        return rec.cgroups.pids();
    }
    if rec.pid <= 0 || !crate::state::process_alive(rec.pid, rec.pid_start) {
        return Vec::new();
    }
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(theirs) = ns_of(rec.pid) else {
        return vec![rec.pid];
    };
    if ns_of(std::process::id() as i32).as_ref() == Some(&theirs) {
        return vec![rec.pid];
    }
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| ns_of(*pid).as_ref() == Some(&theirs))
        .collect();
    pids.sort_unstable();
    pids
}
