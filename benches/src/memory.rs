//! Memory as a user would measure it: PSS of a container's host processes, a CLI's peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// Processes of one container: those in a cgroup named after it, those whose root is the
/// bundle's rootfs, and any runtime helper whose command line names the container (runsc's
/// sandbox and gofer, a supervisor, a VMM).
pub(crate) fn container_pids(rootfs: &Path, id: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let in_cgroup = cgroup.lines().any(|l| l.split('/').any(|part| part == id));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let named = cmdline.contains(id) && !cmdline.contains(" state ");
            in_cgroup || root.starts_with(rootfs) || named
        })
        .collect()
}

pub(crate) fn container_pss_kib(rootfs: &Path, id: &str) -> u64 {
    container_pids(rootfs, id)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// The peak RSS helper (benches/maxrss.c), built with the bundles.
pub(crate) static MAXRSS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Peak RSS of a command, measured by a small static helper that forks it (see maxrss.c for
/// why not from here).
pub fn max_rss_kib(cmd: Command) -> Result<u64> {
    let helper = MAXRSS.get().context("the peak RSS helper is not built")?;
    let out = Command::new(helper)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("peak RSS of {:?}: {text:?}", cmd.get_program()))
}
