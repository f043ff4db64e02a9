//! The vm backend for real: `strata --backend vm` boots the guest kernel with the agent in a VM
//! (QEMU under TCG on hosts whose KVM cannot boot Linux, such as ours) and runs the busybox
//! bundle in it — output, exit codes, exec, terminal, kill, delete with nothing left behind —
//! and refuses what a VM cannot honour without leaving anything either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use strata_integration::clients::on_pty;
use strata_integration::*;

struct VmRuntime {
    rt: Runtime,
    _dir: TempDir,
    config: PathBuf,
}

fn vm_runtime() -> Option<VmRuntime> {
    if !is_root() {
        eprintln!("SKIPPED: the vm backend tests need root");
        return None;
    }
    let dir = TempDir::new("vmcfg");
    let config = vm_node_config(dir.path())?;
    let rt = Runtime::with_global(&["--config", config.to_str().unwrap(), "--backend", "vm"]);
    Some(VmRuntime {
        rt,
        _dir: dir,
        config,
    })
}

/// The short run directory of a container (sockets, console log) — see strata::vm.
fn run_dir(rt: &Runtime, id: &str) -> PathBuf {
    strata::backend::vm::run_dir_for(&rt.root.path().join(id))
}

/// Nothing of container `id` remains: state, VM run directory, VM processes, cgroup.
fn assert_nothing_left(rt: &Runtime, id: &str, run: &Path) {
    assert!(!rt.root.path().join(id).exists(), "state dir of {id} left");
    assert!(!run.exists(), "VM run dir {} left", run.display());
    assert_eq!(cgroup_left(id), None, "cgroup of {id} left");
    let mentioning: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(run.to_str().unwrap()))
        .collect();
    assert!(mentioning.is_empty(), "VM processes left: {mentioning:?}");
}

#[test]
fn run_shows_guest_kernel_output_and_exit_code() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "uname -r; ls /sys/class/net | tr '\\n' ' '; echo; cat /dev/shm/hook; \
         echo to-stderr >&2; exit 7",
    ]);
    // A startContainer hook from the rootfs runs in the container, inside the guest.
    b.edit(|c| {
        c["hooks"] = json!({"startContainer": [{
            "path": "/bin/busybox",
            "args": ["busybox", "sh", "-c", "cat >/dev/null; echo started-in-the-guest > /dev/shm/hook"]
        }]})
    });
    let id = container(&mut b, "vmrun");
    let run = run_dir(&v.rt, &id);
    let out = v.rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let text = stdout(&out);
    let mut lines = text.lines();
    let release = lines.next().unwrap_or_default().trim().to_string();
    // A network namespace of its own in the guest: loopback only (no sit0 or other tunnels).
    assert_eq!(lines.next(), Some("lo "), "{text}");
    assert_eq!(lines.next(), Some("started-in-the-guest"), "{text}");
    assert!(
        is_guest_kernel(&release),
        "uname -r shows the host kernel, not the guest's: {release:?}"
    );
    assert_eq!(stderr(&out).trim(), "to-stderr");
    assert_nothing_left(&v.rt, &id, &run);
}

