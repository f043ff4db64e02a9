//! The container's cgroup: created (or joined) at `linux.cgroupsPath` in every mounted
//! hierarchy, so that every process of the container can be found, signalled and accounted.
//!
//! Layouts: legacy v1 (one hierarchy per controller), unified v2 (one cgroup2 mount), and
//! hybrid (v1 controllers plus a cgroup2 mount with few or no controllers). Resource limits
//! are written elsewhere; this module owns where the cgroup is and who is in it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub mod bpf;
pub mod devices;
mod hierarchy;
pub mod resources;
pub mod stats;
mod sub;

pub use hierarchy::{
    hierarchies, layout, parse_mountinfo, resolve_path, unescape_mountinfo, Hierarchy, Layout,
};
pub use sub::SubCgroups;

/// The container's cgroup in each hierarchy, and which directories we made (only those are
/// removed by `delete`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupSet {
    pub path: PathBuf,
    pub dirs: Vec<CgroupDir>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupDir {
    pub dir: PathBuf,
    /// The hierarchy's mount point: directories we created between it and `dir` are ours.
    pub mount_point: PathBuf,
    /// Name the container sees under /sys/fs/cgroup ("" for a pure v2 host).
    pub name: String,
    /// Directories we created, deepest last.
    pub created: Vec<PathBuf>,
    pub unified: bool,
    /// Controllers this directory manages: the v1 hierarchy's, or those enabled for it on v2.
    #[serde(default)]
    pub controllers: Vec<String>,
}

/// The first limit `r` asks for, by its field name (device rules are not limits: a rootless
/// container, which cannot make device nodes, goes without them as under runc).
pub fn limits_asked(r: &oci_spec::runtime::LinuxResources) -> Option<&'static str> {
    let some_hugepages = r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty());
    let some_rdma = r.rdma().as_ref().is_some_and(|h| !h.is_empty());
    let some_unified = r.unified().as_ref().is_some_and(|h| !h.is_empty());
    [
        ("memory", r.memory().is_some()),
        ("cpu", r.cpu().is_some()),
        ("pids", r.pids().is_some()),
        ("blockIO", r.block_io().is_some()),
        ("hugepageLimits", some_hugepages),
        ("network", r.network().is_some()),
        ("rdma", some_rdma),
        ("unified", some_unified),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(name, _)| name)
}

