//! linux.seccomp: actions, argument comparisons, exec'd processes, and NOTIFY with
//! listenerPath answered by a small agent in the test.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use serde_json::{json, Value};
use strata_integration::*;

fn with_profile(args: &[&str], profile: Value) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| c["linux"]["seccomp"] = profile);
    b
}

#[test]
fn errno_kill_and_argument_rules() {
    require_root!();
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 255, "valueTwo": 12, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["no_such_syscall_name"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    let mut b = with_profile(
        &["sh", "-c",
          "mkdir /tmp/x 2>&1; kill -0 $$ && echo sig0-ok; kill -USR1 $$ 2>&1; kill -USR2 $$ 2>&1; \
           sh -c 'hostname foo' >/dev/null 2>&1; echo uname-status=$?; grep Seccomp: /proc/self/status"],
        profile,
    );
    let id2 = container(&mut b, "seccomp2");
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id2]);
    assert!(
        out.contains("Read-only file system"),
        "mkdir gets errnoRet 30: {out}"
    );
    assert!(out.contains("sig0-ok"), "{out}");
    assert_eq!(
        out.matches("Operation not permitted").count(),
        2,
        "USR1 (EQ) and USR2 (MASKED_EQ) refused: {out}"
    );
    assert!(
        out.contains("uname-status=159"),
        "uname killed by SIGSYS (128+31): {out}"
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // exec'd processes get the container's filter too.
    let mut b = with_profile(
        &["sleep", "1000"],
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        }),
    );
    let id3 = container(&mut b, "seccomp3");
    rt.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id3]);
    let out = rt.run(&["exec", &id3, "mkdir", "/tmp/y"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted")
            || stdout(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    rt.ok(&["delete", "-f", &id3]);
}

#[test]
fn filters_load_with_and_without_no_new_privileges() {
    require_root!();
    for nnp in [true, false] {
        let mut b = with_profile(
            &[
                "sh",
                "-c",
                "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status",
            ],
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO"}]
            }),
        );
        b.edit(|c| c["process"]["noNewPrivileges"] = json!(nnp));
        let rt = Runtime::new();
        let id = container(&mut b, "nnp");
        let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(
            out.contains(&format!("NoNewPrivs:\t{}", nnp as u8)),
            "{out}"
        );
    }
}

#[test]
fn bad_profiles_fail_create_cleanly() {
    require_root!();
    let rt = Runtime::new();
    for (profile, want) in [
        (json!({"defaultAction": "SCMP_ACT_BOOM"}), "SCMP_ACT_BOOM"),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WHAT"}]}]}),
            "SCMP_CMP_WHAT",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}),
            "listenerPath",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}),
            "WAIT_KILLABLE_RECV",
        ),
    ] {
        let mut b = with_profile(&["true"], profile);
        let id = container(&mut b, "badsc");
        let err = rt.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
        assert!(err.contains(want), "{err}");
        assert!(rt.container_dirs().is_empty());
        assert!(cgroup_left(&id).is_none());
    }
}

// struct seccomp_notif / seccomp_notif_resp and their ioctls (linux/seccomp.h).
#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

#[test]
fn notify_hands_the_fd_to_the_listener() {
    require_root!();
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let rt = Runtime::new();
    let dir = TempDir::new("listener");
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut b = with_profile(
        &["sh", "-c", "sleep 0.2; mkdir /tmp/z 2>&1; echo done"],
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "hello-agent",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    );
    let id = container(&mut b, "notify");
    // The agent: take the fd, then answer every mkdir with EROFS.
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed this fd for us.
                fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            }
        }
        let n = msg.bytes;
        let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
        let fd = fd.expect("no fd with the state");
        let mut req = Notif::default();
        // SAFETY: RECV fills one seccomp_notif we own; SEND reads one response we own.
        unsafe {
            assert_eq!(
                libc::ioctl(fd.as_raw_fd(), NOTIF_RECV, &mut req as *mut Notif),
                0
            );
            let resp = NotifResp {
                id: req.id,
                val: 0,
                error: -libc::EROFS,
                flags: 0,
            };
            assert_eq!(
                libc::ioctl(fd.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp),
                0
            );
        }
        state
    });
    let out = rt.ok(&["run", "-b", b.path().to_str().unwrap(), &id]);
    let state = agent.join().unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "hello-agent");
    assert_eq!(state["state"]["id"], id.as_str());
    assert!(state["pid"].as_i64().unwrap() > 1, "the host PID: {state}");
    assert!(
        out.contains("Read-only file system"),
        "the agent's answer reached mkdir: {out}"
    );
    assert!(out.ends_with("done\n"), "{out}");
}
