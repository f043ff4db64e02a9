//! The lifecycle commands, backend-independent: state checks, the state store, hooks that run
//! in the runtime, pid files; the backend does the isolation work.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::{Process, Spec};

use crate::backend::{self, CreateRequest, ExecRequest};
use crate::cli::{Cli, CreateCommon, ExecArgs, ListFormat};
use crate::config::{self, Kind, NodeConfig};
use crate::foreground;
use crate::state::{self, ContainerDir, Record, Status};
use strata_agent_protocol::NOT_RUNNING;

pub struct Globals<'a> {
    pub root: &'a Path,
    pub backend: Option<&'a str>,
    pub config: &'a Path,
    pub config_explicit: bool,
    pub systemd_cgroup: bool,
}

impl<'a> Globals<'a> {
    pub fn from_cli(cli: &'a Cli, config_explicit: bool) -> Self {
        Globals {
            root: &cli.root,
            backend: cli.backend.as_deref().or_else(|| {
                std::env::args_os()
                    .next()
                    .and_then(|a0| backend_from_program_name(Path::new(&a0)))
            }),
            config: &cli.config,
            config_explicit,
            systemd_cgroup: cli.systemd_cgroup,
        }
    }
}

/// Installed as `strata-sandbox` or `strata-vm` (a link to strata), strata acts as if given
/// `--backend sandbox|vm`: clients that take only a binary path (containerd's runc shim
/// `BinaryName`, Docker's `runtimes`) get one handler per strength that way.
pub fn backend_from_program_name(argv0: &Path) -> Option<&'static str> {
    let name = argv0.file_name()?.to_str()?;
    let suffix = name.strip_prefix("strata-")?;
    [Kind::Native, Kind::Sandbox, Kind::Vm]
        .into_iter()
        .find(|k| k.name() == suffix)
        .map(Kind::name)
}

/// What the container's backend adds to its `state` (nothing, in a build without it).
fn backend_annotations(rec: &Record) -> Vec<(String, String)> {
    backend::of(rec.backend)
        .map(|b| b.state_annotations(rec))
        .unwrap_or_default()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("bundle {}: cannot read config.json", bundle.display()))?;
    parse_json(&text, &path)
}

/// Parses JSON, naming the field that is wrong ("process.args: invalid type ...").
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        if field == "." {
            anyhow::anyhow!("{}: {}", path.display(), e.inner())
        } else {
            anyhow::anyhow!("{}: {field}: {}", path.display(), e.inner())
        }
    })
}

/// LISTEN_FDS from systemd socket activation are passed on like runc does: as the first
/// preserved fds, with LISTEN_FDS and LISTEN_PID=1 in the container's environment.
fn listen_fds() -> (i32, Vec<String>) {
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    if n > 0 && for_us {
        (
            n,
            vec![format!("LISTEN_FDS={n}"), "LISTEN_PID=1".to_string()],
        )
    } else {
        (0, Vec::new())
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("writing --pid-file {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing --pid-file {}", path.display()))
}

/// A pty whose master comes back to us rather than to a --console-socket.
fn own_console() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair for the terminal")
}

/// The console the process's pty master goes to: the caller's socket, or our own pair.
enum Console {
    None,
    Caller(OwnedFd),
    Ours { ours: OwnedFd, theirs: OwnedFd },
}

impl Console {
    fn setup(terminal: bool, socket: Option<&Path>, detach: bool, what: &str) -> Result<Console> {
        match (terminal, socket) {
            (false, _) => Ok(Console::None),
            (true, Some(p)) => Ok(Console::Caller(strata_linux::tty::connect_console_socket(
                p,
            )?)),
            (true, None) if detach => bail!(
                "{what}: process.terminal is set, so --console-socket is needed to receive the \
                 pty master"
            ),
            (true, None) => {
                let (ours, theirs) = own_console()?;
                Ok(Console::Ours { ours, theirs })
            }
        }
    }

    fn child_fd(&self) -> Option<i32> {
        match self {
            Console::None => None,
            Console::Caller(fd) => Some(fd.as_raw_fd()),
            Console::Ours { theirs, .. } => Some(theirs.as_raw_fd()),
        }
    }

