//! Cgroup resources on this host (v1 controllers, hybrid layout): values written at create
//! and by update, their effect, pause/resume, ps, events.

use std::path::PathBuf;

use serde_json::{json, Value};
use strata_integration::*;

fn cg(ctrl: &str, id: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(ctrl)
        .join("strata-test")
        .join(id)
}

fn read(ctrl: &str, id: &str, file: &str) -> String {
    std::fs::read_to_string(cg(ctrl, id).join(file))
        .unwrap_or_else(|e| panic!("{ctrl}/{file}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn resources_are_written_at_create_and_by_update() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| {
        c["linux"]["resources"] = json!({
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728, "swappiness": 20},
            "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
            "pids": {"limit": 40},
            "blockIO": {"weight": 200},
            "devices": [{"allow": false, "access": "rwm"}]
        });
    });
    let id = container(&mut b, "res");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(read("memory", &id, "memory.limit_in_bytes"), "67108864");
    assert_eq!(
        read("memory", &id, "memory.soft_limit_in_bytes"),
        "33554432"
    );
    assert_eq!(
        read("memory", &id, "memory.memsw.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(read("memory", &id, "memory.swappiness"), "20");
    assert_eq!(read("cpu", &id, "cpu.shares"), "512");
    assert_eq!(read("cpu", &id, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read("cpu", &id, "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpuset", &id, "cpuset.cpus"), "0");
    assert_eq!(read("pids", &id, "pids.max"), "40");
    let blkio = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cg("blkio", &id).join(f)).ok())
        .unwrap();
    assert!(blkio.contains("200"), "{blkio}");
    let devices = read("devices", &id, "devices.list");
    assert!(
        devices.contains("c 1:3 rwm") && !devices.contains("a *:* rwm"),
        "{devices}"
    );

    // runc's flags.
    rt.ok(&[
        "update",
        "--memory",
        "96m",
        "--memory-swap",
        "192m",
        "--pids-limit",
        "50",
        "--cpu-share",
        "256",
        &id,
    ]);
    assert_eq!(
        read("memory", &id, "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        read("memory", &id, "memory.memsw.limit_in_bytes"),
        (192u64 << 20).to_string()
    );
    assert_eq!(read("pids", &id, "pids.max"), "50");
    assert_eq!(read("cpu", &id, "cpu.shares"), "256");
    // containerd's form: LinuxResources JSON on stdin.
    let mut cmd = rt.cmd();
    cmd.args(["update", "--resources", "-", &id])
        .stdin(std::process::Stdio::piped());
    let dir = TempDir::new("upd");
    cmd.stdout(std::fs::File::create(dir.path().join("o")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("e")).unwrap());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cpu": {"quota": 50000}, "pids": {"limit": 60}}"#)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(dir.path().join("e")).unwrap()
    );
    assert_eq!(read("cpu", &id, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("pids", &id, "pids.max"), "60");
    // The last update is kept: the memory limit from before is still there.
    assert_eq!(
        read("memory", &id, "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );

    let err = rt.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("--memory"), "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"pids": {"limit": "many"}}"#).unwrap();
    let err = rt.fails(&["update", "--resources", bad.to_str().unwrap(), &id]);
    assert!(err.contains("pids.limit"), "{err}");
    rt.ok(&["delete", "-f", &id]);
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn pids_limit_stops_forks_and_devices_deny() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh", "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 100 & done 2>/dev/null; echo started; \
         mknod /tmp/disk b 7 0 && (head -c1 /tmp/disk >/dev/null 2>&1 && echo disk-read || echo disk-denied); \
         head -c1 /dev/zero | wc -c",
    ]);
    b.edit(|c| {
        c["linux"]["resources"] =
            json!({"pids": {"limit": 4}, "devices": [{"allow": false, "access": "rwm"}]});
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_MKNOD"));
        }
    });
    let rt = Runtime::new();
    let id = container(&mut b, "pids");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    eventually("the forks to settle", || {
        std::fs::read_to_string(cg("pids", &id).join("pids.events"))
            .is_ok_and(|s| s.contains("max ") && !s.contains("max 0"))
    });
    assert!(read("pids", &id, "pids.current").parse::<u32>().unwrap() <= 4);
    rt.ok(&["delete", "-f", &id]);

    // The device rule, without the pids limit in the way.
    b.edit(|c| c["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]}));
    let id = container(&mut b, "dev");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(out.contains("disk-denied"), "{out}");
    assert!(out.ends_with("1\n"), "/dev/zero must stay readable: {out}");
}

#[test]
fn pause_resume_ps_and_stats() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done",
    ]);
    b.edit(|c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 104857600}, "pids": {"limit": 100}})
    });
    let id = container(&mut b, "pause");
    let pidfile = b.path().join("pid");
    rt.ok(&[
        "run",
        "-d",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let count = || {
        std::fs::read_to_string(b.rootfs().join("tmp/count"))
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    eventually("progress", || count() > 2);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    assert_eq!(read("freezer", &id, "freezer.state"), "FROZEN");
    let frozen_at = count();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(count() <= frozen_at + 1, "a paused container made progress");
    let err = rt.fails(&["pause", &id]);
    assert!(err.contains("paused"), "{err}");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");
    let resumed_at = count();
    eventually("progress after resume", || count() > resumed_at + 2);
    let err = rt.fails(&["resume", &id]);
    assert!(err.contains("not paused"), "{err}");

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    let table = rt.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string())),
        "{table}"
    );

    let ev: Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 104857600);
    assert!(ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert_eq!(ev["data"]["pids"]["limit"], 100);
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0);

    // kill --all on a paused container reaches every process once delete thaws it.
    rt.ok(&["pause", &id]);
    rt.ok(&["delete", "--force", &id]);
    assert!(cgroup_left(&id).is_none());
}

