//! The lifecycle through every subcommand, in the forms containerd's shim and podman use.

use serde_json::Value;
use strata_integration::*;

#[test]
fn run_prints_output_and_returns_exit_codes() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "echo hello from strata; exit 3"]);
    let id = container(&mut b, "run");
    let out = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    assert_eq!(stdout(&out), "hello from strata\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(rt.container_dirs().is_empty(), "run left state behind");
    assert!(cgroup_left(&id).is_none());

    // Without a pid namespace: a pid-namespace init cannot be SIGKILLed from inside.
    b.edit(|c| {
        c["process"]["args"] = serde_json::json!(["sh", "-c", "kill -9 $$"]);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    let out = rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(137), "killed by SIGKILL is 128+9");
}

#[test]
fn create_start_state_kill_delete() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]);
    let id = container(&mut b, "life");
    let pidfile = b.path().join("pid");
    // containerd's form: global flags first, then create --bundle --pid-file ID.
    let log = b.path().join("log.json");
    rt.ok(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b.path().to_str().unwrap());
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(st["annotations"]["dev.strata.backend"], "native");
    // The init is waiting in its own namespaces, not yet running sleep.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    assert!(cgroup_left(&id).is_some(), "create must make the cgroup");
    let procs = std::fs::read_to_string(cgroup_left(&id).unwrap().join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "init not in its cgroup: {procs}"
    );

    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    eventually("the workload to run", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sh")
    });
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("--force"), "{err}");

    rt.ok(&["kill", &id, "TERM"]);
    eventually("container to stop", || rt.status(&id) == "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    let err = rt.fails(&["kill", &id, "KILL"]);
    assert!(err.contains("not running"), "{err}");
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", &id]);
    assert!(rt.container_dirs().is_empty());
    assert!(cgroup_left(&id).is_none(), "delete must remove the cgroup");
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn kill_accepts_names_numbers_and_all() {
    require_root!();
    let rt = Runtime::new();
    for sig in ["SIGTERM", "TERM", "15", "9", "KILL"] {
        // A pid-namespace init only receives signals it handles (SIGKILL aside).
        let mut b = Bundle::new(&["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]);
        let id = container(&mut b, "kill");
        rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
        rt.ok(&["kill", &id, sig]);
        eventually("container to stop", || rt.status(&id) == "stopped");
        rt.ok(&["delete", &id]);
    }
    // --all reaches processes that ignore the init's death (no pid namespace here).
    let mut b = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let id = container(&mut b, "killall");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    let dir = cgroup_left(&id).unwrap();
    eventually("three processes", || {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap()
            .lines()
            .count()
            == 3
    });
    rt.ok(&["kill", "--all", &id, "KILL"]);
    eventually("cgroup to empty", || {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty()
    });
    rt.ok(&["delete", &id]);
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn delete_force_of_running_and_missing_containers() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "force");
    let pid = rt.run_detached(&b, &id);
    rt.ok(&["delete", "--force", &id]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "init survived delete --force: {stat}"
    );
    assert!(rt.container_dirs().is_empty());
    assert!(cgroup_left(&id).is_none());
    // Like runc: --force on a container that is gone is not an error; without it, it is.
    rt.ok(&["delete", "--force", &id]);
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn created_container_can_be_deleted_without_force() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "created");
    rt.ok(&["create", &id, "--bundle", b.path().to_str().unwrap()]);
    rt.ok(&["delete", &id]);
    assert!(rt.container_dirs().is_empty());
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn exec_runs_in_the_container() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| c["hostname"] = Value::String("box".into()));
    let id = container(&mut b, "exec");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);

    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo $FOO; pwd; id -u; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "box\n\n/\n0\n");
    let out = rt.ok(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--user",
        "65534:65534",
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "bar\n/tmp\n65534\n65534\n");
    // Same PID namespace as the init: sleep is PID 1.
    let out = rt.ok(&["exec", &id, "cat", "/proc/1/comm"]);
    assert_eq!(out, "sleep\n");

    // containerd's form: --process FILE --detach --pid-file.
    let proc_file = b.path().join("process.json");
    let mut p = b.config["process"].clone();
    p["args"] = serde_json::json!(["sh", "-c", "echo detached > /tmp/mark; sleep 1000"]);
    std::fs::write(&proc_file, p.to_string()).unwrap();
    let pidfile = b.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--process",
        proc_file.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    eventually("the detached exec to write", || {
        b.rootfs().join("tmp/mark").exists()
    });
    let procs = std::fs::read_to_string(cgroup_left(&id).unwrap().join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "exec not in the cgroup"
    );

    let err = rt.fails(&["exec", &id, "no-such-program"]);
    assert!(err.contains("executable file not found"), "{err}");
    let err = rt.fails(&["exec", &id]);
    assert!(err.contains("command"), "{err}");
    rt.ok(&["delete", "-f", &id]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "exec'd process survived delete"
    );
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn list_formats() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "list");
    rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    let table = rt.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(&id), "{table}");
    assert!(table.contains("created"));
    assert_eq!(rt.ok(&["list", "-q"]), format!("{id}\n"));
    let json: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["status"], "created");
}

