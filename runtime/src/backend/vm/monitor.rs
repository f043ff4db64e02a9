//! The host processes of a vm container.
//!
//! The **monitor** is the container's PID for its caller (`--pid-file`, the shim, `state`): it
//! starts the VM, waits for the agent, creates the container in the guest, relays the init's
//! stdio (or terminal) between the runtime's inherited fds and the agent's streams, turns
//! `strata start` into the agent's Start, forwards the signals it receives, and exits with the
//! workload's status (128+N for a signal) after powering the guest off.
//!
//! The **exec relay** is the same for one `exec`: the exec's PID for the shim, exiting with the
//! exec'd process's status.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use strata_linux::cgroups::CgroupSet;

use super::client::{accept_ready, AgentAddr, REQUEST_TIMEOUT};
use super::driver::{Hypervisor, Launch, VSOCK_SOCKET};
use super::plan::GuestPlan;
use super::share;
use strata_agent_protocol::copy_stream;
use strata_agent_protocol::{Request, Response, Stream, READY_PORT};

/// How long a guest may take from launch to its agent's "ready" (TCG under load is slow).
const BOOT_TIMEOUT_MS: u16 = 60_000;

/// The signals a foreground runtime forwards (see `crate::foreground`), without SIGCHLD.
fn forwarded_set() -> SigSet {
    let mut set = crate::foreground::handled_signals();
    set.remove(Signal::SIGCHLD);
    set
}

/// With host hooks: the monitor enters the container's host-side network namespace (the
/// bundle's, or a new one), says so on `ready`, and waits on `go` while the runtime runs the
/// hooks with the monitor as the state's pid; then it takes that namespace's interfaces over
/// for the VM. The redirects go with the monitor (or with the namespace, if nobody else holds
/// it).
pub struct NetworkGate {
    pub ready: OwnedFd,
    pub go: OwnedFd,
    /// The bundle's network namespace path, if it names one.
    pub join: Option<PathBuf>,
}

pub struct MonitorSetup {
    pub id: String,
    /// The container's state directory (its `vm.json`).
    pub state_dir: PathBuf,
    pub gate: Option<NetworkGate>,
    pub plan: GuestPlan,
    pub driver: Box<dyn Hypervisor>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub run_dir: PathBuf,
    pub start_listener: RawFd,
    /// A connection to the caller's console socket, when the process has a terminal.
    pub console: Option<RawFd>,
    pub cgroups: CgroupSet,
    /// The taps of the VM's network interfaces (see `network`).
    pub nics: Vec<super::network::Nic>,
    /// Removed when the VM has ended (`delete` removes them too, should the monitor die).
    pub redirects: Option<super::network::Redirects>,
}

/// Where a process's stdio goes on the host: our own stdio fds, or a pty whose master went to
/// the caller's console socket.
enum HostIo {
    Stdio,
    Pty(OwnedFd),
}

impl HostIo {
    fn new(console: Option<RawFd>) -> Result<HostIo> {
        let Some(sock) = console else {
            return Ok(HostIo::Stdio);
        };
        let pty = strata_linux::tty::open_pty(None)?;
        strata_linux::tty::send_fd(sock, pty.name.as_bytes(), pty.master.as_raw_fd())?;
        // The guest's pty does the terminal work; ours only carries bytes.
        if let Ok(mut t) = nix::sys::termios::tcgetattr(pty.slave.as_fd()) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ = nix::sys::termios::tcsetattr(
                pty.slave.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &t,
            );
        }
        Ok(HostIo::Pty(pty.slave))
    }
}

