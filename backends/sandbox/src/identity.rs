//! Whose identity the supervisor's thread acts with, and what the callers' identities are.
//!
//! The supervisor performs each call with the caller's filesystem identity (fsuid/fsgid,
//! groups, effective capabilities, umask), so its own root privileges never lend the
//! container access it does not have. Switching identity costs a credential commit per
//! part, and reading a caller's identity from /proc costs more than the call itself, so:
//! - the identity applied stays applied after a call ([`Identity::apply`] changes only the
//!   parts that differ), and the supervisor takes its full privilege back only for its own
//!   business, and only where the caller's identity does not suffice ([`Identity::privileged`]);
//! - callers' identities are cached per thread ([`CredsCache`]), each entry held by a pidfd
//!   of that very thread, so a reused thread ID can never be mistaken for the cached one.
//!   A thread's credentials change only by its own syscalls, and the profile traps every one
//!   that can change them (the setuid family, setgroups, capset, umask, execve): those drop
//!   the entry before the kernel runs them.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

type R<T> = std::result::Result<T, Errno>;

/// A caller's identity for filesystem checks, from /proc/<tid>/status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub umask: u32,
    /// The caller's PID inside its own pid namespace (for /proc/self).
    pub ns_pid: u32,
    /// Its process's PID there.
    pub ns_tgid: u32,
    pub tgid: u32,
}

impl Creds {
    pub fn parse(text: &str, tid: u32) -> R<Creds> {
        let line = |name: &str| text.lines().find_map(|l| l.strip_prefix(name));
        let numbers = |name: &str| -> Vec<u64> {
            line(name)
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|w| w.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let uid = numbers("Uid:");
        let gid = numbers("Gid:");
        if uid.len() < 4 || gid.len() < 4 {
            return Err(Errno::ESRCH);
        }
        Ok(Creds {
            uid: uid[0] as u32,
            euid: uid[1] as u32,
            fsuid: uid[3] as u32,
            gid: gid[0] as u32,
            egid: gid[1] as u32,
            fsgid: gid[3] as u32,
            groups: numbers("Groups:").into_iter().map(|g| g as u32).collect(),
            cap_eff: line("CapEff:")
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0),
            umask: line("Umask:")
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                .unwrap_or(0o022),
            ns_pid: numbers("NSpid:").last().copied().unwrap_or(0) as u32,
            ns_tgid: numbers("NStgid:").last().copied().unwrap_or(0) as u32,
            tgid: numbers("Tgid:").first().copied().unwrap_or(tid as u64) as u32,
        })
    }
}

/// PIDFD_THREAD (Linux 6.9): a pidfd for one thread, not its thread group.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

struct Entry {
    /// Readable once the thread has exited: from then on its ID may name another thread.
    pidfd: OwnedFd,
    creds: Rc<Creds>,
}

/// Callers' identities by thread ID.
pub(crate) struct CredsCache {
    entries: HashMap<u32, Entry>,
    /// Processes with an execve in flight by a thread other than their leader, and a pidfd of
    /// that thread. Until it ends, nothing of the process is cached: if the exec succeeds, the
    /// exec'ing thread takes over the leader's thread ID (and its pidfd, which stays alive),
    /// so an identity cached for the old leader meanwhile would serve the new image.
    exec_in_flight: HashMap<u32, (u32, OwnedFd)>,
    /// Kernels without PIDFD_THREAD: read /proc every time.
    disabled: bool,
    /// The container's user namespace (as /proc/<pid>/ns/user reads): capabilities count
    /// only there. A caller in any other one (a new user namespace would give its first
    /// process every capability) is refused; the profile also refuses making one.
    user_ns: String,
}

/// Cached threads before exited ones are swept out.
const SWEEP_AT: usize = 1024;

impl CredsCache {
    pub fn new(user_ns: String) -> CredsCache {
        CredsCache {
            entries: HashMap::new(),
            exec_in_flight: HashMap::new(),
            disabled: false,
            user_ns,
        }
    }

    /// The cached identity of `tid`, if that very thread is still alive.
    pub fn get(&mut self, tid: u32) -> Option<Rc<Creds>> {
        let tgid = self.entries.get(&tid)?.creds.tgid;
        if !self.settle_exec(tgid, tid) {
            return None;
        }
        // Looked up again: settling an exec that succeeded drops the process's entries.
        let e = self.entries.get(&tid)?;
        alive(e.pidfd.as_raw_fd()).then(|| e.creds.clone())
    }

