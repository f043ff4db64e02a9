//! Unmodified work under the sandbox's built-in policy ("everything the bundle grants,
//! nothing of the host"): real programs, the errno sweep, what a container sees of itself.
//! Each runs the same thing under native and under the sandbox and compares the output.

use serde_json::json;
use strata_integration::sandbox::*;
use strata_integration::*;

/// Unmodified work gives under the sandbox's built-in policy what it gives under native: a
/// script that installs files (`mkdir -p`, `cp -a`, `ln -s`, `tar`), what the container sees
/// of itself (`/proc/mounts`, `/proc/self/ns`, `df`, `ps`), and busybox `httpd` serving a
/// volume to `wget` over the container's loopback.
#[test]
fn unmodified_work_runs_under_the_builtin_policy_as_under_native() {
    require_root!();
    let builtin = ["--config", "/dev/null"];
    let vol = TempDir::new("sbweb");
    std::fs::write(vol.path().join("index.html"), "served from a volume\n").unwrap();
    let script = "mkdir -p / /a/b/c && cp -a /bin /a/b/c/ && ln -s /a /l && ls /l/b/c/bin | wc -l; \
        tar cf /tmp/t.tar /a 2>/dev/null && mkdir /tmp/x && tar xf /tmp/t.tar -C /tmp/x && ls /tmp/x/a/b/c/bin | wc -l; \
        grep -c . /proc/mounts >/dev/null && awk '{print $2}' /proc/mounts | grep -x /data; \
        ls /proc/self/ns | tr '\\n' ' '; echo; readlink /proc/self/ns/pid | cut -d: -f1; \
        df /data | tail -1 | awk '{print $NF}'; ps -o pid,comm | head -2 | tail -1; \
        ip link set lo up && httpd -p 127.0.0.1:8080 -h /data && i=0; \
        until wget -qO- http://127.0.0.1:8080/index.html 2>/dev/null; do \
          i=$((i+1)); [ $i -ge 20 ] && echo NO-HTTP && break; sleep 0.1; done";
    let edit = |b: &mut Bundle| {
        let root = b.rootfs();
        std::fs::create_dir_all(root.join("data")).unwrap();
        for a in ["awk", "tr", "df", "tar", "wget", "httpd", "ip"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
        }
        let v = vol.path().to_str().unwrap().to_string();
        b.edit(|c| {
            c["root"]["readonly"] = json!(false);
            // Its own network namespace's loopback is down until it brings it up.
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_NET_ADMIN"));
            }
            c["mounts"].as_array_mut().unwrap().push(
                json!({"destination": "/data", "type": "bind", "source": v, "options": ["rbind", "ro"]}),
            );
        });
    };
    let native = run_with("native", script, &builtin, edit);
    assert!(
        native.ends_with("served from a volume\n"),
        "native: {native}"
    );
    assert_eq!(
        run_with("sandbox", script, &builtin, edit),
        native,
        "sandbox"
    );
}

