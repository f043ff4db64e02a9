//! The vm backend takes over the network namespace a bundle names (as CNI, netavark and Docker
//! make them): the guest gets each interface's MAC, MTU, addresses and routes over a tap and
//! tc redirects, a container in the VM reaches a TCP listener on the other side of the
//! namespace's veth, and after delete nothing of it is left in the namespace. Also a
//! namespace whose interface another tool already redirects is refused, and theirs kept.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use strata_integration::*;

/// Two network namespaces joined by a veth pair: "a" is the container's (10.77.0.2/24 and
/// fd77::2/64, MTU 1400, a route to 10.99.0.0/16 via the peer), "b" the peer's
/// (10.77.0.1/24) with a TCP listener on 8080 that says hello once. Removed when dropped.
struct Pair {
    a: String,
    b: String,
    listener: Option<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tc_qdiscs(ns: &str) -> String {
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "show", "dev", "veth-a"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let a = format!("strata-test-{tag}a-{}", std::process::id());
        let b = format!("strata-test-{tag}b-{}", std::process::id());
        let pair = Pair {
            a: a.clone(),
            b: b.clone(),
            listener: None,
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", "veth-a", "netns", &a, "type", "veth", "peer", "name", "veth-b",
            "netns", &b,
        ]);
        ip(&["-n", &a, "link", "set", "veth-a", "mtu", "1400", "up"]);
        ip(&["-n", &b, "link", "set", "veth-b", "mtu", "1400", "up"]);
        ip(&["-n", &a, "addr", "add", "10.77.0.2/24", "dev", "veth-a"]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            "fd77::2/64",
            "dev",
            "veth-a",
            "nodad",
        ]);
        ip(&["-n", &a, "route", "add", "10.99.0.0/16", "via", "10.77.0.1"]);
        // Two default routes, told apart by their metrics.
        ip(&[
            "-n",
            &a,
            "route",
            "add",
            "default",
            "via",
            "10.77.0.1",
            "metric",
            "100",
        ]);
        ip(&[
            "-n",
            &a,
            "route",
            "add",
            "default",
            "via",
            "10.77.0.3",
            "metric",
            "200",
        ]);
        ip(&["-n", &b, "addr", "add", "10.77.0.1/24", "dev", "veth-b"]);
        pair
    }

    fn listen(&mut self) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.b,
                "busybox",
                "nc",
                "-l",
                "-p",
                "8080",
                "-e",
                "echo",
                "hello-from-b",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.listener = Some(child);
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.a)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn network_bundle(pair: &Pair, script: &str) -> Bundle {
    let mut b = Bundle::new(&["sh", "-c", script]);
    let path = pair.path();
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "network", "path": path}));
    });
    b
}

struct VmRt {
    rt: Runtime,
    config: PathBuf,
    _dir: TempDir,
}

fn vm_runtime() -> Option<VmRt> {
    if !is_root() {
        eprintln!("SKIPPED: the vm backend tests need root");
        return None;
    }
    let dir = TempDir::new("vmnet");
    let config = vm_node_config(dir.path())?;
    let rt = Runtime::with_global(&["--config", config.to_str().unwrap(), "--backend", "vm"]);
    Some(VmRt {
        rt,
        config,
        _dir: dir,
    })
}

fn run_dir(rt: &Runtime, id: &str) -> PathBuf {
    strata::backend::vm::run_dir_for(&rt.root.path().join(id))
}

#[test]
fn a_vm_container_gets_its_network_namespaces_interfaces_and_reaches_the_peer() {
    let Some(v) = vm_runtime() else { return };
    let mut pair = Pair::new("n");
    pair.listen();
    let mut b = network_bundle(
        &pair,
        "cat /sys/class/net/eth0/mtu; \
         ip -o -4 addr show dev eth0 | grep -o '10.77.0.2/24'; \
         ip -o -6 addr show dev eth0 scope global | grep -o 'fd77::2/64'; \
         ip route | grep -o '10.99.0.0/16 via 10.77.0.1'; \
         ip route | tr -s ' ' | grep -o 'default via 10.77.0.[13] dev eth0 metric [12]00'; \
         tries=0; until nc 10.77.0.1 8080 </dev/null; do \
           tries=$((tries+1)); [ $tries -ge 20 ] && exit 9; sleep 0.5; done",
    );
    let id = container(&mut b, "vmnet");
    let run = run_dir(&v.rt, &id);
    let started = Instant::now();
    let out =
        v.rt.run_within(180, &["run", "-b", b.path().to_str().unwrap(), &id]);
    eprintln!("vm run with a network: {:?}", started.elapsed());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "1400\n10.77.0.2/24\nfd77::2/64\n10.99.0.0/16 via 10.77.0.1\n\
         default via 10.77.0.1 dev eth0 metric 100\ndefault via 10.77.0.3 dev eth0 metric 200\n\
         hello-from-b\n"
    );
    // The namespace is as it was: no tap, no redirect.
    assert!(!links(&pair.a).contains("strata-tap"), "{}", links(&pair.a));
    assert!(
        !tc_qdiscs(&pair.a).contains("ingress"),
        "{}",
        tc_qdiscs(&pair.a)
    );
    assert!(!v.rt.root.path().join(&id).exists());
    assert!(!run.exists());
}

