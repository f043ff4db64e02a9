//! Creating processes for the host: the container (`create`) and exec'd ones, each by one call
//! of the runtime (this binary again, as `strata`), with their stdio and terminal.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_agent_protocol::{GuestInterface, Response, POD_NAMESPACE, SHARE_PREFIX};

use strata::cli::{Cli, Command, CreateArgs, CreateCommon, ExecArgs, LogFormat};

use crate::confine;

use super::{Agent, Key, Proc, ProcStdio, RUNTIME_ARGV0, RUNTIME_TIMEOUT};

impl Agent {
    /// Runs the strata runtime (this binary, as `strata`) for one `command`; its error message
    /// (from its JSON log) on failure. Unless `allow_vsock`, the runtime and everything it
    /// starts (the container's processes, its hooks) run under [`confine::deny_vsock`].
    pub(super) fn runtime(
        &self,
        command: Command,
        stdio: Option<[OwnedFd; 3]>,
        allow_vsock: bool,
    ) -> Result<Vec<u8>> {
        // One log per call: requests run concurrently, one thread per connection.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.cfg.work.join("logs").join(format!("{call}.log"));
        let _ = std::fs::remove_file(&log);
        let verb = command.name();
        let cli = Cli {
            root: self.cfg.work.join("state"),
            log: Some(log.clone()),
            log_format: LogFormat::Json,
            debug: false,
            systemd_cgroup: false,
            // Inside the guest the container runs natively, whatever its annotations asked
            // of the host (dev.strata.backend=vm would otherwise recurse).
            backend: Some("native".into()),
            // The node's policy was the host's to apply; no config file of the guest's (or,
            // in the loopback tests, of the host's) changes what the agent runs.
            config: PathBuf::from("/dev/null"),
            command,
        };
        let mut cmd = std::process::Command::new(&self.cfg.runtime);
        cmd.arg0(RUNTIME_ARGV0).arg(serde_json::to_string(&cli)?);
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        match stdio {
            Some([i, o, e]) => {
                cmd.stdin(Stdio::from(i))
                    .stdout(Stdio::from(o))
                    .stderr(Stdio::from(e));
                drop(out_w);
            }
            None => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(out_w))
                    .stderr(Stdio::null());
            }
        }
        if !allow_vsock {
            // SAFETY: the closure runs between fork and exec and makes one system call with a
            // static program (deny_vsock is async-signal-safe and allocates nothing).
            unsafe { cmd.pre_exec(confine::deny_vsock) };
        }
        let since = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.cfg.runtime.display()))?;
        let pid = child.id() as i32;
        // The reaper collects the status; the Child handle must not wait.
        drop(child);
        drop(cmd);
        let mut output = Vec::new();
        let _ = File::from(out_r).read_to_end(&mut output);
        let status = match self.reaper.wait(pid, since, Some(RUNTIME_TIMEOUT)) {
            Some(s) => s,
            None => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                bail!(
                    "strata {verb} did not finish within {} s",
                    RUNTIME_TIMEOUT.as_secs()
                );
            }
        };
        if status != 0 {
            let message = std::fs::read_to_string(&log)
                .ok()
                .and_then(|text| {
                    text.lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .rfind(|v| v["level"] == "error")
                        .and_then(|v| v["msg"].as_str().map(str::to_string))
                })
                .unwrap_or_else(|| format!("strata {verb} exited with status {status}"));
            let _ = std::fs::remove_file(&log);
            bail!("{message}");
        }
        let _ = std::fs::remove_file(&log);
        Ok(output)
    }

    /// Pipes for a process's stdio, or a console socket when it has a terminal. Returns the
    /// child's three fds, the extra runtime arguments, and our ends.
    pub(super) fn stdio_for(&self, tty: bool, name: &str) -> Result<ProcStdio> {
        if tty {
            // Named by a hash of the process's name: a 64-hex container ID and an exec ID
            // make a path longer than a Unix socket address holds (108 bytes).
            let path = self
                .cfg
                .work
                .join("console")
                .join(format!("{:016x}.sock", short_hash(name)));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).context("console socket")?;
            let null = || File::open("/dev/null").map(OwnedFd::from);
            return Ok((
                Some([null()?, null()?, null()?]),
                Some((path, listener)),
                [None, None, None],
            ));
        }
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (in_r, in_w) = nix::unistd::pipe2(cloexec)?;
        let (out_r, out_w) = nix::unistd::pipe2(cloexec)?;
        let (err_r, err_w) = nix::unistd::pipe2(cloexec)?;
        Ok((
            Some([in_r, out_w, err_w]),
            None,
            [Some(in_w), Some(out_r), Some(err_r)],
        ))
    }

    pub(super) fn receive_console(
        console: Option<(PathBuf, UnixListener)>,
    ) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
        let Some((path, listener)) = console else {
            return Ok((None, None));
        };
        // The runtime sent the master before it exited; the connection is queued.
        listener.set_nonblocking(true)?;
        let (conn, _) = listener
            .accept()
            .context("the runtime did not send the terminal")?;
        let master = strata_linux_recv_fd(&conn)?;
        let _ = std::fs::remove_file(path);
        let ctl = master.try_clone()?;
        Ok((Some(master), Some(ctl)))
    }

    pub(super) fn create(
        &self,
        id: &str,
        mut spec: serde_json::Value,
        allow_vsock: bool,
        network: &[GuestInterface],
        pod: Option<&str>,
        net_sysctls: &std::collections::BTreeMap<String, String>,
    ) -> Result<Response> {
        strata::state::validate_id(id)?;
        if self.procs().contains_key(&(id.to_string(), None)) {
            bail!("container {id:?} already exists in the guest");
        }
        if let Some(sandbox) = pod {
            if !network.is_empty() {
                bail!("a pod member gets its network from the pod's sandbox, not its own");
            }
            self.join_pod(&mut spec, sandbox)?;
        }
        if !network.is_empty() {
            // Outside a VM (the loopback tests) these would be the host's interfaces.
            if !self.cfg.pid1 {
                bail!("a network for the container, and the agent is not the guest's init");
            }
            crate::network::configure(network).context("configuring the guest's network")?;
        }
        if !net_sysctls.is_empty() {
            if !self.cfg.pid1 {
                bail!("network sysctls for the container, and the agent is not the guest's init");
            }
            crate::network::set_sysctls(net_sysctls)?;
        }
        let bundle = self.cfg.work.join("bundles").join(id);
        std::fs::create_dir_all(&bundle)?;
        rewrite_spec(&mut spec, &self.cfg.rootfs, &self.cfg.share)?;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        let tty = spec["process"]["terminal"].as_bool().unwrap_or(false);
        let (child, console, ours) = self.stdio_for(tty, id)?;
        let pid_file = bundle.join("init.pid");
        let command = Command::Create(CreateArgs {
            id: id.to_string(),
            common: CreateCommon {
                bundle,
                pid_file: Some(pid_file.clone()),
                // The guest's root is the initramfs, which pivot_root cannot leave; the VM is
                // the isolation boundary that matters here.
                no_pivot: self.cfg.pid1,
                ..Default::default()
            },
        });
        self.launch(
            (id.to_string(), None),
            command,
            (child, console, ours),
            &pid_file,
            allow_vsock,
        )
    }

    /// Points a pod member's shared namespaces (those the host marked `POD_NAMESPACE`) at
    /// the pod's sandbox container's: joined by path where it has one of its own, shared
    /// like the sandbox's where it uses the guest's (the network, when the host's interfaces
    /// were carried in).
    fn join_pod(&self, spec: &mut serde_json::Value, sandbox: &str) -> Result<()> {
        let (pid, since) = self
            .lookup(&(sandbox.to_string(), None))
            .context("the pod's sandbox container")?;
        if self.reaper.exited(pid, since).is_some() {
            bail!("the pod's sandbox container {sandbox:?} has exited");
        }
        let config = self
            .cfg
            .work
            .join("bundles")
            .join(sandbox)
            .join("config.json");
        let sandbox_spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).context("the sandbox's config")?)?;
        let has = |typ: &str| {
            sandbox_spec["linux"]["namespaces"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n["type"] == typ))
        };
        let list = spec["linux"]["namespaces"]
            .as_array_mut()
            .context("linux.namespaces in the member's spec")?;
        let mut joined = Vec::new();
        for n in list.iter_mut() {
            if n["path"] != POD_NAMESPACE {
                continue;
            }
            let typ = n["type"].as_str().unwrap_or_default().to_string();
            let name = match typ.as_str() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                "pid" => "pid",
                other => bail!("a pod member cannot share the sandbox's {other:?} namespace"),
            };
            if typ == "pid" && !has("pid") {
                // The guest's own PID namespace is the agent's.
                bail!("the pod's sandbox has no PID namespace of its own to share");
            }
            n["path"] = format!("/proc/{pid}/ns/{name}").into();
            joined.push(typ);
        }
        // Where the sandbox shares the guest's namespace, the member does too.
        list.retain(|n| {
            let typ = n["type"].as_str().unwrap_or_default();
            !joined.iter().any(|t| t == typ) || has(typ)
        });
        Ok(())
    }

    /// Removes a container from the guest: processes, runtime state, bundle.
    pub(super) fn delete(&self, id: &str) -> Result<Response> {
        strata::state::validate_id(id)?;
        let allow_vsock = self.allows_vsock(id);
        let command = Command::Delete {
            id: id.to_string(),
            force: true,
        };
        let result = self.runtime(command, None, allow_vsock);
        self.procs().retain(|(cid, _), _| cid != id);
        let _ = std::fs::remove_dir_all(self.cfg.work.join("bundles").join(id));
        result.map(|_| Response::Ok)
    }

    pub(super) fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: serde_json::Value,
    ) -> Result<Response> {
        strata::state::validate_id(exec_id).context("exec id")?;
        let key = (id.to_string(), Some(exec_id.to_string()));
        if self.procs().contains_key(&key) {
            bail!("exec {exec_id:?} already exists in container {id:?}");
        }
        let file = self
            .cfg
            .work
            .join("exec")
            .join(format!("{id}-{exec_id}.json"));
        std::fs::write(&file, serde_json::to_vec(&process)?)?;
        let pid_file = self
            .cfg
            .work
            .join("exec")
            .join(format!("{id}-{exec_id}.pid"));
        let tty = process["terminal"].as_bool().unwrap_or(false);
        let (child, console, ours) = self.stdio_for(tty, &format!("{id}-{exec_id}"))?;
        let command = Command::Exec(ExecArgs {
            id: id.to_string(),
            process: Some(file.clone()),
            pid_file: Some(pid_file.clone()),
            detach: true,
            ..Default::default()
        });
        let allow_vsock = self.allows_vsock(id);
        let created = self.launch(key, command, (child, console, ours), &pid_file, allow_vsock);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&pid_file);
        created
    }

    /// Runs `strata create` or `strata exec` (`command`, to which the console socket is
    /// added), then records the new process under `key` with our ends of its stdio.
    pub(super) fn launch(
        &self,
        key: Key,
        mut command: Command,
        stdio: ProcStdio,
        pid_file: &Path,
        allow_vsock: bool,
    ) -> Result<Response> {
        let (child, console, ours) = stdio;
        let socket = console.as_ref().map(|(path, _)| path.clone());
        match &mut command {
            Command::Create(a) => a.common.console_socket = socket,
            Command::Exec(a) => a.console_socket = socket,
            _ => {}
        }
        let since = Instant::now();
        self.runtime(command, child, allow_vsock)?;
        let (tty, tty_ctl) = Self::receive_console(console)?;
        let pid: i32 = std::fs::read_to_string(pid_file)?
            .trim()
            .parse()
            .context("the runtime's pid file")?;
        let [stdin, stdout, stderr] = ours;
        self.procs().insert(
            key,
            Proc {
                pid,
                since,
                stdin,
                stdout,
                stderr,
                tty,
                tty_ctl,
                allow_vsock,
            },
        );
        Ok(Response::Created { pid })
    }
}

