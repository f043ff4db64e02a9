//! Resource exhaustion: a fork bomb against its pids limit, a full tmpfs, a console socket
//! that never accepts. strata reports, recovers and never waits without a bound. (A memory
//! hog's OOM event: `cgroups.rs` events_reports_oom; a hook past its timeout: `bad_input.rs`
//! failing_hook_fails_create_cleanly.)

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_integration::*;

#[test]
fn fork_bomb_stops_at_its_pids_limit_and_is_killed_in_full() {
    require_root!();
    let rt = Runtime::new();
    // The bomb runs in a child shell (a shell whose fork fails exits); the init then stays.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "sh -c 'while :; do sleep 1000 & done' 2>/dev/null; exec sleep 1000",
    ]);
    b.edit(|c| c["linux"]["resources"] = json!({"pids": {"limit": 32}}));
    let id = container(&mut b, "forkbomb");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    // It fills its limit and stays there; the host is unaffected.
    eventually("the bomb reaches its limit", || {
        let ps: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
        ps.len() >= 30
    });
    std::thread::sleep(Duration::from_millis(300));
    let ps: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.len() <= 32, "{} processes past a limit of 32", ps.len());
    assert_eq!(rt.status(&id), "running");
    let stats: serde_json::Value =
        serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert!(
        stats["data"]["pids"]["current"].as_u64().unwrap() <= 32,
        "{stats}"
    );
    // delete --force ends every one of them, however busy they are forking.
    let t = Instant::now();
    rt.ok(&["delete", "--force", &id]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(cgroup_left(&id), None);
    eventually("no bomb process left", || {
        processes_of(&id, &b.rootfs()).is_empty()
    });
}

#[test]
fn a_full_tmpfs_fails_inside_the_container_only() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/scratch/fill bs=4096 count=1024 2>/dev/null; echo dd=$?; \
         echo still-works > /scratch/small && echo small=ok || echo small=full",
    ]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["size=1m", "nosuid", "nodev"]
        }))
    });
    let id = container(&mut b, "tmpfsfull");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out, "dd=1\nsmall=full\n");
    assert!(rt.container_dirs().is_empty());
}

#[test]
fn console_socket_that_never_accepts_or_is_stale() {
    require_root!();
    let rt = Runtime::new();
    let dir = TempDir::new("console");
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let bundle = b.path().to_str().unwrap().to_string();

    // Listening, never accepting: the kernel queues the connection and the fd; create is
    // done in bounded time, the container runs, and delete cleans up.
    let sock = dir.path().join("never.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = container(&mut b, "neveraccept");
    let t = Instant::now();
    let out = rt.run(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "-b",
        &bundle,
        &id,
    ]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rt.status(&id), "created");
    rt.ok(&["delete", "--force", &id]);
    drop(listener);

    // A socket file nobody listens on any more: a clear error, nothing left.
    let id = container(&mut b, "stale");
    let err = rt.fails(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "-b",
        &bundle,
        &id,
    ]);
    assert!(err.contains("console-socket"), "{err}");
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);
}
