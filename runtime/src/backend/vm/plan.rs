//! What a bundle becomes in a VM: the spec as the guest sees it, the host directories and files
//! its bind mounts name (carried through the VM's share), and the VM's size. Everything a VM cannot honour is refused here, before any
//! resource exists, with the field that asked for it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

use super::share::Volume;
use crate::config::{annotation, NodeConfig};
use strata_agent_protocol::{POD_NAMESPACE, SHARE_PREFIX};

pub const MEMORY_ANNOTATION: &str = "dev.strata.vm.memory_mib";
pub const VCPUS_ANNOTATION: &str = "dev.strata.vm.vcpus";
/// `allow`: the container may open AF_VSOCK sockets (`deny`, the default: it may not).
pub const VSOCK_ANNOTATION: &str = "dev.strata.vm.vsock";
/// Guest memory when neither the bundle nor the node says.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Added to a container's memory limit: what the guest kernel, the agent and the runtime use
/// themselves. Measured in a 256 MiB guest with a container running `grep` on /proc/meminfo:
/// the kernel keeps 15.5 MiB (MemTotal 240.5 MiB) and 27 MiB more are in use (MemAvailable
/// 213.5 MiB), 43 MiB in all; the rest is headroom for the page cache of the virtio-fs rootfs.
pub const GUEST_OVERHEAD_MIB: u32 = 64;
/// The most memory a VM gets.
pub const MAX_MEMORY_MIB: u32 = 65536;

/// The guest-side device a host device node stands for, when a bind mount names one: the
/// guest has its own null, zero, full, random and urandom; nothing else of the host's /dev
/// can cross into a VM.
fn guest_device(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !meta.file_type().is_char_device() {
        return None;
    }
    let rdev = meta.rdev();
    match (libc::major(rdev), libc::minor(rdev)) {
        (1, 3) => Some("/dev/null"),
        (1, 5) => Some("/dev/zero"),
        (1, 7) => Some("/dev/full"),
        (1, 8) => Some("/dev/random"),
        (1, 9) => Some("/dev/urandom"),
        _ => None,
    }
}

/// The most bind mounts a VM's share carries (each is a mount in the monitor's namespace and
/// an entry the guest binds).
pub const MAX_VOLUMES: usize = 256;

/// A non-bind mount names no path: in a VM a path in a mount's source or options would be
/// resolved in the guest, where the only paths a bundle did not bring are the agent's own
/// (its work directory, the rootfs and the share, with every pod member's entries).
fn refuse_paths(i: usize, m: &oci_spec::runtime::Mount) -> Result<()> {
    let source = m.source().as_ref().map(|s| s.to_string_lossy().to_string());
    let named = source
        .iter()
        .chain(m.options().as_deref().unwrap_or_default())
        .find(|v| v.contains('/'));
    if let Some(value) = named {
        bail!(
            "vm backend: mounts[{i}] ({}): a {} mount naming the path {value:?}; paths of a \
             mount other than a bind are the guest's, not the host's (only bind mounts carry \
             host directories and files into a VM)",
            m.destination().display(),
            m.typ().as_deref().unwrap_or("typeless")
        );
    }
    // And only the kernel's own filesystems: a virtio-fs (or 9p, or block) mount would name a
    // device of the VM by its tag (the share, with every pod member's entries; the rootfs).
    const TYPES: &[&str] = &[
        "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "ramfs",
    ];
    let typ = m.typ().as_deref().unwrap_or_default();
    if !TYPES.contains(&typ) {
        bail!(
            "vm backend: mounts[{i}] ({}): type {typ:?} is not mounted in a VM (bind mounts \
             and {} are)",
            m.destination().display(),
            TYPES.join(", ")
        );
    }
    Ok(())
}

/// The host kernel's own files (/proc, /sys, cgroupfs, ...) are not shared into a VM: the
/// file server, root on the host, would write them for the guest. Checked again on what was
/// mounted (see `share`), since a path can change between the two.
pub fn refuse_kernel_fs(path: &Path, what: &str) -> Result<()> {
    let fs = nix::sys::statfs::statfs(path)
        .with_context(|| format!("vm backend: {what} {}", path.display()))?;
    let magic = fs.filesystem_type().0;
    if magic == strata_linux::kernelfs::PROC || strata_linux::kernelfs::is_interface(magic) {
        bail!(
            "vm backend: {what} {} is on a kernel filesystem of the host (procfs, sysfs, \
             cgroupfs, ...), which is not shared into a VM",
            path.display()
        );
    }
    Ok(())
}

/// Whether a bind mount's options leave it read-only (the last of `ro`/`rw` counts; `rro`
/// makes it and its submounts read-only).
fn bind_readonly(m: &oci_spec::runtime::Mount) -> bool {
    let mut ro = false;
    for o in m.options().as_deref().unwrap_or_default() {
        match o.as_str() {
            "ro" | "rro" => ro = true,
            "rw" => ro = false,
            _ => {}
        }
    }
    ro
}

