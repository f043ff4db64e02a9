//! Hostile bundles: a symlinked config.json, a rootfs that is a link to `/`, mount
//! destinations through `..` and symlinks, host disk device nodes, absurd sizes, non-UTF-8
//! paths. Each gets a clear one-line error or safe behaviour, and leaves nothing behind.

use std::os::unix::ffi::OsStrExt;

use serde_json::{json, Value};
use strata_integration::*;

fn bundle_str(b: &Bundle) -> String {
    b.path().to_str().unwrap().to_string()
}

/// `create` must fail with a one-line error containing `needle` and leave nothing.
fn refused(rt: &Runtime, b: &mut Bundle, name: &str, needle: &str) {
    let id = container(b, name);
    let err = rt.fails(&["create", "-b", &bundle_str(b), &id]);
    assert!(err.contains(needle), "{name}: {err}");
    assert!(rt.container_dirs().is_empty(), "{name}: state left");
    assert_eq!(cgroup_left(&id), None, "{name}: cgroup left");
}

#[test]
fn symlinked_config_json_is_read_as_the_file_it_names() {
    require_root!();
    let rt = Runtime::new();
    let b = Bundle::new(&["echo", "via-link"]);
    let real = b.path().join("real-config.json");
    std::fs::rename(b.path().join("config.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, b.path().join("config.json")).unwrap();
    let id = unique("cfglink");
    assert_eq!(rt.ok(&["run", "-b", &bundle_str(&b), &id]), "via-link\n");
    // A link to something that is not a config: a parse error that does not echo the file.
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", b.path().join("config.json")).unwrap();
    let err = rt.fails(&["create", "-b", &bundle_str(&b), &unique("cfglink")]);
    assert!(err.contains("config.json"), "{err}");
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let first_hash = shadow.split(':').nth(1).unwrap_or("none-here");
    assert!(first_hash.len() < 3 || !err.contains(first_hash), "{err}");
    assert!(rt.container_dirs().is_empty());
}

#[test]
fn rootfs_that_resolves_to_the_host_root_is_refused() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    std::fs::remove_dir_all(b.rootfs()).unwrap();
    std::os::unix::fs::symlink("/", b.rootfs()).unwrap();
    refused(&rt, &mut b, "rootslash", "root.path");
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["root"]["path"] = json!("rootfs/../../../../../../.."));
    refused(&rt, &mut b, "rootdotdot", "root.path");
}

#[test]
fn mount_destinations_with_dotdot_stay_inside_the_rootfs() {
    require_root!();
    let rt = Runtime::new();
    let marker = TempDir::new("dotdot-marker");
    // Would land on the host's `marker` dir if `..` escaped the rootfs.
    let escape = format!("/../../../../../../..{}", marker.path().display());
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "ls -d /tmp/strata-test-* >/dev/null 2>&1 && echo inside",
    ]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": escape, "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]
        }))
    });
    let id = container(&mut b, "dotdot");
    let out = rt.ok(&["run", "-b", &bundle_str(&b), &id]);
    assert_eq!(out, "inside\n");
    // The host directory got no mount, and the rootfs got the directory instead.
    let mounted_on_host = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(marker.path().to_str().unwrap()));
    assert!(!mounted_on_host);
    assert!(b
        .rootfs()
        .join(marker.path().strip_prefix("/").unwrap())
        .is_dir());
}

/// A loop device of our own stands in for a host disk (this VM's own disk cannot be opened
/// even by root on the host, so it could not show the "allowed" half).
struct LoopDevice {
    path: String,
    _image: TempDir,
}

impl LoopDevice {
    fn new() -> Option<LoopDevice> {
        let image = TempDir::new("loop");
        let file = image.path().join("disk.img");
        let mut data = b"strata-loop-disk".to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&file, data).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(LoopDevice {
            path: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            _image: image,
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.path])
            .status();
    }
}