#[test]
fn detached_lifecycle_exec_kill_delete() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "vmlife");
    let run = run_dir(&v.rt, &id);
    let pid_file = b.path().join("init.pid");
    v.rt.ok(&[
        "create",
        "-b",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let state = v.rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["annotations"]["dev.strata.backend"], "vm");
    assert_eq!(
        state["annotations"]["dev.strata.vm.driver"], "qemu",
        "{state}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        state["pid"].as_i64(),
        Some(pid as i64),
        "--pid-file names the VM's monitor"
    );
    v.rt.ok(&["start", &id]);
    assert_eq!(v.rt.status(&id), "running");

    let out = v.rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo exec in $(uname -r); cat /proc/1/cmdline; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = stdout(&out);
    let release = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("exec in "))
        .unwrap_or_default();
    assert!(is_guest_kernel(release), "{text:?}");
    assert!(
        text.contains("sleep\u{0}1000"),
        "exec sees the container's init: {text:?}"
    );

    // A detached exec: its PID (the relay) exits with the process.
    let exec_pid = b.path().join("exec.pid");
    v.rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        exec_pid.to_str().unwrap(),
        &id,
        "sleep",
        "0.3",
    ]);
    let relay: i32 = std::fs::read_to_string(&exec_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(relay > 0);
    eventually("the detached exec's relay exits", || {
        !Path::new(&format!("/proc/{relay}")).exists()
            || std::fs::read_to_string(format!("/proc/{relay}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });

    // Stats come from the guest's cgroup.
    let stats: Value = serde_json::from_str(&v.rt.ok(&["events", "--stats", &id])).unwrap();
    assert!(
        stats["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );

    // pause freezes the whole VM (its host cgroup); resume thaws it.
    v.rt.ok(&["pause", &id]);
    assert_eq!(v.rt.status(&id), "paused");
    v.rt.ok(&["resume", &id]);
    assert_eq!(v.rt.status(&id), "running");

    // SIGKILL of the container ends the VM: the monitor exits and the state says stopped.
    v.rt.ok(&["kill", &id, "KILL"]);
    eventually("the container stops", || v.rt.status(&id) == "stopped");
    let err = v.rt.fails(&["kill", &id, "TERM"]);
    assert!(err.contains("container not running"), "{err}");
    v.rt.ok(&["delete", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

#[test]
fn delete_force_of_a_running_vm_leaves_nothing() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "vmforce");
    let run = run_dir(&v.rt, &id);
    v.rt.ok(&["run", "--detach", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(v.rt.status(&id), "running");
    let err = v.rt.fails(&["delete", &id]);
    assert!(err.contains("running"), "{err}");
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

#[test]
fn terminal_through_a_pty() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sh", "-c", "tty; echo on-a-terminal; exit 3"]);
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let id = container(&mut b, "vmtty");
    let run = run_dir(&v.rt, &id);
    let cmd = format!(
        "{} --root {} --config {} --backend vm run -b {} {id}",
        strata_bin().display(),
        v.rt.root.path().display(),
        v.config.display(),
        b.path().display()
    );
    let (shown, code) = on_pty(&cmd, Duration::from_secs(120));
    assert_eq!(code, 3, "{shown}");
    assert!(
        shown.contains("/dev/pts/0"),
        "the guest process has a terminal: {shown:?}"
    );
    assert!(shown.contains("on-a-terminal"), "{shown:?}");
    assert_nothing_left(&v.rt, &id, &run);
}

#[test]
fn what_a_vm_cannot_honour_is_refused_and_leaves_nothing() {
    let Some(v) = vm_runtime() else { return };
    // A host network namespace to join.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "network", "path": "/proc/1/ns/net"}))
    });
    let id = container(&mut b, "vmnetns");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("linux.namespaces") && err.contains("/proc/1/ns/net"),
        "{err}"
    );
    assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));

    // Bind mounts of a FIFO (only directories and regular files cross), of a source that
    // does not exist, and of a host kernel file.
    let fifo_dir = TempDir::new("vmbind-fifo");
    let fifo = fifo_dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // The host kernel's files are not volumes either.
    for source in [
        fifo.clone(),
        fifo_dir.path().join("missing"),
        PathBuf::from("/proc/sys/kernel/domainname"),
    ] {
        let mut b = Bundle::new(&["true"]);
        b.edit(|c| {
            c["mounts"].as_array_mut().unwrap().push(
                json!({"destination": "/data", "type": "bind", "source": source, "options": ["rbind"]}),
            )
        });
        let id = container(&mut b, "vmbind");
        let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
        assert!(err.contains(source.to_str().unwrap()), "{err}");
        assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));
    }

    // The host's network (no network namespace at all): a VM cannot share it.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network")
    });
    let id = container(&mut b, "vmhostnet");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("host's network"), "{err}");
    assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));

    // Host fds to pass on.
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "vmfds");
    let err = v.rt.fails(&[
        "run",
        "--preserve-fds",
        "1",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(err.contains("--preserve-fds"), "{err}");
    assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));

    // An annotation value out of range.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["annotations"] = json!({"dev.strata.vm.memory_mib": "12"}));
    let id = container(&mut b, "vmmem");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("dev.strata.vm.memory_mib"), "{err}");
    assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));
}

