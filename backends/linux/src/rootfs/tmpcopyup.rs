//! `tmpcopyup`: a tmpfs that starts with what the image had at its destination, so that
//! podman's `--tmpfs /run` or `--systemd` mounts do not hide the image's files there.
//!
//! The source is read through a directory fd opened before the tmpfs covers it; an fd keeps
//! reaching the directory under a mount, so no temporary mount point or move is needed.
//! Regular files, directories, symlinks and device/fifo nodes are copied with their mode,
//! owner and times; hard links become separate copies, and extended attributes are not
//! copied (runc's copy-up does not keep them either).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::error::{Context, Result};

/// Deeper trees than this in a tmpfs destination are surely not an image's /run or /tmp.
const MAX_DEPTH: usize = 128;

/// Copies the contents of directory `from` into directory `to`.
pub fn copy_dir(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
    let mut failed = PathBuf::new();
    copy_entries(from, to, Path::new(""), 0, &mut failed)
        .ctx(|| format!("tmpcopyup: copying {}", failed.display()))
}

fn open_dir(parent: &OwnedFd, name: &CStr) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Copies directory `from` (at `rel` under the copy's root) into `to`; on failure `failed`
/// names the entry.
fn copy_entries(
    from: &OwnedFd,
    to: &OwnedFd,
    rel: &Path,
    depth: usize,
    failed: &mut PathBuf,
) -> nix::Result<()> {
    *failed = rel.to_path_buf();
    if depth > MAX_DEPTH {
        return Err(nix::Error::ELOOP);
    }
    let mut dir = Dir::from_fd(open_dir(from, c".")?)?;
    let names: Vec<CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let rel = rel.join(OsStr::from_bytes(name.as_bytes()));
        *failed = rel.clone();
        let st = fstatat(from.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        match kind {
            SFlag::S_IFDIR => {
                mkdirat(to.as_fd(), name.as_c_str(), Mode::from_bits_truncate(0o700))?;
                let (src, dst) = (open_dir(from, &name)?, open_dir(to, &name)?);
                copy_entries(&src, &dst, &rel, depth + 1, failed)?;
                *failed = rel.clone();
            }
            SFlag::S_IFREG => copy_file(from, to, &name)?,
            SFlag::S_IFLNK => {
                let target = readlinkat(from.as_fd(), name.as_c_str())?;
                symlinkat(target.as_os_str(), to.as_fd(), name.as_c_str())?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
                let perm = Mode::from_bits_truncate(0o600);
                mknodat(to.as_fd(), name.as_c_str(), kind, perm, st.st_rdev)?;
            }
            _ => continue,
        }
        keep_metadata(to, &name, kind, &st)?;
    }
    Ok(())
}

fn copy_file(from: &OwnedFd, to: &OwnedFd, name: &CStr) -> nix::Result<()> {
    let src = openat(
        from.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dst = openat(
        to.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
    std::io::copy(&mut src, &mut dst)
        .map(drop)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Owner, then mode (a chown clears set-id bits), then times, as the source had them.
fn keep_metadata(to: &OwnedFd, name: &CStr, kind: SFlag, st: &FileStat) -> nix::Result<()> {
    let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
    match fchownat(
        to.as_fd(),
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        // An owner the container's user namespace does not map stays the namespace's root.
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(e),
    }
    if kind != SFlag::S_IFLNK {
        // Not a symlink, and made by us in a tmpfs no process uses yet: following is safe.
        fchmodat(to.as_fd(), name, perm, FchmodatFlags::FollowSymlink)?;
    }
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    utimensat(
        to.as_fd(),
        name,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn copies_files_dirs_links_and_modes() {
        let tmp = std::env::temp_dir().join(format!("strata-copyup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let (src, dst) = (tmp.join("src"), tmp.join("dst"));
        std::fs::create_dir_all(src.join("lock/sub")).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("lock/sub/file"), "content").unwrap();
        std::fs::set_permissions(src.join("lock"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::set_permissions(
            src.join("lock/sub/file"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("../elsewhere", src.join("link")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let open = |p: &std::path::Path| {
            nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
        };
        copy_dir(&open(&src), &open(&dst)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("lock/sub/file")).unwrap(),
            "content"
        );
        let mode = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("lock"), 0o1777);
        assert_eq!(mode("lock/sub/file"), 0o640);
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            std::path::Path::new("../elsewhere")
        );
        assert!(std::fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            std::fs::metadata(dst.join("lock/sub/file"))
                .unwrap()
                .mtime(),
            std::fs::metadata(src.join("lock/sub/file"))
                .unwrap()
                .mtime()
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
