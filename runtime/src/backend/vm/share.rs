//! The VM's share: one host directory through which a container's bind-mounted host
//! directories and files (volumes: Docker's and podman's `-v`, the kubelet's emptyDir,
//! configMap, secret and token volumes, `/etc/hosts` and friends) reach the guest, exported
//! once over virtio-fs (tag `SHARE_TAG`) and bound by the guest's runtime to each destination.
//!
//! The monitor builds it (and exports the rootfs the same way, see `export_rootfs`) in a
//! mount namespace of its own, before the VM's processes exist: a
//! small tmpfs with one entry per volume, each the volume's source bind-mounted there. The
//! file servers (virtiofsd, strata-vmm) inherit that namespace, so they see the binds and
//! nothing else of the host beyond the rootfs; every mount of it ends with the monitor and its
//! children, whatever way they end, so nothing is ever left mounted on the host. The namespace
//! is a slave of the host's: what the host mounts later (a kubelet remounting a volume's
//! tmpfs) still reaches it, and nothing of it reaches the host.
//!
//! What the guest may do there is decided on the host side, where guest root cannot undo it:
//! a read-only volume is a read-only bind (recursively), every bind is nosuid and nodev (a
//! device node in a hostPath volume must not open the host's device for the root file
//! server), and the tmpfs itself is read-only once the entries exist, so the guest cannot
//! fill host memory there.
//!
//! A pod's VM (the CRI sandbox container's) keeps its share open to the pod's other
//! containers: each member's rootfs and volumes are added to the running share (`add`) and
//! taken out when it is deleted (`remove`). The tmpfs is a shared mount in the monitor's
//! namespace, so the file servers' namespaces, copied from it at launch, receive the new binds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{fork, ForkResult};

/// The share's directory, relative to the VM's run directory.
pub const SHARE_DIR: &str = "share";
/// Where the rootfs is exported from, relative to the VM's run directory.
pub const ROOTFS_DIR: &str = "root";

/// A bind mount of the bundle, as the share carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its entry in the share (the guest sees it as `SHARE_PREFIX` + name).
    pub name: String,
    /// The host directory or regular file.
    pub source: PathBuf,
    pub is_dir: bool,
    /// The mount says `ro` (or `rro`): read-only on the host side too.
    pub readonly: bool,
    /// `rbind`: the source's submounts come along.
    pub recursive: bool,
}

/// Kernel filesystems as mountinfo names them: a recursive bind of a host directory (even
/// `/`) brings none of them into the share.
const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "pstore",
    "efivarfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "mqueue",
    "devpts",
    "devtmpfs",
    "hugetlbfs",
    "rpc_pipefs",
    "nsfs",
];

/// Unmounts (in this namespace) every kernel filesystem mounted under `target`, deepest
/// first, so that the file server never reaches one through a volume.
fn strip_kernel_submounts(target: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let prefix = format!("{}/", target.display());
    let mut under: Vec<String> = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            let point = strata_linux::cgroups::unescape_mountinfo(point);
            (point.starts_with(&prefix) && KERNEL_FILESYSTEMS.contains(&fstype)).then_some(point)
        })
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in under {
        umount2(point.as_str(), MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting the kernel filesystem at {point}"))?;
    }
    Ok(())
}

/// Gives the calling process (the monitor) a mount namespace of its own, a slave of the
/// host's. The caller must be single-threaded (unshare(CLONE_NEWNS) refuses a process whose
/// threads share its filesystem context).
pub fn enter_namespace() -> Result<()> {
    let none: Option<&str> = None;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("a mount namespace for the VM's shares")?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .context("making the VM's mount namespace a slave of the host's")
}

/// What a bind placed at `target` turned out to be: not a kernel filesystem, whatever the
/// path named when the bundle was checked (a symlink swapped since).
fn check_mounted(target: &Path, source: &Path) -> Result<()> {
    super::plan::refuse_kernel_fs(target, "bind mount source")
        .with_context(|| format!("{} as mounted", source.display()))
}

