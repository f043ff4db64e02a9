//! Docker Engine (Debian's docker.io 20.10) driving strata: a private dockerd (own data root,
//! exec root, socket, daemon.json; no iptables, no bridge) with strata added by
//! `--add-runtime`, and an image imported from a busybox tarball.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use strata_integration::clients::{
    busybox_rootfs_tar, find_in_path, kill_processes_mentioning, on_pty, require_client, run_ok,
    unmount_under, CgroupParent, Daemon, LoggedRuntime,
};
use strata_integration::{eventually, output_via_files, stdout, unique, TempDir};

const IMAGE: &str = "strata-busybox:latest";

struct Docker {
    runtime: LoggedRuntime,
    cgroups: CgroupParent,
    cli: PathBuf,
    socket: PathBuf,
    // Dropped before `dir`: the daemon must stop before its directories go.
    daemon: Option<Daemon>,
    dir: TempDir,
    /// The bridge made for a daemon with a network (removed after it stops).
    bridge: Option<String>,
}

impl Docker {
    fn start() -> Option<Docker> {
        Docker::start_with(false, None)
    }

    /// `via_symlink`: the data and exec roots are reached through a symlinked directory, as
    /// on hosts where /var/lib/docker is a link to a bigger disk. `node_config`: strata gets
    /// it (the vm backend finds its guest there), and the runtime `strata-vm` is added too.
    fn start_with(via_symlink: bool, node_config: Option<&std::path::Path>) -> Option<Docker> {
        if !strata_integration::is_root() {
            eprintln!("SKIPPED: Docker tests need root");
            return None;
        }
        if !require_client(&["dockerd", "docker", "containerd"]) {
            return None;
        }
        let cli = find_in_path("docker").unwrap();
        let dir = TempDir::new("docker");
        let runtime = match node_config {
            Some(config) => LoggedRuntime::with_config("docker", config),
            None => LoggedRuntime::new("docker"),
        };
        let cgroups = CgroupParent::new("docker");
        let d = if via_symlink {
            std::fs::create_dir(dir.path().join("real")).unwrap();
            std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
            dir.path().join("link")
        } else {
            dir.path().to_path_buf()
        };
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let socket = d.join("docker.sock");
        // With a node config (the vm test) the daemon gets a bridge network of its own, made
        // here (a name and subnet no other daemon uses), and publishes ports through
        // docker-proxy rather than iptables, which would change the host's tables.
        let bridge = node_config.map(|_| {
            let name = format!("sdk{}", std::process::id() % 100000);
            let subnet = std::process::id() % 200 + 20;
            for args in [
                vec!["link", "add", "name", &name, "type", "bridge"],
                vec!["addr", "add", &format!("10.86.{subnet}.1/24"), "dev", &name],
                vec!["link", "set", &name, "up"],
            ] {
                run_ok(Command::new("ip").args(&args));
            }
            name
        });
        let network: Vec<String> = match &bridge {
            Some(name) => vec![format!("--bridge={name}"), "--userland-proxy=true".into()],
            None => vec!["--bridge=none".into(), "--userland-proxy=false".into()],
        };
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--exec-opt=native.cgroupdriver=cgroupfs",
            ])
            .args(&network)
            .arg(format!("--cgroup-parent={}", cgroups.path))
            .arg(format!("--add-runtime=strata={}", runtime.path.display()))
            .args(node_config.map(|_| {
                format!(
                    "--add-runtime=strata-vm={}",
                    runtime.link("strata-vm").display()
                )
            }))
            // Each test's daemon runs its own containerd under its exec root.
            .env_remove("DOCKER_HOST");
        let mut daemon = Daemon::start("dockerd", &mut cmd, d.join("dockerd.log"));
        daemon.wait_for_socket(&socket, Duration::from_secs(60));
        let docker = Docker {
            runtime,
            cgroups,
            cli,
            socket,
            daemon: Some(daemon),
            dir,
            bridge,
        };
        let tar = busybox_rootfs_tar(docker.dir.path());
        run_ok(docker.cmd().arg("import").arg(&tar).arg(IMAGE));
        Some(docker)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd().args(args).stdin(Stdio::null()))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}\n{}\ndockerd log:\n{}",
            out.status,
            stdout(&out),
            String::from_utf8_lossy(&out.stderr),
            self.daemon
                .as_ref()
                .map(|d| d.log_text())
                .unwrap_or_default()
        );
        stdout(&out)
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
            .trim()
            .to_string()
    }

    fn shell_line(&self, args: &[&str]) -> String {
        let argv: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        format!(
            "env DOCKER_HOST='unix://{}' DOCKER_CONFIG='{}' '{}' {}",
            self.socket.display(),
            self.dir.path().join("cli").display(),
            self.cli.display(),
            argv.join(" ")
        )
    }

    /// The container's memory cgroup on the host (v1 memory controller here).
    fn memory_limit_on_host(&self, name: &str) -> Option<u64> {
        let full_id = self.inspect(name, "{{.Id}}");
        for mp in strata_integration::cgroup_mount_points() {
            let f = mp
                .join(self.cgroups.path.trim_start_matches('/'))
                .join(&full_id);
            for file in ["memory.limit_in_bytes", "memory.max"] {
                if let Ok(t) = std::fs::read_to_string(f.join(file)) {
                    return t.trim().parse().ok();
                }
            }
        }
        None
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        drop(self.daemon.take());
        kill_processes_mentioning(self.dir.path());
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
        let left = self.cgroups.leftovers();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("docker left cgroups behind: {left:?}");
        }
        // dockerd bind-mounts a data root reached through a symlink onto itself and leaves
        // that mount when it exits.
        unmount_under(self.dir.path());
    }
}

