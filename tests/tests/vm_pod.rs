//! One VM per pod on the vm backend, driven as containerd's CRI plugin drives the runc shim:
//! a sandbox container (`io.kubernetes.cri.container-type: sandbox`) boots the pod's VM, and
//! the pod's containers (`container-type: container`, `sandbox-id` naming the sandbox, the
//! sandbox's namespaces by `/proc/<pid>/ns/...` path) are created in it: they share its
//! network, IPC and UTS namespaces in the guest, an emptyDir-like volume, and exit codes,
//! exec, kill and delete work on each; exactly one VM runs for the pod, and nothing is left
//! after the sandbox goes.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use strata_integration::*;

const TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX: &str = "io.kubernetes.cri.sandbox-id";

fn vm_runtime(dir: &Path) -> Option<Runtime> {
    if !is_root() {
        eprintln!("SKIPPED: the vm backend tests need root");
        return None;
    }
    let config = vm_node_config(dir)?;
    Some(Runtime::with_global(&[
        "--config",
        config.to_str().unwrap(),
        "--backend",
        "vm",
    ]))
}

/// A pod member's bundle: CRI's annotations and the sandbox's namespaces by path.
fn member(args: &[&str], sandbox_id: &str, sandbox_pid: i32, name: &str) -> (Bundle, String) {
    let mut b = Bundle::new(args);
    b.edit(|c| {
        c["annotations"] = json!({TYPE: "container", SANDBOX: sandbox_id});
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| !["network", "ipc", "uts"].contains(&n["type"].as_str().unwrap()));
        for (typ, file) in [("network", "net"), ("ipc", "ipc"), ("uts", "uts")] {
            ns.push(json!({"type": typ, "path": format!("/proc/{sandbox_pid}/ns/{file}")}));
        }
        // A pod's containers get no hostname of their own: the UTS namespace is the pod's.
        c.as_object_mut().unwrap().remove("hostname");
    });
    let id = container(&mut b, name);
    (b, id)
}

fn with_volume(b: &mut Bundle, source: &Path) {
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/shared", "type": "bind", "source": source, "options": ["rbind", "rw"]}),
        )
    });
}

