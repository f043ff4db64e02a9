//! The breaks an adversarial review found in the sandbox, each performed for real: a new user
//! namespace lending the supervisor capabilities, device nodes outside the container's device
//! rules, executing what is not beneath the exec set, metadata changed through an fd, the
//! network policy bypassed by TCP fast open, implicit binds and wildcard listeners, and the
//! supervisor's /proc entry within reach. Then a second review's: a Unix datagram sent by
//! sendmsg, the inode version set through a read-only fd, listen(2) under a `bind` list, a
//! tun device, the peer credentials of a supervised connect, a pty's signals, calls that wait
//! stalling the others, another process's memory, and ordinary calls the sandbox broke.
//! Where the attempt works under native it is shown there too, so that a test that stopped
//! testing anything would fail.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use strata_integration::sandbox::*;
use strata_integration::*;

/// A non-loopback address (198.18.0.0/15, for benchmarks) on the host's loopback device,
/// removed on drop: a peer the host reaches that is not loopback, whatever the host's own
/// network (this kernel has no dummy driver).
struct DummyNet {
    addr: Ipv4Addr,
}

impl DummyNet {
    fn new() -> DummyNet {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let addr = Ipv4Addr::new(
            198,
            18 + (pid % 2) as u8,
            ((pid / 2) % 250) as u8,
            1 + n as u8,
        );
        let st = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            .status()
            .unwrap();
        assert!(st.success(), "adding {addr} to lo");
        DummyNet { addr }
    }
}

impl Drop for DummyNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.addr), "dev", "lo"])
            .status();
    }
}

/// The escape program, and capabilities beyond the default bundle's three (so that what
/// refuses a call is the policy, not a missing capability).
fn with_escape_and_caps(b: &mut Bundle, caps: &[&str]) {
    with_escape(b);
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            let list = c["process"]["capabilities"][set].as_array_mut().unwrap();
            list.extend(caps.iter().map(|cap| json!(cap)));
        }
    });
}

fn add_escape_and_host_net(b: &mut Bundle) {
    with_escape(b);
    host_net(b);
}

#[test]
fn a_new_user_namespace_lends_the_supervisor_no_capabilities() {
    require_root_and_escape!();
    // Under native the clone works and its child, powerless outside its namespace, is
    // refused by the kernel. Under the sandbox the child's full CapEff used to be copied
    // into the supervisor's identity, which then made the nodes and opened /dev/kmsg.
    let native = run_on("native", "escape userns", with_escape);
    assert!(
        native.contains("clone child: block node refused, kmsg node refused"),
        "{native}"
    );
    let out = run_on("sandbox", "escape userns", with_escape);
    assert_eq!(
        out, "clone: Operation not permitted\nclone3: Function not implemented\n",
        "{out}"
    );
}

