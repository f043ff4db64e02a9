//! The bundle's mounts: each destination resolved inside the rootfs, checked against the
//! /proc rule ([`super::proc_mounts`]), mounted, then given its propagation and recursive
//! attributes; cgroup mounts are laid out here as well. Options are parsed in
//! [`super::options`].
//!
//! Every destination is resolved with `openat2(RESOLVE_IN_ROOT)` against the rootfs and
//! mounted through `/proc/self/fd/N` of the resolved file, so a symlink planted in the rootfs
//! can never place a mount on the host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use super::open::{fd_path, open_in_root, Create};
use super::options::{self, MountOptions};
use super::proc_mounts::{self, Mounted};
use super::tmpcopyup;
use crate::cgroups::CgroupSet;
use crate::error::{Context, Error, Result};
use crate::lsm;

/// Everything the rootfs setup needs to know besides the spec's mounts.
pub struct RootfsContext<'a> {
    /// Canonical.
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_user_ns: bool,
    pub cgroups: Option<&'a CgroupSet>,
    pub new_cgroup_ns: bool,
    /// `linux.mountLabel`, where the host can apply it (see [`lsm::Plan`]).
    pub mount_label: Option<&'a str>,
}

pub fn mount_all(root: &OwnedFd, mounts: &[Mount], ctx: &RootfsContext) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        // The rootfs is the root: a mount on it (also spelled "/.." or "//.") is not one
        // of the container's mounts.
        if proc_mounts::lexical(m.destination()) == Path::new("/") {
            continue;
        }
        let opts = options::for_mount(i, m)?;
        let field = || format!("mounts[{i}] ({})", m.destination().display());
        mount_one(root, m, &opts, ctx, &field).map_err(|e| match e {
            Error::Config { .. } => e,
            other => Error::config(field(), other.to_string()),
        })?;
    }
    Ok(())
}

/// The checks of the bundle's mounts that need nothing built: options, and the /proc rule
/// for what a destination says before symlinks (the init checks where it resolves to).
pub fn check_mounts(mounts: &[Mount]) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let opts = options::for_mount(i, m)?;
        let typ = m.typ().as_deref().unwrap_or("");
        // Whether a bind's source is a procfs is for the init to find out.
        let what = Mounted::new(options::is_bind(m, &opts), typ, || true);
        proc_mounts::check_destination(&proc_mounts::lexical(m.destination()), what).map_err(
            |e| Error::config(format!("mounts[{i}] ({})", m.destination().display()), e),
        )?;
    }
    Ok(())
}

/// Where `fd` is, as a path inside the rootfs.
fn path_in_rootfs(fd: &OwnedFd, rootfs: &Path) -> Result<PathBuf> {
    let host = std::fs::read_link(fd_path(fd)).ctx(|| "reading a mount point's path".into())?;
    let rel = host.strip_prefix(rootfs).map_err(|_| {
        Error::config(
            "mounts.destination",
            format!("{} resolves outside the rootfs", host.display()),
        )
    })?;
    Ok(Path::new("/").join(rel))
}

/// Where an opened destination is in the container. Never its root: a mount there (by a
/// symlink to "/", say) would cover the whole rootfs, which is the bundle's `root`.
fn resolved_destination(
    target: &OwnedFd,
    ctx: &RootfsContext,
    field: &dyn Fn() -> String,
) -> Result<PathBuf> {
    let inside = path_in_rootfs(target, ctx.rootfs)?;
    if inside == Path::new("/") {
        return Err(Error::config(
            field(),
            "the destination resolves to the container's root",
        ));
    }
    Ok(inside)
}

