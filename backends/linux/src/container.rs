//! Creating a container: one clone with every new namespace, the init set up inside it while
//! the runtime answers its requests (id maps, cgroup, hooks), then the init waits for `start`.
//!
//! No re-exec of the runtime binary: the init is a fork of the runtime that turns itself into
//! the container. It marks itself non-dumpable at once, so no process of the container can
//! open `/proc/<init>/exe` (the host binary) before execve replaces it.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::accept;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType as NsType, LinuxSeccomp, Process, Spec};

use crate::cgroups::{self, CgroupSet};
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::lsm;
use crate::namespaces::{self, NamespacePlan};
use crate::proc::{self, clone_into_cgroup, clone_process};
use crate::process::{self, CapabilityPlan};
use crate::rootfs::mount::{self, RootfsContext};
use crate::rootfs::open::{open_in_root, Create};
use crate::rootfs::{devices, paths, pivot};
use crate::seccomp;
use crate::sync::{Channel, Message};
use crate::sysctl;
use crate::trampoline::Trampoline;
use crate::tty;

/// What the runtime tells the backend for one `create`.
pub struct CreateOptions<'a> {
    pub id: &'a str,
    /// Absolute bundle directory.
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    pub no_pivot: bool,
    /// A socket connected to whoever receives the pty master (`--console-socket`).
    pub console: Option<RawFd>,
    /// How many fds after stdio the workload keeps (`--preserve-fds` plus `LISTEN_FDS`).
    pub preserve_fds: i32,
    /// Variables added to process.env (e.g. LISTEN_FDS).
    pub extra_env: Vec<String>,
    /// A listening Unix socket; the init accepts one connection on it as its `start` signal.
    pub start_listener: RawFd,
    /// Runtime fds the init must not keep (e.g. the state lock).
    pub close_in_child: Vec<RawFd>,
    /// Builds the state JSON that hooks get on stdin, for a given init PID and status.
    pub hook_state: &'a dyn Fn(i32, &str) -> Vec<u8>,
    /// Told the cgroups as soon as they exist, before any process is in them, so that a
    /// runtime killed from here on leaves a record `delete --force` can clean up from.
    pub on_cgroups: &'a dyn Fn(&CgroupSet),
    /// Seccomp profiles the backend adds after the bundle's own (the sandbox's).
    pub extra_seccomp: &'a [LinuxSeccomp],
    /// Runs in the init after every filter is loaded, right before execve (the sandbox's
    /// Landlock ruleset).
    pub before_exec: Option<&'a BeforeExec>,
}

/// A last step before execve, run in the container's process.
pub type BeforeExec = dyn Fn() -> Result<()> + Sync;

pub struct Created {
    pub pid: i32,
    pub cgroups: CgroupSet,
}

/// Checks the parts of the spec that can be checked without building anything, so that a bad
/// bundle fails before a process or cgroup exists.
pub fn validate(spec: &Spec, rootfs: &Path) -> Result<()> {
    let v = spec.version();
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()) || parts[0] != "1" {
        return Err(Error::config(
            "ociVersion",
            format!("{v:?} is not a 1.x.y runtime-spec version"),
        ));
    }
    if let Some(process) = spec.process() {
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::config(
                "process.args",
                "must name at least the program to run",
            ));
        }
        if !process.cwd().is_absolute() {
            return Err(Error::config(
                "process.cwd",
                format!("{} is not an absolute path", process.cwd().display()),
            ));
        }
        CapabilityPlan::new(process.capabilities().as_ref())?;
    }
    if !rootfs.is_dir() {
        return Err(Error::config(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    if rootfs == Path::new("/") {
        return Err(Error::config(
            "root.path",
            "resolves to / (the host's own root); a container needs a root of its own",
        ));
    }
    for (field, name) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if let Some(name) = name {
            // sethostname takes bytes up to a length: a NUL would be stored, and cut the name
            // for every reader.
            if name.len() > 64 || name.contains('\0') {
                return Err(Error::config(
                    field,
                    format!("{name:?} must be at most 64 bytes and hold no NUL"),
                ));
            }
        }
    }
    let linux = spec.linux().as_ref();
    if let Some(rdt) = linux.and_then(|l| l.intel_rdt().as_ref()) {
        return Err(intel_rdt_refusal(rdt));
    }
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        process::personality_of(p)?;
    }
    pivot::rootfs_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
    mount::check_mounts(spec.mounts().as_deref().unwrap_or(&[]))?;
    if let Some(m) = spec.mounts() {
        for (i, m) in m.iter().enumerate() {
            if !m.destination().is_absolute() {
                return Err(Error::config(
                    format!("mounts[{i}].destination"),
                    format!("{} is not an absolute path", m.destination().display()),
                ));
            }
        }
    }
    Ok(())
}