#[test]
fn a_guest_that_cannot_boot_is_an_error_and_leaves_nothing() {
    let Some(v) = vm_runtime() else { return };
    let dir = TempDir::new("badkernel");
    let bogus = dir.path().join("vmlinux");
    std::fs::write(&bogus, b"not a kernel").unwrap();
    let config = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&v.config).unwrap();
    let kernel_line = text.lines().find(|l| l.starts_with("kernel")).unwrap();
    std::fs::write(
        &config,
        text.replace(kernel_line, &format!("kernel = \"{}\"", bogus.display())),
    )
    .unwrap();
    let rt = Runtime::with_global(&["--config", config.to_str().unwrap(), "--backend", "vm"]);
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "vmbadk");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("the VM exited while booting"), "{err}");
    assert_nothing_left(&rt, &id, &run_dir(&rt, &id));

    // No kernel configured at all.
    std::fs::write(&config, "[vm]\n").unwrap();
    let mut b = Bundle::new(&["true"]);
    let id = container(&mut b, "vmnok");
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("no guest kernel"), "{err}");
    assert_nothing_left(&rt, &id, &run_dir(&rt, &id));

    // An unknown driver is a node-config error.
    std::fs::write(&config, "[vm]\ndriver = \"bochs\"\n").unwrap();
    let err = rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("vm.driver") && err.contains("bochs"), "{err}");
}

#[test]
fn check_names_this_hosts_kvm_kind() {
    let out = std::process::Command::new(strata_bin())
        .args(["--config", strata_integration::NO_NODE_CONFIG, "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let kvm = text
        .lines()
        .find(|l| l.starts_with("kvm"))
        .expect("a kvm line");
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert!(
            kvm.contains("kvm_pvm") && kvm.contains("cannot boot"),
            "{kvm}"
        );
    }
    for item in ["cgroups", "seccomp", "landlock", "guest kernel"] {
        assert!(
            text.lines().any(|l| l.starts_with(item)),
            "{item} missing: {text}"
        );
    }
}

/// Whether this host's KVM can boot a Linux guest (VMX or SVM, not nested PVM).
fn kvm_boots_linux() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    hw && !Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn the_strata_vmm_driver_boots_where_kvm_can_and_fails_cleanly_where_it_cannot() {
    let Some(v) = vm_runtime() else { return };
    vmm_bin();
    let dir = TempDir::new("vmmdriver");
    let config = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&v.config).unwrap();
    std::fs::write(&config, format!("{text}driver = \"strata\"\n")).unwrap();
    let rt = Runtime::with_global(&["--config", config.to_str().unwrap(), "--backend", "vm"]);
    let mut b = Bundle::new(&["sh", "-c", "uname -r"]);
    let id = container(&mut b, "vmmdrv");
    let run = run_dir(&rt, &id);
    let out = rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    if kvm_boots_linux() {
        assert!(out.status.success(), "{out:?}");
        assert!(is_guest_kernel(stdout(&out).trim()), "{out:?}");
    } else {
        // Here (nested PVM) KVM cannot run a Linux guest: our VMM starts it, KVM gives up
        // inside the kernel's early code, and the create fails with the VMM's own words.
        let err = stderr(&out);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            err.contains("the VM exited while booting") && err.contains("strata-vmm"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_nothing_left(&rt, &id, &run);
}

#[test]
fn exec_with_a_terminal() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = container(&mut b, "vmexect");
    let run = run_dir(&v.rt, &id);
    v.rt.ok(&["run", "--detach", "-b", b.path().to_str().unwrap(), &id]);
    let cmd = format!(
        "{} --root {} --config {} exec -t {id} sh -c 'tty; exit 9'",
        strata_bin().display(),
        v.rt.root.path().display(),
        v.config.display(),
    );
    let (shown, code) = on_pty(&cmd, Duration::from_secs(120));
    assert_eq!(code, 9, "{shown}");
    assert!(
        shown.contains("/dev/pts/"),
        "the exec'd process has a terminal: {shown:?}"
    );
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

/// The vsock program (tests/programs/vsock.c) in the bundle's rootfs as /bin/vsock, or None
/// (said) where it cannot be built.
fn with_vsock_program(b: &Bundle) -> Option<()> {
    let bin = static_program("vsock")?;
    std::fs::copy(bin, b.rootfs().join("bin/vsock")).unwrap();
    Some(())
}

const VSOCK_REFUSED: &str = "socket: EAFNOSUPPORT\nsocket (high bits): EAFNOSUPPORT\n";

#[test]
fn a_container_and_its_execs_cannot_open_vsock() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sh", "-c", "vsock socket > /init.out; exec sleep 1000"]);
    let Some(()) = with_vsock_program(&b) else {
        return;
    };
    // A profile of the bundle's own that allows socket() unconditionally (SCMP_ACT_LOG): in
    // one filter with a conditional rule on socket(), libseccomp would let it win.
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_LOG"}]})
    });
    let id = container(&mut b, "vmnovsock");
    let run = run_dir(&v.rt, &id);
    v.rt.ok(&["run", "--detach", "-b", b.path().to_str().unwrap(), &id]);
    let init_out = b.rootfs().join("init.out");
    eventually("the init has tried vsock", || {
        std::fs::read_to_string(&init_out).is_ok_and(|t| t.lines().count() == 2)
    });
    assert_eq!(std::fs::read_to_string(&init_out).unwrap(), VSOCK_REFUSED);
    let out = v.rt.ok(&["exec", &id, "vsock", "socket"]);
    assert_eq!(out, VSOCK_REFUSED, "under strata exec");
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

