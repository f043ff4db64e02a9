//! A runtime under test: how to call it, in a private mount namespace where the peers need one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

/// One runtime under test: how to call it.
#[derive(Clone, Serialize)]
pub struct Runtime {
    pub name: String,
    pub(crate) bin: PathBuf,
    pub(crate) global: Vec<String>,
    #[serde(skip)]
    pub(crate) root: PathBuf,
    /// runsc only accepts `delete --force` and needs its network switched off.
    pub(crate) gvisor: bool,
    /// Runs in the host's mount namespace, with its cgroup v2 mount: the sandbox's network
    /// policy is held by cgroup v2 programs, and the sandbox refuses to run without them.
    pub(crate) host_mounts: bool,
}

/// The mount namespace the harness started in, kept open before it leaves it.
pub(crate) static HOST_MOUNTS: std::sync::OnceLock<std::os::fd::OwnedFd> =
    std::sync::OnceLock::new();

impl Runtime {
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(&self.global).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(ns) = HOST_MOUNTS.get().filter(|_| self.host_mounts) {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: between fork and exec the child makes one setns(2) call on an fd that
            // stays open for the harness's life; nothing else.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    /// Runs to completion. Errors go through a file, not a pipe: a created container keeps
    /// the runtime's stderr open long after the runtime exits.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<()> {
        let errfile = self
            .root
            .with_extension(format!("stderr-{}", std::process::id()));
        let f = std::fs::File::create(&errfile)?;
        let status = self
            .cmd(args)
            .stderr(f)
            .status()
            .with_context(|| format!("{} {args:?}", self.name))?;
        if !status.success() {
            let err = std::fs::read_to_string(&errfile).unwrap_or_default();
            bail!("{} {args:?}: {}", self.name, err.trim());
        }
        Ok(())
    }

    pub(crate) fn timed(&self, args: &[&str]) -> Result<Duration> {
        let t = Instant::now();
        self.ok(args)?;
        Ok(t.elapsed())
    }

    pub(crate) fn status(&self, id: &str) -> String {
        let out = self.cmd(&["state", id]).stdout(Stdio::piped()).output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub(crate) fn wait_stopped(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id) != "stopped" {
            if Instant::now() > deadline {
                bail!("{}: {id} did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(crate) fn force_delete(&self, id: &str) -> Result<Duration> {
        self.timed(&["delete", "--force", id])
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// crun 1.8 refuses this host's hybrid cgroups while the cgroup2 mount is there; every
/// runtime runs in a private mount namespace without it, so they are measured alike.
pub(crate) fn private_mount_namespace() -> Result<Vec<String>> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let host = std::fs::File::open("/proc/self/ns/mnt").context("/proc/self/ns/mnt")?;
    let _ = HOST_MOUNTS.set(host.into());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    let mut notes = vec!["every runtime runs in a private mount namespace".to_string()];
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH)
            .context("unmounting /sys/fs/cgroup/unified")?;
        notes.push("with /sys/fs/cgroup/unified unmounted (crun 1.8 refuses this host's hybrid layout otherwise), except for strata-sandbox, which runs in the host's mount namespace: its network policy is held by cgroup v2 programs".into());
    }
    Ok(notes)
}
