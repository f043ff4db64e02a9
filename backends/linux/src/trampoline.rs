//! The last exec before the workload goes through a tiny program in a sealed memfd, so that
//! the host's strata binary is never what `/proc/<pid>/exe` names while the kernel resolves the
//! workload's executable (CVE-2019-5736).
//!
//! The container's init and every exec'd process are forks of the runtime: until execve their
//! `/proc/self/exe` is the strata binary on the host. If the workload path (or a symlink on it,
//! or the interpreter of a `#!` script the container planted, or an ELF interpreter) leads to
//! `/proc/self/exe`, the kernel executes the host's strata binary inside the container, as a
//! dumpable process: any other process of the container can then open `/proc/<pid>/exe` and,
//! once it exits, reopen that inode for writing and replace the host binary. The container
//! controls its own files, so no check of the path beforehand can be free of races.
//!
//! So the runtime does not execve the workload itself: it execs this program, from a memfd
//! made for the one call and sealed against writes, which then execs the workload. Whatever the
//! workload's path resolves through, the only executable it can reach by `/proc/self/exe` is
//! this memfd, which no one can change, and which nothing uses again.
//!
//! The program is a few instructions of x86_64 code in a minimal static ELF, assembled here:
//! `execve(argv[0], &argv[1], envp)`. Before that it makes the error fd close-on-exec, so
//! that a successful execve closes it; if execve fails, it writes the errno (4 bytes, native
//! order) to that fd and exits 127. Readers tell that reply from the runtime's own error text
//! because it holds a NUL byte, which no error message does.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Context, Result};

/// Where the program is loaded (a conventional static-binary address).
const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;
const HEADERS: usize = EHDR + 2 * PHDR;

/// The program's code, with `errfd` the fd it reports an exec failure on.
fn code(errfd: i32) -> Vec<u8> {
    let fd = errfd.to_le_bytes();
    let mov_edi_errfd = [0xbf, fd[0], fd[1], fd[2], fd[3]];
    // The two exits, at the end; jumps to them are patched once their offsets are known.
    let fail: &[u8] = &[
        0xf7, 0xd8, // neg eax
        0x89, 0x04, 0x24, // mov [rsp], eax
    ];
    let report: Vec<u8> = [
        &mov_edi_errfd[..],
        &[0x48, 0x89, 0xe6],    // mov rsi, rsp
        &[0xba, 0x04, 0, 0, 0], // mov edx, 4
        &[0xb8, 0x01, 0, 0, 0], // mov eax, SYS_write
        &[0x0f, 0x05],          // syscall
    ]
    .concat();
    let exit: &[u8] = &[
        0xbf, 127, 0, 0, 0, // mov edi, 127
        0xb8, 231, 0, 0, 0, // mov eax, SYS_exit_group
        0x0f, 0x05, // syscall
    ];
    let mut c = Vec::new();
    // fcntl(errfd, F_SETFD, FD_CLOEXEC)
    c.extend_from_slice(&mov_edi_errfd);
    c.extend_from_slice(&[0xbe, 0x02, 0, 0, 0]); // mov esi, F_SETFD
    c.extend_from_slice(&[0xba, 0x01, 0, 0, 0]); // mov edx, FD_CLOEXEC
    c.extend_from_slice(&[0xb8, 72, 0, 0, 0]); // mov eax, SYS_fcntl
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
                                        // EBADF: errfd is gone, so this is not the run the runtime started but a second one,
                                        // the workload's path having led back to /proc/self/exe (a `#!/proc/self/exe` script):
                                        // stop here rather than loop through exec forever.
    c.extend_from_slice(&[0x83, 0xf8, (-libc::EBADF) as u8]); // cmp eax, -EBADF
    c.extend_from_slice(&[0x74, 0]); // je exit (patched)
    let to_exit = c.len() - 1;
    // A seccomp profile that refuses fcntl must not leave the fd open in the workload (its
    // reader would wait for the workload's end): close it instead, and report nothing.
    c.extend_from_slice(&[0x85, 0xc0]); // test eax, eax
    c.extend_from_slice(&[0x74, 12]); // jz +12 (over the close)
    c.extend_from_slice(&mov_edi_errfd);
    c.extend_from_slice(&[0xb8, 3, 0, 0, 0]); // mov eax, SYS_close
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
                                        // execve(argv[0], &argv[1], &argv[argc + 1]); at entry [rsp] = argc, argv from rsp + 8.
    c.extend_from_slice(&[0x48, 0x8b, 0x7c, 0x24, 0x08]); // mov rdi, [rsp + 8]
    c.extend_from_slice(&[0x48, 0x8d, 0x74, 0x24, 0x10]); // lea rsi, [rsp + 16]
    c.extend_from_slice(&[0x48, 0x8b, 0x04, 0x24]); // mov rax, [rsp]
    c.extend_from_slice(&[0x48, 0x8d, 0x54, 0xc4, 0x10]); // lea rdx, [rsp + rax * 8 + 16]
    c.extend_from_slice(&[0xb8, 59, 0, 0, 0]); // mov eax, SYS_execve
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
                                        // Failed: write(errfd, &errno, 4), then exit_group(127).
    c.extend_from_slice(fail);
    c.extend_from_slice(&report);
    let exit_at = c.len();
    c.extend_from_slice(exit);
    c[to_exit] = (exit_at - to_exit - 1) as u8;
    c
}

