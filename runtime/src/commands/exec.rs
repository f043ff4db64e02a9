//! `exec`: one more process in a running container, described by flags or a process JSON.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Process;
use strata_linux::container::ProcessIo;

use crate::backend::{self, ExecRequest};
use crate::cli::ExecArgs;
use crate::foreground;
use crate::state::{ContainerDir, Record, Status};

use super::console::Console;
use super::globals::Globals;
use super::inputs::{absolute, listen_fds, parse_json, write_pid_file};

fn exec_process(rec: &Record, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("--process {}", p.display()))?;
        let mut proc: Process = parse_json(&text, p).with_context(|| "--process".to_string())?;
        if a.tty {
            proc.set_terminal(Some(true));
        }
        return Ok(proc);
    }
    if a.command.is_empty() {
        bail!("exec: give a command to run, or --process FILE");
    }
    let mut proc = rec.spec.process().clone().unwrap_or_default();
    proc.set_args(Some(a.command.clone()));
    proc.set_terminal(Some(a.tty));
    proc.set_console_size(None);
    if let Some(cwd) = &a.cwd {
        proc.set_cwd(cwd.clone());
    }
    if !a.env.is_empty() {
        let mut env = proc.env().clone().unwrap_or_default();
        for kv in &a.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        proc.set_env(Some(env));
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let mut user = proc.user().clone();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("--user {u}: uid must be a number"))?,
        );
        user.set_gid(match gid {
            Some(g) => g
                .parse()
                .with_context(|| format!("--user {u}: gid must be a number"))?,
            None => 0,
        });
        proc.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = proc.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        proc.set_user(user);
    }
    if a.no_new_privs {
        proc.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = proc.capabilities().clone().unwrap_or_default();
        let parsed: Vec<oci_spec::runtime::Capability> = a
            .cap
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::Value::String(c.clone()))
                    .map_err(|_| anyhow::anyhow!("--cap: unknown capability {c:?}"))
            })
            .collect::<Result<_>>()?;
        let add = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(parsed.iter().copied());
            Some(s)
        };
        // Not inheritable: a capability there (with ambient or file capabilities) would
        // outlive the process's own execve into its children's programs (CVE-2022-29162,
        // fixed the same way in runc 1.1.2).
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        proc.set_capabilities(Some(caps));
    }
    Ok(proc)
}

pub fn exec(g: &Globals, a: &ExecArgs) -> Result<i32> {
    let pid_file = a.pid_file.as_deref().map(absolute).transpose()?;
    let opened = ContainerDir::open(g.root, &a.id)?;
    let rec = opened.load()?;
    let mut dir = Some(opened);
    match rec.live_status() {
        Status::Running | Status::Created => {}
        // The process starts frozen and its setup waits for the resume, which needs the
        // container's lock: this exec must not hold it meanwhile.
        Status::Paused if a.ignore_paused => dir = None,
        Status::Paused => bail!(
            "cannot exec in container {:?}: it is paused (use --ignore-paused to exec anyway)",
            a.id
        ),
        other => bail!("cannot exec in container {:?}: it is {other}", a.id),
    }
    let process = exec_process(&rec, a)?;
    let sub_cgroups = strata_linux::cgroups::SubCgroups::parse(&a.cgroup)?;
    let terminal = process.terminal().unwrap_or(false);
    let console = Console::setup(terminal, a.console_socket.as_deref(), a.detach, "exec")?;
    if !a.detach {
        foreground::block_signals()?;
    }
    let (listen, extra_env) = listen_fds();
    let req = ExecRequest {
        process: &process,
        io: ProcessIo {
            console: console.child_fd(),
            preserve_fds: listen + a.preserve_fds as i32,
            extra_env,
            close_in_child: dir.iter().map(ContainerDir::lock_fd).collect(),
        },
        sub_cgroups: &sub_cgroups,
    };
    let pid = backend::of(rec.backend)?.exec(&rec, &req)?;
    strata_linux::fault::point("exec:after-spawn");
    drop(dir);
    if let Some(p) = &pid_file {
        write_pid_file(p, pid)?;
    }
    let master = console.into_master()?;
    if a.detach {
        return Ok(0);
    }
    foreground::wait(pid, master)
}
