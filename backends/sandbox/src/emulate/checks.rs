//! The policy's checks of a resolved file: its real path, device rules, /proc entries of
//! other processes.

use super::*;

impl Emulator {
    pub(super) fn check(&mut self, fd: &OwnedFd, access: Access, syscall: &str) -> R<()> {
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
    pub(super) fn check_other_process_memory(&mut self, fd: &OwnedFd) -> R<()> {
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
    pub(super) fn callers_tty(&mut self, c: &Creds) -> R<OwnedFd> {
        let stat = crate::procfs::read_at(&self.host_proc, &format!("{}/stat", c.tgid))?;
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
    pub(super) fn check_device(&mut self, fd: &OwnedFd, flags: i32) -> R<()> {
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

    pub(super) fn check_named(
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
    pub(super) fn readable_named(&self, parent: &OwnedFd, name: &CStr) -> bool {
        self.granted_everywhere(Access::Read)
            || self.real_path(parent).is_ok_and(|p| {
                self.policy
                    .check(&p.join(OsStr::from_bytes(name.to_bytes())), Access::Read)
                    .is_ok()
            })
    }

    pub(super) fn granted_everywhere(&self, access: Access) -> bool {
        self.everywhere[access as usize]
    }

    pub(super) fn check_path(&mut self, path: &Path, access: Access, syscall: &str) -> R<()> {
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
}