fn dup_fd(fd: BorrowedFd) -> Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Connects the process's streams; returns the output relays to wait for at the end.
fn attach(
    addr: &AgentAddr,
    id: &str,
    exec_id: Option<&str>,
    io: &HostIo,
) -> Result<Vec<JoinHandle<()>>> {
    let mut outputs = Vec::new();
    match io {
        HostIo::Stdio => {
            let stdin_conn = addr.attach(id, exec_id, Stream::Stdin)?;
            let stdout_conn = addr.attach(id, exec_id, Stream::Stdout)?;
            let stderr_conn = addr.attach(id, exec_id, Stream::Stderr)?;
            // SAFETY: fd 0 is open for the life of the process (the runtime's stdin).
            let stdin = dup_fd(unsafe { BorrowedFd::borrow_raw(0) })?;
            std::thread::spawn(move || {
                copy_stream(stdin, &stdin_conn);
                let _ = stdin_conn.shutdown(std::net::Shutdown::Write);
            });
            // SAFETY: fds 1 and 2 are open for the life of the process.
            let (out, err) = unsafe { (BorrowedFd::borrow_raw(1), BorrowedFd::borrow_raw(2)) };
            let (out, err) = (dup_fd(out)?, dup_fd(err)?);
            outputs.push(std::thread::spawn(move || copy_stream(stdout_conn, out)));
            outputs.push(std::thread::spawn(move || copy_stream(stderr_conn, err)));
        }
        HostIo::Pty(slave) => {
            let conn = addr.attach(id, exec_id, Stream::Tty)?;
            let to_guest = conn.try_clone()?;
            let from_host = dup_fd(slave.as_fd())?;
            std::thread::spawn(move || {
                copy_stream(from_host, &to_guest);
                let _ = to_guest.shutdown(std::net::Shutdown::Write);
            });
            let to_host = dup_fd(slave.as_fd())?;
            outputs.push(std::thread::spawn(move || copy_stream(conn, to_host)));
        }
    }
    Ok(outputs)
}

fn winsize(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into a live local.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0)
        .then_some((ws.ws_row, ws.ws_col))
}

