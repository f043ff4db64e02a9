//! The rootfs becoming the container's `/`: the propagation of `/` (`linux.rootfsPropagation`),
//! the rootfs made a mount point of its own, then pivot_root (or a move with `--no-pivot`)
//! and the old root detached.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::options;
use crate::error::{Context, Error, Result};

/// Parses `linux.rootfsPropagation`; the default keeps host mount events flowing in but none
/// flowing out.
pub fn rootfs_propagation(value: Option<&str>) -> Result<MsFlags> {
    match value {
        None | Some("") => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(v) => options::propagation(v).ok_or_else(|| {
            Error::config(
                "linux.rootfsPropagation",
                format!("unknown propagation {v:?}"),
            )
        }),
    }
}

/// Makes the rootfs a mount point of its own under the requested propagation, and returns an
/// fd for it.
pub fn prepare_root(rootfs: &Path, propagation: MsFlags) -> Result<OwnedFd> {
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .ctx(|| "setting the propagation of / (linux.rootfsPropagation)".into())?;
    // pivot_root refuses a rootfs whose parent mount is shared (rootfsPropagation
    // "shared"/"rshared"); only that one mount is made private, as runc does.
    if propagation.contains(MsFlags::MS_SHARED) {
        if let Some(parent) = mount_point_of(rootfs.parent().unwrap_or(Path::new("/")))? {
            mount(
                None::<&str>,
                &parent,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .ctx(|| format!("making {} private", parent.display()))?;
        }
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind-mounting the rootfs {} onto itself", rootfs.display()))?;
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening the rootfs {}", rootfs.display()))
}

/// The mount point (from mountinfo) that holds `path`.
fn mount_point_of(path: &Path) -> Result<Option<PathBuf>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading mountinfo".into())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(mp.replace("\\040", " ")))
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len()))
}

/// Makes the rootfs `/`, leaving nothing of the host reachable.
pub fn pivot_root(root: &OwnedFd, rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        nix::unistd::chdir(rootfs).ctx(|| "chdir to the rootfs".into())?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| "moving the rootfs to / (--no-pivot)".into())?;
        nix::unistd::chroot(".").ctx(|| "chroot to the rootfs (--no-pivot)".into())?;
    } else {
        nix::unistd::fchdir(root.as_fd()).ctx(|| "chdir to the rootfs".into())?;
        // Stacking the old root under the new one and detaching it avoids needing a
        // directory for it inside the rootfs.
        nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "making the old root a slave".into())?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root".into())?;
    }
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_propagation_values() {
        assert_eq!(
            rootfs_propagation(None).unwrap(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert_eq!(
            rootfs_propagation(Some("private")).unwrap(),
            MsFlags::MS_PRIVATE
        );
        assert!(rootfs_propagation(Some("sideways")).is_err());
    }
}
