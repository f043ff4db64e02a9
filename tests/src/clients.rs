//! What the client suites (podman, Docker, containerd, CRI) share: a logging wrapper around
//! strata so each suite records the exact runtime invocations its client made, an OCI image
//! archive of the busybox rootfs, private daemons stopped on drop, a pty for `-it`, and
//! cleanup of the cgroup parent each suite hands its client.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{cgroup_mount_points, make_rootfs, strata_bin, TempDir};

/// Whether every tool is installed. CI installs them all and sets `STRATA_REQUIRE_CLIENTS=1`,
/// so there a missing client fails the test instead of skipping it.
pub fn require_client(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{} not installed (bash scripts/install-deps --clients installs it)",
        missing.join(", ")
    );
    if std::env::var_os("STRATA_REQUIRE_CLIENTS").is_some_and(|v| v == "1") {
        panic!("STRATA_REQUIRE_CLIENTS=1 but {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    // Debian's clients live in /usr/bin and /usr/sbin; prefer them over anything a user put
    // in /usr/local (this host has a newer Docker CLI there that talks a newer API).
    let path = std::env::var("PATH").unwrap_or_default();
    let found = ["/usr/bin", "/usr/sbin"]
        .into_iter()
        .chain(path.split(':'))
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// strata behind a shell wrapper that appends each command line to a log before running it.
pub struct LoggedRuntime {
    pub dir: TempDir,
    pub path: PathBuf,
    pub log: PathBuf,
}

impl LoggedRuntime {
    pub fn new(name: &str) -> LoggedRuntime {
        LoggedRuntime::build(name, false, None)
    }

    /// Every call also gets `--config <node config>` (the vm backend finds its kernel there).
    pub fn with_config(name: &str, config: &Path) -> LoggedRuntime {
        LoggedRuntime::build(name, false, Some(config))
    }

    /// For clients that call the runtime without `--root` (podman as root does): the wrapper
    /// adds a private one, so the test's containers stay out of the host's /run/strata.
    pub fn with_private_root(name: &str) -> LoggedRuntime {
        LoggedRuntime::build(name, true, None)
    }

    /// Both: a private `--root` when the client gives none, and `--config <node config>`.
    pub fn with_private_root_and_config(name: &str, config: &Path) -> LoggedRuntime {
        LoggedRuntime::build(name, true, Some(config))
    }

    fn build(name: &str, private_root: bool, config: Option<&Path>) -> LoggedRuntime {
        let dir = TempDir::new(&format!("{name}-runtime"));
        let path = dir.path().join("strata");
        let log = dir.path().join("invocations.log");
        let root_args = if private_root {
            format!(
                "[[ \" $* \" == *\" --root \"* || \"$*\" == *--root=* ]] || extra=(--root '{}')\n",
                dir.path().join("state").display()
            )
        } else {
            String::new()
        };
        // A node config always: the test's, else an empty one, so that the host's
        // /etc/strata/config.toml cannot change the outcome.
        let config = config.unwrap_or(Path::new(crate::NO_NODE_CONFIG));
        let root_args = format!("{root_args}extra+=(--config '{}')\n", config.display());
        // exec -a keeps the name the client called, so links named strata-sandbox or
        // strata-vm pick their backend as the installed links do.
        let script = format!(
            "#!/bin/bash\nprintf '%s\\n' \"$*\" >> '{log}'\nextra=()\n{root_args}\
             exec -a \"$0\" '{bin}' \"${{extra[@]}}\" \"$@\"\n",
            log = log.display(),
            bin = strata_bin().display(),
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        LoggedRuntime { dir, path, log }
    }

    /// A link to the wrapper named `name` (e.g. `strata-sandbox`), as installed for clients
    /// that take one binary path per handler.
    pub fn link(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::os::unix::fs::symlink(&self.path, &p).unwrap();
        p
    }

    pub fn invocations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The distinct invocation shapes (subcommand and flags, IDs and paths elided), printed so
    /// a test run documents how the client drives a runtime.
    pub fn report(&self, client: &str) -> Vec<String> {
        let mut shapes: Vec<String> = self.invocations().iter().map(|l| shape(l)).collect();
        shapes.sort();
        shapes.dedup();
        eprintln!("{client} invoked the runtime as:");
        for s in &shapes {
            eprintln!("  strata {s}");
        }
        shapes
    }

    /// Asserts the client ran `verb` through strata at least once.
    pub fn assert_used(&self, verb: &str) {
        let calls = self.invocations();
        assert!(
            calls.iter().any(|l| subcommand(l) == Some(verb)),
            "the client never ran `strata {verb}`; it ran:\n{}",
            calls.join("\n")
        );
    }
}

const SUBCOMMANDS: &[&str] = &[
    "create",
    "start",
    "state",
    "kill",
    "delete",
    "run",
    "exec",
    "list",
    "spec",
    "features",
    "pause",
    "resume",
    "ps",
    "events",
    "update",
    "--version",
    "version",
];

fn subcommand(line: &str) -> Option<&str> {
    line.split_whitespace().find(|w| SUBCOMMANDS.contains(w))
}

/// `--root /x --log /y create --bundle /b --pid-file /p abc` → `--root R --log L create
/// --bundle B --pid-file P ID`: flag names kept, values replaced by a placeholder.
fn shape(line: &str) -> String {
    let mut out = Vec::new();
    let mut seen_sub = false;
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if w.starts_with('-') {
            out.push(w.to_string());
            let takes_value = !matches!(
                w,
                "--detach"
                    | "-d"
                    | "--force"
                    | "-f"
                    | "--all"
                    | "-a"
                    | "--tty"
                    | "-t"
                    | "--debug"
                    | "--systemd-cgroup"
                    | "--no-pivot"
                    | "--no-new-keyring"
                    | "--stats"
                    | "--version"
                    | "-q"
                    | "--quiet"
                    | "--no-new-privs"
            ) && !w.contains('=');
            if takes_value && words.peek().is_some() {
                words.next();
                out.push("X".into());
            }
        } else if !seen_sub && SUBCOMMANDS.contains(&w) {
            seen_sub = true;
            out.push(w.to_string());
        } else if seen_sub && (w.parse::<i32>().is_ok() || w.starts_with("SIG")) {
            out.push(w.to_string());
        } else {
            out.push("ID".into());
        }
    }
    out.join(" ")
}

/// Writes an OCI image archive (an image layout in a tar: one uncompressed layer holding the
/// busybox rootfs) that `ctr images import` and `podman load` take. `name` becomes the image
/// name through the `io.containerd.image.name` annotation.
pub fn busybox_oci_archive(dir: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    let work = dir.join("oci-build");
    let rootfs = work.join("rootfs");
    make_rootfs(&rootfs);
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = work.join("layer.tar");
    tar_dir(&rootfs, &layer);
    let layer_digest = sha256_file(&layer);
    let layer_size = std::fs::metadata(&layer).unwrap().len();
    std::fs::rename(&layer, blobs.join(&layer_digest)).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "strata test suite: busybox-static"}],
    });
    let (config_digest, config_size) = put_blob(&blobs, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put_blob(&blobs, &manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = dir.join("image.oci.tar");
    tar_dir(&layout, &archive);
    std::fs::remove_dir_all(&work).unwrap();
    archive
}

/// A plain tarball of the busybox rootfs, for `podman import` and `docker import`.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("tar-rootfs");
    make_rootfs(&rootfs);
    let tar = dir.join("rootfs.tar");
    tar_dir(&rootfs, &tar);
    std::fs::remove_dir_all(&rootfs).unwrap();
    tar
}

