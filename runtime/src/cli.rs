//! The command line, runc-compatible: the forms containerd's runc shim, podman/conmon and
//! Docker use. Flags are accepted before or after the container ID, as runc accepts them.
//!
//! The same types are the commands as values: with the `cli` feature clap parses them from
//! argv; without it (the guest agent's build, which has no clap) a caller builds them and
//! hands them over as JSON (see `entry::run`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::logging::LogFormat;

/// Where state lives without `--root`: /run/strata for root; for a rootless user, as runc,
/// under $XDG_RUNTIME_DIR (else /run/user/UID, which systemd-logind makes for the user).
pub fn default_root() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if !strata_linux::rootless() {
        return PathBuf::from("/run/strata");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("strata");
    }
    // Not a directory in /tmp, where another user could have made it first.
    PathBuf::from(format!("/run/user/{uid}/strata"))
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Parser))]
#[cfg_attr(
    feature = "cli",
    command(
        name = "strata",
        version,
        about = "An OCI runtime with native, sandbox and vm isolation strengths"
    )
)]
pub struct Cli {
    /// Directory for container state (default /run/strata; rootless, $XDG_RUNTIME_DIR/strata).
    #[cfg_attr(
        feature = "cli",
        arg(long, global = true, default_value_os_t = default_root(), hide_default_value = true)
    )]
    pub root: PathBuf,
    /// Write log messages to this file (instead of stderr).
    #[cfg_attr(feature = "cli", arg(long, global = true))]
    pub log: Option<PathBuf>,
    /// Format of the --log file.
    #[cfg_attr(feature = "cli", arg(long, global = true, value_enum, default_value_t = LogFormat::Text))]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[cfg_attr(feature = "cli", arg(long, global = true))]
    pub debug: bool,
    /// Use systemd to manage cgroups (needs a running systemd).
    #[cfg_attr(feature = "cli", arg(long, global = true))]
    pub systemd_cgroup: bool,
    /// Backend to run containers on: native, sandbox or vm (overrides the bundle's
    /// dev.strata.backend annotation and the node config).
    #[cfg_attr(feature = "cli", arg(long, global = true))]
    pub backend: Option<String>,
    /// Node config file.
    #[cfg_attr(
        feature = "cli",
        arg(long, global = true, default_value = "/etc/strata/config.toml")
    )]
    pub config: PathBuf,
    #[cfg_attr(feature = "cli", command(subcommand))]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container's init (or, with --all, all its processes).
    Kill {
        id: String,
        /// Signal name (TERM, SIGTERM) or number; default TERM.
        signal: Option<String>,
        #[cfg_attr(feature = "cli", arg(short, long))]
        all: bool,
    },
    /// Delete a stopped container (--force: a running one too) and everything it held.
    Delete {
        id: String,
        #[cfg_attr(feature = "cli", arg(short, long))]
        force: bool,
    },
    /// Create and start a container; without --detach, wait for it and exit with its status.
    Run(RunArgs),
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List containers.
    #[cfg_attr(feature = "cli", command(alias = "ls"))]
    List {
        #[cfg_attr(feature = "cli", arg(short, long, value_enum, default_value_t = ListFormat::Table))]
        format: ListFormat,
        /// Print only IDs.
        #[cfg_attr(feature = "cli", arg(short, long))]
        quiet: bool,
    },
    /// Freeze every process of a running container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps {
        #[cfg_attr(feature = "cli", arg(short, long, value_enum, default_value_t = ListFormat::Table))]
        format: ListFormat,
        id: String,
        /// Arguments for ps(1) in table format (default: -ef).
        #[cfg_attr(
            feature = "cli",
            arg(trailing_var_arg = true, allow_hyphen_values = true)
        )]
        ps_args: Vec<String>,
    },
    /// Print resource usage (--stats once) or stream stats and OOM events.
    Events {
        id: String,
        /// Print one stats event and exit.
        #[cfg_attr(feature = "cli", arg(long))]
        stats: bool,
        /// Interval between stats events.
        #[cfg_attr(feature = "cli", arg(long, default_value = "5s"))]
        interval: String,
    },
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Write a default config.json into the bundle.
    Spec {
        #[cfg_attr(feature = "cli", arg(short, long, default_value = "."))]
        bundle: PathBuf,
        #[cfg_attr(feature = "cli", arg(long))]
        rootless: bool,
    },
    /// Print the OCI features this runtime supports, as JSON.
    Features,
    /// Report what this host can run: cgroups, seccomp, Landlock, KVM and the vm backend's
    /// helpers, one sentence each.
    Check,
    /// Checkpoint a running container with CRIU (runc's command; strata cannot yet, and says
    /// so).
    Checkpoint {
        /// runc's flags and the container ID, accepted so that the refusal is about
        /// checkpointing, not about a flag.
        #[cfg_attr(
            feature = "cli",
            arg(trailing_var_arg = true, allow_hyphen_values = true)
        )]
        args: Vec<String>,
    },
    /// Restore a container from a CRIU checkpoint (runc's command; strata cannot yet).
    Restore {
        #[cfg_attr(
            feature = "cli",
            arg(trailing_var_arg = true, allow_hyphen_values = true)
        )]
        args: Vec<String>,
    },
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Start { .. } => "start",
            Command::State { .. } => "state",
            Command::Kill { .. } => "kill",
            Command::Delete { .. } => "delete",
            Command::Run(_) => "run",
            Command::Exec(_) => "exec",
            Command::List { .. } => "list",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Ps { .. } => "ps",
            Command::Events { .. } => "events",
            Command::Update(_) => "update",
            Command::Spec { .. } => "spec",
            Command::Features => "features",
            Command::Check => "check",
            Command::Checkpoint { .. } => "checkpoint",
            Command::Restore { .. } => "restore",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CreateArgs {
    pub id: String,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub common: CreateCommon,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CreateCommon {
    /// Bundle directory (holds config.json).
    #[cfg_attr(feature = "cli", arg(short, long, default_value = "."))]
    pub bundle: PathBuf,
    /// Write the container's host PID to this file.
    #[cfg_attr(feature = "cli", arg(long))]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[cfg_attr(feature = "cli", arg(long))]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on ramfs).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_pivot: bool,
    /// Accepted for runc compatibility; strata creates no session keyring.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (3, 4, ...) to the container.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub preserve_fds: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RunArgs {
    pub id: String,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub common: CreateCommon,
    /// Return after starting the container instead of waiting for it.
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub detach: bool,
    /// Keep the container after it exits (runc compatibility).
    #[cfg_attr(feature = "cli", arg(long))]
    pub keep: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExecArgs {
    /// Process JSON (an OCI `process` object) instead of the command line.
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub process: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub detach: bool,
    #[cfg_attr(feature = "cli", arg(long))]
    pub pid_file: Option<PathBuf>,
    /// Allocate a pty.
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub tty: bool,
    #[cfg_attr(feature = "cli", arg(long))]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[cfg_attr(feature = "cli", arg(long))]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub env: Vec<String>,
    /// uid[:gid]
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub user: Option<String>,
    /// Additional gids; repeatable.
    #[cfg_attr(feature = "cli", arg(short = 'g', long = "additional-gids"))]
    pub additional_gids: Vec<u32>,
    /// Add a capability; repeatable.
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub cap: Vec<String>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_new_privs: bool,
    /// Exec into a paused container too: the process starts frozen and runs once the
    /// container is resumed (runc's flag).
    #[cfg_attr(feature = "cli", arg(long))]
    #[serde(default)]
    pub ignore_paused: bool,
    /// Run in an existing sub-cgroup of the container's: [CONTROLLER[,CONTROLLER]:]PATH;
    /// repeatable (runc's flag).
    #[cfg_attr(feature = "cli", arg(long = "cgroup", value_name = "PATH"))]
    #[serde(default)]
    pub cgroup: Vec<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub preserve_fds: u32,
    pub id: String,
    /// The command and its arguments.
    #[cfg_attr(
        feature = "cli",
        arg(trailing_var_arg = true, allow_hyphen_values = true)
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct UpdateArgs {
    pub id: String,
    /// LinuxResources JSON file, or - for stdin (what containerd sends).
    #[cfg_attr(feature = "cli", arg(short, long))]
    pub resources: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub memory: Option<String>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited.
    #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
    pub memory_swap: Option<String>,
    /// Accepted for runc compatibility; kernel memory limits no longer exist.
    #[cfg_attr(feature = "cli", arg(long))]
    pub kernel_memory: Option<String>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub kernel_memory_tcp: Option<String>,
    #[cfg_attr(feature = "cli", arg(long = "cpu-share", alias = "cpu-shares"))]
    pub cpu_share: Option<u64>,
    #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
    pub cpu_quota: Option<i64>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpu_period: Option<u64>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpu_rt_runtime: Option<i64>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpu_rt_period: Option<u64>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpuset_cpus: Option<String>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpuset_mems: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
    pub pids_limit: Option<i64>,
    #[cfg_attr(feature = "cli", arg(long))]
    pub blkio_weight: Option<u16>,
}
