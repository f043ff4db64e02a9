//! The second wall: the policy's path sets as a Landlock ruleset on the container's processes,
//! so that what the supervisor does not see (execve's final binary, truncate, calls on fds)
//! is still held to the policy by the kernel.

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI,
};

use crate::policy::Policy;
use crate::{Error, Result};

/// Restricts the calling process (and what it executes) to the policy. Paths the rootfs does
/// not have are skipped. Kernels without Landlock leave the seccomp wall alone, with a
/// warning. With `scope_abstract_sockets` (the container shares the host's network
/// namespace, whose abstract Unix names are the host's), sending to or connecting to an
/// abstract socket made outside this process's domain is refused (Landlock ABI 6).
pub fn restrict(policy: &Policy, scope_abstract_sockets: bool) -> Result<()> {
    let abi = ABI::V3;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let err = |e: landlock::RulesetError| Error::Setup(format!("landlock: {e}"));
    let mut ruleset = Ruleset::default().handle_access(all).map_err(err)?;
    if scope_abstract_sockets {
        ruleset = ruleset
            .scope(landlock::Scope::AbstractUnixSocket)
            .map_err(err)?;
    }
    let mut rules = ruleset.create().map_err(err)?;
    let sets = [
        (&policy.read_only, read),
        (&policy.exec, read | AccessFs::Execute),
        (&policy.read_write, all & !AccessFs::Execute),
    ];
    for (paths, access) in sets {
        for p in paths {
            let Ok(fd) = PathFd::new(p) else { continue };
            // A write-set path that is a kernel filesystem (sysfs, cgroupfs, debugfs, ...) is
            // not written through it, whatever the bundle mounted there or by which path:
            // decided on what is mounted, not on the names a config.json declares. (Beneath
            // a writable "/" Landlock cannot carve one out: a bundle mounting sysfs
            // read-write grants it, as under native.) The container's own procfs stays.
            let access = if access.contains(AccessFs::WriteFile) && is_kernel_fs(&fd) {
                read
            } else {
                access
            };
            rules = rules.add_rule(PathBeneath::new(fd, access)).map_err(err)?;
        }
    }
    let status = rules.restrict_self().map_err(err)?;
    if status.ruleset == landlock::RulesetStatus::NotEnforced {
        tracing::warn!("landlock is not supported by this kernel: only the seccomp wall applies");
    }
    Ok(())
}

/// Whether `fd` is on a filesystem that is the kernel's own interface (not procfs: a
/// container's own /proc is its processes').
fn is_kernel_fs(fd: &PathFd) -> bool {
    match nix::sys::statfs::fstatfs(fd) {
        Ok(st) => strata_linux::kernelfs::is_interface(st.filesystem_type().0),
        // Unknown: not written through the set.
        Err(_) => true,
    }
}
