//! Crash safety: strata SIGKILLed at each step of create, start, exec and delete (through the
//! `STRATA_FAULT_POINT` hook, and by a hook that kills its runtime), and the container's init
//! killed at random points. Afterwards `state` tells the truth, `delete --force` succeeds, and
//! nothing is left: no state dir, cgroup, process or mount.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_integration::*;

const FAULT_ENV: &str = "STRATA_FAULT_POINT";

struct Case {
    name: &'static str,
    /// `state` after the fault: a status, or "absent" when no record survived.
    expected_state: &'static str,
}

/// Runs a strata command that must die by SIGKILL at `point`.
fn killed_at(rt: &Runtime, point: &str, args: &[&str]) {
    let mut cmd = rt.cmd();
    cmd.env(FAULT_ENV, point).args(args);
    let out = output_via_files(&mut cmd);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "strata {args:?} with {FAULT_ENV}={point} was not killed there: {out:?}"
    );
}

fn state_of(rt: &Runtime, id: &str) -> String {
    let out = rt.run(&["state", id]);
    if !out.status.success() {
        assert!(
            stderr(&out).contains("does not exist"),
            "state after a fault must be a status or 'does not exist': {}",
            stderr(&out)
        );
        return "absent".into();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// After `delete --force`: nothing of `id` anywhere.
fn assert_nothing_left(
    rt: &Runtime,
    id: &str,
    rootfs: &std::path::Path,
    mounts_before: usize,
    what: &str,
) {
    assert!(
        !rt.root.path().join(id).exists(),
        "{what}: state dir left: {:?}",
        std::fs::read_dir(rt.root.path().join(id))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert_eq!(cgroup_left(id), None, "{what}: cgroup left");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(id, rootfs);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mount_count(), mounts_before, "{what}: host mounts changed");
}

#[test]
fn killed_at_every_step_leaves_a_truthful_state_and_nothing_after_delete() {
    require_root!();
    fault_matrix("native");
}

/// The same faults under the sandbox backend, where create also leaves a supervisor that a
/// killed runtime must not orphan.
#[test]
fn the_sandbox_backend_survives_the_same_faults() {
    require_root!();
    fault_matrix("sandbox");
}

fn fault_matrix(backend: &str) {
    let rt = Runtime::with_global(&["--backend", backend]);
    let mounts = mount_count();
    let cases = [
        Case {
            name: "create:after-state-dir",
            expected_state: "stopped",
        },
        Case {
            name: "create:after-cgroups",
            expected_state: "stopped",
        },
        Case {
            name: "create:after-clone",
            expected_state: "stopped",
        },
        Case {
            name: "create:during-hooks",
            expected_state: "stopped",
        },
        Case {
            name: "create:after-ready",
            expected_state: "stopped",
        },
        Case {
            name: "create:writing-state",
            expected_state: "stopped",
        },
        Case {
            name: "start:after-signal",
            expected_state: "running",
        },
        Case {
            name: "exec:after-spawn",
            expected_state: "running",
        },
        Case {
            name: "delete:after-kill",
            expected_state: "stopped",
        },
    ];
    let mut report = Vec::new();
    for case in &cases {
        eprintln!("fault point {}", case.name);
        let mut b = Bundle::new(&["sleep", "1000"]);
        let id = container(&mut b, "fault");
        let bundle = b.path().to_str().unwrap().to_string();
        match case.name {
            "create:during-hooks" => {
                // A createRuntime hook that kills the runtime running it.
                b.edit(|c| {
                    c["hooks"] = json!({"createRuntime": [
                        {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID; sleep 5"]}
                    ]})
                });
                let out = rt.run(&["create", "-b", &bundle, &id]);
                assert_eq!(out.status.signal(), Some(9), "{out:?}");
            }
            p if p.starts_with("create:") => killed_at(&rt, p, &["create", "-b", &bundle, &id]),
            "start:after-signal" => {
                rt.ok(&["create", "-b", &bundle, &id]);
                killed_at(&rt, case.name, &["start", &id]);
            }
            "exec:after-spawn" => {
                rt.ok(&["run", "-d", "-b", &bundle, &id]);
                killed_at(&rt, case.name, &["exec", "-d", &id, "sleep", "1000"]);
            }
            "delete:after-kill" => {
                rt.ok(&["run", "-d", "-b", &bundle, &id]);
                killed_at(&rt, case.name, &["delete", "--force", &id]);
            }
            other => unreachable!("{other}"),
        }
        // A child forked by the killed runtime holds the directory lock for the moment it
        // takes to close it (or to notice its parent is gone): `creating` is the truth until
        // then, and the expected state must follow within a bound.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = state_of(&rt, &id);
        while seen == "creating" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            seen = state_of(&rt, &id);
        }
        assert_eq!(seen, case.expected_state, "state after {}", case.name);
        // A second look must agree: reading state changes nothing.
        assert_eq!(state_of(&rt, &id), seen);
        rt.ok(&["delete", "--force", &id]);
        // delete is idempotent: again, and on what is gone, with --force.
        rt.ok(&["delete", "--force", &id]);
        assert_nothing_left(&rt, &id, &b.rootfs(), mounts, case.name);
        report.push(format!(
            "{:<24} state={seen:<8} delete --force: clean",
            case.name
        ));
    }

    // The container's init killed from outside at random moments of its life.
    let mut rng = std::process::id() as u64;
    for round in 0..6 {
        let mut b = Bundle::new(&["sh", "-c", "while :; do sleep 0.01; done"]);
        let id = container(&mut b, "initkill");
        let bundle = b.path().to_str().unwrap().to_string();
        rt.ok(&["create", "-b", &bundle, &id]);
        let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let started = round % 2 == 1;
        if started {
            rt.ok(&["start", &id]);
            std::thread::sleep(Duration::from_millis((rng >> 33) % 50));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
        eventually("killed init shows as stopped", || {
            rt.status(&id) == "stopped"
        });
        let err = rt.fails(&["start", &id]);
        assert!(err.contains("stopped"), "{err}");
        rt.ok(&["delete", &id]);
        assert_nothing_left(&rt, &id, &b.rootfs(), mounts, "init killed");
        report.push(format!(
            "init SIGKILLed ({})   state=stopped  delete: clean",
            if started { "running" } else { "created" }
        ));
    }
    eprintln!("{}", report.join("\n"));
}
