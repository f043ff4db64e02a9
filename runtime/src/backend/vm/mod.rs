//! The vm backend: each container in a microVM of its own, run inside by the guest agent.
//!
//! `create` plans the guest (refusing what a VM cannot honour), builds or reuses the initramfs,
//! creates the container's host cgroup and forks the monitor ([`monitor`]), which launches the
//! VM through a [`driver`] and reports once the container exists in the guest. The monitor is
//! the container's PID; `start` goes through the same start socket as on native; `kill`,
//! `update` and `stats` go to the agent; `pause`, `resume`, `ps` and OOM events act on the host
//! cgroup that holds the VM (a pod member is frozen in the guest too, see [`pod`]); `delete` kills everything in that cgroup and removes the VM's
//! run directory.

pub mod client;
pub mod driver;
pub mod initramfs;
pub mod monitor;
pub mod network;
pub mod plan;
pub mod pod;
pub mod share;

use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use strata_linux::cgroups::stats::Stats;
use strata_linux::cgroups::{hierarchies, resolve_path, CgroupSet};

use crate::backend::contract::{Backend, CreateRequest, Created, ExecRequest};
use crate::backend::native::Native;
use crate::state::Record;
use client::AgentAddr;
use strata_agent_protocol::{Request, Response, NOT_RUNNING};

/// Written in the container's state dir: what `state` shows and `delete` removes.
pub const VM_FILE: &str = "vm.json";
/// Annotation in `state` naming the hypervisor driver.
pub const DRIVER_ANNOTATION: &str = "dev.strata.vm.driver";

#[derive(Debug, Serialize, Deserialize)]
pub struct VmInfo {
    pub driver: String,
    pub run_dir: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// The network namespace whose interfaces the VM took over (its path and which namespace
    /// it named then), and their indexes there.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub netns_id: Option<network::NsId>,
    #[serde(default)]
    pub links: Vec<u32>,
    /// The VM is a pod's (its container is the CRI sandbox): members may be created in it.
    #[serde(default)]
    pub pod_vm: bool,
    /// For a pod member: the sandbox container whose VM it is in (`run_dir` is that VM's).
    #[serde(default)]
    pub pod_sandbox: Option<String>,
    /// For a pod member: its entries in the VM's share (rootfs, volumes).
    #[serde(default)]
    pub share_entries: Vec<String>,
}

impl VmInfo {
    /// Replaces `vm.json` whole (written, then renamed over the old one).
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let tmp = state_dir.join(".vm.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, state_dir.join(VM_FILE))?;
        Ok(())
    }

