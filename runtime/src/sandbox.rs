//! The sandbox backend's adapter: a native container, plus the sandbox's seccomp profile
//! (after the bundle's own), noNewPrivileges, a Landlock ruleset before execve, and a
//! supervisor process that lives as long as the container.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Spec};
use strata_linux::cgroups::stats::Stats;
use strata_sandbox::policy::Policy;

use crate::backend::{Backend, CreateRequest, Created, ExecRequest, NodeConfig};
use crate::native::{self, Extras, Native};
use crate::state::{self, ContainerDir, Record};

pub const POLICY_ANNOTATION: &str = "dev.strata.sandbox.policy";
const SOCKET: &str = "supervisor.sock";
const PID_FILE: &str = "supervisor.pid";
/// The policy chosen at create, for exec'd processes (the bundle and node config may change).
const POLICY_FILE: &str = "sandbox-policy.json";

pub struct Sandbox;

/// The policy for a bundle: the one its annotation names (if the node honours the key and
/// lists the name), else the node's default, else the built-in one.
pub fn choose_policy(spec: &Spec, node: &NodeConfig) -> Result<Policy> {
    let asked = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(POLICY_ANNOTATION))
        .filter(|_| node.honors(POLICY_ANNOTATION));
    let path = match asked.map(String::as_str) {
        None => node.sandbox.policy.clone(),
        Some("builtin") => None,
        Some(name) => match node.sandbox.policies.get(name) {
            Some(p) => Some(p.clone()),
            None => {
                let mut known: Vec<&str> =
                    node.sandbox.policies.keys().map(String::as_str).collect();
                known.push("builtin");
                known.sort();
                bail!(
                    "config.json annotation {POLICY_ANNOTATION}: unknown policy {name:?} (this node allows {})",
                    known.join(", ")
                );
            }
        },
    };
    Ok(match path {
        Some(p) => Policy::load(&p)?,
        None => Policy::builtin(),
    })
}

fn landlock_step(policy: Policy) -> impl Fn() -> strata_linux::error::Result<()> + Sync {
    move || {
        strata_sandbox::landlock::restrict(&policy)
            .map_err(|e| strata_linux::error::Error::config("sandbox", e.to_string()))
    }
}

fn supervisor_pid(state_dir: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(state_dir.join(PID_FILE)).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn kill_supervisor(state_dir: &Path) {
    if let Some((pid, start)) = supervisor_pid(state_dir) {
        if let Ok(fd) = strata_linux::hooks::pidfd_open(pid) {
            if state::process_alive(pid, start) {
                native::pidfd_send_signal(&fd, Signal::SIGKILL);
            }
        }
    }
}

fn profile_for(state_dir: &Path, policy: &Policy) -> oci_spec::runtime::LinuxSeccomp {
    strata_sandbox::profile::profile(&state_dir.join(SOCKET), policy)
}

/// The supervisor's PID (with its start time, against PID reuse) and the chosen policy, in
/// the state dir: delete finds the one, exec reuses the other.
fn record_supervisor(state_dir: &Path, pid: i32, start: u64, policy: &Policy) -> Result<()> {
    std::fs::write(state_dir.join(PID_FILE), format!("{pid} {start}\n"))
        .context("recording the supervisor")?;
    let json = serde_json::to_vec(policy).context("recording the sandbox policy")?;
    std::fs::write(state_dir.join(POLICY_FILE), json).context("recording the sandbox policy")
}

/// The native container with the sandbox's additions.
fn create_confined(req: &CreateRequest, policy: Policy) -> Result<Created> {
    let mut spec = req.spec.clone();
    // Landlock and an unprivileged filter load need it; setuid binaries gain nothing in a
    // sandbox anyway.
    if let Some(mut p) = spec.process().clone() {
        p.set_no_new_privileges(Some(true));
        spec.set_process(Some(p));
    }
    let profile = profile_for(req.state_dir, &policy);
    let landlock = landlock_step(policy);
    let extras = Extras {
        seccomp: Some(&profile),
        before_exec: Some(&landlock),
    };
    native::create_with(req, &spec, extras)
}

impl Backend for Sandbox {
    fn create(&self, req: &CreateRequest) -> Result<Created> {
        let policy = choose_policy(req.spec, req.node)?;
        let uses_userns = req
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            });
        if uses_userns {
            bail!(
                "linux.namespaces: the sandbox backend does not support a user namespace yet; \
                 drop it or use the native backend"
            );
        }
        // The supervisor listens before the container exists: the init hands it the notify fd
        // during create.
        let socket_path = req.state_dir.join(SOCKET);
        let listener = UnixListener::bind(SOCKET)
            .with_context(|| format!("binding {}", socket_path.display()))?;
        let pid = strata_sandbox::supervisor::spawn(listener, policy.clone(), &req.close_in_child)?;
        let start = state::proc_stat(pid).map(|s| s.1).unwrap_or(0);
        let result = record_supervisor(req.state_dir, pid, start, &policy)
            .and_then(|()| create_confined(req, policy));
        if result.is_err() {
            // Whatever failed, the supervisor must not outlive the container it was for.
            // SAFETY: kill(2) on the child we just forked, whose PID cannot have been reused
            // (it is our child until we exit).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        result
    }

    fn start(&self, dir: &ContainerDir, rec: &Record) -> Result<()> {
        Native.start(dir, rec)
    }

    fn signal(&self, rec: &Record, sig: Signal, all: bool) -> Result<()> {
        Native.signal(rec, sig, all)
    }

    fn exec(&self, rec: &Record, req: &ExecRequest) -> Result<i32> {
        if supervisor_pid(&rec.state_dir).is_none_or(|(p, s)| !state::process_alive(p, s)) {
            bail!("the container's sandbox supervisor is gone; refusing to exec unsupervised");
        }
        let recorded = std::fs::read(rec.state_dir.join(POLICY_FILE))
            .context("reading the container's sandbox policy")?;
        let policy: Policy =
            serde_json::from_slice(&recorded).context("reading the container's sandbox policy")?;
        let profile = profile_for(&rec.state_dir, &policy);
        let landlock = landlock_step(policy);
        let extras = Extras {
            seccomp: Some(&profile),
            before_exec: Some(&landlock),
        };
        let mut process = req.process.clone();
        process.set_no_new_privileges(Some(true));
        let req = ExecRequest {
            process: &process,
            console: req.console,
            preserve_fds: req.preserve_fds,
            extra_env: req.extra_env.clone(),
        };
        native::exec_with(rec, &req, extras)
    }

    fn destroy(&self, rec: &Record) -> Result<()> {
        let r = Native.destroy(rec);
        kill_supervisor(&rec.state_dir);
        r
    }

    fn pause(&self, rec: &Record) -> Result<()> {
        Native.pause(rec)
    }

    fn resume(&self, rec: &Record) -> Result<()> {
        Native.resume(rec)
    }

    fn update(&self, rec: &Record, resources: &LinuxResources) -> Result<()> {
        Native.update(rec, resources)
    }

    fn stats(&self, rec: &Record) -> Result<Stats> {
        Native.stats(rec)
    }

    fn pids(&self, rec: &Record) -> Result<Vec<i32>> {
        Native.pids(rec)
    }

    fn oom_kills(&self, rec: &Record) -> u64 {
        Native.oom_kills(rec)
    }

    fn oom_notifier(&self, rec: &Record) -> Result<Option<(OwnedFd, bool)>> {
        Native.oom_notifier(rec)
    }
}