fn mount_one(
    root: &OwnedFd,
    m: &Mount,
    opts: &MountOptions,
    ctx: &RootfsContext,
    field: &dyn Fn() -> String,
) -> Result<()> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(Error::config(
            "mounts.destination",
            format!("{} is not an absolute path", dest.display()),
        ));
    }
    let typ = m.typ().as_deref().unwrap_or("");
    let is_bind = options::is_bind(m, opts);
    let src = m.source().as_ref().map(|s| {
        if s.is_absolute() || !is_bind {
            s.clone()
        } else {
            ctx.bundle.join(s)
        }
    });
    let what = Mounted::new(is_bind, typ, || {
        src.as_deref().is_some_and(proc_mounts::on_procfs)
    });
    let proc_rule = |path: &Path, what| {
        proc_mounts::check_destination(path, what).map_err(|e| Error::config(field(), e))
    };
    proc_rule(&proc_mounts::lexical(dest), what)?;
    let plain_dir = proc_mounts::needs_plain_directory(typ, dest);

    if is_bind {
        let src = src.ok_or_else(|| Error::config(field(), "a bind mount needs a source"))?;
        let meta = std::fs::metadata(&src).ctx(|| format!("bind source {}", src.display()))?;
        let target = if plain_dir {
            proc_mounts::open_plain_directory(root, dest, "a bind mount", field)?
        } else {
            let kind = if meta.is_dir() {
                Create::Dir
            } else {
                Create::File
            };
            open_in_root(root, dest, kind)?
        };
        proc_rule(&resolved_destination(&target, ctx, field)?, what)?;
        let tpath = fd_path(&target);
        let bind = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
        mount(Some(&src), tpath.as_str(), None::<&str>, bind, None::<&str>)
            .ctx(|| format!("bind-mounting {}", src.display()))?;
        let rest = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            // The bind mount is now on the target; reopen to reach the new mount's root.
            let target = open_in_root(root, dest, Create::Nothing)?;
            remount_bind(&fd_path(&target), rest)?;
        }
        return finish(root, dest, opts);
    }

    match typ {
        "cgroup" | "cgroup2" => {
            // Without cgroups nothing is mounted, and nothing is there to finish.
            if mount_cgroup(root, m, opts, ctx)? {
                finish(root, dest, opts)?;
            }
            return Ok(());
        }
        "" => {
            return Err(Error::config(
                "mounts.type",
                format!("mount at {} has no type", dest.display()),
            ))
        }
        _ => {}
    }
    let target = if plain_dir {
        proc_mounts::open_plain_directory(root, dest, typ, field)?
    } else {
        open_in_root(root, dest, Create::Dir)?
    };
    proc_rule(&resolved_destination(&target, ctx, field)?, what)?;
    let tpath = fd_path(&target);
    let src = src
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    // What the tmpfs will cover, still reachable through this fd once it does.
    let copy_from = if opts.tmpcopyup {
        Some(
            nix::fcntl::openat(
                target.as_fd(),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("opening {} for tmpcopyup", dest.display()))?,
        )
    } else {
        None
    };
    // A copy-up writes into the new tmpfs first; read-only comes after.
    let flags = if copy_from.is_some() {
        opts.flags - MsFlags::MS_RDONLY
    } else {
        opts.flags
    };
    let data = lsm::mount_data(typ, &opts.data, ctx.mount_label).join(",");
    let data = (!data.is_empty()).then_some(data);
    let res = mount(
        Some(src.as_str()),
        tpath.as_str(),
        Some(typ),
        flags,
        data.as_deref(),
    );
    match res {
        Ok(()) => {}
        // A user namespace without its own network namespace may not mount sysfs; the
        // host's /sys bound read-only is what runc gives then too.
        Err(nix::Error::EPERM) if typ == "sysfs" && ctx.in_user_ns => {
            mount(
                Some("/sys"),
                tpath.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx(|| "binding /sys".into())?;
            let t = open_in_root(root, dest, Create::Nothing)?;
            remount_bind(&fd_path(&t), opts.flags | MsFlags::MS_RDONLY)?;
        }
        Err(e) => {
            return Err(e).ctx(|| format!("mounting {typ} at {}", dest.display()));
        }
    }
    if let Some(from) = copy_from {
        let t = open_in_root(root, dest, Create::Nothing)?;
        let to = nix::fcntl::openat(
            t.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("opening the tmpfs at {}", dest.display()))?;
        tmpcopyup::copy_dir(&from, &to)?;
        if opts.flags.contains(MsFlags::MS_RDONLY) {
            options::make_mount_readonly(&t)
                .ctx(|| format!("making the tmpfs at {} read-only", dest.display()))?;
        }
    }
    if typ == "mqueue" {
        if let Some(label) = ctx.mount_label {
            let t = open_in_root(root, dest, Create::Nothing)?;
            lsm::label_file(&t, label)?;
        }
    }
    finish(root, dest, opts)
}

