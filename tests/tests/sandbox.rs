//! The sandbox backend's escape suite. Each attempt is refused under `--backend sandbox`, and
//! where it makes sense also shown to work under native, so that a test that stopped testing
//! anything would fail.

use std::path::Path;

use serde_json::json;
use strata_integration::sandbox::*;
use strata_integration::*;

#[test]
fn sandboxed_container_runs_ordinary_work_under_its_filter() {
    require_root!();
    let out = run_on(
        "sandbox",
        "grep Seccomp: /proc/self/status; echo ok > /tmp/x && cat /tmp/x; ls /bin | grep -c busybox; \
         mkdir /tmp/d && mv /tmp/x /tmp/d/y && ls /tmp/d; rm -r /tmp/d && echo removed; \
         cd /etc && cat ./passwd | head -1",
        |_| {},
    );
    assert_eq!(
        out,
        "Seccomp:\t2\nok\n1\ny\nremoved\nroot:x:0:0:root:/root:/bin/sh\n"
    );
}

#[test]
fn writing_a_read_only_path_is_refused() {
    require_root!();
    let script = "echo x > /etc/written 2>/dev/null && echo WROTE || echo REFUSED; \
                  mkdir /etc/newdir 2>/dev/null && echo MADE || echo REFUSED; \
                  rm /etc/passwd 2>/dev/null && echo REMOVED || echo REFUSED; \
                  chmod 777 /etc/group 2>/dev/null && echo CHMODDED || echo REFUSED";
    native_then_sandbox(
        script,
        &[],
        |_| {},
        "WROTE\nMADE\nREMOVED\nCHMODDED\n",
        "REFUSED\nREFUSED\nREFUSED\nREFUSED\n",
    );
}

#[test]
fn exec_outside_the_exec_set_is_refused() {
    require_root!();
    // busybox picks its applet from argv[0]: named `true`, the copy runs as true.
    let script = "cp /bin/busybox /tmp/true && /tmp/true 2>/dev/null && echo RAN || echo REFUSED";
    native_then_sandbox(script, &[], |_| {}, "RAN\n", "REFUSED\n");
}

#[test]
fn hard_links_to_files_outside_are_refused() {
    require_root!();
    let script = "ln /etc/passwd /tmp/pw 2>/dev/null && echo LINKED || echo REFUSED";
    native_then_sandbox(script, &[], |_| {}, "LINKED\n", "REFUSED\n");
}

#[test]
fn proc_root_magic_links_are_refused() {
    require_root!();
    let script = "cat /proc/self/root/etc/passwd >/dev/null 2>&1 && echo READ || echo REFUSED; \
                  cat /proc/1/root/etc/passwd >/dev/null 2>&1 && echo READ || echo REFUSED";
    native_then_sandbox(script, &[], |_| {}, "READ\nREAD\n", "REFUSED\nREFUSED\n");
}

#[test]
fn symlinks_and_dotdot_stay_inside_the_root() {
    require_root!();
    let marker = TempDir::new("host-marker");
    let secret = marker.path().join("secret");
    std::fs::write(&secret, "host-secret\n").unwrap();
    let dotdot = format!("../../../../../../..{}", secret.display());
    let script = format!("cat /hostlink 2>/dev/null; cat {dotdot} 2>/dev/null; echo done");
    let out = run_on("sandbox", &script, |b| {
        std::os::unix::fs::symlink(&secret, b.rootfs().join("hostlink")).unwrap();
    });
    assert_eq!(out, "done\n");
}

#[test]
fn forbidden_syscalls_fail_even_with_the_capability() {
    require_root!();
    let script =
        "mkdir -p /mnt; mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED || echo REFUSED; \
                  unshare -m true 2>/dev/null && echo UNSHARED || echo REFUSED";
    let add_admin = |b: &mut Bundle| {
        b.edit(|c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_SYS_ADMIN"));
            }
        });
    };
    native_then_sandbox(
        script,
        &[],
        add_admin,
        "MOUNTED\nUNSHARED\n",
        "REFUSED\nREFUSED\n",
    );
}

