//! Everything the sandbox adds to a native container's process, as one value the runtime
//! applies: its seccomp filters (after the bundle's own), the Landlock step right before
//! execve, the process as the sandbox runs it, and the sysctls it sets in the container.

use std::path::Path;

use oci_spec::runtime::{Capabilities, Capability, LinuxSeccomp, Process};

use crate::policy::Policy;

/// Capabilities a sandboxed process never gets. CAP_SYS_ADMIN is what mount, namespaces and
/// most of the kernel surface the profile refuses anyway would need, and it (like
/// CAP_CHECKPOINT_RESTORE) opens /proc/<pid>/map_files, through which a process could
/// execute anonymous shared memory, which lives on no path Landlock could rule.
const WITHHELD_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::CheckpointRestore];

/// The sandbox's part of one container process (the init, or an exec'd one).
pub struct Confinement {
    policy: Policy,
    host_network: bool,
    /// The refusals of the ioctls that change metadata through an fd, then the profile whose
    /// file and socket calls go to the supervisor. In that order: the profile refuses
    /// seccomp(2), so nothing can be loaded after it.
    pub seccomp: [LinuxSeccomp; 2],
}

/// The confinement of a container under `policy` whose supervisor listens on `listener`;
/// `host_network` when the container shares the host's network namespace.
pub fn confine(policy: &Policy, listener: &Path, host_network: bool) -> Confinement {
    Confinement {
        policy: policy.clone(),
        host_network,
        seccomp: [
            crate::profile::fd_metadata_profile(),
            crate::profile::profile(listener, policy),
        ],
    }
}

impl Confinement {
    /// The last step before execve, in the new process: the Landlock ruleset (abstract Unix
    /// sockets scoped too when the network is the host's).
    pub fn before_exec(&self) -> impl Fn() -> strata_linux::error::Result<()> + Sync + 'static {
        let (policy, host_network) = (self.policy.clone(), self.host_network);
        move || {
            crate::landlock::restrict(&policy, host_network)
                // The error says "sandbox: ..." itself; the field is the sandbox's Landlock.
                .map_err(|e| {
                    let text = e.to_string();
                    let reason = text.strip_prefix("sandbox: ").unwrap_or(&text).to_string();
                    strata_linux::error::Error::config("sandbox", reason)
                })
        }
    }

    /// The process as the sandbox runs it: noNewPrivileges (Landlock and an unprivileged
    /// filter load need it; setuid binaries gain nothing in a sandbox anyway), and without the
    /// withheld capabilities; in the host's network namespace also without CAP_NET_ADMIN,
    /// which would reconfigure the host's network.
    pub fn process(&self, p: &Process) -> Process {
        let mut p = p.clone();
        p.set_no_new_privileges(Some(true));
        if let Some(mut caps) = p.capabilities().clone() {
            let without = |set: &Option<Capabilities>| {
                set.clone().map(|mut s| {
                    for c in &WITHHELD_CAPS {
                        s.remove(c);
                    }
                    if self.host_network {
                        s.remove(&Capability::NetAdmin);
                    }
                    s
                })
            };
            caps.set_bounding(without(caps.bounding()));
            caps.set_effective(without(caps.effective()));
            caps.set_permitted(without(caps.permitted()));
            caps.set_inheritable(without(caps.inheritable()));
            caps.set_ambient(without(caps.ambient()));
            p.set_capabilities(Some(caps));
        }
        p
    }

    /// Sysctls the container gets. Where the kernel has it, every memfd of the container's
    /// pid namespace is made non-executable, for good (the value can only be raised): memfds
    /// live on no path, so Landlock's exec rule does not reach them. (Without the sysctl the
    /// profile refuses memfd_create.)
    pub fn sysctls(&self) -> Vec<(String, String)> {
        if crate::profile::memfd_noexec_supported() {
            vec![("vm.memfd_noexec".into(), "2".into())]
        } else {
            Vec::new()
        }
    }
}
