//! The bundle's mounts as an adversarial reviewer and youki's conformance suite exercise them:
//! recursive options (rro, rnoexec, rnosuid, ...) reaching every submount, options strata does
//! not understand refused instead of dropped, podman's tmpcopyup, and the /proc and /sys
//! rules (no procfs through a symlink, nothing over /proc but runc's lxcfs files).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};
use strata_integration::*;

/// Held by the tests that mount on the host or count the host's mounts, which would
/// otherwise see each other's.
static HOST_MOUNTS: Mutex<()> = Mutex::new(());

fn host_mounts() -> MutexGuard<'static, ()> {
    HOST_MOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A host directory with a tmpfs mounted on its `sub`, unmounted on drop.
struct DirWithSubmount {
    dir: TempDir,
    _host_mounts: MutexGuard<'static, ()>,
}

impl DirWithSubmount {
    fn new() -> DirWithSubmount {
        let guard = host_mounts();
        let dir = TempDir::new("vol");
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir.path().join("sub"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        DirWithSubmount {
            dir,
            _host_mounts: guard,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DirWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("sub"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

fn bind(dest: &str, source: &Path, options: &[&str]) -> Value {
    json!({"destination": dest, "type": "bind", "source": source, "options": options})
}

fn add_mounts(b: &mut Bundle, mounts: Vec<Value>) {
    b.edit(|c| c["mounts"].as_array_mut().unwrap().extend(mounts));
}

#[test]
fn rro_makes_the_mount_and_every_submount_read_only() {
    require_root!();
    let vol = DirWithSubmount::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "for d in /rro /rro/sub /ro /ro/sub; do touch $d/w 2>/dev/null && echo writable $d; done; \
         echo done",
    ]);
    add_mounts(
        &mut b,
        vec![
            bind("/rro", vol.path(), &["rbind", "rro"]),
            bind("/ro", vol.path(), &["rbind", "ro"]),
        ],
    );
    let id = container(&mut b, "rro");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    // Plain ro reaches only the top mount; rro reaches the submount too.
    assert_eq!(out, "writable /ro/sub\ndone\n");
    // Only the container's view changed: on the host both are still writable.
    assert!(vol.path().join("sub/w").exists());
    std::fs::write(vol.path().join("host-w"), "").unwrap();
    std::fs::write(vol.path().join("sub/host-w"), "").unwrap();
}

/// The per-mount options field of each line of a container's mountinfo whose mount point is
/// `prefix` or under it.
fn mount_options_under(mountinfo: &str, prefix: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (mp, opts) = (f.get(4)?, f.get(5)?);
            (*mp == prefix || mp.starts_with(&format!("{prefix}/")))
                .then(|| (mp.to_string(), opts.to_string()))
        })
        .collect()
}

#[test]
fn recursive_noexec_nosuid_nodev_noatime_nosymfollow_reach_submounts() {
    require_root!();
    let vol = DirWithSubmount::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["cat", "/proc/self/mountinfo"]);
    add_mounts(
        &mut b,
        vec![
            bind("/r", vol.path(), &["rbind", "rnoexec", "rnosuid", "rnodev"]),
            bind(
                "/plain",
                vol.path(),
                &["rbind", "noexec", "nosuid", "nodev"],
            ),
            bind("/atime", vol.path(), &["rbind", "rnoatime", "rnosymfollow"]),
        ],
    );
    let id = container(&mut b, "rnoexec");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    let rec = mount_options_under(&out, "/r");
    assert_eq!(rec.len(), 2, "{out}");
    for (mp, opts) in &rec {
        let opts: Vec<&str> = opts.split(',').collect();
        for flag in ["noexec", "nosuid", "nodev"] {
            assert!(opts.contains(&flag), "{mp} lacks {flag}: {opts:?}");
        }
    }
    // Without the r, the submount keeps its own flags.
    let plain = mount_options_under(&out, "/plain");
    let sub = plain.iter().find(|(mp, _)| mp == "/plain/sub").unwrap();
    assert!(!sub.1.split(',').any(|o| o == "noexec"), "{sub:?}");
    // The atime mode is one value per mount; rnoatime replaces the default relatime.
    let atime = mount_options_under(&out, "/atime");
    assert_eq!(atime.len(), 2, "{out}");
    for (mp, opts) in &atime {
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(
            opts.contains(&"noatime") && !opts.contains(&"relatime"),
            "{mp}: {opts:?}"
        );
        assert!(opts.contains(&"nosymfollow"), "{mp}: {opts:?}");
    }
}

#[test]
fn options_strata_does_not_understand_fail_create_and_leave_nothing() {
    require_root!();
    let _host = host_mounts();
    let vol = TempDir::new("vol");
    let rt = Runtime::new();
    let mounts = mount_count();
    for (options, word) in [
        (vec!["rbind", "bogus"], "bogus"),
        // A misspelt flag on a bind; a filesystem's key=value there is dropped (below).
        (vec!["bind", "nosiud"], "nosiud"),
        (vec!["rbind", "ridmap"], "ridmap"),
        (vec!["rbind", "idmap"], "idmap"),
    ] {
        let mut b = Bundle::new(&["true"]);
        add_mounts(&mut b, vec![bind("/data", vol.path(), &options)]);
        let id = container(&mut b, "badopt");
        let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
        assert!(
            err.contains(&format!("\"{word}\""))
                && err.contains("/data")
                && err.contains("mounts["),
            "{options:?}: {err}"
        );
        assert!(rt.container_dirs().is_empty(), "{:?}", rt.container_dirs());
        assert!(cgroup_left(&id).is_none(), "cgroup of {id} left behind");
        assert_eq!(mount_count(), mounts, "mounts left behind");
    }
    // mount(2) ignores a bind's filesystem data, and runc passes it: a `mode=755` copied from
    // a tmpfs is dropped, and the container runs.
    let mut b = Bundle::new(&["true"]);
    add_mounts(
        &mut b,
        vec![bind("/data", vol.path(), &["rbind", "mode=755"])],
    );
    let id = container(&mut b, "dataopt");
    rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(mount_count(), mounts, "mounts left behind");
    // A filesystem gets its words and refuses what it does not know itself.
    let mut b = Bundle::new(&["true"]);
    add_mounts(
        &mut b,
        vec![
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "no-such-tmpfs-option"]}),
        ],
    );
    let id = container(&mut b, "badfs");
    let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("/scratch") && err.contains("tmpfs"), "{err}");
    assert!(rt.container_dirs().is_empty());
    assert!(cgroup_left(&id).is_none());
    assert_eq!(mount_count(), mounts);
}

