//! Where procfs and sysfs may go, and what may go over /proc.
//!
//! A `/proc` or `/sys` that is a symlink in the rootfs would carry the kernel's files
//! wherever it points, and the runtime's later writes to /proc (LSM labels, sysctls) to
//! whatever a container put there (CVE-2019-19921, CVE-2023-27561): such a rootfs is refused.
//! A mount over /proc, or over a file in it, can undo what /proc protects (a bind over
//! /proc/self/attr or /proc/sys): only a procfs goes on /proc, and under it only the files
//! lxcfs emulates.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use crate::error::{Context, Error, Result};

/// The files under /proc that may be mounted over: runc's list (libcontainer/rootfs_linux.go
/// as of 2025), which dropped /proc/net/dev (a per-process link that never worked) and added
/// /proc/sys/crypto/fips_enabled.
pub const OVERMOUNTABLE: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// `path` with `.` and `..` folded away, as seen from the container's `/` (`..` stops there).
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// What a mount puts at its destination, as far as the /proc rule cares.
#[derive(Clone, Copy)]
pub enum Mounted {
    /// A new procfs (type proc).
    Procfs,
    /// A bind mount whose source is (or is not) on a procfs.
    Bind {
        source_is_procfs: bool,
    },
    Other,
}

impl Mounted {
    /// `source_is_procfs` is asked only for a bind mount.
    pub fn new(is_bind: bool, typ: &str, source_is_procfs: impl FnOnce() -> bool) -> Mounted {
        if is_bind {
            Mounted::Bind {
                source_is_procfs: source_is_procfs(),
            }
        } else if typ == "proc" {
            Mounted::Procfs
        } else {
            Mounted::Other
        }
    }
}

/// The /proc rule for a destination path inside the container (already folded or resolved).
pub fn check_destination(dest: &Path, what: Mounted) -> Result<(), String> {
    let Ok(rest) = dest.strip_prefix("/proc") else {
        return Ok(());
    };
    if rest.as_os_str().is_empty() {
        return match what {
            Mounted::Procfs
            | Mounted::Bind {
                source_is_procfs: true,
            } => Ok(()),
            _ => Err("only a procfs (type proc) may be mounted on /proc".into()),
        };
    }
    if OVERMOUNTABLE.iter().any(|p| Path::new(p) == dest) {
        return Ok(());
    }
    Err(format!(
        "{} is under /proc: only {} may be mounted over there",
        dest.display(),
        OVERMOUNTABLE.join(", ")
    ))
}

/// Whether `path` (on the host) is on a procfs.
pub fn on_procfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether a mount of type `typ` at `dest` must be on an ordinary directory reached without
/// any symlink.
pub fn needs_plain_directory(typ: &str, dest: &Path) -> bool {
    matches!(typ, "proc" | "sysfs") || matches!(lexical(dest).to_str(), Some("/proc" | "/sys"))
}

/// Opens (O_PATH) the directory `dest` inside `root` for a mount of `typ`, creating what is
/// missing, refusing a symlink anywhere on the way and anything but a directory at the end.
/// `field` names the mount in errors.
pub fn open_plain_directory(
    root: &OwnedFd,
    dest: &Path,
    typ: &str,
    field: &dyn Fn() -> String,
) -> Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let mut prefix = PathBuf::from(".");
    let mut dir = openat2(root.as_fd(), ".", how).ctx(|| "opening the rootfs".into())?;
    for name in lexical(dest).components().skip(1) {
        prefix.push(name);
        dir = match openat2(root.as_fd(), &prefix, how) {
            Ok(fd) => fd,
            Err(nix::Error::ELOOP) => {
                return Err(Error::config(
                    field(),
                    format!(
                        "filesystem {typ:?} must be mounted on ordinary directory: /{} is a symlink in the rootfs",
                        prefix.strip_prefix(".").unwrap_or(&prefix).display()
                    ),
                ))
            }
            Err(nix::Error::ENOENT) => {
                match mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => {
                        return Err(e).ctx(|| format!("creating {} in the rootfs", dest.display()))
                    }
                }
                openat2(root.as_fd(), &prefix, how).map_err(|e| {
                    Error::config(field(), format!("resolving {}: {e}", dest.display()))
                })?
            }
            Err(e) => return Err(e).ctx(|| format!("resolving {} in the rootfs", dest.display())),
        };
    }
    let st = fstat(dir.as_fd()).ctx(|| format!("stat of {}", dest.display()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Err(Error::config(
            field(),
            format!(
                "filesystem {typ:?} must be mounted on ordinary directory: {} is not a directory",
                dest.display()
            ),
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_dots_without_leaving_the_root() {
        assert_eq!(
            lexical(Path::new("/proc/../proc/./sys")),
            Path::new("/proc/sys")
        );
        assert_eq!(lexical(Path::new("/../../proc")), Path::new("/proc"));
        assert_eq!(lexical(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn only_procfs_on_proc_and_only_the_lxcfs_files_under_it() {
        let p = |s: &str| PathBuf::from(s);
        assert!(check_destination(&p("/proc"), Mounted::Procfs).is_ok());
        assert!(check_destination(
            &p("/proc"),
            Mounted::Bind {
                source_is_procfs: true
            }
        )
        .is_ok());
        assert!(check_destination(
            &p("/proc"),
            Mounted::Bind {
                source_is_procfs: false
            }
        )
        .is_err());
        assert!(check_destination(&p("/proc"), Mounted::Other).is_err());
        for ok in [
            "/proc/meminfo",
            "/proc/sys/kernel/ns_last_pid",
            "/procfoo",
            "/tmp/proc",
        ] {
            assert!(check_destination(&p(ok), Mounted::Other).is_ok(), "{ok}");
        }
        for bad in [
            "/proc/sys",
            "/proc/self/attr",
            "/proc/1/attr/exec",
            "/proc/net/dev",
            "/proc/sys/kernel",
        ] {
            let e = check_destination(&p(bad), Mounted::Other).unwrap_err();
            assert!(e.contains(bad) && e.contains("/proc/meminfo"), "{e}");
        }
    }

    #[test]
    fn proc_and_sys_need_a_plain_directory() {
        assert!(needs_plain_directory("proc", Path::new("/x")));
        assert!(needs_plain_directory("tmpfs", Path::new("/sys/")));
        assert!(needs_plain_directory("bind", Path::new("/./proc")));
        assert!(!needs_plain_directory("tmpfs", Path::new("/sys/fs")));

        let tmp = std::env::temp_dir().join(format!("strata-procdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("rootfs/tmp/p")).unwrap();
        std::os::unix::fs::symlink("/tmp/p", tmp.join("rootfs/proc")).unwrap();
        std::os::unix::fs::symlink("/nowhere", tmp.join("rootfs/sys")).unwrap();
        std::fs::write(tmp.join("rootfs/file"), "").unwrap();
        let root = nix::fcntl::open(
            &tmp.join("rootfs"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let f = || "mounts[0]".to_string();
        let e = open_plain_directory(&root, Path::new("/proc"), "proc", &f).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = open_plain_directory(&root, Path::new("/sys/kernel"), "sysfs", &f).unwrap_err();
        assert!(e.to_string().contains("/sys is a symlink"), "{e}");
        assert!(!tmp.join("rootfs/nowhere").exists());
        assert!(open_plain_directory(&root, Path::new("/file"), "proc", &f).is_err());
        open_plain_directory(&root, Path::new("/new/proc"), "proc", &f).unwrap();
        assert!(tmp.join("rootfs/new/proc").is_dir());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
