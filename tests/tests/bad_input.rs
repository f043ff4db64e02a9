//! Bad bundles and requests: a one-line error naming what was wrong, a non-zero exit, and
//! nothing left behind (state dir, cgroup, mount, process).

use serde_json::{json, Value};
use strata_integration::*;

/// Creates with a broken bundle and checks the error and that nothing is left.
fn create_fails(edit: impl FnOnce(&mut Value), expect: &[&str]) {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "bad");
    b.edit(edit);
    let mounts = mount_count();
    let err = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    for e in expect {
        assert!(err.contains(e), "error {err:?} should mention {e:?}");
    }
    assert!(
        rt.container_dirs().is_empty(),
        "state dir left behind after: {err}"
    );
    assert!(
        cgroup_left(&id).is_none(),
        "cgroup left behind after: {err}"
    );
    assert_eq!(mount_count(), mounts, "mounts left behind after: {err}");
}

#[test]
fn malformed_and_missing_config() {
    require_root!();
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    std::fs::write(b.path().join("config.json"), "{ not json").unwrap();
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), "x1"]);
    assert!(err.contains("config.json"), "{err}");
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), "x1"]);
    assert!(err.contains("config.json"), "{err}");
    let err = rt.fails(&["create", "-b", "/nonexistent/bundle", "x1"]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    assert!(rt.container_dirs().is_empty());
}

#[test]
fn wrong_types_and_unknown_values() {
    require_root!();
    create_fails(
        |c| c["process"]["args"] = json!(5),
        &["config.json", "process.args"],
    );
    create_fails(
        |c| c["process"]["capabilities"]["bounding"] = json!(["CAP_NOT_A_THING"]),
        &["config.json", "CAP_NOT_A_THING"],
    );
    create_fails(
        |c| c["process"]["rlimits"] = json!([{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]),
        &["config.json", "RLIMIT_BOGUS"],
    );
    create_fails(|c| c["process"]["args"] = json!([]), &["process.args"]);
    create_fails(
        |c| c["ociVersion"] = json!("invalid"),
        &["ociVersion", "invalid"],
    );
    create_fails(|c| c["ociVersion"] = json!("2.0.0"), &["ociVersion"]);
    create_fails(
        |c| c["process"]["cwd"] = json!("relative"),
        &["process.cwd"],
    );
    create_fails(
        |c| c["linux"]["rootfsPropagation"] = json!("sideways"),
        &["rootfsPropagation"],
    );
    create_fails(
        |c| c["process"]["args"] = json!(["/no/such/binary"]),
        &["/no/such/binary"],
    );
    create_fails(
        |c| c["process"]["args"] = json!(["nosuchprog"]),
        &["executable file not found"],
    );
}

#[test]
fn missing_rootfs() {
    require_root!();
    create_fails(
        |c| c["root"]["path"] = json!("no-such-rootfs"),
        &["root.path", "no-such-rootfs"],
    );
}

#[test]
fn bad_namespace_paths() {
    require_root!();
    create_fails(
        |c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(json!({"type": "network", "path": "/nonexistent/ns"}));
        },
        &["linux.namespaces", "/nonexistent/ns"],
    );
    // A uts namespace file given as a network namespace.
    create_fails(
        |c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(json!({"type": "network", "path": "/proc/self/ns/uts"}));
        },
        &["not a net namespace"],
    );
}

#[test]
fn failing_mount_names_the_mount() {
    require_root!();
    create_fails(
        |c| {
            c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]}))
        },
        &["mounts", "/data", "/nonexistent/src"],
    );
    create_fails(
        |c| {
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/x", "type": "nosuchfs", "source": "none"}))
        },
        &["mounts", "/x", "nosuchfs"],
    );
}

#[test]
fn failing_hook_fails_create_cleanly() {
    require_root!();
    create_fails(
        |c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]}),
        &["hook", "/bin/false"],
    );
    create_fails(
        |c| c["hooks"] = json!({"prestart": [{"path": "/no/such/hook"}]}),
        &["hook", "/no/such/hook"],
    );
    create_fails(
        |c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]}),
        &["hook", "timed out"],
    );
}

#[test]
fn ids_that_exist_or_do_not() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "dup");
    rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        rt.status(&id),
        "created",
        "the first container must be untouched"
    );
    for cmd in [
        vec!["start", "nope"],
        vec!["state", "nope"],
        vec!["kill", "nope"],
        vec!["delete", "nope"],
        vec!["exec", "nope", "true"],
    ] {
        let err = rt.fails(&cmd);
        assert!(err.contains("does not exist"), "{cmd:?}: {err}");
    }
    for bad in ["a/b", "..", "has space"] {
        let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), bad]);
        assert!(err.contains("invalid container ID"), "{err}");
    }
    assert_eq!(rt.container_dirs(), vec![id.clone()]);
}

#[test]
fn forbidden_transitions_and_signals() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "trans");
    rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    let err = rt.fails(&["kill", &id, "NOTASIG"]);
    assert!(err.contains("unknown signal"), "{err}");
    let err = rt.fails(&["kill", &id, "99"]);
    assert!(err.contains("unknown signal"), "{err}");
    rt.ok(&["start", &id]);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("running"), "{err}");
    rt.ok(&["kill", &id, "KILL"]);
    eventually("stop", || rt.status(&id) == "stopped");
    let err = rt.fails(&["kill", &id]);
    assert!(err.contains("not running"), "{err}");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("stopped"), "{err}");
}

#[test]
fn backend_selection_errors() {
    require_root!();
    create_fails(
        |c| c["annotations"] = json!({"dev.strata.backend": "turbo"}),
        &["dev.strata.backend", "turbo"],
    );
    // The vm backend on a node whose config names no guest kernel.
    create_fails(
        |c| c["annotations"] = json!({"dev.strata.backend": "vm"}),
        &["vm backend: no guest kernel"],
    );
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let err = rt.fails(&[
        "--backend",
        "nope",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        "x",
    ]);
    assert!(err.contains("--backend"), "{err}");
    let cfg = b.path().join("node.toml");
    std::fs::write(&cfg, "min_backend = \"sandbox\"\n").unwrap();
    let err = rt.fails(&[
        "--config",
        cfg.to_str().unwrap(),
        "create",
        "-b",
        b.path().to_str().unwrap(),
        "x",
    ]);
    assert!(err.contains("min_backend"), "{err}");
    let err = rt.fails(&[
        "--config",
        "/nonexistent.toml",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        "x",
    ]);
    assert!(err.contains("/nonexistent.toml"), "{err}");
    assert!(rt.container_dirs().is_empty());
}