#[test]
fn network_policy_refuses_connect_and_bind() {
    require_root!();
    let cfg = TempDir::new("sandbox-policy");
    let config = node_with_policy(&cfg, &format!("{POLICY_SETS}network = \"none\"\n"));
    // The host's network namespace (a new one's loopback is down), on a port of our own.
    let port = 20000 + std::process::id() % 20000;
    let script = format!(
        "(nc -l -p {port} >/dev/null 2>&1 &) ; sleep 0.3; \
         echo hi | nc -w 1 127.0.0.1 {port} 2>/dev/null && echo CONNECTED || echo REFUSED"
    );
    native_then_sandbox(
        &script,
        &["--config", &config],
        host_net,
        "CONNECTED\n",
        "REFUSED\n",
    );
}

#[test]
fn racing_threads_cannot_swap_a_checked_path() {
    require_root_and_escape!();
    for mode in ["race-path", "race-link"] {
        let victim = if mode == "race-path" {
            "etc/raced"
        } else {
            "etc/linked"
        };
        // Under native the race lands (or the program writes it directly): the test can fail.
        let (rt, _policy) = strict_sandbox_runtime();
        // Native stops at the first landing; the sandbox must hold for every attempt.
        for (backend, attempts) in [("native", "200000"), ("sandbox", "3000")] {
            let mut b = Bundle::new(&["escape", mode, attempts]);
            with_escape(&mut b);
            let id = container(&mut b, backend);
            let out = rt.ok(&[
                "--backend",
                backend,
                "run",
                "-b",
                b.path().to_str().unwrap(),
                &id,
            ]);
            assert!(out.starts_with("opened "), "{out}");
            let landed = b.rootfs().join(victim).exists();
            match backend {
                "native" => assert!(landed, "{mode}: native never wrote {victim}: {out}"),
                _ => assert!(
                    !landed,
                    "{mode}: the sandbox let a swapped path through: {out}"
                ),
            }
        }
    }
}

#[test]
fn a_dirfd_does_not_carry_writes_outside_the_write_set() {
    require_root_and_escape!();
    native_then_sandbox("escape dirfd", &[], with_escape, "created\n", "refused\n");
}

#[test]
fn exec_and_delete_keep_the_supervisor_contract() {
    require_root!();
    let (rt, _policy) = strict_sandbox_runtime();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "sbx-life");
    rt.ok(&[
        "--backend",
        "sandbox",
        "run",
        "-d",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let st = rt.state(&id);
    assert_eq!(st["annotations"]["dev.strata.backend"], "sandbox");
    // exec'd processes are supervised too.
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; echo x > /etc/e || echo refused",
    ]);
    assert_eq!(out, "Seccomp:\t2\nrefused\n");
    let sup = std::fs::read_to_string(rt.root.path().join(&id).join("supervisor.pid")).unwrap();
    let sup_pid: i32 = sup.split_whitespace().next().unwrap().parse().unwrap();
    assert!(Path::new(&format!("/proc/{sup_pid}")).exists());
    // The supervisor program installed beside strata, not a copy of the runtime.
    let exe = std::fs::read_link(format!("/proc/{sup_pid}/exe")).unwrap();
    assert!(
        exe.ends_with("strata-sandbox-supervisor"),
        "{}",
        exe.display()
    );
    rt.ok(&["delete", "--force", &id]);
    eventually("the supervisor is gone after delete", || {
        !Path::new(&format!("/proc/{sup_pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{sup_pid}/status"))
                .unwrap_or_default()
                .contains("State:\tZ")
    });
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);
}