/// The errno sweep (tests/programs/errno.c): file and socket calls in their error cases
/// (missing paths, EEXIST, ENOTDIR, ELOOP, EISDIR, O_EXCL, O_TMPFILE, dirfds, AT_EMPTY_PATH,
/// long names, trailing slashes, dangling symlinks, a read-only mount) return under the
/// sandbox exactly what they return under native, line by line.
#[test]
fn trapped_calls_fail_with_the_errno_native_gives() {
    require_root!();
    let Some(prog) = static_program("errno") else {
        return;
    };
    let ro = TempDir::new("sberrno-ro");
    let edit = |b: &mut Bundle| {
        std::fs::copy(&prog, b.rootfs().join("bin/errno")).unwrap();
        std::fs::create_dir_all(b.rootfs().join("ro")).unwrap();
        let r = ro.path().to_str().unwrap().to_string();
        b.edit(|c| {
            c["root"]["readonly"] = json!(false);
            c["process"]["args"] = json!(["/bin/errno"]);
            c["mounts"].as_array_mut().unwrap().push(
                json!({"destination": "/ro", "type": "bind", "source": r, "options": ["rbind", "ro"]}),
            );
        });
    };
    let builtin = ["--config", "/dev/null"];
    let native = run_with("native", "", &builtin, edit);
    assert!(native.lines().count() > 70, "native: {native}");
    assert!(native.contains("open-loop ELOOP\n"), "native: {native}");
    // The built-in policy leaves these calls to the kernel; a named one that allows them
    // has the supervisor perform every one, and it must answer as the kernel does.
    let dir = TempDir::new("sberrno-policy");
    let named = node_with_policy(
        &dir,
        "read_only = [\"/\"]\nread_write = [\"/w\", \"/ro\", \"/tmp\"]\nexec = [\"/bin\"]\nnetwork = \"none\"\n",
    );
    for (what, global) in [
        ("built-in", builtin),
        ("named", ["--config", named.as_str()]),
    ] {
        let sandbox = run_with("sandbox", "", &global, edit);
        let diff: Vec<String> = native
            .lines()
            .zip(sandbox.lines())
            .filter(|(n, s)| n != s)
            .map(|(n, s)| format!("native {n:?}, sandbox {s:?}"))
            .collect();
        assert!(diff.is_empty(), "{what} policy:\n{}", diff.join("\n"));
        assert_eq!(
            native.lines().count(),
            sandbox.lines().count(),
            "{what}: {sandbox}"
        );
    }
}

/// The Python program of [`real_programs_run_under_the_builtin_policy_as_under_native`]:
/// sqlite in both journal modes on the volume, `http.server` over loopback, a tree copy.
const PYTHON_APP: &str = r#"
import http.server, os, shutil, sqlite3, tempfile, threading, urllib.request
os.chdir("/data")
for mode in ("delete", "wal"):
    db = sqlite3.connect(f"/data/{mode}.db")
    db.execute(f"pragma journal_mode={mode}")
    db.execute("create table t(x integer)")
    with db:
        db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    db.execute("create index ix on t(x)")
    print(mode, db.execute("select count(*), sum(x) from t").fetchone(),
          db.execute("pragma integrity_check").fetchone()[0])
    db.close()
with open("/data/index.html", "w") as f:
    f.write("served by python\n")
os.mkdir("/data/www")
open("/data/www/a.txt", "w").close()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_port}/"
print(urllib.request.urlopen(url + "index.html").read().decode(), end="")
print("listing has a.txt:", "a.txt" in urllib.request.urlopen(url + "www/").read().decode())
srv.shutdown()
d = tempfile.mkdtemp(dir="/data")
shutil.copytree("/usr/lib/python3.11/json", d + "/json")
print("copied:", sorted(os.listdir(d + "/json")) == sorted(os.listdir("/usr/lib/python3.11/json")))
"#;

