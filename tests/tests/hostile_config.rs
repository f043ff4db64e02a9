//! A hostile author of config.json against the host: kernel parameters, cgroup files and
//! fields that reach host-global state. Each is refused with one line naming the field, the
//! host unchanged and nothing left behind; the legitimate form of each still works.

use serde_json::{json, Value};
use strata_integration::*;

fn bundle_str(b: &Bundle) -> String {
    b.path().to_str().unwrap().to_string()
}

/// `create` with `edit` applied fails with one line holding every `needle`, leaving nothing.
fn refused(edit: impl FnOnce(&mut Value), needles: &[&str]) -> String {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "hostile");
    b.edit(edit);
    let mounts = mount_count();
    let err = rt.fails(&["create", "-b", &bundle_str(&b), &id]);
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
    assert!(rt.container_dirs().is_empty(), "state left after: {err}");
    assert_eq!(cgroup_left(&id), None, "cgroup left after: {err}");
    assert_eq!(mount_count(), mounts, "mounts left after: {err}");
    err
}

/// Puts a host file back as it was when the guard was made, whatever the test did: a
/// regression must not leave the host changed for the tests after it.
struct Restore(&'static str, String);

impl Restore {
    fn new(path: &'static str) -> Restore {
        Restore(path, std::fs::read_to_string(path).unwrap())
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if std::fs::read_to_string(self.0).ok().as_deref() != Some(&self.1) {
            let _ = std::fs::write(self.0, &self.1);
        }
    }
}

/// A host process that is killed when the test ends, however it ends.
struct Victim(std::process::Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drop_namespace(c: &mut Value, typ: &str) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != typ);
}

#[test]
fn host_sysctls_are_refused_and_namespaced_ones_need_a_namespace_of_the_containers_own() {
    require_root!();
    let _restore = (
        Restore::new("/proc/sys/kernel/core_pattern"),
        Restore::new("/proc/sys/net/ipv4/ip_forward"),
        Restore::new("/proc/sys/kernel/shmmni"),
    );
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    // The break: a global parameter would be written to the host, with root's power.
    refused(
        |c| c["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/tmp/pwned %p"}),
        &[
            "linux.sysctl[kernel.core_pattern]",
            "not in a separate kernel namespace",
        ],
    );
    // A namespaced name that climbs out of its directory.
    refused(
        |c| c["linux"]["sysctl"] = json!({"net.ipv4/../../kernel/core_pattern": "|/x"}),
        &["linux.sysctl[net.ipv4/../../kernel/core_pattern]"],
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern,
        "the host's core_pattern changed"
    );
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    // net.* in the host's network namespace: by leaving it out, and by joining it by path.
    refused(
        |c| {
            drop_namespace(c, "network");
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        },
        &["linux.sysctl[net.ipv4.ip_forward]", "net namespace"],
    );
    refused(
        |c| {
            drop_namespace(c, "network");
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "network", "path": "/proc/self/ns/net"}));
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        },
        &["linux.sysctl[net.ipv4.ip_forward]"],
    );
    refused(
        |c| {
            drop_namespace(c, "ipc");
            c["linux"]["sysctl"] = json!({"kernel.shmmax": "4096"});
        },
        &["linux.sysctl[kernel.shmmax]", "ipc namespace"],
    );
    refused(
        |c| c["linux"]["sysctl"] = json!({"kernel.hostname": "x"}),
        &["linux.sysctl[kernel.hostname]", "hostname"],
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward
    );
    // In namespaces of its own the container sets them, and the host sees nothing.
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
    ]);
    let id = container(&mut b, "sysctl-ok");
    let flipped = if forward.trim() == "1" { "0" } else { "1" };
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": flipped, "kernel.shmmni": "1234"})
    });
    let out = rt.ok(&["run", "-b", &bundle_str(&b), &id]);
    assert_eq!(out, format!("{flipped}\n1234\n"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward
    );
}