/// The `linux.personality` of a spec, as the value for personality(2).
pub fn personality_of_spec(spec: &Spec) -> Result<Option<libc::c_ulong>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.personality().as_ref())
        .map(process::personality_of)
        .transpose()
}

/// strata does not drive resctrl, and the spec says a runtime that cannot apply `intelRdt`
/// must fail; a `closID` that is not one directory name is named as such first.
fn intel_rdt_refusal(rdt: &oci_spec::runtime::LinuxIntelRdt) -> Error {
    if let Some(id) = rdt.clos_id() {
        if id != "/" && (id.is_empty() || id == "." || id == ".." || id.contains('/')) {
            return Error::config(
                "linux.intelRdt.closID",
                format!("{id:?} is not a resctrl group name"),
            );
        }
    }
    Error::config(
        "linux.intelRdt",
        "Intel RDT (resctrl) is not supported by strata",
    )
}

/// The absolute rootfs path of a bundle.
pub fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root", "missing"))?;
    let p = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    std::fs::canonicalize(&p)
        .map_err(|e| Error::config("root.path", format!("{}: {e}", p.display())))
}

/// Ends a child process after reporting `err` to the runtime; never returns.
fn child_fail(chan: &Channel, err: Error) -> ! {
    let _ = chan.send(&Message::Failed(err.to_string()));
    // SAFETY: _exit ends this forked child without running the parent's atexit handlers or
    // flushing buffers it shares with the parent.
    unsafe { libc::_exit(1) }
}

