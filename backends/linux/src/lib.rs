//! Building and running an OCI container on Linux. Used by strata's native backend, by the
//! sandbox backend, and inside the VM guest by the agent.

pub mod affinity;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod exec;
pub mod fault;
pub mod hooks;
pub mod kernelfs;
pub mod lsm;
pub mod mempolicy;
pub mod namespaces;
pub mod net;
pub mod proc;
pub mod process;
pub mod rootfs;
pub mod sched;
pub mod seccomp;
pub mod sync;
pub mod sysctl;
pub mod trampoline;
pub mod tty;

pub use error::{Error, Result};

/// Whether strata runs without the host's root: as another user, or as root of a user
/// namespace (rootless podman runs its runtime so). Such a runtime maps only the ids it owns
/// and gets cgroups only where the user may create them.
pub fn rootless() -> bool {
    static ROOTLESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOTLESS.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return true;
        }
        // The initial user namespace maps every id: "0 0 4294967295".
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}