#[test]
fn unified_cannot_move_or_kill_host_processes() {
    require_root!();
    // A host process the bundle names: before the fix it was moved into the container's
    // cgroup, and delete then killed it.
    let mut victim = Victim(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = victim.0.id();
    let cgroup_before = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for key in [
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.kill",
        "cgroup.freeze",
        "cgroup.subtree_control",
        "../cgroup.procs",
        "pids.max/../cgroup.procs",
    ] {
        let value = if key.contains("procs") || key.contains("threads") {
            pid.to_string()
        } else {
            "1".to_string()
        };
        refused(
            |c| c["linux"]["resources"]["unified"] = json!({ key: value }),
            &[&format!("linux.resources.unified[{key}]")],
        );
    }
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
        cgroup_before,
        "the host process was moved"
    );
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "the host process died"
    );
    drop(victim);
    // A controller that is not on cgroup v2 here (hybrid: memory is on v1) is refused
    // rather than written where it does nothing.
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers"))
        .unwrap_or_default();
    if !v2.split_whitespace().any(|c| c == "memory") {
        refused(
            |c| c["linux"]["resources"]["unified"] = json!({"memory.max": "100000000"}),
            &[
                "linux.resources.unified[memory.max]",
                "not enabled on cgroup v2",
            ],
        );
    }
}

#[test]
fn fields_the_kernel_would_take_wrongly_are_refused() {
    require_root!();
    refused(
        |c| c["hostname"] = json!("box\u{0}evil"),
        &["hostname", "NUL"],
    );
    refused(|c| c["hostname"] = json!("h".repeat(65)), &["hostname"]);
    refused(
        |c| c["linux"]["resources"]["memory"] = json!({"limit": -5}),
        &["linux.resources.memory.limit", "-5"],
    );
    refused(
        |c| c["linux"]["intelRdt"] = json!({"closID": "../../etc"}),
        &["linux.intelRdt.closID"],
    );
    refused(
        |c| c["linux"]["intelRdt"] = json!({"closID": "guaranteed"}),
        &["linux.intelRdt", "not supported"],
    );
    refused(
        |c| c["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
        &["linux.personality.flags"],
    );
}

#[test]
fn personality_and_a_zero_pids_limit_are_applied() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["uname", "-m"]);
    let id = container(&mut b, "pers");
    b.edit(|c| c["linux"]["personality"] = json!({"domain": "LINUX32"}));
    assert_eq!(rt.ok(&["run", "-b", &bundle_str(&b), &id]), "i686\n");
    // runtime-spec 1.3: a pids limit of 0 is a limit of zero, not "unlimited".
    let mut b = Bundle::new(&["sleep", "100"]);
    let id = container(&mut b, "pids0");
    b.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 0}));
    rt.ok(&["create", "-b", &bundle_str(&b), &id]);
    let max = cgroup_mount_points()
        .into_iter()
        .map(|mp| mp.join("strata-test").join(&id).join("pids.max"))
        .find(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap());
    assert_eq!(max.as_deref().map(str::trim), Some("0"));
    rt.ok(&["delete", "-f", &id]);
}

/// cgroupsPath naming a cgroup in use (a service's, a parent of other cgroups): its limits
/// would apply to all of it, and delete would kill every process in it.
#[test]
fn a_cgroup_in_use_is_not_a_containers_cgroup() {
    require_root!();
    let name = unique("busy");
    let dirs: Vec<std::path::PathBuf> = cgroup_mount_points()
        .into_iter()
        .map(|mp| mp.join("strata-test").join(&name))
        .collect();
    let pids = dirs
        .iter()
        .find(|d| d.parent().unwrap().parent().unwrap().ends_with("pids"))
        .cloned()
        .unwrap_or_else(|| dirs[0].clone());
    std::fs::create_dir_all(&pids).unwrap();
    let victim = Victim(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::fs::write(pids.join("cgroup.procs"), victim.0.id().to_string()).unwrap();
    refused(
        |c| c["linux"]["cgroupsPath"] = json!(format!("/strata-test/{name}")),
        &["linux.cgroupsPath", "holds processes"],
    );
    for d in dirs.iter().filter(|d| **d != pids) {
        assert!(!d.exists(), "{} was made and left behind", d.display());
    }
    drop(victim);
    eventually("the victim leaves its cgroup", || {
        std::fs::read_to_string(pids.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty()
    });
    std::fs::remove_dir(&pids).unwrap();
    // A parent of other cgroups.
    let child = dirs[0].join("child");
    std::fs::create_dir_all(&child).unwrap();
    refused(
        |c| c["linux"]["cgroupsPath"] = json!(format!("/strata-test/{name}")),
        &["linux.cgroupsPath", "holds other cgroups"],
    );
    std::fs::remove_dir(&child).unwrap();
    std::fs::remove_dir(&dirs[0]).unwrap();
}