/// The CRI's annotations: which container of a pod this is, and the pod's sandbox.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Where a container stands in a pod: one VM per pod, booted for the pod's sandbox
/// container, in which the pod's other containers (members) are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// A container without a pod (ctr, Docker, podman): a VM of its own.
    Alone,
    /// The CRI sandbox container: its VM is the pod's.
    Sandbox,
    /// A container of the pod whose sandbox container is `sandbox`.
    Member { sandbox: String },
}

impl PodRole {
    fn of(spec: &Spec) -> Result<PodRole> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        match annotations
            .get(CONTAINER_TYPE_ANNOTATION)
            .map(String::as_str)
        {
            None => Ok(PodRole::Alone),
            Some("sandbox") => Ok(PodRole::Sandbox),
            Some("container") => match annotations.get(SANDBOX_ID_ANNOTATION) {
                Some(id) if !id.is_empty() => Ok(PodRole::Member {
                    sandbox: id.clone(),
                }),
                _ => bail!(
                    "annotation {CONTAINER_TYPE_ANNOTATION}=container without \
                     {SANDBOX_ID_ANNOTATION}: the vm backend creates a pod's containers in the \
                     pod's VM, and needs to know which pod"
                ),
            },
            Some(other) => bail!(
                "annotation {CONTAINER_TYPE_ANNOTATION}: expected \"sandbox\" or \"container\", \
                 got {other:?}"
            ),
        }
    }
}

/// The CRI's sizing of a pod, as annotations on its sandbox container.
pub const SANDBOX_MEMORY_ANNOTATION: &str = "io.kubernetes.cri.sandbox-memory";
pub const SANDBOX_CPU_QUOTA_ANNOTATION: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_PERIOD_ANNOTATION: &str = "io.kubernetes.cri.sandbox-cpu-period";

#[derive(Debug, Default)]
struct SandboxSizing {
    /// Bytes.
    memory: Option<i64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<u64>,
}

impl SandboxSizing {
    fn of(spec: &Spec) -> Result<SandboxSizing> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        fn number<T: std::str::FromStr>(
            a: &std::collections::HashMap<String, String>,
            key: &str,
        ) -> Result<Option<T>> {
            match a.get(key) {
                None => Ok(None),
                Some(v) => v
                    .parse::<T>()
                    .map(Some)
                    .map_err(|_| anyhow::anyhow!("annotation {key}: expected a number, got {v:?}")),
            }
        }
        Ok(SandboxSizing {
            // 0 (or less): the pod sets no limit.
            memory: number::<i64>(&annotations, SANDBOX_MEMORY_ANNOTATION)?.filter(|m| *m > 0),
            cpu_quota: number(&annotations, SANDBOX_CPU_QUOTA_ANNOTATION)?,
            cpu_period: number(&annotations, SANDBOX_CPU_PERIOD_ANNOTATION)?,
        })
    }
}

#[derive(Debug)]
pub struct GuestPlan {
    pub spec: serde_json::Value,
    /// The bind mounts carried through the VM's share (see `share`).
    pub volumes: Vec<Volume>,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// The container may open AF_VSOCK sockets in the guest.
    pub allow_vsock: bool,
    /// The host directory shared as the guest's container rootfs.
    pub rootfs: PathBuf,
    /// The bundle's `root.readonly`.
    pub readonly_rootfs: bool,
    /// The network namespace the bundle names, whose interfaces the VM gets.
    pub netns: Option<PathBuf>,
    /// The guest's interfaces, once the host side is set up (see `network`).
    pub network: Vec<strata_agent_protocol::GuestInterface>,
    pub pod: PodRole,
    /// The bundle's `net.*` sysctls when the guest's network namespace is the container's
    /// (the agent sets them there).
    pub net_sysctls: std::collections::BTreeMap<String, String>,
    /// The bundle has prestart or createRuntime hooks: run on the host before the VM's
    /// network is taken over (see `monitor`).
    pub host_hooks: bool,
    /// A pod member's namespaces named by path (the sandbox's, by the CRI's convention),
    /// checked against the pod's VM before the member is created there.
    pub joined: Vec<(oci_spec::runtime::LinuxNamespaceType, PathBuf)>,
}