fn strata_linux_recv_fd(conn: &UnixStream) -> Result<OwnedFd> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(strata_linux::tty::recv_fd(conn.as_raw_fd())?)
}

/// Points the spec at the guest's view: the shared rootfs, bind sources in the share, and a
/// cgroup path of the guest's own.
pub fn rewrite_spec(spec: &mut serde_json::Value, rootfs: &Path, share: &Path) -> Result<()> {
    // A name in the share's top directory, nothing that climbs out of it.
    let in_share = |value: &serde_json::Value| -> Result<Option<serde_json::Value>> {
        let Some(name) = value.as_str().and_then(|s| s.strip_prefix(SHARE_PREFIX)) else {
            return Ok(None);
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("bad share name {name:?} from the host");
        }
        Ok(Some(share.join(name).to_string_lossy().to_string().into()))
    };
    // A pod member's root is in the share; a VM's own container has the rootfs device.
    spec["root"]["path"] = match in_share(&spec["root"]["path"])? {
        Some(path) => path,
        None => rootfs.to_string_lossy().to_string().into(),
    };
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts {
            if let Some(path) = in_share(&m["source"])? {
                m["source"] = path;
            }
        }
    }
    Ok(())
}

/// A stable 64-bit hash of a process's name, for short socket paths.
fn short_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}
