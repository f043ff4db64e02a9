//! podman (Debian's 4.3) driving strata: `podman --runtime <strata>` with private storage,
//! run state and config, cgroupfs under a strata-test parent, an image imported from a
//! busybox tarball (no registry is reachable).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use strata_integration::clients::{
    busybox_rootfs_tar, on_pty, require_client, run_ok, CgroupParent, LoggedRuntime,
};
use strata_integration::{eventually, output_via_files, require_root, stdout, unique, TempDir};

const IMAGE: &str = "localhost/strata-busybox:latest";

struct Podman {
    dir: TempDir,
    runtime: LoggedRuntime,
    cgroups: CgroupParent,
}

impl Podman {
    fn new() -> Podman {
        Podman::with_runtime(LoggedRuntime::with_private_root("podman"))
    }

    fn with_runtime(runtime: LoggedRuntime) -> Podman {
        let dir = TempDir::new("podman");
        let cgroups = CgroupParent::new("podman");
        // Root here lacks CAP_SYS_RESOURCE: podman's default ulimits must not exceed the hard
        // limits the test itself runs with.
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .unwrap()
            .1;
        // podman 4.3 drops its own RLIMIT_NPROC hard limit to 32768 when it starts (seen in
        // /proc/<podman>/limits here) but still asks for 1048576 in config.json.
        let nproc = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
            .unwrap()
            .1
            .min(32768);
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             netns = \"none\"\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{dir}/events.log\"\n\
             runtime = \"strata\"\n\
             [engine.runtimes]\n\
             strata = [\"{rt}\"]\n",
            dir = dir.path().display(),
            rt = runtime.path.display(),
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("storage.conf"), storage).unwrap();
        let p = Podman {
            dir,
            runtime,
            cgroups,
        };
        let tar = busybox_rootfs_tar(p.dir.path());
        run_ok(p.cmd().arg("import").arg(&tar).arg(IMAGE));
        p
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .arg("--runtime")
            .arg(&self.runtime.path)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd().args(args).stdin(Stdio::null()))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}\n{}",
            out.status,
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    }

    fn status(&self, name: &str) -> String {
        self.ok(&["inspect", "--format", "{{.State.Status}}", name])
            .trim()
            .to_string()
    }

    fn cgroup_parent_flag(&self) -> String {
        format!("--cgroup-parent={}", self.cgroups.path)
    }

    /// A shell command line for `on_pty`, with this instance's private configuration.
    fn shell_line(&self, args: &[&str]) -> String {
        let c = self.cmd();
        let envs: Vec<String> = c
            .get_envs()
            .map(|(k, v)| {
                format!(
                    "{}='{}'",
                    k.to_string_lossy(),
                    v.unwrap_or_default().to_string_lossy()
                )
            })
            .collect();
        let argv: Vec<String> = c
            .get_args()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect();
        format!("env {} podman {}", envs.join(" "), argv.join(" "))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        // podman leaves the vfs layers' mounts and its storage lock behind only while it runs.
        let _ = output_via_files(self.cmd().args(["system", "reset", "--force"]));
        // podman itself keeps `<parent>/conmon` (its monitor's cgroup) for later containers;
        // CgroupParent removes it. Any other directory is a container's, which must be gone.
        let mut left = self.cgroups.leftovers();
        left.retain(|p| !p.ends_with("conmon"));
        if !left.is_empty() && !std::thread::panicking() {
            panic!("podman left cgroups behind: {left:?}");
        }
    }
}

fn podman() -> Option<Podman> {
    if !strata_integration::is_root() {
        eprintln!("SKIPPED: podman tests need root");
        return None;
    }
    if !require_client(&["podman", "conmon"]) {
        return None;
    }
    Some(Podman::new())
}