#[test]
fn policy_is_chosen_by_annotation_within_the_node_config() {
    require_root!();
    let cfg = TempDir::new("sandbox-policies");
    let strict = cfg.path().join("strict.toml");
    std::fs::write(
        &strict,
        "read_only = [\"/\"]\nexec = [\"/bin\"]\nnetwork = \"none\"\n",
    )
    .unwrap();
    let node = cfg.path().join("config.toml");
    std::fs::write(
        &node,
        format!("[sandbox.policies]\nstrict = \"{}\"\n", strict.display()),
    )
    .unwrap();
    let config = node.to_str().unwrap();
    let script = "echo x > /tmp/t 2>/dev/null && echo WROTE || echo REFUSED";
    let annotate = |name: &'static str| {
        move |b: &mut Bundle| {
            b.edit(|c| c["annotations"] = json!({"dev.strata.sandbox.policy": name}));
        }
    };
    // The built-in policy lets /tmp be written; the node's "strict" one does not.
    assert_eq!(
        run_with(
            "sandbox",
            script,
            &["--config", config],
            annotate("builtin")
        ),
        "WROTE\n"
    );
    assert_eq!(
        run_with("sandbox", script, &["--config", config], annotate("strict")),
        "REFUSED\n"
    );
    // A name the node does not list: refused before anything exists, naming the choices.
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    annotate("lax")(&mut b);
    let id = container(&mut b, "badpolicy");
    let err = rt.fails(&[
        "--config",
        config,
        "--backend",
        "sandbox",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        err.contains("dev.strata.sandbox.policy") && err.contains("builtin, strict"),
        "{err}"
    );
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);
}

/// The supervisor killed under a running container: the container is killed with it (its
/// state says stopped, nothing of it is left running, background processes included, with
/// and without a pid namespace of its own), and it is deleted like any stopped container.
#[test]
fn a_killed_supervisor_kills_the_container() {
    require_root!();
    // Without a pid namespace of its own the sandbox is refused (see sandbox_escapes.rs), so
    // the guard's cgroup sweep is what kills the background process here.
    {
        let rt = Runtime::new();
        let out = TempDir::new("sbx-out");
        let log = out.path().join("log");
        let mut b = Bundle::new(&[
            "sh",
            "-c",
            "sleep 1000 & while :; do cat /etc/passwd >/dev/null 2>&1 && echo ok || echo failed; \
             sleep 0.05; done",
        ]);
        let id = container(&mut b, "sbx-kill");
        let status = rt
            .cmd()
            .args([
                "--backend",
                "sandbox",
                "run",
                "-d",
                "-b",
                b.path().to_str().unwrap(),
                &id,
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        eventually("the container works supervised", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ok")
        });
        let sup = std::fs::read_to_string(rt.root.path().join(&id).join("supervisor.pid")).unwrap();
        let sup_pid: i32 = sup.split_whitespace().next().unwrap().parse().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sup_pid),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        eventually("the container is stopped with its supervisor", || {
            rt.status(&id) == "stopped"
        });
        eventually("no process of the container is left", || {
            processes_of(&id, &b.rootfs()).is_empty()
        });
        let err = rt.fails(&["exec", &id, "true"]);
        assert!(err.contains("it is stopped"), "{err}");
        rt.ok(&["delete", &id]);
        assert!(rt.container_dirs().is_empty());
        assert_eq!(cgroup_left(&id), None);
    }
}

#[test]
fn a_user_namespace_is_refused_clearly() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let id = container(&mut b, "sbx-userns");
    let err = rt.fails(&[
        "--backend",
        "sandbox",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        err.contains("linux.namespaces") && err.contains("user namespace"),
        "{err}"
    );
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);
    // Nothing of a supervisor either.
    assert!(processes_of(&id, &b.rootfs()).is_empty());
}

