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
    // Any negative quota but -1 would lift the limit (written as -1, or "max").
    refused(
        |c| c["linux"]["resources"]["cpu"] = json!({"quota": -5, "period": 100000}),
        &["linux.resources.cpu.quota", "-5"],
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

/// The runtime's own namespaces named by path (`/proc/<pid>/ns/...` of a host process) are
/// the host's: the rootfs is not built there (no pivot, no mounts, no read-only remount of
/// the host's "/", which a `root.readonly` there is not), and the host's hostname is not set.
#[test]
fn the_hosts_namespaces_joined_by_path_are_not_the_containers_to_change() {
    require_root!();
    let _restore = Restore::new("/proc/sys/kernel/hostname");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let me = std::process::id();
    let join = |c: &mut Value, typ: &str, ns: &str| {
        drop_namespace(c, typ);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": typ, "path": format!("/proc/{me}/ns/{ns}")}));
    };
    let root_mount = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .map(str::to_string)
    };
    let before = root_mount();
    let mounts = mount_count();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "test -x /bin/busybox && test -e /marker/x && echo inside",
    ]);
    let id = container(&mut b, "hostmnt");
    b.edit(|c| {
        join(c, "mount", "mnt");
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/marker", "type": "tmpfs", "source": "tmpfs"}));
    });
    std::fs::create_dir_all(b.rootfs().join("marker")).unwrap();
    std::fs::write(b.rootfs().join("marker/x"), "").unwrap();
    let out = rt.run_within(30, &["run", "-b", &bundle_str(&b), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The tmpfs would hide marker/x: it was not mounted, and nothing else was either.
    assert_eq!(stdout(&out), "inside\n");
    assert_eq!(mount_count(), mounts, "mounts made in the host's namespace");
    assert_eq!(root_mount(), before, "the host's / was changed");
    // A read-only root there would be a read-only remount of the host's "/": the field is
    // ignored, as runc ignores it, and without a word on the workload's stderr.
    let mut b = Bundle::new(&["sh", "-c", "echo inside"]);
    let id = container(&mut b, "hostro");
    b.edit(|c| {
        join(c, "mount", "mnt");
        c["root"]["readonly"] = json!(true);
    });
    let out = rt.run_within(30, &["run", "-b", &bundle_str(&b), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "inside\n");
    assert_eq!(stderr(&out), "", "a diagnostic on the workload's stderr");
    assert_eq!(root_mount(), before, "the host's / was changed");
    assert_eq!(mount_count(), mounts, "mounts made in the host's namespace");
    refused(
        |c| {
            join(c, "uts", "uts");
            c["hostname"] = json!("strata-pwned");
        },
        &["hostname", "uts namespace"],
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
}

/// Mounts that would reach past the container's own: a remount of a filesystem (not of a
/// bind: it changes the host's mounts of it too), a mount over the container's root by a
/// symlink or "..", a device node put outside /dev, a namespace "file" that is a FIFO.
#[test]
fn mounts_devices_and_namespace_paths_stay_the_containers_own() {
    require_root!();
    // The filesystem bound in is a tmpfs of a mount namespace of the test's own, where
    // strata runs too: the host's mounts stay as they are for the tests running beside.
    let host = TempDir::new("hosttmpfs");
    let src = host.path().to_str().unwrap().to_string();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "remount");
    b.edit(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind"]}));
        m.push(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["remount", "ro"]}));
    });
    let strata = rt.cmd();
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"d=$1; shift; mount -t tmpfs tmpfs "$d" || exit 99; "$@"; rc=$?; touch "$d/w" && echo writable; exit $rc"#)
        .arg("sh")
        .arg(&src)
        .arg(strata.get_program())
        .args(strata.get_args())
        .args(["create", "-b", &bundle_str(&b), &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("remount") && err.contains("only for bind mounts"),
        "{err}"
    );
    assert_eq!(
        stdout(&out),
        "writable\n",
        "the tmpfs was remounted read-only: {err}"
    );
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);

    // A symlink to "/" as a destination: the mount would cover the whole rootfs.
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "rootlink");
    std::os::unix::fs::symlink("/", b.rootfs().join("rootlink")).unwrap();
    b.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/rootlink", "type": "tmpfs", "source": "tmpfs"}));
    });
    let err = rt.fails(&["run", "-b", &bundle_str(&b), &id]);
    assert!(err.contains("resolves to the container's root"), "{err}");
    assert!(rt.container_dirs().is_empty());
    // "/.." is "/", which is the rootfs itself: not a mount.
    let mut b = Bundle::new(&["cat", "/etc/passwd"]);
    let id = container(&mut b, "dotdot");
    b.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/..", "type": "tmpfs", "source": "tmpfs"}));
    });
    assert!(rt
        .ok(&["run", "-b", &bundle_str(&b), &id])
        .contains("root:"));

    refused(
        |c| {
            c["linux"]["devices"] =
                json!([{"path": "/dev/../etc/evil", "type": "c", "major": 1, "minor": 3}])
        },
        &["linux.devices[0]", "under /dev"],
    );

    // open(2) of a FIFO blocks until a writer comes: a namespace path is checked first.
    let dir = TempDir::new("nsfifo");
    let fifo = dir.path().join("ns");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "nsfifo");
    b.edit(|c| {
        drop_namespace(c, "network");
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "network", "path": fifo}));
    });
    let out = rt.run_within(10, &["create", "-b", &bundle_str(&b), &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a namespace file"),
        "{}",
        stderr(&out)
    );
    assert!(rt.container_dirs().is_empty());
}