#[test]
fn a_container_allowed_vsock_cannot_reach_the_agent() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["true"]);
    let Some(()) = with_vsock_program(&b) else {
        return;
    };
    let id = container(&mut b, "vmvsock");
    let version = strata_agent_protocol::VERSION;
    // The agent's own port, reached through the loopback CID, the guest's own CID and the
    // host's; each attempt asks for an exec into this very container and for a new one.
    let script = [1, 3, 2]
        .map(|cid| format!("vsock agent {cid} 1024 {id} {version}"))
        .join("; ");
    // And the host's ready port, where an impostor would announce itself as the agent.
    let script = format!("vsock socket; {script}; vsock ready 1025 {version}");
    b.edit(|c| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["annotations"] = json!({"dev.strata.vm.vsock": "allow"});
    });
    let run = run_dir(&v.rt, &id);
    let out = v.rt.run(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("socket: ok\n"),
        "the annotation allows vsock: {text}"
    );
    for cid in [1, 3, 2] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("CID {cid} ")))
            .collect();
        assert!(!lines.is_empty(), "no attempt on CID {cid}: {text}");
        assert!(
            lines.iter().all(|l| !l.contains("answered")),
            "the agent answered a request from CID {cid}: {text}"
        );
        for marker in [format!("pwned-exec-{cid}"), format!("pwned-create-{cid}")] {
            assert!(
                !b.rootfs().join(&marker).exists(),
                "/{marker} was written: the agent ran a process for the container ({text})"
            );
        }
    }
    let ready = text
        .lines()
        .find(|l| l.starts_with("ready: "))
        .unwrap_or("");
    assert!(
        ready.starts_with("ready: connect: "),
        "the host's ready port took a connection from the container: {text}"
    );
    assert_nothing_left(&v.rt, &id, &run);

    // Any other value is refused by name, before a VM exists.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["annotations"] = json!({"dev.strata.vm.vsock": "yes"}));
    let id = container(&mut b, "vmvsockbad");
    let err = v.rt.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("dev.strata.vm.vsock") && err.contains("\"yes\""),
        "{err}"
    );
    assert_nothing_left(&v.rt, &id, &run_dir(&v.rt, &id));
}

/// What container IDs from Docker, containerd and the kubelet look like: 64 hex digits.
fn hex_id() -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::new();
    for i in 0..4u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (unique("hexid"), i).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// `exec -t` with a 64-hex container ID (its guest console socket path used to pass the 108