impl CgroupSet {
    /// Creates (or joins) the cgroup in every hierarchy. On error, whatever was made is
    /// removed again.
    pub fn create(path: &Path, hs: &[Hierarchy]) -> Result<CgroupSet> {
        let only_v2 = layout(hs) == Layout::Unified;
        let mut set = CgroupSet {
            path: path.to_path_buf(),
            dirs: Vec::new(),
        };
        for h in hs {
            let rel = path.strip_prefix("/").unwrap_or(path);
            let dir = h.mount_point.join(rel);
            let mut created = Vec::new();
            let mut res = refuse_if_in_use(&dir)
                .and_then(|()| mkdir_tracked(&h.mount_point, &dir, &mut created, &h.controllers));
            let mut controllers = h.controllers.clone();
            if h.unified && res.is_ok() {
                match enable_v2_controllers(&h.mount_point, &dir) {
                    Ok(c) => controllers = c,
                    Err(e) => res = Err(e),
                }
            }
            let name = if only_v2 {
                String::new()
            } else if h.unified {
                "unified".to_string()
            } else {
                h.mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            set.dirs.push(CgroupDir {
                dir,
                mount_point: h.mount_point.clone(),
                name,
                created,
                unified: h.unified,
                controllers,
            });
            if let Err(e) = res {
                set.remove();
                return Err(e);
            }
        }
        Ok(set)
    }

    /// No cgroup at all: a rootless container where the user may create none. Every
    /// operation on it is a no-op; what needs one says so (see `is_none`).
    pub fn none(path: &Path) -> CgroupSet {
        CgroupSet {
            path: path.to_path_buf(),
            dirs: Vec::new(),
        }
    }

    pub fn is_none(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn add(&self, pid: i32) -> Result<()> {
        self.add_where(pid, |_| true)
    }

    /// Moves `pid` into the directories `which` selects, through cgroup.procs. Moving
    /// another process takes the kernel's global threadgroup lock, which costs an RCU grace
    /// period (~20 ms here) when it was idle: see [`Placement`] for the cheap ways.
    pub fn add_where(&self, pid: i32, which: impl Fn(&CgroupDir) -> bool) -> Result<()> {
        for d in self.dirs.iter().filter(|d| which(d)) {
            fs::write(d.dir.join("cgroup.procs"), pid.to_string())
                .ctx(|| format!("adding pid {pid} to cgroup {}", d.dir.display()))?;
        }
        Ok(())
    }

    /// Opens what a process needs to place itself without the global lock: the v1 `tasks`
    /// files (a single-threaded process writing "0" there moves itself without taking
    /// cgroup_threadgroup_rwsem) and the v2 directory (for clone3's CLONE_INTO_CGROUP).
    pub fn placement(&self) -> Result<Placement> {
        self.placement_in(&SubCgroups::default())
    }

    /// [`placement`](Self::placement) in the sub-cgroups `sub` names (`exec --cgroup`).
    pub fn placement_in(&self, sub: &SubCgroups) -> Result<Placement> {
        sub.check(&self.dirs)?;
        let mut tasks = Vec::new();
        let mut v2_dir = None;
        let mut v2_procs = None;
        for d in &self.dirs {
            let dir = sub.dir_in(d)?;
            if d.unified {
                let f = fs::File::open(&dir).ctx(|| format!("opening {}", dir.display()))?;
                v2_dir = Some(std::os::fd::OwnedFd::from(f));
                v2_procs = Some(dir.join("cgroup.procs"));
            } else {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("tasks"))
                    .ctx(|| format!("opening {}", dir.join("tasks").display()))?;
                tasks.push(f);
            }
        }
        Ok(Placement {
            tasks,
            v2_dir,
            v2_procs,
        })
    }
}

/// What a new process uses to join its cgroup by itself (v1) or at birth (v2).
pub struct Placement {
    pub tasks: Vec<fs::File>,
    pub v2_dir: Option<std::os::fd::OwnedFd>,
    /// The `cgroup.procs` of that v2 directory, for where clone3 cannot place the process.
    pub v2_procs: Option<PathBuf>,
}

impl Placement {
    /// Called by the (single-threaded) process itself: moves it in every v1 hierarchy.
    pub fn join_v1_self(&self) -> Result<()> {
        use std::io::Write;
        for mut f in &self.tasks {
            f.write_all(b"0")
                .ctx(|| "joining the container's cgroup".into())?;
        }
        Ok(())
    }
}

impl CgroupSet {
    /// Writes `linux.resources` (limits and device rules).
    pub fn apply(
        &self,
        r: &oci_spec::runtime::LinuxResources,
        linux_devices: &[oci_spec::runtime::LinuxDevice],
    ) -> Result<()> {
        resources::apply(self, r)?;
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            let rules = devices::rules(rules, linux_devices)?;
            let c = resources::Controllers::new(self);
            match c.dir("devices") {
                Some(d) => devices::apply_v1(d, &rules)?,
                None => match c.unified() {
                    Some(d) => devices::apply_v2(d, &rules)?,
                    None => {
                        return Err(Error::config(
                            "linux.resources.devices",
                            "no devices controller and no cgroup v2 hierarchy",
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    fn freezer(&self) -> Option<(&CgroupDir, bool)> {
        let c = resources::Controllers::new(self);
        if let Some(d) = c.dir("freezer") {
            return Some((d, false));
        }
        c.unified()
            .filter(|d| d.dir.join("cgroup.freeze").exists())
            .map(|d| (d, true))
    }

    /// Whether the container is frozen (paused).
    pub fn is_frozen(&self) -> bool {
        match self.freezer() {
            Some((d, false)) => {
                fs::read_to_string(d.dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            }
            Some((d, true)) => fs::read_to_string(d.dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "frozen 1")),
            None => false,
        }
    }

    /// Freezes or thaws every process of the container and waits until the kernel says it is
    /// done. Neither v1's freezer.state nor v2's cgroup.events can be waited on for this
    /// transition without a watcher, so it is polled at 1 ms, bounded at 10 s.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (d, v2) = self.freezer().ok_or_else(|| {
            Error::config(
                "pause",
                "no freezer: neither the v1 freezer controller nor cgroup v2",
            )
        })?;
        let (file, value) = match (v2, frozen) {
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
            (true, true) => ("cgroup.freeze", "1"),
            (true, false) => ("cgroup.freeze", "0"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            resources::write(&d.dir, file, value, "freezer")?;
            if self.is_frozen() == frozen {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::config(
                    "freezer",
                    format!("{} did not become {value}", d.dir.display()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// How many times the kernel's OOM killer acted in the container's cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(d) = resources::Controllers::new(self).dir("memory") else {
            return 0;
        };
        let file = if d.unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(d.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// An fd that becomes readable when the container hits an OOM condition: v1's eventfd
    /// registered on memory.oom_control, or an inotify watch on v2's memory.events. The bool
    /// says whether every wake-up is an OOM (v1) or the count must be compared (v2).
    pub fn oom_notifier(&self) -> Result<Option<(std::os::fd::OwnedFd, bool)>> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let Some(d) = resources::Controllers::new(self).dir("memory") else {
            return Ok(None);
        };
        if d.unified {
            // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).ctx(|| "inotify_init1".into());
            }
            // SAFETY: the kernel just gave us this fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let path =
                std::ffi::CString::new(d.dir.join("memory.events").as_os_str().as_encoded_bytes())
                    .map_err(|e| Error::config("memory.events", e.to_string()))?;
            // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) }
                < 0
            {
                return Err(std::io::Error::last_os_error())
                    .ctx(|| "watching memory.events".into());
            }
            return Ok(Some((fd, false)));
        }
        let efd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .ctx(|| "eventfd".into())?;
        let ctl = fs::File::open(d.dir.join("memory.oom_control"))
            .ctx(|| format!("opening {}", d.dir.join("memory.oom_control").display()))?;
        resources::write(
            &d.dir,
            "cgroup.event_control",
            &format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
            "events",
        )?;
        Ok(Some((OwnedFd::from(efd), true)))
    }

    /// v2's `cgroup.kill`: SIGKILL to every process, atomically with respect to forks.
    /// Returns whether it was available and used.
    pub fn kill_all_v2(&self) -> bool {
        self.dirs.iter().any(|d| {
            d.unified
                && d.dir.join("cgroup.kill").exists()
                && fs::write(d.dir.join("cgroup.kill"), "1").is_ok()
        })
    }

    /// Every process in the container's cgroup (from the first hierarchy that lists any).
    pub fn pids(&self) -> Vec<i32> {
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.dir.join("cgroup.procs")) {
                let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !pids.is_empty() {
                    return pids;
                }
            }
        }
        Vec::new()
    }

    /// Removes the directories this container created, deepest first. A parent that still
    /// holds other containers' cgroups stays.
    pub fn remove(&self) {
        for d in &self.dirs {
            for (i, dir) in d.created.iter().rev().enumerate() {
                match remove_cgroup_dir(dir, i == 0) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::debug!("cgroup {} stays: {e}", dir.display());
                        break;
                    }
                }
            }
        }
    }
}

/// rmdir of a cgroup. The container's own (leaf) directory may still be busy for a moment
/// after its last process died (the kernel takes the cgroup offline asynchronously), so that
/// one is retried briefly; a busy parent holds other containers and stays.
fn remove_cgroup_dir(dir: &Path, leaf: bool) -> std::io::Result<()> {
    let tries = if leaf { 100 } else { 1 };
    for i in 0..tries {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && i + 1 < tries => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Enables every available controller down the path to `dir` (cgroup v2 only hands a
/// controller to a child that its parent lists in cgroup.subtree_control), and returns the
/// controllers `dir` ends up with.
fn enable_v2_controllers(mount_point: &Path, dir: &Path) -> Result<Vec<String>> {
    let read = |d: &Path| -> Vec<String> {
        fs::read_to_string(d.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    if read(mount_point).is_empty() {
        return Ok(Vec::new());
    }
    let rel = dir.strip_prefix(mount_point).unwrap_or(dir);
    let mut cur = mount_point.to_path_buf();
    for comp in rel.components() {
        let available = read(&cur);
        if !available.is_empty() {
            let enable: Vec<String> = available.iter().map(|c| format!("+{c}")).collect();
            if let Err(e) = fs::write(cur.join("cgroup.subtree_control"), enable.join(" ")) {
                // A cgroup with processes of its own cannot hand controllers down.
                tracing::warn!("enabling {enable:?} in {}: {e}", cur.display());
            }
        }
        cur.push(comp);
    }
    Ok(read(dir))
}

/// A container's cgroup is its own: an existing one that holds processes or other cgroups
/// (a service's, another container's, a parent like /docker) is refused. Its limits would
/// apply to everything in it, and `delete` kills every process in a container's cgroup.
fn refuse_if_in_use(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let in_use = |what: &str| {
        Err(Error::config(
            "linux.cgroupsPath",
            format!(
                "{} is an existing cgroup that holds {what}; a container needs a cgroup of its own",
                dir.display()
            ),
        ))
    };
    if entries
        .flatten()
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    {
        return in_use("other cgroups");
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        return in_use("processes");
    }
    Ok(())
}

fn mkdir_tracked(
    mount_point: &Path,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    controllers: &[String],
) -> Result<()> {
    // Another runtime may remove an empty parent between our mkdirs; start over then.
    for _ in 0..3 {
        match mkdir_once(mount_point, dir, created, controllers) {
            Err(Error::Io { error, .. }) if error.kind() == ErrorKind::NotFound => continue,
            other => return other,
        }
    }
    mkdir_once(mount_point, dir, created, controllers)
}

fn mkdir_once(
    mount_point: &Path,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    controllers: &[String],
) -> Result<()> {
    let rel = dir.strip_prefix(mount_point).unwrap_or(dir);
    let mut cur = mount_point.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match fs::create_dir(&cur) {
            Ok(()) => created.push(cur.clone()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("creating cgroup {}", cur.display())),
        }
    }
    if controllers.iter().any(|c| c == "cpuset") {
        ensure_cpuset(mount_point, dir)?;
    }
    Ok(())
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes and refuses tasks until it
/// has both; fill them from the nearest ancestor, as runc does. Also covers a parent another
/// runtime created a moment ago and has not filled yet.
fn ensure_cpuset(mount_point: &Path, dir: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur =
            fs::read_to_string(dir.join(f)).ctx(|| format!("reading {}", dir.join(f).display()))?;
        if !cur.trim().is_empty() || dir == mount_point {
            continue;
        }
        let parent = dir.parent().unwrap_or(mount_point);
        ensure_cpuset(mount_point, parent)?;
        let v = fs::read_to_string(parent.join(f))
            .ctx(|| format!("reading {}", parent.join(f).display()))?;
        fs::write(dir.join(f), v.trim()).ctx(|| format!("writing {}", dir.join(f).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_oom_kills_on_v1_and_v2() {
        let tmp = std::env::temp_dir().join(format!("strata-oom-{}", std::process::id()));
        for (unified, file, text) in [
            (
                false,
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            (
                true,
                "memory.events",
                "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n",
            ),
        ] {
            let dir = tmp.join(if unified { "v2" } else { "v1" });
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), text).unwrap();
            let set = CgroupSet {
                path: PathBuf::from("/x"),
                dirs: vec![CgroupDir {
                    dir: dir.clone(),
                    mount_point: dir.clone(),
                    name: String::new(),
                    created: vec![],
                    unified,
                    controllers: vec!["memory".into()],
                }],
            };
            assert_eq!(set.oom_kills(), if unified { 2 } else { 3 });
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn creates_and_removes_only_its_own_dirs() {
        let tmp = std::env::temp_dir().join(format!("strata-cg-{}", std::process::id()));
        let mp = tmp.join("pids");
        fs::create_dir_all(mp.join("existing")).unwrap();
        let hs = vec![Hierarchy {
            mount_point: mp.clone(),
            unified: false,
            controllers: vec!["pids".into()],
        }];
        let set = CgroupSet::create(Path::new("/existing/new/leaf"), &hs).unwrap();
        assert_eq!(set.dirs[0].created.len(), 2);
        assert!(mp.join("existing/new/leaf").is_dir());
        set.remove();
        assert!(!mp.join("existing/new").exists());
        assert!(mp.join("existing").is_dir());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
