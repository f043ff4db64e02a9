//! The filters VMM threads install once the guest runs (seccompiler; its BPF needs no libseccomp
//! and the VMM needs no USER_NOTIF). Each thread role gets only the system calls it makes; any
//! other call kills the VMM, so a compromised device model cannot reach the rest of the kernel.
//!
//! The lists are checked by tests that run each role's work under its filter.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    /// Runs KVM_RUN and the device models (port I/O, MMIO, virtio-fs requests).
    Vcpu,
    /// Serves the vsock Unix sockets.
    Vsock,
    /// Moves frames from a tap into the guest (reads, epoll and eventfds: the common set).
    Net,
    /// Waits for the guest to end, then exits the process.
    Main,
}

const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    // Rust's std checks an fd is still open before closing it in debug builds
    libc::SYS_fcntl,
];

const VCPU: &[i64] = &[
    libc::SYS_ioctl,
    // virtio-fs passthrough: every file operation a FUSE request can turn into
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_readv,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_fchown,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_utimensat,
    libc::SYS_dup,
    libc::SYS_flock,
    libc::SYS_copy_file_range,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_geteuid,
    libc::SYS_getegid,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_umask,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_setxattr,
    libc::SYS_getxattr,
    libc::SYS_listxattr,
    libc::SYS_removexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_fremovexattr,
    libc::SYS_fchdir,
    libc::SYS_getcwd,
    // a vsock queue notify connects to the host socket of a guest-initiated connection
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
];

const VSOCK: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_ioctl,
];

/// After the guest ends the main thread tears down: the vsock device removes its socket.
const MAIN: &[i64] = &[libc::SYS_unlink];

pub fn program(role: ThreadRole) -> Result<BpfProgram, String> {
    let extra = match role {
        ThreadRole::Vcpu => VCPU,
        ThreadRole::Vsock => VSOCK,
        ThreadRole::Main => MAIN,
        ThreadRole::Net => &[],
    };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra)
        .map(|nr| (*nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Confines the calling thread. A filter that cannot be built or loaded ends the VMM: running
/// unconfined when confinement was asked for is not an option.
pub fn apply_current_thread(role: ThreadRole) {
    let result =
        program(role).and_then(|p| seccompiler::apply_filter(&p).map_err(|e| e.to_string()));
    if let Err(e) = result {
        tracing::error!("cannot confine the {role:?} thread: {e}");
        std::process::exit(1);
    }
}