#[test]
fn spec_and_features() {
    let dir = TempDir::new("spec");
    let rt = Runtime::new();
    rt.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(c["process"]["args"][0], "sh");
    assert_eq!(c["root"]["path"], "rootfs");
    let err = rt.fails(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMax"], "1.3.0", "the version state reports too");
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "time"));
    assert!(f["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "createRuntime"));
}

#[test]
fn no_pivot_and_readonly_root() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "touch /x 2>/dev/null && echo writable || echo readonly; test -e /usr && echo host || echo isolated"]);
    b.edit(|c| c["root"]["readonly"] = Value::Bool(true));
    let id = container(&mut b, "nopivot");
    let out = rt.ok(&["run", "--no-pivot", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out, "readonly\nisolated\n");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out, "readonly\nisolated\n");
}

/// Storage reached through a symlink (e.g. /var/lib/docker linked to another disk): the
/// rootfs path is resolved before use, so the container runs in the real directory.
#[test]
fn rootfs_path_through_a_symlink_is_resolved() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "cat /marker"]);
    std::fs::write(b.rootfs().join("marker"), "real rootfs\n").unwrap();
    let link = b.path().join("via-link");
    std::os::unix::fs::symlink(b.path(), &link).unwrap();
    let through_link = link.join("rootfs");
    b.edit(|c| c["root"]["path"] = Value::String(through_link.display().to_string()));
    let id = container(&mut b, "symroot");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out, "real rootfs\n");
}

#[test]
fn preserve_fds_and_listen_fds() {
    require_root!();
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat <&3; cat <&4; echo LISTEN_FDS=$LISTEN_FDS LISTEN_PID=$LISTEN_PID",
    ]);
    let id = container(&mut b, "fds");
    let f3 = b.path().join("three");
    let f4 = b.path().join("four");
    std::fs::write(&f3, "fd three\n").unwrap();
    std::fs::write(&f4, "fd four\n").unwrap();
    let a = std::fs::File::open(&f3).unwrap();
    let c = std::fs::File::open(&f4).unwrap();
    let (ra, rc) = (a.as_raw_fd(), c.as_raw_fd());
    let mut cmd = rt.cmd();
    cmd.args([
        "run",
        "--preserve-fds",
        "1",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ])
    .env("LISTEN_FDS", "1")
    .env_remove("LISTEN_PID");
    // SAFETY: dup2 between fds this test owns, in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            // Up high first: either source may already sit on 3 or 4.
            let (ha, hc) = (libc::dup(ra), libc::dup(rc));
            if ha < 0 || hc < 0 || libc::dup2(ha, 3) < 0 || libc::dup2(hc, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output_via_files(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "fd three\nfd four\nLISTEN_FDS=1 LISTEN_PID=1\n"
    );
}

#[test]
fn errors_go_to_the_log_as_json() {
    require_root!();
    let rt = Runtime::new();
    let dir = TempDir::new("log");
    let log = dir.path().join("log.json");
    let out = rt.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "start",
        "nope",
    ]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
    assert!(line["time"].as_str().unwrap().contains('T'));
    // podman's spelling.
    let out = rt.run(&[
        "--log-format=json",
        &format!("--log={}", log.display()),
        "kill",
        "nope",
        "15",
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}