#[test]
fn tmpcopyup_starts_the_tmpfs_with_the_image_files() {
    require_root!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /run/lock/file /ro/file; stat -c %a /run/lock; \
         touch /run/new && echo run-writable; touch /ro/new 2>/dev/null && echo ro-writable; \
         grep -c ' /run tmpfs ' /proc/self/mounts",
    ]);
    std::fs::create_dir_all(b.rootfs().join("run/lock")).unwrap();
    std::fs::write(b.rootfs().join("run/lock/file"), "from the image\n").unwrap();
    std::fs::create_dir_all(b.rootfs().join("ro")).unwrap();
    std::fs::write(b.rootfs().join("ro/file"), "also\n").unwrap();
    std::process::Command::new("chmod")
        .args(["1777", b.rootfs().join("run/lock").to_str().unwrap()])
        .status()
        .unwrap();
    // As podman writes them for `--tmpfs /run` and `--tmpfs /ro:ro`.
    add_mounts(
        &mut b,
        vec![
            json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                   "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]}),
            json!({"destination": "/ro", "type": "tmpfs", "source": "tmpfs",
                   "options": ["ro", "size=1m", "rprivate", "nosuid", "nodev", "tmpcopyup"]}),
        ],
    );
    let id = container(&mut b, "copyup");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out, "from the image\nalso\n1777\nrun-writable\n1\n");
    // The image itself is untouched.
    assert!(!b.rootfs().join("run/new").exists());
}

fn replace_with_symlink(rootfs: &Path, dir: &str, target: &str) -> PathBuf {
    std::fs::remove_dir(rootfs.join(dir)).unwrap();
    let inside = rootfs.join(target.trim_start_matches('/'));
    std::fs::create_dir_all(&inside).unwrap();
    std::os::unix::fs::symlink(target, rootfs.join(dir)).unwrap();
    inside
}

#[test]
fn proc_or_sys_as_a_symlink_in_the_rootfs_is_refused() {
    require_root!();
    let _host = host_mounts();
    let rt = Runtime::new();
    let mounts = mount_count();
    for (dir, typ) in [("proc", "proc"), ("sys", "sysfs")] {
        let mut b = Bundle::new(&["true"]);
        let inside = replace_with_symlink(&b.rootfs(), dir, &format!("/tmp/{dir}"));
        let id = container(&mut b, "procsym");
        let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
        assert!(
            err.contains(&format!("/{dir} is a symlink")) && err.contains(typ),
            "{dir}: {err}"
        );
        assert_eq!(std::fs::read_dir(&inside).unwrap().count(), 0);
        assert!(rt.container_dirs().is_empty());
        assert!(cgroup_left(&id).is_none());
    }
    assert_eq!(mount_count(), mounts);
}

#[test]
fn only_runcs_lxcfs_files_may_be_mounted_over_in_proc() {
    require_root!();
    let rt = Runtime::new();
    let vol = TempDir::new("vol");
    let meminfo = vol.path().join("meminfo");
    std::fs::write(&meminfo, "MemTotal: 4242 kB\n").unwrap();
    let refused = [
        bind("/proc/sys", vol.path(), &["rbind"]),
        bind("/proc/self/attr", vol.path(), &["rbind"]),
        bind("/proc/./sys/../sys/kernel", vol.path(), &["rbind"]),
        json!({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"}),
        // Only a procfs goes on /proc itself.
        json!({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}),
    ];
    for m in refused {
        let mut b = Bundle::new(&["true"]);
        add_mounts(&mut b, vec![m.clone()]);
        let id = container(&mut b, "overproc");
        let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
        assert!(err.contains("/proc"), "{m}: {err}");
        assert!(rt.container_dirs().is_empty());
    }
    // A symlink in the rootfs that leads under /proc is judged where it leads.
    let mut b = Bundle::new(&["true"]);
    std::os::unix::fs::symlink("/proc/sys/kernel", b.rootfs().join("kernel")).unwrap();
    add_mounts(&mut b, vec![bind("/kernel", vol.path(), &["rbind"])]);
    let id = container(&mut b, "overproc-link");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("/proc/sys/kernel is under /proc"), "{err}");
    // lxcfs's files may be.
    let mut b = Bundle::new(&["cat", "/proc/meminfo"]);
    add_mounts(
        &mut b,
        vec![bind("/proc/meminfo", &meminfo, &["bind", "ro"])],
    );
    let id = container(&mut b, "meminfo");
    assert_eq!(
        rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]),
        "MemTotal: 4242 kB\n"
    );
}
