//! The runtime's side of `create`: the spec checked and the cgroups made, one clone with the
//! new namespaces (into the v2 cgroup where it can), then the init's requests answered until
//! it is ready, or everything undone.

use std::os::fd::{AsFd, AsRawFd};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType as NsType, LinuxSeccomp, Spec};

use super::init::Init;
use super::validate::{rootfs_of, validate};
use super::{CreateOptions, Created};
use crate::cgroups::{self, CgroupSet};
use crate::error::{Error, Result};
use crate::hooks;
use crate::lsm;
use crate::namespaces::{self, NamespacePlan};
use crate::proc::{self, clone_into_cgroup, clone_process};
use crate::seccomp;
use crate::sync::{Channel, Message};
use crate::sysctl;
use crate::trampoline::Trampoline;

/// Ends a child process after reporting `err` to the runtime; never returns.
fn child_fail(chan: &Channel, err: Error) -> ! {
    let _ = chan.send(&Message::Failed(err.to_string()));
    // SAFETY: _exit ends this forked child without running the parent's atexit handlers or
    // flushing buffers it shares with the parent.
    unsafe { libc::_exit(1) }
}

pub fn create(opts: &CreateOptions) -> Result<Created> {
    let spec = opts.spec;
    let rootfs = rootfs_of(spec, opts.request.bundle)?;
    validate(spec, &rootfs)?;
    let lsm = lsm::Plan::for_container(spec)?;
    let plan = NamespacePlan::from_spec(spec)?;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(sysctl) = linux.sysctl() {
        sysctl::validate(sysctl, &plan)?;
    }
    let hs = cgroups::hierarchies()?;
    let cg_path = cgroups::resolve_path(linux.cgroups_path().as_deref(), opts.request.id)?;
    let profiles: Vec<&LinuxSeccomp> = linux
        .seccomp()
        .as_ref()
        .into_iter()
        .chain(opts.extra_seccomp.iter())
        .collect();
    let filters = seccomp::compile_chain(&profiles)?;
    let cgroups = match CgroupSet::create(&cg_path, &hs) {
        Ok(c) => c,
        // Rootless, as runc: a cgroup only where the user may make one (a cgroup v2 subtree
        // delegated to them); without, the container runs unlimited, unless it asked for
        // limits.
        Err(e) if crate::rootless() && e.is_permission() => {
            if let Some(field) = linux.resources().as_ref().and_then(cgroups::limits_asked) {
                return Err(Error::config(
                    format!("linux.resources.{field}"),
                    format!(
                        "a rootless container gets cgroup limits only where the user may                          create its cgroup (a cgroup v2 subtree delegated to them): {e}"
                    ),
                ));
            }
            tracing::debug!("rootless: the container has no cgroup ({e})");
            CgroupSet::none(&cg_path)
        }
        Err(e) => return Err(e),
    };
    (opts.request.on_cgroups)(&cgroups);
    crate::fault::point("create:after-cgroups");
    if let Some(r) = linux.resources() {
        if let Err(e) = cgroups.apply(r, linux.devices().as_deref().unwrap_or(&[])) {
            cgroups.remove();
            return Err(e);
        }
    }
    let (parent_chan, child_chan) = match Channel::pair() {
        Ok(p) => p,
        Err(e) => {
            cgroups.remove();
            return Err(e);
        }
    };
    // Made here, in the runtime's pid namespace: a sandboxed container's own may refuse
    // executable memfds (vm.memfd_noexec).
    let trampoline = match Trampoline::new(3 + opts.request.io.preserve_fds) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("the workload is exec'd without the trampoline: {e}");
            None
        }
    };
    let two_stage = plan.is_new(NsType::Time) || plan.joins(NsType::User).is_some();
    if let Some(pidns) = plan.joins(NsType::Pid) {
        // Only our children enter it; that is exactly the init.
        if let Err(e) = pidns.enter() {
            cgroups.remove();
            return Err(e);
        }
    }
    let clone_flags = if two_stage {
        CloneFlags::empty()
    } else {
        plan.new_flags() - CloneFlags::CLONE_NEWCGROUP
    };
    // The cheap way into the cgroup: born in the v2 one, and moving itself into the v1
    // ones. A process in a user namespace may not write the host's cgroup files, and a
    // two-stage init is not our child: those are moved by us, the slow way.
    let in_user_ns = plan.is_new(NsType::User) || plan.joins(NsType::User).is_some();
    let mut placement = match (two_stage || in_user_ns, cgroups.placement()) {
        (false, Ok(p)) => Some(p),
        _ => None,
    };
    let into = placement
        .as_ref()
        .and_then(|p| p.v2_dir.as_ref())
        .map(|f| f.as_raw_fd());
    let (child, born_in_v2) = match into.and_then(|fd| clone_into_cgroup(clone_flags, fd)) {
        Some(c) => (c, true),
        None => match clone_process(clone_flags) {
            Ok(c) => (c, false),
            Err(e) => {
                cgroups.remove();
                return Err(e);
            }
        },
    };
    if child == 0 {
        drop(parent_chan);
        // The cgroup files are writable host files (the v2 one a directory of the host's
        // tree): closed once joined, before the init runs anything of the container's.
        if let Some(p) = placement.take() {
            if let Err(e) = p.join_v1_self() {
                child_fail(&child_chan, e);
            }
        }
        let init = Init {
            opts,
            spec,
            plan: &plan,
            rootfs: &rootfs,
            cgroups: &cgroups,
            console: opts.request.io.console,
            two_stage,
            filters: &filters,
            host_pid: std::cell::Cell::new(0),
            trampoline: std::cell::RefCell::new(trampoline),
            lsm: &lsm,
        };
        let err = match init.run(&child_chan) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        child_fail(&child_chan, err);
    }
    drop(child_chan);
    crate::fault::point("create:after-clone");
    let mut init_pid = (!two_stage).then_some(child);
    let placed = Placed {
        v1: placement.is_some(),
        v2: born_in_v2,
    };
    drop(placement);
    let res = drive_init(
        opts,
        spec,
        &parent_chan,
        child,
        &mut init_pid,
        &cgroups,
        &filters,
        placed,
    );
    match res {
        Ok(()) => Ok(Created {
            pid: init_pid.unwrap_or(child),
            cgroups,
        }),
        Err(e) => {
            for pid in [Some(child), init_pid].into_iter().flatten() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = waitpid(Pid::from_raw(child), None);
            if let Some(p) = init_pid.filter(|p| *p != child) {
                // Not our child (two stages): wait for its exit through a pidfd.
                if let Ok(fd) = proc::pidfd_open(p) {
                    let mut fds = [nix::poll::PollFd::new(
                        fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
                }
            }
            cgroups.remove();
            Err(e)
        }
    }
}

/// Answers the init's requests until it is ready. The cgroup is joined as early as the init's
/// PID is known and the init does not wait for it: in v1, moving a task waits for an RCU
/// grace period (milliseconds here), which overlaps the init's mount work that way. The init
/// is in its cgroup before it runs anything else: RunHooks is only answered after the join.
#[allow(clippy::too_many_arguments)]
fn drive_init(
    opts: &CreateOptions,
    spec: &Spec,
    chan: &Channel,
    child: i32,
    init_pid: &mut Option<i32>,
    cgroups: &CgroupSet,
    filters: &[seccomp::Filter],
    placed: Placed,
) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let new_user = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == NsType::User && n.path().is_none())
        });
    let mut joined = false;
    let join = |joined: &mut bool, init_pid: Option<i32>| -> Result<()> {
        if !*joined {
            let pid = init_pid.ok_or_else(|| Error::Child("init PID unknown".into()))?;
            cgroups.add_where(pid, |d| if d.unified { !placed.v2 } else { !placed.v1 })?;
            *joined = true;
        }
        Ok(())
    };
    // The id maps are the init's first need; otherwise the cgroup is.
    if init_pid.is_some() && !new_user {
        join(&mut joined, *init_pid)?;
    }
    loop {
        let (msg, fd) = match chan.recv_with_fd()? {
            Some((m, fd)) => (Some(m), fd),
            None => (None, None),
        };
        match msg {
            Some(Message::NotifyFd(i)) => {
                let pid = init_pid.ok_or_else(|| Error::Child("init PID unknown".into()))?;
                let (Some(fd), Some(f)) = (fd, filters.get(i)) else {
                    return Err(Error::Child("NotifyFd without an fd or a filter".into()));
                };
                seccomp::send_to_listener(f, &fd, &(opts.hook_state)(pid, "creating"), pid)?;
            }
            Some(Message::MapIds) => {
                namespaces::write_id_maps(
                    child,
                    linux.uid_mappings().as_deref().unwrap_or(&[]),
                    linux.gid_mappings().as_deref().unwrap_or(&[]),
                )?;
                chan.send(&Message::IdsMapped)?;
                if init_pid.is_some() {
                    join(&mut joined, *init_pid)?;
                }
            }
            Some(Message::InitPid(p)) => {
                *init_pid = Some(p);
                let _ = waitpid(Pid::from_raw(child), None);
                join(&mut joined, *init_pid)?;
            }
            Some(Message::AwaitProceed) => {
                join(&mut joined, *init_pid)?;
                chan.send(&Message::Proceed)?;
            }
            Some(Message::RunHooks) => {
                join(&mut joined, *init_pid)?;
                let pid = init_pid.ok_or_else(|| Error::Child("init PID unknown".into()))?;
                if let Some(h) = spec.hooks() {
                    // The validation suite (and runc of old) gives the deprecated prestart
                    // hooks "created"; createRuntime sees the spec's "creating".
                    let state = (opts.hook_state)(pid, "created");
                    hooks::run_all(
                        h.prestart().as_deref().unwrap_or(&[]),
                        &state,
                        hooks::Inherit::Runtime,
                    )?;
                    let state = (opts.hook_state)(pid, "creating");
                    hooks::run_all(
                        h.create_runtime().as_deref().unwrap_or(&[]),
                        &state,
                        hooks::Inherit::Runtime,
                    )?;
                }
                chan.send(&Message::HooksDone(pid))?;
            }
            Some(Message::Ready) => {
                join(&mut joined, *init_pid)?;
                return Ok(());
            }
            Some(Message::Failed(msg)) => return Err(Error::Child(msg)),
            Some(other) => {
                return Err(Error::Child(format!(
                    "unexpected message from init: {other:?}"
                )))
            }
            None => {
                return Err(Error::Child(
                    "the container's init exited before it was set up".into(),
                ))
            }
        }
    }
}

/// Which cgroups the init got into without our help.
#[derive(Clone, Copy)]
struct Placed {
    v1: bool,
    v2: bool,
}
