//! The sandbox backend's adapter: a native container, plus the sandbox's seccomp profile
//! (after the bundle's own), noNewPrivileges, a Landlock ruleset before execve, and a
//! supervisor process that lives as long as the container.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use strata_sandbox::policy::Policy;
use strata_sandbox::supervisor::Config as SupervisorConfig;

use crate::backend::contract::{Backend, CreateRequest, Created, ExecRequest};
use crate::backend::native::{self, Extras, Native};
use crate::config::NodeConfig;
use crate::state::{self, Record};

pub const POLICY_ANNOTATION: &str = "dev.strata.sandbox.policy";
/// argv[0] under which the strata binary runs as a container's supervisor.
pub const SUPERVISOR_ARGV0: &str = "strata-sandbox-supervisor";
const SOCKET: &str = "supervisor.sock";
const PID_FILE: &str = "supervisor.pid";
/// The policy chosen at create, for exec'd processes (the bundle and node config may change).
const POLICY_FILE: &str = "sandbox-policy.json";

pub struct Sandbox;

/// The policy for a bundle: the one its annotation names (if the node honours the key and
/// lists the name), else the node's default, else the built-in one.
pub fn choose_policy(spec: &Spec, node: &NodeConfig) -> Result<Policy> {
    let asked = crate::config::annotation(spec, node, POLICY_ANNOTATION);
    let path = match asked {
        None => node.sandbox.policy.clone(),
        Some("builtin") => None,
        Some(name) => match node.sandbox.policies.get(name) {
            Some(p) => Some(p.clone()),
            None => {
                let mut known: Vec<&str> =
                    node.sandbox.policies.keys().map(String::as_str).collect();
                known.push("builtin");
                known.sort();
                bail!(
                    "config.json annotation {POLICY_ANNOTATION}: unknown policy {name:?} (this node allows {})",
                    known.join(", ")
                );
            }
        },
    };
    Ok(match path {
        Some(p) => Policy::load(&p)?,
        None => Policy::for_bundle(&grants(spec)?),
    })
}

/// What the bundle grants, as the built-in policy follows it.
fn grants(spec: &Spec) -> Result<strata_sandbox::policy::Grants> {
    let writable_root = !spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let writable_mounts = spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            let kernel_fs = matches!(
                m.typ().as_deref(),
                Some("proc" | "sysfs" | "cgroup" | "cgroup2")
            );
            let ro = m
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|w| w == "ro" || w == "rro"));
            !kernel_fs && !ro
        })
        .map(|m| m.destination().clone())
        .collect();
    Ok(strata_sandbox::policy::Grants {
        writable_root,
        writable_mounts,
        own_network: !shares_host_network(spec)?,
    })
}

/// Whether the bundle leaves the container in the host's network namespace.
fn shares_host_network(spec: &Spec) -> Result<bool> {
    let plan = strata_linux::namespaces::NamespacePlan::from_spec(spec)?;
    Ok(!plan.owns(oci_spec::runtime::LinuxNamespaceType::Network))
}