/// bytes a Unix socket address holds), and a detached exec that must not hold the
/// container's lock (its relay used to inherit it: `kill --all` waited for the exec'd
/// process to end).
#[test]
fn long_ids_get_terminals_and_a_detached_exec_blocks_nothing() {
    let Some(v) = vm_runtime() else { return };
    let mut b = Bundle::new(&["sleep", "1000"]);
    let id = hex_id();
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(format!("/strata-test/{id}")));
    let run = run_dir(&v.rt, &id);
    v.rt.ok(&["run", "--detach", "-b", b.path().to_str().unwrap(), &id]);
    let cmd = format!(
        "{} --root {} --config {} exec -t {id} sh -c 'tty; exit 7'",
        strata_bin().display(),
        v.rt.root.path().display(),
        v.config.display(),
    );
    let (shown, code) = on_pty(&cmd, Duration::from_secs(120));
    assert_eq!(code, 7, "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    v.rt.ok(&["exec", "--detach", &id, "sleep", "60"]);
    let t = std::time::Instant::now();
    v.rt.ok(&["kill", "--all", &id, "KILL"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "kill --all waited {:?} behind the detached exec",
        t.elapsed()
    );
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

/// Root in the guest (a bundle granting the capabilities) against the host's filesystem: no
/// device node lands in the shared rootfs (virtiofsd serves without CAP_MKNOD), a read-only
/// root stays read-only on the host whatever the guest remounts, and the console log the
/// guest can fill is kept to its first MiB.
#[test]
fn guest_root_cannot_make_devices_or_write_a_read_only_root_or_fill_the_host() {
    let Some(v) = vm_runtime() else { return };
    let caps = |c: &mut Value| {
        for set in ["bounding", "effective", "permitted"] {
            let list = c["process"]["capabilities"][set].as_array_mut().unwrap();
            list.extend([json!("CAP_MKNOD"), json!("CAP_SYS_ADMIN")]);
        }
    };
    let script = "mknod /disk b 8 0 2>/dev/null && echo MADE || echo REFUSED; \
                  mount -o remount,rw / 2>/dev/null; touch /proof 2>/dev/null && echo WROTE || echo READ-ONLY; \
                  mknod /dev/ttyS0 c 4 64 && dd if=/dev/zero of=/dev/ttyS0 bs=64k count=24 2>/dev/null; \
                  echo done; sleep 1000";
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.edit(|c| {
        caps(c);
        c["root"]["readonly"] = json!(true);
        // The guest's serial port, for the console test.
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 4, "minor": 64, "access": "rwm"}));
    });
    let id = container(&mut b, "vmguestroot");
    let run = run_dir(&v.rt, &id);
    let out_dir = TempDir::new("vmguestroot-out");
    let out = out_dir.path().join("out");
    let st =
        v.rt.cmd()
            .args(["run", "--detach", "-b", b.path().to_str().unwrap(), &id])
            .stdout(std::fs::File::create(&out).unwrap())
            .status()
            .unwrap();
    assert!(st.success());
    eventually_for("the script to finish", Duration::from_secs(120), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("done")
    });
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("REFUSED\nREAD-ONLY\n"), "{text}");
    assert!(
        !b.rootfs().join("disk").exists(),
        "a device node reached the host"
    );
    assert!(
        !b.rootfs().join("proof").exists(),
        "the read-only root was written"
    );
    // The guest wrote 1.5 MiB to its console: the log holds the first MiB and says so.
    eventually_for("the console to be cut", Duration::from_secs(60), || {
        std::fs::read(run.join("console.log"))
            .is_ok_and(|t| String::from_utf8_lossy(&t).contains("is not kept"))
    });
    let console = std::fs::metadata(run.join("console.log")).unwrap().len();
    assert!(
        console <= (1 << 20) + 4096,
        "the console log grew to {console} bytes"
    );
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
}