    pub fn read(state_dir: &Path) -> Option<VmInfo> {
        let text = std::fs::read_to_string(state_dir.join(VM_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A short per-container directory for the VM's sockets (Unix socket paths are limited to 108
/// bytes, and container state dirs can be long).
pub fn run_dir_for(state_dir: &Path) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut h);
    PathBuf::from("/run/strata-vm").join(format!("{:016x}", h.finish()))
}

fn agent_of(rec: &Record) -> AgentAddr {
    let run_dir = VmInfo::read(&rec.state_dir)
        .map(|i| i.run_dir)
        .unwrap_or_else(|| run_dir_for(&rec.state_dir));
    AgentAddr::Vsock {
        uds: run_dir.join(driver::VSOCK_SOCKET),
    }
}

/// Whether the container is a pod member in its sandbox's VM.
fn is_member(rec: &Record) -> bool {
    VmInfo::read(&rec.state_dir).is_some_and(|i| i.pod_sandbox.is_some())
}

pub struct Vm;

impl Vm {
    fn kernel(req: &CreateRequest) -> Result<PathBuf> {
        let kernel = req.node.vm.kernel.clone().context(
            "vm backend: no guest kernel: build one with kernel-config/build and set [vm] kernel \
             in the node config",
        )?;
        if !kernel.is_file() {
            bail!(
                "vm backend: the guest kernel {} does not exist",
                kernel.display()
            );
        }
        Ok(kernel)
    }
}

/// The container's cgroup on the host, where its VM (or, for a pod member, its relay) runs.
fn host_cgroup(req: &CreateRequest) -> Result<CgroupSet> {
    let path = req
        .container
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    resolve_path(path.as_deref(), req.container.id)
        .and_then(|p| CgroupSet::create(&p, &hierarchies()?))
        .context("vm backend: the container's host cgroup")
}

/// Runs the bundle's prestart and createRuntime hooks once the monitor (`monitor`, the
/// container's PID) is in the container's host-side network namespace, then lets it go on.
/// The state's status is "created" for prestart and "creating" for createRuntime, as on
/// native.
fn run_host_hooks(
    req: &CreateRequest,
    monitor: i32,
    ready: std::os::fd::OwnedFd,
    go: std::os::fd::OwnedFd,
) -> Result<()> {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    if std::fs::File::from(ready).read(&mut byte)? != 1 {
        // The monitor ended; its report says why.
        return Ok(());
    }
    let spec = req.container.spec;
    let hooks = spec.hooks().clone().unwrap_or_default();
    let state = |status: &str| {
        crate::state::hook_state_json(
            req.container.id,
            monitor,
            status,
            req.container.bundle,
            spec,
        )
    };
    strata_linux::hooks::run_all(
        hooks.prestart().as_deref().unwrap_or(&[]),
        &state("created"),
        strata_linux::hooks::Inherit::Runtime,
    )?;
    strata_linux::hooks::run_all(
        hooks.create_runtime().as_deref().unwrap_or(&[]),
        &state("creating"),
        strata_linux::hooks::Inherit::Runtime,
    )?;
    std::fs::File::from(go).write_all(b"g")?;
    Ok(())
}

/// Host fds cannot cross into a VM: `--preserve-fds` (or LISTEN_FDS) is refused.
fn refuse_preserved_fds(n: i32) -> Result<()> {
    if n > 0 {
        bail!(
            "vm backend: --preserve-fds (or LISTEN_FDS) asks to pass {n} host fds to the \
             container, and fds cannot cross into a VM"
        );
    }
    Ok(())
}

impl Backend for Vm {
    fn create(&self, req: &CreateRequest) -> Result<Created> {
        refuse_preserved_fds(req.container.io.preserve_fds)?;
        let mut plan = plan::plan(req.container.spec, req.container.bundle, req.node)?;
        if let plan::PodRole::Member { sandbox } = plan.pod.clone() {
            return pod::create_member(req, plan, &sandbox);
        }
        if plan.readonly_rootfs {
            plan::make_mount_points(req.container.spec, req.container.bundle, &plan.rootfs)?;
        }
        let kernel = Self::kernel(req)?;
        let cache = crate::host::cache_dir();
        let agent = req
            .node
            .vm
            .agent
            .clone()
            .unwrap_or_else(|| cache.join("guest").join("strata-agent"));
        let initrd = initramfs::cached(&agent, &cache)?;
        let driver = driver::choose(req.node.vm.driver.as_deref())?;
        let run_dir = run_dir_for(req.state_dir);
        // A create killed earlier may have left the directory of this very container.
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        // The namespace is read, and what will be changed in it recorded, before anything is
        // changed: a create killed half-way leaves nothing `delete` does not know of.
        // With host hooks the monitor takes the network over itself, once they have run.
        let survey = match plan.netns.as_ref().filter(|_| !plan.host_hooks) {
            Some(netns) => match network::survey(netns) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&run_dir);
                    return Err(e);
                }
            },
            None => None,
        };
        let links = survey.as_ref().map(|s| s.links()).unwrap_or_default();
        let netns_id = survey.as_ref().map(|s| s.id);
        let netns = plan.netns.clone().filter(|_| !plan.host_hooks);
        let cleanup = |cgroups: Option<&CgroupSet>| {
            let _ = std::fs::remove_dir_all(&run_dir);
            if let Some(c) = cgroups {
                c.remove();
            }
            if let (Some(ns), Some(id)) = (&netns, netns_id) {
                network::detach(ns, id, &links);
            }
        };
        let info = VmInfo {
            driver: driver.name().to_string(),
            run_dir: run_dir.clone(),
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            netns: netns.clone(),
            netns_id,
            links: links.clone(),
            pod_vm: plan.pod == plan::PodRole::Sandbox,
            pod_sandbox: None,
            share_entries: Vec::new(),
        };
        if let Err(e) = info.write(req.state_dir) {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
        let (nics, redirects) = match survey.map(network::attach) {
            Some(Ok(n)) => {
                plan.network = n.guest;
                (n.nics, Some(n.redirects))
            }
            // attach removed what it had made.
            Some(Err(e)) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e);
            }
            None => (Vec::new(), None),
        };
        let cgroups = match host_cgroup(req) {
            Ok(c) => c,
            Err(e) => {
                cleanup(None);
                return Err(e);
            }
        };
        (req.container.on_cgroups)(&cgroups);
        let rootfs = plan.rootfs.clone();
        // The monitor's network gate (host hooks): it says when it is in the container's
        // host-side network namespace, and waits for the hooks to have run.
        let host_hooks = plan.host_hooks;
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let setup = monitor::MonitorSetup {
            id: req.container.id.to_string(),
            state_dir: req.state_dir.to_path_buf(),
            gate: host_hooks.then_some(monitor::NetworkGate {
                ready: ready_w,
                go: go_r,
                join: plan.netns.clone(),
            }),
            plan,
            driver,
            kernel,
            initrd,
            run_dir: run_dir.clone(),
            start_listener: req.container.start_listener,
            console: req.container.io.console,
            cgroups: cgroups.clone(),
            nics,
            redirects,
        };
        // The monitor must not hold the runtime's ends of its gate: a runtime killed while
        // the hooks run must leave it reading EOF, not waiting for ever.
        let mut close_in_child = req.container.io.close_in_child.to_vec();
        close_in_child.extend([ready_r.as_raw_fd(), go_w.as_raw_fd()]);
        let (child, report_r) =
            monitor::fork_host_process(&close_in_child, "VM monitor", move |report| {
                monitor::monitor(setup, report)
            })?;
        if host_hooks {
            if let Err(e) = run_host_hooks(req, child.as_raw(), ready_r, go_w) {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                cleanup(Some(&cgroups));
                return Err(e);
            }
        } else {
            drop((ready_r, go_w));
        }
        if let Err(e) = monitor::read_report(report_r) {
            let _ = nix::sys::wait::waitpid(child, None);
            cleanup(Some(&cgroups));
            return Err(e);
        }
        Ok(Created {
            pid: child.as_raw(),
            rootfs,
            cgroups,
        })
    }

    fn signal(&self, rec: &Record, sig: Signal, all: bool) -> Result<()> {
        let req = Request::Signal {
            id: rec.id.clone(),
            exec_id: None,
            signal: sig as i32,
            all,
        };
        match agent_of(rec).call(&req, Some(client::REQUEST_TIMEOUT)) {
            Ok(reply) => Ok(reply.into_ok()?),
            // No agent: the VM is gone, and with it the container.
            Err(_) => bail!("{NOT_RUNNING}"),
        }
    }

    fn exec(&self, rec: &Record, req: &ExecRequest) -> Result<i32> {
        refuse_preserved_fds(req.io.preserve_fds)?;
        if !req.sub_cgroups.is_empty() {
            bail!(
                "exec --cgroup: the vm backend's container cgroups are in the guest; not supported"
            );
        }
        let process = serde_json::to_value(req.process)?;
        let exec_id = format!(
            "exec-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let setup = monitor::RelaySetup {
            id: rec.id.clone(),
            exec_id,
            process,
            addr: agent_of(rec),
            console: req.io.console,
            cgroups: rec.cgroups.clone(),
            monitor_pid: rec.pid,
        };
        let (child, report_r) =
            monitor::fork_host_process(&req.io.close_in_child, "exec relay", move |report| {
                monitor::relay(setup, report)
            })?;
        if let Err(e) = monitor::read_report(report_r) {
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(e);
        }
        Ok(child.as_raw())
    }

    fn destroy(&self, rec: &Record) -> Result<()> {
        // The monitor, the VM and its helpers, and exec relays are all in the host cgroup
        // (for a pod member: its relay and exec relays).
        Native.destroy(rec)?;
        let info = VmInfo::read(&rec.state_dir);
        if let Some(member) = &info {
            if let Some(sandbox) = &member.pod_sandbox {
                // The VM and its run directory are the sandbox's.
                pod::delete_member(rec, member, sandbox);
                return Ok(());
            }
        }
        if let Some(VmInfo {
            netns: Some(ns),
            netns_id: Some(id),
            links,
            ..
        }) = &info
        {
            network::detach(ns, *id, links);
        }
        let run_dir = info
            .map(|i| i.run_dir)
            .unwrap_or_else(|| run_dir_for(&rec.state_dir));
        let _ = std::fs::remove_dir_all(run_dir);
        Ok(())
    }

    fn pause(&self, rec: &Record) -> Result<()> {
        // A pod member is frozen in the guest (the VM runs the pod's other containers), and
        // its relay on the host, whose frozen cgroup is what `state` reads as paused.
        if is_member(rec) {
            agent_of(rec).call_ok(&Request::Freeze {
                id: rec.id.clone(),
                frozen: true,
            })?;
        }
        Ok(rec.cgroups.set_frozen(true)?)
    }

    fn resume(&self, rec: &Record) -> Result<()> {
        rec.cgroups.set_frozen(false)?;
        if is_member(rec) {
            agent_of(rec).call_ok(&Request::Freeze {
                id: rec.id.clone(),
                frozen: false,
            })?;
        }
        Ok(())
    }

    fn update(&self, rec: &Record, resources: &LinuxResources) -> Result<()> {
        agent_of(rec).call_ok(&Request::Update {
            id: rec.id.clone(),
            resources: serde_json::to_value(resources)?,
        })
    }

    fn stats(&self, rec: &Record) -> Result<Stats> {
        match agent_of(rec)
            .call(
                &Request::Stats { id: rec.id.clone() },
                Some(client::REQUEST_TIMEOUT),
            )?
            .into_result()?
        {
            Response::Stats { stats } => {
                serde_json::from_value(stats).context("stats from the guest agent")
            }
            other => Err(other.unexpected().into()),
        }
    }

    fn state_annotations(&self, rec: &Record) -> Vec<(String, String)> {
        VmInfo::read(&rec.state_dir)
            .map(|vm| vec![(DRIVER_ANNOTATION.to_string(), vm.driver)])
            .unwrap_or_default()
    }
}
