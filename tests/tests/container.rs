//! What the workload sees: namespaces (new and joined), mounts, devices, process settings,
//! hooks, the terminal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use serde_json::{json, Value};
use strata_integration::*;

fn run_ok(b: &mut Bundle, name: &str) -> String {
    let rt = Runtime::new();
    let id = container(b, name);
    rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id])
}

#[test]
fn process_settings() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; umask; id -G; ulimit -n; \
         cat /proc/self/oom_score_adj; echo HOME=$HOME; pwd",
    ]);
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 0, "gid": 0, "umask": 23, "additionalGids": [10, 20]});
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
        c["process"]["oomScoreAdj"] = json!(500);
        c["process"]["cwd"] = json!("/work/dir");
        c["process"]["noNewPrivileges"] = json!(true);
    });
    let out = run_ok(&mut b, "proc");
    // CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(out.contains("CapBnd:\t0000000020000420"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("\n0027\n"), "{out}");
    assert!(out.contains("0 10 20"), "{out}");
    assert!(out.contains("\n256\n"), "{out}");
    assert!(out.contains("\n500\n"), "{out}");
    assert!(out.contains("HOME=/root"), "{out}");
    assert!(out.ends_with("/work/dir\n"), "{out}");

    let mut b = Bundle::new(&["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"]);
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 65534, "gid": 65534});
        c["process"]["capabilities"]["ambient"] = json!(["CAP_KILL"]);
        c["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    });
    let out = run_ok(&mut b, "user");
    assert!(out.starts_with("65534\n65534\n"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000020"),
        "ambient CAP_KILL: {out}"
    );
}

fn lacks_cap_sys_resource() -> bool {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap();
    u64::from_str_radix(eff.trim(), 16).unwrap() & (1 << 24) == 0
}

#[test]
fn eperm_without_cap_sys_resource_names_the_field() {
    require_root!();
    if !lacks_cap_sys_resource() {
        eprintln!("SKIPPED: this host has CAP_SYS_RESOURCE, so raising limits succeeds");
        return;
    }
    let rt = Runtime::new();
    let hard = std::fs::read_to_string("/proc/self/limits").unwrap();
    let nofile_hard: u64 = hard
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "rlim");
    b.edit(|c| {
        c["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "hard": nofile_hard * 2, "soft": 1024}])
    });
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("process.rlimits[RLIMIT_NOFILE]") && err.contains("CAP_SYS_RESOURCE"),
        "{err}"
    );
    b.edit(|c| {
        c["process"]["rlimits"] = json!([]);
        c["process"]["oomScoreAdj"] = json!(-500);
    });
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("process.oomScoreAdj") && err.contains("CAP_SYS_RESOURCE"),
        "{err}"
    );
    assert!(rt.container_dirs().is_empty());
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn mounts_devices_masked_and_readonly_paths() {
    require_root!();
    let host_dir = TempDir::new("bindsrc");
    std::fs::write(host_dir.path().join("file"), "from host\n").unwrap();
    let mut b = Bundle::new(&[
        "sh", "-c",
        "cat /data/file; touch /data/new 2>/dev/null || echo bind-ro; \
         grep ' /scratch ' /proc/self/mountinfo | grep -c tmpfs; \
         stat -c '%t,%T,%a' /dev/fuse; stat -c %t,%T /dev/null; readlink /dev/ptmx; readlink /dev/fd; \
         cat /etc/secret; ls /etc/secretdir; echo masked; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro; \
         hostname; cat /proc/sys/kernel/domainname; ls /sys/fs/cgroup | grep -c pids",
    ]);
    b.edit(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/data", "type": "bind", "source": host_dir.path(), "options": ["rbind", "ro"]}));
        m.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
        c["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 384}]);
        c["hostname"] = json!("box");
        c["domainname"] = json!("example.org");
        c["linux"]["maskedPaths"].as_array_mut().unwrap().extend([json!("/etc/secret"), json!("/etc/secretdir")]);
    });
    std::fs::write(b.rootfs().join("etc/secret"), "secret").unwrap();
    std::fs::create_dir_all(b.rootfs().join("etc/secretdir")).unwrap();
    std::fs::write(b.rootfs().join("etc/secretdir/key"), "secret").unwrap();
    let out = run_ok(&mut b, "mounts");
    let want = "from host\nbind-ro\n1\na,e5,600\n1,3\npts/ptmx\n/proc/self/fd\nmasked\nsys-ro\nbox\nexample.org\n1\n";
    assert_eq!(out, want);
    assert!(!host_dir.path().join("new").exists());
}

