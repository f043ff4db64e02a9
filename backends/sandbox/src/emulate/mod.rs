//! Performing a trapped syscall for the container. The supervisor runs inside the container's
//! mount namespace and chrooted at its root, so the kernel resolves every path exactly as it
//! would for the caller: absolute symlinks and `..` stay inside the root. On top of that,
//! paths are resolved with openat2(RESOLVE_NO_MAGICLINKS), so /proc/<pid>/root and friends
//! cannot carry a lookup elsewhere.
//!
//! Every operation works on what was resolved once: the path is read from the caller's
//! memory a single time, resolved to an fd, the policy is checked against that fd's real
//! path, and the operation is done on the fd (or its parent directory's fd and the last
//! name). A thread that rewrites the path afterwards changes nothing (no TOCTOU).
//!
//! The caller's filesystem identity is applied for each operation: fsuid/fsgid, groups,
//! umask and effective capabilities, so the supervisor's root privileges never lend the
//! container access it does not have (see `identity`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;

use crate::creds::{Creds, CredsCache};
use crate::identity::{Identity, Target};
use crate::notif::{self, Notif, Outcome};
use crate::policy::{Access, Policy};

mod checks;
mod decode;
mod inflight;
mod op;
mod open;
mod perform;
mod resolve;
mod socket;

use op::*;
use open::*;
use resolve::*;
use socket::*;

pub(crate) struct Emulator {
    /// The host's /proc, opened before the chroot: the notification PIDs are host PIDs.
    pub host_proc: OwnedFd,
    pub policy: Policy,
    /// Denials already logged (each logged once).
    logged: HashSet<String>,
    /// The container's root (the supervisor's, after its chroot), where absolute paths start.
    root: OwnedFd,
    /// Accesses the policy grants on every path: those need no path to check.
    everywhere: [bool; 3],
    /// Shared by the serving threads: a thread's calls may be served by any of them.
    cache: Arc<Mutex<CredsCache>>,
    /// The calls being performed for each caller thread, by any serving thread.
    inflight: Arc<inflight::InFlight>,
    /// The mark of the call this thread performs now, which a deferred call takes along.
    performing: Option<inflight::Performing>,
    /// This serving thread's applied identity (identities are per thread).
    ident: RefCell<Identity>,
    /// The container's device rules, for opens of device nodes.
    devices: Vec<strata_linux::cgroups::devices::Rule>,
    /// The PID the caller of the call being performed has in its own pid namespace, and its
    /// process's.
    caller_ns_pid: u32,
    caller_ns_tgid: u32,
    /// The container shares the host's network namespace (and with it the host's abstract
    /// Unix socket names).
    host_network: bool,
    /// Abstract Unix socket names the container has bound (the bytes after sun_family),
    /// shared by the serving threads.
    abstract_names: Arc<Mutex<HashSet<Vec<u8>>>>,
}

type R<T> = std::result::Result<T, Errno>;