#[test]
fn docker_run_output_exit_code_stdin_tty() {
    let Some(d) = Docker::start() else { return };
    let out = d.run(&[
        "run",
        "--rm",
        "--runtime",
        "strata",
        IMAGE,
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(stdout(&out).trim(), "hello");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "oops");

    let input = d.dir.path().join("stdin.txt");
    std::fs::write(&input, "piped through\n").unwrap();
    let out = output_via_files(
        d.cmd()
            .args(["run", "--rm", "-i", "--runtime", "strata", IMAGE, "cat"])
            .stdin(std::fs::File::open(&input).unwrap()),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "piped through\n");

    let (shown, code) = on_pty(
        &d.shell_line(&[
            "run",
            "--rm",
            "-it",
            "--runtime",
            "strata",
            IMAGE,
            "sh",
            "-c",
            "tty; [ -t 0 ] && echo stdin-is-tty; exit 5",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("/dev/pts/0"), "{shown}");
    assert!(shown.contains("stdin-is-tty"), "{shown}");
    d.runtime.assert_used("create");
    d.runtime.assert_used("start");
    d.runtime.assert_used("delete");
    d.runtime.report("docker run");
}

#[test]
fn docker_detached_lifecycle() {
    let Some(d) = Docker::start() else { return };
    let name = unique("dd");
    d.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        "strata",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    eventually("docker logs shows ready", || {
        d.ok(&["logs", &name]).contains("ready")
    });
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "running");

    let out = d.run(&["exec", &name, "sh", "-c", "echo in-exec; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out).trim(), "in-exec");
    let (shown, code) = on_pty(
        &d.shell_line(&["exec", "-it", &name, "sh", "-c", "tty; exit 4"]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 4, "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");

    let top = d.ok(&["top", &name]);
    assert!(top.contains("trap"), "{top}");

    d.ok(&["pause", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "paused");
    d.ok(&["unpause", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "running");

    d.ok(&["update", "--memory", "64m", "--memory-swap", "128m", &name]);
    assert_eq!(d.memory_limit_on_host(&name), Some(64 << 20));

    d.ok(&["stop", "--time", "10", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(d.inspect(&name, "{{.State.ExitCode}}"), "42");
    assert!(d.ok(&["logs", &name]).contains("got TERM"));

    d.ok(&["start", &name]);
    assert_eq!(d.inspect(&name, "{{.State.Status}}"), "running");
    d.ok(&["kill", &name]);
    eventually("killed container exits", || {
        d.inspect(&name, "{{.State.Status}}") == "exited"
    });
    assert_eq!(d.inspect(&name, "{{.State.ExitCode}}"), "137");
    d.ok(&["rm", &name]);
    for verb in ["exec", "kill", "pause", "resume", "update", "delete"] {
        d.runtime.assert_used(verb);
    }
    d.runtime
        .report("docker -d/logs/exec/top/pause/update/stop/start/kill/rm");
}

/// Also: Docker's storage reached through a symlink. strata resolves the bundle's rootfs
/// path before mounting it, so this works as it does with a plain path.
#[test]
fn docker_read_only_and_memory_limit_with_symlinked_storage() {
    let Some(d) = Docker::start_with(true, None) else {
        return;
    };
    let out = d.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--memory",
        "32m",
        "--runtime",
        "strata",
        IMAGE,
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo writable || echo read-only; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["read-only", "33554432"], "{out}");
}

/// Docker on the vm backend: its network comes from libnetwork's prestart hook, which runs on
/// the host against the VM's monitor (the container's PID, in its host-side network
/// namespace); the container runs in the guest, with a volume.
#[test]
fn docker_runs_a_container_on_the_vm_backend() {
    let cfg = TempDir::new("docker-vm-cfg");
    if !strata_integration::is_root() {
        eprintln!("SKIPPED: Docker tests need root");
        return;
    }
    let Some(config) = strata_integration::vm_node_config(cfg.path()) else {
        return;
    };
    let Some(d) = Docker::start_with(false, Some(&config)) else {
        return;
    };
    let vol = TempDir::new("docker-vm-vol");
    std::fs::write(vol.path().join("in"), "from-the-host\n").unwrap();
    let mount = format!("{}:/data", vol.path().display());
    let out = d.run(&[
        "run",
        "--rm",
        "--runtime",
        "strata-vm",
        "-v",
        &mount,
        IMAGE,
        "sh",
        "-c",
        "uname -r; cat /data/in; echo out > /data/out; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = stdout(&out);
    let mut lines = text.lines();
    assert!(
        strata_integration::is_guest_kernel(lines.next().unwrap_or_default()),
        "{text}"
    );
    assert_eq!(lines.next(), Some("from-the-host"), "{text}");
    assert_eq!(
        std::fs::read_to_string(vol.path().join("out")).unwrap(),
        "out\n"
    );
    // Docker's bridge and a published port (-p, docker-proxy on the host): the container in
    // the VM answers on the host's port.
    let port = 18500 + (std::process::id() % 400) as u16;
    let publish = format!("{port}:80");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "published",
        "--runtime",
        "strata-vm",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "while true; do nc -l -p 80 -e echo published-from-the-vm; done",
    ]);
    let answer =
        strata_integration::answer_of(&format!("{}:{port}", "127.0.0.1"), Duration::from_secs(60));
    assert_eq!(answer, "published-from-the-vm\n");
    d.ok(&["rm", "-f", "published"]);
    d.runtime.assert_used("create");
    d.runtime.report("docker run (vm)");
}
