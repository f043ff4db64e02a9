//! Load and races: 50 containers through their whole life with 8 commands in flight, and
//! create/start/kill/exec/state/delete racing on the same IDs. Every command succeeds or fails
//! with a one-line error; nothing is corrupted; nothing is left behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_integration::*;

const CONTAINERS: usize = 50;
const IN_FLIGHT: usize = 8;

/// A finished command: success, or failure with exactly one line on stderr.
fn clean_outcome(out: &std::process::Output, what: &str) -> bool {
    if out.status.success() {
        return true;
    }
    let err = stderr(out);
    assert!(
        out.status.code().is_some(),
        "{what} died by a signal: {out:?}"
    );
    // A foreground exec exits with its process's status: 128+N when a racing kill ended the
    // container (and the process with it) under it. That is its answer, not an error.
    if what.starts_with("[\"exec\"") && out.status.code() >= Some(128) && err.is_empty() {
        return false;
    }
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what} failed without a one-line error: {err:?}"
    );
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    false
}

#[test]
fn fifty_lifecycles_eight_in_flight_then_same_id_races() {
    require_root!();
    let rt = Runtime::new();
    let mounts = mount_count();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.path().to_str().unwrap().to_string();
    let began = Instant::now();

    // Different IDs, IN_FLIGHT workers.
    let next = AtomicUsize::new(0);
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|i| unique(&format!("load{i}")))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..IN_FLIGHT {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                rt.ok(&["create", "-b", &bundle, id]);
                rt.ok(&["start", id]);
                assert_eq!(rt.status(id), "running");
                if i.is_multiple_of(3) {
                    assert_eq!(rt.ok(&["exec", id, "echo", "in"]), "in\n");
                }
                if i.is_multiple_of(2) {
                    rt.ok(&["delete", "--force", id]);
                } else {
                    rt.ok(&["kill", id, "KILL"]);
                    eventually("killed container stops", || rt.status(id) == "stopped");
                    rt.ok(&["delete", id]);
                }
            });
        }
    });
    assert!(rt.container_dirs().is_empty(), "{:?}", rt.container_dirs());

    // The same IDs, many commands at once: whatever order they land in, each one either
    // works or says why in one line, and a final delete --force always cleans up.
    let outcomes = Mutex::new(Vec::new());
    for round in 0..10 {
        let id = unique(&format!("race{round}"));
        let ops: Vec<Vec<&str>> = vec![
            vec!["create", "-b", &bundle, &id],
            vec!["create", "-b", &bundle, &id],
            vec!["start", &id],
            vec!["kill", &id, "KILL"],
            vec!["exec", &id, "true"],
            vec!["state", &id],
            vec!["delete", &id],
            vec!["delete", "--force", &id],
        ];
        std::thread::scope(|s| {
            for op in &ops {
                let outcomes = &outcomes;
                let rt = &rt;
                s.spawn(move || {
                    let out = rt.run(op);
                    let ok = clean_outcome(&out, &format!("{op:?}"));
                    outcomes.lock().unwrap().push((op[0].to_string(), ok));
                });
            }
        });
        {
            // Two creates raced: both can win only if a delete ran between them.
            let all = outcomes.lock().unwrap();
            let this: Vec<_> = all[all.len() - ops.len()..].to_vec();
            let won = |name: &str| this.iter().filter(|(o, ok)| o == name && *ok).count();
            assert!(
                won("create") <= won("delete") + 1,
                "round {round}: {this:?}"
            );
        }
        // Whatever state the races left, it is one the runtime can read and remove.
        let st = rt.run(&["state", &id]);
        if st.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
            let status = v["status"].as_str().unwrap().to_string();
            assert!(
                ["created", "running", "stopped"].contains(&status.as_str()),
                "{status}"
            );
        } else {
            assert!(stderr(&st).contains("does not exist"), "{}", stderr(&st));
        }
        rt.ok(&["delete", "--force", &id]);
        assert_eq!(cgroup_left(&id), None, "race round {round}: cgroup left");
    }
    let outcomes = outcomes.into_inner().unwrap();
    let tally = |op: &str| {
        let all: Vec<_> = outcomes.iter().filter(|(o, _)| o == op).collect();
        format!(
            "{op} {}/{} ok",
            all.iter().filter(|(_, ok)| *ok).count(),
            all.len()
        )
    };
    eprintln!(
        "races: {}, {}, {}, {}, {}, {}",
        tally("create"),
        tally("start"),
        tally("kill"),
        tally("exec"),
        tally("state"),
        tally("delete")
    );

    // Leak check.
    assert!(rt.container_dirs().is_empty(), "{:?}", rt.container_dirs());
    for id in &ids {
        assert_eq!(cgroup_left(id), None, "{id}: cgroup left");
    }
    assert_eq!(mount_count(), mounts, "host mounts changed");
    eventually("no process of the run is left", || {
        processes_of("no-such-id", &b.rootfs()).is_empty()
    });
    assert!(
        began.elapsed() < Duration::from_secs(120),
        "took {:?}",
        began.elapsed()
    );
}
