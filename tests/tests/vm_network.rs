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
    Some(VmRt { rt, _dir: dir })
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
        "1400\n10.77.0.2/24\nfd77::2/64\n10.99.0.0/16 via 10.77.0.1\nhello-from-b\n"
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
