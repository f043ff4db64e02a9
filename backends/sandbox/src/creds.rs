//! What the callers' identities are. Each is read from the host's /proc/<tid>/status
//! ([`Creds`]), which costs more than the call itself, so they are cached per thread
//! ([`CredsCache`]). Each entry is held by a pidfd of that very thread, so a reused thread ID
//! can never be mistaken for the cached one. A thread's credentials change only by its own
//! syscalls, and the profile traps every one that can change them (the setuid family,
//! setgroups, capset, umask, execve): those drop the entry before the kernel runs them.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

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
    creds: Arc<Creds>,
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
    pub fn get(&mut self, tid: u32) -> Option<Arc<Creds>> {
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
    ) -> R<Arc<Creds>> {
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
        let creds = Arc::new(Creds::parse(&text, tid)?);
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

#[cfg(test)]
mod tests {
    use super::*;

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