#[test]
fn a_detached_vm_container_holds_its_redirects_until_delete() {
    let Some(v) = vm_runtime() else { return };
    let pair = Pair::new("d");
    let mut b = network_bundle(&pair, "sleep 300");
    let id = container(&mut b, "vmnetd");
    v.rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        tc_qdiscs(&pair.a).contains("ingress"),
        "{}",
        tc_qdiscs(&pair.a)
    );
    assert!(links(&pair.a).contains("strata-tap0"), "{}", links(&pair.a));
    v.rt.ok(&["start", &id]);
    v.rt.ok(&["delete", "--force", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while links(&pair.a).contains("strata-tap") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!links(&pair.a).contains("strata-tap"), "{}", links(&pair.a));
    assert!(
        !tc_qdiscs(&pair.a).contains("ingress"),
        "{}",
        tc_qdiscs(&pair.a)
    );
    assert!(!run_dir(&v.rt, &id).exists());
}

#[test]
fn an_interface_someone_else_redirects_is_refused_and_theirs_kept() {
    let Some(v) = vm_runtime() else { return };
    let pair = Pair::new("r");
    let out = Command::new("tc")
        .args(["-n", &pair.a, "qdisc", "add", "dev", "veth-a", "ingress"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut b = network_bundle(&pair, "true");
    let id = container(&mut b, "vmnetr");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("veth-a") && err.contains("ingress qdisc"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        tc_qdiscs(&pair.a).contains("ingress"),
        "their qdisc was removed"
    );
    assert!(!links(&pair.a).contains("strata-tap"), "{}", links(&pair.a));
    assert!(!v.rt.root.path().join(&id).exists());
    assert!(!run_dir(&v.rt, &id).exists());
}

/// A path that names another namespace by the time of `delete` (a symlink re-pointed, a
/// namespace deleted and made again under the same name) is not where the redirects are
/// removed: the victim's own ingress qdisc stays.
#[test]
fn delete_removes_redirects_only_in_the_namespace_it_made_them_in() {
    let Some(v) = vm_runtime() else { return };
    let pair = Pair::new("s");
    let victim = Pair::new("v");
    // The victim's interface has the same index as the container's, and a qdisc of its own.
    let out = Command::new("tc")
        .args(["-n", &victim.a, "qdisc", "add", "dev", "veth-a", "ingress"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = TempDir::new("nslink");
    let link = dir.path().join("ns");
    std::os::unix::fs::symlink(pair.path(), &link).unwrap();
    let mut b = Bundle::new(&["sleep", "300"]);
    let path = link.to_str().unwrap().to_string();
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "network", "path": path}));
    });
    let id = container(&mut b, "vmnets");
    v.rt.ok(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(tc_qdiscs(&pair.a).contains("ingress"));
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(victim.path(), &link).unwrap();
    v.rt.ok(&["delete", "--force", &id]);
    assert!(
        tc_qdiscs(&victim.a).contains("ingress"),
        "the victim's qdisc was removed"
    );
    assert!(!run_dir(&v.rt, &id).exists());
}

/// The host's network namespace is refused by any path, also when strata itself runs in
/// another namespace (then only the initial namespace tells it: init's, or kthreadd's where
/// init's cannot be read, as here).
#[test]
fn the_hosts_namespace_is_refused_from_another_namespace_too() {
    let Some(v) = vm_runtime() else { return };
    let pair = Pair::new("h");
    let dir = TempDir::new("hostns");
    let file = dir.path().join("net");
    std::fs::write(&file, "").unwrap();
    let status = Command::new("mount")
        .args(["--bind", "/proc/self/ns/net"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(file.clone());
    let mut b = Bundle::new(&["true"]);
    let path = file.to_str().unwrap().to_string();
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "network", "path": path}));
    });
    let id = container(&mut b, "vmneth");
    let out = output_via_files(
        Command::new("ip")
            .args(["netns", "exec", &pair.a])
            .arg(strata_bin())
            .arg("--root")
            .arg(v.rt.root.path())
            .arg("--config")
            .arg(&v.config)
            .args(["--backend", "vm", "run", "-b"])
            .arg(b.path())
            .arg(&id)
            .stdin(std::process::Stdio::null()),
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("host's own network namespace"), "{err}");
    let host_links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!host_links.contains("strata-tap"), "{host_links}");
    assert!(!v.rt.root.path().join(&id).exists());
    assert!(!run_dir(&v.rt, &id).exists());
}

