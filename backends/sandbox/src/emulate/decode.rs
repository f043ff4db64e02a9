//! Reading a notification: the syscall's arguments, from the caller's registers and memory
//! (once), into the operation to perform.

use super::*;

impl Emulator {
    pub(super) fn dispatch(&mut self, listener: BorrowedFd, n: &Notif) -> R<Outcome> {
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
                if !self
                    .inflight
                    .wait_idle(tid, || notif::still_valid(listener, n.id))
                {
                    return Err(Errno::ENOENT);
                }
                self.cache().forget(tid);
                return Ok(Outcome::Continue);
            }
            libc::SYS_umask => {
                if !self
                    .inflight
                    .wait_idle(tid, || notif::still_valid(listener, n.id))
                {
                    return Err(Errno::ENOENT);
                }
                self.cache().forget_all();
                return Ok(Outcome::Continue);
            }
            // The new image may run with fewer capabilities.
            libc::SYS_execve | libc::SYS_execveat
                if !self
                    .inflight
                    .wait_idle(tid, || notif::still_valid(listener, n.id)) =>
            {
                return Err(Errno::ENOENT);
            }
            _ => {}
        }
        self.performing = Some(self.inflight.begin(tid));
        // Arguments are read once, here, as the caller's thread holds them now.
        let op = decode(nr, &a, &CallerMemory { em: self, tid })?;
        // Then the caller's identity. A cached one is held by a pidfd of the thread: alive
        // now, it is the thread whose memory was just read (its ID was not reused). A new
        // one is taken only while the notification is still pending, for the same reason.
        let cached = self.cache().get(tid);
        let creds = match cached {
            // Still pending: a call the caller gave up (a signal) is not performed with an
            // identity it may have changed since, by a call another serving thread let
            // through meanwhile.
            Some(_) if !notif::still_valid(listener, n.id) => return Err(Errno::ENOENT),
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
                self.cache().load(
                    host_proc,
                    tid,
                    || notif::still_valid(listener, n.id),
                    user_ns_of,
                )?
            }
        };
        self.perform(listener, n.id, tid, &creds, op)
    }
}

/// Where a call's pointer arguments are read from.
pub(super) trait Memory {
    /// A NUL-terminated string at `addr` (a path).
    fn cstr(&self, addr: u64) -> R<Vec<u8>>;
    /// Up to `len` bytes at `addr` (fewer where the mapping ends).
    fn bytes(&self, addr: u64, len: usize) -> R<Vec<u8>>;
}

/// The trapped thread's memory, read with the supervisor's privilege.
struct CallerMemory<'a> {
    em: &'a Emulator,
    tid: u32,
}

impl Memory for CallerMemory<'_> {
    fn cstr(&self, addr: u64) -> R<Vec<u8>> {
        self.em.privileged(|| notif::read_cstr(self.tid, addr))
    }

    fn bytes(&self, addr: u64, len: usize) -> R<Vec<u8>> {
        self.em.privileged(|| notif::read_mem(self.tid, addr, len))
    }
}

/// A trapped call as the operation to perform: a pure function of its number, its register
/// arguments and what its pointers point to.
pub(super) fn decode(nr: i64, a: &[u64; 6], m: &dyn Memory) -> R<Op> {
    let path = |i: usize| m.cstr(a[i]);
    let mem = |at: u64, len: usize| m.bytes(at, len);
    Ok(match nr {
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
                let secs = |i: usize| i64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
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
    })
}