/// Waits for the guest process's exit status, or for `vm` (a pidfd of the process whose end
/// means the guest is gone) to end first.
fn wait_exit(addr: &AgentAddr, id: &str, exec_id: Option<&str>, vm: &OwnedFd) -> Result<i32> {
    let (tx, rx) = mpsc::channel();
    let (wake_r, wake_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (addr2, id2, exec2) = (addr.clone(), id.to_string(), exec_id.map(str::to_string));
    std::thread::spawn(move || {
        let r = addr2.call(
            &Request::Wait {
                id: id2,
                exec_id: exec2,
            },
            None,
        );
        let _ = tx.send(r);
        let _ = File::from(wake_w).write_all(b"x");
    });
    let mut fds = [
        PollFd::new(wake_r.as_fd(), PollFlags::POLLIN),
        PollFd::new(vm.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the guest process"),
        }
    }
    match rx.try_recv() {
        Ok(Ok(reply)) => match reply.into_result()? {
            Response::Exited { status } => Ok(status),
            other => Err(other.unexpected().into()),
        },
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("the VM stopped before the process exited"),
    }
}

fn join_all(outputs: Vec<JoinHandle<()>>, within: Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for h in outputs {
            let _ = h.join();
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(within);
}

/// A reader that went away (a closed FIFO of the shim) must cost that stream only, never the
/// process that reports the workload's exit status.
fn ignore_sigpipe() {
    // SAFETY: ignoring a signal has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

fn block_forwarded() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_set()), None)
        .context("blocking signals")
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

/// Runs in the forked monitor process; returns its exit code. `report` gets "ok" once the
/// container exists in the guest, or the error that prevented it.
pub fn monitor(mut setup: MonitorSetup, report: OwnedFd) -> i32 {
    ignore_sigpipe();
    let mut children = Vec::new();
    let prepared = prepare(&mut setup, &mut children);
    let Some((addr, attached, vm)) = send_report(report, prepared) else {
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        return 1;
    };
    let id = setup.id.clone();
    let status = match run_started(&setup.id, setup.start_listener, &addr, &vm) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata: vm container {id}: {e:#}");
            255
        }
    };
    join_all(attached.outputs, Duration::from_secs(2));
    let _ = addr.call(&Request::Shutdown, Some(Duration::from_secs(5)));
    let mut fds = [PollFd::new(vm.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(5000u16));
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(r) = &setup.redirects {
        r.remove();
    }
    status
}

type Prepared = (AgentAddr, Attached, OwnedFd);

/// The network gate's side in the monitor (see [`NetworkGate`]).
fn pass_gate(setup: &mut MonitorSetup, gate: NetworkGate) -> Result<()> {
    match &gate.join {
        Some(path) => {
            let ns = File::open(path)
                .with_context(|| format!("the network namespace {}", path.display()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("joining the container's network namespace")?;
        }
        None => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("a network namespace for the container on the host")?,
    }
    File::from(gate.ready).write_all(b"r")?;
    let mut byte = [0u8; 1];
    if File::from(gate.go).read(&mut byte)? != 1 {
        bail!("the bundle's hooks did not complete");
    }
    let survey = super::network::survey_entered()?;
    if let Some(join) = &gate.join {
        // The bundle's namespace outlives the monitor: `delete` must know what to remove
        // there, should the monitor not get to it.
        if let Some(mut info) = super::VmInfo::read(&setup.state_dir) {
            info.netns = Some(join.clone());
            info.netns_id = Some(survey.id);
            info.links = survey.links();
            info.write(&setup.state_dir)?;
        }
    }
    let found = super::network::attach(survey)?;
    if found.guest.is_empty() && gate.join.is_none() {
        // The hooks made no interface: the container's own network namespace in the guest,
        // as without hooks.
        if let Some(list) = setup.plan.spec["linux"]["namespaces"].as_array_mut() {
            list.push(serde_json::json!({"type": "network"}));
        }
    }
    setup.plan.network = found.guest;
    setup.nics = found.nics;
    setup.redirects = Some(found.redirects);
    Ok(())
}

fn prepare(setup: &mut MonitorSetup, children: &mut Vec<Child>) -> Result<Prepared> {
    nix::unistd::setsid().context("setsid")?;
    setup.cgroups.add(std::process::id() as i32)?;
    block_forwarded()?;
    // Still single-threaded: the VM's mount namespace can be made, with the rootfs and the
    // share exported from it.
    share::enter_namespace()?;
    let rootfs = setup.run_dir.join(share::ROOTFS_DIR);
    share::export_rootfs(&setup.plan.rootfs, &rootfs, setup.plan.readonly_rootfs)?;
    let share = setup
        .plan
        .needs_share()
        .then(|| setup.run_dir.join(share::SHARE_DIR));
    if let Some(dir) = &share {
        share::build(dir, &setup.plan.volumes)?;
    }
    if let Some(gate) = setup.gate.take() {
        pass_gate(setup, gate)?;
    }
    let ready_path = setup.run_dir.join(format!("{VSOCK_SOCKET}_{READY_PORT}"));
    let ready = UnixListener::bind(&ready_path).context("binding the agent's ready socket")?;
    let launch = Launch {
        kernel: &setup.kernel,
        initrd: &setup.initrd,
        memory_mib: setup.plan.memory_mib,
        vcpus: setup.plan.vcpus,
        rootfs: &rootfs,
        readonly_rootfs: setup.plan.readonly_rootfs,
        share: share.as_deref(),
        run_dir: &setup.run_dir,
        nics: &setup.nics,
    };
    children.extend(setup.driver.launch(&launch)?);
    let vm_pid = children
        .last()
        .map(|c| c.id() as i32)
        .context("no VM process")?;
    let vm = strata_linux::proc::pidfd_open(vm_pid)?;
    // Ready, or the VM's end, whichever comes first.
    let mut fds = [
        PollFd::new(ready.as_fd(), PollFlags::POLLIN),
        PollFd::new(vm.as_fd(), PollFlags::POLLIN),
    ];
    let n = poll(&mut fds, PollTimeout::from(BOOT_TIMEOUT_MS)).context("waiting for the guest")?;
    let vm_ended = fds[1].revents().is_some_and(|r| !r.is_empty());
    if n == 0 {
        // The run directory goes with the failed create: quote the console, not its path.
        let console = last_line(&setup.run_dir.join("console.log"));
        bail!(
            "the guest agent did not come up within {} s (last console line: {:?})",
            BOOT_TIMEOUT_MS / 1000,
            console
        );
    }
    if vm_ended {
        let why = ["vmm.log", "qemu.log", "console.log"]
            .map(|f| last_line(&setup.run_dir.join(f)))
            .into_iter()
            .find(|l| !l.is_empty())
            .unwrap_or_else(|| "no output".into());
        bail!("the VM exited while booting: {why}");
    }
    accept_ready(&ready)?;
    // The ready port is the one host port a guest can reach, and it is open only while the
    // agent is the guest's sole process: closed here, before any container exists, so that a
    // container allowed vsock finds nothing on the host to connect to (its connections to the
    // agent's port are the agent's to refuse).
    let _ = std::fs::remove_file(&ready_path);
    drop(ready);
    let addr = AgentAddr::Vsock {
        uds: setup.run_dir.join(VSOCK_SOCKET),
    };
    expect_created(addr.call(
        &Request::Create {
            id: setup.id.clone(),
            spec: setup.plan.spec.clone(),
            allow_vsock: setup.plan.allow_vsock,
            network: setup.plan.network.clone(),
            pod: None,
            net_sysctls: setup.plan.net_sysctls.clone(),
        },
        Some(REQUEST_TIMEOUT),
    )?)?;
    let attached = connect_process(&addr, &setup.id, None, setup.console)?;
    Ok((addr, attached, vm))
}

fn expect_created(reply: Response) -> Result<()> {
    match reply.into_result()? {
        Response::Created { .. } => Ok(()),
        other => Err(other.unexpected().into()),
    }
}

/// A guest process's streams as connected on the host, kept for as long as it runs.
struct Attached {
    outputs: Vec<JoinHandle<()>>,
    /// Holds the pty slave open: the relays and resizes use it.
    _io: HostIo,
}

/// Connects a created guest process's stdio (or terminal) and starts forwarding signals and
/// terminal resizes to it.
fn connect_process(
    addr: &AgentAddr,
    id: &str,
    exec_id: Option<&str>,
    console: Option<RawFd>,
) -> Result<Attached> {
    let io = HostIo::new(console)?;
    let outputs = attach(addr, id, exec_id, &io)?;
    let tty = match &io {
        HostIo::Pty(slave) => {
            // SIGWINCH comes to the session whose controlling terminal it is (the monitor is
            // a session leader already; an exec relay becomes one here).
            let _ = nix::unistd::setsid();
            let _ = strata_linux::tty::make_controlling_tty(slave);
            Some(slave.as_raw_fd())
        }
        HostIo::Stdio => None,
    };
    spawn_forwarder(
        addr.clone(),
        id.to_string(),
        exec_id.map(str::to_string),
        tty,
    );
    Ok(Attached { outputs, _io: io })
}

/// Tells the forking runtime how setup went ("ok" or "err <message>", read by
/// [`read_report`]); returns what setup produced.
fn send_report<T>(report: OwnedFd, result: Result<T>) -> Option<T> {
    let mut report = File::from(report);
    match result {
        Ok(v) => {
            let _ = writeln!(report, "ok");
            Some(v)
        }
        Err(e) => {
            let _ = writeln!(report, "err {}", format!("{e:#}").replace('\n', " "));
            None
        }
    }
}

fn spawn_forwarder(addr: AgentAddr, id: String, exec_id: Option<String>, tty: Option<RawFd>) {
    let resize = {
        let (id, exec_id) = (id.clone(), exec_id.clone());
        move |addr: &AgentAddr| {
            if let Some((rows, cols)) = tty.and_then(winsize) {
                let _ = addr.call_ok(&Request::ResizeTty {
                    id: id.clone(),
                    exec_id: exec_id.clone(),
                    rows,
                    cols,
                });
            }
        }
    };
    resize(&addr);
    std::thread::spawn(move || {
        let set = forwarded_set();
        loop {
            let Ok(sig) = set.wait() else { return };
            if sig == Signal::SIGWINCH {
                resize(&addr);
                continue;
            }
            // A process that is gone cannot be signalled; there is nobody to tell.
            let _ = addr.call_ok(&Request::Signal {
                id: id.clone(),
                exec_id: exec_id.clone(),
                signal: sig as i32,
                all: false,
            });
        }
    });
}

/// After the container exists: `start`, then the workload's exit status.
fn run_started(id: &str, start_listener: RawFd, addr: &AgentAddr, vm: &OwnedFd) -> Result<i32> {
    // SAFETY: the start listener was inherited from the creating runtime and is ours alone now.
    let listener = unsafe { UnixListener::from_raw_fd(start_listener) };
    let mut fds = [
        PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        PollFd::new(vm.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for start"),
        }
    }
    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
        bail!("the VM stopped before the container was started");
    }
    let (mut conn, _): (UnixStream, _) = listener.accept().context("accepting start")?;
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte).context("reading start")?;
    if let Err(e) = addr.call_ok(&Request::Start { id: id.to_string() }) {
        let _ = conn.write_all(format!("{e:#}").as_bytes());
        return Err(e);
    }
    drop(conn);
    drop(listener);
    wait_exit(addr, id, None, vm)
}

pub struct MemberSetup {
    pub id: String,
    /// The pod's sandbox container, in whose VM the member is created.
    pub sandbox: String,
    pub spec: serde_json::Value,
    pub allow_vsock: bool,
    pub addr: AgentAddr,
    pub start_listener: RawFd,
    pub console: Option<RawFd>,
    pub cgroups: CgroupSet,
    /// The pod VM's monitor: its end is the VM's end.
    pub monitor_pid: i32,
}

/// Runs in the forked process that is a pod member's PID on the host (its relay): creates
/// the member in the pod's VM, relays its stdio, turns `start` into the agent's Start, and
/// exits with its status. The VM is the sandbox's to end, not the member's.
pub fn member(setup: MemberSetup, report: OwnedFd) -> i32 {
    ignore_sigpipe();
    let prepared = (|| -> Result<(Attached, OwnedFd)> {
        nix::unistd::setsid().context("setsid")?;
        setup.cgroups.add(std::process::id() as i32)?;
        block_forwarded()?;
        let vm =
            strata_linux::proc::pidfd_open(setup.monitor_pid).context("the pod's VM is gone")?;
        expect_created(setup.addr.call(
            &Request::Create {
                id: setup.id.clone(),
                spec: setup.spec.clone(),
                allow_vsock: setup.allow_vsock,
                network: Vec::new(),
                pod: Some(setup.sandbox.clone()),
                net_sysctls: Default::default(),
            },
            Some(REQUEST_TIMEOUT),
        )?)?;
        let attached = connect_process(&setup.addr, &setup.id, None, setup.console)?;
        Ok((attached, vm))
    })();
    let Some((attached, vm)) = send_report(report, prepared) else {
        return 1;
    };
    let status = match run_started(&setup.id, setup.start_listener, &setup.addr, &vm) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata: pod container {}: {e:#}", setup.id);
            255
        }
    };
    join_all(attached.outputs, Duration::from_secs(2));
    status
}