#[test]
fn device_nodes_outside_the_device_rules_stay_closed() {
    require_root_and_escape!();
    // A node the image smuggles in: /dev/kvm's (c 10:232), which needs no capability to
    // open (where the host has it; /dev/kmsg's would also need CAP_SYSLOG). The devices
    // cgroup stops native; the supervisor, in the host's cgroups, must apply the same rules.
    let (major, minor) = if std::path::Path::new("/dev/kvm").exists() {
        (10, 232)
    } else {
        (1, 11)
    };
    let smuggle = move |b: &mut Bundle| {
        with_escape(b);
        let node = std::ffi::CString::new(b.rootfs().join("node").to_str().unwrap()).unwrap();
        // SAFETY: mknod of a char device node at a path of ours.
        let r = unsafe {
            libc::mknod(
                node.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(r, 0);
    };
    native_then_sandbox(
        "escape open-dev /node; escape open-dev /dev/null",
        &[],
        smuggle,
        "Operation not permitted\nopened\n",
        "Operation not permitted\nopened\n",
    );
    // The same node made inside the container: mknod is allowed (the rules allow "m"), the
    // open is not.
    native_then_sandbox(
        "mknod /tmp/k c 1 11 && escape open-dev /tmp/k",
        &[],
        |b| with_escape_and_caps(b, &["CAP_MKNOD"]),
        "Operation not permitted\n",
        "Operation not permitted\n",
    );
}

#[test]
fn a_memfd_cannot_be_executed_in_the_sandbox() {
    require_root_and_escape!();
    let native = run_on("native", "escape memfd-exec", with_escape);
    assert!(native.ends_with("EXECUTED\n"), "{native}");
    let out = run_on("sandbox", "escape memfd-exec", with_escape);
    assert!(!out.contains("EXECUTED"), "{out}");
    assert!(
        out.starts_with("memfd MFD_EXEC: Permission denied\n"),
        "{out}"
    );
    assert!(out.contains("fchmod: Operation not permitted\n"), "{out}");
    assert_eq!(
        run_on("sandbox", "cat /proc/sys/vm/memfd_noexec", |_| {}),
        "2\n"
    );
}

/// The reviewer's race: execve of a path the supervisor accepts, flipped by another thread
/// to /proc/self/fd/N of a copy of busybox before the kernel reads it. Landlock must stop the
/// O_TMPFILE copy (it lives in /tmp), and the memfd must not be executable at all.
#[test]
fn racing_an_exec_to_a_memfd_or_a_tmpfile_runs_nothing() {
    require_root_and_escape!();
    let notexec = |b: &mut Bundle| {
        with_escape(b);
        std::fs::write(b.rootfs().join("bin/notexec"), "not a program\n").unwrap();
    };
    for kind in ["memfd", "tmpfile"] {
        let script = format!("escape race-exec 200000 {kind}");
        let native = run_on("native", &script, notexec);
        assert_eq!(native, "EXECUTED\n", "{kind} native");
        let script = format!("escape race-exec 3000 {kind}");
        let out = run_on("sandbox", &script, notexec);
        assert_eq!(out, "not executed in 3000 tries\n", "{kind}");
    }
}

#[test]
fn metadata_changes_through_an_fd_are_held_to_the_policy() {
    require_root_and_escape!();
    let script = "escape fd-meta /etc/passwd; touch /tmp/w; escape fd-meta /tmp/w; \
                  stat -c %a /etc/passwd";
    let chown = |b: &mut Bundle| with_escape_and_caps(b, &["CAP_CHOWN", "CAP_FOWNER"]);
    let out = run_on("sandbox", script, chown);
    assert_eq!(
        out,
        "fchmod: refused\nfchown: refused\nfutimens: refused\nfsetxattr: refused\n\
         fchmodat2: refused\nfchownat: refused\nsetflags: refused\n\
         fchmod: changed\nfchown: changed\nfutimens: changed\nfsetxattr: refused\n\
         fchmodat2: changed\nfchownat: changed\nsetflags: refused\n644\n"
    );
    let native = run_on(
        "native",
        "escape fd-meta /etc/passwd; stat -c %a /etc/passwd",
        chown,
    );
    assert!(
        native.starts_with("fchmod: changed\nfchown: changed\nfutimens: changed\n")
            && native.contains("setflags: changed\n")
            && native.ends_with("777\n"),
        "{native}"
    );
}

/// A TCP listener on the dummy address, counting the connections it accepts.
fn counting_listener(addr: Ipv4Addr) -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let mut n = 0;
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            match l.accept() {
                Ok(_) => n += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        n
    });
    (port, t)
}

#[test]
fn tcp_fast_open_is_held_to_the_network_policy() {
    require_root_and_escape!();
    let net = DummyNet::new();
    for (backend, expected, reached) in [
        ("native", "sent\nsent\n", true),
        // sendto carries its address in a register the filter traps on: the supervisor
        // refuses it (EACCES); sendmsg's is in memory: the kernel's connect hook (EPERM).
        (
            "sandbox",
            "Permission denied\nOperation not permitted\n",
            false,
        ),
    ] {
        let (port, accepted) = counting_listener(net.addr);
        let script = format!(
            "escape tfo {a} {port}; escape tfo-msg {a} {port}",
            a = net.addr
        );
        let out = run_on(backend, &script, add_escape_and_host_net);
        assert_eq!(out, expected, "{backend}");
        let n = accepted.join().unwrap();
        assert_eq!(
            n > 0,
            reached,
            "{backend}: {n} connections reached the host"
        );
    }
}

