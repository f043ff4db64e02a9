//! The container's /dev: the default device nodes, `linux.devices`, and the usual links
//! (/dev/fd, /dev/ptmx, ...), all made through fds resolved inside the rootfs.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::open::{fd_path, open_in_root, Create};
use crate::error::{Context, Error, Result};

/// Whether the bundle mounts its own /dev (tmpfs): then strata creates the device nodes.
pub fn sets_up_dev(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && !m
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
            && m.typ().as_deref() != Some("bind")
    })
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The default devices every container gets, then `linux.devices`.
pub fn create_devices(
    root: &OwnedFd,
    devices: &[LinuxDevice],
    setup_dev: bool,
    in_user_ns: bool,
) -> Result<()> {
    if setup_dev {
        for (path, major, minor) in DEFAULT_DEVICES {
            if devices.iter().any(|d| d.path() == Path::new(path)) {
                continue;
            }
            make_node(
                root,
                Path::new(path),
                SFlag::S_IFCHR,
                major,
                minor,
                0o666,
                None,
                None,
                in_user_ns,
            )?;
        }
    }
    for (i, d) in devices.iter().enumerate() {
        let field = format!("linux.devices[{i}] ({})", d.path().display());
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::config(
                    field,
                    "type \"a\" is only valid in cgroup device rules",
                ))
            }
        };
        // Component-wise, "/dev/../etc/shadow" starts with "/dev": ".." is refused outright.
        let p = d.path();
        if !p.is_absolute()
            || !p.starts_with("/dev")
            || p == std::path::Path::new("/dev")
            || p.components().any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::config(
                field,
                "path must be absolute and under /dev, without \"..\"",
            ));
        }
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        make_node(
            root,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            mode,
            d.uid(),
            d.gid(),
            in_user_ns,
        )
        .map_err(|e| Error::config(&field, e.to_string()))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    root: &OwnedFd,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    in_user_ns: bool,
) -> Result<()> {
    let parent_path = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| {
        Error::config(
            "linux.devices",
            format!("{} has no file name", path.display()),
        )
    })?;
    let parent = open_in_root(root, parent_path, Create::Dir)?;
    if in_user_ns {
        // mknod is not allowed in a user namespace: bind the host's node instead.
        let target = open_in_root(root, path, Create::File)?;
        return mount(
            Some(path),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("binding device {}", path.display()));
    }
    let _ = nix::unistd::unlinkat(
        parent.as_fd(),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    mknodat(
        parent.as_fd(),
        name,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .ctx(|| format!("mknod {}", path.display()))?;
    let node = open_in_root(root, path, Create::Nothing)?;
    // mknod's mode is filtered by the umask; chmod makes it exact.
    let cpath =
        CString::new(fd_path(&node)).map_err(|e| Error::config("linux.devices", e.to_string()))?;
    // SAFETY: cpath is a valid NUL-terminated string naming the node we just made.
    if unsafe { libc::chmod(cpath.as_ptr(), mode) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("chmod {}", path.display()));
    }
    if uid.is_some() || gid.is_some() {
        // SAFETY: as above; -1 (u32::MAX) leaves an id unchanged.
        if unsafe {
            libc::chown(
                cpath.as_ptr(),
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error())
                .ctx(|| format!("chown {}", path.display()));
        }
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx as links, as every runtime makes them.
pub fn dev_symlinks(root: &OwnedFd, has_devpts: bool) -> Result<()> {
    let dev = open_in_root(root, Path::new("/dev"), Create::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if has_devpts {
        let _ = nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        match nix::unistd::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("creating /dev/{name}")),
        }
    }
    Ok(())
}
