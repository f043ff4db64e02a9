//! The command line, runc-compatible: the forms containerd's runc shim, podman/conmon and
//! Docker use. Flags are accepted before or after the container ID, as runc accepts them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "An OCI runtime with native, sandbox and vm isolation strengths"
)]
pub struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/strata")]
    pub root: PathBuf,
    /// Write log messages to this file (instead of stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (needs a running systemd).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Backend to run containers on: native, sandbox or vm (overrides the bundle's
    /// dev.strata.backend annotation and the node config).
    #[arg(long, global = true)]
    pub backend: Option<String>,
    /// Node config file.
    #[arg(long, global = true, default_value = "/etc/strata/config.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
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
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a stopped container (--force: a running one too) and everything it held.
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Create and start a container; without --detach, wait for it and exit with its status.
    Run(RunArgs),
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print only IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a running container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// Arguments for ps(1) in table format (default: -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print resource usage (--stats once) or stream stats and OOM events.
    Events {
        id: String,
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats events.
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Print the OCI features this runtime supports, as JSON.
    Features,
    /// Report what this host can run: cgroups, seccomp, Landlock, KVM and the vm backend's
    /// helpers, one sentence each.
    Check,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub id: String,
    #[command(flatten)]
    pub common: CreateCommon,
}

#[derive(Args, Debug)]
pub struct CreateCommon {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's host PID to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on ramfs).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility; strata creates no session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (3, 4, ...) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub id: String,
    #[command(flatten)]
    pub common: CreateCommon,
    /// Return after starting the container instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container after it exits (runc compatibility).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Process JSON (an OCI `process` object) instead of the command line.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Allocate a pty.
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids; repeatable.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability; repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub id: String,
    /// LinuxResources JSON file, or - for stdin (what containerd sends).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Accepted for runc compatibility; kernel memory limits no longer exist.
    #[arg(long)]
    pub kernel_memory: Option<String>,
    #[arg(long)]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_share: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}