impl Emulator {
    /// Called inside the container's root, with the supervisor's own identity.
    pub fn new(
        host_proc: OwnedFd,
        policy: Policy,
        devices: Vec<strata_linux::cgroups::devices::Rule>,
        user_ns: String,
        host_network: bool,
    ) -> R<Emulator> {
        let root = openat_raw(
            libc::AT_FDCWD,
            c"/",
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        let everywhere = [Access::Read, Access::Write, Access::Exec]
            .map(|a| policy.check(Path::new("/"), a).is_ok());
        Ok(Emulator {
            host_proc,
            policy,
            logged: HashSet::new(),
            root,
            everywhere,
            cache: Arc::new(Mutex::new(CredsCache::new(user_ns))),
            inflight: Arc::default(),
            performing: None,
            ident: RefCell::new(Identity::current()?),
            devices,
            caller_ns_pid: 0,
            caller_ns_tgid: 0,
            host_network,
            abstract_names: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// An emulator for another serving thread: the same container, policy and shared state,
    /// an identity of its own. Made on a thread with the supervisor's own identity (one that
    /// serves no call), which the new thread inherits and starts from.
    pub fn for_another_thread(&self) -> R<Emulator> {
        Ok(Emulator {
            host_proc: self.host_proc.try_clone().map_err(errno_of)?,
            policy: self.policy.clone(),
            logged: HashSet::new(),
            root: self.root.try_clone().map_err(errno_of)?,
            everywhere: self.everywhere,
            cache: Arc::clone(&self.cache),
            inflight: Arc::clone(&self.inflight),
            performing: None,
            ident: RefCell::new(Identity::current()?),
            devices: self.devices.clone(),
            caller_ns_pid: 0,
            caller_ns_tgid: 0,
            host_network: self.host_network,
            abstract_names: Arc::clone(&self.abstract_names),
        })
    }

    /// The credentials cache, which no thread holds while it panics (a panic ends the
    /// supervisor anyway).
    fn cache(&self) -> MutexGuard<'_, CredsCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn abstract_names(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.abstract_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The supervisor's own step, with its privilege only if the caller's identity is refused.
    fn privileged<T>(&self, f: impl Fn() -> R<T>) -> R<T> {
        self.ident.borrow_mut().privileged(f)
    }

    pub fn handle(&mut self, listener: BorrowedFd, n: &Notif) -> Outcome {
        let outcome = self.dispatch(listener, n);
        // The call is done here, unless a deferred one took its mark along.
        self.performing = None;
        match outcome {
            Ok(o) => o,
            Err(e) => Outcome::Errno(e),
        }
    }

    /// A copy of the caller's fd `fd` (the same open file), through pidfd_getfd.
    fn caller_fd(&self, c: &Creds, fd: i32) -> R<OwnedFd> {
        let pidfd = strata_linux::proc::pidfd_open(c.tgid as i32).map_err(errno_of)?;
        self.privileged(|| {
            // SAFETY: pidfd_getfd with our pidfd and the caller's fd number.
            let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
            let got = Errno::result(got)? as RawFd;
            // SAFETY: pidfd_getfd returned a new fd that we own.
            Ok(unsafe { OwnedFd::from_raw_fd(got) })
        })
    }

    /// Logs a denial the first time it happens (bounded, so a loop cannot flood the log).
    fn deny(&mut self, syscall: &str, what: &str, rule: &str) {
        let key = format!("{syscall} {what}: {rule}");
        if self.logged.len() < 1024 && self.logged.insert(key.clone()) {
            tracing::warn!("sandbox denied {key}");
        }
    }
}

impl Emulator {
    /// Runs `work` on a thread of its own, which answers the notification `id` itself. The
    /// thread starts with the identity the supervisor has applied for this caller, and the
    /// call counts as being performed (see `inflight`) until the thread is done with it.
    fn defer(
        &mut self,
        listener: BorrowedFd,
        id: u64,
        work: impl FnOnce() -> R<Outcome> + Send + 'static,
    ) -> R<Outcome> {
        defer(listener, id, self.performing.take(), work)
    }
}

fn defer(
    listener: BorrowedFd,
    id: u64,
    performing: Option<inflight::Performing>,
    work: impl FnOnce() -> R<Outcome> + Send + 'static,
) -> R<Outcome> {
    let listener = listener.try_clone_to_owned().map_err(errno_of)?;
    // The threads are the supervisor's, outside the container's pids limit: a bounded number.
    if !crate::waits::reserve() {
        return Err(Errno::EAGAIN);
    }
    let spawned = std::thread::Builder::new()
        .name("sandbox-wait".into())
        .spawn(move || {
            // Until the answer: the supervisor may interrupt the wait if the caller goes away
            // (see `waits`).
            let registered = crate::waits::begin(id, listener.as_raw_fd());
            // A filesystem context of its own, so that the serving thread's next callers'
            // umasks and directories do not reach it. (What a deferred call does, a reopen
            // through /proc or a connect from a checked directory fd, reads neither.)
            let outcome = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS) {
                Ok(()) => work().unwrap_or_else(Outcome::Errno),
                Err(e) => Outcome::Errno(e),
            };
            drop(performing);
            drop(registered);
            notif::answer(listener.as_fd(), id, outcome);
            crate::waits::release();
        });
    if spawned.is_err() {
        crate::waits::release();
        return Err(Errno::EAGAIN);
    }
    Ok(Outcome::Deferred)
}

/// The errno behind an I/O error (EIO for one that has none).
fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `self/fd/N` relative to the host's /proc: reaching an fd's inode again with new flags.
fn proc_fd_path(fd: RawFd) -> CString {
    CString::new(format!("self/fd/{fd}")).expect("no NUL in a number")
}