/// `dir`'s contents as a tar at `out`, numeric owners (as an image layer holds them).
fn tar_dir(dir: &Path, out: &Path) {
    run_ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .arg("."),
    );
}

fn put_blob(blobs: &Path, value: &serde_json::Value) -> (String, usize) {
    let bytes = value.to_string().into_bytes();
    let tmp = blobs.join("incoming");
    std::fs::write(&tmp, &bytes).unwrap();
    let digest = sha256_file(&tmp);
    std::fs::rename(&tmp, blobs.join(&digest)).unwrap();
    (digest, bytes.len())
}

fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs a command to completion and panics with its output if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = crate::output_via_files(cmd.stdin(Stdio::null()));
    assert!(
        out.status.success(),
        "{:?} failed ({}):\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `command` (a shell command line) on a fresh pty, as a terminal user would for `-it`;
/// returns what the terminal showed and the command's exit code.
pub fn on_pty(command: &str, timeout: Duration) -> (String, i32) {
    let dir = TempDir::new("pty");
    let typescript = dir.path().join("typescript");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", command])
        .arg(&typescript)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (bsdutils) is needed for -it tests");
    // Keep script's stdin open (an EOF would end the session) until the command is done.
    let stdin = child.stdin.take();
    let status = wait_timeout(&mut child, timeout)
        .unwrap_or_else(|| panic!("{command:?} on a pty did not finish within {timeout:?}"));
    drop(stdin);
    let shown = std::fs::read_to_string(&typescript).unwrap_or_default();
    (shown, status.code().unwrap_or(-1))
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon this test started (dockerd, containerd), with its output in a log file; stopped
/// with SIGTERM, then SIGKILL, on drop.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(name: &str, cmd: &mut Command, log: PathBuf) -> Daemon {
        *RUNNING_DAEMONS.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon {
            name: name.into(),
            child,
            log,
        }
    }

    /// Waits until `socket` accepts connections; panics with the daemon's log if it does not.
    pub fn wait_for_socket(&mut self, socket: &Path, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({st}) before serving:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not open {} within {timeout:?}:\n{}",
            self.name,
            socket.display(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if wait_timeout(&mut self.child, Duration::from_secs(20)).is_none() {
            eprintln!("{} ignored SIGTERM for 20 s; killed", self.name);
        }
        let mut running = RUNNING_DAEMONS.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        if *running == 0 {
            remove_daemon_run_dirs();
        }
    }
}

/// A cgroup parent `/strata-test/<name>` for a client's containers; whatever the client
/// leaves below it is removed (deepest first) on drop.
pub struct CgroupParent {
    pub path: String,
}

impl CgroupParent {
    pub fn new(name: &str) -> CgroupParent {
        CgroupParent {
            path: format!("/strata-test/{}", crate::unique(name)),
        }
    }

    /// The directories under the parent in every hierarchy (what a client left behind).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for mp in cgroup_mount_points() {
            let top = mp.join(self.path.trim_start_matches('/'));
            collect_dirs(&top, &mut found);
        }
        found
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
            out.push(e.path());
        }
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // A test that failed half-way may leave containers its client never stopped: they
        // are ours (they live in our cgroups), so end them before removing the directories.
        for _ in 0..50 {
            let mut any = false;
            for d in self.leftovers() {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for mp in cgroup_mount_points() {
            let top = mp.join(self.path.trim_start_matches('/'));
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.push(top);
            for d in dirs {
                let _ = std::fs::remove_dir(&d);
            }
        }
        crate::remove_test_cgroup_parent();
    }
}