/// Two (seconds, fraction) pairs from the caller's memory: timespecs with `scale` 1, or
/// timevals (microseconds) with `scale` 1000. UTIME_NOW and UTIME_OMIT pass unscaled.
pub(super) fn timespecs(b: &[u8], scale: i64) -> R<[libc::timespec; 2]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's memory as a map of addresses to contents; any other address faults.
    struct Fake(Vec<(u64, Vec<u8>)>);

    impl Memory for Fake {
        fn cstr(&self, addr: u64) -> R<Vec<u8>> {
            let (_, b) = self
                .0
                .iter()
                .find(|(a, _)| *a == addr)
                .ok_or(Errno::EFAULT)?;
            Ok(b.split(|c| *c == 0).next().unwrap_or_default().to_vec())
        }

        fn bytes(&self, addr: u64, len: usize) -> R<Vec<u8>> {
            let (_, b) = self
                .0
                .iter()
                .find(|(a, _)| *a == addr)
                .ok_or(Errno::EFAULT)?;
            Ok(b[..len.min(b.len())].to_vec())
        }
    }

    const PATH: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn mem() -> Fake {
        Fake(vec![(PATH, b"/etc/passwd\0junk".to_vec())])
    }

    fn err(r: R<Op>) -> Errno {
        match r {
            Err(e) => e,
            Ok(_) => panic!("decoded where an error was expected"),
        }
    }

    #[test]
    fn opens_take_their_arguments_from_each_calls_positions() {
        let a = [7, PATH, libc::O_RDONLY as u64, 0o644, 0, 0];
        match decode(libc::SYS_openat, &a, &mem()).unwrap() {
            Op::Open {
                dirfd,
                path,
                flags,
                mode,
                resolve,
            } => {
                assert_eq!((dirfd, flags, mode, resolve), (7, libc::O_RDONLY, 0o644, 0));
                assert_eq!(path, b"/etc/passwd");
            }
            _ => panic!("openat is an open"),
        }
        let a = [PATH, 0o600, 0, 0, 0, 0];
        match decode(libc::SYS_creat, &a, &mem()).unwrap() {
            Op::Open { dirfd, flags, .. } => {
                assert_eq!(dirfd, libc::AT_FDCWD);
                assert_eq!(flags, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC);
            }
            _ => panic!("creat is an open"),
        }
    }

    #[test]
    fn openat2_reads_its_how_and_refuses_a_short_one() {
        let mut how = Vec::new();
        for w in [libc::O_PATH as u64, 0, 0x10] {
            how.extend_from_slice(&w.to_ne_bytes());
        }
        let m = Fake(vec![(PATH, b"x\0".to_vec()), (BUF, how.clone())]);
        let a = [3, PATH, BUF, 24, 0, 0];
        match decode(libc::SYS_openat2, &a, &m).unwrap() {
            Op::Open { flags, resolve, .. } => {
                assert_eq!(flags, libc::O_PATH);
                assert_eq!(resolve, 0x10);
            }
            _ => panic!("openat2 is an open"),
        }
        assert_eq!(
            err(decode(libc::SYS_openat2, &[3, PATH, BUF, 16, 0, 0], &m)),
            Errno::EINVAL
        );
        let short = Fake(vec![(PATH, b"x\0".to_vec()), (BUF, how[..16].to_vec())]);
        assert_eq!(err(decode(libc::SYS_openat2, &a, &short)), Errno::EFAULT);
    }

    #[test]
    fn a_path_that_cannot_be_read_is_efault_and_an_unknown_call_enosys() {
        let a = [libc::AT_FDCWD as u64, 0xdead, 0, 0, 0, 0];
        assert_eq!(err(decode(libc::SYS_openat, &a, &mem())), Errno::EFAULT);
        assert_eq!(err(decode(libc::SYS_getpid, &a, &mem())), Errno::ENOSYS);
    }

    #[test]
    fn utimensat_without_a_path_changes_the_fd_itself() {
        let mut times = Vec::new();
        for w in [1i64, 2, 3, libc::UTIME_OMIT] {
            times.extend_from_slice(&w.to_ne_bytes());
        }
        let m = Fake(vec![(PATH, b"f\0".to_vec()), (BUF, times)]);
        match decode(libc::SYS_utimensat, &[5, 0, BUF, 0, 0, 0], &m).unwrap() {
            Op::FdMeta {
                fd,
                meta: Meta::Times(Some(t)),
            } => {
                assert_eq!(fd, 5);
                assert_eq!((t[0].tv_sec, t[0].tv_nsec), (1, 2));
                assert_eq!((t[1].tv_sec, t[1].tv_nsec), (3, libc::UTIME_OMIT));
            }
            _ => panic!("futimens is a change through the fd"),
        }
        // futimens of AT_FDCWD, or with flags, is what the kernel refuses too.
        let cwd = libc::AT_FDCWD as u64;
        assert_eq!(
            err(decode(libc::SYS_utimensat, &[cwd, 0, BUF, 0, 0, 0], &m)),
            Errno::EFAULT
        );
        assert_eq!(
            err(decode(libc::SYS_utimensat, &[5, 0, BUF, 1, 0, 0], &m)),
            Errno::EINVAL
        );
        match decode(libc::SYS_utimensat, &[cwd, PATH, 0, 0, 0, 0], &m).unwrap() {
            Op::Utimes { path, times, .. } => {
                assert_eq!(path, b"f");
                assert!(times.is_none());
            }
            _ => panic!("utimensat with a path is on that path"),
        }
    }

    #[test]
    fn socket_addresses_are_read_up_to_their_length_and_at_most_128_bytes() {
        let m = Fake(vec![(BUF, vec![1u8; 200])]);
        match decode(libc::SYS_bind, &[4, BUF, 16, 0, 0, 0], &m).unwrap() {
            Op::Socket {
                kind: SockOp::Bind,
                fd,
                addr,
            } => {
                assert_eq!(fd, 4);
                assert_eq!(addr.len(), 16);
            }
            _ => panic!("bind is a socket call"),
        }
        match decode(libc::SYS_connect, &[4, BUF, 4096, 0, 0, 0], &m).unwrap() {
            Op::Socket {
                kind: SockOp::Connect,
                addr,
                ..
            } => assert_eq!(addr.len(), 128),
            _ => panic!("connect is a socket call"),
        }
    }
}