    /// An execve by `tid` of process `tgid` is about to be let through.
    pub fn exec_starts(&mut self, tgid: u32, tid: u32) {
        self.forget_process(tgid);
        if tid == tgid {
            // The leader itself: its other threads die in the exec, and it makes no other
            // call until the exec returns.
            return;
        }
        // SAFETY: pidfd_open with integers; a new fd is returned.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
        if let Ok(fd) = Errno::result(fd) {
            // SAFETY: pidfd_open returned a new fd that we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            self.exec_in_flight.insert(tgid, (tid, fd));
        } else {
            // No way to watch it: cache nothing of the process from here.
            self.disabled = true;
        }
    }

    /// Whether an identity of `tgid` (seen in a call from `tid`) may be cached or used from
    /// the cache: not while an exec of the process is in flight. The exec is over when its
    /// thread makes a call again (it failed) or is gone (it succeeded, or the thread died);
    /// after a success, everything cached for the process before is dropped.
    fn settle_exec(&mut self, tgid: u32, tid: u32) -> bool {
        let Some((exec_tid, fd)) = self.exec_in_flight.get(&tgid) else {
            return true;
        };
        if *exec_tid == tid {
            self.exec_in_flight.remove(&tgid);
            return true;
        }
        if alive(fd.as_raw_fd()) {
            return false;
        }
        self.exec_in_flight.remove(&tgid);
        self.forget_process(tgid);
        true
    }

    /// Reads `tid`'s identity through the host's /proc and caches it. `still_caller` must
    /// say whether the notification is still pending: checked after the pidfd is opened, it
    /// proves that the pidfd is the caller's thread and not a successor with its ID.
    pub fn load(
        &mut self,
        host_proc: &OwnedFd,
        tid: u32,
        still_caller: impl Fn() -> bool,
        user_ns_of: impl Fn(u32) -> R<std::ffi::OsString>,
    ) -> R<Rc<Creds>> {
        let pidfd = if self.disabled {
            None
        } else {
            // SAFETY: pidfd_open with integers; a new fd is returned.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
            match Errno::result(fd) {
                // SAFETY: pidfd_open returned a new fd that we own.
                Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
                Err(Errno::EINVAL) => {
                    tracing::debug!("sandbox: no PIDFD_THREAD; caller identities are not cached");
                    self.disabled = true;
                    None
                }
                Err(e) => return Err(e),
            }
        };
        let text = crate::procfs::read_at(host_proc, &format!("{tid}/status"))?;
        let creds = Rc::new(Creds::parse(&text, tid)?);
        let ns = user_ns_of(tid)?;
        if ns != std::ffi::OsStr::new(&self.user_ns) {
            tracing::warn!(
                "sandbox: refused a call from {tid}, which is in another user namespace"
            );
            return Err(Errno::EPERM);
        }
        if !still_caller() {
            return Err(Errno::ENOENT);
        }
        if !self.settle_exec(creds.tgid, tid) {
            return Ok(creds);
        }
        if let Some(pidfd) = pidfd {
            if self.entries.len() >= SWEEP_AT {
                self.entries.retain(|_, e| alive(e.pidfd.as_raw_fd()));
            }
            self.entries.insert(
                tid,
                Entry {
                    pidfd,
                    creds: creds.clone(),
                },
            );
        }
        Ok(creds)
    }

    /// The thread is about to change its own credentials.
    pub fn forget(&mut self, tid: u32) {
        self.entries.remove(&tid);
    }

    /// Every thread of the process: an execve replaces them all, and the thread that runs it
    /// takes the group leader's ID.
    pub fn forget_process(&mut self, tgid: u32) {
        self.entries.retain(|_, e| e.creds.tgid != tgid);
    }

    /// A umask is shared by every thread that shares the fs context, which need not be one
    /// process: everything is read again.
    pub fn forget_all(&mut self) {
        self.entries.clear();
    }
}

fn alive(pidfd: RawFd) -> bool {
    // SAFETY: the fd is an open pidfd the cache owns for the length of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(pidfd) };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => false,
        // Unsure: treat as gone, so the identity is read again.
        Err(_) => false,
    }
}

/// Makes the calling thread's real and effective IDs the caller's (its saved IDs stay the
/// supervisor's root), with raw per-thread syscalls: Unix socket peers see them in
/// SO_PEERCRED and SCM_CREDENTIALS when the supervisor connects or sends for the caller.
/// Its filesystem IDs and effective capabilities end up the caller's too; a thread that goes
/// on serving returns to root afterwards (see [`Identity::with_caller_ids`]).
pub(crate) fn set_caller_ids(c: &Creds) -> R<()> {
    let keep = u32::MAX;
    // Changing IDs takes CAP_SETUID and CAP_SETGID, which the caller's identity, applied to
    // this thread, often lacks (a caller that is not root has none): the supervisor's own
    // capabilities for the changes, the caller's for the call.
    set_effective_caps(None)?;
    // SAFETY: integer arguments; the gid first, while the thread is still root.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, c.gid, c.egid, keep) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, c.uid, c.euid, keep) })?;
    // Leaving euid 0 emptied the effective set; the saved uid 0 kept the permitted one.
    set_effective_caps(None)?;
    // The IDs moved the filesystem IDs to the effective ones; the caller's may differ.
    // SAFETY: integer arguments; each setfs* call with -1 only reports the value in effect.
    let (fsgid, fsuid) = unsafe {
        libc::setfsgid(c.fsgid);
        libc::setfsuid(c.fsuid);
        (
            libc::setfsgid(u32::MAX) as u32,
            libc::setfsuid(u32::MAX) as u32,
        )
    };
    if (fsgid, fsuid) != (c.fsgid, c.fsuid) {
        return Err(Errno::EPERM);
    }
    set_effective_caps(Some(c.cap_eff))
}

