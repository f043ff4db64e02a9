//! cgroup v2 for real on a private cgroup2 mount (this host's controllers are all on v1, so
//! this covers what v2 does without controllers: membership, freeze, kill, and the eBPF
//! device filter) — root only.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use strata_linux::cgroups::{CgroupSet, Hierarchy};

struct PrivateCgroup2 {
    mount_point: PathBuf,
}

impl PrivateCgroup2 {
    fn new(name: &str) -> Option<PrivateCgroup2> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: cgroup v2 tests need root");
            return None;
        }
        let mp = std::env::temp_dir().join(format!("strata-cg2-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&mp).unwrap();
        mount(
            Some("cgroup2"),
            &mp,
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting cgroup2");
        Some(PrivateCgroup2 { mount_point: mp })
    }

    fn hierarchy(&self) -> Vec<Hierarchy> {
        vec![Hierarchy {
            mount_point: self.mount_point.clone(),
            unified: true,
            controllers: Vec::new(),
        }]
    }
}

impl Drop for PrivateCgroup2 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.mount_point.join("strata-test"));
        let _ = umount2(&self.mount_point, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// Removes the cgroup even when an assertion fails.
struct Cleanup(CgroupSet);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill_all_v2();
        for _ in 0..100 {
            if self.0.pids().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.0.remove();
    }
}

/// A command that puts itself into `dir` before exec.
fn in_cgroup(dir: &Path, prog: &str, args: &[&str]) -> Command {
    let procs = dir.join("cgroup.procs");
    let mut c = Command::new(prog);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure only writes a file, which is async-signal-safe enough for a
    // single-threaded fork child here (std's own pre_exec contract).
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, "0"));
    }
    c
}

#[test]
fn v2_membership_freeze_and_kill() {
    let Some(cg2) = PrivateCgroup2::new("freeze") else {
        return;
    };
    let path = PathBuf::from(format!("/strata-test/v2-{}", std::process::id()));
    let guard = Cleanup(CgroupSet::create(&path, &cg2.hierarchy()).unwrap());
    let set = &guard.0;
    let dir = set.dirs[0].dir.clone();
    assert!(dir.is_dir());
    let counter = std::env::temp_dir().join(format!("strata-cg2-count-{}", std::process::id()));
    let script = format!(
        "while :; do echo x >> {}; sleep 0.01; done",
        counter.display()
    );
    let mut child = in_cgroup(&dir, "sh", &["-c", &script]).spawn().unwrap();
    let pid = child.id() as i32;
    let size = || std::fs::metadata(&counter).map(|m| m.len()).unwrap_or(0);
    while set.pids().is_empty() || size() < 4 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(set.pids().contains(&pid));

    set.set_frozen(true).unwrap();
    assert!(set.is_frozen());
    let at = size();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert!(size() <= at + 2, "a frozen cgroup made progress");
    set.set_frozen(false).unwrap();
    assert!(!set.is_frozen());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(size() > at + 2, "no progress after thaw");

    assert!(set.kill_all_v2(), "cgroup.kill is available on 6.x");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    set.remove();
    assert!(!dir.exists());
    let _ = std::fs::remove_file(&counter);
}

#[test]
fn v2_device_filter_is_enforced() {
    let Some(cg2) = PrivateCgroup2::new("dev") else {
        return;
    };
    let path = PathBuf::from(format!("/strata-test/dev-{}", std::process::id()));
    let guard = Cleanup(CgroupSet::create(&path, &cg2.hierarchy()).unwrap());
    let set = &guard.0;
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_str(r#"{"devices": [{"allow": false, "access": "rwm"}]}"#).unwrap();
    set.apply(&resources, &[]).unwrap();
    let dir = set.dirs[0].dir.clone();
    // /dev/zero is in the default allow list; /dev/kmsg (c 1:11) is not.
    let out = in_cgroup(&dir, "sh", &["-c", "head -c1 /dev/zero | wc -c; (: < /dev/kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        vec!["1", "kmsg-denied"],
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A later rule that allows it wins (last match decides), replacing the program.
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(
        r#"{"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]}"#,
    )
    .unwrap();
    set.apply(&resources, &[]).unwrap();
    let out = in_cgroup(
        &dir,
        "sh",
        &[
            "-c",
            "(: < /dev/kmsg) && echo kmsg-open || echo kmsg-denied",
        ],
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kmsg-open"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set.remove();
}