fn supervisor_pid(state_dir: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(state_dir.join(PID_FILE)).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn kill_supervisor(state_dir: &Path) {
    if let Some((pid, start)) = supervisor_pid(state_dir) {
        if let Ok(fd) = strata_linux::proc::pidfd_open(pid) {
            if state::process_alive(pid, start) {
                strata_linux::proc::pidfd_send_signal(&fd, Signal::SIGKILL);
            }
        }
    }
}

/// What the supervisor enforces, in the state dir: it reads it at start, exec reuses the
/// policy.
fn record_config(state_dir: &Path, config: &SupervisorConfig) -> Result<()> {
    let json = serde_json::to_vec(config).context("recording the sandbox policy")?;
    std::fs::write(state_dir.join(POLICY_FILE), json).context("recording the sandbox policy")
}

/// The device rules the container's cgroup gets, for the supervisor's opens of device nodes.
fn device_rules(spec: &Spec) -> Result<Vec<strata_linux::cgroups::devices::Rule>> {
    let linux = spec.linux().as_ref();
    let spec_rules = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
    Ok(strata_linux::cgroups::devices::rules(
        &spec_rules,
        &devices,
    )?)
}

/// What the sandbox needs of the bundle's namespaces: a pid namespace of its own, so that
/// no process of the container can see the supervisor and its guard (host processes), and
/// an IPC namespace of its own, so that the host's SysV IPC and POSIX message queues stay
/// out of reach (neither has a path the policy could rule).
fn check_namespaces(spec: &Spec) -> Result<()> {
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    let plan = strata_linux::namespaces::NamespacePlan::from_spec(spec)?;
    if plan.is_new(Ns::User) || plan.joins(Ns::User).is_some() {
        bail!(
            "linux.namespaces: the sandbox backend does not support a user namespace yet; \
             drop it or use the native backend"
        );
    }
    for (ns, name) in [(Ns::Pid, "pid"), (Ns::Ipc, "ipc")] {
        if !plan.owns(ns) {
            bail!(
                "linux.namespaces: the sandbox backend needs the container to have a {name} \
                 namespace of its own (not the host's); add one or use the native backend"
            );
        }
    }
    Ok(())
}

/// The kernel holds the network policy through cgroup v2 (see strata_sandbox::netfilter):
/// without a cgroup v2 hierarchy it cannot, and the container is refused rather than run
/// with less than its policy says.
fn check_network_enforceable(policy: &Policy) -> Result<()> {
    if !strata_sandbox::netfilter::needed(policy) {
        return Ok(());
    }
    let hierarchies = strata_linux::cgroups::hierarchies()?;
    if !hierarchies.iter().any(|h| h.unified) {
        bail!(
            "sandbox policy: its network rules (network = \"{}\"{}) are enforced by the \
             kernel's cgroup v2 socket hooks, and this host mounts no cgroup v2 hierarchy; \
             mount one, or use a policy with network = \"none\" or \"any\"",
            format!("{:?}", policy.network).to_lowercase(),
            if policy.connect.is_some() || policy.bind.is_some() {
                " with endpoint lists"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The supervisor's PID, with its start time against PID reuse: delete finds it there.
fn record_supervisor(state_dir: &Path, pid: i32, start: u64) -> Result<()> {
    std::fs::write(state_dir.join(PID_FILE), format!("{pid} {start}\n"))
        .context("recording the supervisor")
}

/// Where the supervisor program is: `strata-sandbox-supervisor` beside this binary, else
/// this binary itself, which runs as the supervisor when started under that name.
///
/// Why a program of its own: a supervisor lives as long as its container, and what it costs
/// is mostly the code pages it maps. Page faults map code 64 KiB around each touched page,
/// so a copy of the whole runtime kept ~3 MiB of the 7 MiB binary mapped (measured), where
/// the supervisor program maps far less. A fork of the runtime, the first design, also kept
/// the runtime's heap pages private to the supervisor.
fn supervisor_program() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(SUPERVISOR_ARGV0))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "/proc/self/exe".into())
}

/// Starts the supervisor afresh (exec, not a fork of the runtime). It gets the listener as
/// its one inherited fd, its own session, and /dev/null for stdio: whoever reads the
/// runtime's output (a shim) must see EOF when the runtime exits, not when the container
/// does.
fn spawn_supervisor(listener: UnixListener, policy_file: &Path) -> Result<i32> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let fd = listener.as_raw_fd();
    let logging = crate::logging::settings().cloned().unwrap_or_default();
    let logging = serde_json::to_string(&logging).context("the supervisor's log settings")?;
    let c = |b: &[u8]| CString::new(b).context("a supervisor argument holds a NUL byte");
    let program = c(supervisor_program().as_os_str().as_bytes())?;
    let argv = [
        c(SUPERVISOR_ARGV0.as_bytes())?,
        c(fd.to_string().as_bytes())?,
        c(policy_file.as_os_str().as_bytes())?,
        c(logging.as_bytes())?,
    ];
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let null_fd = null.as_raw_fd();
    // fork and exec by hand rather than std's Command, whose spawn waits for the exec to
    // succeed (~1 ms here on the path of every create). Not waiting is safe: should the
    // exec fail, the child exits, and with the runtime's copy of the listener closed just
    // below, the init's connect to it is refused and create fails with that.
    // SAFETY: the runtime is single-threaded here; between fork and exec the child makes
    // only async-signal-safe calls on memory prepared before the fork.
    let pid = match unsafe { nix::unistd::fork() }.context("forking the sandbox supervisor")? {
        nix::unistd::ForkResult::Parent { child } => child.as_raw(),
        // SAFETY: as above: raw syscalls and exec on CStrings and an fd made before the fork.
        nix::unistd::ForkResult::Child => unsafe {
            libc::setsid();
            // stdio: /dev/null, since whoever reads the runtime's output (a shim) must see EOF
            // when the runtime exits, not when the container does.
            for target in 0..3 {
                libc::dup2(null_fd, target);
            }
            // Nothing the runtime inherited (preserved fds, a caller's pipes) goes along: all
            // but the listener close at exec.
            let _ =
                strata_linux::proc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC);
            if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                libc::execv(program.as_ptr(), argv_ptrs.as_ptr());
            }
            libc::_exit(127)
        },
    };
    drop(listener);
    Ok(pid)
}