#[test]
fn sysctl_and_rootfs_propagation() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward; head -1 /proc/self/mountinfo | grep -c shared:",
    ]);
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["linux"]["rootfsPropagation"] = json!("shared");
    });
    let out = run_ok(&mut b, "sysctl");
    assert_eq!(out, "1\n1\n");
}

#[test]
fn joins_namespaces_by_path() {
    require_root!();
    let rt = Runtime::new();
    let mut a = Bundle::new(&["sleep", "1000"]);
    a.edit(|c| c["hostname"] = json!("alpha"));
    let ida = container(&mut a, "nsa");
    let pidfile = a.path().join("pid");
    rt.ok(&[
        "run",
        "-d",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "-b",
        a.path().to_str().unwrap(),
        &ida,
    ]);
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();

    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "hostname; readlink /proc/self/ns/net; ps -o comm | grep -c ^sleep",
    ]);
    b.edit(|c| {
        c.as_object_mut().unwrap().remove("hostname");
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| {
            !matches!(
                n["type"].as_str(),
                Some("uts") | Some("network") | Some("pid")
            )
        });
        ns.push(json!({"type": "uts", "path": format!("/proc/{pid}/ns/uts")}));
        ns.push(json!({"type": "network", "path": format!("/proc/{pid}/ns/net")}));
        ns.push(json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")}));
    });
    let idb = container(&mut b, "nsb");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &idb]);
    let a_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(out, format!("alpha\n{}\n1\n", a_net.display()));
    rt.ok(&["delete", "-f", &ida]);
}

#[test]
fn user_namespace_with_mappings() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls /proc | grep -c '^1$'",
    ]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let out = run_ok(&mut b, "userns");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], vec!["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], vec!["0", "100000", "65536"], "{out}");
    assert_eq!(lines[2], vec!["0"], "{out}");
    assert_eq!(lines[3], vec!["1"], "{out}");
}

#[test]
fn time_namespace_offsets() {
    require_root!();
    let mut b = Bundle::new(&["cat", "/proc/self/timens_offsets"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 86400, "nanosecs": 0}});
    });
    let out = run_ok(&mut b, "timens");
    assert!(out.contains("monotonic") && out.contains("86400"), "{out}");
}