/// Runs `args` (an escape server mode) in a container of `backend` that shares the host's
/// network; returns the port it printed and the running command.
fn server(
    rt: &Runtime,
    b: &mut Bundle,
    backend: &str,
) -> (
    u16,
    std::process::Child,
    BufReader<std::process::ChildStdout>,
) {
    let id = container(b, backend);
    let mut child = rt
        .cmd()
        .args([
            "--backend",
            backend,
            "run",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{backend}: {line:?}"));
    (port, child, out)
}

/// A server bound to every address, or bound by listen(2) alone (the kernel then binds it to
/// every address itself): under "loopback" only loopback peers get through.
#[test]
fn a_listening_socket_is_reached_only_from_loopback() {
    require_root_and_escape!();
    let net = DummyNet::new();
    let port = 41000 + (std::process::id() % 4000) as u16 * 2;
    for mode in [format!("0.0.0.0 {port}"), "auto 0".to_string()] {
        for (backend, outside) in [("native", true), ("sandbox", false)] {
            let rt = Runtime::new();
            let mut b = Bundle::new(&["sh", "-c", &format!("escape listen {mode}")]);
            add_escape_and_host_net(&mut b);
            let (port, child, mut out) = server(&rt, &mut b, backend);
            let from_outside = TcpStream::connect_timeout(
                &SocketAddr::from((net.addr, port)),
                Duration::from_millis(800),
            );
            assert_eq!(
                from_outside.is_ok(),
                outside,
                "{backend} {mode}: {from_outside:?}"
            );
            drop(from_outside);
            let from_loopback = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            );
            assert!(from_loopback.is_ok(), "{backend} {mode}: {from_loopback:?}");
            drop(from_loopback);
            let mut rest = String::new();
            out.read_to_string(&mut rest).unwrap();
            let _ = child.wait_with_output();
            let expected = if outside {
                format!("accepted {}\naccepted 127.0.0.1\ndone\n", net.addr)
            } else {
                "accepted 127.0.0.1\ndone\n".to_string()
            };
            assert_eq!(rest, expected, "{backend} {mode}");
        }
    }
}

#[test]
fn a_datagram_socket_bound_by_its_first_send_hears_only_loopback() {
    require_root_and_escape!();
    let net = DummyNet::new();
    for (backend, outside) in [("native", true), ("sandbox", false)] {
        let rt = Runtime::new();
        let mut b = Bundle::new(&["sh", "-c", "escape udp-auto 9"]);
        add_escape_and_host_net(&mut b);
        let (port, child, mut out) = server(&rt, &mut b, backend);
        let far = UdpSocket::bind((net.addr, 0)).unwrap();
        far.send_to(b"x", (net.addr, port)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let near = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        near.send_to(b"x", ("127.0.0.1", port)).unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let _ = child.wait_with_output();
        let expected = if outside {
            format!(
                "received from {}\nreceived from 127.0.0.1\ndone\n",
                net.addr
            )
        } else {
            "received from 127.0.0.1\ndone\n".to_string()
        };
        assert_eq!(rest, expected, "{backend}");
    }
}

/// In the host's network namespace the abstract Unix socket names are the host's: a
/// sandboxed container reaches only the names it bound itself, by connect (the supervisor)
/// and by sendmsg (Landlock's abstract-socket scope).
#[test]
fn host_abstract_sockets_are_out_of_reach_in_the_host_network() {
    require_root_and_escape!();
    use std::os::linux::net::SocketAddrExt;
    let name = unique("strata-host-abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let stream = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let dgram = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    dgram.set_nonblocking(true).unwrap();
    stream.set_nonblocking(true).unwrap();
    let script = format!("escape abstract {name}; escape abstract-own {name}-own");
    native_then_sandbox(
        &script,
        &[],
        add_escape_and_host_net,
        "connected\nsendmsg: sent\nconnected\n",
        "Permission denied\nsendmsg: Operation not permitted\nconnected\n",
    );
    // Native's connection and datagram arrived; the sandbox's did not (one of each).
    let mut got = 0;
    while stream.accept().is_ok() {
        got += 1;
    }
    let mut buf = [0u8; 4];
    while dgram.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 2, "the host's sockets heard from the sandbox");
}

/// Without a pid namespace of its own, the container would see the supervisor (a host
/// process that performs its opens) and read its /proc entry, memory included; without an
/// IPC namespace, the host's SysV IPC. The sandbox refuses such bundles; native runs them.
#[test]
fn the_sandbox_needs_pid_and_ipc_namespaces_of_its_own() {
    require_root!();
    let drop_ns = |typ: &'static str| {
        move |b: &mut Bundle| {
            b.edit(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != typ)
            });
        }
    };
    let join_hosts = |b: &mut Bundle| {
        b.edit(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
            ns.push(json!({"type": "pid", "path": "/proc/self/ns/pid"}));
        });
    };
    for (what, edit) in [
        ("pid", Box::new(drop_ns("pid")) as Box<dyn Fn(&mut Bundle)>),
        ("ipc", Box::new(drop_ns("ipc"))),
        ("pid", Box::new(join_hosts)),
    ] {
        assert_eq!(run_on("native", "echo ran", |b| edit(b)), "ran\n");
        let rt = Runtime::new();
        let mut b = Bundle::new(&["true"]);
        edit(&mut b);
        let id = container(&mut b, "sbx-ns");
        let err = rt.fails(&[
            "--backend",
            "sandbox",
            "create",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ]);
        assert!(
            err.contains(&format!("{what} namespace of its own")),
            "{err}"
        );
        assert!(rt.container_dirs().is_empty());
        assert_eq!(cgroup_left(&id), None);
    }
}

