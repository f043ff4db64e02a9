//! One VM per pod. The CRI's sandbox container (annotation `io.kubernetes.cri.container-type:
//! sandbox`) boots the pod's VM as any vm container does, with a share kept open; each of the
//! pod's other containers (members, `container-type: container`, `io.kubernetes.cri.sandbox-id`
//! naming the sandbox) is created inside that VM by its agent: its rootfs and volumes are added
//! to the running share, it joins the sandbox's network, IPC and UTS namespaces in the guest,
//! and its host PID is a relay process ([`monitor::member`]) that exits with its status.
//! Deleting a member removes it from the guest and its entries from the share; deleting the
//! sandbox ends the VM and whatever is left in it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxNamespaceType;

use super::client::{AgentAddr, REQUEST_TIMEOUT};
use super::driver::VSOCK_SOCKET;
use super::plan::{GuestPlan, GUEST_OVERHEAD_MIB, SANDBOX_ID_ANNOTATION};
use super::{monitor, share, VmInfo};
use crate::backend::contract::{CreateRequest, Created};
use crate::config::Kind;
use crate::state::{read_record, Record, Status};
use strata_agent_protocol::Request;

/// The pod's sandbox container, running on the vm backend with a pod VM.
struct Sandbox {
    rec: Record,
    info: VmInfo,
}

fn sandbox_of(state_root: &Path, id: &str) -> Result<Sandbox> {
    sandbox_in(state_root, id, &[Status::Created, Status::Running])
}

/// The sandbox in one of `statuses` (a member is deleted from a paused pod's VM too).
fn sandbox_in(state_root: &Path, id: &str, statuses: &[Status]) -> Result<Sandbox> {
    let not_a_pod = || {
        format!(
            "vm backend: annotation {SANDBOX_ID_ANNOTATION}: {id:?} is not a running vm pod \
             sandbox here (a pod's containers are created in the VM of its sandbox container)"
        )
    };
    crate::state::validate_id(id).with_context(not_a_pod)?;
    let dir = state_root.join(id);
    let mut rec = read_record(&dir.join("state.json")).with_context(not_a_pod)?;
    rec.state_dir = dir;
    let info = VmInfo::read(&rec.state_dir)
        .filter(|i| i.pod_vm)
        .with_context(not_a_pod)?;
    if rec.backend != Kind::Vm || !statuses.contains(&rec.live_status()) {
        bail!(not_a_pod());
    }
    Ok(Sandbox { rec, info })
}

/// The namespaces a member names by path must be its sandbox's, as the CRI names them
/// (`/proc/<sandbox pid>/ns/...`): in a VM they stand for the sandbox's in the guest, and no
/// host namespace is ever joined. By name, not by identity: the sandbox's PID is its VM's
/// monitor, whose namespaces are the host's own and so tell nothing apart.
fn check_joined(plan: &GuestPlan, sandbox: &Sandbox, id: &str) -> Result<()> {
    for (typ, path) in &plan.joined {
        let name = match typ {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Pid => "pid",
            _ => "uts",
        };
        let theirs = format!("/proc/{}/ns/{name}", sandbox.rec.pid);
        if path != Path::new(&theirs) {
            bail!(
                "linux.namespaces: the {typ:?} namespace {} is not that of the pod sandbox {id:?} \
                 ({theirs}); on the vm backend a pod's containers share the namespaces of the \
                 pod's VM",
                path.display()
            );
        }
    }
    Ok(())
}

/// The member must fit the pod's VM: its memory limit within what the guest leaves free.
fn check_fits(req: &CreateRequest, info: &VmInfo) -> Result<()> {
    let limit = req
        .container
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    if let Some(limit) = limit {
        let room = u64::from(info.memory_mib.saturating_sub(GUEST_OVERHEAD_MIB)) << 20;
        if limit as u64 > room {
            bail!(
                "vm backend: linux.resources.memory.limit: {limit} bytes does not fit the pod's \
                 VM ({} MiB, {GUEST_OVERHEAD_MIB} MiB of it the guest's own); size the pod with \
                 the dev.strata.vm.memory_mib annotation on its sandbox",
                info.memory_mib
            );
        }
    }
    Ok(())
}

