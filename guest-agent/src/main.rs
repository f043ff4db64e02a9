//! strata-agent: PID 1 of the vm backend's guest.
//!
//! It mounts the pseudo filesystems and the virtio-fs rootfs, listens on vsock port 1024 (for
//! the host only: a peer of any other CID is closed at once), tells the host it is up (a
//! connection to host port 1025), and runs containers with the strata runtime itself — the same
//! binary, run again as `strata` with one command as JSON (the runtime built as a library
//! without its command line, sandbox or vm backends), so the workload
//! sees exactly the native backend's OCI semantics (namespaces, cgroups, seccomp), inside the
//! guest, plus the agent's own filter that keeps the container off AF_VSOCK unless the host
//! allows it ([`confine`]). It relays each stdio stream on a connection of its own, reaps every
//! process of the guest, and powers the guest off on `Shutdown`.
//!
//! Off a VM (the loopback tests) the same agent runs as an ordinary host process:
//! `strata-agent --listen unix:PATH --ready unix:PATH --runtime PATH --work DIR --rootfs DIR --share DIR`.

mod confine;
mod guest;
mod network;
mod reaper;
mod server;
mod transport;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Where the agent listens or reports.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Vsock { cid: u32, port: u32 },
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Endpoint,
    pub ready: Option<Endpoint>,
    /// The binary run as the runtime: this agent itself (the guest's `/bin/strata` links to
    /// `/init`).
    pub runtime: PathBuf,
    /// Bundles, console sockets, logs and the runtime's state live under here.
    pub work: PathBuf,
    /// The container rootfs (the virtio-fs mount in a guest).
    pub rootfs: PathBuf,
    /// The host's share of bind-mounted directories and files (the second virtio-fs mount in
    /// a guest, when the host exports one).
    pub share: PathBuf,
    /// Running as the guest's init: set up the system, power off on shutdown.
    pub pid1: bool,
}

fn parse_endpoint(s: &str, what: &str) -> Result<Endpoint> {
    if let Some(path) = s.strip_prefix("unix:") {
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = s.strip_prefix("vsock:") {
        let parts: Vec<&str> = rest.split(':').collect();
        let parse = |p: &str| {
            p.parse::<u32>()
                .with_context(|| format!("{what}: bad number {p:?}"))
        };
        return match parts.as_slice() {
            [port] => Ok(Endpoint::Vsock {
                cid: libc::VMADDR_CID_ANY,
                port: parse(port)?,
            }),
            [cid, port] => Ok(Endpoint::Vsock {
                cid: parse(cid)?,
                port: parse(port)?,
            }),
            _ => bail!("{what}: expected vsock:[CID:]PORT, got {s:?}"),
        };
    }
    bail!("{what}: expected unix:PATH or vsock:[CID:]PORT, got {s:?}")
}

fn config() -> Result<Config> {
    let pid1 = std::process::id() == 1;
    let mut cfg = Config {
        listen: Endpoint::Vsock {
            cid: libc::VMADDR_CID_ANY,
            port: strata_agent_protocol::AGENT_PORT,
        },
        ready: Some(Endpoint::Vsock {
            cid: libc::VMADDR_CID_HOST,
            port: strata_agent_protocol::READY_PORT,
        }),
        runtime: PathBuf::from("/bin/strata"),
        work: PathBuf::from("/run/strata"),
        rootfs: PathBuf::from("/run/strata/rootfs"),
        share: PathBuf::from("/run/strata/share"),
        pid1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => cfg.listen = parse_endpoint(&value()?, "--listen")?,
            "--ready" => cfg.ready = Some(parse_endpoint(&value()?, "--ready")?),
            "--runtime" => cfg.runtime = PathBuf::from(value()?),
            "--work" => cfg.work = PathBuf::from(value()?),
            "--rootfs" => cfg.rootfs = PathBuf::from(value()?),
            "--share" => cfg.share = PathBuf::from(value()?),
            // The kernel passes unknown command-line words to init; ignore them there.
            _ if pid1 => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(cfg)
}

fn main() {
    // Multi-call: as `strata` this binary is the runtime, for the one command the agent
    // hands it as JSON (see `Server::runtime`).
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == server::RUNTIME_ARGV0)
    {
        let command = args.next().unwrap_or_default();
        strata::entry::run_serialized(command.as_encoded_bytes());
    }
    let cfg = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata-agent: {e:#}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg.clone()) {
        eprintln!("strata-agent: {e:#}");
        if cfg.pid1 {
            // PID 1 must not exit: power off so the host sees the VM end.
            guest::power_off();
        }
        std::process::exit(1);
    }
}

fn run(cfg: Config) -> Result<()> {
    // SIGCHLD is taken by the reaper thread only; block it before any thread exists.
    reaper::block_sigchld()?;
    if cfg.pid1 {
        guest::setup_guest(&cfg).context("setting up the guest")?;
    } else {
        // Container inits are our grandchildren (the runtime's intermediate exits): adopt them.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    std::fs::create_dir_all(cfg.work.join("state"))?;
    let reaper = reaper::Reaper::start()?;
    server::serve(cfg, reaper)
}
