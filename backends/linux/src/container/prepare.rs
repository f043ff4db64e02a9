//! The last steps before execve, shared by the init and exec'd processes.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::proc;
use crate::process::{self, CapabilityPlan};
use crate::seccomp;
use crate::tty;

/// The workload, resolved and with the process's identity applied, ready for execve.
pub struct ReadyProcess {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// The seccomp filters are still to be loaded, right before execve.
    pub late_filter: bool,
    /// Notify fds by filter index, for each filter's `listenerPath`.
    pub notify_fds: Vec<(usize, OwnedFd)>,
}

/// Everything between "inside the container's namespaces and root" and execve that the init
/// and exec'd processes share: terminal, rlimits, executable lookup, cwd, capabilities, user,
/// noNewPrivileges, umask.
#[allow(clippy::too_many_arguments)]
pub fn prepare_process(
    process: &Process,
    personality: Option<libc::c_ulong>,
    extra_env: &[String],
    console: Option<RawFd>,
    set_rlimits: bool,
    filters: &[seccomp::Filter],
    keep_fds: i32,
    send_notify_fd: &dyn Fn(usize, &OwnedFd) -> Result<()>,
) -> Result<ReadyProcess> {
    if process.terminal().unwrap_or(false) {
        let console = console.ok_or_else(|| {
            Error::config(
                "process.terminal",
                "a terminal was requested but no --console-socket was given",
            )
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let pty = tty::open_pty(size)?;
        tty::send_fd(console, pty.name.as_bytes(), pty.master.as_raw_fd())?;
        drop(pty.master);
        tty::make_controlling_tty(&pty.slave)?;
    }
    // The runtime may block signals it forwards; the workload starts with none blocked.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    if set_rlimits {
        process::set_rlimits(process.rlimits().as_deref().unwrap_or(&[]))?;
    }
    // While the capabilities a real-time class needs are still held.
    crate::sched::apply(process)?;
    let env = process::build_env(process, extra_env);
    let args = process.args().clone().unwrap_or_default();
    let exe = process::find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;
    process::enter_cwd(process.cwd())?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN: load it before the
    // capabilities go (runc's order). A filter with a notify fd is loaded now too, so the
    // fd can reach the runtime before `create` returns.
    let early = !filters.is_empty() && (!nnp || filters.iter().any(|f| f.has_notify()));
    // Now, before any filter: profiles often lack close_range. Every fd the runtime opens
    // from here on is close-on-exec by construction.
    proc::cloexec_from(keep_fds)?;
    let mut notify_fds = Vec::new();
    if early {
        for (i, f) in filters.iter().enumerate() {
            if let Some(fd) = f.load()? {
                // At once: the next syscall may already be one this filter traps, and it
                // waits until the fd reaches its listener.
                send_notify_fd(i, &fd)?;
                notify_fds.push((i, fd));
            }
        }
    }
    let mut caps = CapabilityPlan::new(process.capabilities().as_ref())?;
    caps.limit_to_available();
    caps.apply_bounding()?;
    let user = process.user();
    process::set_user(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    caps.apply_rest()?;
    if process.no_new_privileges().unwrap_or(false) {
        process::set_no_new_privs()?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022),
    ));
    if let Some(p) = personality {
        process::set_personality(p)?;
    }
    Ok(ReadyProcess {
        exe,
        args,
        env,
        late_filter: !filters.is_empty() && !early,
        notify_fds,
    })
}