/// The directory behind an fd is checked where it is when the fd is used, not where it was
/// when opened: moved (from outside) under /etc, it takes no new file under the sandbox.
#[test]
fn a_dirfd_opened_before_a_rename_is_checked_where_it_now_is() {
    require_root_and_escape!();
    for (backend, expected) in [("native", "created\n"), ("sandbox", "refused\n")] {
        let (rt, _policy) = strict_sandbox_runtime();
        let mut b = Bundle::new(&["escape", "dirfd-rename"]);
        with_escape(&mut b);
        std::fs::create_dir_all(b.rootfs().join("tmp/d")).unwrap();
        let id = container(&mut b, "sbx-rename");
        let child = rt
            .cmd()
            .args([
                "--backend",
                backend,
                "run",
                "-b",
                b.path().to_str().unwrap(),
                &id,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        eventually("the container has opened /tmp/d", || {
            b.rootfs().join("tmp/opened").exists()
        });
        std::fs::rename(b.rootfs().join("tmp/d"), b.rootfs().join("etc/d")).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{backend}");
        assert_eq!(
            b.rootfs().join("etc/d/planted").exists(),
            backend == "native",
            "{backend}"
        );
    }
}

/// `connect` in the policy narrows "loopback" to the listed ports: one listener is reached,
/// the other, on loopback too, is not.
#[test]
fn a_loopback_port_the_policy_does_not_list_is_refused() {
    require_root!();
    let cfg = TempDir::new("sandbox-ports");
    // Ports of our own, apart from the other network test's (20000-39999).
    let base = 40000 + (std::process::id() % 10000) * 2;
    let (allowed, other) = (base, base + 1);
    let config = node_with_policy(
        &cfg,
        &format!("{POLICY_SETS}network = \"loopback\"\nconnect = [\"127.0.0.1:{allowed}\"]\n"),
    );
    let script = format!(
        "(nc -l -p {allowed} >/dev/null 2>&1 &); (nc -l -p {other} >/dev/null 2>&1 &); sleep 0.3; \
         echo hi | nc -w 1 127.0.0.1 {allowed} 2>/dev/null && echo CONNECTED || echo REFUSED; \
         echo hi | nc -w 1 127.0.0.1 {other} 2>/dev/null && echo CONNECTED || echo REFUSED"
    );
    native_then_sandbox(
        &script,
        &["--config", &config],
        host_net,
        "CONNECTED\nCONNECTED\n",
        "CONNECTED\nREFUSED\n",
    );
}

/// With network = "none" only Unix sockets can be made (decided in the filter); under
/// "loopback" a datagram sent with an address is held to the policy like a connect.
#[test]
fn socket_families_and_addressed_sends_follow_the_network_policy() {
    require_root_and_escape!();
    let cfg = TempDir::new("sandbox-net");
    let none = node_with_policy(&cfg, &format!("{POLICY_SETS}network = \"none\"\n"));
    let script = format!(
        "escape socket {}; escape socket {}",
        libc::AF_UNIX,
        libc::AF_INET
    );
    let with_escape_host_net = |b: &mut Bundle| {
        with_escape(b);
        host_net(b);
    };
    native_then_sandbox(
        &script,
        &["--config", &none],
        with_escape_host_net,
        "made\nmade\n",
        "made\nAddress family not supported by protocol\n",
    );
    // TEST-NET-1 (RFC 5737): routed by the host's default route, answered by nobody.
    // sendto is checked by the supervisor (EACCES); sendmsg, whose destination sits in a
    // struct the supervisor cannot check race-free, by the kernel's cgroup hook (EPERM), on
    // IPv4 and on IPv6 with an IPv4-mapped address.
    let send = "escape sendto 192.0.2.1 9; escape sendto 127.0.0.1 9; \
                escape sendmsg 192.0.2.1 9; escape sendmsg 127.0.0.1 9; \
                escape sendmsg6 ::ffff:192.0.2.1 9; escape sendmsg6 ::1 9";
    native_then_sandbox(
        send,
        &[],
        with_escape_host_net,
        "sent\nsent\nsent\nsent\nsent\nsent\n",
        "Permission denied\nsent\nOperation not permitted\nsent\nOperation not permitted\nsent\n",
    );
    // A connect list narrows "any" for sendmsg too: the listed network and ports only.
    let listed = node_with_policy(
        &cfg,
        &format!("{POLICY_SETS}network = \"any\"\nconnect = [\"192.0.2.0/28:9-10\"]\n"),
    );
    native_then_sandbox(
        "escape sendmsg 192.0.2.7 9; escape sendmsg 192.0.2.17 9; escape sendmsg 192.0.2.7 11",
        &["--config", &listed],
        with_escape_host_net,
        "sent\nsent\nsent\n",
        "sent\nOperation not permitted\nOperation not permitted\n",
    );
}

/// fchmodat2 and utimensat change a file as much as chmod does: refused on a read-only
/// path, allowed on a writable one.
#[test]
fn newer_metadata_calls_are_held_to_the_policy() {
    require_root_and_escape!();
    let script = "escape chmod2 /etc/group; escape touch /etc/passwd; \
                  touch /tmp/t && escape chmod2 /tmp/t && escape touch /tmp/t";
    native_then_sandbox(
        script,
        &[],
        with_escape,
        "changed\nchanged\nchanged\nchanged\n",
        "Permission denied\nPermission denied\nchanged\nchanged\n",
    );
}

/// Unix sockets by path: bound by name in their checked directory, connected (also by a
/// relative path) through the inode that was checked, datagrams sent to a path.
#[test]
fn unix_sockets_by_path_work_under_the_supervisor() {
    require_root_and_escape!();
    native_then_sandbox("escape unix", &[], with_escape, "unix ok\n", "unix ok\n");
}

/// A FIFO's open waits for the other end, whose open is the container's next trapped call:
/// the supervisor must not wait with it.
#[test]
fn fifos_work_under_the_supervisor() {
    require_root!();
    let script = "mkfifo /tmp/f && (echo through-the-fifo > /tmp/f &) ; timeout 10 cat /tmp/f";
    native_then_sandbox(
        script,
        &[],
        |_| {},
        "through-the-fifo\n",
        "through-the-fifo\n",
    );
}

/// strata installed without its supervisor program beside it runs the supervisor itself
/// (multi-call), and the container is supervised all the same.
#[test]
fn the_strata_binary_alone_supervises_too() {
    require_root!();
    let alone = TempDir::new("strata-alone");
    let bin = alone.path().join("strata");
    std::fs::copy(strata_bin(), &bin).unwrap();
    let (rt, _policy) = strict_sandbox_runtime();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "sbx-alone");
    let st = rt
        .cmd_of(&bin)
        .args([
            "--backend",
            "sandbox",
            "run",
            "-d",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let sup = std::fs::read_to_string(rt.root.path().join(&id).join("supervisor.pid")).unwrap();
    let sup_pid: i32 = sup.split_whitespace().next().unwrap().parse().unwrap();
    let exe = std::fs::read_link(format!("/proc/{sup_pid}/exe")).unwrap();
    assert_eq!(exe, bin, "the supervisor is the strata binary itself");
    let out = rt.ok(&["exec", &id, "sh", "-c", "echo x > /etc/e || echo refused"]);
    assert_eq!(out, "refused\n");
    rt.ok(&["delete", "--force", &id]);
    assert!(rt.container_dirs().is_empty());
}

/// An ID reused at once after `delete --force`: the old container's guard must leave the new
/// container alone, though its cgroup has the same path. (It used to take the supervisor's
/// exit for a death and sweep that path, killing the new init 37 times in 40.)
#[test]
fn a_reused_id_is_not_touched_by_the_old_guard() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "sbx-reuse");
    let bundle = b.path().to_str().unwrap().to_string();
    for round in 0..12 {
        rt.ok(&["--backend", "sandbox", "create", "-b", &bundle, &id]);
        assert_eq!(rt.status(&id), "created", "round {round}");
        rt.ok(&["delete", "--force", &id]);
    }
    rt.ok(&["--backend", "sandbox", "run", "-d", "-b", &bundle, &id]);
    // Give a stray guard the time its sweep used to take, then the container must still run.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "--force", &id]);
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);
}

