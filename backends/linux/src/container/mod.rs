//! Creating a container: one clone with every new namespace, the init set up inside it while
//! the runtime answers its requests (id maps, cgroup, hooks), then the init waits for `start`.
//!
//! No re-exec of the runtime binary: the init is a fork of the runtime that turns itself into
//! the container. It marks itself non-dumpable at once, so no process of the container can
//! open `/proc/<init>/exe` (the host binary) before execve replaces it.
//!
//! The files: `validate.rs` checks a spec before anything exists, `parent.rs` is the runtime's
//! side of `create` (the clone, then answering the init's requests), `init.rs` the init's own
//! setup inside the new namespaces, and `prepare.rs` the last steps before execve that the
//! init shares with exec'd processes ([`prepare_process`]).

use std::os::fd::RawFd;
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::cgroups::CgroupSet;
use crate::error::Result;

mod init;
mod parent;
mod prepare;
mod validate;

pub use parent::create;
pub use prepare::{prepare_process, ReadyProcess};
pub use validate::{personality_of_spec, rootfs_of, validate};

/// One `create` as the runtime's caller asked for it: built once by the front end and carried
/// down unchanged, through whichever backend, to here.
pub struct CreateRequest<'a> {
    pub id: &'a str,
    /// Absolute bundle directory.
    pub bundle: &'a Path,
    /// The bundle's config.json.
    pub spec: &'a Spec,
    pub no_pivot: bool,
    /// A listening Unix socket; the init accepts one connection on it as its `start` signal.
    pub start_listener: RawFd,
    /// What the workload gets of its caller's (console, fds, environment).
    pub io: ProcessIo,
    /// Told the cgroups as soon as they exist, before any process is in them, so that a
    /// runtime killed from here on leaves a record `delete --force` can clean up from.
    pub on_cgroups: &'a dyn Fn(&CgroupSet),
}

/// What a new process (a container's init or an exec'd one) gets of its caller's, and what
/// of the runtime's it must not keep.
#[derive(Clone, Debug, Default)]
pub struct ProcessIo {
    /// A socket connected to whoever receives the pty master (`--console-socket`).
    pub console: Option<RawFd>,
    /// How many fds after stdio the workload keeps (`--preserve-fds` plus `LISTEN_FDS`).
    pub preserve_fds: i32,
    /// Variables added to process.env (e.g. LISTEN_FDS).
    pub extra_env: Vec<String>,
    /// Runtime fds the process must not keep (the state lock: a process holding it would
    /// block every later command on the container).
    pub close_in_child: Vec<RawFd>,
}

/// The backend's part of one `create`, around the caller's request.
pub struct CreateOptions<'a> {
    pub request: &'a CreateRequest<'a>,
    /// The spec to build: the request's, or the backend's amended copy of it.
    pub spec: &'a Spec,
    /// Builds the state JSON that hooks get on stdin, for a given init PID and status.
    pub hook_state: &'a dyn Fn(i32, &str) -> Vec<u8>,
    /// Seccomp profiles the backend adds after the bundle's own (the sandbox's).
    pub extra_seccomp: &'a [LinuxSeccomp],
    /// Runs in the init after every filter is loaded, right before execve (the sandbox's
    /// Landlock ruleset).
    pub before_exec: Option<&'a BeforeExec>,
}

/// A last step before execve, run in the container's process.
pub type BeforeExec = dyn Fn() -> Result<()> + Sync;

pub struct Created {
    pub pid: i32,
    pub cgroups: CgroupSet,
}
