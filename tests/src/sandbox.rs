//! Helpers of the sandbox suites (tests/sandbox.rs, tests/sandbox_escapes.rs): running a
//! script under a backend, the escape program, the tests' node policies.

use std::path::PathBuf;

use crate::*;

/// Runs `script` in a fresh busybox container on `backend`; returns its stdout.
pub fn run_on(backend: &str, script: &str, edit: impl FnOnce(&mut Bundle)) -> String {
    run_with(backend, script, &[], edit)
}

/// The sandbox policy these suites test the supervisor's checks with unless they name one:
/// read everything, write only scratch places, run only the program directories, loopback
/// only (the built-in policy before it followed the bundle; see `Policy::for_bundle`).
pub const STRICT_POLICY: &str = "read_only = [\"/\"]\n\
    read_write = [\"/tmp\", \"/var/tmp\", \"/run\", \"/dev\", \"/proc/self\"]\n\
    exec = [\"/bin\", \"/sbin\", \"/usr/bin\", \"/usr/sbin\", \"/usr/local/bin\", \
    \"/usr/local/sbin\", \"/lib\", \"/lib64\", \"/usr/lib\", \"/usr/lib64\", \"/usr/libexec\"]\n\
    network = \"loopback\"\n";

/// `global` with a node config of [`STRICT_POLICY`] added for the sandbox, unless it names a
/// config of its own; the directory holds the files.
pub fn strict_unless_named(backend: &str, global: &[&str]) -> (Vec<String>, Option<TempDir>) {
    let mut out: Vec<String> = global.iter().map(|s| s.to_string()).collect();
    if backend != "sandbox" || global.contains(&"--config") {
        return (out, None);
    }
    let dir = TempDir::new("strict-policy");
    let node = node_with_policy(&dir, STRICT_POLICY);
    out.extend(["--config".to_string(), node]);
    (out, Some(dir))
}

/// A runtime whose every command names a node config of [`STRICT_POLICY`].
pub fn strict_sandbox_runtime() -> (Runtime, TempDir) {
    let dir = TempDir::new("strict-policy");
    let node = node_with_policy(&dir, STRICT_POLICY);
    (Runtime::with_global(&["--config", &node]), dir)
}

pub fn run_with(
    backend: &str,
    script: &str,
    global: &[&str],
    edit: impl FnOnce(&mut Bundle),
) -> String {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", script]);
    edit(&mut b);
    let id = container(&mut b, backend);
    let (global, _policy) = strict_unless_named(backend, global);
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    let mut args = vec!["--backend", backend];
    args.extend_from_slice(&global);
    args.extend(["run", "-b", b.path().to_str().unwrap(), &id]);
    let out = rt.run(&args);
    assert!(
        out.status.code().is_some(),
        "{backend}: strata died: {out:?}"
    );
    assert!(rt.container_dirs().is_empty(), "{backend}: state left");
    assert_eq!(cgroup_left(&id), None, "{backend}: cgroup left");
    stdout(&out)
}

/// Runs `script` under native and then under the sandbox, and asserts what each printed:
/// the attempt works under native (so the test can fail) and is refused under the sandbox.
pub fn native_then_sandbox(
    script: &str,
    global: &[&str],
    edit: impl Fn(&mut Bundle),
    native: &str,
    sandbox: &str,
) {
    assert_eq!(run_with("native", script, global, &edit), native, "native");
    assert_eq!(
        run_with("sandbox", script, global, &edit),
        sandbox,
        "sandbox"
    );
}

/// Root and the escape program, or the test ends here (each says why it cannot run).
#[macro_export]
macro_rules! require_root_and_escape {
    () => {
        $crate::require_root!();
        if $crate::sandbox::escape_binary().is_none() {
            return;
        }
    };
}

/// The escape program (tests/programs/escape.c), built static once.
pub fn escape_binary() -> Option<PathBuf> {
    static_program("escape")
}

pub fn with_escape(b: &mut Bundle) {
    let bin = escape_binary().expect("escape binary");
    std::fs::copy(bin, b.rootfs().join("bin/escape")).unwrap();
}

/// The path sets of the tests' own policies: read everything, write /tmp and /dev, run /bin.
pub const POLICY_SETS: &str =
    "read_only = [\"/\"]\nread_write = [\"/tmp\", \"/dev\"]\nexec = [\"/bin\"]\n";

/// A node config whose default sandbox policy is `policy` (TOML); returns the config path.
pub fn node_with_policy(dir: &TempDir, policy: &str) -> String {
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let node = dir.path().join("config.toml");
    std::fs::write(
        &node,
        format!("[sandbox]\npolicy = \"{}\"\n", file.display()),
    )
    .unwrap();
    node.to_str().unwrap().to_string()
}

/// The host's network namespace: a new one's loopback is down, and only the host's has a
/// route for a datagram to leave by.
pub fn host_net(b: &mut Bundle) {
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network")
    });
}

/// A container started detached (`run -d`), its stdout in a file of its own. The runtime's
/// drop deletes it.
pub struct Detached {
    pub id: String,
    log: PathBuf,
    _dir: TempDir,
    _policy: Option<TempDir>,
}

impl Detached {
    pub fn start(rt: &Runtime, b: &mut Bundle, backend: &str, global: &[&str]) -> Detached {
        let dir = TempDir::new("detached");
        let log = dir.path().join("stdout");
        let id = container(b, backend);
        let (global, policy) = strict_unless_named(backend, global);
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        let status = rt
            .cmd_for(&global)
            .args(["--backend", backend, "run", "-d", "-b"])
            .arg(b.path())
            .arg(&id)
            .stdout(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{backend}: run -d failed");
        Detached {
            id,
            log,
            _dir: dir,
            _policy: policy,
        }
    }

    /// What the container has printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the container has printed `what`.
    pub fn wait_for(&self, what: &str) {
        eventually(&format!("{:?} from the container", what), || {
            self.output().contains(what)
        });
    }
}

/// The PID of container `id`'s supervisor, as its state directory records it.
pub fn supervisor_pid(rt: &Runtime, id: &str) -> i32 {
    let text = std::fs::read_to_string(rt.root.path().join(id).join("supervisor.pid")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// A field of /proc/PID/status (None once the process is gone).
pub fn proc_status(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// Whether `pid` is alive (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    proc_status(pid, "State:").is_some_and(|s| !s.starts_with('Z'))
}
