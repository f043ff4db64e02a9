//! The lifecycle commands, backend-independent: state checks, the state store, hooks that run
//! in the runtime, pid files; the backend does the isolation work.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::backend::{self, CreateRequest};
use crate::cli::CreateCommon;
use crate::config::{self, NodeConfig};
use crate::foreground;
use crate::state::{self, ContainerDir, Record, Status};
use strata_agent_protocol::NOT_RUNNING;
use strata_linux::container::ProcessIo;

use super::console::Console;
use super::globals::Globals;
use super::inputs::{absolute, listen_fds, load_spec, write_pid_file};

/// `create`, and the first half of `run`. Returns the locked container dir and its record.
fn create_container(
    g: &Globals,
    id: &str,
    c: &CreateCommon,
    detach: bool,
) -> Result<(ContainerDir, Record, Option<OwnedFd>)> {
    state::validate_id(id)?;
    let bundle = std::fs::canonicalize(&c.bundle)
        .with_context(|| format!("bundle {}", c.bundle.display()))?;
    let spec = load_spec(&bundle)?;
    let pid_file = c.pid_file.as_deref().map(absolute).transpose()?;
    let node = NodeConfig::load(g.config, g.config_explicit)?;
    let kind = config::choose(g.backend, &spec, &node)?;
    let be = backend::of(kind)?;
    if g.systemd_cgroup && !Path::new("/run/systemd/system").exists() {
        bail!(
            "--systemd-cgroup: systemd is not running on this host; drop the flag to use cgroupfs"
        );
    }
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let console = Console::setup(terminal, c.console_socket.as_deref(), detach, "create")?;
    let dir = ContainerDir::create(g.root, id)?;
    // Written ahead of every resource it names, so that a create killed at any point leaves a
    // record that `state` reads truthfully and `delete --force` cleans up from.
    let provisional = Record {
        id: id.to_string(),
        pid: 0,
        pid_start: 0,
        status: Status::Creating,
        bundle: bundle.clone(),
        rootfs: PathBuf::new(),
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        owner: state::owner_name(),
        backend: kind,
        cgroups: Default::default(),
        spec: spec.clone(),
        state_dir: dir.path.clone(),
    };
    let result = (|| -> Result<(Record, Option<OwnedFd>)> {
        dir.save(&provisional)?;
        strata_linux::fault::point("create:after-state-dir");
        // Socket paths are limited to 108 bytes; bind relative to the state dir.
        std::env::set_current_dir(&dir.path)?;
        let listener =
            UnixListener::bind(state::START_SOCKET).context("binding the start socket")?;
        let (listen, mut extra_env) = listen_fds();
        let _ = &mut extra_env;
        let record_cgroups = |cgroups: &strata_linux::cgroups::CgroupSet| {
            let mut rec = provisional.clone();
            rec.cgroups = cgroups.clone();
            if let Err(e) = dir.save(&rec) {
                // Not a warning: the record is for cleaning up after a crash, and a state dir
                // that cannot be written here (a racing delete --force removed it) fails the
                // create's final save with the one error the caller should see.
                tracing::debug!("recording the cgroups of {id}: {e:#}");
            }
        };
        let req = CreateRequest {
            container: strata_linux::container::CreateRequest {
                id,
                bundle: &bundle,
                spec: &spec,
                no_pivot: c.no_pivot,
                start_listener: listener.as_raw_fd(),
                io: ProcessIo {
                    console: console.child_fd(),
                    preserve_fds: listen + c.preserve_fds as i32,
                    extra_env,
                    close_in_child: vec![dir.lock_fd()],
                },
                on_cgroups: &record_cgroups,
            },
            state_dir: &dir.path,
            node: &node,
        };
        let created = be.create(&req)?;
        drop(listener);
        strata_linux::fault::point("create:after-ready");
        let rec = Record {
            pid: created.pid,
            pid_start: state::proc_stat(created.pid).map(|s| s.1).unwrap_or(0),
            status: Status::Created,
            rootfs: created.rootfs,
            cgroups: created.cgroups,
            ..provisional.clone()
        };
        let saved = dir
            .save_at(&rec, "create:writing-state")
            .and_then(|_| match &pid_file {
                Some(p) => write_pid_file(p, rec.pid),
                None => Ok(()),
            });
        if let Err(e) = saved {
            let _ = be.destroy(&rec);
            return Err(e);
        }
        let master = console.into_master()?;
        Ok((rec, master))
    })();
    match result {
        Ok((rec, master)) => Ok((dir, rec, master)),
        Err(e) => {
            let _ = dir.remove();
            Err(e)
        }
    }
}

