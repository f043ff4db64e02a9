//! Resolving a caller's path once, inside the container's root and without /proc magic
//! links, to an fd that every check and operation then uses.

use super::*;

impl Emulator {
    /// The directory a relative path starts from: the caller's cwd or its dirfd, reopened
    /// from the host's /proc (O_PATH). Absolute paths ignore it, as the kernel does.
    pub(super) fn dir_fd(&self, tid: u32, dirfd: i32, path: &[u8]) -> R<Dir> {
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
    pub(super) fn proc_self(&self, c: &Creds, path: &[u8]) -> Vec<u8> {
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
    pub(super) fn resolve(
        &self,
        tid: u32,
        c: &Creds,
        dirfd: i32,
        path: &[u8],
        flags: i32,
    ) -> R<OwnedFd> {
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
    pub(super) fn resolve_following_proc_links(
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
    pub(super) fn parent(
        &self,
        tid: u32,
        c: &Creds,
        dirfd: i32,
        path: &[u8],
    ) -> R<(OwnedFd, CString)> {
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
        Self::parent_in(dir, dir_part, last)
    }

    /// [`Self::parent`] of a path whose directory part is `dir_part`, looked up from `dir`
    /// (the container's root for an absolute one).
    pub(super) fn parent_in(dir: Dir, dir_part: &[u8], last: &[u8]) -> R<(OwnedFd, CString)> {
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

    /// Where a symlink named `last` in `parent` points, as a parent and a last name: an
    /// absolute target from the container's root, a relative one from `parent`.
    pub(super) fn symlink_target(&self, parent: &OwnedFd, last: &CStr) -> R<(OwnedFd, CString)> {
        let target = nix::fcntl::readlinkat(parent.as_fd(), last)?;
        let target = target.as_bytes();
        let mut t = target;
        while t.len() > 1 && t.ends_with(b"/") {
            t = &t[..t.len() - 1];
        }
        let (dir_part, name) = match t.iter().rposition(|b| *b == b'/') {
            Some(0) => (&b"/"[..], &t[1..]),
            Some(i) => (&t[..i], &t[i + 1..]),
            None => (&b"."[..], t),
        };
        if name.is_empty() || name == b"." || name == b".." || t.len() != target.len() {
            // A target naming a directory: O_CREAT cannot make one.
            return Err(Errno::EISDIR);
        }
        let dir = if dir_part.first() == Some(&b'/') {
            Dir::Root(self.root.as_raw_fd())
        } else {
            Dir::Own(parent.try_clone().map_err(|_| Errno::EMFILE)?)
        };
        Self::parent_in(dir, dir_part, name)
    }

    pub(super) fn real_path(&self, fd: &OwnedFd) -> R<PathBuf> {
        let link = proc_fd_path(fd.as_raw_fd());
        let p = nix::fcntl::readlinkat(self.host_proc.as_fd(), link.as_c_str())?;
        Ok(PathBuf::from(p))
    }
}

pub(super) fn openat_raw(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> R<OwnedFd> {
    // SAFETY: a valid C string and plain integers; the result is a new fd we own.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags, mode) };
    let fd = Errno::result(fd)?;
    // SAFETY: openat returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 with RESOLVE_NO_MAGICLINKS always added to what the caller asked.
pub(super) fn openat2(dir: RawFd, path: &CStr, flags: i32, mode: u32, resolve: u64) -> R<OwnedFd> {
    #[repr(C)]
    pub(super) struct OpenHow {
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
pub(super) enum Dir {
    Root(RawFd),
    Own(OwnedFd),
}

impl Dir {
    pub(super) fn into_owned(self) -> R<OwnedFd> {
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