/// What a VM cannot take over is refused before anything changes: a namespace another VM
/// already uses, interfaces sharing a MAC, more interfaces than a VM has slots.
#[test]
fn namespaces_a_vm_cannot_take_over_are_refused_and_left_as_they_were() {
    let Some(v) = vm_runtime() else { return };
    let pair = Pair::new("m");
    let mut first = network_bundle(&pair, "sleep 300");
    let id1 = container(&mut first, "vmnetm1");
    v.rt.ok(&["create", "-b", first.path().to_str().unwrap(), &id1]);
    let mut second = network_bundle(&pair, "true");
    let id2 = container(&mut second, "vmnetm2");
    let err =
        v.rt.fails(&["run", "-b", second.path().to_str().unwrap(), &id2]);
    assert!(err.contains("another VM already uses it"), "{err}");
    assert!(
        tc_qdiscs(&pair.a).contains("ingress"),
        "the first VM's redirect went"
    );
    assert!(!v.rt.root.path().join(&id2).exists());
    v.rt.ok(&["delete", "--force", &id1]);

    // Two interfaces with one MAC.
    let dup = Pair::new("u");
    let mac = "02:53:54:00:aa:01";
    ip(&["-n", &dup.a, "link", "set", "veth-a", "address", mac]);
    ip(&[
        "-n", &dup.a, "link", "add", "veth-x", "type", "veth", "peer", "name", "veth-y",
    ]);
    ip(&["-n", &dup.a, "link", "set", "veth-x", "address", mac]);
    let mut b = network_bundle(&dup, "true");
    let id = container(&mut b, "vmnetu");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("same MAC"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!tc_qdiscs(&dup.a).contains("ingress"));
    assert!(!links(&dup.a).contains("strata-tap"));

    // Seven interfaces.
    let many = Pair::new("w");
    for i in 0..6 {
        ip(&[
            "-n",
            &many.a,
            "link",
            "add",
            &format!("veth-m{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("veth-p{i}"),
        ]);
    }
    let mut b = network_bundle(&many, "true");
    let id = container(&mut b, "vmnetw");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("at most 6"), "{err}");
    assert!(!links(&many.a).contains("strata-tap"));
    assert!(!v.rt.root.path().join(&id).exists());
    assert!(!run_dir(&v.rt, &id).exists());
}

/// A bundle's prestart hook makes the network, as Docker's does: it runs on the host with the
/// VM's monitor as the state's pid, in the container's host-side network namespace (a new
/// one), moves a veth end there and gives it an address; the VM then takes that interface
/// over and the container reaches a listener on the host side. createRuntime runs too, with
/// status "creating"; the host side is gone with the container.
#[test]
fn prestart_hooks_make_the_network_the_vm_takes_over() {
    let Some(v) = vm_runtime() else { return };
    let dir = TempDir::new("vmhooks");
    let tag = std::process::id() % 250;
    let host_if = format!("vh-{}", std::process::id());
    let (host_ip, guest_ip) = (format!("10.79.{tag}.1"), format!("10.79.{tag}.2"));
    let hook = dir.path().join("netsetup");
    let seen = dir.path().join("seen");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\nstate=$(cat)\n\
             pid=$(echo \"$state\" | tr -d ' \\n' | sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/')\n\
             echo \"$1 $pid $(echo \"$state\" | tr -d ' \\n' | sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/')\" >> {seen}\n\
             [ \"$1\" = prestart ] || exit 0\n\
             ip link add {host_if} type veth peer name eth0 netns /proc/$pid/ns/net\n\
             ip addr add {host_ip}/24 dev {host_if}\nip link set {host_if} up\n\
             nsenter --net=/proc/$pid/ns/net ip addr add {guest_ip}/24 dev eth0\n\
             nsenter --net=/proc/$pid/ns/net ip link set eth0 up\n",
            seen = seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        std::io::Write::write_all(&mut conn, b"hello-from-the-host\n").unwrap();
        peer.ip().to_string()
    });
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        &format!(
            "ip -o -4 addr show dev eth0 | grep -o '{guest_ip}/24'; \
             tries=0; until nc {host_ip} {port} </dev/null; do \
             tries=$((tries+1)); [ $tries -ge 20 ] && exit 9; sleep 0.5; done"
        ),
    ]);
    b.edit(|c| {
        c["hooks"] = json!({
            "prestart": [{"path": hook, "args": ["netsetup", "prestart"]}],
            "createRuntime": [{"path": hook, "args": ["netsetup", "createRuntime"]}]
        })
    });
    let id = container(&mut b, "vmhooks");
    let run = run_dir(&v.rt, &id);
    let pid_file = dir.path().join("pid");
    v.rt.ok(&[
        "create",
        "-b",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("prestart {pid} created\ncreateRuntime {pid} creating\n"),
        "the hooks ran with the container's PID"
    );
    let out = v.rt.run_within(180, &["start", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.join().unwrap(), guest_ip, "the container's address");
    v.rt.ok(&["delete", "--force", &id]);
    // The host-side namespace went with the monitor, and the veth pair with it (the kernel
    // tears a namespace down in the background, a moment after its last process).
    eventually_for("the hook's veth to go", Duration::from_secs(20), || {
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        !String::from_utf8_lossy(&links.stdout).contains(&host_if)
    });
    assert!(!run.exists());
}