pub fn create(opts: &CreateOptions) -> Result<Created> {
    let spec = opts.spec;
    let rootfs = rootfs_of(spec, opts.bundle)?;
    validate(spec, &rootfs)?;
    let lsm = lsm::Plan::for_container(spec)?;
    let plan = NamespacePlan::from_spec(spec)?;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(sysctl) = linux.sysctl() {
        sysctl::validate(sysctl, &plan)?;
    }
    let hs = cgroups::hierarchies()?;
    let cg_path = cgroups::resolve_path(linux.cgroups_path().as_deref(), opts.id)?;
    let profiles: Vec<&LinuxSeccomp> = linux
        .seccomp()
        .as_ref()
        .into_iter()
        .chain(opts.extra_seccomp.iter())
        .collect();
    let filters = seccomp::compile_chain(&profiles)?;
    let cgroups = CgroupSet::create(&cg_path, &hs)?;
    (opts.on_cgroups)(&cgroups);
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
    let trampoline = match Trampoline::new(3 + opts.preserve_fds) {
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
            console: opts.console,
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
                    hooks::run_all(h.prestart().as_deref().unwrap_or(&[]), &state)?;
                    let state = (opts.hook_state)(pid, "creating");
                    hooks::run_all(h.create_runtime().as_deref().unwrap_or(&[]), &state)?;
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

struct Init<'a> {
    opts: &'a CreateOptions<'a>,
    spec: &'a Spec,
    plan: &'a NamespacePlan,
    rootfs: &'a Path,
    cgroups: &'a CgroupSet,
    console: Option<RawFd>,
    two_stage: bool,
    filters: &'a [seccomp::Filter],
    /// The init's PID in the runtime's pid namespace, learnt from HooksDone.
    host_pid: std::cell::Cell<i32>,
    /// What the workload is exec'd through (see `trampoline`).
    trampoline: std::cell::RefCell<Option<Trampoline>>,
    lsm: &'a lsm::Plan,
}

impl Init<'_> {
    fn run(&self, chan: &Channel) -> Result<Infallible> {
        process::set_non_dumpable()?;
        for fd in &self.opts.close_in_child {
            // SAFETY: the runtime named these fds as its own, unused by the child.
            unsafe { libc::close(*fd) };
        }
        let plan = self.plan;
        if self.two_stage {
            if let Some(user) = plan.joins(NsType::User) {
                user.enter()?;
            }
            let flags = plan.new_flags() - CloneFlags::CLONE_NEWCGROUP;
            unshare(flags).ctx(|| "unshare of the new namespaces".into())?;
            if plan.is_new(NsType::User) {
                chan.send(&Message::MapIds)?;
                chan.expect(Message::IdsMapped)?;
            }
            if plan.is_new(NsType::Time) {
                self.write_time_offsets()?;
            }
            // The init waits until stage one has reported its PID, so the runtime hears of
            // the init before the init's first request.
            let (gate_r, gate_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
            let pid = clone_process(CloneFlags::empty())?;
            if pid != 0 {
                chan.send(&Message::InitPid(pid))?;
                drop(gate_w);
                // SAFETY: stage one's job is done; _exit skips the parent's atexit handlers.
                unsafe { libc::_exit(0) };
            }
            drop(gate_w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&gate_r, &mut b);
            drop(gate_r);
            process::set_non_dumpable()?;
        } else if plan.is_new(NsType::User) {
            chan.send(&Message::MapIds)?;
            chan.expect(Message::IdsMapped)?;
        }
        if plan.is_new(NsType::User) || plan.joins(NsType::User).is_some() {
            let root = nix::unistd::Uid::from_raw(0);
            let rootg = nix::unistd::Gid::from_raw(0);
            nix::unistd::setresgid(rootg, rootg, rootg).map_err(|e| {
                Error::config("linux.gidMappings", format!("gid 0 is not mapped: {e}"))
            })?;
            nix::unistd::setresuid(root, root, root).map_err(|e| {
                Error::config("linux.uidMappings", format!("uid 0 is not mapped: {e}"))
            })?;
        }
        for j in &plan.join {
            if !matches!(j.typ, NsType::User | NsType::Pid) {
                j.enter()?;
            }
        }
        chan.send(&Message::AwaitProceed)?;
        chan.expect(Message::Proceed)?;
        if plan.is_new(NsType::Cgroup) {
            unshare(CloneFlags::CLONE_NEWCGROUP)
                .ctx(|| "unshare of the cgroup namespace".into())?;
        }

        // Without `process` the container is built and waits, and `start` fails (the spec's
        // rule for a config without a process).
        let no_process = Process::default();
        let process = self.spec.process().as_ref().unwrap_or(&no_process);
        if let Some(adj) = process.oom_score_adj() {
            process::set_oom_score_adj(adj)?;
        }
        if let Some(sysctl) = self.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
            sysctl::apply(sysctl)?;
        }
        self.build_rootfs(chan, process)?;
        let linux = self.spec.linux().clone().unwrap_or_default();
        if let Some(h) = self.spec.hostname() {
            if !plan.owns(NsType::Uts) {
                return Err(Error::config(
                    "hostname",
                    "setting the hostname needs a uts namespace",
                ));
            }
            nix::unistd::sethostname(h).map_err(|e| Error::config("hostname", e.to_string()))?;
        }
        if let Some(d) = self.spec.domainname() {
            if !plan.owns(NsType::Uts) {
                return Err(Error::config(
                    "domainname",
                    "setting the domainname needs a uts namespace",
                ));
            }
            // SAFETY: the pointer and length describe `d`'s bytes, valid for the call.
            if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
                return Err(Error::config(
                    "domainname",
                    std::io::Error::last_os_error().to_string(),
                ));
            }
        }
        // Only in a mount namespace of its own: in the host's these would be mounts on the
        // host (the chroot is no mount boundary), and what they hide (/proc, /sys) is not
        // mounted there.
        if self.owns_mounts() {
            paths::readonly_paths(linux.readonly_paths().as_deref().unwrap_or(&[]))?;
            paths::mask_paths(linux.masked_paths().as_deref().unwrap_or(&[]))?;
            if self.readonly_root() {
                paths::readonly_root()?;
            }
        }
        self.lsm.apply_before_exec()?;
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        let keep = 3 + self.opts.preserve_fds;
        let ready = match self.spec.process() {
            Some(p) => Some(prepare_process(
                p,
                personality_of_spec(self.spec)?,
                &self.opts.extra_env,
                self.console,
                true,
                self.filters,
                keep,
                &|i, fd| chan.send_with_fd(&Message::NotifyFd(i), fd.as_raw_fd()),
            )?),
            None => None,
        };
        let listener = process::move_fd_above(self.opts.start_listener, keep)?;
        let chan_fd = process::move_fd_above(chan.raw(), keep)?;
        // SAFETY: chan_fd is the channel's socket, moved; the old number is closed.
        let chan = unsafe { Channel::from_raw(chan_fd) };
        chan.send(&Message::Ready)?;
        drop(chan);

        let mut conn = wait_for_start(listener)?;
        // From here on errors go to `start`, which is waiting on `conn`.
        let fail = |conn: &mut std::fs::File, e: Error| -> ! {
            let _ = conn.write_all(e.to_string().as_bytes());
            // SAFETY: ends the child without the parent's atexit handlers.
            unsafe { libc::_exit(127) }
        };
        // SAFETY: the listener is ours; start has connected, nobody else may.
        unsafe { libc::close(listener) };
        let Some(mut ready) = ready else {
            fail(
                &mut conn,
                Error::config("process", "config.json has no process to start"),
            );
        };
        ready.notify_fds.clear();
        if ready.late_filter {
            // With noNewPrivileges the filters need no privilege: load them last, so that
            // little but execve runs under them; but before the startContainer hooks, which
            // run in the container and whatever they leave behind with them.
            for f in self.filters {
                if let Err(e) = f.load() {
                    fail(&mut conn, e);
                }
            }
        }
        if let Some(h) = self.spec.hooks() {
            let state = (self.opts.hook_state)(self.host_pid.get(), "created");
            if let Err(e) = hooks::run_all(h.start_container().as_deref().unwrap_or(&[]), &state) {
                fail(&mut conn, e);
            }
        }
        if let Some(Err(e)) = self.opts.before_exec.map(|f| f()) {
            fail(&mut conn, e);
        }
        if let Some(t) = self.trampoline.borrow_mut().as_mut() {
            // A failure of the workload's exec comes back to `start` on its connection.
            let e = t.exec(conn.as_raw_fd(), &ready.exe, &ready.args, &ready.env);
            tracing::debug!("exec without the trampoline: {e}");
        }
        let err = process::exec(&ready.exe, &ready.args, &ready.env);
        fail(&mut conn, err)
    }

    fn write_time_offsets(&self) -> Result<()> {
        let linux = self.spec.linux().clone().unwrap_or_default();
        let mut text = String::new();
        for (clock, off) in linux.time_offsets().iter().flatten() {
            let clock = match clock.as_str() {
                "monotonic" => "monotonic",
                "boottime" => "boottime",
                other => {
                    return Err(Error::config(
                        "linux.timeOffsets",
                        format!("unknown clock {other:?} (monotonic or boottime)"),
                    ))
                }
            };
            text.push_str(&format!(
                "{clock} {} {}\n",
                off.secs().unwrap_or(0),
                off.nanosecs().unwrap_or(0)
            ));
        }
        if !text.is_empty() {
            std::fs::write("/proc/self/timens_offsets", text)
                .map_err(|e| Error::config("linux.timeOffsets", e.to_string()))?;
        }
        Ok(())
    }

    /// Asks the runtime to run prestart/createRuntime hooks and learns our host PID.
    fn run_hooks_in_runtime(&self, chan: &Channel) -> Result<()> {
        chan.send(&Message::RunHooks)?;
        match chan.recv()? {
            Some(Message::HooksDone(pid)) => {
                self.host_pid.set(pid);
                Ok(())
            }
            Some(other) => Err(Error::Child(format!("expected HooksDone, got {other:?}"))),
            None => Err(Error::Child("the runtime went away during create".into())),
        }
    }

    /// Whether the container has a mount namespace of its own (new or joined) to mount in.
    fn readonly_root(&self) -> bool {
        self.spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
    }

    /// Whether the container's mount namespace is not the runtime's: a joined one that is
    /// (`/proc/1/ns/mnt` on most hosts) is treated as none, or the rootfs would be built,
    /// and pivoted into, in the host's mounts.
    fn owns_mounts(&self) -> bool {
        self.plan.owns(NsType::Mount)
    }

    /// Without a mount namespace of its own the container shares the host's mounts: nothing
    /// is mounted (that would change the host), the process is only chrooted into the rootfs.
    fn chroot_rootfs(&self, chan: &Channel, process: &Process) -> Result<()> {
        if self.readonly_root() {
            // Remounting the chroot's "/" read-only would remount the host's mount it is on.
            return Err(Error::config(
                "root.readonly",
                "a read-only root needs a mount namespace of the container's own",
            ));
        }
        if self.spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
            tracing::warn!(
                "mounts are ignored: the container shares the runtime's mount namespace"
            );
        }
        let root = nix::fcntl::open(
            self.rootfs,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(|| format!("opening the rootfs {}", self.rootfs.display()))?;
        open_in_root(&root, process.cwd(), Create::Dir)
            .map_err(|e| Error::config("process.cwd", e.to_string()))?;
        self.run_hooks_in_runtime(chan)?;
        if let Some(h) = self.spec.hooks() {
            let state = (self.opts.hook_state)(self.host_pid.get(), "creating");
            hooks::run_all(h.create_container().as_deref().unwrap_or(&[]), &state)?;
        }
        nix::unistd::chroot(self.rootfs).ctx(|| "chroot to the rootfs".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())
    }

    fn build_rootfs(&self, chan: &Channel, process: &Process) -> Result<()> {
        let linux = self.spec.linux().clone().unwrap_or_default();
        if !self.owns_mounts() {
            return self.chroot_rootfs(chan, process);
        }
        let prop = pivot::rootfs_propagation(linux.rootfs_propagation().as_deref())?;
        // An unbindable / cannot be bind-mounted: isolate first, apply it after pivot_root.
        let first = if prop.contains(nix::mount::MsFlags::MS_UNBINDABLE) {
            nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC
        } else {
            prop
        };
        let root = pivot::prepare_root(self.rootfs, first)?;
        let in_user_ns = self.plan.is_new(NsType::User) || self.plan.joins(NsType::User).is_some();
        let ctx = RootfsContext {
            rootfs: self.rootfs,
            bundle: self.opts.bundle,
            in_user_ns,
            cgroups: Some(self.cgroups),
            new_cgroup_ns: self.plan.is_new(NsType::Cgroup),
            mount_label: self.lsm.mount_label.as_deref(),
        };
        let spec_mounts = self.spec.mounts().clone().unwrap_or_default();
        mount::mount_all(&root, &spec_mounts, &ctx)?;
        let setup_dev = devices::sets_up_dev(&spec_mounts);
        devices::create_devices(
            &root,
            linux.devices().as_deref().unwrap_or(&[]),
            setup_dev,
            in_user_ns,
        )?;
        if setup_dev {
            let has_devpts = spec_mounts
                .iter()
                .any(|m| m.destination() == Path::new("/dev/pts"));
            devices::dev_symlinks(&root, has_devpts)?;
        }
        // runc creates a missing cwd; the path is resolved inside the rootfs.
        open_in_root(&root, process.cwd(), Create::Dir)
            .map_err(|e| Error::config("process.cwd", e.to_string()))?;
        self.run_hooks_in_runtime(chan)?;
        if let Some(h) = self.spec.hooks() {
            let state = (self.opts.hook_state)(self.host_pid.get(), "creating");
            hooks::run_all(h.create_container().as_deref().unwrap_or(&[]), &state)?;
        }
        pivot::pivot_root(&root, self.rootfs, self.opts.no_pivot)?;
        if prop.intersects(nix::mount::MsFlags::MS_SHARED | nix::mount::MsFlags::MS_UNBINDABLE) {
            // The rootfs's parent had to be private (shared) or bindable (unbindable) until
            // pivot_root; the new root gets the propagation that was asked for.
            nix::mount::mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
                .ctx(|| "setting linux.rootfsPropagation on the new root".into())?;
        }
        Ok(())
    }
}

