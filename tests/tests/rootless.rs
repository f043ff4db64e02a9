//! Rootless containers, as an unprivileged user runs them: a user of the test's own (with the
//! /etc/subuid and /etc/subgid ranges useradd grants), strata copied where that user can run
//! it, the bundle `strata spec --rootless` writes, state under the user's XDG_RUNTIME_DIR.
//! Also rootless podman, which runs strata as root of its own user namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use strata_integration::clients::busybox_rootfs_tar;
use strata_integration::*;

/// An unprivileged user made for one test, removed with its scratch directory.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    dir: TempDir,
    strata: PathBuf,
}

impl User {
    fn new(tag: &str) -> Option<User> {
        if !is_root() {
            eprintln!("SKIPPED: making a test user needs root");
            return None;
        }
        // Short: user names are at most 32 bytes.
        let name = format!("strata-{tag}-{}", std::process::id() % 100_000);
        let out = Command::new("useradd")
            .args([
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
            ])
            .arg(&name)
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd: {out:?}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").arg(flag).arg(&name).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let dir = TempDir::new(&format!("rootless-{tag}"));
        let strata = dir.path().join("strata");
        std::fs::copy(strata_bin(), &strata).unwrap();
        let user = User {
            name,
            uid,
            gid,
            dir,
            strata,
        };
        std::fs::create_dir_all(user.xdg()).unwrap();
        std::os::unix::fs::chown(user.dir.path(), Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(user.xdg(), Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(
            user.xdg(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Some(user)
    }

    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// `program args` as this user, with its XDG_RUNTIME_DIR, from `cwd`.
    fn run(&self, cwd: &Path, program: &Path, args: &[&str]) -> Output {
        output_via_files(
            Command::new("runuser")
                .args(["-u", &self.name, "--", "env"])
                .arg(format!("XDG_RUNTIME_DIR={}", self.xdg().display()))
                .arg(format!("HOME={}", self.dir.path().display()))
                .arg(program)
                .args(args)
                .current_dir(cwd)
                .stdin(Stdio::null()),
        )
    }

    fn strata(&self, cwd: &Path, args: &[&str]) -> Output {
        self.run(cwd, &self.strata, args)
    }

    fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.strata(cwd, args);
        assert!(
            out.status.success(),
            "strata {args:?} as {}: {out:?}",
            self.name
        );
        stdout(&out)
    }

    /// A busybox rootfs and `strata spec --rootless`, made by the user, with `args`.
    fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let b = self.dir.path().join(name);
        make_rootfs(&b.join("rootfs"));
        chown_tree(&b, self.uid, self.gid);
        self.ok(&b, &["spec", "--rootless"]);
        self.edit(&b, |c| {
            c["process"]["terminal"] = json!(false);
            c["process"]["args"] = json!(args);
        });
        b
    }

    fn edit(&self, bundle: &Path, f: impl FnOnce(&mut Value)) {
        let path = bundle.join("config.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Processes of the user first (a test that failed half-way), then the user and its
        // subordinate ids.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg("-hR")
        .arg(format!("{uid}:{gid}"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_unprivileged_user_runs_execs_kills_and_deletes_a_rootless_container() {
    let Some(u) = User::new("rl") else { return };
    let b = u.bundle("b", &["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    let bs = b.to_str().unwrap();
    // The default spec as it comes: the container's root is the user.
    let out = u.ok(&b, &["run", "-b", bs, "c1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", &u.uid.to_string(), "1"],
        "{out}"
    );

    // Detached, with state under the user's XDG_RUNTIME_DIR.
    u.edit(&b, |c| c["process"]["args"] = json!(["sleep", "1000"]));
    u.ok(&b, &["run", "-d", "-b", bs, "c2"]);
    assert!(
        u.xdg().join("strata/c2").is_dir(),
        "state not under XDG_RUNTIME_DIR"
    );
    assert!(u.ok(&b, &["state", "c2"]).contains("\"running\""));
    assert_eq!(
        u.ok(&b, &["exec", "c2", "sh", "-c", "echo exec-ok"]),
        "exec-ok\n"
    );
    let ps = u.ok(&b, &["ps", "c2"]);
    assert!(ps.contains("sleep 1000"), "ps without a cgroup: {ps}");
    // What needs a cgroup says so.
    let out = u.strata(&b, &["pause", "c2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no cgroup"),
        "{out:?}"
    );
    u.ok(&b, &["kill", "c2", "KILL"]);
    eventually("the container stops", || {
        u.ok(&b, &["state", "c2"]).contains("\"stopped\"")
    });
    u.ok(&b, &["delete", "c2"]);
    assert!(!u.xdg().join("strata/c2").exists());
    assert_eq!(u.ok(&b, &["list", "-q"]), "");

    // Limits need a cgroup the user can make: refused, naming the field, nothing left.
    u.edit(&b, |c| {
        c["process"]["args"] = json!(["true"]);
        c["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    });
    let out = u.strata(&b, &["run", "-b", bs, "c3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("linux.resources.memory"), "{err}");
    assert!(!u.xdg().join("strata/c3").exists());
}

#[test]
fn id_ranges_beyond_the_users_own_go_through_newuidmap() {
    let Some(u) = User::new("rm") else { return };
    if !Path::new("/usr/bin/newuidmap").exists() {
        assert!(
            std::env::var("STRATA_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "STRATA_REQUIRE_CLIENTS=1 but newuidmap (uidmap) is missing"
        );
        return;
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let start: u32 = subuid
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{}:", u.name)))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .expect("useradd granted no subordinate uids");
    let b = u.bundle("r", &["sh", "-c", "cat /proc/self/uid_map; id"]);
    let (uid, gid) = (u.uid, u.gid);
    u.edit(&b, |c| {
        c["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": uid, "size": 1},
            {"containerID": 1, "hostID": start, "size": 65536}
        ]);
        c["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": gid, "size": 1},
            {"containerID": 1, "hostID": start, "size": 65536}
        ]);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    });
    let out = u.ok(&b, &["run", "-b", b.to_str().unwrap(), "r1"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", &uid.to_string(), "1"], "{out}");
    assert_eq!(lines[1], ["1", &start.to_string(), "65536"], "{out}");
    assert!(out.contains("uid=1000 gid=1000"), "{out}");
    // A range /etc/subuid does not grant is newuidmap's to refuse, and strata says so.
    u.edit(&b, |c| {
        c["linux"]["uidMappings"][1]["hostID"] = json!(5000);
    });
    let out = u.strata(&b, &["run", "-b", b.to_str().unwrap(), "r2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux.uidMappings") && err.contains("newuidmap"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!u.xdg().join("strata/r2").exists());
}

#[test]
fn rootless_podman_runs_execs_and_stops_a_container_with_strata() {
    let Some(u) = User::new("rp") else { return };
    if !strata_integration::clients::require_client(&["podman", "conmon"]) {
        return;
    }
    let d = u.dir.path();
    let conf = format!(
        "[containers]\nnetns = \"none\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n",
        d = d.display()
    );
    std::fs::write(d.join("containers.conf"), conf).unwrap();
    std::fs::write(
        d.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n",
            d = d.display()
        ),
    )
    .unwrap();
    let tar = busybox_rootfs_tar(d);
    chown_tree(d, u.uid, u.gid);
    let podman = |args: &[&str]| -> Output {
        let mut full: Vec<String> = vec![
            format!("CONTAINERS_CONF={}/containers.conf", d.display()),
            format!("CONTAINERS_STORAGE_CONF={}/storage.conf", d.display()),
            "podman".into(),
            "--root".into(),
            format!("{}/storage", d.display()),
            "--runroot".into(),
            format!("{}/run", d.display()),
            "--tmpdir".into(),
            format!("{}/tmp", d.display()),
            "--runtime".into(),
            u.strata.display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        u.run(d, Path::new("/usr/bin/env"), &refs)
    };
    let ok = |args: &[&str]| -> String {
        let out = podman(args);
        assert!(out.status.success(), "podman {args:?}: {out:?}");
        stdout(&out)
    };
    ok(&["import", tar.to_str().unwrap(), "localhost/strata-rootless"]);
    // podman's own user namespace maps the user's subordinate ids; strata runs in it.
    let out = ok(&[
        "run",
        "--rm",
        "localhost/strata-rootless",
        "sh",
        "-c",
        "id -u; wc -l < /proc/self/uid_map",
    ]);
    assert_eq!(out, "0\n2\n", "{out}");
    ok(&[
        "run",
        "-d",
        "--name",
        "rl",
        "localhost/strata-rootless",
        "sleep",
        "1000",
    ]);
    assert_eq!(ok(&["exec", "rl", "sh", "-c", "echo exec-ok"]), "exec-ok\n");
    ok(&["stop", "-t", "1", "rl"]);
    assert_eq!(
        ok(&["inspect", "--format", "{{.State.Status}}", "rl"]).trim(),
        "exited"
    );
    ok(&["rm", "rl"]);
    let _ = podman(&["system", "reset", "--force"]);
}