pub fn create(g: &Globals, id: &str, c: &CreateCommon) -> Result<i32> {
    create_container(g, id, c, true)?;
    Ok(0)
}

fn start_locked(dir: &ContainerDir, rec: &mut Record) -> Result<()> {
    match rec.live_status() {
        Status::Created => {}
        Status::Stopped => bail!("cannot start container {:?}: it has stopped", rec.id),
        other => bail!(
            "cannot start container {:?}: it is {other}, not created",
            rec.id
        ),
    }
    let be = backend::of(rec.backend)?;
    be.start(dir, rec)?;
    rec.status = Status::Running;
    dir.save(rec)?;
    if let Some(h) = rec.spec.hooks() {
        // Runtime-spec 1.3.0 (the version strata implements), lifecycle step 7: a failing
        // poststart hook is logged as a warning, and the remaining hooks and the lifecycle
        // go on as if it had succeeded. (runc 1.1 stops the container instead.)
        let st = rec.hook_state(rec.pid, "running");
        strata_linux::hooks::run_all_warn(
            h.poststart().as_deref().unwrap_or(&[]),
            &st,
            strata_linux::hooks::Inherit::Runtime,
        );
    }
    Ok(())
}

pub fn start(g: &Globals, id: &str) -> Result<i32> {
    let dir = ContainerDir::open(g.root, id)?;
    let mut rec = dir.load()?;
    start_locked(&dir, &mut rec)?;
    Ok(0)
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow::anyhow!("unknown signal {s:?}"));
    }
    let up = s.to_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

pub fn kill(g: &Globals, id: &str, signal: Option<&str>, all: bool) -> Result<i32> {
    let sig = parse_signal(signal.unwrap_or("TERM"))?;
    let dir = ContainerDir::open(g.root, id)?;
    let rec = dir.load()?;
    // The wording matters: containerd's shim recognises "container not running" and treats
    // the kill of an exited process as done. `--all` still reaches processes left in the
    // cgroup after init exited, as with runc.
    if rec.live_status() == Status::Stopped && !all {
        bail!("cannot kill container {id:?}: {NOT_RUNNING}");
    }
    backend::of(rec.backend)?.signal(&rec, sig, all)?;
    Ok(0)
}

fn delete_locked(dir: ContainerDir, rec: &Record, force: bool) -> Result<()> {
    let status = rec.live_status();
    if matches!(status, Status::Running | Status::Paused) && !force {
        bail!(
            "cannot delete container {:?}: it is {status}; stop it first or use --force",
            rec.id
        );
    }
    backend::of(rec.backend)?.destroy(rec)?;
    strata_linux::fault::point("delete:after-kill");
    if let Some(h) = rec.spec.hooks() {
        let st = rec.hook_state(0, "stopped");
        strata_linux::hooks::run_all_warn(
            h.poststop().as_deref().unwrap_or(&[]),
            &st,
            strata_linux::hooks::Inherit::Runtime,
        );
    }
    dir.remove()
}

pub fn delete(g: &Globals, id: &str, force: bool) -> Result<i32> {
    let dir = match ContainerDir::open(g.root, id) {
        Ok(d) => d,
        // runc: deleting what is already gone with --force is not an error.
        Err(_)
            if force
                && state::validate_id(id).is_ok()
                && !g.root.join(id).join("state.json").exists() =>
        {
            state::remove_debris(g.root, id);
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let rec = dir.load()?;
    delete_locked(dir, &rec, force)?;
    Ok(0)
}

pub fn run(g: &Globals, id: &str, c: &CreateCommon, detach: bool, keep: bool) -> Result<i32> {
    if !detach {
        foreground::block_signals()?;
        // A two-stage init (time namespace, joined user namespace) is our grandchild; as
        // subreaper we still get its exit status.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let (dir, mut rec, master) = create_container(g, id, c, detach)?;
    if let Err(e) = start_locked(&dir, &mut rec) {
        let _ = delete_locked(dir, &rec, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let id = rec.id.clone();
    drop(dir);
    let code = foreground::wait(rec.pid, master)?;
    if !keep {
        if let Ok(dir) = ContainerDir::open(g.root, &id) {
            let rec = dir.load()?;
            delete_locked(dir, &rec, true)?;
        }
    }
    Ok(code)
}
