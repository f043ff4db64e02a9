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

use nix::errno::Errno;

use crate::identity::{Creds, CredsCache, Identity, Target};
use crate::notif::{self, Notif};
use crate::policy::{Access, Policy};

/// What to answer the caller.
pub(crate) enum Outcome {
    Value(i64),
    Errno(Errno),
    /// Install the fd in the caller as the result.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    /// Let the kernel run it (execve and the credential changes).
    Continue,
    /// Handed to a worker thread that answers the caller itself: a call that may block
    /// (a blocking connect, a FIFO's open) must not hold up every other trapped call.
    Deferred,
}

impl From<Errno> for Outcome {
    fn from(e: Errno) -> Self {
        Outcome::Errno(e)
    }
}

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
    cache: CredsCache,
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
    /// Abstract Unix socket names the container has bound (the bytes after sun_family).
    abstract_names: HashSet<Vec<u8>>,
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
            cache: CredsCache::new(user_ns),
            ident: RefCell::new(Identity::current()?),
            devices,
            caller_ns_pid: 0,
            caller_ns_tgid: 0,
            host_network,
            abstract_names: HashSet::new(),
        })
    }

    /// The supervisor's own step, with its privilege only if the caller's identity is refused.
    fn privileged<T>(&self, f: impl Fn() -> R<T>) -> R<T> {
        self.ident.borrow_mut().privileged(f)
    }

    pub fn handle(&mut self, listener: BorrowedFd, n: &Notif) -> Outcome {
        match self.dispatch(listener, n) {
            Ok(o) => o,
            Err(e) => Outcome::Errno(e),
        }
    }

    fn dispatch(&mut self, listener: BorrowedFd, n: &Notif) -> R<Outcome> {
        let tid = n.pid;
        let a = n.data.args;
        let nr = n.data.nr as i64;
        match nr {
            libc::SYS_setuid
            | libc::SYS_setgid
            | libc::SYS_setreuid
            | libc::SYS_setregid
            | libc::SYS_setresuid
            | libc::SYS_setresgid
            | libc::SYS_setfsuid
            | libc::SYS_setfsgid
            | libc::SYS_setgroups
            | libc::SYS_capset => {
                // The thread changes its own identity: read it again at its next call. The
                // kernel runs the call itself; the arguments mean nothing to the policy.
                self.cache.forget(tid);
                return Ok(Outcome::Continue);
            }
            libc::SYS_umask => {
                self.cache.forget_all();
                return Ok(Outcome::Continue);
            }
            _ => {}
        }
        let path = |i: usize| -> R<Vec<u8>> { self.privileged(|| notif::read_cstr(tid, a[i])) };
        let mem = |at: u64, len: usize| -> R<Vec<u8>> {
            self.privileged(|| notif::read_mem(tid, at, len))
        };
        // Arguments are read once, here.
        let op = match nr {
            libc::SYS_open => Op::Open {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: a[1] as i32,
                mode: a[2] as u32,
                resolve: 0,
            },
            libc::SYS_openat => Op::Open {
                dirfd: a[0] as i32,
                path: path(1)?,
                flags: a[2] as i32,
                mode: a[3] as u32,
                resolve: 0,
            },
            libc::SYS_creat => Op::Open {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode: a[1] as u32,
                resolve: 0,
            },
            libc::SYS_openat2 => {
                if (a[3] as usize) < 24 {
                    return Err(Errno::EINVAL);
                }
                let how = mem(a[2], 24)?;
                if how.len() < 24 {
                    return Err(Errno::EFAULT);
                }
                let word = |i: usize| u64::from_ne_bytes(how[i * 8..i * 8 + 8].try_into().unwrap());
                Op::Open {
                    dirfd: a[0] as i32,
                    path: path(1)?,
                    flags: word(0) as i32,
                    mode: word(1) as u32,
                    resolve: word(2),
                }
            }
            libc::SYS_stat | libc::SYS_lstat => Op::Stat {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: if nr == libc::SYS_lstat {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                },
                buf: a[1],
                statx_mask: None,
            },
            libc::SYS_newfstatat => Op::Stat {
                dirfd: a[0] as i32,
                path: path(1)?,
                flags: a[3] as i32,
                buf: a[2],
                statx_mask: None,
            },
            libc::SYS_statx => Op::Stat {
                dirfd: a[0] as i32,
                path: path(1)?,
                flags: a[2] as i32,
                buf: a[4],
                statx_mask: Some(a[3] as u32),
            },
            libc::SYS_access => Op::Access {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                mode: a[1] as i32,
                flags: 0,
            },
            libc::SYS_faccessat => Op::Access {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as i32,
                flags: 0,
            },
            libc::SYS_faccessat2 => Op::Access {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as i32,
                flags: a[3] as i32,
            },
            libc::SYS_readlink => Op::Readlink {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                buf: a[1],
                size: a[2] as usize,
            },
            libc::SYS_readlinkat => Op::Readlink {
                dirfd: a[0] as i32,
                path: path(1)?,
                buf: a[2],
                size: a[3] as usize,
            },
            libc::SYS_unlink => Op::Unlink {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: 0,
            },
            libc::SYS_rmdir => Op::Unlink {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: libc::AT_REMOVEDIR,
            },
            libc::SYS_unlinkat => Op::Unlink {
                dirfd: a[0] as i32,
                path: path(1)?,
                flags: a[2] as i32,
            },
            libc::SYS_mkdir => Op::Mkdir {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                mode: a[1] as u32,
            },
            libc::SYS_mkdirat => Op::Mkdir {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as u32,
            },
            libc::SYS_rename => Op::Rename {
                olddir: libc::AT_FDCWD,
                old: path(0)?,
                newdir: libc::AT_FDCWD,
                new: path(1)?,
                flags: 0,
            },
            libc::SYS_renameat => Op::Rename {
                olddir: a[0] as i32,
                old: path(1)?,
                newdir: a[2] as i32,
                new: path(3)?,
                flags: 0,
            },
            libc::SYS_renameat2 => Op::Rename {
                olddir: a[0] as i32,
                old: path(1)?,
                newdir: a[2] as i32,
                new: path(3)?,
                flags: a[4] as u32,
            },
            libc::SYS_chmod => Op::Chmod {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                mode: a[1] as u32,
                flags: 0,
            },
            libc::SYS_fchmodat => Op::Chmod {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as u32,
                flags: 0,
            },
            libc::SYS_fchmodat2 => Op::Chmod {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as u32,
                flags: a[3] as i32,
            },
            libc::SYS_mknod => Op::Mknod {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                mode: a[1] as u32,
                dev: a[2],
            },
            libc::SYS_mknodat => Op::Mknod {
                dirfd: a[0] as i32,
                path: path(1)?,
                mode: a[2] as u32,
                dev: a[3],
            },
            libc::SYS_utimensat => {
                let times = if a[2] == 0 {
                    None
                } else {
                    let b = mem(a[2], 32)?;
                    Some(timespecs(&b, 1)?)
                };
                if a[1] == 0 {
                    // futimens(3): the fd itself, as the kernel reads a NULL path.
                    if a[0] as i32 == libc::AT_FDCWD {
                        return Err(Errno::EFAULT);
                    }
                    if a[3] != 0 {
                        return Err(Errno::EINVAL);
                    }
                    Op::FdMeta {
                        fd: a[0] as i32,
                        meta: Meta::Times(times),
                    }
                } else {
                    Op::Utimes {
                        dirfd: a[0] as i32,
                        path: path(1)?,
                        times,
                        flags: a[3] as i32,
                    }
                }
            }
            libc::SYS_fchmod => Op::FdMeta {
                fd: a[0] as i32,
                meta: Meta::Mode(a[1] as u32),
            },
            libc::SYS_fchown => Op::FdMeta {
                fd: a[0] as i32,
                meta: Meta::Owner(a[1] as u32, a[2] as u32),
            },
            libc::SYS_utimes | libc::SYS_futimesat => {
                let (dirfd, p, t) = if nr == libc::SYS_utimes {
                    (libc::AT_FDCWD, 0, a[1])
                } else {
                    (a[0] as i32, 1, a[2])
                };
                Op::Utimes {
                    dirfd,
                    path: path(p)?,
                    // struct timeval: microseconds where timespec has nanoseconds.
                    times: if t == 0 {
                        None
                    } else {
                        Some(timespecs(&mem(t, 32)?, 1000)?)
                    },
                    flags: 0,
                }
            }
            libc::SYS_utime => Op::Utimes {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                // struct utimbuf: two whole seconds.
                times: if a[1] == 0 {
                    None
                } else {
                    let b = mem(a[1], 16)?;
                    let secs =
                        |i: usize| i64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
                    if b.len() < 16 {
                        return Err(Errno::EFAULT);
                    }
                    Some([
                        libc::timespec {
                            tv_sec: secs(0),
                            tv_nsec: 0,
                        },
                        libc::timespec {
                            tv_sec: secs(8),
                            tv_nsec: 0,
                        },
                    ])
                },
                flags: 0,
            },
            libc::SYS_chown | libc::SYS_lchown => Op::Chown {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                uid: a[1] as u32,
                gid: a[2] as u32,
                flags: if nr == libc::SYS_lchown {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                },
            },
            libc::SYS_fchownat => Op::Chown {
                dirfd: a[0] as i32,
                path: path(1)?,
                uid: a[2] as u32,
                gid: a[3] as u32,
                flags: a[4] as i32,
            },
            libc::SYS_link => Op::Link {
                olddir: libc::AT_FDCWD,
                old: path(0)?,
                newdir: libc::AT_FDCWD,
                new: path(1)?,
                flags: 0,
            },
            libc::SYS_linkat => Op::Link {
                olddir: a[0] as i32,
                old: path(1)?,
                newdir: a[2] as i32,
                new: path(3)?,
                flags: a[4] as i32,
            },
            libc::SYS_symlink => Op::Symlink {
                target: path(0)?,
                newdir: libc::AT_FDCWD,
                new: path(1)?,
            },
            libc::SYS_symlinkat => Op::Symlink {
                target: path(0)?,
                newdir: a[1] as i32,
                new: path(2)?,
            },
            libc::SYS_execve => Op::Exec {
                dirfd: libc::AT_FDCWD,
                path: path(0)?,
                flags: 0,
            },
            libc::SYS_execveat => Op::Exec {
                dirfd: a[0] as i32,
                path: path(1)?,
                flags: a[4] as i32,
            },
            libc::SYS_connect | libc::SYS_bind => {
                let len = (a[2] as usize).min(128);
                Op::Socket {
                    kind: if nr == libc::SYS_bind {
                        SockOp::Bind
                    } else {
                        SockOp::Connect
                    },
                    fd: a[0] as i32,
                    addr: mem(a[1], len)?,
                }
            }
            libc::SYS_sendto => {
                // Only sendto with a destination is trapped. A datagram is at most 64 KiB; a
                // stream socket may take less than asked, as send(2) says.
                let len = (a[2] as usize).min(MAX_SEND);
                Op::Socket {
                    kind: SockOp::SendTo {
                        data: mem(a[1], len)?,
                        asked: a[2] as usize,
                        flags: a[3] as i32,
                    },
                    fd: a[0] as i32,
                    addr: mem(a[4], (a[5] as usize).min(128))?,
                }
            }
            // Trapped only under a `bind` list (see `profile`).
            libc::SYS_listen => Op::Listen {
                fd: a[0] as i32,
                backlog: a[1] as i32,
            },
            _ => return Err(Errno::ENOSYS),
        };
        // Then the caller's identity. A cached one is held by a pidfd of the thread: alive
        // now, it is the thread whose memory was just read (its ID was not reused). A new
        // one is taken only while the notification is still pending, for the same reason.
        let creds = match self.cache.get(tid) {
            Some(c) => c,
            None => {
                // The caller's /proc/<tid>/ns/user: the supervisor's own step (the caller may
                // be non-dumpable, as an exec'd process is before execve).
                let host_proc = &self.host_proc;
                let ident = &self.ident;
                let user_ns_of = |tid: u32| {
                    ident.borrow_mut().privileged(|| {
                        nix::fcntl::readlinkat(host_proc.as_fd(), format!("{tid}/ns/user").as_str())
                    })
                };
                self.cache.load(
                    host_proc,
                    tid,
                    || notif::still_valid(listener, n.id),
                    user_ns_of,
                )?
            }
        };
        self.perform(listener, n.id, tid, &creds, op)
    }

    fn perform(
        &mut self,
        listener: BorrowedFd,
        id: u64,
        tid: u32,
        c: &Creds,
        op: Op,
    ) -> R<Outcome> {
        self.ident.borrow_mut().apply(&Target::of(c, false))?;
        self.caller_ns_pid = c.ns_pid;
        self.caller_ns_tgid = c.ns_tgid;
        match op {
            Op::Open {
                dirfd,
                path,
                flags,
                mode,
                resolve,
            } => self.open(listener, id, tid, c, dirfd, &path, flags, mode, resolve),
            Op::Stat {
                dirfd,
                path,
                flags,
                buf,
                statx_mask,
            } => {
                let fd = self.resolve_following_proc_links(tid, c, dirfd, &path, flags)?;
                self.check(&fd, Access::Read, "stat")?;
                let data = match statx_mask {
                    None => {
                        // SAFETY: libc::stat is plain data; fstatat fills it.
                        let mut st: libc::stat = unsafe { std::mem::zeroed() };
                        // SAFETY: fd is ours, "" with AT_EMPTY_PATH names it; st is ours.
                        let r = unsafe {
                            libc::fstatat(
                                fd.as_raw_fd(),
                                c"".as_ptr(),
                                &mut st,
                                libc::AT_EMPTY_PATH,
                            )
                        };
                        Errno::result(r)?;
                        // SAFETY: viewing a plain-data struct as its bytes.
                        unsafe {
                            std::slice::from_raw_parts(
                                (&st as *const libc::stat).cast::<u8>(),
                                std::mem::size_of::<libc::stat>(),
                            )
                        }
                        .to_vec()
                    }
                    Some(mask) => {
                        let mut buf = [0u8; 256];
                        // SAFETY: statx writes at most 256 bytes (struct statx) into buf.
                        let r = unsafe {
                            libc::syscall(
                                libc::SYS_statx,
                                fd.as_raw_fd(),
                                c"".as_ptr(),
                                libc::AT_EMPTY_PATH,
                                mask,
                                buf.as_mut_ptr(),
                            )
                        };
                        Errno::result(r)?;
                        buf.to_vec()
                    }
                };
                self.privileged(|| notif::write_mem(tid, buf, &data))?;
                Ok(Outcome::Value(0))
            }
            Op::Access {
                dirfd,
                path,
                mode,
                flags,
            } => {
                let fd = self.resolve_following_proc_links(tid, c, dirfd, &path, flags)?;
                let access = if mode & libc::W_OK != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                self.check(&fd, access, "access")?;
                // Without AT_EACCESS the kernel checks the real ids: switch to those.
                if flags & libc::AT_EACCESS == 0 {
                    self.ident.borrow_mut().apply(&Target::of(c, true))?;
                }
                let target = proc_fd_path(fd.as_raw_fd());
                // SAFETY: the path is a valid C string; no pointers are kept.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_faccessat2,
                        self.host_proc.as_raw_fd(),
                        target.as_ptr(),
                        mode,
                        libc::AT_EACCESS,
                    )
                };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Readlink {
                dirfd,
                path,
                buf,
                size,
            } => {
                if size == 0 {
                    return Err(Errno::EINVAL);
                }
                let (parent, last) = self.parent(tid, c, dirfd, &path)?;
                self.check_named(&parent, &last, Access::Read, "readlink")?;
                let target = nix::fcntl::readlinkat(parent.as_fd(), last.as_c_str())?;
                let bytes = target.as_bytes();
                let n = bytes.len().min(size);
                self.privileged(|| notif::write_mem(tid, buf, &bytes[..n]))?;
                Ok(Outcome::Value(n as i64))
            }
            Op::Unlink { dirfd, path, flags } => {
                let (parent, last) = self.parent(tid, c, dirfd, &path)?;
                self.check_named(&parent, &last, Access::Write, "unlink")?;
                // SAFETY: parent is ours, last a valid C string.
                let r = unsafe { libc::unlinkat(parent.as_raw_fd(), last.as_ptr(), flags) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Mkdir { dirfd, path, mode } => {
                let (parent, last) = match self.parent(tid, c, dirfd, &path) {
                    // "/", "." and ".." have no last name to make, and always exist.
                    Err(Errno::EINVAL) if self.resolve(tid, c, dirfd, &path, 0).is_ok() => {
                        return Err(Errno::EEXIST)
                    }
                    r => r?,
                };
                // A name that exists is EEXIST, as the kernel says before it checks any
                // permission (`mkdir -p` of a directory that exists in a read-only place),
                // where the policy lets the name be seen.
                if exists_at(&parent, &last) && self.readable_named(&parent, &last) {
                    return Err(Errno::EEXIST);
                }
                self.check_named(&parent, &last, Access::Write, "mkdir")?;
                // SAFETY: as above.
                let r = unsafe { libc::mkdirat(parent.as_raw_fd(), last.as_ptr(), mode) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Rename {
                olddir,
                old,
                newdir,
                new,
                flags,
            } => {
                let (op, ol) = self.parent(tid, c, olddir, &old)?;
                let (np, nl) = self.parent(tid, c, newdir, &new)?;
                self.check_named(&op, &ol, Access::Write, "rename")?;
                self.check_named(&np, &nl, Access::Write, "rename")?;
                // SAFETY: both parents are ours, both names valid C strings.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        op.as_raw_fd(),
                        ol.as_ptr(),
                        np.as_raw_fd(),
                        nl.as_ptr(),
                        flags,
                    )
                };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Chmod {
                dirfd,
                path,
                mode,
                flags,
            } => {
                let fd = self.resolve(tid, c, dirfd, &path, flags)?;
                self.check(&fd, Access::Write, "chmod")?;
                let target = proc_fd_path(fd.as_raw_fd());
                // SAFETY: the path is a valid C string.
                let r =
                    unsafe { libc::fchmodat(self.host_proc.as_raw_fd(), target.as_ptr(), mode, 0) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Mknod {
                dirfd,
                path,
                mode,
                dev,
            } => {
                let (parent, last) = self.parent(tid, c, dirfd, &path)?;
                self.check_named(&parent, &last, Access::Write, "mknod")?;
                // SAFETY: parent is ours, last a valid C string. The kernel applies the
                // caller's umask (applied) and asks for CAP_MKNOD for devices (as the caller).
                let r = unsafe { libc::mknodat(parent.as_raw_fd(), last.as_ptr(), mode, dev) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Utimes {
                dirfd,
                path,
                times,
                flags,
            } => {
                let fd = self.resolve(tid, c, dirfd, &path, flags)?;
                self.check(&fd, Access::Write, "utimensat")?;
                let target = proc_fd_path(fd.as_raw_fd());
                let tp = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
                // SAFETY: a valid C string, and either null or two timespecs of ours.
                let r =
                    unsafe { libc::utimensat(self.host_proc.as_raw_fd(), target.as_ptr(), tp, 0) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Chown {
                dirfd,
                path,
                uid,
                gid,
                flags,
            } => {
                let fd = self.resolve(tid, c, dirfd, &path, flags)?;
                self.check(&fd, Access::Write, "chown")?;
                // SAFETY: fd is ours; "" with AT_EMPTY_PATH names it (O_PATH fds allowed).
                let r = unsafe {
                    libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH)
                };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Link {
                olddir,
                old,
                newdir,
                new,
                flags,
            } => {
                let follow = if flags & libc::AT_SYMLINK_FOLLOW != 0 {
                    0
                } else {
                    libc::AT_SYMLINK_NOFOLLOW
                };
                let src =
                    self.resolve(tid, c, olddir, &old, follow | (flags & libc::AT_EMPTY_PATH))?;
                // A hard link makes a second name for the file: it must be writable where it is.
                self.check(&src, Access::Write, "link")?;
                let (np, nl) = self.parent(tid, c, newdir, &new)?;
                self.check_named(&np, &nl, Access::Write, "link")?;
                let from = proc_fd_path(src.as_raw_fd());
                // SAFETY: all paths are valid C strings and the fds ours.
                let r = unsafe {
                    libc::linkat(
                        self.host_proc.as_raw_fd(),
                        from.as_ptr(),
                        np.as_raw_fd(),
                        nl.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Symlink {
                target,
                newdir,
                new,
            } => {
                let (np, nl) = self.parent(tid, c, newdir, &new)?;
                self.check_named(&np, &nl, Access::Write, "symlink")?;
                let target = CString::new(target).map_err(|_| Errno::EINVAL)?;
                // SAFETY: valid C strings, our fd.
                let r = unsafe { libc::symlinkat(target.as_ptr(), np.as_raw_fd(), nl.as_ptr()) };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::FdMeta { fd, meta } => {
                // On the caller's own file (the object, fetched with pidfd_getfd: another
                // thread renumbering its fds changes nothing), held to the policy of the
                // path it was opened at.
                let file = self.caller_fd(c, fd)?;
                self.check(&file, Access::Write, meta.syscall())?;
                let r = match meta {
                    // SAFETY: a plain call on an fd we own.
                    Meta::Mode(mode) => unsafe { libc::fchmod(file.as_raw_fd(), mode) },
                    // SAFETY: as above.
                    Meta::Owner(uid, gid) => unsafe { libc::fchown(file.as_raw_fd(), uid, gid) },
                    Meta::Times(times) => {
                        let tp = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
                        // SAFETY: tp is null or two timespecs of ours.
                        unsafe { libc::futimens(file.as_raw_fd(), tp) }
                    }
                };
                Errno::result(r)?;
                Ok(Outcome::Value(0))
            }
            Op::Exec { dirfd, path, flags } => {
                // The kernel must run execve itself (the new image replaces the caller), so
                // this is the one call checked and then continued: a racing thread could
                // swap the path after our check. What holds regardless is the kernel's:
                // the Landlock ruleset the container runs under grants EXECUTE only beneath
                // the policy's exec paths, so it refuses any swapped-in file on a path
                // outside them (an O_TMPFILE file included: it lives in its directory); and
                // memfds, which live on no path and so escape Landlock, cannot be made
                // executable in the container (vm.memfd_noexec = 2 in its pid namespace).
                let keep = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
                // /proc/self/exe (a program re-executing itself) is a final magic link.
                let fd = self.resolve_following_proc_links(tid, c, dirfd, &path, flags & keep)?;
                self.check(&fd, Access::Exec, "execve")?;
                // The new image may run with other credentials.
                self.cache.exec_starts(c.tgid, tid);
                Ok(Outcome::Continue)
            }
            Op::Socket { kind, fd, addr } => self.socket(tid, c, kind, fd, addr, listener, id),
            Op::Listen { fd, backlog } => self.listen(c, fd, backlog),
        }
    }

    /// listen(2) on the caller's socket. One that has no port yet gets one from the kernel
    /// here (every address and an ephemeral port, for a socket never bound), which no bind
    /// hook sees: held to the `bind` list like a bind of its address to port 0.
    fn listen(&mut self, c: &Creds, fd: i32, backlog: i32) -> R<Outcome> {
        let sock = self.caller_fd(c, fd)?;
        if socket_type(&sock) == libc::SOCK_STREAM {
            if let Some((ip, 0)) = local_ip_endpoint(&sock) {
                self.check_endpoint(ip, 0, true, "listen")?;
            }
        }
        // SAFETY: listen(2) on our copy of the caller's socket, with integers.
        let r = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
        Errno::result(r)?;
        Ok(Outcome::Value(0))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        listener: BorrowedFd,
        id: u64,
        tid: u32,
        c: &Creds,
        dirfd: i32,
        path: &[u8],
        flags: i32,
        mode: u32,
        resolve: u64,
    ) -> R<Outcome> {
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let access = if writes { Access::Write } else { Access::Read };
        let dir = self.dir_fd(tid, dirfd, path)?;
        let path = self.proc_self(c, path);
        let cpath = CString::new(path.clone()).map_err(|_| Errno::EINVAL)?;
        let probe_flags = libc::O_PATH | (flags & (libc::O_NOFOLLOW | libc::O_DIRECTORY));
        let existing = openat2(dir.as_raw_fd(), &cpath, probe_flags, 0, resolve);
        let fd = match existing {
            Ok(fd) => {
                if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                self.check(&fd, access, "open")?;
                if flags & libc::O_PATH == 0 {
                    self.check_device(&fd, flags)?;
                    self.check_other_process_memory(&fd)?;
                }
                // /dev/tty is the caller's controlling terminal, not the supervisor's.
                let fd = if flags & libc::O_PATH == 0 && is_dev_tty(&fd) {
                    self.callers_tty(c)?
                } else {
                    fd
                };
                if flags & libc::O_PATH != 0 {
                    // The kernel will not pass an O_PATH file through ADDFD, so this open is
                    // let through after the check. An O_PATH fd grants no access, only a
                    // name: every open, exec or metadata call made through it is trapped
                    // and checked against the real path again.
                    return Ok(Outcome::Continue);
                } else {
                    // Reopen the inode we checked, with the caller's flags (and identity). Never
                    // as the supervisor's controlling terminal: a tty it opened that way would
                    // let the container's ^C and hang-ups reach the supervisor and its guard.
                    let reopen = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)
                        | libc::O_CLOEXEC
                        | libc::O_NOCTTY;
                    let target = proc_fd_path(fd.as_raw_fd());
                    if flags & libc::O_NONBLOCK == 0 && is_fifo(&fd) {
                        // A FIFO's open waits for the other end, which may be this
                        // container's next trapped call: from a thread of its own.
                        let proc_dir = self.host_proc.try_clone().map_err(|_| Errno::EMFILE)?;
                        return defer(listener, id, move || {
                            let _probe = fd;
                            let opened = openat_raw(proc_dir.as_raw_fd(), &target, reopen, 0)?;
                            Ok(Outcome::Fd {
                                fd: opened,
                                cloexec,
                            })
                        });
                    }
                    if is_regular(&fd) && flags & libc::O_NONBLOCK == 0 {
                        // An open that must break a lease waits up to lease-break-time (45 s):
                        // tried without waiting, and waited for on a thread of its own.
                        match openat_raw(
                            self.host_proc.as_raw_fd(),
                            &target,
                            reopen | libc::O_NONBLOCK,
                            0,
                        ) {
                            Ok(opened) => {
                                clear_nonblock(&opened)?;
                                return Ok(Outcome::Fd {
                                    fd: opened,
                                    cloexec,
                                });
                            }
                            Err(Errno::EWOULDBLOCK) => {
                                let proc_dir =
                                    self.host_proc.try_clone().map_err(|_| Errno::EMFILE)?;
                                return defer(listener, id, move || {
                                    let _probe = fd;
                                    let opened =
                                        openat_raw(proc_dir.as_raw_fd(), &target, reopen, 0)?;
                                    Ok(Outcome::Fd {
                                        fd: opened,
                                        cloexec,
                                    })
                                });
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    openat_raw(self.host_proc.as_raw_fd(), &target, reopen, 0)?
                }
            }
            Err(Errno::ENOENT) if flags & libc::O_CREAT != 0 => {
                let (parent, last) = self.parent(tid, c, dirfd, &path)?;
                self.check_named(&parent, &last, Access::Write, "open")?;
                openat_raw(
                    parent.as_raw_fd(),
                    &last,
                    flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    mode,
                )?
            }
            Err(e) => return Err(e),
        };
        Ok(Outcome::Fd { fd, cloexec })
    }

    #[allow(clippy::too_many_arguments)]
    fn socket(
        &mut self,
        tid: u32,
        c: &Creds,
        kind: SockOp,
        fd: i32,
        addr: Vec<u8>,
        listener: BorrowedFd,
        id: u64,
    ) -> R<Outcome> {
        let bind = matches!(kind, SockOp::Bind);
        let what = match kind {
            SockOp::Bind => "bind",
            SockOp::Connect => "connect",
            SockOp::SendTo { .. } => "sendto",
        };
        let addr = &addr[..];
        if addr.len() < 2 {
            return Err(Errno::EINVAL);
        }
        let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
        // For a Unix socket path: the directory to act from and the address to use there.
        let mut unix_at: Option<(Dir, Vec<u8>)> = None;
        let mut held_socket_file: Option<OwnedFd> = None;
        match family {
            libc::AF_INET | libc::AF_INET6 => {
                let (ip, port) = ip_endpoint(addr).ok_or(Errno::EINVAL)?;
                self.check_endpoint(ip, port, bind, what)?;
            }
            libc::AF_UNIX => {
                let raw = &addr[2..];
                let path: Vec<u8> = raw.iter().take_while(|b| **b != 0).copied().collect();
                if raw.first() == Some(&0) || path.is_empty() {
                    // Abstract sockets live in the network namespace: network rules apply.
                    if self.policy.network == crate::policy::Network::None {
                        self.deny(what, "@abstract", "network = none");
                        return Err(Errno::EACCES);
                    }
                    // In the host's network namespace the abstract names are the host's
                    // (X11, D-Bus, other runtimes' sockets): only names the container bound
                    // itself are reached. (Landlock's abstract-socket scope holds sendmsg,
                    // which is not trapped, to the same; it does not see this supervisor's
                    // connect on the caller's behalf.)
                    if self.host_network && !bind && !self.abstract_names.contains(raw) {
                        self.deny(what, "@abstract", "not bound by the container");
                        return Err(Errno::EACCES);
                    }
                } else if bind {
                    // A new name: bound as that one component from its checked parent, so
                    // nothing swapped into the path in between can move it.
                    let (parent, last) = self.parent(tid, c, libc::AT_FDCWD, &path)?;
                    self.check_named(&parent, &last, Access::Write, what)?;
                    unix_at = Some((Dir::Own(parent), sun_path(last.as_bytes())?));
                } else {
                    // An existing socket: reached again through the fd of the inode that was
                    // checked (host /proc/self/fd/N, which connect follows), not by its path.
                    let sock_file = self.resolve(tid, c, libc::AT_FDCWD, &path, 0)?;
                    self.check(&sock_file, Access::Write, what)?;
                    let via = format!("self/fd/{}", sock_file.as_raw_fd());
                    let proc_dir = self.host_proc.try_clone().map_err(|_| Errno::EMFILE)?;
                    unix_at = Some((Dir::Own(proc_dir), sun_path(via.as_bytes())?));
                    // Kept open until the call is made.
                    held_socket_file = Some(sock_file);
                }
            }
            // Routing sockets (the only netlink family the profile lets be made): binding
            // one sets its groups, as `ip` does.
            libc::AF_NETLINK => {}
            _ => {
                if self.policy.network != crate::policy::Network::Any {
                    self.deny(
                        what,
                        &format!("address family {family}"),
                        "network is not any",
                    );
                    return Err(Errno::EACCES);
                }
            }
        }
        // Act on the caller's own socket, with the address we checked.
        let sock = self.caller_fd(c, fd)?;
        // Unix peers see who connected or sent (SO_PEERCRED, SCM_CREDENTIALS): the caller's
        // IDs, not the supervisor's root.
        let as_caller = family == libc::AF_UNIX;
        let caller = c.clone();
        if matches!(kind, SockOp::Connect) {
            // A connect may wait (a remote host, a full Unix backlog), and whether it does
            // can change under us (another thread clears O_NONBLOCK): always from a thread
            // of its own, which answers the caller itself.
            let unix_at = unix_at
                .map(|(dir, a)| Ok::<_, Errno>((dir.into_owned()?, a)))
                .transpose()?;
            let addr = addr.to_vec();
            return defer(listener, id, move || {
                let _held = held_socket_file;
                worker_call(&sock, &kind, unix_at, &addr, as_caller.then_some(&caller))
            });
        }
        if let SockOp::SendTo { data, asked, flags } = &kind {
            if flags & libc::MSG_DONTWAIT == 0 && blocks(&sock, &kind) {
                // Tried without waiting first; a send that would wait is waited for on a
                // thread of its own (a full Unix receiver, a full socket buffer).
                let now = SockOp::SendTo {
                    data: data.clone(),
                    asked: *asked,
                    flags: flags | libc::MSG_DONTWAIT,
                };
                let tried = self.unix_or_ip_call(
                    &sock,
                    &now,
                    unix_at.as_ref(),
                    addr,
                    as_caller.then_some(c),
                );
                if !matches!(tried, Err(Errno::EAGAIN)) {
                    drop(held_socket_file);
                    return tried;
                }
                let unix_at = unix_at
                    .map(|(dir, a)| Ok::<_, Errno>((dir.into_owned()?, a)))
                    .transpose()?;
                let addr = addr.to_vec();
                return defer(listener, id, move || {
                    let _held = held_socket_file;
                    worker_call(&sock, &kind, unix_at, &addr, as_caller.then_some(&caller))
                });
            }
        }
        let result =
            self.unix_or_ip_call(&sock, &kind, unix_at.as_ref(), addr, as_caller.then_some(c));
        drop(held_socket_file);
        if bind && family == libc::AF_UNIX && result.is_ok() {
            // The name the socket now has: abstract (or autobound, when the address is the
            // family alone), or a path (which the abstract rule ignores).
            if let Some(name) = unix_name(&sock) {
                if self.abstract_names.len() < 65536 {
                    self.abstract_names.insert(name);
                }
            }
        }
        result
    }

    /// bind or sendto on the caller's socket from this (the serving) thread: a Unix path
    /// relative to its checked directory (this thread's cwd for the one call), with the
    /// caller's IDs for Unix peers when `caller` is given.
    fn unix_or_ip_call(
        &mut self,
        sock: &OwnedFd,
        kind: &SockOp,
        unix_at: Option<&(Dir, Vec<u8>)>,
        addr: &[u8],
        caller: Option<&Creds>,
    ) -> R<Outcome> {
        let call = || -> R<Outcome> {
            let Some((dir, unix_addr)) = unix_at else {
                return sock_call(sock, kind, addr);
            };
            let here = openat_raw(
                libc::AT_FDCWD,
                c".",
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )?;
            nix::unistd::fchdir(dir.as_fd())?;
            let result = sock_call(sock, kind, unix_addr);
            let _ = nix::unistd::fchdir(here.as_fd());
            result
        };
        match caller {
            Some(c) => self.ident.borrow_mut().with_caller_ids(c, call)?,
            None => call(),
        }
    }

    /// A copy of the caller's fd `fd` (the same open file), through pidfd_getfd.
    fn caller_fd(&self, c: &Creds, fd: i32) -> R<OwnedFd> {
        let pidfd = strata_linux::hooks::pidfd_open(c.tgid as i32).map_err(errno_of)?;
        self.privileged(|| {
            // SAFETY: pidfd_getfd with our pidfd and the caller's fd number.
            let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
            let got = Errno::result(got)? as RawFd;
            // SAFETY: pidfd_getfd returned a new fd that we own.
            Ok(unsafe { OwnedFd::from_raw_fd(got) })
        })
    }

    fn check_endpoint(&mut self, ip: std::net::IpAddr, port: u16, bind: bool, what: &str) -> R<()> {
        self.policy.check_endpoint(ip, port, bind).map_err(|d| {
            self.deny(
                what,
                &std::net::SocketAddr::new(ip, port).to_string(),
                d.rule,
            );
            Errno::EACCES
        })
    }

    /// The directory a relative path starts from: the caller's cwd or its dirfd, reopened
    /// from the host's /proc (O_PATH). Absolute paths ignore it, as the kernel does.
    fn dir_fd(&self, tid: u32, dirfd: i32, path: &[u8]) -> R<Dir> {
        if path.first() == Some(&b'/') {
            return Ok(Dir::Root(self.root.as_raw_fd()));
        }
        let link = if dirfd == libc::AT_FDCWD {
            format!("{tid}/cwd")
        } else {
            format!("{tid}/fd/{dirfd}")
        };
        let link = CString::new(link).map_err(|_| Errno::EINVAL)?;
        // Reaching into the caller's /proc entry is the supervisor's own business (the caller
        // may be non-dumpable, as an init is before execve): with full privilege if need be.
        self.privileged(|| {
            openat_raw(
                self.host_proc.as_raw_fd(),
                &link,
                libc::O_PATH | libc::O_CLOEXEC,
                0,
            )
        })
        .map(Dir::Own)
        .map_err(|e| if e == Errno::ENOENT { Errno::EBADF } else { e })
    }

    /// `/proc/self/...` and `/proc/thread-self/...` name the caller, not the supervisor
    /// (which has no PID in the container's namespace).
    fn proc_self(&self, c: &Creds, path: &[u8]) -> Vec<u8> {
        // /proc/mounts and /proc/net are links to self/mounts and self/net.
        for (prefix, keep) in [
            (&b"/proc/self"[..], &b""[..]),
            (&b"/proc/thread-self"[..], &b""[..]),
            (&b"/proc/mounts"[..], &b"/mounts"[..]),
            (&b"/proc/net"[..], &b"/net"[..]),
        ] {
            if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest[0] == b'/' {
                    let mut p = format!("/proc/{}", c.ns_pid).into_bytes();
                    p.extend_from_slice(keep);
                    p.extend_from_slice(rest);
                    return p;
                }
            }
        }
        path.to_vec()
    }

    /// Resolves the whole path to an O_PATH fd (following a final symlink unless
    /// AT_SYMLINK_NOFOLLOW; the dirfd itself for an empty path with AT_EMPTY_PATH).
    fn resolve(&self, tid: u32, c: &Creds, dirfd: i32, path: &[u8], flags: i32) -> R<OwnedFd> {
        if path.is_empty() {
            if flags & libc::AT_EMPTY_PATH == 0 {
                return Err(Errno::ENOENT);
            }
            return self.dir_fd(tid, dirfd, path)?.into_owned();
        }
        let dir = self.dir_fd(tid, dirfd, path)?;
        let path = self.proc_self(c, path);
        let cpath = CString::new(path).map_err(|_| Errno::EINVAL)?;
        let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            libc::O_NOFOLLOW
        } else {
            0
        };
        openat2(dir.as_raw_fd(), &cpath, libc::O_PATH | nofollow, 0, 0)
    }

    /// [`Self::resolve`] for stat and access, which also follow a final magic link of
    /// /proc (`/proc/self/ns/net`, `fd/N`, `exe`), as the kernel does for the caller: only
    /// that last hop is taken, from a parent resolved without magic links, and it leads to
    /// an object rather than a path, so nothing beyond it is walked. (Opens stay refused:
    /// reopening through such a link could widen an fd's access.)
    fn resolve_following_proc_links(
        &self,
        tid: u32,
        c: &Creds,
        dirfd: i32,
        path: &[u8],
        flags: i32,
    ) -> R<OwnedFd> {
        match self.resolve(tid, c, dirfd, path, flags) {
            Err(Errno::ELOOP) if flags & libc::AT_SYMLINK_NOFOLLOW == 0 && !path.is_empty() => {
                let (parent, last) = self.parent(tid, c, dirfd, path)?;
                let on_proc = nix::sys::statfs::fstatfs(parent.as_fd())
                    .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
                if !on_proc {
                    return Err(Errno::ELOOP);
                }
                openat_raw(parent.as_raw_fd(), &last, libc::O_PATH | libc::O_CLOEXEC, 0)
            }
            r => r,
        }
    }

    /// The directory holding the path's last name, resolved, and that name.
    fn parent(&self, tid: u32, c: &Creds, dirfd: i32, path: &[u8]) -> R<(OwnedFd, CString)> {
        let path = self.proc_self(c, path);
        let trimmed: &[u8] = {
            let mut p = &path[..];
            while p.len() > 1 && p.ends_with(b"/") {
                p = &p[..p.len() - 1];
            }
            p
        };
        if trimmed.is_empty() {
            return Err(Errno::ENOENT);
        }
        let (dir_part, last) = match trimmed.iter().rposition(|b| *b == b'/') {
            Some(0) => (&b"/"[..], &trimmed[1..]),
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (&b"."[..], trimmed),
        };
        if last.is_empty() || last == b"." || last == b".." {
            return Err(Errno::EINVAL);
        }
        let dir = self.dir_fd(tid, dirfd, dir_part)?;
        let cdir = CString::new(dir_part.to_vec()).map_err(|_| Errno::EINVAL)?;
        let parent = openat2(
            dir.as_raw_fd(),
            &cdir,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            0,
        )?;
        Ok((
            parent,
            CString::new(last.to_vec()).map_err(|_| Errno::EINVAL)?,
        ))
    }

    fn real_path(&self, fd: &OwnedFd) -> R<PathBuf> {
        let link = proc_fd_path(fd.as_raw_fd());
        let p = nix::fcntl::readlinkat(self.host_proc.as_fd(), link.as_c_str())?;
        Ok(PathBuf::from(p))
    }

    fn check(&mut self, fd: &OwnedFd, access: Access, syscall: &str) -> R<()> {
        if self.granted_everywhere(access) {
            return Ok(());
        }
        let path = self.real_path(fd)?;
        if !path.is_absolute() || is_memfd(fd, &path) {
            // A pipe, socket, anonymous inode or memfd reached through an fd the caller
            // holds: not a place in the filesystem, nothing the path sets speak about.
            return Ok(());
        }
        self.check_path(&path, access, syscall)
    }

    /// `/proc/<pid>/mem` of another process (or a thread of one): its memory, which ptrace
    /// and process_vm_readv, refused by the profile, would give. The supervisor opens it, so
    /// no Landlock ptrace rule of the caller's applies; refused here, whatever the path sets.
    fn check_other_process_memory(&mut self, fd: &OwnedFd) -> R<()> {
        let Ok(path) = self.real_path(fd) else {
            return Ok(());
        };
        let parts: Vec<&std::ffi::OsStr> = path.iter().collect();
        let pid = match parts.as_slice() {
            [_, proc, pid, mem] if *proc == "proc" && *mem == "mem" => pid,
            [_, proc, pid, task, _, mem] if *proc == "proc" && *task == "task" && *mem == "mem" => {
                pid
            }
            _ => return Ok(()),
        };
        let own = [self.caller_ns_pid, self.caller_ns_tgid].map(|p| p.to_string());
        if own.iter().any(|p| std::ffi::OsStr::new(p) == *pid) {
            return Ok(());
        }
        self.deny(
            "open",
            &path.display().to_string(),
            "memory of another process",
        );
        Err(Errno::EACCES)
    }

    /// The caller's controlling terminal, for its open of /dev/tty: the pty named by its
    /// stat's tty_nr, in the container's devpts. None (ENXIO, as the kernel says) without
    /// one, or with one that is not a pty of the container's.
    fn callers_tty(&mut self, c: &Creds) -> R<OwnedFd> {
        let stat = read_at(&self.host_proc, &format!("{}/stat", c.tgid))?;
        let tty_nr: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(4))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let major = (tty_nr >> 8) & 0xfff;
        let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xf_ff00);
        if !(136..=143).contains(&major) {
            return Err(Errno::ENXIO);
        }
        let n = (major - 136) * 256 + minor;
        let path = CString::new(format!("dev/pts/{n}")).map_err(|_| Errno::EINVAL)?;
        let fd = openat2(self.root.as_raw_fd(), &path, libc::O_PATH, 0, 0)?;
        let st = nix::sys::stat::fstat(fd.as_fd())?;
        if st.st_rdev != libc::makedev(major as u32, minor as u32) {
            return Err(Errno::ENXIO);
        }
        self.check_device(&fd, libc::O_RDWR)?;
        Ok(fd)
    }

    /// The container's device rules (its `linux.resources.devices` and the default set),
    /// for a device node about to be opened: the supervisor is not in the container's
    /// devices cgroup, so the kernel would not apply them to its open.
    fn check_device(&mut self, fd: &OwnedFd, flags: i32) -> R<()> {
        let st = nix::sys::stat::fstat(fd.as_fd())?;
        let typ = match st.st_mode & libc::S_IFMT {
            libc::S_IFCHR => 'c',
            libc::S_IFBLK => 'b',
            _ => return Ok(()),
        };
        let access = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => "r",
            libc::O_WRONLY => "w",
            _ => "rw",
        };
        let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        if strata_linux::cgroups::devices::permits(
            &self.devices,
            typ,
            major as i64,
            minor as i64,
            access,
        ) {
            return Ok(());
        }
        self.deny(
            "open",
            &format!("device {typ} {major}:{minor} ({access})"),
            "not in the container's device rules",
        );
        Err(Errno::EPERM)
    }

    fn check_named(
        &mut self,
        parent: &OwnedFd,
        name: &CStr,
        access: Access,
        syscall: &str,
    ) -> R<()> {
        if self.granted_everywhere(access) {
            return Ok(());
        }
        let path = self
            .real_path(parent)?
            .join(OsStr::from_bytes(name.to_bytes()));
        self.check_path(&path, access, syscall)
    }

    /// Whether the policy lets `name` in `parent` be read (nothing logged: a question, not
    /// a refusal).
    fn readable_named(&self, parent: &OwnedFd, name: &CStr) -> bool {
        self.granted_everywhere(Access::Read)
            || self.real_path(parent).is_ok_and(|p| {
                self.policy
                    .check(&p.join(OsStr::from_bytes(name.to_bytes())), Access::Read)
                    .is_ok()
            })
    }

    fn granted_everywhere(&self, access: Access) -> bool {
        self.everywhere[access as usize]
    }

    fn check_path(&mut self, path: &Path, access: Access, syscall: &str) -> R<()> {
        // The caller's own /proc entry is what the policy calls /proc/self.
        let own = Path::new("/proc").join(self.caller_ns_pid.to_string());
        let normalized;
        let path = match path.strip_prefix(&own) {
            Ok(rest) if self.caller_ns_pid != 0 => {
                normalized = Path::new("/proc/self").join(rest);
                normalized.as_path()
            }
            _ => path,
        };
        match self.policy.check(path, access) {
            Ok(()) => Ok(()),
            Err(d) => {
                self.deny(
                    syscall,
                    &format!("{} ({})", path.display(), access.name()),
                    d.rule,
                );
                Err(Errno::EACCES)
            }
        }
    }

    /// Logs a denial the first time it happens (bounded, so a loop cannot flood the log).
    fn deny(&mut self, syscall: &str, what: &str, rule: &str) {
        let key = format!("{syscall} {what}: {rule}");
        if self.logged.len() < 1024 && self.logged.insert(key.clone()) {
            tracing::warn!("sandbox denied {key}");
        }
    }
}

enum Op {
    Open {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
        mode: u32,
        resolve: u64,
    },
    Stat {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
        buf: u64,
        statx_mask: Option<u32>,
    },
    Access {
        dirfd: i32,
        path: Vec<u8>,
        mode: i32,
        flags: i32,
    },
    Readlink {
        dirfd: i32,
        path: Vec<u8>,
        buf: u64,
        size: usize,
    },
    Unlink {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
    },
    Mkdir {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
    },
    Rename {
        olddir: i32,
        old: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
        flags: u32,
    },
    Chmod {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
        flags: i32,
    },
    Mknod {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
        dev: u64,
    },
    Utimes {
        dirfd: i32,
        path: Vec<u8>,
        times: Option<[libc::timespec; 2]>,
        flags: i32,
    },
    Chown {
        dirfd: i32,
        path: Vec<u8>,
        uid: u32,
        gid: u32,
        flags: i32,
    },
    Link {
        olddir: i32,
        old: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
        flags: i32,
    },
    Symlink {
        target: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
    },
    Exec {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
    },
    /// fchmod, fchown, futimens: a change made through an fd.
    FdMeta {
        fd: i32,
        meta: Meta,
    },
    Socket {
        kind: SockOp,
        fd: i32,
        addr: Vec<u8>,
    },
    Listen {
        fd: i32,
        backlog: i32,
    },
}

enum Meta {
    Mode(u32),
    Owner(u32, u32),
    Times(Option<[libc::timespec; 2]>),
}

impl Meta {
    fn syscall(&self) -> &'static str {
        match self {
            Meta::Mode(_) => "fchmod",
            Meta::Owner(..) => "fchown",
            Meta::Times(_) => "futimens",
        }
    }
}

enum SockOp {
    Bind,
    Connect,
    SendTo {
        data: Vec<u8>,
        /// The length the caller passed (`data` holds at most MAX_SEND of it).
        asked: usize,
        flags: i32,
    },
}

/// The most of one sendto the supervisor copies: the largest datagram.
const MAX_SEND: usize = 65536;

/// Whether the call on the caller's socket may wait: the socket is in blocking mode and
/// the call does not say MSG_DONTWAIT.
fn blocks(sock: &OwnedFd, kind: &SockOp) -> bool {
    // SAFETY: F_GETFL on our fd.
    let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    let dontwait = matches!(kind, SockOp::SendTo { flags, .. } if flags & libc::MSG_DONTWAIT != 0);
    fl >= 0 && fl & libc::O_NONBLOCK == 0 && !dontwait
}

/// bind, connect or sendto on the caller's socket with the address that was checked.
fn sock_call(sock: &OwnedFd, kind: &SockOp, addr: &[u8]) -> R<Outcome> {
    let len = addr.len() as libc::socklen_t;
    // SAFETY: addr is the caller's sockaddr bytes, passed with its length; data is ours.
    let r = unsafe {
        match kind {
            SockOp::Bind => libc::bind(sock.as_raw_fd(), addr.as_ptr().cast(), len) as isize,
            SockOp::Connect => libc::connect(sock.as_raw_fd(), addr.as_ptr().cast(), len) as isize,
            SockOp::SendTo { data, asked, flags } => {
                if *asked > data.len() && socket_type(sock) != libc::SOCK_STREAM {
                    // Larger than any datagram: what the kernel would say.
                    return Err(Errno::EMSGSIZE);
                }
                libc::sendto(
                    sock.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    *flags,
                    addr.as_ptr().cast(),
                    len,
                )
            }
        }
    };
    let n = Errno::result(r)?;
    Ok(Outcome::Value(if matches!(kind, SockOp::SendTo { .. }) {
        n as i64
    } else {
        0
    }))
}

/// Two (seconds, fraction) pairs from the caller's memory: timespecs with `scale` 1, or
/// timevals (microseconds) with `scale` 1000. UTIME_NOW and UTIME_OMIT pass unscaled.
fn timespecs(b: &[u8], scale: i64) -> R<[libc::timespec; 2]> {
    if b.len() < 32 {
        return Err(Errno::EFAULT);
    }
    let word = |i: usize| i64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let frac = |v: i64| {
        if scale == 1 || v == libc::UTIME_NOW || v == libc::UTIME_OMIT {
            v
        } else {
            v * scale
        }
    };
    Ok([
        libc::timespec {
            tv_sec: word(0),
            tv_nsec: frac(word(1)),
        },
        libc::timespec {
            tv_sec: word(2),
            tv_nsec: frac(word(3)),
        },
    ])
}

/// Whether `fd` (whose path reads `path`) is a memfd: a name under "/memfd:", gone ("
/// (deleted)"), with no link anywhere. A file someone named like that still has a link.
fn is_memfd(fd: &OwnedFd, path: &Path) -> bool {
    let text = path.as_os_str().as_bytes();
    text.starts_with(b"/memfd:")
        && text.ends_with(b" (deleted)")
        && nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_nlink == 0)
}

/// /dev/tty (c 5:0): "the controlling terminal of whoever opens it".
fn is_dev_tty(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 5
            && libc::minor(st.st_rdev) == 0
    })
}

/// Whether `name` exists in `dir` (a dangling symlink too).
fn exists_at(dir: &OwnedFd, name: &CStr) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

fn is_regular(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// Takes back the O_NONBLOCK an open added for itself.
fn clear_nonblock(fd: &OwnedFd) -> R<()> {
    // SAFETY: fcntl on our fd with integer arguments.
    let fl = Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
    Ok(())
}

fn is_fifo(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

fn socket_type(sock: &OwnedFd) -> i32 {
    let mut t: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `t`, whose size is passed.
    unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut t as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    t
}

/// Runs `work` on a thread of its own, which answers the notification `id` itself. The
/// thread starts with the identity the supervisor has applied for this caller.
fn defer(
    listener: BorrowedFd,
    id: u64,
    work: impl FnOnce() -> R<Outcome> + Send + 'static,
) -> R<Outcome> {
    let listener = listener.try_clone_to_owned().map_err(errno_of)?;
    // The threads are the supervisor's, outside the container's pids limit: a bounded number.
    if !crate::waits::reserve() {
        return Err(Errno::EAGAIN);
    }
    let spawned = std::thread::Builder::new()
        .name("strata-sandbox-wait".into())
        .spawn(move || {
            // Until the answer: the supervisor may interrupt the wait if the caller goes away
            // (see `waits`).
            let registered = crate::waits::begin(id, listener.as_raw_fd());
            let outcome = work().unwrap_or_else(Outcome::Errno);
            drop(registered);
            crate::supervisor::answer(listener.as_fd(), id, outcome);
            crate::waits::release();
        });
    if spawned.is_err() {
        crate::waits::release();
        return Err(Errno::EAGAIN);
    }
    Ok(Outcome::Deferred)
}

/// A connect or send on a worker thread (see `defer`), which answers the caller itself: a
/// Unix path relative to its checked directory (the worker's own cwd: it leaves the shared
/// filesystem context first, so the serving thread's is untouched), with the caller's IDs
/// for Unix peers when `caller` is given. The thread ends after the call, so nothing of
/// either is undone.
fn worker_call(
    sock: &OwnedFd,
    kind: &SockOp,
    unix_at: Option<(OwnedFd, Vec<u8>)>,
    addr: &[u8],
    caller: Option<&Creds>,
) -> R<Outcome> {
    if let Some(c) = caller {
        crate::identity::set_caller_ids(c)?;
    }
    match unix_at {
        Some((dir, unix_addr)) => {
            // SAFETY: unshare with a flag; only this thread's filesystem context changes.
            Errno::result(unsafe { libc::unshare(libc::CLONE_FS) })?;
            nix::unistd::fchdir(dir.as_fd())?;
            sock_call(sock, kind, &unix_addr)
        }
        None => sock_call(sock, kind, addr),
    }
}

/// A sockaddr_un for `path` (relative to the directory the call is made from).
fn sun_path(path: &[u8]) -> R<Vec<u8>> {
    // sun_path holds 108 bytes, the terminating NUL included.
    if path.len() >= 108 {
        return Err(Errno::ENAMETOOLONG);
    }
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(path);
    a.push(0);
    Ok(a)
}

/// The address and port of a sockaddr_in or sockaddr_in6 (ports in network byte order).
fn ip_endpoint(addr: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]) as i32;
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        libc::AF_INET if addr.len() >= 8 => Some((
            std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]).into(),
            port,
        )),
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            Some((std::net::Ipv6Addr::from(b).into(), port))
        }
        _ => None,
    }
}

