//! Performing a decoded operation on what was resolved, as the caller.

use super::*;

impl Emulator {
    pub(super) fn perform(
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
                self.cache().exec_starts(c.tgid, tid);
                Ok(Outcome::Continue)
            }
            Op::Socket { kind, fd, addr } => self.socket(tid, c, kind, fd, addr, listener, id),
            Op::Listen { fd, backlog } => self.listen(c, fd, backlog),
        }
    }
}