/// The supervisor process: `strata-sandbox-supervisor FD POLICY_FILE LOG_SETTINGS`, as
/// [`spawn_supervisor`] starts it (the log settings are the runtime's, as JSON). Never
/// returns.
pub fn supervisor_main() -> ! {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let logging = serde_json::from_slice(arg(3).as_encoded_bytes()).unwrap_or_default();
    let _ = crate::logging::init_with(logging);
    let code = match run_supervisor(&arg(1), Path::new(&arg(2))) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("sandbox supervisor: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run_supervisor(fd: &std::ffi::OsStr, policy_file: &Path) -> Result<()> {
    let fd: RawFd = fd.to_str().and_then(|s| s.parse().ok()).context(
        "strata-sandbox-supervisor is started by strata for each sandboxed container; \
             its first argument must be the listener's fd number",
    )?;
    // SAFETY: the runtime passed this fd to us as the listener socket and nothing else here
    // owns it; it must be a socket, which accept checks.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    let config = read_config(policy_file)?;
    Ok(strata_sandbox::supervisor::serve(listener, config)?)
}

/// What [`record_config`] wrote for the container.
fn read_config(file: &Path) -> Result<SupervisorConfig> {
    let text = std::fs::read(file)
        .with_context(|| format!("reading the container's sandbox policy {}", file.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("reading the container's sandbox policy {}", file.display()))
}

/// The native container with the sandbox's additions.
fn create_confined(req: &CreateRequest, policy: &Policy, host_network: bool) -> Result<Created> {
    let confinement = strata_sandbox::confine(policy, &req.state_dir.join(SOCKET), host_network);
    let mut spec = req.container.spec.clone();
    if let Some(p) = spec.process() {
        spec.set_process(Some(confinement.process(p)));
    }
    let sysctls = confinement.sysctls();
    if !sysctls.is_empty() {
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut sysctl = linux.sysctl().clone().unwrap_or_default();
        sysctl.extend(sysctls);
        linux.set_sysctl(Some(sysctl));
        spec.set_linux(Some(linux));
    }
    let before_exec = confinement.before_exec();
    let extras = Extras {
        seccomp: &confinement.seccomp,
        before_exec: Some(&before_exec),
    };
    native::create_with(req, &spec, extras)
}

impl Backend for Sandbox {
    fn create(&self, req: &CreateRequest) -> Result<Created> {
        let policy = choose_policy(req.container.spec, req.node)?;
        check_namespaces(req.container.spec)?;
        check_network_enforceable(&policy)?;
        let host_network = shares_host_network(req.container.spec)?;
        let config = SupervisorConfig {
            policy: policy.clone(),
            devices: device_rules(req.container.spec)?,
            host_network,
        };
        // The supervisor listens before the container exists: the init hands it the notify fd
        // during create.
        let socket_path = req.state_dir.join(SOCKET);
        let listener = UnixListener::bind(SOCKET)
            .with_context(|| format!("binding {}", socket_path.display()))?;
        record_config(req.state_dir, &config)?;
        let pid = spawn_supervisor(listener, &req.state_dir.join(POLICY_FILE))?;
        let start = state::proc_stat(pid).map(|s| s.1).unwrap_or(0);
        let result = record_supervisor(req.state_dir, pid, start)
            .and_then(|()| create_confined(req, &policy, host_network));
        if result.is_err() {
            // Whatever failed, the supervisor must not outlive the container it was for.
            // SAFETY: kill(2) on the child we just forked, whose PID cannot have been reused
            // (it is our child until we exit).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        result
    }

    fn signal(&self, rec: &Record, sig: Signal, all: bool) -> Result<()> {
        Native.signal(rec, sig, all)
    }

    fn exec(&self, rec: &Record, req: &ExecRequest) -> Result<i32> {
        if supervisor_pid(&rec.state_dir).is_none_or(|(p, s)| !state::process_alive(p, s)) {
            bail!("the container's sandbox supervisor is gone; refusing to exec unsupervised");
        }
        let config = read_config(&rec.state_dir.join(POLICY_FILE))?;
        let confinement = strata_sandbox::confine(
            &config.policy,
            &rec.state_dir.join(SOCKET),
            config.host_network,
        );
        let before_exec = confinement.before_exec();
        let extras = Extras {
            seccomp: &confinement.seccomp,
            before_exec: Some(&before_exec),
        };
        let process = confinement.process(req.process);
        let req = ExecRequest {
            process: &process,
            io: req.io.clone(),
            sub_cgroups: req.sub_cgroups,
        };
        native::exec_with(rec, &req, extras)
    }

    fn destroy(&self, rec: &Record) -> Result<()> {
        let r = Native.destroy(rec);
        kill_supervisor(&rec.state_dir);
        r
    }
}
