//! The state store: one directory per container under `--root`, a `state.json` replaced
//! atomically (write + rename), and a lock (flock on the directory) that serializes commands
//! on one ID.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use strata_linux::cgroups::CgroupSet;

use crate::config::Kind;

/// The runtime-spec version strata implements: in `state`, in `features`, in the hooks'
/// state and in `spec`, and in what it does where versions differ.
pub const OCI_VERSION: &str = "1.3.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What strata keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot), to tell the init from a reused PID.
    pub pid_start: u64,
    /// `created` until `start` succeeded, then `running`; liveness decides `stopped`.
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub backend: Kind,
    pub cgroups: CgroupSet,
    pub spec: Spec,
    /// Where the record was read from (not stored): liveness looks at the directory too.
    #[serde(skip)]
    pub state_dir: PathBuf,
}

/// runc's `state` output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub annotations: HashMap<String, String>,
}

impl Record {
    /// Status from the live process: an init that is gone (or whose PID was reused) means
    /// `stopped`, however the backend process ended.
    ///
    /// A runtime killed part-way leaves records that say less than happened, and this reads
    /// them truthfully: `creating` only while the creating command still holds the
    /// directory's lock (else the create died: `stopped`), and `created` whose start socket
    /// is gone means `start` reached the init before it died: `running`.
    pub fn live_status(&self) -> Status {
        if self.status == Status::Creating {
            return if creator_alive(&self.state_dir) {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        if self.pid <= 0 || !process_alive(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if self.status == Status::Created
            && !self.state_dir.as_os_str().is_empty()
            && !self.state_dir.join(START_SOCKET).exists()
        {
            return Status::Running;
        }
        if self.status == Status::Running && self.cgroups.is_frozen() {
            return Status::Paused;
        }
        self.status
    }

    /// runc's `state` output; `extra` are the backend's own annotations.
    pub fn oci_state(&self, status: Status, extra: Vec<(String, String)>) -> OciState {
        let mut annotations = self.spec.annotations().clone().unwrap_or_default();
        annotations.insert(
            crate::config::ANNOTATION.to_string(),
            self.backend.name().to_string(),
        );
        annotations.extend(extra);
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations,
        }
    }

    /// The state JSON hooks get on stdin (the runtime spec's State, no more).
    pub fn hook_state(&self, pid: i32, status: &str) -> Vec<u8> {
        hook_state_json(&self.id, pid, status, &self.bundle, &self.spec)
    }
}

pub fn hook_state_json(id: &str, pid: i32, status: &str, bundle: &Path, spec: &Spec) -> Vec<u8> {
    let v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

pub use strata_linux::proc::{proc_stat, process_alive};

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if !ok {
        bail!("invalid container ID {id:?}: use letters, digits, '_', '+', '-' and '.'");
    }
    Ok(())
}

/// A container's directory, locked for the lifetime of this value.
pub struct ContainerDir {
    pub path: PathBuf,
    lock: File,
}

impl ContainerDir {
    /// Makes the directory for a new container; fails if the ID is taken.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .with_context(|| format!("creating the state root {}", root.display()))?;
        let path = root.join(id);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                bail!("container {id:?} already exists")
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        let lock = lock_dir(&path)?;
        // Between our mkdir and our lock a `delete --force` may have removed the directory as
        // debris and another create made a new one under the name: the one we hold must be
        // ours, still at `path`, and empty of state.
        if !same_dir(&lock, &path) || path.join("state.json").exists() {
            bail!("container {id:?} already exists");
        }
        Ok(ContainerDir { path, lock })
    }

    /// Locks an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        let path = root.join(id);
        // The lock must be on the directory that is at `path` once we hold it: the one we
        // waited on may have been removed meanwhile and another made under the name.
        let mut attempts = 0;
        let lock = loop {
            let lock = match lock_dir(&path) {
                Ok(l) => l,
                Err(_) if !path.exists() => bail!("container {id:?} does not exist"),
                Err(e) => return Err(e),
            };
            if same_dir(&lock, &path) {
                break lock;
            }
            attempts += 1;
            if attempts == 10 || !path.exists() {
                bail!("container {id:?} does not exist");
            }
        };
        let dir = ContainerDir { path, lock };
        // A concurrent delete may have removed it while we waited for the lock.
        if !dir.state_file().exists() {
            bail!("container {id:?} does not exist");
        }
        Ok(dir)
    }

    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    pub fn load(&self) -> Result<Record> {
        read_record(&self.state_file())
    }

