//! Helpers for driving the built `strata` binary the way containerd, podman and people do:
//! a busybox bundle per test, a private `--root`, cgroups under `/strata-test`, and cleanup
//! that leaves the host as it was.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

use serde_json::Value;

pub mod clients;
pub mod sandbox;

/// Where cargo put the test binary running now, `<target>/<profile>/deps/<test>`: the
/// binaries under test are built into the same `<target>/<profile>`, so `cargo test --release`
/// tests release binaries, and a custom target dir or profile works too.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's directory");
    deps.parent()
        .expect("the profile directory above deps/")
        .to_path_buf()
}

/// Builds `bins` of `package` into this test's profile directory (once per test process and
/// package), and returns that directory.
fn build_bins(once: &'static Once, package: &str, bins: &[&str]) -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = profile_dir();
    once.call_once(|| {
        // cargo names the dev profile's directory "debug"; every other profile its own name.
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let target_dir = dir.parent().expect("the target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "--profile", &profile, "-p", package])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(&ws);
        for bin in bins {
            cmd.args(["--bin", bin]);
        }
        let st = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo build for {bins:?}: {e}"));
        assert!(st.success(), "building {bins:?} failed");
    });
    dir
}

/// The strata binary under test: `$STRATA_BIN`, else built from this workspace in the test's
/// own profile (with the sandbox's supervisor program, which strata starts from beside
/// itself).
pub fn strata_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    if let Ok(p) = std::env::var("STRATA_BIN") {
        return PathBuf::from(p);
    }
    build_bins(&BUILD, "strata", &["strata", "strata-sandbox-supervisor"]).join("strata")
}

/// A binary of this workspace, built in the test's profile.
fn workspace_bin(once: &'static Once, package: &str, bin: &str) -> PathBuf {
    build_bins(once, package, &[bin]).join(bin)
}

/// The guest agent binary; for the loopback tests, where it runs as a host process.
pub fn agent_bin() -> PathBuf {
    static AGENT: Once = Once::new();
    workspace_bin(&AGENT, "strata-agent", "strata-agent")
}

/// strata's VMM, built next to the strata binary, where the vm backend's strata driver finds it.
pub fn vmm_bin() -> PathBuf {
    static VMM: Once = Once::new();
    workspace_bin(&VMM, "strata-vm", "strata-vmm")
}

/// The guest kernel from kernel-config/build and the static agent from guest-agent/build.
pub struct VmPieces {
    pub kernel: PathBuf,
    pub agent: PathBuf,
}

/// The workspace's root, where the build scripts live.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A skip of a vm test, said loudly; under STRATA_REQUIRE_KVM=1 (CI) a failure instead.
pub fn vm_skip<T>(why: &str) -> Option<T> {
    if std::env::var("STRATA_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("STRATA_REQUIRE_KVM=1 but {why}");
    }
    eprintln!("\n*** SKIPPED: {why}; the vm backend tests did not run ***\n");
    None
}

/// Runs one of the workspace's build scripts (`script` relative to the workspace) and returns
/// the path it prints, or its stderr.
pub fn built_by(script: &str) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(workspace_dir().join(script))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The pieces every vm test needs (both cached; CI builds them before the tests), or None
/// (see [`vm_skip`]) where this machine cannot provide them.
pub fn vm_pieces() -> Option<VmPieces> {
    for tool in ["qemu-system-x86_64"] {
        if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
        {
            return vm_skip(&format!(
                "{tool} is not installed (scripts/install-deps --vm)"
            ));
        }
    }
    let kernel = match built_by("kernel-config/build") {
        Ok(k) => k,
        Err(e) => return vm_skip(&format!("the guest kernel cannot be built here: {e}")),
    };
    let agent = match built_by("guest-agent/build") {
        Ok(a) => a,
        Err(e) => return vm_skip(&format!("the guest agent cannot be built here: {e}")),
    };
    Some(VmPieces { kernel, agent })
}

/// A node config for the vm backend with the [`vm_pieces`], written into `dir`.
pub fn vm_node_config(dir: &Path) -> Option<PathBuf> {
    let pieces = vm_pieces()?;
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[vm]\nkernel = \"{}\"\nagent = \"{}\"\n",
            pieces.kernel.display(),
            pieces.agent.display()
        ),
    )
    .unwrap();
    Some(path)
}

/// Whether `release` (a `uname -r` from inside a container) is the vm backend's guest kernel
/// (built from Debian's linux-source 6.1) and not this host's.
pub fn is_guest_kernel(release: &str) -> bool {
    let host = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    release.starts_with("6.1.") && release != host
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Tests here create namespaces, mounts and cgroups: they need root. CI runs them as root;
/// anywhere else they say loudly that they did not run.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("SKIPPED: {} needs root", module_path!());
            return;
        }
    };
}