pub struct RelaySetup {
    pub id: String,
    pub exec_id: String,
    pub process: serde_json::Value,
    pub addr: AgentAddr,
    pub console: Option<RawFd>,
    pub cgroups: CgroupSet,
    /// The container's monitor: its end is the VM's end.
    pub monitor_pid: i32,
}

/// Runs in the forked exec relay; returns its exit code.
pub fn relay(setup: RelaySetup, report: OwnedFd) -> i32 {
    ignore_sigpipe();
    let prepared = (|| -> Result<(Attached, OwnedFd)> {
        let _ = setup.cgroups.add(std::process::id() as i32);
        block_forwarded()?;
        let monitor = strata_linux::proc::pidfd_open(setup.monitor_pid)
            .context("the container's VM is gone")?;
        expect_created(setup.addr.call(
            &Request::Exec {
                id: setup.id.clone(),
                exec_id: setup.exec_id.clone(),
                process: setup.process.clone(),
            },
            Some(REQUEST_TIMEOUT),
        )?)?;
        let attached =
            connect_process(&setup.addr, &setup.id, Some(&setup.exec_id), setup.console)?;
        Ok((attached, monitor))
    })();
    let Some((attached, monitor)) = send_report(report, prepared) else {
        return 1;
    };
    let status = match wait_exit(&setup.addr, &setup.id, Some(&setup.exec_id), &monitor) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata: exec in {}: {e:#}", setup.id);
            255
        }
    };
    join_all(attached.outputs, Duration::from_secs(2));
    status
}