/// The steps every kind of mount ends with, on the new mount: propagation changes, then the
/// recursive attributes.
fn finish(root: &OwnedFd, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.propagation.is_empty() && opts.recursive.is_empty() {
        return Ok(());
    }
    let t = open_in_root(root, dest, Create::Nothing)?;
    apply_propagation(&fd_path(&t), &opts.propagation)?;
    opts.recursive.apply(&t)
}

/// Remounts a bind mount with `flags`; inside a user namespace the kernel insists that the
/// locked flags of the source mount stay, so they are added on EPERM.
pub(super) fn remount_bind(target: &str, flags: MsFlags) -> Result<()> {
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(
        None::<&str>,
        target,
        None::<&str>,
        base | flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            let st = nix::sys::statvfs::statvfs(target).ctx(|| format!("statvfs {target}"))?;
            let locked = MsFlags::from_bits_truncate(st.flags().bits() as libc::c_ulong)
                & (MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_RDONLY);
            mount(
                None::<&str>,
                target,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .ctx(|| "remounting a bind mount".into())
        }
        Err(e) => Err(e).ctx(|| "remounting a bind mount".into()),
    }
}

fn apply_propagation(target: &str, props: &[MsFlags]) -> Result<()> {
    for p in props {
        mount(None::<&str>, target, None::<&str>, *p, None::<&str>)
            .ctx(|| "changing mount propagation".into())?;
    }
    Ok(())
}

/// cgroup mounts: on a v2-only host a cgroup2 mount (own cgroup namespace) or a bind of the
/// container's cgroup; on v1/hybrid a tmpfs holding a bind of the container's cgroup from
/// each hierarchy, as runc lays it out. False when there are no cgroups to mount.
fn mount_cgroup(
    root: &OwnedFd,
    m: &Mount,
    opts: &MountOptions,
    ctx: &RootfsContext,
) -> Result<bool> {
    let dest = m.destination();
    let Some(set) = ctx.cgroups else {
        return Ok(false);
    };
    let target = open_in_root(root, dest, Create::Dir)?;
    resolved_destination(&target, ctx, &|| format!("mounts ({})", dest.display()))?;
    let tpath = fd_path(&target);
    let only_v2 = set.dirs.len() == 1 && set.dirs[0].name.is_empty();
    let leaf_flags = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if only_v2 {
        if ctx.new_cgroup_ns {
            mount(
                Some("cgroup2"),
                tpath.as_str(),
                Some("cgroup2"),
                leaf_flags,
                None::<&str>,
            )
            .ctx(|| "mounting cgroup2".into())?;
        } else {
            mount(
                Some(&set.dirs[0].dir),
                tpath.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| "binding the container's cgroup".into())?;
            let t = open_in_root(root, dest, Create::Nothing)?;
            remount_bind(&fd_path(&t), leaf_flags)?;
        }
        return Ok(true);
    }
    mount(
        Some("tmpfs"),
        tpath.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .ctx(|| "mounting the cgroup tmpfs".into())?;
    for d in &set.dirs {
        if d.name.is_empty() {
            continue;
        }
        let sub = open_in_root(root, &dest.join(&d.name), Create::Dir)?;
        mount(
            Some(&d.dir),
            fd_path(&sub).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("binding cgroup {}", d.dir.display()))?;
        let sub = open_in_root(root, &dest.join(&d.name), Create::Nothing)?;
        remount_bind(&fd_path(&sub), leaf_flags)?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let t = open_in_root(root, dest, Create::Nothing)?;
        mount(
            None::<&str>,
            fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .ctx(|| "making the cgroup tmpfs read-only".into())?;
    }
    Ok(true)
}
