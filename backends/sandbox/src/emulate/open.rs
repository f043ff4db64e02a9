//! The open family: what may be opened, and how the file reaches the caller.

use super::*;

impl Emulator {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
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
                // O_CREAT never opens a directory, whatever the access mode.
                if flags & libc::O_CREAT != 0 && is_dir(&fd) {
                    return Err(Errno::EISDIR);
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
                        return self.defer(listener, id, move || {
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
                                return self.defer(listener, id, move || {
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
                // A name with a trailing slash is a directory, which O_CREAT cannot make.
                if path.ends_with(b"/") {
                    return Err(Errno::EISDIR);
                }
                let (mut parent, mut last) = self.parent(tid, c, dirfd, &path)?;
                // A dangling symlink is followed to the name it points at, which is created
                // (as the kernel does without O_EXCL or O_NOFOLLOW), inside the root; each
                // hop is resolved again, so a racing thread swapping links moves nothing out.
                let mut hops = 0;
                while flags & (libc::O_EXCL | libc::O_NOFOLLOW) == 0
                    && is_symlink_at(&parent, &last)
                {
                    hops += 1;
                    if hops > 40 {
                        return Err(Errno::ELOOP);
                    }
                    (parent, last) = self.symlink_target(&parent, &last)?;
                }
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
}

/// Whether `fd` (whose path reads `path`) is a memfd: a name under "/memfd:", gone ("
/// (deleted)"), with no link anywhere. A file someone named like that still has a link.
pub(super) fn is_memfd(fd: &OwnedFd, path: &Path) -> bool {
    let text = path.as_os_str().as_bytes();
    text.starts_with(b"/memfd:")
        && text.ends_with(b" (deleted)")
        && nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_nlink == 0)
}

/// /dev/tty (c 5:0): "the controlling terminal of whoever opens it".
pub(super) fn is_dev_tty(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 5
            && libc::minor(st.st_rdev) == 0
    })
}

/// Whether `name` exists in `dir` (a dangling symlink too).
pub(super) fn exists_at(dir: &OwnedFd, name: &CStr) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

pub(super) fn is_dir(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Whether `name` in `dir` is a symlink (not followed).
pub(super) fn is_symlink_at(dir: &OwnedFd, name: &CStr) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

pub(super) fn is_regular(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// Takes back the O_NONBLOCK an open added for itself.
pub(super) fn clear_nonblock(fd: &OwnedFd) -> R<()> {
    // SAFETY: fcntl on our fd with integer arguments.
    let fl = Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
    Ok(())
}

pub(super) fn is_fifo(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}