/// Forks one of the container's host processes (the monitor, an exec or pod-member relay):
/// the child closes the fds the runtime named (the state lock: it must not stay held as long
/// as the process) and exits with what `body` returns, given the write end of its report;
/// the parent gets the child and the read end ([`read_report`]). The caller must be
/// single-threaded.
pub fn fork_host_process(
    close_in_child: &[RawFd],
    what: &str,
    body: impl FnOnce(OwnedFd) -> i32,
) -> Result<(nix::unistd::Pid, OwnedFd)> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the runtime is single-threaded (the caller's contract); the child only runs
    // `body` and exits without returning into the caller's code.
    match unsafe { nix::unistd::fork() }.with_context(|| format!("forking the {what}"))? {
        nix::unistd::ForkResult::Child => {
            drop(report_r);
            for fd in close_in_child {
                // SAFETY: closing inherited fds the runtime named as its own; the child does
                // not use them.
                unsafe { libc::close(*fd) };
            }
            std::process::exit(body(report_w));
        }
        nix::unistd::ForkResult::Parent { child } => Ok((child, report_r)),
    }
}

/// Reads the child's report: Ok once it says "ok", its error otherwise.
pub fn read_report(report: OwnedFd) -> Result<()> {
    let mut text = String::new();
    let _ = File::from(report).read_to_string(&mut text);
    let line = text.lines().next().unwrap_or("");
    if line == "ok" {
        return Ok(());
    }
    match line.strip_prefix("err ") {
        Some(msg) => bail!("{msg}"),
        None => bail!("the vm process ended before it was ready"),
    }
}
