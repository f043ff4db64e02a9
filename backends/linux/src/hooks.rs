//! OCI hooks: run with the container state on stdin, bounded by their timeout.

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::proc::pidfd_open;

/// The environment of a hook whose `env` is absent, as runc gives it.
#[derive(Clone, Copy)]
pub enum Inherit<'a> {
    /// A hook the runtime runs on the host (prestart, createRuntime, poststart, poststop):
    /// the runtime's own environment.
    Runtime,
    /// A hook run in the container (createContainer, startContainer): the container
    /// process's environment, never the host runtime's.
    Process(&'a [String]),
}

/// Runs `hooks` in order; the first failure stops the rest and is returned.
pub fn run_all(hooks: &[Hook], state_json: &[u8], inherit: Inherit) -> Result<()> {
    for h in hooks {
        run(h, state_json, inherit)?;
    }
    Ok(())
}

/// Runs every hook even when some fail (poststart, poststop); failures are logged.
pub fn run_all_warn(hooks: &[Hook], state_json: &[u8], inherit: Inherit) {
    for h in hooks {
        if let Err(e) = run(h, state_json, inherit) {
            tracing::warn!("{e}");
        }
    }
}

fn memfd(name: &str) -> Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).map_err(
        |e| Error::Hook {
            path: name.into(),
            reason: format!("memfd_create: {e}"),
        },
    )?;
    Ok(std::fs::File::from(fd))
}

pub fn run(h: &Hook, state_json: &[u8], inherit: Inherit) -> Result<()> {
    let path = h.path().clone();
    let herr = |reason: String| Error::Hook {
        path: path.clone(),
        reason,
    };
    if let Some(t) = h.timeout() {
        if t <= 0 {
            return Err(herr(format!("timeout must be positive, got {t}")));
        }
    }
    let mut cmd = Command::new(&path);
    let args = h.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    // As runc's: a hook with `env` (even an empty list) gets exactly that; one without
    // inherits (see `Inherit`).
    let env: Option<&[String]> = match (h.env(), inherit) {
        (Some(env), _) => Some(env),
        (None, Inherit::Process(env)) => Some(env),
        (None, Inherit::Runtime) => None,
    };
    if let Some(env) = env {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    // The state goes in through a file, so a hook that never reads stdin cannot block us.
    let mut stdin = memfd("hook-state")?;
    stdin
        .write_all(state_json)
        .and_then(|_| stdin.rewind())
        .map_err(|e| herr(e.to_string()))?;
    let mut output = memfd("hook-output")?;
    let out_w = output.try_clone().map_err(|e| herr(e.to_string()))?;
    let err_w = output.try_clone().map_err(|e| herr(e.to_string()))?;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let mut child = cmd.spawn().map_err(|e| herr(format!("cannot run: {e}")))?;
    let status = match h.timeout() {
        None => child.wait().map_err(|e| herr(e.to_string()))?,
        Some(secs) => {
            let pidfd = pidfd_open(child.id() as i32).map_err(|e| herr(e.to_string()))?;
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let ms = (secs as u64).saturating_mul(1000).min(i32::MAX as u64) as i32;
            let ready = loop {
                match poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other.map_err(|e| herr(e.to_string()))?,
                }
            };
            if ready == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(herr(format!("timed out after {secs}s")));
            }
            child.wait().map_err(|e| herr(e.to_string()))?
        }
    };
    if !status.success() {
        let mut out = String::new();
        let _ = output.rewind();
        let _ = output.take(4096).read_to_string(&mut out);
        let out = out.trim();
        return Err(herr(format!(
            "{status}{}{}",
            if out.is_empty() { "" } else { ": " },
            out
        )));
    }
    Ok(())
}