/// What /proc gives a process of its own works as under native: /proc/mounts (a link to
/// self/mounts), the namespace links, and writes to its own entry (the built-in policy's
/// /proc/self, which never matched the real /proc/<pid> paths).
#[test]
fn a_process_reaches_its_own_proc_entries_in_the_sandbox() {
    require_root!();
    let script = "head -1 /proc/mounts | cut -d' ' -f2; readlink /proc/self/ns/net | cut -c1-5; \
                  stat -L -c %i /proc/self/ns/net >/dev/null && echo stat-ok; \
                  ls /proc/net/ | grep -c '^tcp$'; \
                  printf renamed > /proc/$$/comm && cat /proc/$$/comm; echo end";
    native_then_sandbox(
        script,
        &[],
        |_| {},
        "/\nnet:[\nstat-ok\n1\nrenamed\nend\n",
        "/\nnet:[\nstat-ok\n1\nrenamed\nend\n",
    );
}

/// sendmsg(2) keeps its destination in memory the filter cannot read, so the supervisor never
/// sees it: a Unix datagram by sendmsg to a path is refused by the kernel's hook (EPERM), the
/// container's own sockets included (the price of a hook that cannot resolve paths); by
/// sendto(2) it is checked against the write set and sent by the supervisor. Abstract names,
/// which live in the container's network namespace, are left to it.
#[test]
fn a_unix_datagram_by_sendmsg_is_held_to_the_write_set() {
    require_root_and_escape!();
    let name = unique("strata-own-abstract");
    let script = format!(
        "escape unix-send /etc/hs; escape unix-send /tmp/own bind; escape unix-send @{name} bind"
    );
    for (backend, expected, reached) in [
        (
            "native",
            "sendto: sent\nsendmsg: sent\nsendto: sent\nsendmsg: sent\nreceived 2\n\
             sendto: sent\nsendmsg: sent\nreceived 2\n",
            2,
        ),
        (
            "sandbox",
            "sendto: Permission denied\nsendmsg: Operation not permitted\n\
             sendto: sent\nsendmsg: Operation not permitted\nreceived 1\n\
             sendto: sent\nsendmsg: sent\nreceived 2\n",
            0,
        ),
    ] {
        // A socket of the host's in a place the policy lets the container read only.
        let mut host = None;
        let out = run_on(backend, &script, |b| {
            with_escape(b);
            let s = std::os::unix::net::UnixDatagram::bind(b.rootfs().join("etc/hs")).unwrap();
            s.set_nonblocking(true).unwrap();
            host = Some(s);
        });
        assert_eq!(out, expected, "{backend}");
        let host = host.unwrap();
        let mut buf = [0u8; 4];
        let mut got = 0;
        while host.recv(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(
            got, reached,
            "{backend}: datagrams the host's socket received"
        );
    }
}

/// The inode version (generation) set through a read-only fd of a file in a read-only path,
/// with ext4's own ioctl and the generic one: ENOTTY from the ioctl filter, and the version
/// read back (FS_IOC_GETVERSION, a read, still works) is the one it had.
#[test]
fn the_inode_version_is_not_set_through_a_read_only_fd() {
    require_root_and_escape!();
    let run = |backend: &str| -> (String, u64, u64) {
        let rt = Runtime::new();
        let mut b = Bundle::new(&["escape", "setversion", "/etc/passwd"]);
        with_escape(&mut b);
        let file = b.rootfs().join("etc/passwd");
        let before = inode_version(&file);
        let id = container(&mut b, backend);
        let out = rt.ok(&[
            "--backend",
            backend,
            "run",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ]);
        (out, before, inode_version(&file))
    };
    let (native, before, after) = run("native");
    if !native.starts_with("EXT4_IOC_SETVERSION: changed") {
        // tmpfs, or ext4 with metadata_csum: the kernel has no version to set.
        eprintln!("SKIPPED: the filesystem of the bundles does not set inode versions: {native}");
        return;
    }
    assert_ne!(before, after, "native");
    let (out, before, after) = run("sandbox");
    assert_eq!(
        out,
        "EXT4_IOC_SETVERSION: Inappropriate ioctl for device\n\
         FS_IOC_SETVERSION: Inappropriate ioctl for device\nversion unchanged\n"
    );
    assert_eq!(before, after, "the version of /etc/passwd changed");
}

/// A file's inode version, as FS_IOC_GETVERSION reads it (through a read-only fd).
fn inode_version(path: &std::path::Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let mut v: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes at most a long into `v`, which is ours.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_7601, &mut v) };
    assert_eq!(
        r,
        0,
        "FS_IOC_GETVERSION: {}",
        std::io::Error::last_os_error()
    );
    v as u64
}