/// Bind mounts of host directories and files (volumes) reach the guest through the VM's share:
/// writes land on the host, a read-only volume stays read-only even to guest root that
/// remounts it (the host side refuses), a host-side change (the kubelet's `..data` symlink
/// swap of a configMap) is seen within seconds, and the share's mounts exist only in the VM's
/// own processes, gone with them.
#[test]
fn volumes_are_shared_live_and_read_only_where_asked() {
    let Some(v) = vm_runtime() else { return };
    let host = TempDir::new("vmvol");
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(ro.join("..v1")).unwrap();
    std::fs::write(ro.join("..v1/key"), "v1").unwrap();
    std::os::unix::fs::symlink("..v1", ro.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/key", ro.join("key")).unwrap();
    let term = host.path().join("termination-log");
    std::fs::write(&term, "").unwrap();
    // A directory with the host's procfs mounted inside it: a recursive bind of it must not
    // carry the host kernel's files into the guest.
    let kern = host.path().join("kern");
    let _kern_proc = ProcMount::at(&kern.join("proc"));
    let script = "echo hello > /rw/from-guest && echo RW; \
                  touch /ro/x 2>/dev/null && echo RO-WRITTEN || echo RO; \
                  mount -o remount,rw /ro 2>/dev/null; \
                  touch /ro/y 2>/dev/null && echo RO-WRITTEN-AFTER-REMOUNT || echo STILL-RO; \
                  echo \"key=$(cat /ro/key)\"; echo bye > /term; \
                  echo \"kern=$(ls /kern/proc | wc -l)\"; echo \"rootproc=$(ls /hostproc | wc -l)\"; \
                  echo ready; \
                  i=0; while [ \"$(cat /ro/key)\" != v2 ] && [ $i -lt 100 ]; do \
                  sleep 0.1; i=$((i+1)); done; echo \"swapped=$(cat /ro/key) after=$i\"; \
                  sleep 1000";
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            let list = c["process"]["capabilities"][set].as_array_mut().unwrap();
            list.push(json!("CAP_SYS_ADMIN"));
        }
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(
            json!({"destination": "/rw", "type": "bind", "source": rw, "options": ["rbind", "rw"]}),
        );
        mounts.push(
            json!({"destination": "/ro", "type": "bind", "source": ro, "options": ["rbind", "ro"]}),
        );
        mounts.push(
            json!({"destination": "/term", "type": "bind", "source": term, "options": ["bind"]}),
        );
        mounts.push(
            json!({"destination": "/kern", "type": "bind", "source": kern, "options": ["rbind"]}),
        );
    });
    // The host's procfs mounted inside the rootfs itself does not reach the guest either.
    let _root_proc = ProcMount::at(&b.rootfs().join("hostproc"));
    let id = container(&mut b, "vmvol");
    let run = run_dir(&v.rt, &id);
    let out_dir = TempDir::new("vmvol-out");
    let out = out_dir.path().join("out");
    let st =
        v.rt.cmd()
            .args(["run", "--detach", "-b", b.path().to_str().unwrap(), &id])
            .stdout(std::fs::File::create(&out).unwrap())
            .status()
            .unwrap();
    assert!(st.success());
    eventually_for(
        "the container to be ready",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("ready")
        },
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text, "RW\nRO\nSTILL-RO\nkey=v1\nkern=0\nrootproc=0\nready\n",
        "what the container saw"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("from-guest")).unwrap(),
        "hello\n"
    );
    assert_eq!(std::fs::read_to_string(&term).unwrap(), "bye\n");
    assert!(!ro.join("x").exists() && !ro.join("y").exists());
    // The share's mounts are the VM's alone: none in the host's namespace.
    let share = run.join("share");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(share.to_str().unwrap()),
        "the share is mounted on the host: {mountinfo}"
    );
    // The kubelet's atomic update: a new version directory, then the `..data` link swapped.
    std::fs::create_dir_all(ro.join("..v2")).unwrap();
    std::fs::write(ro.join("..v2/key"), "v2").unwrap();
    std::os::unix::fs::symlink("..v2", ro.join("..data_tmp")).unwrap();
    std::fs::rename(ro.join("..data_tmp"), ro.join("..data")).unwrap();
    let swapped = std::time::Instant::now();
    eventually_for("the swap to be seen", Duration::from_secs(30), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("swapped=")
    });
    let seen = swapped.elapsed();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("swapped=v2 "), "{text}");
    assert!(
        seen < Duration::from_secs(5),
        "the swap took {seen:?} to reach the guest"
    );
    v.rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&v.rt, &id, &run);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let info = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        assert!(
            !info.contains(share.to_str().unwrap()),
            "process {:?} still has the share mounted",
            e.file_name()
        );
    }
    // The volumes keep what was written, and nothing else was touched.
    assert_eq!(std::fs::read_to_string(ro.join("key")).unwrap(), "v2");
}
