//! The agent's requests, served one connection per thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};
use strata_agent_protocol::{
    copy_stream, read_frame, write_frame, FrameError, GuestFile, Request, Response, Stream,
    FILE_PREFIX, NOT_RUNNING,
};

use strata::cli::{Cli, Command, CreateArgs, CreateCommon, ExecArgs, LogFormat, UpdateArgs};

use crate::confine;
use crate::reaper::Reaper;
use crate::{Config, Endpoint};

/// The name the agent runs itself under to be the runtime (see `main`).
pub const RUNTIME_ARGV0: &str = "strata";

/// How long one runtime command (create, start, exec, ...) may take.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);

type Key = (String, Option<String>);

/// A new process's stdio: the fds the runtime passes on, the console socket it sends a
/// terminal to, and the agent's ends of the pipes.
type ProcStdio = (
    Option<[OwnedFd; 3]>,
    Option<(PathBuf, UnixListener)>,
    [Option<OwnedFd>; 3],
);

/// A container init or exec'd process and the agent's ends of its stdio.
struct Proc {
    pid: i32,
    since: Instant,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    tty: Option<OwnedFd>,
    /// A second handle on the pty master, for resizes after the stream took the first.
    tty_ctl: Option<OwnedFd>,
    /// The host let the container open AF_VSOCK sockets (for an exec: its container did).
    allow_vsock: bool,
}

struct Agent {
    cfg: Config,
    reaper: Reaper,
    procs: Mutex<HashMap<Key, Proc>>,
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

pub fn serve(cfg: Config, reaper: Reaper) -> Result<()> {
    for dir in ["state", "bundles", "files", "console", "logs", "exec"] {
        std::fs::create_dir_all(cfg.work.join(dir))?;
    }
    let listener = listen(&cfg.listen)?;
    if let Some(ready) = &cfg.ready {
        announce(ready)?;
    }
    let agent = Arc::new(Agent {
        cfg,
        reaper,
        procs: Mutex::new(HashMap::new()),
    });
    loop {
        let conn = match listener.accept() {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("accepting a connection"),
        };
        let agent = agent.clone();
        std::thread::spawn(move || agent.connection(conn));
    }
}

enum Listener {
    Unix(UnixListener),
    Vsock(OwnedFd),
}

impl Listener {
    /// The next connection, or None for one refused (and closed) because of its peer.
    fn accept(&self) -> std::io::Result<Option<UnixStream>> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Some(s)),
            Listener::Vsock(fd) => {
                let conn = socket::accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
                // SAFETY: accept4 returned a new socket fd that nothing else owns.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
                let peer = socket::getpeername::<VsockAddr>(fd.as_raw_fd()).ok();
                if !peer.is_some_and(|p| admits(p.cid())) {
                    log_refused(peer);
                    return Ok(None);
                }
                // A vsock stream is driven with the same read/write/shutdown calls as a Unix
                // stream; UnixStream is only the owner and the Read/Write impls here.
                Ok(Some(UnixStream::from(fd)))
            }
        }
    }
}

/// Whether a vsock peer may talk to the agent: the host only. Anything inside the guest (a
/// container allowed vsock, through the loopback CID, the guest's own CID, or a transport that
/// reflects it) must not, for the agent obeys whoever reaches it.
pub fn admits(peer_cid: u32) -> bool {
    peer_cid == strata_agent_protocol::HOST_CID
}

/// Says that a peer (None: one whose address could not be read) was refused; the 1st, 2nd,
/// 4th, 8th, ... time only, so that a container that keeps trying cannot fill the host's copy
/// of the console.
fn log_refused(peer: Option<VsockAddr>) {
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        let from = peer.map_or_else(
            || "an unknown peer".to_string(),
            |p| format!("CID {} port {}", p.cid(), p.port()),
        );
        eprintln!(
            "strata-agent: refused a vsock connection from {from}: only the host (CID {}) is \
             served ({n} refused so far)",
            libc::VMADDR_CID_HOST
        );
    }
}

