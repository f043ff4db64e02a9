//! The sandbox's seccomp profile: deny by default, an allowlist much tighter than Docker's,
//! the file and socket syscalls trapped to the supervisor, and the dangerous ones refused
//! with EPERM. Built as an OCI `linux.seccomp` object so strata-linux loads it like any
//! bundle profile, after the bundle's own.

use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;

use crate::policy::{Network, Policy};

/// Syscalls the supervisor performs for the container (SECCOMP_RET_USER_NOTIF).
pub const TRAPPED: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "chmod",
    "fchmodat",
    "chown",
    "lchown",
    "fchownat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "execve",
    "execveat",
    "connect",
    "bind",
    "fchmodat2",
    "mknod",
    "mknodat",
    "utime",
    "utimes",
    "futimesat",
];

/// Calls that change the caller's own credentials: trapped only so that the supervisor
/// forgets the identity it cached for the thread, then run by the kernel as made (nothing
/// in their arguments is a path or an address).
pub const CREDENTIAL_CHANGES: &[&str] = &[
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "umask",
];

/// Refused outright with EPERM: they reach kernel surface a container has no business with,
/// or would undo the sandbox.
pub const FORBIDDEN: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "quotactl",
    "lookup_dcookie",
    "fanotify_init",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "iopl",
    "ioperm",
    "vhangup",
    "pidfd_getfd",
];

/// Allowed as the kernel does them: no path, or a path the kernel resolves inside the
/// container's root with no policy meaning (chdir), or guarded by Landlock (truncate).
pub const ALLOWED: &[&str] = &[
    "read",
    "write",
    "close",
    "fstat",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "pipe",
    "pipe2",
    "select",
    "pselect6",
    "poll",
    "ppoll",
    "sched_yield",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "dup",
    "dup2",
    "dup3",
    "pause",
    "nanosleep",
    "clock_nanosleep",
    "getitimer",
    "alarm",
    "setitimer",
    "getpid",
    "sendfile",
    "socketpair",
    "accept",
    "accept4",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tkill",
    "tgkill",
    "uname",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "fchmod",
    "fchown",
    "gettimeofday",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "sysinfo",
    "times",
    "getuid",
    "getgid",
    "geteuid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setpgid",
    "getpgid",
    "getppid",
    "getpgrp",
    "setsid",
    "getsid",
    "capget",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "statfs",
    "fstatfs",
    "getpriority",
    "setpriority",
    "sched_setparam",
    "sched_getparam",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_getaffinity",
    "sched_setattr",
    "sched_getattr",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "prctl",
    "arch_prctl",
    "sync",
    "syncfs",
    "gettid",
    "readahead",
    "time",
    "futex",
    "futex_waitv",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "restart_syscall",
    "fadvise64",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "clock_gettime",
    "clock_getres",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "splice",
    "tee",
    "vmsplice",
    "sync_file_range",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "eventfd",
    "eventfd2",
    "fallocate",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "getrandom",
    "memfd_create",
    "copy_file_range",
    "rseq",
    "close_range",
    "pidfd_open",
    "pidfd_send_signal",
    "membarrier",
    "getcpu",
    "personality",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "ioprio_get",
    "ioprio_set",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "fgetxattr",
    "flistxattr",
    "getxattr",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "statmount",
    "listmount",
    "map_shadow_stack",
    // Landlock only ever takes access away; the sandbox's own ruleset is built with these.
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
];

/// Socket families a policy lets the container create: Unix sockets only without a
/// network, else also IP and netlink (which `ip` and glibc's interface listing use). Others
/// (packet, vsock, crypto, ...) reach kernel surface a container has no use for.
fn socket_families(policy: &Policy) -> &'static [i32] {
    match policy.network {
        Network::None => &[libc::AF_UNIX],
        _ => &[
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ],
    }
}

/// The profile for a container under `policy`; `listener` is the supervisor's socket
/// (`listenerPath`).
pub fn profile(listener: &Path, policy: &Policy) -> LinuxSeccomp {
    let rule = |names: &[&str], action: &str, errno: Option<u32>| {
        let mut r = serde_json::json!({"names": names, "action": action});
        if let Some(e) = errno {
            r["errnoRet"] = e.into();
        }
        r
    };
    let mut value = serde_json::json!({
        // Unknown syscalls say "not implemented", so that programs probing for new ones
        // (clone3, statx, ...) fall back as they would on an older kernel.
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": listener,
        "listenerMetadata": "strata-sandbox",
        "syscalls": [
            rule(ALLOWED, "SCMP_ACT_ALLOW", None),
            rule(TRAPPED, "SCMP_ACT_NOTIFY", None),
            rule(CREDENTIAL_CHANGES, "SCMP_ACT_NOTIFY", None),
            rule(FORBIDDEN, "SCMP_ACT_ERRNO", Some(libc::EPERM as u32)),
        ],
    });
    let syscalls = value["syscalls"].as_array_mut().expect("an array");
    // A rule that applies when argument `index` compares with `value` by `op`.
    let when =
        |name: &str, action: &str, errno: Option<u32>, (index, op, value): (u32, &str, i64)| {
            let mut r = rule(&[name], action, errno);
            r["args"] = serde_json::json!([{"index": index, "value": value, "op": op}]);
            r
        };
    // socket(2): decided in the filter by its family argument, at no cost to the call. The
    // other families get EAFNOSUPPORT, rule by rule: libseccomp lets an unconditional rule
    // override the conditional ones on the same syscall, so the refusal is spelled out as
    // every other value.
    let families = socket_families(policy);
    let refused = Some(libc::EAFNOSUPPORT as u32);
    let top = families.iter().copied().max().unwrap_or(0);
    for family in 0..=top {
        let (action, errno) = if families.contains(&family) {
            ("SCMP_ACT_ALLOW", None)
        } else {
            ("SCMP_ACT_ERRNO", refused)
        };
        syscalls.push(when(
            "socket",
            action,
            errno,
            (0, "SCMP_CMP_EQ", family as i64),
        ));
    }
    syscalls.push(when(
        "socket",
        "SCMP_ACT_ERRNO",
        refused,
        (0, "SCMP_CMP_GT", top as i64),
    ));
    // sendto(2) with a destination (argument 4) is a connect: checked by the supervisor;
    // without one (send(2) on a connected socket) it goes straight through. utimensat(2) on
    // a path (argument 1) is checked like a write; on an fd (futimens) it is not trapped.
    for (name, index) in [("sendto", 4), ("utimensat", 1)] {
        syscalls.push(when(
            name,
            "SCMP_ACT_ALLOW",
            None,
            (index, "SCMP_CMP_EQ", 0),
        ));
        syscalls.push(when(
            name,
            "SCMP_ACT_NOTIFY",
            None,
            (index, "SCMP_CMP_NE", 0),
        ));
    }
    serde_json::from_value(value).expect("the sandbox profile is a valid LinuxSeccomp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_disjoint_and_compile() {
        for t in TRAPPED.iter().chain(CREDENTIAL_CHANGES) {
            assert!(!ALLOWED.contains(t) && !FORBIDDEN.contains(t), "{t}");
        }
        for t in CREDENTIAL_CHANGES {
            assert!(!TRAPPED.contains(t), "{t}");
        }
        for f in FORBIDDEN {
            assert!(!ALLOWED.contains(f), "{f}");
        }
        let p = profile(
            Path::new("/run/strata/x/supervisor.sock"),
            &Policy::builtin(),
        );
        let f = strata_linux::seccomp::compile(&p).unwrap();
        assert!(f.has_notify());
    }
}