/// Creates pod member `req` in the VM of its sandbox `sandbox_id`.
pub fn create_member(
    req: &CreateRequest,
    mut plan: GuestPlan,
    sandbox_id: &str,
) -> Result<Created> {
    let id = req.container.id;
    let state_root = req
        .state_dir
        .parent()
        .context("the state directory's root")?;
    let sandbox = sandbox_of(state_root, sandbox_id)?;
    check_joined(&plan, &sandbox, sandbox_id)?;
    check_fits(req, &sandbox.info)?;
    if plan.readonly_rootfs {
        super::plan::make_mount_points(req.container.spec, req.container.bundle, &plan.rootfs)?;
    }
    plan.for_member(id);
    let run_dir = sandbox.info.run_dir.clone();
    let entries: Vec<String> = plan.volumes.iter().map(|v| v.name.clone()).collect();
    let info = VmInfo {
        driver: sandbox.info.driver.clone(),
        run_dir: run_dir.clone(),
        memory_mib: sandbox.info.memory_mib,
        vcpus: sandbox.info.vcpus,
        netns: None,
        netns_id: None,
        links: Vec::new(),
        pod_vm: false,
        pod_sandbox: Some(sandbox_id.to_string()),
        share_entries: entries.clone(),
    };
    // Written first: a create killed from here on leaves what `delete` needs to undo it.
    info.write(req.state_dir)?;
    let cgroups = super::host_cgroup(req)?;
    (req.container.on_cgroups)(&cgroups);
    let share_dir = run_dir.join(share::SHARE_DIR);
    let monitor_pid = sandbox.rec.pid;
    let undo = || {
        let _ = share::remove(monitor_pid, &share_dir, &entries);
        cgroups.remove();
    };
    if let Err(e) = share::add(monitor_pid, &share_dir, &plan.volumes) {
        undo();
        return Err(e);
    }
    let addr = AgentAddr::Vsock {
        uds: run_dir.join(VSOCK_SOCKET),
    };
    let setup = monitor::MemberSetup {
        id: id.to_string(),
        sandbox: sandbox_id.to_string(),
        spec: plan.spec,
        allow_vsock: plan.allow_vsock,
        addr: addr.clone(),
        start_listener: req.container.start_listener,
        console: req.container.io.console,
        cgroups: cgroups.clone(),
        monitor_pid,
    };
    let (child, report_r) = monitor::fork_host_process(
        &req.container.io.close_in_child,
        "pod member's relay",
        move |report| monitor::member(setup, report),
    )?;
    if let Err(e) = monitor::read_report(report_r) {
        let _ = nix::sys::wait::waitpid(child, None);
        let _ = addr.call(
            &Request::Delete { id: id.to_string() },
            Some(REQUEST_TIMEOUT),
        );
        undo();
        return Err(e);
    }
    Ok(Created {
        pid: child.as_raw(),
        rootfs: plan.rootfs,
        cgroups,
    })
}

/// What `delete` does for a member once its relay is gone: the member out of the guest and
/// its entries out of the share, while the pod's VM runs.
pub fn delete_member(rec: &Record, info: &VmInfo, sandbox_id: &str) {
    let Some(root) = rec.state_dir.parent() else {
        return;
    };
    let alive = [Status::Created, Status::Running, Status::Paused];
    let Ok(sandbox) = sandbox_in(root, sandbox_id, &alive) else {
        // The VM is gone, and the member with it.
        return;
    };
    let addr = AgentAddr::Vsock {
        uds: info.run_dir.join(VSOCK_SOCKET),
    };
    let _ = addr.call(
        &Request::Delete { id: rec.id.clone() },
        Some(REQUEST_TIMEOUT),
    );
    let _ = share::remove(
        sandbox.rec.pid,
        &info.run_dir.join(share::SHARE_DIR),
        &info.share_entries,
    );
}
