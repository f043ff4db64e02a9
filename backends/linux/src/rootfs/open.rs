//! Resolving paths inside the rootfs: `openat2(RESOLVE_IN_ROOT)` against an fd of the root,
//! so that `..` stops at the root and a symlink planted in the rootfs (dangling ones
//! included) resolves, and creates what is missing, inside it and never on the host. What is
//! opened is then named by `/proc/self/fd/N` ([`fd_path`]) for mount(2).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{Context, Error, Result};

fn how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// What to create at a missing mount destination.
#[derive(Clone, Copy, PartialEq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

/// Opens `path` (O_PATH) inside `root`, creating missing components as directories (and the
/// last one as `last`). Symlinks resolve as if `root` were `/`; a dangling one is followed by
/// creating its target inside `root`, never on the host.
pub fn open_in_root(root: &OwnedFd, path: &Path, last: Create) -> Result<OwnedFd> {
    let mut rel = relative(path);
    if rel.as_os_str().is_empty() {
        rel = PathBuf::from(".");
    }
    match openat2(root.as_fd(), &rel, how()) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) if last != Create::Nothing => {}
        Err(e) => return Err(e).ctx(|| format!("resolving {} in the rootfs", path.display())),
    }
    // Like path resolution in the kernel: at most 40 symlinks.
    'restart: for _ in 0..40 {
        let comps: Vec<Component> = rel.components().collect();
        let mut prefix = PathBuf::new();
        let mut parent = openat2(root.as_fd(), ".", how()).ctx(|| "opening the rootfs".into())?;
        for (i, comp) in comps.iter().enumerate() {
            prefix.push(comp);
            match openat2(root.as_fd(), &prefix, how()) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(nix::Error::ENOENT) => {}
                Err(e) => {
                    return Err(e).ctx(|| format!("resolving {} in the rootfs", prefix.display()))
                }
            }
            let name = comp.as_os_str();
            if let Ok(target) = nix::fcntl::readlinkat(parent.as_fd(), name) {
                // A dangling symlink: continue from its target, resolved inside the root.
                let target = PathBuf::from(target);
                let mut next = if target.is_absolute() {
                    relative(&target)
                } else {
                    let mut p: PathBuf = comps[..i].iter().collect();
                    p.push(target);
                    p
                };
                next.extend(&comps[i + 1..]);
                rel = next;
                continue 'restart;
            }
            if i + 1 == comps.len() && last == Create::File {
                let f = openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o755),
                )
                .ctx(|| format!("creating {} in the rootfs", path.display()))?;
                drop(f);
            } else {
                match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => {
                        return Err(e)
                            .ctx(|| format!("creating {} in the rootfs", prefix.display()))
                    }
                }
            }
            parent = openat2(root.as_fd(), &prefix, how())
                .ctx(|| format!("resolving {} in the rootfs", prefix.display()))?;
        }
        return Ok(parent);
    }
    Err(Error::Sys {
        what: format!("resolving {} in the rootfs", path.display()),
        error: nix::Error::ELOOP,
    })
}

pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

pub(super) fn open_after_pivot(path: &str) -> Result<Option<OwnedFd>> {
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "opening /".into())?;
    match openat2(root.as_fd(), relative(Path::new(path)).as_path(), how()) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(e) => Err(e).ctx(|| format!("resolving {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_in_root_stays_inside_through_symlinks() {
        let tmp = std::env::temp_dir().join(format!("strata-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("rootfs/outside")).unwrap();
        std::os::unix::fs::symlink("/tmp/../../outside", tmp.join("rootfs/evil")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/dir", tmp.join("rootfs/dangling")).unwrap();
        let root = nix::fcntl::open(
            &tmp.join("rootfs"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let fd = open_in_root(&root, Path::new("/evil/sub"), Create::Dir).unwrap();
        let resolved = std::fs::read_link(fd_path(&fd)).unwrap();
        assert!(resolved.starts_with(tmp.join("rootfs")), "{resolved:?}");
        assert!(tmp.join("rootfs/outside/sub").is_dir());
        let fd = open_in_root(&root, Path::new("/dangling/x"), Create::File).unwrap();
        assert!(std::fs::read_link(fd_path(&fd))
            .unwrap()
            .starts_with(tmp.join("rootfs")));
        assert!(tmp.join("rootfs/nonexistent/dir/x").is_file());
        assert!(!Path::new("/nonexistent").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
