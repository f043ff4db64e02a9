//! The agent's own seccomp filter for everything it runs for a container: `socket(AF_VSOCK,
//! ...)` fails with EAFNOSUPPORT, unless the host said the bundle may use vsock.
//!
//! It is loaded into the runtime process the agent spawns (`strata create`, `exec`, `start`,
//! ...), before that process runs any code of its own. Seccomp filters are inherited by every
//! child and cannot be removed, so the container's init, every exec'd process and every hook
//! the guest runtime runs are held to it, whatever the bundle's own profile says: that profile
//! is a separate filter loaded later, and the kernel applies the strictest answer of all of
//! them. (A conditional rule merged into the bundle's profile would not hold: libseccomp lets an
//! unconditional rule on the same syscall override it.)
//!
//! A hand-written classic BPF program rather than libseccomp: it is built at compile time, so
//! loading it between fork and exec is one system call that allocates nothing; and it
//! compares only the low 32 bits of the family, which is all the kernel reads of socket()'s
//! `int` argument (a 64-bit comparison is passed by a family with upper bits set).

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the agent's vsock filter is written for x86_64 guests");

use libc::sock_filter;

/// `AUDIT_ARCH_X86_64` (EM_X86_64 | 64-bit | little endian); not in the libc crate.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 system calls arrive with the x86_64 audit arch and this bit in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low half of args[0] (little endian).
const OFF_ARG0_LOW: u32 = 16;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump; `jt` and `jf` count instructions after this one.
const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

const SYS_SOCKET: u32 = libc::SYS_socket as u32;
const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;

static PROGRAM: [sock_filter; 10] = [
    /* 0 */ stmt(LD_W_ABS, OFF_ARCH),
    // Another ABI (i386 with IA32 emulation) would have socketcall(2), whose arguments are in
    // memory where no filter can read them; the guest kernel has none, so this never fires
    // there, and anywhere else it ends the process instead of letting it past.
    /* 1 */
    jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 7), // -> 9
    /* 2 */ stmt(LD_W_ABS, OFF_NR),
    /* 3 */ jump(JEQ_K, SYS_SOCKET, 1, 0), // -> 5
    /* 4 */ jump(JEQ_K, X32_SYSCALL_BIT | SYS_SOCKET, 0, 3), // -> 5 or 8
    /* 5 */ stmt(LD_W_ABS, OFF_ARG0_LOW),
    /* 6 */ jump(JEQ_K, libc::AF_VSOCK as u32, 0, 1), // -> 7 or 8
    /* 7 */ stmt(RET_K, DENY),
    /* 8 */ stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    /* 9 */ stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
];

/// Installs the filter on the calling thread. Async-signal-safe (one system call, no
/// allocation): made to run between fork and exec. Without no_new_privs the kernel requires
/// CAP_SYS_ADMIN, which the agent has.
pub fn deny_vsock() -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: PROGRAM.len() as u16,
        // The kernel only reads the program.
        filter: PROGRAM.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp(2) copies the program that `prog` points at (a static array of
    // PROGRAM.len() instructions) and keeps no pointer into it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs PROGRAM as the kernel would (the three instruction kinds it uses) on one call.
    fn verdict(arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = PROGRAM[pc];
            match ins.code {
                LD_W_ABS => {
                    let at = ins.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                    pc += 1;
                }
                JEQ_K => {
                    pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf });
                }
                RET_K => return ins.k,
                other => panic!("instruction {other:#x} at {pc} is not interpreted here"),
            }
        }
    }

    #[test]
    fn only_vsock_sockets_are_refused() {
        let vsock = libc::AF_VSOCK as u64;
        let x86 = AUDIT_ARCH_X86_64;
        assert_eq!(verdict(x86, SYS_SOCKET, vsock), DENY);
        // The kernel reads an int: bits above it must not get the call past.
        assert_eq!(verdict(x86, SYS_SOCKET, vsock | 1 << 32), DENY);
        assert_eq!(verdict(x86, X32_SYSCALL_BIT | SYS_SOCKET, vsock), DENY);
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(
                verdict(x86, SYS_SOCKET, family as u64),
                libc::SECCOMP_RET_ALLOW
            );
        }
        // Other calls with the same first argument are not socket().
        for nr in [libc::SYS_read, libc::SYS_socketpair, libc::SYS_close] {
            assert_eq!(verdict(x86, nr as u32, vsock), libc::SECCOMP_RET_ALLOW);
        }
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        assert_eq!(
            verdict(AUDIT_ARCH_I386, 102, 1),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    /// socket(family) in a child that loaded the filter first (or not): 0 if it opened, else
    /// its errno.
    fn socket_in_child(filtered: bool, family: i32) -> i32 {
        // SAFETY: the child makes only async-signal-safe calls (prctl, seccomp, socket,
        // _exit) before it exits, as a fork of a multi-threaded test process must.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: see above; no memory is shared with anything else in the child.
            unsafe {
                // Lets the filter load without CAP_SYS_ADMIN, as an unprivileged test runs.
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if filtered && deny_vsock().is_err() {
                    libc::_exit(255);
                }
                let fd = libc::socket(family, libc::SOCK_STREAM, 0);
                let code = if fd >= 0 {
                    0
                } else {
                    *libc::__errno_location()
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing into a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_loaded_filter_refuses_vsock_and_nothing_else() {
        assert_eq!(
            socket_in_child(true, libc::AF_VSOCK),
            libc::EAFNOSUPPORT,
            "socket(AF_VSOCK) under the filter"
        );
        assert_eq!(socket_in_child(true, libc::AF_UNIX), 0, "socket(AF_UNIX)");
        // Where this kernel has vsock, the refusal above is the filter's, not the kernel's.
        if socket_in_child(false, libc::AF_VSOCK) != 0 {
            eprintln!("note: this kernel has no AF_VSOCK; the refusal proves less here");
        }
    }
}