#[test]
fn hooks_run_in_order_with_state() {
    require_root!();
    let rt = Runtime::new();
    let log = TempDir::new("hooks");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json; echo {name} >> {}/order", log.path().display(), log.path().display())], "timeout": 5});
    let mut b = Bundle::new(&["sh", "-c", "echo workload"]);
    b.edit(|c| {
        c["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            // startContainer runs inside the container: its path and files are the rootfs's.
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/startContainer.json"]}],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
        c["annotations"] = json!({"test.key": "v"});
    });
    let id = container(&mut b, "hooks");
    let pidfile = b.path().join("pid");
    rt.ok(&[
        "create",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let order = std::fs::read_to_string(log.path().join("order")).unwrap();
    assert_eq!(order, "prestart\ncreateRuntime\ncreateContainer\n");
    let pid: i64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(log.path().join("createRuntime.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["status"], "creating");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["bundle"], b.path().to_str().unwrap());
    assert_eq!(st["annotations"]["test.key"], "v");
    rt.ok(&["start", &id]);
    let order = std::fs::read_to_string(log.path().join("order")).unwrap();
    assert_eq!(
        order,
        "prestart\ncreateRuntime\ncreateContainer\npoststart\n"
    );
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(b.rootfs().join("tmp/startContainer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["id"], id.as_str());
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(log.path().join("poststart.json")).unwrap())
            .unwrap();
    assert_eq!(st["status"], "running");
    eventually("workload exit", || rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    let order = std::fs::read_to_string(log.path().join("order")).unwrap();
    assert!(order.ends_with("poststart\npoststop\n"), "{order}");
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(log.path().join("poststop.json")).unwrap())
            .unwrap();
    assert_eq!(st["status"], "stopped");
}

/// Receives the pty master that strata sends over --console-socket.
fn recv_master(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this fd for us.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

fn read_until(master: &OwnedFd, needle: &str) -> String {
    let mut f = std::fs::File::from(master.try_clone().unwrap());
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    use std::io::Read;
    while !got.contains(needle) {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got
}

#[test]
fn terminal_through_console_socket() {
    require_root!();
    let rt = Runtime::new();
    let dir = TempDir::new("tty");
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut b = Bundle::new(&["sh", "-c", "tty; stty size; echo done-init; sleep 1000"]);
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    });
    let id = container(&mut b, "tty");
    let recv = std::thread::spawn(move || recv_master(&listener));
    rt.ok(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let master = recv.join().unwrap();
    rt.ok(&["start", &id]);
    let out = read_until(&master, "done-init");
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");

    // exec -t with a console socket, the way containerd and podman call it.
    let sock2 = dir.path().join("exec.sock");
    let listener = UnixListener::bind(&sock2).unwrap();
    let recv = std::thread::spawn(move || recv_master(&listener));
    rt.ok(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        sock2.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; echo done-exec",
    ]);
    let master = recv.join().unwrap();
    let out = read_until(&master, "done-exec");
    assert!(out.contains("/dev/pts/1"), "{out:?}");
    rt.ok(&["delete", "-f", &id]);

    // A terminal without a console socket cannot be detached.
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("--console-socket"), "{err}");
    assert!(rt.container_dirs().is_empty());
}

#[test]
fn cgroup_namespace_is_rooted_at_the_container_cgroup() {
    require_root!();
    let mut b = Bundle::new(&["cat", "/proc/self/cgroup"]);
    let out = run_ok(&mut b, "cgns");
    assert!(!out.is_empty());
    for line in out.lines() {
        assert!(
            line.ends_with(":/"),
            "not rooted at the container's cgroup: {out}"
        );
    }
}

#[test]
fn without_a_mount_namespace_the_process_is_only_chrooted() {
    require_root!();
    let mounts = mount_count();
    let mut b = Bundle::new(&["sh", "-c", "ls /bin/busybox; ls /etc"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
        c["mounts"] = json!([]);
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    });
    let out = run_ok(&mut b, "nomntns");
    assert_eq!(out, "/bin/busybox\ngroup\npasswd\n");
    assert_eq!(mount_count(), mounts, "nothing may be mounted on the host");
}

#[test]
fn joins_a_mount_namespace_by_path() {
    require_root!();
    let rt = Runtime::new();
    // A mount namespace that still sees the host's paths (a pivoted container's would not
    // see the bundle).
    let mut holder = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "1000"])
        .spawn()
        .unwrap();
    let pid = holder.id().to_string();
    eventually("the namespace holder", || {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
            != std::fs::read_link("/proc/self/ns/mnt").ok()
    });
    let a_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let mut b = Bundle::new(&["readlink", "/proc/self/ns/mnt"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "mount");
        ns.push(json!({"type": "mount", "path": format!("/proc/{pid}/ns/mnt")}));
    });
    let idb = container(&mut b, "mntb");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &idb]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.trim(), a_mnt.to_str().unwrap());
}

#[test]
fn unbindable_rootfs_propagation() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "head -1 /proc/self/mountinfo | grep -c unbindable",
    ]);
    b.edit(|c| c["linux"]["rootfsPropagation"] = json!("unbindable"));
    assert_eq!(run_ok(&mut b, "unbind"), "1\n");
}

