//! The guest as a system: what PID 1 mounts before serving, and powering off.

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use crate::Config;

/// Mounts what a container host needs, and what the host shares over virtio-fs: the rootfs,
/// and the share of bind-mounted directories and files.
pub fn setup_guest(cfg: &Config) -> Result<()> {
    let none: Option<&str> = None;
    let m =
        |src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>| -> Result<()> {
            std::fs::create_dir_all(target)?;
            mount(Some(src), target, Some(fstype), flags, data)
                .with_context(|| format!("mounting {fstype} on {target}"))
        };
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m("proc", "/proc", "proc", hard, none)?;
    m("sysfs", "/sys", "sysfs", hard, none)?;
    m(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    )?;
    m(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    m("cgroup2", "/sys/fs/cgroup", "cgroup2", hard, none)?;
    // Controllers for the containers' cgroups; those the kernel lacks are simply absent.
    for c in ["cpu", "cpuset", "memory", "pids", "io"] {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("+{c}"));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let tag = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("strata.rootfs="))
        .context("no strata.rootfs=<tag> on the kernel command line")?;
    std::fs::create_dir_all(&cfg.rootfs)?;
    mount(
        Some(tag),
        &cfg.rootfs,
        Some("virtiofs"),
        MsFlags::empty(),
        none,
    )
    .with_context(|| format!("mounting the virtio-fs rootfs {tag:?}"))?;
    // The host's bind-mounted directories and files, when the container has any. Device
    // nodes there mean nothing to the container (the host side refuses to open them too).
    if let Some(tag) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("strata.share="))
    {
        std::fs::create_dir_all(&cfg.share)?;
        mount(
            Some(tag),
            &cfg.share,
            Some("virtiofs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            none,
        )
        .with_context(|| format!("mounting the virtio-fs share {tag:?}"))?;
    }
    Ok(())
}

/// Ends the guest: the VMM (or QEMU with -no-reboot) exits when the guest resets.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1);
}