/// The whole ELF image: header, a PT_LOAD of the file itself (read + execute) and a
/// PT_GNU_STACK without execute (so the kernel gives the process no executable stack and
/// no READ_IMPLIES_EXEC personality that would outlive the next execve), then the code.
fn image(errfd: i32) -> Vec<u8> {
    let code = code(errfd);
    let size = (HEADERS + code.len()) as u64;
    let mut e = Vec::with_capacity(size as usize);
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // 64-bit, little endian, v1
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    e.extend_from_slice(&(BASE + HEADERS as u64).to_le_bytes()); // e_entry
    e.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&(EHDR as u16).to_le_bytes());
    e.extend_from_slice(&(PHDR as u16).to_le_bytes());
    e.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&[0; 6]); // no section headers
    let phdr = |e: &mut Vec<u8>, typ: u32, flags: u32, size: u64, align: u64| {
        e.extend_from_slice(&typ.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
        let addr = if typ == 1 { BASE } else { 0 };
        e.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
        e.extend_from_slice(&addr.to_le_bytes()); // p_paddr
        e.extend_from_slice(&size.to_le_bytes()); // p_filesz
        e.extend_from_slice(&size.to_le_bytes()); // p_memsz
        e.extend_from_slice(&align.to_le_bytes());
    };
    phdr(&mut e, 1, 5, size, 0x1000); // PT_LOAD, R|X
    phdr(&mut e, 0x6474_e551, 6, 0, 16); // PT_GNU_STACK, R|W
    e.extend_from_slice(&code);
    e
}

const MFD_CLOEXEC: libc::c_uint = 0x1;
const MFD_ALLOW_SEALING: libc::c_uint = 0x2;
/// Linux 6.3: an executable memfd even where vm.memfd_noexec makes memfds non-executable by
/// default. Older kernels reject the flag; their memfds are executable anyway.
const MFD_EXEC: libc::c_uint = 0x10;

/// The program, in a sealed memfd (close-on-exec), reporting failures on `errfd`.
pub struct Trampoline {
    fd: OwnedFd,
    errfd: i32,
}

impl Trampoline {
    pub fn new(errfd: i32) -> Result<Trampoline> {
        let name = c"strata-exec";
        let create = |flags: libc::c_uint| {
            // SAFETY: memfd_create with a valid C string and flags; returns a new fd.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
            // SAFETY: a non-negative result is a new fd that we own.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let base = MFD_CLOEXEC | MFD_ALLOW_SEALING;
        let fd = create(base | MFD_EXEC)
            .or_else(|| create(base))
            .ok_or_else(std::io::Error::last_os_error)
            .ctx(|| "memfd_create for the exec trampoline".into())?;
        let bytes = image(errfd);
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, &bytes)
            .ctx(|| "writing the exec trampoline".into())?;
        let fd = OwnedFd::from(file);
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on an fd we own with an integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| "sealing the exec trampoline".into());
        }
        Ok(Trampoline { fd, errfd })
    }

    #[cfg(test)]
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `path` with `args` and `env` through the program, which reports a failure of
    /// that exec on `channel` (an fd of the caller's: the pipe or socket its reader waits on).
    /// Returns only if the program itself could not be run, with the fds as they were, so
    /// that the caller can fall back to a plain execve. Between fork and exec: only fcntl,
    /// dup2, close and execveat on memory prepared by the caller (argv and envp are built
    /// here, as the runtime's own exec does).
    pub fn exec(
        &mut self,
        channel: RawFd,
        path: &Path,
        args: &[String],
        env: &[String],
    ) -> crate::Error {
        use std::os::unix::ffi::OsStrExt;
        let strings = || -> Result<(Vec<CString>, Vec<CString>)> {
            let p = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| crate::Error::config("process.args", "contains a NUL byte"))?;
            let mut argv = vec![p];
            argv.extend(crate::process::cstrings(args, "process.args")?);
            Ok((argv, crate::process::cstrings(env, "process.env")?))
        };
        let (argv, envp) = match strings() {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Err(e) = self.keep_clear_of_errfd() {
            return e;
        }
        // The channel goes on errfd without close-on-exec (dup2 clears it; on the same
        // number, fcntl does), so that it survives this exec and the program's fcntl closes
        // it at the next.
        // SAFETY: fcntl/dup2 on fds the caller owns; errfd is free or is the channel itself.
        let placed = unsafe {
            if channel == self.errfd {
                libc::fcntl(channel, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(channel, self.errfd) == self.errfd
            }
        };
        if !placed {
            return std::io::Error::last_os_error()
                .into_ctx("placing the exec trampoline's error channel");
        }
        let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        a.push(std::ptr::null());
        let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        e.push(std::ptr::null());
        // SAFETY: argv and envp are NUL-terminated arrays of valid C strings that outlive
        // the call; "" with AT_EMPTY_PATH names the memfd itself.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.fd.as_raw_fd(),
                c"".as_ptr(),
                a.as_ptr(),
                e.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        let err = std::io::Error::last_os_error();
        // Back as it was: the caller's channel close-on-exec, no copy on errfd.
        // SAFETY: as above, on our own fds.
        unsafe {
            if channel == self.errfd {
                libc::fcntl(channel, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(self.errfd);
            }
        }
        err.into_ctx(&format!("exec {} through the trampoline", path.display()))
    }

    /// Moves the memfd off errfd's number, where the error channel goes.
    fn keep_clear_of_errfd(&mut self) -> Result<()> {
        if self.fd.as_raw_fd() != self.errfd {
            return Ok(());
        }
        // SAFETY: fcntl duplicates an fd we own onto a free number above errfd.
        let new =
            unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, self.errfd + 1) };
        if new < 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| "moving the exec trampoline".into());
        }
        // SAFETY: the new number is ours; the old one is closed with the replaced OwnedFd.
        self.fd = unsafe { OwnedFd::from_raw_fd(new) };
        Ok(())
    }
}