#[test]
fn events_reports_oom() {
    require_root!();
    let rt = Runtime::new();
    // Wait for the events reader, then allocate far beyond the limit.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "sleep 0.5; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000",
    ]);
    b.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 16777216, "swap": 16777216}}));
    let id = container(&mut b, "oom");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    let out_dir = TempDir::new("events");
    let out = out_dir.path().join("events");
    let mut ev = rt
        .cmd()
        .args(["events", "--interval", "10s", &id])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    eventually("an oom event", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(r#""type":"oom""#)
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["type"], "stats",
        "streaming starts with stats: {text}"
    );
    rt.ok(&["delete", "-f", &id]);
    // events ends on its own when the container is gone.
    let status = ev.wait().unwrap();
    assert!(status.success());
}

#[test]
fn exec_with_ignore_paused_waits_for_the_resume_as_runcs_does() {
    require_root!();
    let rt = std::sync::Arc::new(Runtime::new());
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "ignore-paused");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    rt.ok(&["pause", &id]);
    let err = rt.fails(&["exec", &id, "echo", "ok"]);
    assert!(
        err.contains("paused") && err.contains("--ignore-paused"),
        "{err}"
    );
    // Resumed a bit later, the frozen exec runs then.
    let (rt2, id2) = (rt.clone(), id.clone());
    let resume = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        rt2.ok(&["resume", &id2]);
    });
    let started = std::time::Instant::now();
    let out = rt.ok(&["exec", "--ignore-paused", &id, "echo", "ok"]);
    resume.join().unwrap();
    assert_eq!(out, "ok\n");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "the exec ran before the resume"
    );
    assert_eq!(rt.status(&id), "running");
}

#[test]
fn checkpoint_and_restore_refuse_clearly_and_change_nothing() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "checkpoint");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    let img = TempDir::new("checkpoint-image");
    for cmd in ["checkpoint", "restore"] {
        let err = rt.fails(&[cmd, "--image-path", img.path().to_str().unwrap(), &id]);
        assert!(err.contains(cmd) && err.contains("not supported"), "{err}");
    }
    assert_eq!(rt.status(&id), "running");
    assert_eq!(std::fs::read_dir(img.path()).unwrap().count(), 0);
}

/// `exec --cgroup` places the process in an existing sub-cgroup of the container's, per
/// hierarchy or everywhere, as runc's flag does; `..`, a missing sub-cgroup and an unknown
/// controller are refused, each naming what was wrong.
#[test]
fn exec_joins_a_sub_cgroup_of_the_containers() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "exec-subcg");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    // The container's cgroup in every hierarchy (the v1 controllers and the v2 tree).
    let subs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("strata-test").join(&id))
        .filter(|p| p.is_dir())
        .map(|p| p.join("sub"))
        .collect();
    assert!(subs.len() > 1, "{subs:?}");
    // Removed however the test ends: a sub-cgroup left behind keeps the container's too.
    struct Subs<'a>(&'a [PathBuf]);
    impl Drop for Subs<'_> {
        fn drop(&mut self) {
            for s in self.0 {
                let _ = std::fs::remove_dir(s);
            }
        }
    }
    let _cleanup = Subs(&subs);
    for s in &subs {
        std::fs::create_dir_all(s).unwrap();
        // A new v1 cpuset has no CPUs or memory nodes (joining it is ENOSPC): its creator
        // gives it its parent's, as a user of runc's flag must too.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(s.parent().unwrap().join(f)) {
                std::fs::write(s.join(f), v.trim()).unwrap();
            }
        }
    }
    // /proc/self/cgroup, as the container's cgroup namespace shows it: one line a hierarchy.
    let lines = |args: &[&str]| -> Vec<String> {
        let mut cmd = vec!["exec"];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&[&id, "cat", "/proc/self/cgroup"]);
        rt.ok(&cmd).lines().map(str::to_string).collect()
    };
    let everywhere = lines(&["--cgroup", "sub"]);
    assert!(
        everywhere.iter().all(|l| l.ends_with(":/sub")),
        "{everywhere:?}"
    );
    let own = lines(&["--cgroup=/"]);
    assert!(own.iter().all(|l| l.ends_with(":/")), "{own:?}");
    assert_eq!(lines(&[]), own);
    // Only the memory hierarchy's: the others stay in the container's cgroup.
    let memory = lines(&["--cgroup", "memory:sub"]);
    for l in &memory {
        let want = if l
            .split(':')
            .nth(1)
            .unwrap_or("")
            .split(',')
            .any(|c| c == "memory")
        {
            ":/sub"
        } else {
            ":/"
        };
        assert!(l.ends_with(want), "{l} in {memory:?}");
    }
    for (arg, why) in [
        ("..", "leaves the container's cgroup"),
        ("nope", "no sub-cgroup nope"),
        ("cpu:nope", "no sub-cgroup nope"),
        ("waaaaat:/", "no controller \"waaaaat\""),
    ] {
        let err = rt.fails(&["exec", "--cgroup", arg, &id, "true"]);
        assert!(
            err.contains("--cgroup") && err.contains(why),
            "{arg}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    drop(_cleanup);
    rt.ok(&["delete", "-f", &id]);
    assert_eq!(cgroup_left(&id), None);
}
