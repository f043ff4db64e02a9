//! After pivot_root: `linux.maskedPaths` hidden, `linux.readonlyPaths` and `root.readonly`
//! made read-only. Each path is resolved inside the new root (`RESOLVE_IN_ROOT`, no /proc
//! magic links), as the mounts were.

use std::os::fd::{AsFd, OwnedFd};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, SFlag};

use super::mount::remount_bind;
use super::open::{fd_path, open_after_pivot};
use crate::error::{Error, Result};

fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd.as_fd())
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .unwrap_or(false)
}

/// After pivot_root: hide `maskedPaths`.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let Some(fd) = open_after_pivot(p)? else {
            continue;
        };
        let target = fd_path(&fd);
        let res = if is_dir(&fd) {
            mount(
                Some("tmpfs"),
                target.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                target.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        res.map_err(|e| Error::config("linux.maskedPaths", format!("masking {p}: {e}")))?;
    }
    Ok(())
}

/// After pivot_root: make `readonlyPaths` read-only.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let Some(fd) = open_after_pivot(p)? else {
            continue;
        };
        let target = fd_path(&fd);
        mount(
            Some(target.as_str()),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::config("linux.readonlyPaths", format!("binding {p}: {e}")))?;
        let fd = open_after_pivot(p)?
            .ok_or_else(|| Error::config("linux.readonlyPaths", format!("{p} vanished")))?;
        remount_bind(
            &fd_path(&fd),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )
        .map_err(|e| Error::config("linux.readonlyPaths", format!("{p}: {e}")))?;
    }
    Ok(())
}

/// After pivot_root: `root.readonly`.
pub fn readonly_root() -> Result<()> {
    remount_bind("/", MsFlags::MS_RDONLY).map_err(|e| Error::config("root.readonly", e.to_string()))
}