/// Sets the calling thread's effective capabilities to `effective` (all of its permitted
/// ones for None), within its permitted set, which stays as it is.
fn set_effective_caps(effective: Option<u64>) -> R<()> {
    let mut data = [CapData::default(); 2];
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capget writes two CapData (v3), which `data` holds.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    let permitted = data[0].permitted as u64 | (data[1].permitted as u64) << 32;
    let e = effective.unwrap_or(permitted) & permitted;
    data[0].effective = e as u32;
    data[1].effective = (e >> 32) as u32;
    // SAFETY: capset reads the header and two CapData (v3), all ours.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    Ok(())
}

/// Undoes [`set_caller_ids`]: the saved IDs are root, so the thread may return to them.
fn set_root_ids() -> R<()> {
    let keep = u32::MAX;
    // SAFETY: integer arguments; the uid first (the saved uid is 0), then the gid as root.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, keep) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, keep) })?;
    Ok(())
}

/// The filesystem identity a thread acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    /// Effective capabilities (a bit per capability), within the supervisor's permitted set.
    pub caps: u64,
    pub umask: u32,
}

impl Target {
    /// The caller's filesystem identity, or with `real` its real IDs (access(2) without
    /// AT_EACCESS checks those).
    pub fn of(c: &Creds, real: bool) -> Target {
        let (fsuid, fsgid) = if real {
            (c.uid, c.gid)
        } else {
            (c.fsuid, c.fsgid)
        };
        Target {
            fsuid,
            fsgid,
            groups: c.groups.clone(),
            caps: c.cap_eff,
            umask: c.umask,
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The supervisor thread's identity, applied lazily.
pub(crate) struct Identity {
    own: Target,
    permitted: u64,
    inheritable: u64,
    applied: Target,
}

impl Identity {
    /// The calling thread's identity as it is now (the supervisor's own: root, with its
    /// permitted capabilities).
    pub fn current() -> R<Identity> {
        let mut data = [CapData::default(); 2];
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        // SAFETY: capget writes two CapData (v3), which `data` holds.
        Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
        let join = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        let permitted = join(data[0].permitted, data[1].permitted);
        // SAFETY: umask cannot fail; set back at once.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        let own = Target {
            // SAFETY: the setfs* calls with -1 only report the current value.
            fsuid: unsafe { libc::setfsuid(u32::MAX) } as u32,
            // SAFETY: as above.
            fsgid: unsafe { libc::setfsgid(u32::MAX) } as u32,
            groups: Vec::new(),
            caps: join(data[0].effective, data[1].effective),
            umask,
        };
        Ok(Identity {
            applied: own.clone(),
            own: Target {
                caps: permitted,
                ..own
            },
            permitted,
            inheritable: join(data[0].inheritable, data[1].inheritable),
        })
    }

    /// Makes `t` the thread's identity, changing only what differs from the applied one.
    pub fn apply(&mut self, t: &Target) -> R<()> {
        let caps = t.caps & self.permitted;
        if self.applied.groups != t.groups {
            // The raw syscall, per thread: glibc's setgroups would change every thread.
            // SAFETY: reads `len` gids from the vector, which is ours.
            Errno::result(unsafe {
                libc::syscall(libc::SYS_setgroups, t.groups.len(), t.groups.as_ptr())
            })?;
            self.applied.groups = t.groups.clone();
        }
        if self.applied.fsgid != t.fsgid {
            // SAFETY: integer argument; setfsgid reports failure only through a second call.
            unsafe { libc::setfsgid(t.fsgid) };
            // SAFETY: as above; -1 changes nothing and reports the value now in effect.
            if unsafe { libc::setfsgid(u32::MAX) } as u32 != t.fsgid {
                return Err(Errno::EPERM);
            }
            self.applied.fsgid = t.fsgid;
        }
        if self.applied.fsuid != t.fsuid {
            // SAFETY: as for setfsgid.
            unsafe { libc::setfsuid(t.fsuid) };
            // SAFETY: as above.
            if unsafe { libc::setfsuid(u32::MAX) } as u32 != t.fsuid {
                return Err(Errno::EPERM);
            }
            self.applied.fsuid = t.fsuid;
        }
        if self.applied.caps != caps {
            let split = |v: u64| (v as u32, (v >> 32) as u32);
            let (e0, e1) = split(caps);
            let (p0, p1) = split(self.permitted);
            let (i0, i1) = split(self.inheritable);
            let mut header = CapHeader {
                version: CAP_V3,
                pid: 0,
            };
            let data = [
                CapData {
                    effective: e0,
                    permitted: p0,
                    inheritable: i0,
                },
                CapData {
                    effective: e1,
                    permitted: p1,
                    inheritable: i1,
                },
            ];
            // SAFETY: capset reads the header and two CapData (v3), all ours.
            Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
            self.applied.caps = caps;
        }
        if self.applied.umask != t.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(t.umask as libc::mode_t) };
            self.applied.umask = t.umask;
        }
        Ok(())
    }