    /// Replaces state.json atomically: a runtime killed mid-write leaves the old file or the
    /// new one, never a torn one. No fsync: the state root is /run (tmpfs) in real use, and a
    /// machine crash ends every container with it.
    pub fn save(&self, rec: &Record) -> Result<()> {
        self.save_at(rec, "")
    }

    /// `save`, passing fault point `fault` between writing the new file and renaming it.
    pub fn save_at(&self, rec: &Record, fault: &str) -> Result<()> {
        let tmp = self.path.join(".state.json.tmp");
        let data = serde_json::to_vec(rec)?;
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&data)?;
        drop(f);
        strata_linux::fault::point(fault);
        fs::rename(&tmp, self.state_file())
            .with_context(|| format!("replacing {}", self.state_file().display()))?;
        Ok(())
    }

    pub fn lock_fd(&self) -> i32 {
        self.lock.as_raw_fd()
    }

    /// Removes the directory; the lock goes with it.
    pub fn remove(self) -> Result<()> {
        // The state file first: a command waiting on the lock then sees "does not exist".
        let _ = fs::remove_file(self.state_file());
        fs::remove_dir_all(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// Whether the open directory `f` is the one at `path` now.
fn same_dir(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn lock_dir(path: &Path) -> Result<File> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    loop {
        // SAFETY: flock on an fd we own; no pointers.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
}

pub fn read_record(path: &Path) -> Result<Record> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rec: Record =
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?;
    rec.state_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(rec)
}

/// The socket a created init waits on for `start`, in the container's state directory.
pub const START_SOCKET: &str = "start.sock";

/// Whether a command still holds the lock of the container directory `dir` (the one that is
/// creating it). Only meaningful to a process that does not hold that lock itself.
fn creator_alive(dir: &Path) -> bool {
    let Ok(f) = File::open(dir) else {
        return false;
    };
    // SAFETY: flock on an fd we own; no pointers.
    let got = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    // Closing `f` releases the lock if we got it.
    !got
}

/// What a create killed before it wrote state.json leaves behind: its directory. Removed only
/// if no command holds the directory's lock (a create still at work does, and a `delete
/// --force` that found no directory a moment ago must not remove the one it is making) and
/// it still has no state.json once the lock is ours.
pub fn remove_debris(root: &Path, id: &str) {
    let path = root.join(id);
    let Ok(f) = File::open(&path) else {
        return;
    };
    // SAFETY: flock on an fd we own; no pointers.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return;
    }
    if !path.join("state.json").exists() {
        let _ = fs::remove_dir_all(&path);
    }
}

/// Every container under `root`, for `list`; unreadable entries are skipped.
pub fn list(root: &Path) -> Vec<Record> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = rd
        .flatten()
        .filter_map(|e| read_record(&e.path().join("state.json")).ok())
        .collect();
    out.sort_by(|a, b| a.created.cmp(&b.created));
    out
}

pub fn owner_name() -> String {
    let uid = nix::unistd::geteuid().as_raw();
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debris_is_removed_only_when_no_command_holds_it() {
        let root = std::env::temp_dir().join(format!("strata-debris-{}", std::process::id()));
        let dir = ContainerDir::create(&root, "c").unwrap();
        // A create at work: locked, no state.json yet.
        remove_debris(&root, "c");
        assert!(root.join("c").exists(), "removed while its create held it");
        drop(dir);
        remove_debris(&root, "c");
        assert!(!root.join("c").exists(), "debris left");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