pub fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is not installed (apt-get install busybox-static)");
}

pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("strata-test-{}", unique(name)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bundle with a busybox rootfs and a config.json from `strata spec`, made non-interactive.
pub struct Bundle {
    pub dir: TempDir,
    pub config: Value,
}

const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "hostname", "ps", "mount", "tty",
    "readlink", "grep", "wc", "stat", "touch", "mkdir", "umask", "test", "env", "pwd", "kill",
    "head", "ln", "rm", "printf", "dd", "mknod", "sync", "top", "tee", "seq", "mv", "cp", "nc",
    "unshare", "mkfifo", "timeout", "cut", "uname",
];

/// Fills `root` with a busybox userland: the applets the tests use, /etc/passwd and group.
pub fn make_rootfs(root: &Path) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = TempDir::new("bundle");
        make_rootfs(&dir.path().join("rootfs"));
        let out = Command::new(strata_bin())
            .args(["--config", NO_NODE_CONFIG, "spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "strata spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = args.iter().map(|a| Value::String(a.to_string())).collect();
        config["root"]["readonly"] = Value::Bool(false);
        let mut b = Bundle { dir, config };
        b.save();
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn save(&mut self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.save();
        self
    }
}

/// The node config of a test that names none: empty, every key at its built-in default.
pub const NO_NODE_CONFIG: &str = "/dev/null";

fn names_config<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter()
        .any(|a| a.as_ref() == "--config" || a.as_ref().starts_with("--config="))
}

/// A private state root; containers left in it are force-deleted on drop.
pub struct Runtime {
    pub root: TempDir,
    /// Global flags given to every command (e.g. `--backend sandbox`).
    pub global: Vec<String>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            root: TempDir::new("root"),
            global: Vec::new(),
        }
    }

    /// A runtime whose every command gets `global` flags too.
    pub fn with_global(global: &[&str]) -> Runtime {
        Runtime {
            root: TempDir::new("root"),
            global: global.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn cmd(&self) -> Command {
        self.cmd_of(&strata_bin())
    }

    /// A command that will get `global` too: the empty node config only if they name none.
    pub fn cmd_for(&self, global: &[&str]) -> Command {
        let mut c = self.cmd_with(&strata_bin(), !names_config(global));
        c.args(global);
        c
    }

    /// A command of another strata binary (a copy installed elsewhere) on this state root.
    pub fn cmd_of(&self, bin: &Path) -> Command {
        self.cmd_with(bin, true)
    }

    /// Every command names its node config: the test's own, or an empty one (`/dev/null`),
    /// so that a host's /etc/strata/config.toml cannot change a test's outcome.
    fn cmd_with(&self, bin: &Path, default_config: bool) -> Command {
        let mut c = Command::new(bin);
        c.arg("--root").arg(self.root.path()).args(&self.global);
        if default_config && !names_config(&self.global) {
            c.args(["--config", NO_NODE_CONFIG]);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs strata to completion. Output goes through files, not pipes: a created container
    /// inherits strata's stdio and keeps it open long after strata exits.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd_with(&strata_bin(), !names_config(args));
        cmd.args(args);
        output_via_files(&mut cmd)
    }

    /// `run --detach` of `bundle` as `id`; returns the container's host PID (from its pid
    /// file).
    pub fn run_detached(&self, bundle: &Bundle, id: &str) -> i32 {
        let pidfile = bundle.path().join(format!("{id}.pid"));
        self.ok(&[
            "run",
            "-d",
            "--pid-file",
            pidfile.to_str().unwrap(),
            "-b",
            bundle.path().to_str().unwrap(),
            id,
        ]);
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr, which must be one line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "strata {args:?} should have failed; stderr: {err}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error is not one line: {err:?}"
        );
        err
    }

    /// Runs, failing the test (after killing the command) if it takes more than `secs`:
    /// for calls a hostile container or config could make hang.
    pub fn run_within(&self, secs: u64, args: &[&str]) -> Output {
        let dir = TempDir::new("out");
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        let mut child = self
            .cmd()
            .args(args)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("strata {args:?} still running after {secs} s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap(),
            stderr: std::fs::read(&err_path).unwrap(),
        }
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    pub fn container_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.container_dirs() {
            let _ = self.run(&["delete", "--force", &id]);
        }
        remove_test_cgroup_parent();
    }
}

/// Removes the shared `/strata-test` cgroup parent in every hierarchy once the last test's
/// cgroups under it are gone (rmdir fails while another test still has one), so that the
/// last test to finish leaves nothing of the suite on the host.
pub fn remove_test_cgroup_parent() {
    for mp in cgroup_mount_points() {
        let _ = std::fs::remove_dir(mp.join("strata-test"));
    }
}

pub fn cgroup_mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            post.starts_with("cgroup").then(|| PathBuf::from(mp))
        })
        .collect()
}