    /// Runs `f` with the caller's real and effective IDs too (see [`set_caller_ids`]), then
    /// returns to root and forgets what was applied, so that the next call applies it all.
    pub fn with_caller_ids<T>(&mut self, c: &Creds, f: impl FnOnce() -> T) -> R<T> {
        set_caller_ids(c)?;
        let r = f();
        set_root_ids()?;
        // fsuid, fsgid and the effective capabilities moved with the IDs: nothing is known.
        self.applied.fsuid = u32::MAX;
        self.applied.fsgid = u32::MAX;
        self.applied.caps = u64::MAX;
        Ok(r)
    }

    /// Runs the supervisor's own step `f` (reaching into the caller's /proc entry or memory)
    /// first with the identity applied, and only if that is refused with the supervisor's
    /// full privilege, which is then given up again.
    pub fn privileged<T>(&mut self, f: impl Fn() -> R<T>) -> R<T> {
        match f() {
            Err(Errno::EPERM | Errno::EACCES) if self.applied != self.own => {
                let before = self.applied.clone();
                let own = self.own.clone();
                self.apply(&own)?;
                let r = f();
                self.apply(&before)?;
                r
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsh\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t812\n\
        Ngid:\t0\nPid:\t815\nPPid:\t1\nUid:\t1000\t1001\t1002\t1003\n\
        Gid:\t2000\t2001\t2002\t2003\nGroups:\t10 20 \nNStgid:\t812\t1\nNSpid:\t815\t4\n\
        CapEff:\t00000000a80425fb\n";

    #[test]
    fn parses_the_fields_a_filesystem_check_needs() {
        let c = Creds::parse(STATUS, 815).unwrap();
        assert_eq!(
            c,
            Creds {
                uid: 1000,
                euid: 1001,
                fsuid: 1003,
                gid: 2000,
                egid: 2001,
                fsgid: 2003,
                groups: vec![10, 20],
                cap_eff: 0xa80425fb,
                umask: 0o027,
                ns_pid: 4,
                ns_tgid: 1,
                tgid: 812,
            }
        );
        assert_eq!(Creds::parse("Name:\tx\n", 1), Err(Errno::ESRCH));
        let real = Target::of(&c, true);
        assert_eq!((real.fsuid, real.fsgid), (1000, 2000));
    }

    #[test]
    fn a_cached_identity_lives_as_long_as_its_thread() {
        let proc_dir = nix::fcntl::open(
            "/proc",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let own = std::fs::read_link("/proc/self/ns/user").unwrap();
        let ns_of = |tid: u32| -> R<std::ffi::OsString> {
            Ok(std::fs::read_link(format!("/proc/{tid}/ns/user"))
                .unwrap()
                .into_os_string())
        };
        let mut cache = CredsCache::new(own.to_string_lossy().into_owned());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let loaded = cache.load(&proc_dir, tid, || true, ns_of).unwrap();
        if cache.disabled {
            eprintln!("SKIPPED: this kernel has no PIDFD_THREAD; nothing is cached");
            done_tx.send(()).unwrap();
            t.join().unwrap();
            return;
        }
        assert_eq!(cache.get(tid), Some(loaded));
        // A notification that is no longer pending: nothing cached, the call is dropped.
        let mut other = CredsCache::new(own.to_string_lossy().into_owned());
        assert_eq!(
            other.load(&proc_dir, tid, || false, ns_of),
            Err(Errno::ENOENT)
        );
        assert!(other.get(tid).is_none());
        done_tx.send(()).unwrap();
        t.join().unwrap();
        // The thread is gone: its ID may be handed out again, the entry is worthless. (join
        // returns when the thread's TID is cleared, a moment before its exit is complete.)
        let gone = (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            cache.get(tid).is_none()
        });
        assert!(gone, "the entry outlived its thread");
        cache.forget_all();
        assert!(cache.entries.is_empty());
    }
}