trait IntoCtx {
    fn into_ctx(self, what: &str) -> crate::Error;
}

impl IntoCtx for std::io::Error {
    fn into_ctx(self, what: &str) -> crate::Error {
        crate::Error::Io {
            what: what.to_string(),
            error: self,
        }
    }
}

/// Reads what an exec's error channel said: nothing (the workload runs), the program's errno,
/// or the runtime's own error text.
pub fn decode_reply(reply: &[u8], path: &str) -> Option<String> {
    if reply.is_empty() {
        return None;
    }
    if reply.len() == 4 && reply.contains(&0) {
        let errno = i32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]);
        let err = std::io::Error::from_raw_os_error(errno);
        return Some(format!("exec {path}: {err}"));
    }
    Some(String::from_utf8_lossy(reply).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Forks and runs `path` through the trampoline with a pipe as its error channel;
    /// returns the exit status and what came back on the pipe.
    fn run(path: &str, args: &[&str]) -> (i32, Vec<u8>) {
        let errfd = 40;
        let mut t = Trampoline::new(errfd).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env = vec!["PATH=/bin".to_string()];
        // SAFETY: the test is single-threaded at this point of the child; the child only dups
        // an fd and execs.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                let _ = t.exec(w.as_raw_fd(), Path::new(path), &args, &env);
                // SAFETY: leave the forked child without running the test harness.
                unsafe { libc::_exit(99) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut reply = Vec::new();
                std::fs::File::from(r).read_to_end(&mut reply).unwrap();
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                let code = match st {
                    nix::sys::wait::WaitStatus::Exited(_, c) => c,
                    other => panic!("{other:?}"),
                };
                (code, reply)
            }
        }
    }

    #[test]
    fn runs_the_workload_with_its_argv_and_closes_the_error_fd() {
        let (code, reply) = run("/bin/sh", &["custom-argv0", "-c", "exit 7"]);
        assert_eq!(code, 7);
        assert!(reply.is_empty(), "{reply:?}");
        assert_eq!(decode_reply(&reply, "/bin/sh"), None);
    }

    #[test]
    fn reports_an_exec_failure_as_an_errno() {
        let (code, reply) = run("/nonexistent/program", &["x"]);
        assert_eq!(code, 127);
        let msg = decode_reply(&reply, "/nonexistent/program").unwrap();
        assert!(msg.contains("No such file or directory"), "{msg}");
        assert_eq!(
            decode_reply(b"text error", "p").as_deref(),
            Some("text error")
        );
    }

    #[test]
    fn a_path_that_leads_back_to_the_trampoline_ends_instead_of_looping() {
        let dir = std::env::temp_dir().join(format!("strata-tramp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("loop");
        std::fs::write(&script, "#!/proc/self/exe\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (code, reply) = run(script.to_str().unwrap(), &["loop"]);
        std::fs::remove_dir_all(&dir).unwrap();
        // The exec of the script worked (its interpreter is the trampoline), which then
        // found no error fd and stopped.
        assert_eq!(code, 127);
        assert!(reply.is_empty(), "{reply:?}");
    }

    #[test]
    fn the_memfd_cannot_be_written() {
        let t = Trampoline::new(3).unwrap();
        let path = format!("/proc/self/fd/{}", t.raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }
}