/// network = "any" with a `bind` list: listen(2) on a socket nobody bound would bind it to
/// every address and a port no bind hook sees; refused. A socket bound as the list says
/// listens, and a host client reaches it.
#[test]
fn listen_without_bind_is_held_to_the_bind_list() {
    require_root_and_escape!();
    let port = TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = TempDir::new("sandbox-bind");
    let config = node_with_policy(
        &cfg,
        &format!("{POLICY_SETS}network = \"any\"\nbind = [\"127.0.0.1:{port}\"]\n"),
    );
    let rt = Runtime::with_global(&["--config", &config]);
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        &format!("escape listen auto 0; escape listen 127.0.0.1 {port}"),
    ]);
    add_escape_and_host_net(&mut b);
    let id = container(&mut b, "sbx-listen");
    let mut child = rt
        .cmd()
        .args([
            "--backend",
            "sandbox",
            "run",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..2 {
        out.read_line(&mut lines).unwrap();
    }
    assert_eq!(
        lines,
        format!("listen: Permission denied\nport {port}\n"),
        "the unbound listener"
    );
    let client = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    );
    assert!(client.is_ok(), "{client:?}");
    drop(client);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let _ = child.wait();
    assert_eq!(rest, "accepted 127.0.0.1\ndone\n");
}