#[test]
fn podman_run_shows_output_and_exit_code() {
    require_root!();
    let Some(p) = podman() else { return };
    let cg = p.cgroup_parent_flag();
    let out = p.run(&[
        "run",
        "--rm",
        &cg,
        IMAGE,
        "sh",
        "-c",
        "echo hello from $(cat /proc/1/comm); exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stdout(&out));
    assert_eq!(stdout(&out).trim(), "hello from sh");
    p.runtime.assert_used("create");
    p.runtime.assert_used("start");
    p.runtime.assert_used("delete");
    p.runtime.report("podman run");
}

#[test]
fn podman_tmpfs_keeps_the_image_files_under_it() {
    require_root!();
    let Some(p) = podman() else { return };
    let cg = p.cgroup_parent_flag();
    // podman marks every --tmpfs "tmpcopyup": the image's /etc must still be there, and
    // writes must go to the tmpfs, not the image.
    let out = p.ok(&[
        "run",
        "--rm",
        &cg,
        "--tmpfs",
        "/etc",
        IMAGE,
        "sh",
        "-c",
        "cat /etc/group; echo x > /etc/new && grep -c ' /etc tmpfs ' /proc/self/mounts",
    ]);
    assert_eq!(out, "root:x:0:\n1\n");
    p.runtime.assert_used("create");
}

#[test]
fn podman_detached_exec_stop_rm() {
    require_root!();
    let Some(p) = podman() else { return };
    let name = unique("pd");
    let cg = p.cgroup_parent_flag();
    // A shell that handles TERM, so `stop` ends it with SIGTERM and its exit code is ours.
    p.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        &cg,
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    eventually("container logs ready", || {
        p.ok(&["logs", &name]).contains("ready")
    });
    assert_eq!(p.status(&name), "running");
    let host = p.ok(&["exec", &name, "cat", "/etc/hostname"]);
    assert!(!host.trim().is_empty());
    let out = p.run(&["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let top = p.ok(&["top", &name, "pid", "args"]);
    assert!(top.contains("trap"), "{top}");
    p.ok(&["stop", "--time", "10", &name]);
    assert_eq!(p.status(&name), "exited");
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "42");
    p.ok(&["rm", &name]);
    assert!(!p
        .ok(&["ps", "-a", "--format", "{{.Names}}"])
        .contains(&name));
    p.runtime.assert_used("exec");
    p.runtime.assert_used("kill");
    p.runtime.report("podman -d/exec/stop/rm");
}

#[test]
fn podman_pause_unpause_kill() {
    require_root!();
    let Some(p) = podman() else { return };
    let name = unique("pk");
    let cg = p.cgroup_parent_flag();
    p.ok(&["run", "-d", "--name", &name, &cg, IMAGE, "sleep", "1000"]);
    p.ok(&["pause", &name]);
    assert_eq!(p.status(&name), "paused");
    p.ok(&["unpause", &name]);
    assert_eq!(p.status(&name), "running");
    p.ok(&["kill", "--signal", "KILL", &name]);
    eventually("killed container exits", || p.status(&name) == "exited");
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "137");
    p.ok(&["rm", &name]);
    p.runtime.assert_used("pause");
    p.runtime.assert_used("resume");
    p.runtime.report("podman pause/unpause/kill");
}

#[test]
fn podman_interactive_tty() {
    require_root!();
    let Some(p) = podman() else { return };
    let cg = p.cgroup_parent_flag();
    let line = p.shell_line(&[
        "run",
        "--rm",
        "-it",
        &cg,
        IMAGE,
        "sh",
        "-c",
        "tty; [ -t 0 ] && echo stdin-is-tty; exit 5",
    ]);
    let (shown, code) = on_pty(&line, Duration::from_secs(60));
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("/dev/pts/0"), "{shown}");
    assert!(shown.contains("stdin-is-tty"), "{shown}");
    let created: Vec<String> = p
        .runtime
        .invocations()
        .into_iter()
        .filter(|l| l.contains(" create "))
        .collect();
    assert!(
        created.iter().all(|l| l.contains("--console-socket")),
        "podman -it must hand strata a console socket: {created:?}"
    );
    p.runtime.report("podman -it");
}

#[test]
fn podman_run_on_the_vm_backend_by_annotation() {
    require_root!();
    if !strata_integration::is_root() || !require_client(&["podman", "conmon"]) {
        return;
    }
    let cfg_dir = TempDir::new("podman-vm");
    let Some(config) = strata_integration::vm_node_config(cfg_dir.path()) else {
        return;
    };
    let p = Podman::with_runtime(LoggedRuntime::with_private_root_and_config(
        "podman-vm",
        &config,
    ));
    let cg = p.cgroup_parent_flag();
    // Volumes (`-v`), one read-write and one read-only, cross into the guest.
    let vols = TempDir::new("podman-vm-vols");
    let (data, conf) = (vols.path().join("data"), vols.path().join("conf"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("setting"), "from-the-host\n").unwrap();
    let data_vol = format!("{}:/data", data.display());
    let conf_vol = format!("{}:/conf:ro", conf.display());
    let out = p.run(&[
        "run",
        "--rm",
        &cg,
        "--annotation",
        "dev.strata.backend=vm",
        "-v",
        &data_vol,
        "-v",
        &conf_vol,
        IMAGE,
        "sh",
        "-c",
        "uname -r; echo \"$(cat /etc/hostname)\"; cat /conf/setting; echo written > /data/out; \
         touch /conf/x 2>/dev/null && echo WROTE-RO || echo ro-refused; exit 6",
    ]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("out")).unwrap_or_default(),
        "written\n",
        "{out:?}"
    );
    assert!(!conf.join("x").exists(), "the read-only volume was written");
    let text = stdout(&out);
    let release = text.lines().next().unwrap_or_default().to_string();
    assert!(
        strata_integration::is_guest_kernel(&release),
        "ran in the guest kernel: {text:?}"
    );
    // podman's /etc/hostname bind mount (a host file) reached the guest.
    assert!(
        text.lines().nth(1).is_some_and(|h| !h.trim().is_empty()),
        "{text:?}"
    );
    assert_eq!(
        text.lines().skip(2).collect::<Vec<_>>(),
        ["from-the-host", "ro-refused"],
        "{text:?}"
    );
    p.runtime.assert_used("create");
    p.runtime.report("podman run (vm)");
}

/// A podman bridge network (CNI here, as podman 4.3 on Debian uses it) on the vm backend: the
/// namespace podman made is taken into the VM, the container gets podman's address and route,
/// and reaches a listener on the host at the bridge's address.
#[test]
fn podman_bridge_network_on_the_vm_backend() {
    require_root!();
    if !strata_integration::is_root() || !require_client(&["podman", "conmon"]) {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        assert!(
            std::env::var("STRATA_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "STRATA_REQUIRE_CLIENTS=1 but /usr/lib/cni/bridge (containernetworking-plugins) is missing"
        );
        eprintln!("SKIPPED: containernetworking-plugins is not installed");
        return;
    }
    let cfg_dir = TempDir::new("podman-vmnet");
    let Some(config) = strata_integration::vm_node_config(cfg_dir.path()) else {
        return;
    };
    let p = Podman::with_runtime(LoggedRuntime::with_private_root_and_config(
        "podman-vmnet",
        &config,
    ));
    let cni = p.dir.path().join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    let conf = p.dir.path().join("containers.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += &format!(
        "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"/usr/lib/cni\"]\n\
         network_config_dir = \"{}\"\n",
        cni.display()
    );
    std::fs::write(&conf, text).unwrap();
    let net = unique("strata-vmnet");
    p.ok(&["network", "create", "--subnet", "10.89.213.0/24", &net]);
    // The bridge the CNI plugin makes on the host outlives the network; removed however the
    // test ends.
    let conflist = std::fs::read_to_string(cni.join(format!("{net}.conflist"))).unwrap();
    let bridge: String = serde_json::from_str::<serde_json::Value>(&conflist).unwrap()["plugins"]
        [0]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    struct Cleanup<'a>(&'a Podman, String, String, Option<std::process::Child>);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Some(mut l) = self.3.take() {
                let _ = l.kill();
                let _ = l.wait();
            }
            let _ = self.0.run(&["rm", "--all", "--force", "--time", "0"]);
            let _ = self.0.run(&["network", "rm", "--force", &self.1]);
            let _ = Command::new("ip")
                .args(["link", "del", &self.2])
                .stderr(Stdio::null())
                .status();
        }
    }
    let mut cleanup = Cleanup(&p, net.clone(), bridge, None);
    let cg = p.cgroup_parent_flag();
    // The listener is on the host; the bridge's address exists once a container is on it, so
    // the container retries.
    cleanup.3 = Some(
        Command::new("busybox")
            .args([
                "nc",
                "-l",
                "-p",
                "8089",
                "-e",
                "echo",
                "hello-from-the-host",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = p.run(&[
        "run",
        "--rm",
        &cg,
        "--network",
        &net,
        "--annotation",
        "dev.strata.backend=vm",
        IMAGE,
        "sh",
        "-c",
        "uname -r; ip -o -4 addr show dev eth0 | grep -o '10\\.89\\.213\\.[0-9]*/24'; \
         ip route | grep -o 'default via 10.89.213.1'; \
         i=0; until nc 10.89.213.1 8089 </dev/null; do i=$((i+1)); [ $i -ge 20 ] && exit 9; sleep 0.5; done",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 4 && strata_integration::is_guest_kernel(lines[0]),
        "ran in the guest: {text:?}"
    );
    assert!(
        lines[1].starts_with("10.89.213.") && lines[1] != "10.89.213.1/24",
        "{text:?}"
    );
    assert_eq!(
        &lines[2..],
        ["default via 10.89.213.1", "hello-from-the-host"],
        "{text:?}"
    );
    // A published port (-p, CNI's portmap on the host) answers from the host.
    let port = 18089 + (std::process::id() % 500) as u16;
    let publish = format!("{port}:80");
    p.ok(&[
        "run",
        "-d",
        "--name",
        "published",
        &cg,
        "--network",
        &net,
        "-p",
        &publish,
        "--annotation",
        "dev.strata.backend=vm",
        IMAGE,
        "sh",
        "-c",
        "while true; do nc -l -p 80 -e echo published-from-the-vm; done",
    ]);
    let answer = strata_integration::answer_of(
        &format!("{}:{port}", "10.89.213.1"),
        Duration::from_secs(60),
    );
    assert_eq!(answer, "published-from-the-vm\n");
    p.ok(&["rm", "--force", "--time", "0", "published"]);
    p.runtime.assert_used("create");
    drop(cleanup);
    p.runtime.report("podman bridge network (vm)");
}