fn vsock_socket() -> Result<OwnedFd> {
    socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("vsock socket (is virtio-vsock in the guest kernel?)")
}

fn listen(at: &Endpoint) -> Result<Listener> {
    match at {
        Endpoint::Unix(path) => {
            let _ = std::fs::remove_file(path);
            Ok(Listener::Unix(UnixListener::bind(path).with_context(
                || format!("listening on {}", path.display()),
            )?))
        }
        Endpoint::Vsock { cid, port } => {
            let fd = vsock_socket()?;
            socket::bind(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))
                .with_context(|| format!("binding vsock port {port}"))?;
            socket::listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))
                .context("vsock listen")?;
            Ok(Listener::Vsock(fd))
        }
    }
}

fn connect(to: &Endpoint) -> Result<UnixStream> {
    match to {
        Endpoint::Unix(path) => {
            UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))
        }
        Endpoint::Vsock { cid, port } => {
            let fd = vsock_socket()?;
            socket::connect(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))
                .with_context(|| format!("connecting to host vsock port {port}"))?;
            Ok(UnixStream::from(fd))
        }
    }
}

/// Tells the host the agent is listening.
fn announce(to: &Endpoint) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match connect(to) {
            Ok(mut s) => {
                write_frame(&mut s, &Response::Ok).context("sending ready")?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no ready endpoint")))
        .context("telling the host the agent is up")
}

impl Agent {
    fn connection(self: Arc<Self>, mut conn: UnixStream) {
        loop {
            let req: Request = match read_frame(&mut conn) {
                Ok(r) => r,
                Err(FrameError::Closed) => return,
                Err(e) => {
                    // A bad frame gets a reason, then the connection ends: the stream can no
                    // longer be trusted to be in step.
                    let _ = write_frame(&mut conn, &error(format!("bad request: {e}")));
                    return;
                }
            };
            match req {
                Request::Attach {
                    id,
                    exec_id,
                    stream,
                } => {
                    return self.attach(conn, (id, exec_id), stream);
                }
                Request::Shutdown => {
                    let _ = write_frame(&mut conn, &Response::Ok);
                    drop(conn);
                    self.shutdown();
                }
                other => {
                    let reply = self.handle(other);
                    if write_frame(&mut conn, &reply).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Create {
                id,
                spec,
                files,
                allow_vsock,
            } => self.create(&id, spec, &files, allow_vsock),
            Request::Start { id } => {
                let allow_vsock = self.allows_vsock(&id);
                self.runtime(Command::Start { id }, None, allow_vsock)
                    .map(|_| Response::Ok)
            }
            Request::Exec {
                id,
                exec_id,
                process,
            } => self.exec(&id, &exec_id, process),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => self.signal((id, exec_id), signal, all),
            Request::Wait { id, exec_id } => self.wait(&(id, exec_id)),
            Request::ResizeTty {
                id,
                exec_id,
                rows,
                cols,
            } => self.resize(&(id, exec_id), rows, cols),
            Request::Stats { id } => self.stats(&id),
            Request::Update { id, resources } => self.update(&id, resources),
            Request::Attach { .. } | Request::Shutdown => {
                Err(anyhow::anyhow!("not a control request"))
            }
        };
        result.unwrap_or_else(|e| error(format!("{e:#}")))
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether container `id` may open AF_VSOCK sockets (an unknown one may not).
    fn allows_vsock(&self, id: &str) -> bool {
        self.procs()
            .get(&(id.to_string(), None))
            .is_some_and(|p| p.allow_vsock)
    }

    /// Runs the strata runtime (this binary, as `strata`) for one `command`; its error message
    /// (from its JSON log) on failure. Unless `allow_vsock`, the runtime and everything it
    /// starts (the container's processes, its hooks) run under [`confine::deny_vsock`].
    fn runtime(
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
    fn stdio_for(&self, tty: bool, name: &str) -> Result<ProcStdio> {
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

    fn receive_console(
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

    fn create(
        &self,
        id: &str,
        mut spec: serde_json::Value,
        files: &[GuestFile],
        allow_vsock: bool,
    ) -> Result<Response> {
        strata::state::validate_id(id)?;
        if self.procs().contains_key(&(id.to_string(), None)) {
            bail!("container {id:?} already exists in the guest");
        }
        let bundle = self.cfg.work.join("bundles").join(id);
        let file_dir = self.cfg.work.join("files").join(id);
        std::fs::create_dir_all(&bundle)?;
        std::fs::create_dir_all(&file_dir)?;
        for f in files {
            if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
                bail!("bad file name {:?} from the host", f.name);
            }
            let path = file_dir.join(&f.name);
            std::fs::write(&path, &f.content)?;
            std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(f.mode & 0o7777),
            )?;
        }
        rewrite_spec(&mut spec, &self.cfg.rootfs, &file_dir);
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

    fn exec(&self, id: &str, exec_id: &str, process: serde_json::Value) -> Result<Response> {
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
    fn launch(
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

    fn lookup(&self, key: &Key) -> Result<(i32, Instant)> {
        self.procs()
            .get(key)
            .map(|p| (p.pid, p.since))
            .ok_or_else(|| match &key.1 {
                None => anyhow::anyhow!("container {:?} does not exist in the guest", key.0),
                Some(e) => anyhow::anyhow!("exec {e:?} does not exist in container {:?}", key.0),
            })
    }

    fn signal(&self, key: Key, signal: i32, all: bool) -> Result<Response> {
        if signal != 0 {
            nix::sys::signal::Signal::try_from(signal).context("signal number")?;
        }
        if all && key.1.is_none() {
            let allow_vsock = self.allows_vsock(&key.0);
            let command = Command::Kill {
                id: key.0,
                signal: Some(signal.to_string()),
                all: true,
            };
            self.runtime(command, None, allow_vsock)?;
            return Ok(Response::Ok);
        }
        let (pid, since) = self.lookup(&key)?;
        if self.reaper.exited(pid, since).is_some() {
            bail!("{NOT_RUNNING}");
        }
        // Signal 0 only asks whether the process exists, as kill(2) does.
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling pid {pid}"));
        }
        Ok(Response::Ok)
    }

    fn wait(&self, key: &Key) -> Result<Response> {
        let (pid, since) = self.lookup(key)?;
        match self.reaper.wait(pid, since, None) {
            Some(status) => Ok(Response::Exited { status }),
            None => bail!("lost track of pid {pid}"),
        }
    }

    fn resize(&self, key: &Key, rows: u16, cols: u16) -> Result<Response> {
        let procs = self.procs();
        let fd = procs
            .get(key)
            .and_then(|p| p.tty_ctl.as_ref())
            .context("the process has no terminal")?;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(std::io::Error::last_os_error()).context("resizing the terminal");
        }
        Ok(Response::Ok)
    }

    fn stats(&self, id: &str) -> Result<Response> {
        let command = Command::Events {
            id: id.to_string(),
            stats: true,
            interval: "5s".into(),
        };
        let out = self.runtime(command, None, self.allows_vsock(id))?;
        let event: serde_json::Value =
            serde_json::from_slice(&out).context("stats from the runtime")?;
        Ok(Response::Stats {
            stats: event["data"].clone(),
        })
    }

    fn update(&self, id: &str, resources: serde_json::Value) -> Result<Response> {
        let file = self.cfg.work.join("exec").join(format!("{id}-update.json"));
        std::fs::write(&file, serde_json::to_vec(&resources)?)?;
        let command = Command::Update(UpdateArgs {
            id: id.to_string(),
            resources: Some(file.clone()),
            ..Default::default()
        });
        let result = self.runtime(command, None, self.allows_vsock(id));
        let _ = std::fs::remove_file(&file);
        result.map(|_| Response::Ok)
    }

    fn attach(&self, mut conn: UnixStream, key: Key, stream: Stream) {
        let fd = {
            let mut procs = self.procs();
            procs.get_mut(&key).and_then(|p| match stream {
                Stream::Stdin => p.stdin.take(),
                Stream::Stdout => p.stdout.take(),
                Stream::Stderr => p.stderr.take(),
                Stream::Tty => p.tty.take(),
            })
        };
        let Some(fd) = fd else {
            let _ = write_frame(
                &mut conn,
                &error(format!(
                    "no {stream:?} stream to attach for {key:?} (unknown, or attached already)"
                )),
            );
            return;
        };
        if write_frame(&mut conn, &Response::Ok).is_err() {
            return;
        }
        let file = File::from(fd);
        match stream {
            Stream::Stdout | Stream::Stderr => {
                copy_stream(file, &conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            Stream::Stdin => copy_stream(&conn, file),
            Stream::Tty => {
                let (Ok(reader), Ok(to_host)) = (file.try_clone(), conn.try_clone()) else {
                    return;
                };
                let out = std::thread::spawn(move || {
                    copy_stream(reader, &to_host);
                    let _ = to_host.shutdown(std::net::Shutdown::Write);
                });
                copy_stream(&conn, file);
                let _ = out.join();
            }
        }
    }

    fn shutdown(&self) -> ! {
        if self.cfg.pid1 {
            power_off();
        }
        std::process::exit(0);
    }
}

fn strata_linux_recv_fd(conn: &UnixStream) -> Result<OwnedFd> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(strata_linux::tty::recv_fd(conn.as_raw_fd())?)
}

/// Points the spec at the guest's view: the shared rootfs, the copied bind sources, and a
/// cgroup path of the guest's own.
pub fn rewrite_spec(spec: &mut serde_json::Value, rootfs: &Path, files: &Path) {
    spec["root"]["path"] = serde_json::Value::String(rootfs.to_string_lossy().to_string());
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts {
            if let Some(name) = m["source"]
                .as_str()
                .and_then(|s| s.strip_prefix(FILE_PREFIX))
            {
                m["source"] =
                    serde_json::Value::String(files.join(name).to_string_lossy().to_string());
            }
        }
    }
}

/// A stable 64-bit hash of a process's name, for short socket paths.
fn short_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Mounts what a container host needs, and the rootfs the host shares over virtio-fs.
pub fn setup_guest(cfg: &Config) -> Result<()> {
    let none: Option<&str> = None;
    let m =
        |src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>| -> Result<()> {
            std::fs::create_dir_all(target)?;
            mount(Some(src), target, Some(fstype), flags, data)
                .with_context(|| format!("mounting {fstype} on {target}"))
        };
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m("proc", "/proc", "proc", hard, none)?;
    m("sysfs", "/sys", "sysfs", hard, none)?;
    m(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    )?;
    m(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    m("cgroup2", "/sys/fs/cgroup", "cgroup2", hard, none)?;
    // Controllers for the containers' cgroups; those the kernel lacks are simply absent.
    for c in ["cpu", "cpuset", "memory", "pids", "io"] {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("+{c}"));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let tag = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("strata.rootfs="))
        .context("no strata.rootfs=<tag> on the kernel command line")?;
    std::fs::create_dir_all(&cfg.rootfs)?;
    mount(
        Some(tag),
        &cfg.rootfs,
        Some("virtiofs"),
        MsFlags::empty(),
        none,
    )
    .with_context(|| format!("mounting the virtio-fs rootfs {tag:?}"))?;
    Ok(())
}

/// Ends the guest: the VMM (or QEMU with -no-reboot) exits when the guest resets.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_is_served_over_vsock() {
        assert!(admits(libc::VMADDR_CID_HOST));
        // Loopback, the guest's own CID, the hypervisor, "any", and some other VM.
        for cid in [
            libc::VMADDR_CID_LOCAL,
            strata_agent_protocol::GUEST_CID,
            libc::VMADDR_CID_HYPERVISOR,
            libc::VMADDR_CID_ANY,
            4,
        ] {
            assert!(!admits(cid), "CID {cid} admitted");
        }
    }
}