/// The workload, resolved and with the process's identity applied, ready for execve.
pub struct ReadyProcess {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// The seccomp filters are still to be loaded, right before execve.
    pub late_filter: bool,
    /// Notify fds by filter index, for each filter's `listenerPath`.
    pub notify_fds: Vec<(usize, OwnedFd)>,
}

/// Everything between "inside the container's namespaces and root" and execve that the init
/// and exec'd processes share: terminal, rlimits, executable lookup, cwd, capabilities, user,
/// noNewPrivileges, umask.
#[allow(clippy::too_many_arguments)]
pub fn prepare_process(
    process: &Process,
    personality: Option<libc::c_ulong>,
    extra_env: &[String],
    console: Option<RawFd>,
    set_rlimits: bool,
    filters: &[seccomp::Filter],
    keep_fds: i32,
    send_notify_fd: &dyn Fn(usize, &OwnedFd) -> Result<()>,
) -> Result<ReadyProcess> {
    if process.terminal().unwrap_or(false) {
        let console = console.ok_or_else(|| {
            Error::config(
                "process.terminal",
                "a terminal was requested but no --console-socket was given",
            )
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let pty = tty::open_pty(size)?;
        tty::send_fd(console, pty.name.as_bytes(), pty.master.as_raw_fd())?;
        drop(pty.master);
        tty::make_controlling_tty(&pty.slave)?;
    }
    // The runtime may block signals it forwards; the workload starts with none blocked.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    if set_rlimits {
        process::set_rlimits(process.rlimits().as_deref().unwrap_or(&[]))?;
    }
    let env = process::build_env(process, extra_env);
    let args = process.args().clone().unwrap_or_default();
    let exe = process::find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;
    process::enter_cwd(process.cwd())?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN: load it before the
    // capabilities go (runc's order). A filter with a notify fd is loaded now too, so the
    // fd can reach the runtime before `create` returns.
    let early = !filters.is_empty() && (!nnp || filters.iter().any(|f| f.has_notify()));
    // Now, before any filter: profiles often lack close_range. Every fd the runtime opens
    // from here on is close-on-exec by construction.
    proc::cloexec_from(keep_fds)?;
    let mut notify_fds = Vec::new();
    if early {
        for (i, f) in filters.iter().enumerate() {
            if let Some(fd) = f.load()? {
                // At once: the next syscall may already be one this filter traps, and it
                // waits until the fd reaches its listener.
                send_notify_fd(i, &fd)?;
                notify_fds.push((i, fd));
            }
        }
    }
    let mut caps = CapabilityPlan::new(process.capabilities().as_ref())?;
    caps.limit_to_available();
    caps.apply_bounding()?;
    let user = process.user();
    process::set_user(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    caps.apply_rest()?;
    if process.no_new_privileges().unwrap_or(false) {
        process::set_no_new_privs()?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022),
    ));
    if let Some(p) = personality {
        process::set_personality(p)?;
    }
    Ok(ReadyProcess {
        exe,
        args,
        env,
        late_filter: !filters.is_empty() && !early,
        notify_fds,
    })
}

/// Blocks until `start` connects and sends its byte.
fn wait_for_start(listener: RawFd) -> Result<std::fs::File> {
    loop {
        let fd = match accept(listener) {
            Ok(fd) => fd,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "waiting for start".into()),
        };
        // SAFETY: accept returned a new fd that we own.
        let mut conn = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fd)) };
        let _ = nix::fcntl::fcntl(
            conn.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let mut b = [0u8; 1];
        if matches!(conn.read(&mut b), Ok(1)) {
            return Ok(conn);
        }
    }
}