#[test]
fn a_config_without_process_creates_but_does_not_start() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c.as_object_mut().unwrap().remove("process");
    });
    let id = container(&mut b, "noproc");
    rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(rt.status(&id), "created");
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("no process"), "{err}");
    eventually("stop", || rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn capabilities_the_runtime_lacks_are_dropped_with_a_warning() {
    require_root!();
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = st
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .unwrap();
    if u64::from_str_radix(bnd.trim(), 16).unwrap() & (1 << 24) != 0 {
        eprintln!("SKIPPED: this runtime holds CAP_SYS_RESOURCE, so nothing is dropped");
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["grep", "CapBnd", "/proc/self/status"]);
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted", "inheritable"] {
            c["process"]["capabilities"][set] = json!(["CAP_KILL", "CAP_SYS_RESOURCE"]);
        }
    });
    let id = container(&mut b, "capdrop");
    let out = rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "CapBnd:\t0000000000000020\n");
    assert!(
        stderr(&out).contains("CAP_SYS_RESOURCE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hooks_without_env_inherit_as_runcs_do() {
    require_root!();
    let rt = Runtime::new();
    let log = TempDir::new("hook-env");
    let mut b = Bundle::new(&["true"]);
    let prestart = format!(
        "echo \"${{STRATA_HOOK_TEST:-unset}}\" > {}/prestart",
        log.path().display()
    );
    b.edit(|c| {
        c["process"]["env"] = json!(["PATH=/bin", "ONE=two"]);
        c["hooks"] = json!({
            // On the host: the runtime's environment.
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", prestart]}],
            // In the container: the process's environment, not the runtime's; with `env`,
            // exactly that.
            "startContainer": [
                {"path": "/bin/sh", "args": ["sh", "-c",
                    "echo \"$ONE ${STRATA_HOOK_TEST:-unset}\" > /tmp/inherited"]},
                {"path": "/bin/sh", "args": ["sh", "-c",
                    "echo \"${ONE:-unset} $HOOK_VAR\" > /tmp/explicit"],
                 "env": ["HOOK_VAR=hook_value"]},
            ],
        });
    });
    let id = container(&mut b, "hook-env");
    let mut cmd = rt.cmd();
    cmd.env("STRATA_HOOK_TEST", "from-the-runtime").args([
        "run",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let out = output_via_files(&mut cmd);
    assert!(out.status.success(), "{out:?}");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(log.path().join("prestart")), "from-the-runtime\n");
    assert_eq!(read(b.rootfs().join("tmp/inherited")), "two unset\n");
    assert_eq!(read(b.rootfs().join("tmp/explicit")), "unset hook_value\n");
}

#[test]
fn ambient_capabilities_the_kernel_refuses_leave_the_workloads_stderr_alone() {
    require_root!();
    let rt = Runtime::new();
    // As `runc spec` bundles have them since CVE-2022-29162's fix: ambient without
    // inheritable, which the kernel refuses to raise.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["process"]["capabilities"]["ambient"] = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        c["process"]["capabilities"]["inheritable"] = json!([]);
    });
    let id = container(&mut b, "ambient");
    let out = rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
}