/// `process.user.additionalGids` (podman and Docker set them for every `--user`): the
/// container starts under the sandbox, and the supervisor opens files with the caller's
/// groups: a file only group 10 may read is read by a user in group 10, as under native.
#[test]
fn additional_gids_start_and_count_in_file_checks() {
    require_root!();
    let script = "id; cat /etc/group-ten && echo READ || echo DENIED";
    let edit = |b: &mut Bundle| {
        let f = b.rootfs().join("etc/group-ten");
        std::fs::write(&f, "secret of group 10\n").unwrap();
        std::os::unix::fs::chown(&f, Some(0), Some(10)).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        b.edit(|c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]})
        });
    };
    let want = "uid=1000 gid=1000 groups=10,1000\nsecret of group 10\nREAD\n";
    assert_eq!(run_with("native", script, &[], edit), want, "native");
    assert_eq!(run_with("sandbox", script, &[], edit), want, "sandbox");
    // Root with gids [0], as the plain bundle had it.
    let root = |b: &mut Bundle| {
        b.edit(|c| c["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [0]}));
    };
    assert_eq!(
        run_with("sandbox", "id", &[], root),
        "uid=0(root) gid=0(root) groups=0(root)\n"
    );
}

/// The built-in policy follows the bundle: everything it grants, as under native. With a
/// writable root, a write anywhere in it and a program run from outside the usual
/// directories; with a read-only root, the volumes it mounts read-write are writable, its
/// read-only ones and the root are not (the kernel's EROFS, as under native).
#[test]
fn the_builtin_policy_grants_what_the_bundle_grants() {
    require_root!();
    // `--config /dev/null`: no node policy, so the built-in one (not the suites' strict one).
    let builtin = ["--config", "/dev/null"];
    let script =
        "echo x > /etc/written && echo WROTE; mkdir -p /opt/app && cp /bin/busybox /opt/app/echo \
                  && /opt/app/echo RAN; mkdir -p / && echo MKDIR-P-ROOT";
    let want = "WROTE\nRAN\nMKDIR-P-ROOT\n";
    let writable_root = |b: &mut Bundle| {
        b.edit(|c| c["root"]["readonly"] = json!(false));
    };
    assert_eq!(
        run_with("native", script, &builtin, writable_root),
        want,
        "native"
    );
    assert_eq!(
        run_with("sandbox", script, &builtin, writable_root),
        want,
        "sandbox"
    );

    let vol = TempDir::new("sbvol");
    let ro = TempDir::new("sbro");
    let script = "echo a > /data/a && echo DATA; echo b > /vol/b && echo VOL; \
                  sh -c 'echo 0 > /proc/self/oom_score_adj' && echo CHILD-PROC; \
                  echo c > /ro/c 2>/dev/null && echo RO-WROTE || echo RO-REFUSED; \
                  echo d > /etc/d 2>/dev/null && echo ROOT-WROTE || echo ROOT-REFUSED";
    let want = "DATA\nVOL\nCHILD-PROC\nRO-REFUSED\nROOT-REFUSED\n";
    let volumes = |b: &mut Bundle| {
        for d in ["data", "vol", "ro"] {
            std::fs::create_dir_all(b.rootfs().join(d)).unwrap();
        }
        let (v, r) = (
            vol.path().to_str().unwrap().to_string(),
            ro.path().to_str().unwrap().to_string(),
        );
        b.edit(|c| {
            c["root"]["readonly"] = json!(true);
            let m = c["mounts"].as_array_mut().unwrap();
            m.push(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
            m.push(json!({"destination": "/vol", "type": "bind", "source": v, "options": ["rbind", "rw"]}));
            m.push(json!({"destination": "/ro", "type": "bind", "source": r, "options": ["rbind", "ro"]}));
        });
    };
    assert_eq!(
        run_with("native", script, &builtin, volumes),
        want,
        "native"
    );
    assert_eq!(
        run_with("sandbox", script, &builtin, volumes),
        want,
        "sandbox"
    );
    assert_eq!(
        std::fs::read_to_string(vol.path().join("b")).unwrap(),
        "b\n"
    );
}

/// In a network namespace of its own (a pod network, here a veth to a peer namespace) the
/// built-in policy lets the container reach its network, as under native; the strict policy
/// (loopback only) still refuses.
#[test]
fn the_builtin_policy_uses_the_containers_own_network() {
    require_root!();
    let tag = std::process::id();
    let (a, b) = (
        format!("strata-test-sba-{tag}"),
        format!("strata-test-sbb-{tag}"),
    );
    struct Netns(Vec<String>, Option<std::process::Child>);
    impl Drop for Netns {
        fn drop(&mut self) {
            if let Some(mut c) = self.1.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for n in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", n])
                    .status();
            }
        }
    }
    let mut guard = Netns(vec![a.clone(), b.clone()], None);
    let ip = |args: &[&str]| {
        assert!(
            std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success(),
            "ip {args:?}"
        );
    };
    ip(&["netns", "add", &a]);
    ip(&["netns", "add", &b]);
    ip(&[
        "link", "add", "sb-a", "netns", &a, "type", "veth", "peer", "name", "sb-b", "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.79.0.2/24", "dev", "sb-a"]);
    ip(&["-n", &a, "link", "set", "sb-a", "up"]);
    ip(&["-n", &a, "link", "set", "lo", "up"]);
    ip(&["-n", &b, "addr", "add", "10.79.0.1/24", "dev", "sb-b"]);
    ip(&["-n", &b, "link", "set", "sb-b", "up"]);
    guard.1 = Some(
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &b, "busybox", "nc", "-ll", "-p", "8081", "-e", "echo", "peer",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let path = format!("/run/netns/{a}");
    let in_ns = |bd: &mut Bundle| {
        bd.edit(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(json!({"type": "network", "path": path}));
        });
    };
    let script = "i=0; until nc 10.79.0.1 8081 </dev/null; do i=$((i+1)); [ $i -ge 20 ] && echo UNREACHED && exit 0; sleep 0.2; done";
    let builtin = ["--config", "/dev/null"];
    assert_eq!(
        run_with("native", script, &builtin, in_ns),
        "peer\n",
        "native"
    );
    assert_eq!(
        run_with("sandbox", script, &builtin, in_ns),
        "peer\n",
        "sandbox"
    );
    // The strict policy (loopback only) is narrower than the bundle: refused.
    assert_eq!(
        run_with(
            "sandbox",
            "nc 10.79.0.1 8081 </dev/null || echo REFUSED",
            &[],
            in_ns
        ),
        "REFUSED\n"
    );
}

/// A kernel filesystem in the write set is not written through it, whatever the bundle
/// declared: a sysfs mounted read-write (by type, or by a bind of the host's /sys) stays
/// closed to writes under the sandbox's built-in policy (native opens it).
#[test]
fn kernel_filesystems_are_not_written_through_the_builtin_policy() {
    require_root!();
    let builtin = ["--config", "/dev/null"];
    // In a subshell: a failed redirection of `:` ends a POSIX shell.
    let script = "(: >> /sys/kernel/mm/transparent_hugepage/enabled) 2>/dev/null && echo OPENED || echo REFUSED";
    for sys in [
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev"]}),
    ] {
        let edit = |b: &mut Bundle| {
            let sys = sys.clone();
            b.edit(|c| {
                c["root"]["readonly"] = json!(true);
                let m = c["mounts"].as_array_mut().unwrap();
                m.retain(|m| m["destination"] != "/sys");
                m.push(sys);
            });
        };
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            return;
        }
        assert_eq!(
            run_with("native", script, &builtin, edit),
            "OPENED\n",
            "native {sys}"
        );
        assert_eq!(
            run_with("sandbox", script, &builtin, edit),
            "REFUSED\n",
            "sandbox {sys}"
        );
    }
}