/// A container ID plus the bundle edits every test wants: its cgroup under /strata-test.
pub fn container(bundle: &mut Bundle, name: &str) -> String {
    let id = unique(name);
    let cg = format!("/strata-test/{id}");
    bundle.edit(|c| c["linux"]["cgroupsPath"] = Value::String(cg));
    id
}

/// Waits (bounded) until `f` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `f` holds, polling every 100 ms up to `limit` (VMs under TCG are slow).
pub fn eventually_for(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// The host's procfs mounted at a path (made if missing), unmounted when dropped: a kernel
/// filesystem under a directory a test hands to a VM.
pub struct ProcMount(PathBuf);

impl ProcMount {
    pub fn at(path: &Path) -> ProcMount {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting procfs at {}", path.display());
        ProcMount(path.to_path_buf())
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Command lines of the host's VM processes (QEMU, strata-vmm) that name `needle` (a VM's
/// run directory, or a runtime root).
pub fn vm_processes(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle) && (c.contains("qemu-system") || c.contains("strata-vmm")))
        .collect()
}

/// What a TCP server at `addr` says on connect, retried (refused, or closed without a word)
/// until `limit`: a published port that is not forwarded yet, or a server between two
/// connections.
pub fn answer_of(addr: &str, limit: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let got = std::net::TcpStream::connect(addr).ok().and_then(|mut s| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut s, &mut text).ok()?;
            (!text.is_empty()).then_some(text)
        });
        if let Some(text) = got {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Whether any cgroup directory of `id` is left in any hierarchy: under the tests' parent,
/// or under strata's default one (bundles without a cgroupsPath; IDs are unique to a test).
pub fn cgroup_left(id: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup") {
            continue;
        }
        let mp = pre.split(' ').nth(4).unwrap();
        for parent in ["strata-test", "strata"] {
            let p = Path::new(mp).join(parent).join(id);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Like `Command::output`, but through temp files so that processes that outlive the command
/// (a container init holding its stdio) cannot block the caller.
pub fn output_via_files(cmd: &mut Command) -> Output {
    let dir = TempDir::new("out");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let status = cmd
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// Whether `pid` is in the container's cgroup in every mounted hierarchy (v1 and v2).
pub fn in_every_cgroup(id: &str, pid: i32) -> Result<(), String> {
    for mp in cgroup_mount_points() {
        let procs = mp.join("strata-test").join(id).join("cgroup.procs");
        let text =
            std::fs::read_to_string(&procs).map_err(|e| format!("{}: {e}", procs.display()))?;
        if !text.lines().any(|l| l.trim() == pid.to_string()) {
            return Err(format!("{pid} not in {}", procs.display()));
        }
    }
    Ok(())
}

/// Live processes that belong to container `id`: forks of strata working on it (their
/// command line names it) and processes whose root is its rootfs. Orphans of a killed
/// runtime go to the host's init, which reaps them; these are the ones still running.
pub fn processes_of(id: &str, rootfs: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ...: comm may hold spaces, so look after the last ')'.
        if stat[stat.rfind(')').unwrap() + 2..].starts_with('Z') {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        let named = cmdline.split_whitespace().any(|w| w == id);
        if named || root == rootfs {
            out.push(format!("{pid}: {cmdline}"));
        }
    }
    out
}

/// A C program of tests/programs, built static (once per test process and program) to run
/// inside containers and guests. None, said loudly, where gcc cannot link statically, unless
/// STRATA_REQUIRE_CLIENTS is set (CI), where that is a failure.
pub fn static_program(name: &str) -> Option<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, Option<PathBuf>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    built
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert_with(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("programs")
                .join(format!("{name}.c"));
            let out = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
            let st = Command::new("gcc")
                .args(["-static", "-O2", "-pthread", "-o"])
                .arg(&out)
                .arg(&src)
                .status();
            match st {
                Ok(s) if s.success() => Some(out),
                _ => {
                    assert!(
                        std::env::var_os("STRATA_REQUIRE_CLIENTS").is_none(),
                        "gcc with static libc (gcc, libc6-dev) is needed to build {}",
                        src.display()
                    );
                    eprintln!(
                        "SKIPPED: gcc -static is not available for {}",
                        src.display()
                    );
                    None
                }
            }
        })
        .clone()
}