#[test]
fn a_failing_poststart_hook_is_a_warning_and_the_rest_go_on() {
    require_root!();
    let rt = Runtime::new();
    let log = TempDir::new("poststart");
    let mut b = Bundle::new(&["sleep", "100"]);
    let second = format!("touch {}/second-ran", log.path().display());
    b.edit(|c| {
        c["hooks"] = json!({"poststart": [
            {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]},
            {"path": "/bin/sh", "args": ["sh", "-c", second]},
        ]});
    });
    let id = container(&mut b, "poststart");
    rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    // Runtime-spec 1.3.0, lifecycle step 7: a warning, and the remaining hooks and the
    // lifecycle continue as if the hook had succeeded.
    let runtime_log = log.path().join("runtime.log");
    let out = rt.run(&["--log", runtime_log.to_str().unwrap(), "start", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(log.path().join("second-ran").exists());
    assert_eq!(rt.status(&id), "running");
    let text = std::fs::read_to_string(&runtime_log).unwrap();
    assert!(
        text.contains("warn") && text.contains("exit status: 3"),
        "{text}"
    );
    // The version strata follows is the one `state` and `features` name.
    let st: Value = serde_json::from_str(&rt.ok(&["state", &id])).unwrap();
    rt.ok(&["delete", "--force", &id]);
    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMax"], "1.3.0");
    assert_eq!(st["ociVersion"], f["ociVersionMax"]);
}

#[test]
fn the_bundle_runc_spec_makes_runs_without_a_word_on_stderr() {
    require_root!();
    if !strata_integration::clients::require_client(&["runc"]) {
        return;
    }
    let dir = TempDir::new("runc-spec");
    make_rootfs(&dir.path().join("rootfs"));
    let out = std::process::Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc spec: {out:?}");
    let path = dir.path().join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Only what a script must change: no terminal, a command, the test's cgroup.
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(["true"]);
    let id = unique("runc-spec");
    c["linux"]["cgroupsPath"] = json!(format!("/strata-test/{id}"));
    std::fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
    let rt = Runtime::new();
    let out = rt.run(&["run", "-b", dir.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
}

/// `process.execCPUAffinity`: an exec'd process runs on the `final` CPUs (from config.json, or
/// from `--process`), its setup on the `initial` ones; the init is left alone; a list that
/// names no CPU fails create, and one the host cannot run fails the exec, naming the field.
#[test]
fn execs_run_on_the_cpus_exec_cpu_affinity_names() {
    require_root!();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = if cpus > 1 { "1" } else { "0" };
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| c["process"]["execCPUAffinity"] = json!({"initial": "0", "final": last}));
    let id = container(&mut b, "affinity");
    let pid = rt.run_detached(&b, &id);
    let allowed = |status: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let exec = |args: &[&str]| allowed(&rt.ok(args));
    assert_eq!(
        exec(&["exec", &id, "cat", "/proc/self/status"]),
        last,
        "final from config.json"
    );
    let init = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(allowed(&init), allowed(&own), "the init is left alone");
    let dir = TempDir::new("affinity-process");
    let process = dir.path().join("process.json");
    let mut p = b.config["process"].clone();
    p["args"] = json!(["cat", "/proc/self/status"]);
    p["execCPUAffinity"] = json!({"final": "0"});
    std::fs::write(&process, p.to_string()).unwrap();
    assert_eq!(
        exec(&["exec", "--process", process.to_str().unwrap(), &id]),
        "0",
        "final from --process"
    );
    p["execCPUAffinity"] = json!({"final": "1000"});
    std::fs::write(&process, p.to_string()).unwrap();
    let err = rt.fails(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert!(err.contains("process.execCPUAffinity.final"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["process"]["execCPUAffinity"] = json!({"initial": "3-1"}));
    let id = container(&mut b, "affinity-bad");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("process.execCPUAffinity.initial"), "{err}");
}

#[test]
fn the_scheduler_and_io_priority_of_the_process_are_set() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 3});
    });
    let id = container(&mut b, "sched");
    let pid = rt.run_detached(&b, &id);
    // SAFETY: plain integer queries about another process.
    let (policy, nice, ioprio) = unsafe {
        (
            libc::sched_getscheduler(pid),
            libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t),
            libc::syscall(libc::SYS_ioprio_get, 1, pid),
        )
    };
    assert_eq!(policy, libc::SCHED_BATCH);
    assert_eq!(nice, 5);
    assert_eq!(ioprio, (2 << 13) | 3);
    rt.ok(&["delete", "--force", &id]);
    // Values the kernel would refuse fail create, naming the field.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9}));
    let id = container(&mut b, "sched-bad");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("process.ioPriority.priority"), "{err}");
}

#[test]
fn the_memory_policy_of_the_container_is_set() {
    require_root!();
    if !std::path::Path::new("/sys/devices/system/node/node0").exists() {
        eprintln!("SKIPPED: this kernel has no NUMA nodes");
        return;
    }
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep -m1 -o 'interleave:0' /proc/self/numa_maps",
    ]);
    b.edit(|c| c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"}));
    assert_eq!(run_ok(&mut b, "mempolicy"), "interleave:0\n");
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND"}));
    let id = container(&mut b, "mempolicy-bad");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("linux.memoryPolicy") && err.contains("needs nodes"),
        "{err}"
    );
}