#[test]
fn a_pods_containers_run_in_one_vm_and_share_its_namespaces() {
    let cfg = TempDir::new("vmpod-cfg");
    let Some(rt) = vm_runtime(cfg.path()) else {
        return;
    };
    let empty_dir = TempDir::new("vmpod-emptydir");
    // The sandbox ("pause"): the pod's VM.
    // The sandbox ("pause") brings the pod's loopback up, as CNI's loopback plugin would.
    let mut sb = Bundle::new(&["sh", "-c", "ip link set lo up && exec sleep 100000"]);
    sb.edit(|c| {
        c["hostname"] = json!("the-pod");
        for set in ["bounding", "effective", "permitted"] {
            let list = c["process"]["capabilities"][set].as_array_mut().unwrap();
            list.push(json!("CAP_NET_ADMIN"));
        }
    });
    let sid = container(&mut sb, "vmpod-sb");
    sb.edit(|c| c["annotations"] = json!({TYPE: "sandbox", SANDBOX: sid}));
    let run = strata::backend::vm::run_dir_for(&rt.root.path().join(&sid));
    rt.ok(&["run", "--detach", "-b", sb.path().to_str().unwrap(), &sid]);
    let sb_pid = rt.state(&sid)["pid"].as_i64().unwrap() as i32;

    // Member A serves on the pod's localhost and writes to the shared volume.
    let (mut a, aid) = member(
        &[
            "sh",
            "-c",
            "echo from-a > /shared/a; (i=0; while true; do i=$((i+1)); echo $i > /shared/tick; sleep 0.1; done) & \
             while true; do nc -l -p 8080 -e echo hi-from-a; done",
        ],
        &sid,
        sb_pid,
        "vmpod-a",
    );
    with_volume(&mut a, empty_dir.path());
    rt.ok(&["run", "--detach", "-b", a.path().to_str().unwrap(), &aid]);
    let a_state = rt.state(&aid);
    assert_eq!(a_state["status"], "running", "{a_state}");
    let a_pid = a_state["pid"].as_i64().unwrap() as i32;
    assert_ne!(a_pid, sb_pid, "the member's PID is a relay of its own");

    // Member B, in the foreground: the pod's hostname, A's file, A's port, its own status.
    let (mut b, bid) = member(
        &[
            "sh",
            "-c",
            "hostname; i=0; until [ -e /shared/a ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; \
             cat /shared/a; i=0; until nc 127.0.0.1 8080 </dev/null || [ $i -ge 50 ]; do sleep 0.2; i=$((i+1)); done; \
             echo from-b > /shared/b; exit 3",
        ],
        &sid,
        sb_pid,
        "vmpod-b",
    );
    with_volume(&mut b, empty_dir.path());
    let out = rt.run(&["run", "-b", b.path().to_str().unwrap(), &bid]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(stdout(&out), "the-pod\nfrom-a\nhi-from-a\n", "{out:?}");
    assert_eq!(
        std::fs::read_to_string(empty_dir.path().join("b")).unwrap(),
        "from-b\n"
    );
    // `run` deleted B when it ended: its entries are out of the share.
    let mountinfo = || std::fs::read_to_string(format!("/proc/{sb_pid}/mountinfo")).unwrap();
    assert!(!mountinfo().contains(&bid), "{}", mountinfo());

    // Exactly one VM for the pod; none made for its members.
    let vms = vm_processes("/run/strata-vm/");
    let ours = vm_processes(run.to_str().unwrap());
    assert_eq!(ours.len(), 1, "the pod's VM: {ours:?}");
    for id in [&aid, &bid] {
        let theirs = strata::backend::vm::run_dir_for(&rt.root.path().join(id));
        assert!(!theirs.exists(), "a member got a VM of its own");
    }
    assert!(!vms.is_empty());

    // exec in a member reaches the member (its own mount namespace, the pod's network).
    let out = rt.run(&["exec", &aid, "cat", "/shared/a"]);
    assert_eq!(stdout(&out), "from-a\n", "{out:?}");
    // A's rootfs and volume are entries of the VM's share while it exists...
    assert!(
        mountinfo().contains(&format!("{aid}-rootfs")),
        "{}",
        mountinfo()
    );
    // pause freezes the member in the guest (its ticker stops) while the VM goes on;
    // resume thaws it.
    let tick = || std::fs::read_to_string(empty_dir.path().join("tick")).unwrap_or_default();
    rt.ok(&["pause", &aid]);
    assert_eq!(rt.status(&aid), "paused");
    std::thread::sleep(Duration::from_millis(500));
    let frozen = tick();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tick(), frozen, "the paused member went on running");
    assert_eq!(rt.status(&sid), "running");
    rt.ok(&["resume", &aid]);
    assert_eq!(rt.status(&aid), "running");
    eventually_for("the member to run again", Duration::from_secs(10), || {
        tick() != frozen
    });
    // ... kill stops it (its relay exits with it), and delete takes them out.
    rt.ok(&["kill", &aid, "KILL"]);
    eventually_for("the member to stop", Duration::from_secs(30), || {
        rt.status(&aid) == "stopped"
    });
    assert!(!is_alive(a_pid), "the member's relay outlived it");
    rt.ok(&["delete", &aid]);
    assert!(
        !mountinfo().contains(&aid),
        "the member's share entries are left: {}",
        mountinfo()
    );
    assert_eq!(rt.status(&sid), "running", "the pod's VM goes on");

    // A member that does not fit the pod's VM, and one naming a sandbox that does not exist:
    // one-line errors, nothing left.
    let (mut big, big_id) = member(&["true"], &sid, sb_pid, "vmpod-big");
    big.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 8i64 << 30}}));
    let err = rt.fails(&["create", "-b", big.path().to_str().unwrap(), &big_id]);
    assert!(err.contains("does not fit the pod's VM"), "{err}");
    assert!(!rt.root.path().join(&big_id).exists());
    assert_eq!(cgroup_left(&big_id), None);
    let (orphan, orphan_id) = member(&["true"], "no-such-pod", sb_pid, "vmpod-orphan");
    let err = rt.fails(&["create", "-b", orphan.path().to_str().unwrap(), &orphan_id]);
    assert!(
        err.contains("\"no-such-pod\" is not a running vm pod"),
        "{err}"
    );
    assert!(!rt.root.path().join(&orphan_id).exists());
    // The sandbox's namespaces, or none: another process's are refused.
    let (stray, stray_id) = member(&["true"], &sid, std::process::id() as i32, "vmpod-stray");
    let err = rt.fails(&["create", "-b", stray.path().to_str().unwrap(), &stray_id]);
    assert!(err.contains("is not that of the pod sandbox"), "{err}");
    assert!(!rt.root.path().join(&stray_id).exists());

    // A member left running when the sandbox goes ends with the VM.
    let (c, cid) = member(&["sleep", "100000"], &sid, sb_pid, "vmpod-c");
    rt.ok(&["run", "--detach", "-b", c.path().to_str().unwrap(), &cid]);
    let c_pid = rt.state(&cid)["pid"].as_i64().unwrap() as i32;
    rt.ok(&["delete", "--force", &sid]);
    eventually_for("the member's relay to end", Duration::from_secs(30), || {
        !is_alive(c_pid)
    });
    assert_eq!(rt.status(&cid), "stopped");
    rt.ok(&["delete", &cid]);
    assert!(vm_processes(run.to_str().unwrap()).is_empty());
    assert!(!run.exists(), "the pod VM's run directory is left");
    for id in [&sid, &aid, &bid, &cid] {
        assert!(!rt.root.path().join(id).exists(), "state of {id} left");
        assert_eq!(cgroup_left(id), None, "cgroup of {id} left");
    }
}

fn is_alive(pid: i32) -> bool {
    // A zombie is not alive: it is the caller's to reap (strata's relays are not ours).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let after = s.rsplit(')').next().unwrap_or("");
            !after.trim_start().starts_with('Z')
        })
        .unwrap_or(false)
}