/// A tun device is attached to the network namespace of whoever opened /dev/net/tun: the
/// supervisor opens it for the container, in the container's network, not the host's.
#[test]
fn a_tun_device_made_in_the_sandbox_is_not_the_hosts() {
    require_root_and_escape!();
    let name = format!("stt{}", std::process::id() % 1_000_000);
    // Where the host has no tun driver the container cannot make one either: the test then
    // shows only that nothing reached the host.
    let host_tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["escape", "tun", "/tmp/tun", &name]);
    with_escape_and_caps(&mut b, &["CAP_NET_ADMIN"]);
    let node = std::ffi::CString::new(b.rootfs().join("tmp/tun").to_str().unwrap()).unwrap();
    // SAFETY: mknod of a char device node (/dev/net/tun's, which the default device rules
    // allow) at a path of ours.
    let r = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) };
    assert_eq!(r, 0);
    let id = container(&mut b, "sbx-tun");
    let mut child = rt
        .cmd()
        .args([
            "--backend",
            "sandbox",
            "run",
            "-b",
            b.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // While the container holds the device.
    let on_host = std::path::Path::new("/sys/class/net").join(&name).exists();
    std::fs::write(b.rootfs().join("tmp/release"), "").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let _ = child.wait();
    assert!(
        !on_host,
        "the container's tun device {name} is in the host's network"
    );
    if host_tun {
        assert_eq!(line + &rest, "attached\nin its own network: yes\n");
    } else {
        eprintln!("NOTE: no tun driver on this host; only checked that nothing reached it");
    }
}

/// SO_PEERCRED and SCM_CREDENTIALS tell a Unix server who connected or sent: for a connect
/// and a sendto the supervisor performs, the caller (an exec as nobody), not the
/// supervisor's root.
#[test]
fn a_supervised_unix_connect_and_send_carry_the_callers_ids() {
    require_root_and_escape!();
    let rt = Runtime::new();
    // The init lives on after the server: its end would kill the exec (a pid namespace's).
    let mut b = Bundle::new(&["sh", "-c", "escape peercred-serve /tmp/s; sleep 1000"]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    c.wait_for("ready\n");
    let out = rt.ok(&[
        "exec",
        "--user",
        "65534:65534",
        &c.id,
        "escape",
        "peercred-connect",
        "/tmp/s",
    ]);
    assert_eq!(out, "connected\nsent\n");
    c.wait_for("datagram sender");
    assert_eq!(
        c.output(),
        "ready\nstream peer uid 65534 gid 65534\ndatagram sender uid 65534 gid 65534\n"
    );
}

/// The guard of supervisor `sup`: its child named strata-guard.
fn guard_of(sup: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let ppid: i32 = proc_status(pid, "PPid:")?.parse().ok()?;
        (ppid == sup && proc_status(pid, "Name:")? == "strata-guard").then_some(pid)
    })
}

/// A pty's slave opened without O_NOCTTY becomes the controlling terminal of an opener that
/// is a session leader without one, as the supervisor is: it opens such a pty O_NOCTTY, and
/// neither it nor its guard is ended by a ^C, ^\ or hang-up on it.
#[test]
fn a_terminal_opened_in_the_sandbox_does_not_reach_the_supervisor() {
    require_root_and_escape!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    let sup = supervisor_pid(&rt, &c.id);
    let guard = guard_of(sup).expect("the supervisor's guard");
    for key in ["c", "q", "h"] {
        let out = rt.ok(&["exec", &c.id, "escape", "pty", key]);
        assert_eq!(out, format!("typed {key}\n"));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(sup), "the supervisor is gone");
    assert!(alive(guard), "the guard is gone");
    assert_eq!(rt.status(&c.id), "running");
    assert_eq!(
        rt.ok(&["exec", &c.id, "sh", "-c", "echo x > /etc/x || echo refused"]),
        "refused\n"
    );
}

/// A FIFO's open waits on a thread of the supervisor's; a caller that gives up (SIGALRM
/// cuts each open short) must not leave it waiting: the threads stay bounded, go away, and
/// other calls are served.
#[test]
fn fifo_opens_given_up_leave_no_supervisor_threads_behind() {
    require_root_and_escape!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "mkfifo /tmp/f && escape fifo-leak /tmp/f 400 && sleep 1000",
    ]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    let sup = supervisor_pid(&rt, &c.id);
    c.wait_for("cut short");
    let threads = || -> usize {
        proc_status(sup, "Threads:")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    };
    let now = threads();
    assert!(now <= 300, "the supervisor has {now} threads");
    // The main thread and the serving threads (one a CPU at most; see `serving`).
    let serving = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    eventually("the given-up waits end", || threads() <= 2 + serving);
    assert_eq!(rt.ok(&["exec", &c.id, "cat", "/etc/group"]), "root:x:0:\n");
}