/// SIGKILLs every process whose command line mentions `path` (a test daemon's helpers, such
/// as containerd shims started with `-address <our socket>`).
pub fn kill_processes_mentioning(path: &Path) {
    let needle = path.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Detaches every mount at or below `dir` (a daemon's leftovers: dockerd bind-mounts its own
/// data root, snapshots of tasks never deleted), deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut under: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|mp| Path::new(mp).starts_with(dir))
        .collect();
    under.sort_by_key(|mp| std::cmp::Reverse(mp.len()));
    for mp in under {
        let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Daemons of this test process still running. The fixed /run directories below are shared by
/// all of them, so only the last one to stop removes them.
static RUNNING_DAEMONS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// containerd's shims and dockerd create a few fixed directories under /run whatever their
/// configured roots; remove them when they are empty again (never anything in them).
fn remove_daemon_run_dirs() {
    for d in [
        "/run/containerd/s",
        "/run/containerd",
        "/run/docker/plugins",
        "/run/docker",
    ] {
        let _ = std::fs::remove_dir(d);
    }
}

/// Appends `text` to the file at `path`.
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A private containerd: own root, state, sockets and config. With `cri`, its CRI plugin
/// serves with runtime handlers pointing at strata; without, the plugin is disabled.
pub struct Containerd {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub daemon: Option<Daemon>,
}

/// The CRI plugin's settings for a test.
pub struct CriSettings<'a> {
    /// Handler name → runtime binary (the shim's `BinaryName`).
    pub handlers: &'a [(&'a str, &'a Path)],
    pub sandbox_image: &'a str,
    /// A CNI network list (JSON) for pods with a network of their own, run with Debian's
    /// containernetworking-plugins; None: host-network pods only.
    pub cni: Option<&'a str>,
}

/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

impl Containerd {
    pub fn start(cri: Option<&CriSettings>) -> Containerd {
        let dir = TempDir::new("containerd");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let mut config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             {disabled}\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [metrics]\n  address = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            disabled = if cri.is_some() {
                "disabled_plugins = []"
            } else {
                "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"
            },
        );
        if let Some(cri) = cri {
            let p = "plugins.\"io.containerd.grpc.v1.cri\"";
            std::fs::create_dir_all(d.join("cni/bin")).unwrap();
            std::fs::create_dir_all(d.join("cni/conf")).unwrap();
            if let Some(list) = cri.cni {
                std::fs::write(d.join("cni/conf/10-strata-test.conflist"), list).unwrap();
                for plugin in std::fs::read_dir(CNI_PLUGINS).unwrap().flatten() {
                    std::os::unix::fs::symlink(
                        plugin.path(),
                        d.join("cni/bin").join(plugin.file_name()),
                    )
                    .unwrap();
                }
            }
            config += &format!(
                "[{p}]\n\
                 sandbox_image = \"{image}\"\n\
                 restrict_oom_score_adj = true\n\
                 disable_tcp_service = true\n\
                 stream_server_address = \"127.0.0.1\"\n\
                 stream_server_port = \"0\"\n\
                 enable_selinux = false\n\
                 disable_apparmor = true\n\
                 [{p}.cni]\n  bin_dir = \"{cni}/bin\"\n  conf_dir = \"{cni}/conf\"\n\
                 [{p}.containerd]\n  default_runtime_name = \"{first}\"\n",
                image = cri.sandbox_image,
                cni = d.join("cni").display(),
                first = cri.handlers[0].0,
            );
            for (name, binary) in cri.handlers {
                config += &format!(
                    "[{p}.containerd.runtimes.{name}]\n\
                     runtime_type = \"io.containerd.runc.v2\"\n\
                     pod_annotations = [\"dev.strata.*\"]\n\
                     container_annotations = [\"dev.strata.*\"]\n\
                     [{p}.containerd.runtimes.{name}.options]\n\
                     BinaryName = \"{bin}\"\n\
                     Root = \"{root}/{name}\"\n",
                    bin = binary.display(),
                    root = d.join("runtime-root").display(),
                );
            }
        }
        std::fs::write(d.join("config.toml"), &config).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("config.toml"));
        let mut daemon = Daemon::start("containerd", &mut cmd, d.join("containerd.log"));
        daemon.wait_for_socket(&socket, Duration::from_secs(60));
        Containerd {
            dir,
            socket,
            daemon: Some(daemon),
        }
    }

    /// `ctr` against this containerd, in namespace `ns`.
    pub fn ctr(&self, ns: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", ns]);
        c
    }

    pub fn log_text(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        drop(self.daemon.take());
        // Shims outlive their containerd by design; ours are the ones given our socket.
        kill_processes_mentioning(&self.socket);
        // Snapshot mounts of tasks that were never deleted would keep the root busy.
        unmount_under(self.dir.path());
    }
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn shapes_hide_values_keep_flags() {
        assert_eq!(
            shape("--root /r --log /l --log-format json create --bundle /b --pid-file /p c1"),
            "--root X --log X --log-format X create --bundle X --pid-file X ID"
        );
        assert_eq!(
            shape("--root /r kill --all c1 9"),
            "--root X kill --all ID 9"
        );
        assert_eq!(
            shape("--root /r exec --process /p --detach --pid-file /x c1"),
            "--root X exec --process X --detach --pid-file X ID"
        );
    }
}
