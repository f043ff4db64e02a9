//! `linux.sysctl`: kernel parameters a container sets for itself.
//!
//! Most of /proc/sys is global to the host. Only a parameter that belongs to a kernel
//! namespace, and only when the container has a namespace of that kind of its own (new, or
//! joined but not the runtime's), changes the container alone; anything else would reach the
//! host (`kernel.core_pattern` runs a program of the container's choice as root), so it is
//! refused before anything is created, as runc does.
//!
//! The write itself goes through an fd of /proc/sys checked to be procfs, resolved with no
//! symlinks and without crossing mounts, so that a mount placed over /proc/sys or beneath it
//! cannot redirect the value into a file.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use oci_spec::runtime::LinuxNamespaceType as NsType;

use crate::error::{Error, Result};
use crate::namespaces::NamespacePlan;

/// The IPC namespace's parameters under `kernel.` (besides every `fs.mqueue.` one).
const IPC_KERNEL: &[&str] = &[
    "msgmax",
    "msgmnb",
    "msgmni",
    "sem",
    "shmall",
    "shmmax",
    "shmmni",
    "shm_rmid_forced",
];

/// A parameter's path under /proc/sys, from its dotted name (`net.ipv4.ip_forward`) or its
/// slashed one (`net/ipv4/conf/eth0.100/rp_filter`, for names that hold dots themselves).
fn components(key: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    let valid = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:@+".contains(&b))
    };
    (parts.len() >= 2 && parts.iter().all(valid)).then_some(parts)
}

/// The namespace a parameter belongs to, if any.
fn namespace_of(parts: &[&str]) -> Option<NsType> {
    match parts {
        ["net", ..] => Some(NsType::Network),
        ["fs", "mqueue", ..] => Some(NsType::Ipc),
        ["kernel", name] if IPC_KERNEL.contains(name) => Some(NsType::Ipc),
        ["kernel", "domainname"] => Some(NsType::Uts),
        // Per pid namespace, and can only be raised there (Linux 6.3).
        ["vm", "memfd_noexec"] => Some(NsType::Pid),
        _ => None,
    }
}

/// Checks every requested parameter against the container's namespaces.
pub fn validate(sysctl: &HashMap<String, String>, plan: &NamespacePlan) -> Result<()> {
    for key in sysctl.keys() {
        let field = format!("linux.sysctl[{key}]");
        let parts = components(key)
            .ok_or_else(|| Error::config(&field, "is not a kernel parameter name"))?;
        if parts == ["kernel", "hostname"] {
            return Err(Error::config(
                &field,
                "conflicts with the hostname field; set that instead",
            ));
        }
        let Some(ns) = namespace_of(&parts) else {
            return Err(Error::config(
                &field,
                "is not in a separate kernel namespace: it would change the host",
            ));
        };
        if !plan.owns(ns) {
            let name = crate::namespaces::proc_name(ns);
            return Err(Error::config(
                &field,
                format!("belongs to the {name} namespace, and the container has none of its own"),
            ));
        }
    }
    Ok(())
}

/// Writes the parameters; called by the init once it is in all its namespaces, with the
/// runtime's /proc still mounted (before pivot_root). The namespace a value lands in is the
/// writer's, whichever procfs it goes through.
pub fn apply(sysctl: &HashMap<String, String>) -> Result<()> {
    if sysctl.is_empty() {
        return Ok(());
    }
    let sys = nix::fcntl::open(
        "/proc/sys",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::config("linux.sysctl", format!("opening /proc/sys: {e}")))?;
    let fs = nix::sys::statfs::fstatfs(sys.as_fd())
        .map_err(|e| Error::config("linux.sysctl", format!("/proc/sys: {e}")))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Error::config("linux.sysctl", "/proc/sys is not procfs"));
    }
    // The order of a map is arbitrary; sort so that a failure is the same one every time.
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.sysctl[{key}]");
        let parts = components(key)
            .ok_or_else(|| Error::config(&field, "is not a kernel parameter name"))?;
        let rel: PathBuf = parts.iter().collect();
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let fd =
            openat2(sys.as_fd(), &rel, how).map_err(|e| Error::config(&field, e.to_string()))?;
        let value = sysctl[key].as_bytes();
        nix::unistd::write(&fd, value)
            .map_err(|e| Error::config(&field, format!("writing {:?}: {e}", sysctl[key])))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_namespaces() {
        let ns = |k: &str| components(k).and_then(|p| namespace_of(&p));
        assert_eq!(ns("net.ipv4.ip_forward"), Some(NsType::Network));
        assert_eq!(
            ns("net/ipv4/conf/eth0.100/rp_filter"),
            Some(NsType::Network)
        );
        assert_eq!(ns("kernel.shmmax"), Some(NsType::Ipc));
        assert_eq!(ns("fs.mqueue.msg_max"), Some(NsType::Ipc));
        assert_eq!(ns("kernel.domainname"), Some(NsType::Uts));
        assert_eq!(ns("kernel.core_pattern"), None);
        assert_eq!(ns("vm.overcommit_memory"), None);
        assert_eq!(ns("kernel.msgmax.extra"), None);
        for bad in [
            "net",
            "net..ipv4",
            "net.ipv4/../../kernel/core_pattern",
            "net/../kernel/core_pattern",
            "net.ipv4.ip forward",
            "",
        ] {
            assert!(components(bad).is_none(), "{bad}");
        }
    }
}