impl GuestPlan {
    /// A pod member's plan, made for the pod's running VM: its rootfs and volumes are
    /// entries of the VM's share named after the container (`ID-rootfs`, `ID-N`), and the
    /// guest spec points there.
    pub fn for_member(&mut self, id: &str) {
        for v in &mut self.volumes {
            let name = format!("{id}-{}", v.name);
            if let Some(mounts) = self.spec["mounts"].as_array_mut() {
                for m in mounts {
                    if m["source"] == format!("{SHARE_PREFIX}{}", v.name).as_str() {
                        m["source"] = format!("{SHARE_PREFIX}{name}").into();
                    }
                }
            }
            v.name = name;
        }
        let name = format!("{id}-rootfs");
        self.spec["root"]["path"] = format!("{SHARE_PREFIX}{name}").into();
        self.volumes.push(Volume {
            name,
            source: self.rootfs.clone(),
            is_dir: true,
            readonly: self.readonly_rootfs,
            recursive: true,
        });
    }

    /// The share the VM needs: its container's volumes, and for a pod's VM always one, for
    /// the members to come.
    pub fn needs_share(&self) -> bool {
        !self.volumes.is_empty() || self.pod == PodRole::Sandbox
    }
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

pub fn plan(spec: &Spec, bundle: &Path, node: &NodeConfig) -> Result<GuestPlan> {
    let hooks = spec.hooks().clone().unwrap_or_default();
    let set = |h: &Option<Vec<oci_spec::runtime::Hook>>| h.as_ref().is_some_and(|h| !h.is_empty());
    if set(hooks.create_container()) {
        bail!(
            "vm backend: hooks.createContainer is not supported: those hooks run in the \
             container's namespaces before its root is in place, with paths of the runtime's \
             namespace, which in a VM is the guest agent's, where no program of the bundle is \
             (startContainer hooks, which run in the container, are)"
        );
    }
    // prestart and createRuntime run on the host, with the VM's monitor (in the container's
    // host-side network namespace) as the state's pid: network hooks (Docker's, CNI-style)
    // configure that namespace, whose interfaces the VM then takes over.
    let host_hooks = set(hooks.prestart()) || set(hooks.create_runtime());
    let linux = spec.linux().clone().unwrap_or_default();
    let pod = PodRole::of(spec)?;
    if host_hooks && pod != PodRole::Alone {
        bail!(
            "vm backend: hooks.prestart and hooks.createRuntime are not supported on a pod's \
             containers"
        );
    }
    let mut netns = None;
    let mut joined = Vec::new();
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if let Some(path) = ns.path() {
            use oci_spec::runtime::LinuxNamespaceType as T;
            // A pod member shares the sandbox's network, IPC and UTS namespaces (and its PID
            // namespace, with shareProcessNamespace), which are in the pod's VM: checked
            // there, and the guest's joined instead.
            if matches!(pod, PodRole::Member { .. })
                && matches!(ns.typ(), T::Network | T::Ipc | T::Uts | T::Pid)
            {
                joined.push((ns.typ(), path.clone()));
                continue;
            }
            // A network namespace made for the container (by CNI, netavark, Docker) is where
            // the VM's network comes from: its interfaces are carried into the guest.
            if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                netns = Some(path.clone());
                continue;
            }
            bail!(
                "vm backend: linux.namespaces: joining the host's {:?} namespace {} is not \
                 supported; a vm container gets its own namespaces in its guest (drop the path, \
                 e.g. podman --network none)",
                ns.typ(),
                path.display()
            );
        }
    }
    // Without a network namespace the bundle asks for the host's network stack, which a VM
    // cannot share (the guest's own would be a different network, silently).
    use oci_spec::runtime::LinuxNamespaceType as Net;
    if !linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == Net::Network)
    {
        bail!(
            "vm backend: linux.namespaces has no network namespace, which asks for the host's \
             network; a VM cannot share the host's network stack (give the container a network \
             namespace: a pod network, a bridge, or none)"
        );
    }
    // The guest's own pid and mount namespaces are the agent's: a container in them could
    // reach it (its fds, its memory, its vsock listener) with a capability or two.
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    for (typ, name) in [(Ns::Pid, "pid"), (Ns::Mount, "mount")] {
        let listed = linux.namespaces().as_deref().unwrap_or_default();
        if !listed.iter().any(|n| n.typ() == typ) {
            bail!(
                "vm backend: linux.namespaces: a vm container needs a {name} namespace of its \
                 own (without one it would share the guest agent's)"
            );
        }
    }
    let rootfs = strata_linux::container::rootfs_of(spec, bundle)?;
    refuse_kernel_fs(&rootfs, "root.path")?;
    let mut guest = serde_json::to_value(spec).context("serializing the spec")?;
    // The guest's root is the rootfs device (a pod member's, its share entry): never a path
    // the bundle names, which the agent would resolve in its own namespace.
    guest["root"]["path"] = "rootfs".into();
    let mut volumes = Vec::new();
    let mut net_sysctls = std::collections::BTreeMap::new();
    if let Some(mounts) = guest["mounts"].as_array_mut() {
        for (i, (m, json)) in spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .zip(mounts.iter_mut())
            .enumerate()
        {
            if !is_bind(m) {
                refuse_paths(i, m)?;
                continue;
            }
            let Some(source) = m.source() else { continue };
            let source = if source.is_absolute() {
                source.clone()
            } else {
                bundle.join(source)
            };
            let meta = std::fs::metadata(&source)
                .with_context(|| format!("vm backend: bind mount source {}", source.display()))?;
            if let Some(dev) = guest_device(&meta) {
                // The guest has its own /dev/null and friends: bound from there.
                json["source"] = dev.into();
                continue;
            }
            if meta.is_dir() && m.destination() == Path::new("/dev/shm") {
                // Shared memory with the host means nothing across a VM boundary: the
                // container gets a private one.
                json["type"] = "tmpfs".into();
                json["source"] = "shm".into();
                json["options"] = serde_json::json!(["nosuid", "noexec", "nodev", "mode=1777"]);
                continue;
            }
            refuse_kernel_fs(&source, "bind mount source")?;
            if !meta.is_dir() && !meta.is_file() {
                bail!(
                    "vm backend: bind mount source {}: only directories and regular files (and \
                     the host's null, zero, full, random and urandom devices) are carried into \
                     the guest",
                    source.display()
                );
            }
            let name = i.to_string();
            json["source"] = format!("{SHARE_PREFIX}{name}").into();
            volumes.push(Volume {
                name,
                source,
                is_dir: meta.is_dir(),
                readonly: bind_readonly(m),
                recursive: m
                    .options()
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o == "rbind")),
            });
        }
    }
    if volumes.len() > MAX_VOLUMES {
        bail!(
            "vm backend: {} bind mounts; a VM's share carries at most {MAX_VOLUMES}",
            volumes.len()
        );
    }
    // The hooks run on the host (prestart and createRuntime before the VM's network is taken
    // over, poststart and poststop around the lifecycle), except startContainer, which runs
    // in the container inside the guest: its paths must be in the rootfs.
    let start_hooks = hooks.start_container().clone().unwrap_or_default();
    if !start_hooks.is_empty() {
        use strata_linux::rootfs::open::{open_in_root, Create};
        let root: std::os::fd::OwnedFd = std::fs::File::open(&rootfs)
            .with_context(|| format!("vm backend: the rootfs {}", rootfs.display()))?
            .into();
        for (i, h) in start_hooks.iter().enumerate() {
            if open_in_root(&root, h.path(), Create::Nothing).is_err() {
                bail!(
                    "vm backend: hooks.startContainer[{i}]: {} is not in the container's \
                     rootfs (startContainer hooks run in the container, inside the guest)",
                    h.path().display()
                );
            }
        }
    }
    if let Some(obj) = guest.as_object_mut() {
        obj.remove("hooks");
        if !start_hooks.is_empty() {
            obj.insert(
                "hooks".into(),
                serde_json::json!({ "startContainer": serde_json::to_value(&start_hooks)? }),
            );
        }
    }
    // Host cgroup paths (and systemd slice names) mean nothing in the guest: its runtime
    // places the container under its own default.
    if let Some(linux) = guest.get_mut("linux").and_then(|l| l.as_object_mut()) {
        linux.remove("cgroupsPath");
        // With the host's network carried in, the container uses the guest's network
        // namespace, where its interfaces are.
        if netns.is_some() || host_hooks {
            if let Some(list) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
                list.retain(|n| n["type"] != "network");
            }
            // Its network sysctls are then the guest's namespace's, set by the agent.
            if let Some(sysctl) = linux.get_mut("sysctl").and_then(|s| s.as_object_mut()) {
                let net: Vec<String> = sysctl
                    .keys()
                    .filter(|k| k.starts_with("net."))
                    .cloned()
                    .collect();
                for key in net {
                    if let Some(v) = sysctl
                        .remove(&key)
                        .and_then(|v| v.as_str().map(String::from))
                    {
                        net_sysctls.insert(key, v);
                    }
                }
            }
        }
        // A pod member's shared namespaces are the sandbox's in the guest (the agent
        // points them there); paths from the host mean nothing inside.
        if let Some(list) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
            for n in list.iter_mut() {
                if n.get("path").is_some() {
                    n["path"] = POD_NAMESPACE.into();
                }
            }
        }
    }
    let limits = linux.resources().clone().unwrap_or_default();
    // A pod's VM is sized by the pod: the CRI's sandbox sizing (containerd 1.7 and later
    // pass the pod's resources on the sandbox container) where present, else the
    // sandbox's own limits.
    let sizing = if pod == PodRole::Sandbox {
        SandboxSizing::of(spec)?
    } else {
        SandboxSizing::default()
    };
    let asked = match sizing.memory {
        Some(m) => Some((m, SANDBOX_MEMORY_ANNOTATION)),
        None => limits
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| (l, "linux.resources.memory.limit")),
    };
    let from_limit = match asked {
        Some((l, field)) => {
            let mib = (l as u64).div_ceil(1 << 20) + u64::from(GUEST_OVERHEAD_MIB);
            if mib > u64::from(MAX_MEMORY_MIB) {
                bail!(
                    "vm backend: {field}: {l} bytes is more than a VM here can have \
                     ({MAX_MEMORY_MIB} MiB)"
                );
            }
            Some(mib as u32)
        }
        None => None,
    };
    let memory_mib = match annotation(spec, node, MEMORY_ANNOTATION) {
        Some(v) => {
            let mib = v
                .parse::<u32>()
                .ok()
                .filter(|m| (64..=MAX_MEMORY_MIB).contains(m))
                .with_context(|| {
                    format!(
                        "annotation {MEMORY_ANNOTATION}: expected 64 to {MAX_MEMORY_MIB}, got {v:?}"
                    )
                })?;
            // The bundle's limit is the container's; the annotation sizes the VM within it.
            if let Some(cap) = from_limit.filter(|cap| mib > *cap) {
                bail!(
                    "annotation {MEMORY_ANNOTATION}: {mib} MiB is above what the bundle's memory \
                     limit allows the VM ({cap} MiB with the guest's own)"
                );
            }
            mib
        }
        None => from_limit
            .or(node.vm.memory_mib)
            .unwrap_or(DEFAULT_MEMORY_MIB),
    };
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let cpu_of = |quota: Option<i64>, period: Option<u64>| -> Option<u8> {
        let quota = quota.filter(|q| *q > 0)? as u64;
        let period = period.filter(|p| *p > 0).unwrap_or(100_000);
        Some(quota.div_ceil(period).clamp(1, host_cpus.min(254)) as u8)
    };
    let from_quota = cpu_of(sizing.cpu_quota, sizing.cpu_period).or_else(|| {
        limits
            .cpu()
            .as_ref()
            .and_then(|c| cpu_of(c.quota(), c.period()))
    });
    let vcpus = match annotation(spec, node, VCPUS_ANNOTATION) {
        Some(v) => v
            .parse::<u8>()
            .ok()
            .filter(|n| *n >= 1 && u64::from(*n) <= host_cpus)
            .with_context(|| {
                format!("annotation {VCPUS_ANNOTATION}: expected 1 to {host_cpus}, got {v:?}")
            })?,
        None => from_quota.or(node.vm.vcpus).unwrap_or(1),
    };
    let allow_vsock = match annotation(spec, node, VSOCK_ANNOTATION) {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            bail!("annotation {VSOCK_ANNOTATION}: expected \"allow\" or \"deny\", got {other:?}")
        }
    };
    Ok(GuestPlan {
        spec: guest,
        volumes,
        memory_mib,
        vcpus,
        allow_vsock,
        rootfs,
        readonly_rootfs: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        netns,
        network: Vec::new(),
        pod,
        net_sysctls,
        host_hooks,
        joined,
    })
}

