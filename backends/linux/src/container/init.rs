//! The container's init, a fork of the runtime running in the new namespaces: it enters or
//! creates the rest of them, builds the rootfs, sets hostname and paths, prepares the
//! process, reports ready, and waits for `start` to execve the workload.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::accept;
use oci_spec::runtime::{LinuxNamespaceType as NsType, Process, Spec};

use super::prepare::prepare_process;
use super::validate::personality_of_spec;
use super::CreateOptions;
use crate::cgroups::CgroupSet;
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::lsm;
use crate::namespaces::NamespacePlan;
use crate::proc::clone_process;
use crate::process;
use crate::rootfs::mount::{self, RootfsContext};
use crate::rootfs::open::{open_in_root, Create};
use crate::rootfs::{devices, paths, pivot};
use crate::seccomp;
use crate::sync::{Channel, Message};
use crate::sysctl;
use crate::trampoline::Trampoline;

pub(super) struct Init<'a> {
    pub(super) opts: &'a CreateOptions<'a>,
    pub(super) spec: &'a Spec,
    pub(super) plan: &'a NamespacePlan,
    pub(super) rootfs: &'a Path,
    pub(super) cgroups: &'a CgroupSet,
    pub(super) console: Option<RawFd>,
    pub(super) two_stage: bool,
    pub(super) filters: &'a [seccomp::Filter],
    /// The init's PID in the runtime's pid namespace, learnt from HooksDone.
    pub(super) host_pid: std::cell::Cell<i32>,
    /// What the workload is exec'd through (see `trampoline`).
    pub(super) trampoline: std::cell::RefCell<Option<Trampoline>>,
    pub(super) lsm: &'a lsm::Plan,
}

impl Init<'_> {
    /// What a hook run in the container gets without an `env` of its own: the process's
    /// environment (as runc's init has set it by then), never the host runtime's.
    fn hook_env(&self) -> Vec<String> {
        match self.spec.process() {
            Some(p) => crate::process::spec_env(p, &self.opts.request.io.extra_env),
            None => Vec::new(),
        }
    }

    pub(super) fn run(&self, chan: &Channel) -> Result<Infallible> {
        process::set_non_dumpable()?;
        for fd in &self.opts.request.io.close_in_child {
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
                process::with_dumpable(|| {
                    chan.send(&Message::MapIds)?;
                    chan.expect(Message::IdsMapped)
                })?;
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
            process::with_dumpable(|| {
                chan.send(&Message::MapIds)?;
                chan.expect(Message::IdsMapped)
            })?;
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
        if let Some(p) = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.memory_policy().as_ref())
        {
            crate::mempolicy::apply(p)?;
        }
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        let keep = 3 + self.opts.request.io.preserve_fds;
        let ready = match self.spec.process() {
            Some(p) => Some(prepare_process(
                p,
                personality_of_spec(self.spec)?,
                &self.opts.request.io.extra_env,
                self.console,
                true,
                self.filters,
                keep,
                &|i, fd| chan.send_with_fd(&Message::NotifyFd(i), fd.as_raw_fd()),
            )?),
            None => None,
        };
        let listener = process::move_fd_above(self.opts.request.start_listener, keep)?;
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
            let env = self.hook_env();
            let hooks = h.start_container().as_deref().unwrap_or(&[]);
            if let Err(e) = hooks::run_all(hooks, &state, hooks::Inherit::Process(&env)) {
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

    /// Whether the bundle asks for a read-only root (`root.readonly`).
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
            // Remounting the chroot's "/" read-only would remount the host's mount it is on,
            // and a container that shares the host's mounts can write the host's files
            // anyway: runc ignores the field here, silently, and so does strata.
            tracing::debug!("root.readonly ignored: the container shares the runtime's mounts");
        }
        if self.spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
            // runc says nothing of it either: the workload's stderr is the user's.
            tracing::debug!(
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
            let env = self.hook_env();
            let hooks = h.create_container().as_deref().unwrap_or(&[]);
            hooks::run_all(hooks, &state, hooks::Inherit::Process(&env))?;
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
        // Or the runtime itself runs in one (rootless podman's): no mknod there either.
        let in_user_ns = self.plan.is_new(NsType::User)
            || self.plan.joins(NsType::User).is_some()
            || crate::rootless();
        let ctx = RootfsContext {
            rootfs: self.rootfs,
            bundle: self.opts.request.bundle,
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
            let env = self.hook_env();
            let hooks = h.create_container().as_deref().unwrap_or(&[]);
            hooks::run_all(hooks, &state, hooks::Inherit::Process(&env))?;
        }
        pivot::pivot_root(&root, self.rootfs, self.opts.request.no_pivot)?;
        if prop.intersects(nix::mount::MsFlags::MS_SHARED | nix::mount::MsFlags::MS_UNBINDABLE) {
            // The rootfs's parent had to be private (shared) or bindable (unbindable) until
            // pivot_root; the new root gets the propagation that was asked for.
            nix::mount::mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
                .ctx(|| "setting linux.rootfsPropagation on the new root".into())?;
        }
        Ok(())
    }
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