#[test]
fn host_disk_device_nodes_are_created_but_not_usable_unless_allowed() {
    require_root!();
    let Some(disk) = LoopDevice::new() else {
        return;
    };
    let rdev = nix::sys::stat::stat(disk.path.as_str()).unwrap().st_rdev;
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let rt = Runtime::new();
    let device = json!({"path": "/dev/hostdisk", "type": "b", "major": major, "minor": minor,
                        "fileMode": 0o660, "uid": 0, "gid": 0});
    let script = "test -b $DISK && echo node; head -c 16 $DISK 2>/dev/null || echo denied";
    // linux.devices makes the node and lets the container use it (strata adds an allow rule
    // for each listed device after the bundle's own rules); the same node merely present in
    // the rootfs, not listed, is refused by the device cgroup.
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.edit(|c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("DISK=/dev/hostdisk"));
        c["linux"]["devices"] = json!([device]);
        c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    });
    let id = container(&mut b, "hostdisk-listed");
    assert_eq!(
        rt.ok(&["run", "-b", &bundle_str(&b), &id]),
        "node\nstrata-loop-disk"
    );
    // The same node smuggled in as a file of the rootfs, not listed: denied.
    let mut b = Bundle::new(&["sh", "-c", script]);
    nix::sys::stat::mknod(
        &b.rootfs().join("hostdisk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        rdev,
    )
    .unwrap();
    b.edit(|c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("DISK=/hostdisk"));
        c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    });
    let id = container(&mut b, "hostdisk-smuggled");
    assert_eq!(
        rt.ok(&["run", "-b", &bundle_str(&b), &id]),
        "node\ndenied\n"
    );
}

#[test]
fn absurd_sizes_fail_clearly() {
    require_root!();
    let rt = Runtime::new();
    // A million environment variables: more than execve takes.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        let env: Vec<Value> = (0..1_000_000).map(|i| json!(format!("V{i}=x"))).collect();
        c["process"]["env"] = Value::Array(env);
    });
    let id = container(&mut b, "bigenv");
    let out = rt.run(&["run", "-b", &bundle_str(&b), &id]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("too long") || err.contains("E2BIG"), "{err}");
    assert!(rt.container_dirs().is_empty());
    assert_eq!(cgroup_left(&id), None);

    // One 1 MB argument: above the kernel's 128 KiB limit for a single string.
    let mut b = Bundle::new(&["echo"]);
    b.edit(|c| c["process"]["args"] = json!(["echo", "y".repeat(1 << 20)]));
    let id = container(&mut b, "bigarg");
    let out = rt.run(&["run", "-b", &bundle_str(&b), &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("too long") || stderr(&out).contains("E2BIG"),
        "{}",
        stderr(&out)
    );
    assert!(rt.container_dirs().is_empty());

    // Many args that fit: run normally.
    let mut b = Bundle::new(&["sh"]);
    let mut args = vec![json!("sh"), json!("-c"), json!("echo $#"), json!("sh")];
    args.extend((0..10_000).map(|i| json!(format!("a{i}"))));
    b.edit(|c| c["process"]["args"] = Value::Array(args));
    let id = container(&mut b, "manyargs");
    assert_eq!(rt.ok(&["run", "-b", &bundle_str(&b), &id]), "10000\n");
}

#[test]
fn non_utf8_bundle_paths_work_and_non_utf8_ids_are_refused() {
    require_root!();
    let rt = Runtime::new();
    let b = Bundle::new(&["echo", "ok"]);
    let odd = std::ffi::OsStr::from_bytes(b"bundle-\xff\xfe");
    let link = b.path().parent().unwrap().join(odd);
    std::os::unix::fs::symlink(b.path(), &link).unwrap();
    let id = unique("nonutf8");
    let out = output_via_files(rt.cmd().arg("run").arg("-b").arg(&link).arg(&id));
    let _ = std::fs::remove_file(&link);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    let out = output_via_files(
        rt.cmd()
            .arg("create")
            .arg("-b")
            .arg(b.path())
            .arg(std::ffi::OsStr::from_bytes(b"id-\xff")),
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(rt.container_dirs().is_empty());
}