/// `exec` of `args` in container `id` completes within `limit` (else it is killed and the
/// test fails); returns its stdout.
fn exec_within(rt: &Runtime, id: &str, limit: Duration, args: &[&str]) -> String {
    let dir = TempDir::new("exec-out");
    let log = dir.path().join("stdout");
    let mut child = rt
        .cmd()
        .args(["exec", id])
        .args(args)
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exec {args:?}: {st}");
            return std::fs::read_to_string(&log).unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec {args:?} did not complete in {limit:?}: the supervisor is stalled");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects to a Unix listener whose backlog is full wait for the listener; other trapped
/// calls (an exec's execve and opens) do not wait with them.
#[test]
fn a_connect_to_a_full_unix_backlog_does_not_stall_other_calls() {
    require_root_and_escape!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["escape", "unix-backlog", "/tmp/ls", "3"]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    c.wait_for("connecting");
    let out = exec_within(&rt, &c.id, Duration::from_secs(5), &["cat", "/etc/group"]);
    assert_eq!(out, "root:x:0:\n");
}

/// An open for writing of a file under a read lease its holder never gives up waits for
/// lease-break-time (45 s by default); other trapped calls do not wait with it.
#[test]
fn an_open_that_breaks_a_lease_does_not_stall_other_calls() {
    require_root_and_escape!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh", "-c", "touch /tmp/l && escape lease /tmp/l"]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    c.wait_for("opening");
    let out = exec_within(&rt, &c.id, Duration::from_secs(5), &["cat", "/etc/group"]);
    assert_eq!(out, "root:x:0:\n");
}

/// The supervisor opens /proc/<pid>/mem for an exec'd process, out of reach of the Landlock
/// domain that would keep it from the init: another process's memory is refused, its own
/// is not.
#[test]
fn an_exec_does_not_read_another_processs_memory() {
    require_root_and_escape!();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    with_escape(&mut b);
    let c = Detached::start(&rt, &mut b, "sandbox", &[]);
    assert_eq!(
        rt.ok(&["exec", &c.id, "escape", "mem", "1"]),
        "open: Permission denied\n"
    );
    assert_eq!(rt.ok(&["exec", &c.id, "escape", "mem", "self"]), "read\n");
}

/// What the review found broken for ordinary programs works as under native: `mkdir -p`
/// through directories that exist (/ first; /etc, read-only), mkdir of an existing name in a
/// read-only place (EEXIST, not EACCES), a program re-executing itself through
/// /proc/self/exe, `ip` (a netlink socket it binds), and /dev/tty as the caller's terminal.
#[test]
fn ordinary_calls_the_review_found_broken_work() {
    require_root_and_escape!();
    let script = "mkdir -p /tmp/a/b && echo made; mkdir -p /etc && echo exists; \
                  mkdir /etc 2>&1; escape self-exec; ip addr show lo | grep -c LOOPBACK; \
                  escape tty";
    let expected = "made\nexists\nmkdir: can't create directory '/etc': File exists\n\
                    re-executed\n1\nwithout a terminal: No such device or address\n\
                    with a terminal: its pty\n";
    native_then_sandbox(
        script,
        &[],
        |b| {
            with_escape(b);
            std::os::unix::fs::symlink("busybox", b.rootfs().join("bin/ip")).unwrap();
        },
        expected,
        expected,
    );
}

/// The umask is the caller's even while the supervisor serves other callers on other
/// threads at once: a process with umask 077 creating files while another, umask 000, keeps
/// two serving threads busy gets every file without group or other access (its umask, not
/// the other's). Native shows the same program holding, so the check is the supervisor's.
#[test]
fn a_callers_umask_does_not_leak_across_serving_threads() {
    require_root_and_escape!();
    let script = "mkdir -p /tmp/r && escape umask-race /tmp/r 3000";
    assert_eq!(run_on("native", script, with_escape), "HELD\n", "native");
    assert_eq!(run_on("sandbox", script, with_escape), "HELD\n", "sandbox");
}