/// Exports the rootfs at `target` (in the namespace `enter_namespace` made): a recursive bind
/// without the host kernel's filesystems under it, nosuid, nodev, read-only when asked. The
/// file server serves this, never the bundle's path itself.
pub fn export_rootfs(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    let none: Option<&str> = None;
    let what = || format!("vm backend: sharing the rootfs {}", source.display());
    std::fs::create_dir_all(target).with_context(what)?;
    mount(
        Some(source),
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .with_context(what)?;
    check_mounted(target, source)?;
    strip_kernel_submounts(target).with_context(what)?;
    strata_linux::rootfs::options::restrict_tree(target, readonly).with_context(what)?;
    Ok(())
}

/// Builds the share at `dir`, in the namespace `enter_namespace` made.
pub fn build(dir: &Path, volumes: &[Volume]) -> Result<()> {
    let none: Option<&str> = None;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Entries only: a few inodes' worth.
    mount(
        Some("strata-share"),
        dir,
        Some("tmpfs"),
        locked,
        Some("mode=0755,size=64k"),
    )
    .with_context(|| format!("mounting the share's tmpfs on {}", dir.display()))?;
    // Binds added later (a pod's members) propagate to the file servers' copies.
    mount(none, dir, none, MsFlags::MS_SHARED, none).context("sharing the share's tmpfs")?;
    for v in volumes {
        let what = || {
            format!(
                "vm backend: sharing the bind mount source {}",
                v.source.display()
            )
        };
        let target = dir.join(&v.name);
        if v.is_dir {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        }
        .with_context(what)?;
        let mut flags = MsFlags::MS_BIND;
        if v.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(Some(&v.source), &target, none, flags, none).with_context(what)?;
        check_mounted(&target, &v.source)?;
        strip_kernel_submounts(&target).with_context(what)?;
        strata_linux::rootfs::options::restrict_tree(&target, v.readonly).with_context(what)?;
    }
    seal(dir, true)
}

/// Remounts the share's tmpfs read-only (`sealed`) or writable, for entries to be made.
fn seal(dir: &Path, sealed: bool) -> Result<()> {
    let none: Option<&str> = None;
    let mut flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if sealed {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(none, dir, none, flags, none).context("remounting the share's tmpfs")
}

// open_tree(2) and move_mount(2) flags (include/uapi/linux/mount.h); libc has the syscall
// numbers, nix no wrappers.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached copy of the mount tree at `source` (recursive or not), nosuid, nodev and
/// read-only as asked: what `add` attaches in the monitor's namespace.
fn detached_tree(v: &Volume) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(v.source.as_os_str().as_bytes())?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if v.recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a NUL-terminated path and integer flags; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("open_tree");
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    strata_linux::rootfs::options::restrict_tree_fd(&fd, v.readonly).context("mount_setattr")?;
    Ok(fd)
}

fn attach_tree(tree: &OwnedFd, target: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: an fd of ours, an empty and a NUL-terminated path, integer flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("move_mount");
    }
    Ok(())
}

/// Runs `inside` in a child process that has joined the mount namespace of `monitor` (the
/// pod VM's monitor, whose share is at `dir`), with the share's lock held: two members
/// created at once must not unseal and seal the tmpfs under each other. `before` runs first,
/// still in the caller's namespace (host paths resolve there). The caller must be
/// single-threaded (it forks).
fn in_monitor_namespace<T>(
    monitor: i32,
    lock: &Path,
    before: impl FnOnce() -> Result<T>,
    inside: impl FnOnce(T) -> Result<()>,
) -> Result<()> {
    let ns = File::open(format!("/proc/{monitor}/ns/mnt"))
        .context("the pod VM's mount namespace (is its monitor running?)")?;
    let lock = File::create(lock).context("the share's lock")?;
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the caller is single-threaded; the child only does the mounts below and exits.
    match unsafe { fork() }.context("forking to reach the pod VM's share")? {
        ForkResult::Child => {
            drop(report_r);
            let result = (|| -> Result<()> {
                // SAFETY: flock on an fd of ours.
                if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("locking the share");
                }
                let prepared = before()?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS)
                    .context("joining the pod VM's mount namespace")?;
                inside(prepared)
            })();
            let mut w = File::from(report_w);
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = write!(w, "{e:#}");
                    1
                }
            };
            drop(w);
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let mut message = String::new();
            let _ = File::from(report_r).read_to_string(&mut message);
            let status = nix::sys::wait::waitpid(child, None)?;
            if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                if message.is_empty() {
                    message = format!("{status:?}");
                }
                bail!("{message}");
            }
            Ok(())
        }
    }
}

/// The lock file beside the share (in the VM's run directory, which both namespaces see).
fn lock_of(dir: &Path) -> PathBuf {
    dir.with_extension("lock")
}

/// Adds `volumes` to the running share at `dir` of the VM whose monitor is `monitor`.
pub fn add(monitor: i32, dir: &Path, volumes: &[Volume]) -> Result<()> {
    in_monitor_namespace(
        monitor,
        &lock_of(dir),
        || {
            volumes
                .iter()
                .map(|v| {
                    detached_tree(v).with_context(|| {
                        format!(
                            "vm backend: sharing the bind mount source {}",
                            v.source.display()
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()
        },
        |trees| {
            seal(dir, false)?;
            let made = (|| -> Result<()> {
                for (v, tree) in volumes.iter().zip(&trees) {
                    let target = dir.join(&v.name);
                    if v.is_dir {
                        std::fs::create_dir(&target)
                    } else {
                        std::fs::File::create(&target).map(drop)
                    }
                    .with_context(|| format!("the share's entry {}", v.name))?;
                    attach_tree(tree, &target).with_context(|| {
                        format!(
                            "vm backend: sharing the bind mount source {}",
                            v.source.display()
                        )
                    })?;
                    check_mounted(&target, &v.source)?;
                    strip_kernel_submounts(&target)?;
                }
                Ok(())
            })();
            seal(dir, true)?;
            made
        },
    )
}

/// Takes the entries `names` out of the running share at `dir` (what `add` made; missing
/// ones are skipped).
pub fn remove(monitor: i32, dir: &Path, names: &[String]) -> Result<()> {
    in_monitor_namespace(
        monitor,
        &lock_of(dir),
        || Ok(()),
        |()| {
            for name in names {
                let target = dir.join(name);
                // Every mount stacked there, up to the entry itself.
                while umount2(&target, MntFlags::MNT_DETACH).is_ok() {}
            }
            seal(dir, false)?;
            for name in names {
                let target = dir.join(name);
                let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
            }
            seal(dir, true)
        },
    )
}