/// Debian's python3 (sqlite3, http.server), git and the sqlite3 shell, from the host's /usr
/// bound read-only into a busybox rootfs, working on a read-write volume: under the
/// sandbox's built-in policy each prints what it prints under native.
#[test]
fn real_programs_run_under_the_builtin_policy_as_under_native() {
    require_root!();
    let programs = ["/usr/bin/python3", "/usr/bin/git", "/usr/bin/sqlite3"];
    if let Some(missing) = programs.iter().find(|p| !std::path::Path::new(p).exists()) {
        // scripts/install-deps installs them; CI must not skip.
        assert!(
            std::env::var_os("STRATA_REQUIRE_CLIENTS").is_none(),
            "{missing} is not installed"
        );
        eprintln!("SKIPPED: {missing} is not installed");
        return;
    }
    let builtin = ["--config", "/dev/null"];
    let git = "git -c user.name=t -c user.email=t@example.invalid";
    let script = format!(
        "ip link set lo up && python3 /app/app.py 2>/dev/null; echo python=$?; \
         git init -q /data/repo && cd /data/repo && echo one > f && mkdir d && echo two > d/g && \
         ln -s f l && git add -A && {git} commit -qm first && echo three >> f && \
         {git} commit -qam second && git log --format=%s | tr '\\n' ' ' && \
         git ls-files | tr '\\n' ' ' && git status --porcelain | wc -l && git gc -q && \
         git fsck --no-progress 2>&1 | wc -l; echo git=$?; \
         sqlite3 /data/cli.db 'create table a(b); insert into a values(1),(2); select sum(b) from a;'; \
         echo sqlite3=$?"
    );
    let run = |backend: &str| {
        let vol = TempDir::new("sbprog");
        let app = TempDir::new("sbapp");
        std::fs::write(app.path().join("app.py"), PYTHON_APP).unwrap();
        let out = run_with(backend, &script, &builtin, |b: &mut Bundle| {
            let root = b.rootfs();
            for d in ["data", "app", "usr"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            // Debian's merged /usr: the loader and libraries are found through /lib64, /lib.
            for l in ["lib", "lib64"] {
                std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).unwrap();
            }
            for a in ["tr", "ip"] {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
            }
            let (v, a) = (vol.path().to_str().unwrap(), app.path().to_str().unwrap());
            b.edit(|c| {
                c["root"]["readonly"] = json!(true);
                c["process"]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("HOME=/data"));
                for set in ["bounding", "effective", "permitted"] {
                    c["process"]["capabilities"][set]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("CAP_NET_ADMIN"));
                }
                let m = c["mounts"].as_array_mut().unwrap();
                m.push(json!({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}));
                m.push(json!({"destination": "/data", "type": "bind", "source": v, "options": ["rbind", "rw"]}));
                m.push(json!({"destination": "/app", "type": "bind", "source": a, "options": ["rbind", "ro"]}));
            });
        });
        (
            out,
            std::fs::read_to_string(vol.path().join("index.html")).unwrap_or_default(),
        )
    };
    let native = run("native");
    assert_eq!(
        native.0,
        "delete (1000, 499500) ok\nwal (1000, 499500) ok\nserved by python\n\
         listing has a.txt: True\ncopied: True\npython=0\n\
         second first d/g f l 0\n0\ngit=0\n3\nsqlite3=0\n",
        "native"
    );
    assert_eq!(native.1, "served by python\n", "native wrote the volume");
    assert_eq!(run("sandbox"), native, "sandbox");
}

/// The supervisor's serving threads for the container's notify fd, by name.
fn serving_threads(supervisor: i32) -> usize {
    std::fs::read_dir(format!("/proc/{supervisor}/task"))
        .map(|rd| {
            rd.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "sandbox-serve")
                })
                .count()
        })
        .unwrap_or(0)
}

/// A container whose threads all make trapped calls is served by several supervisor
/// threads at once (one a CPU at most), not queued on one; a single-threaded one by one.
#[test]
fn trapped_calls_of_several_threads_are_served_at_once() {
    require_root!();
    let Some(prog) = static_program("openloop") else {
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = Runtime::new();
    // The bundle lives as long as its container: its rootfs is the container's.
    let start = |threads: &str| {
        let mut b = Bundle::new(&["openloop", "/etc/passwd", threads, "1", "hold"]);
        std::fs::copy(&prog, b.rootfs().join("bin/openloop")).unwrap();
        // The tests' strict policy traps every open.
        let c = Detached::start(&rt, &mut b, "sandbox", &[]);
        c.wait_for("looping");
        (supervisor_pid(&rt, &c.id), c, b)
    };
    let (one, c1, _b1) = start("1");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n = serving_threads(one);
    assert!(
        (1..=cpus.min(8)).contains(&n),
        "one caller: {n} serving threads"
    );
    rt.ok(&["delete", "--force", &c1.id]);
    let (four, c4, _b4) = start("4");
    if cpus >= 2 {
        eventually("a second serving thread", || serving_threads(four) >= 2);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n = serving_threads(four);
    assert!(n <= cpus.min(8), "{n} serving threads on {cpus} CPUs");
    // The calls are still answered, and by the container's end every thread is gone.
    assert_eq!(rt.ok(&["exec", &c4.id, "cat", "/etc/group"]), "root:x:0:\n");
    rt.ok(&["delete", "--force", &c4.id]);
    eventually("the supervisor ends", || !alive(four));
}