/// The local address and port of an IP socket (the unspecified address and port 0 for one
/// never bound); None for other sockets.
fn local_ip_endpoint(sock: &OwnedFd) -> Option<(std::net::IpAddr, u16)> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes of it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above, with our fd.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: viewing the filled part of a plain-data struct as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&addr as *const libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    ip_endpoint(bytes)
}

/// The name a Unix socket is bound to (the bytes after sun_family), if it has one.
fn unix_name(sock: &OwnedFd) -> Option<Vec<u8>> {
    // SAFETY: sockaddr_un is plain data; getsockname fills at most `len` bytes of it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: as above, with our fd.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    };
    let n = (len as usize).checked_sub(2)?;
    if r != 0 || n == 0 {
        return None;
    }
    // SAFETY: viewing the filled part of a plain-data struct as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            addr.sun_path.as_ptr().cast::<u8>(),
            n.min(addr.sun_path.len()),
        )
    };
    Some(bytes.to_vec())
}

/// The errno behind an I/O error (EIO for one that has none).
fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `self/fd/N` relative to the host's /proc: reaching an fd's inode again with new flags.
fn proc_fd_path(fd: RawFd) -> CString {
    CString::new(format!("self/fd/{fd}")).expect("no NUL in a number")
}

pub(crate) fn read_at(dir: &OwnedFd, path: &str) -> R<String> {
    let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let fd = openat_raw(dir.as_raw_fd(), &p, libc::O_RDONLY | libc::O_CLOEXEC, 0)?;
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd)
        .read_to_string(&mut s)
        .map_err(errno_of)?;
    Ok(s)
}

fn openat_raw(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> R<OwnedFd> {
    // SAFETY: a valid C string and plain integers; the result is a new fd we own.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags, mode) };
    let fd = Errno::result(fd)?;
    // SAFETY: openat returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 with RESOLVE_NO_MAGICLINKS always added to what the caller asked.
fn openat2(dir: RawFd, path: &CStr, flags: i32, mode: u32, resolve: u64) -> R<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: resolve | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads `how` (ours, its size passed) and the C string.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = Errno::result(fd)? as RawFd;
    // SAFETY: openat2 returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where a lookup starts: the container's root, kept open by the emulator, or a directory
/// of the caller's reopened for this call.
enum Dir {
    Root(RawFd),
    Own(OwnedFd),
}

impl Dir {
    fn into_owned(self) -> R<OwnedFd> {
        match self {
            Dir::Own(fd) => Ok(fd),
            Dir::Root(fd) => {
                // SAFETY: the root fd is open as long as the emulator.
                let root = unsafe { BorrowedFd::borrow_raw(fd) };
                root.try_clone_to_owned().map_err(errno_of)
            }
        }
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Own(fd) => fd.as_raw_fd(),
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: either fd stays open as long as the Dir (the root as long as the emulator).
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}
