//! containerd (Debian's 1.6) and `ctr` driving strata through the runc v2 shim:
//! `ctr run --runtime io.containerd.runc.v2 --runc-binary <strata>`, with a private
//! containerd and an image imported from a locally made OCI archive.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use strata_integration::clients::{
    busybox_oci_archive, require_client, run_ok, wait_timeout, CgroupParent, Containerd,
    LoggedRuntime,
};
use strata_integration::{eventually, output_via_files, stdout, unique};

const IMAGE: &str = "docker.io/strata/busybox:latest";
const NS: &str = "strata-test";

struct Ctr {
    runtime: LoggedRuntime,
    cgroups: CgroupParent,
    containerd: Containerd,
}

impl Ctr {
    fn start() -> Option<Ctr> {
        if !strata_integration::is_root() {
            eprintln!("SKIPPED: containerd tests need root");
            return None;
        }
        if !require_client(&["containerd", "ctr", "containerd-shim-runc-v2"]) {
            return None;
        }
        let containerd = Containerd::start(None);
        let archive = busybox_oci_archive(containerd.dir.path(), IMAGE, &["sh"]);
        run_ok(containerd.ctr(NS).args(["images", "import"]).arg(&archive));
        Some(Ctr {
            runtime: LoggedRuntime::new("ctr"),
            cgroups: CgroupParent::new("ctr"),
            containerd,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.containerd.ctr(NS);
        c.args(args).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output_via_files(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\n{}\n{}\ncontainerd log:\n{}",
            out.status,
            stdout(&out),
            String::from_utf8_lossy(&out.stderr),
            self.containerd.log_text()
        );
        stdout(&out)
    }

    /// The `ctr run` flags that put a container on strata, in our cgroup parent.
    /// `ctr run FLAGS <strata as the runc binary> IMAGE ID COMMAND...`.
    fn run_container(&self, flags: &[&str], id: &str, command: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(self.run_args(id));
        args.extend([IMAGE, id].iter().chain(command).map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&argv)
    }

    fn run_args(&self, id: &str) -> Vec<String> {
        vec![
            "--runtime".into(),
            "io.containerd.runc.v2".into(),
            "--runc-binary".into(),
            self.runtime.path.display().to_string(),
            "--runc-root".into(),
            self.containerd
                .dir
                .path()
                .join("runtime-root")
                .display()
                .to_string(),
            "--fifo-dir".into(),
            self.fifo_dir(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroups.path),
        ]
    }

    /// ctr's stdio FIFOs, which default to /run/containerd/fifo.
    fn fifo_dir(&self) -> String {
        self.containerd
            .dir
            .path()
            .join("fifo")
            .display()
            .to_string()
    }

    fn task_status(&self, id: &str) -> String {
        let list = self.ok(&["task", "ls"]);
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let tasks = self.run(&["task", "ls", "-q"]);
        for id in stdout(&tasks).split_whitespace() {
            let _ = self.run(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.run(&["task", "delete", "--force", id]);
        }
        let containers = self.run(&["container", "ls", "-q"]);
        for id in stdout(&containers).split_whitespace() {
            let _ = self.run(&["container", "delete", id]);
        }
        let left = self.cgroups.leftovers();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("containerd left cgroups behind: {left:?}");
        }
    }
}

#[test]
fn ctr_run_exit_code_and_stdout() {
    let Some(c) = Ctr::start() else { return };
    let id = unique("cr");
    let out = c.run_container(&["--rm"], &id, &["sh", "-c", "echo hello from ctr; exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{out:?}\n{}",
        c.containerd.log_text()
    );
    assert_eq!(stdout(&out).trim(), "hello from ctr");
    c.runtime.assert_used("create");
    c.runtime.assert_used("start");
    c.runtime.assert_used("delete");
    c.runtime.report("ctr run");
}

#[test]
fn ctr_task_exec_ps_kill_delete() {
    let Some(c) = Ctr::start() else { return };
    let id = unique("ct");
    let out = c.run_container(&["-d"], &id, &["sleep", "1000"]);
    assert!(
        out.status.success(),
        "ctr run -d: {out:?}\n{}",
        c.containerd.log_text()
    );
    assert_eq!(c.task_status(&id), "RUNNING");

    let fifo_dir = c.fifo_dir();
    let out = c.run(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo_dir,
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in-exec; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(stdout(&out).trim(), "in-exec");

    let ps = c.ok(&["task", "ps", &id]);
    let pids: Vec<&str> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pids.len(), 1, "{ps}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap();
    assert_eq!(comm.trim(), "sleep");

    c.ok(&["task", "pause", &id]);
    assert_eq!(c.task_status(&id), "PAUSED");
    c.ok(&["task", "resume", &id]);
    assert_eq!(c.task_status(&id), "RUNNING");

    // `ctr task kill` returns at once; the shim reaps the exit.
    c.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    eventually("task stops after SIGKILL", || {
        c.task_status(&id) == "STOPPED"
    });
    let mut wait = c.cmd(&["task", "delete", &id]);
    let mut child = wait.stdout(Stdio::null()).spawn().unwrap();
    let st = wait_timeout(&mut child, Duration::from_secs(30)).expect("task delete hung");
    assert!(st.success());
    c.ok(&["container", "delete", &id]);
    assert!(!c.ok(&["container", "ls", "-q"]).contains(&id));
    for verb in ["exec", "ps", "kill", "pause", "resume", "delete"] {
        c.runtime.assert_used(verb);
    }
    c.runtime.report("ctr task exec/ps/pause/kill/delete");
}

#[test]
fn ctr_run_on_the_vm_backend_by_annotation() {
    let Some(mut c) = Ctr::start() else { return };
    let cfg_dir = strata_integration::TempDir::new("ctr-vm");
    let Some(config) = strata_integration::vm_node_config(cfg_dir.path()) else {
        return;
    };
    c.runtime = LoggedRuntime::with_config("ctr-vm", &config);
    let id = unique("crvm");
    let out = c.run_container(
        &["--rm", "--annotation", "dev.strata.backend=vm"],
        &id,
        &["sh", "-c", "uname -r; exit 5"],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{out:?}\n{}",
        c.containerd.log_text()
    );
    let release = stdout(&out).trim().to_string();
    assert!(
        strata_integration::is_guest_kernel(&release),
        "ran in the guest kernel: {release:?}"
    );
    c.runtime.assert_used("create");
    c.runtime.assert_used("delete");
    c.runtime.report("ctr run (vm)");
}