    /// After the process was set up: the pty master, if it came to us.
    fn into_master(self) -> Result<Option<OwnedFd>> {
        match self {
            Console::Ours { ours, theirs } => {
                drop(theirs);
                Ok(Some(strata_linux::tty::recv_fd(ours.as_raw_fd())?))
            }
            _ => Ok(None),
        }
    }
}

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
            id,
            bundle: &bundle,
            spec: &spec,
            no_pivot: c.no_pivot,
            console: console.child_fd(),
            preserve_fds: listen + c.preserve_fds as i32,
            extra_env,
            start_listener: listener.as_raw_fd(),
            close_in_child: vec![dir.lock_fd()],
            on_cgroups: &record_cgroups,
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
        let st = rec.hook_state(rec.pid, "running");
        strata_linux::hooks::run_all_warn(h.poststart().as_deref().unwrap_or(&[]), &st);
    }
    Ok(())
}

pub fn start(g: &Globals, id: &str) -> Result<i32> {
    let dir = ContainerDir::open(g.root, id)?;
    let mut rec = dir.load()?;
    start_locked(&dir, &mut rec)?;
    Ok(0)
}

pub fn state(g: &Globals, id: &str) -> Result<i32> {
    state::validate_id(id)?;
    let path = g.root.join(id).join("state.json");
    if !path.exists() {
        bail!("container {id:?} does not exist");
    }
    let rec = state::read_record(&path)?;
    let st = rec.oci_state(rec.live_status(), backend_annotations(&rec));
    println!("{}", serde_json::to_string_pretty(&st)?);
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
        strata_linux::hooks::run_all_warn(h.poststop().as_deref().unwrap_or(&[]), &st);
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
            if g.root.join(id).exists() {
                let _ = std::fs::remove_dir_all(g.root.join(id));
            }
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
    let dir = ContainerDir::open(g.root, &a.id)?;
    let rec = dir.load()?;
    match rec.live_status() {
        Status::Running | Status::Created => {}
        other => bail!("cannot exec in container {:?}: it is {other}", a.id),
    }
    let process = exec_process(&rec, a)?;
    let terminal = process.terminal().unwrap_or(false);
    let console = Console::setup(terminal, a.console_socket.as_deref(), a.detach, "exec")?;
    if !a.detach {
        foreground::block_signals()?;
    }
    let (listen, extra_env) = listen_fds();
    let req = ExecRequest {
        process: &process,
        console: console.child_fd(),
        preserve_fds: listen + a.preserve_fds as i32,
        extra_env,
        close_in_child: vec![dir.lock_fd()],
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

pub fn list(g: &Globals, format: ListFormat, quiet: bool) -> Result<i32> {
    let recs = state::list(g.root);
    if quiet {
        for r in &recs {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    match format {
        ListFormat::Json => {
            let states: Vec<_> = recs
                .iter()
                .map(|r| r.oci_state(r.live_status(), backend_annotations(r)))
                .collect();
            println!("{}", serde_json::to_string(&states)?);
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = recs
                .iter()
                .map(|r| {
                    let st = r.live_status();
                    [
                        r.id.clone(),
                        if st == Status::Stopped { 0 } else { r.pid }.to_string(),
                        st.to_string(),
                        r.bundle.display().to_string(),
                        r.created.clone(),
                        r.owner.clone(),
                    ]
                })
                .collect();
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut widths = [0usize; 6];
            for row in std::iter::once(&header).chain(rows.iter()) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(rows.iter()) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
    }
    Ok(0)
}

pub fn spec(bundle: &Path, rootless: bool) -> Result<i32> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    let v = crate::default_spec::default_spec(rootless);
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}

pub fn features() -> Result<i32> {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let mut annotations = HashMap::new();
    annotations.insert("dev.strata.version", env!("CARGO_PKG_VERSION"));
    annotations.insert(config::ANNOTATION, "native");
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        // The parser's own tables: what strata acts on, and nothing it refuses (idmap).
        "mountOptions": strata_linux::rootfs::options::known(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                               "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                   "SECCOMP_FILTER_FLAG_LOG"]
            },
            // Supported by strata (applied where the host runs the module), as runc means it.
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": annotations,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

#[cfg(test)]
mod program_name_tests {
    use super::backend_from_program_name as b;
    use std::path::Path;

    #[test]
    fn link_names_pick_a_backend() {
        assert_eq!(
            b(Path::new("/usr/local/bin/strata-sandbox")),
            Some("sandbox")
        );
        assert_eq!(b(Path::new("strata-vm")), Some("vm"));
        assert_eq!(b(Path::new("/usr/bin/strata-native")), Some("native"));
        assert_eq!(b(Path::new("/usr/bin/strata")), None);
        assert_eq!(b(Path::new("/usr/bin/strata-fast")), None);
    }
}