/// Makes the mount points a read-only rootfs lacks, on the host, before it is shared: the
/// guest cannot (the share is read-only on the host side, so that guest root cannot undo
/// it), and runc makes them in the rootfs likewise before it remounts the root read-only.
/// Resolved inside the rootfs (symlinks and `..` stay in it). A destination under another
/// mount's is that mount's (a tmpfs /dev), made in the guest.
pub fn make_mount_points(spec: &Spec, bundle: &Path, rootfs: &Path) -> Result<()> {
    use strata_linux::rootfs::open::{open_in_root, Create};
    let root: std::os::fd::OwnedFd = std::fs::File::open(rootfs)
        .with_context(|| format!("vm backend: the rootfs {}", rootfs.display()))?
        .into();
    let mounts = spec.mounts().clone().unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let dest = m.destination();
        if mounts[..i]
            .iter()
            .any(|o| dest != o.destination() && dest.starts_with(o.destination()))
        {
            continue;
        }
        let file_source = is_bind(m)
            && m.source().as_ref().is_some_and(|s| {
                let s = if s.is_absolute() {
                    s.clone()
                } else {
                    bundle.join(s)
                };
                std::fs::metadata(s).is_ok_and(|meta| !meta.is_dir())
            });
        let what = if file_source {
            Create::File
        } else {
            Create::Dir
        };
        open_in_root(&root, dest, what).with_context(|| {
            format!(
                "vm backend: making the mount point {} in the read-only rootfs",
                dest.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default spec with `json`'s top-level fields; `linux` is merged field by field.
    fn spec(json: serde_json::Value) -> Spec {
        let mut base = crate::default_spec::default_spec(false);
        for (k, v) in json.as_object().unwrap() {
            if k == "linux" {
                for (lk, lv) in v.as_object().unwrap() {
                    base["linux"][lk] = lv.clone();
                }
            } else {
                base[k] = v.clone();
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn bundle() -> tempdir_lite::Dir {
        let d = tempdir_lite::Dir::new();
        std::fs::create_dir_all(d.0.join("rootfs")).unwrap();
        d
    }

    mod tempdir_lite {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p =
                    std::env::temp_dir().join(format!("strata-plan-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn sizes_from_limits_annotations_and_node() {
        let b = bundle();
        let node = NodeConfig::default();
        let p = plan(&spec(serde_json::json!({})), &b.0, &node).unwrap();
        assert_eq!((p.memory_mib, p.vcpus), (DEFAULT_MEMORY_MIB, 1));
        let s = spec(
            serde_json::json!({"linux": {"resources": {"memory": {"limit": 100 << 20}, "cpu": {"quota": 150000, "period": 100000}}}}),
        );
        let p = plan(&s, &b.0, &node).unwrap();
        assert_eq!(p.memory_mib, 100 + GUEST_OVERHEAD_MIB);
        let cpus = std::thread::available_parallelism().unwrap().get().min(2) as u8;
        assert_eq!(p.vcpus, cpus);
        let s = spec(
            serde_json::json!({"annotations": {MEMORY_ANNOTATION: "512", VCPUS_ANNOTATION: "1"}}),
        );
        let p = plan(&s, &b.0, &node).unwrap();
        assert_eq!((p.memory_mib, p.vcpus), (512, 1));
        let s = spec(serde_json::json!({"annotations": {MEMORY_ANNOTATION: "lots"}}));
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(e.contains(MEMORY_ANNOTATION) && e.contains("lots"), "{e}");
        // A node that does not honour the annotation ignores it.
        let strict = NodeConfig {
            honored_annotations: Some(vec![]),
            ..Default::default()
        };
        let s = spec(serde_json::json!({"annotations": {MEMORY_ANNOTATION: "512"}}));
        assert_eq!(
            plan(&s, &b.0, &strict).unwrap().memory_mib,
            DEFAULT_MEMORY_MIB
        );
    }

    #[test]
    fn a_pods_vm_is_sized_by_the_cris_sandbox_annotations() {
        let b = bundle();
        let node = NodeConfig::default();
        let pod = |extra: serde_json::Value| {
            let mut a = serde_json::json!({CONTAINER_TYPE_ANNOTATION: "sandbox"});
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            spec(serde_json::json!({"annotations": a}))
        };
        let p = plan(
            &pod(serde_json::json!({
                SANDBOX_MEMORY_ANNOTATION: (300i64 << 20).to_string(),
                SANDBOX_CPU_QUOTA_ANNOTATION: "150000",
                SANDBOX_CPU_PERIOD_ANNOTATION: "100000"
            })),
            &b.0,
            &node,
        )
        .unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get().min(2) as u8;
        assert_eq!((p.memory_mib, p.vcpus), (300 + GUEST_OVERHEAD_MIB, cpus));
        // No pod limit: the defaults; a bad number: one line naming the annotation.
        let p = plan(
            &pod(serde_json::json!({SANDBOX_MEMORY_ANNOTATION: "0"})),
            &b.0,
            &node,
        )
        .unwrap();
        assert_eq!(p.memory_mib, DEFAULT_MEMORY_MIB);
        let e = plan(
            &pod(serde_json::json!({SANDBOX_MEMORY_ANNOTATION: "lots"})),
            &b.0,
            &node,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(SANDBOX_MEMORY_ANNOTATION), "{e}");
        // Only a sandbox is sized by them.
        let alone = spec(serde_json::json!({"annotations": {SANDBOX_MEMORY_ANNOTATION: "1"}}));
        assert_eq!(
            plan(&alone, &b.0, &node).unwrap().memory_mib,
            DEFAULT_MEMORY_MIB
        );
    }

    #[test]
    fn vsock_only_where_asked_and_honoured() {
        let b = bundle();
        let node = NodeConfig::default();
        let with = |v: &str| spec(serde_json::json!({"annotations": {VSOCK_ANNOTATION: v}}));
        assert!(
            !plan(&spec(serde_json::json!({})), &b.0, &node)
                .unwrap()
                .allow_vsock
        );
        assert!(plan(&with("allow"), &b.0, &node).unwrap().allow_vsock);
        assert!(!plan(&with("deny"), &b.0, &node).unwrap().allow_vsock);
        let e = plan(&with("yes"), &b.0, &node).unwrap_err().to_string();
        assert!(e.contains(VSOCK_ANNOTATION) && e.contains("\"yes\""), "{e}");
        // A node that does not honour the key leaves the container without vsock.
        let strict = NodeConfig {
            honored_annotations: Some(vec![MEMORY_ANNOTATION.into()]),
            ..Default::default()
        };
        assert!(!plan(&with("allow"), &b.0, &strict).unwrap().allow_vsock);
    }

    #[test]
    fn refuses_what_a_vm_cannot_honour() {
        let b = bundle();
        let node = NodeConfig::default();
        let s = spec(
            serde_json::json!({"linux": {"namespaces": [{"type": "ipc", "path": "/proc/1/ns/ipc"}, {"type": "pid"}, {"type": "mount"}]}}),
        );
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains("linux.namespaces") && e.contains("/proc/1/ns/ipc"),
            "{e}"
        );
        let s = spec(serde_json::json!({"hooks": {"createContainer": [{"path": "/bin/true"}]}}));
        assert!(plan(&s, &b.0, &node)
            .unwrap_err()
            .to_string()
            .contains("hooks.createContainer"));
        // startContainer runs in the guest: its path must be in the rootfs.
        let s = spec(serde_json::json!({"hooks": {"startContainer": [{"path": "/bin/true"}]}}));
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains("hooks.startContainer[0]") && e.contains("rootfs"),
            "{e}"
        );
        std::fs::create_dir_all(b.0.join("rootfs/bin")).unwrap();
        std::fs::write(b.0.join("rootfs/bin/true"), "").unwrap();
        let p = plan(&s, &b.0, &node).unwrap();
        assert_eq!(p.spec["hooks"]["startContainer"][0]["path"], "/bin/true");
        assert!(!p.host_hooks);
        // prestart runs on the host; the container then uses the guest's network namespace,
        // where the interfaces the hook made are.
        let s = spec(serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}));
        let p = plan(&s, &b.0, &node).unwrap();
        assert!(p.host_hooks);
        assert!(p.spec.get("hooks").is_none(), "hooks are the host's");
        // Network sysctls go to the guest's namespace, which the container then shares.
        let s = spec(serde_json::json!({
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "linux": {"sysctl": {"net.ipv4.ping_group_range": "0 0", "kernel.shm_rmid_forced": "1"}}
        }));
        let p = plan(&s, &b.0, &node).unwrap();
        assert_eq!(
            p.net_sysctls
                .get("net.ipv4.ping_group_range")
                .map(String::as_str),
            Some("0 0")
        );
        assert_eq!(
            p.spec["linux"]["sysctl"],
            serde_json::json!({"kernel.shm_rmid_forced": "1"})
        );
        assert!(!p.spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn a_network_namespace_by_path_becomes_the_guests_network() {
        let b = bundle();
        let s = spec(serde_json::json!({"linux": {"namespaces": [
            {"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/run/netns/pod"}
        ]}}));
        let p = plan(&s, &b.0, &NodeConfig::default()).unwrap();
        assert_eq!(p.netns.as_deref(), Some(Path::new("/run/netns/pod")));
        let types: Vec<&str> = p.spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["pid", "mount"],
            "the guest's own network namespace is used"
        );
        // No network namespace at all (--network host): refused, a VM has no host network.
        let mut host = crate::default_spec::default_spec(false);
        host["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        let host: Spec = serde_json::from_value(host).unwrap();
        let e = plan(&host, &b.0, &NodeConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("host's network"), "{e}");
        // Without a path: the container's own namespace in the guest, no host network.
        let s = spec(serde_json::json!({}));
        let p = plan(&s, &b.0, &NodeConfig::default()).unwrap();
        assert!(p.netns.is_none());
        assert!(p.spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn a_container_gets_pid_and_mount_namespaces_of_its_own() {
        let b = bundle();
        for typ in ["pid", "mount"] {
            let mut s = crate::default_spec::default_spec(false);
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != typ);
            let s: Spec = serde_json::from_value(s).unwrap();
            let e = plan(&s, &b.0, &NodeConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{typ} namespace of its own")), "{e}");
        }
    }

    #[test]
    fn bind_sources_are_directories_regular_files_or_the_guests_own_devices() {
        let b = bundle();
        let node = NodeConfig::default();
        let bind = |src: &str| {
            spec(serde_json::json!({"mounts": [
                {"destination": "/x", "type": "bind", "source": src, "options": ["rbind"]}
            ]}))
        };
        // /dev/zero would be read for ever: the guest's own is bound instead.
        let p = plan(&bind("/dev/zero"), &b.0, &node).unwrap();
        assert_eq!(p.spec["mounts"][0]["source"], "/dev/zero");
        assert!(p.volumes.is_empty());
        // A FIFO would block create; other devices cannot cross.
        let fifo = b.0.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = plan(&bind(fifo.to_str().unwrap()), &b.0, &node)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only directories and regular files"), "{e}");
        let e = plan(&bind("/dev/kmsg"), &b.0, &node)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only directories and regular files"), "{e}");
        // Nor a rootfs on one.
        let mut on_proc = spec(serde_json::json!({}));
        on_proc.set_root(Some(
            oci_spec::runtime::RootBuilder::default()
                .path("/proc/sys")
                .build()
                .unwrap(),
        ));
        let e = plan(&on_proc, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains("root.path") && e.contains("kernel filesystem"),
            "{e}"
        );
        // The host kernel's files are not volumes.
        for kernel in ["/proc/sys/kernel/domainname", "/sys/kernel", "/proc/1/fd"] {
            let e = plan(&bind(kernel), &b.0, &node).unwrap_err().to_string();
            assert!(e.contains("kernel filesystem"), "{kernel}: {e}");
        }
        // Paths in other mounts would be the guest's: the agent's own directories.
        let overlay = spec(serde_json::json!({"mounts": [
            {"destination": "/o", "type": "overlay", "source": "overlay",
             "options": ["lowerdir=/run/strata/share/x-rootfs/root"]}
        ]}));
        let e = plan(&overlay, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains("mounts[0]") && e.contains("/run/strata/share"),
            "{e}"
        );
        // Nor any filesystem that names a device of the VM (the share's tag).
        let tag = spec(serde_json::json!({"mounts": [
            {"destination": "/s", "type": "virtiofs", "source": "share"}
        ]}));
        let e = plan(&tag, &b.0, &node).unwrap_err().to_string();
        assert!(e.contains("\"virtiofs\" is not mounted in a VM"), "{e}");
        let relative = spec(serde_json::json!({"mounts": [
            {"destination": "/o", "type": "overlay", "source": "overlay",
             "options": ["lowerdir=../../share/x"]}
        ]}));
        assert!(plan(&relative, &b.0, &node).is_err());
        std::fs::write(b.0.join("f"), "").unwrap();
        let many = spec(
            serde_json::json!({"mounts": (0..=MAX_VOLUMES).map(|i| serde_json::json!(
            {"destination": format!("/v{i}"), "type": "bind", "source": b.0.join("f"), "options": ["rbind"]}
        )).collect::<Vec<_>>()}),
        );
        let e = plan(&many, &b.0, &node).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        // A file of any size is shared, not copied.
        let big = b.0.join("big");
        std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
        let p = plan(&bind(big.to_str().unwrap()), &b.0, &node).unwrap();
        assert_eq!(p.volumes.len(), 1);
        assert!(!p.volumes[0].is_dir);
    }

    #[test]
    fn the_vm_stays_within_the_bundles_memory_limit() {
        let b = bundle();
        let node = NodeConfig::default();
        let s = spec(serde_json::json!({
            "annotations": {MEMORY_ANNOTATION: "65536"},
            "linux": {"resources": {"memory": {"limit": 16 << 20}}}
        }));
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains(MEMORY_ANNOTATION) && e.contains("memory limit"),
            "{e}"
        );
        // Limits too large for a VM: one line, no overflow.
        for limit in [1i64 << 52, ((1i64 << 32) - 1) << 20, i64::MAX] {
            let s = spec(serde_json::json!({"linux": {"resources": {"memory": {"limit": limit}}}}));
            let e = plan(&s, &b.0, &node).unwrap_err().to_string();
            assert!(e.contains("more than a VM"), "{limit}: {e}");
        }
    }

    #[test]
    fn binds_go_through_the_share_and_shm_becomes_private() {
        let b = bundle();
        std::fs::write(b.0.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::create_dir(b.0.join("shm")).unwrap();
        std::fs::create_dir(b.0.join("data")).unwrap();
        let s = spec(serde_json::json!({"mounts": [
            {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["rbind", "ro"]},
            {"destination": "/dev/shm", "type": "bind", "source": b.0.join("shm"), "options": ["rbind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "data", "options": ["bind", "ro", "rw"]},
            {"destination": "/etc/x", "source": "/etc", "options": ["rbind", "rro"]}
        ], "linux": {"cgroupsPath": "machine.slice:libpod:x"}}));
        let p = plan(&s, &b.0, &NodeConfig::default()).unwrap();
        let vol = |name: &str, source: PathBuf, is_dir, readonly, recursive| Volume {
            name: name.into(),
            source,
            is_dir,
            readonly,
            recursive,
        };
        assert_eq!(
            p.volumes,
            [
                vol("0", b.0.join("hosts"), false, true, true),
                vol("3", b.0.join("data"), true, false, false),
                vol("4", "/etc".into(), true, true, true),
            ]
        );
        assert_eq!(p.spec["mounts"][0]["source"], format!("{SHARE_PREFIX}0"));
        assert_eq!(p.spec["mounts"][1]["type"], "tmpfs");
        assert_eq!(p.spec["mounts"][2]["source"], "proc");
        assert_eq!(p.spec["mounts"][3]["source"], format!("{SHARE_PREFIX}3"));
        assert_eq!(
            p.spec["mounts"][3]["options"],
            serde_json::json!(["bind", "ro", "rw"])
        );
        assert!(p.spec["linux"].get("cgroupsPath").is_none());
    }
}
