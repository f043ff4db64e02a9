//! What a bundle becomes in a VM: the spec as the guest sees it, the small host files its bind
//! mounts name, and the VM's size. Everything a VM cannot honour is refused here, before any
//! resource exists, with the field that asked for it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

use super::protocol::GuestFile;
use crate::backend::NodeConfig;

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
/// Largest host file carried into the guest for a bind mount (hosts, resolv.conf, hostname,
/// .containerenv are bytes to a few KiB).
const MAX_FILE: u64 = 1 << 20;
/// Where the agent places those files; see the agent's spec rewrite.
pub const FILE_PREFIX: &str = "@strata-file/";

#[derive(Debug)]
pub struct GuestPlan {
    pub spec: serde_json::Value,
    pub files: Vec<GuestFile>,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// The container may open AF_VSOCK sockets in the guest.
    pub allow_vsock: bool,
    /// The host directory shared as the guest's container rootfs.
    pub rootfs: PathBuf,
}

fn annotation<'a>(spec: &'a Spec, node: &NodeConfig, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|_| node.honors(key))
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

pub fn plan(spec: &Spec, bundle: &Path, node: &NodeConfig) -> Result<GuestPlan> {
    if let Some(hooks) = spec.hooks() {
        let named = [
            (
                "prestart",
                hooks.prestart().as_ref().is_some_and(|h| !h.is_empty()),
            ),
            (
                "createRuntime",
                hooks
                    .create_runtime()
                    .as_ref()
                    .is_some_and(|h| !h.is_empty()),
            ),
            (
                "createContainer",
                hooks
                    .create_container()
                    .as_ref()
                    .is_some_and(|h| !h.is_empty()),
            ),
            (
                "startContainer",
                hooks
                    .start_container()
                    .as_ref()
                    .is_some_and(|h| !h.is_empty()),
            ),
        ];
        if let Some((name, _)) = named.iter().find(|(_, set)| *set) {
            bail!(
                "vm backend: hooks.{name} is not supported: those hooks run in the container's \
                 namespaces, which are inside the guest"
            );
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if let Some(path) = ns.path() {
            bail!(
                "vm backend: linux.namespaces: joining the host's {:?} namespace {} is not \
                 supported; a vm container gets its own namespaces in its guest (drop the path, \
                 e.g. podman --network none)",
                ns.typ(),
                path.display()
            );
        }
    }
    let rootfs = strata_linux::container::rootfs_of(spec, bundle)?;
    let mut guest = serde_json::to_value(spec).context("serializing the spec")?;
    let mut files = Vec::new();
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
            if meta.is_dir() {
                if m.destination() == Path::new("/dev/shm") {
                    // Shared memory with the host means nothing across a VM boundary: the
                    // container gets a private one.
                    json["type"] = "tmpfs".into();
                    json["source"] = "shm".into();
                    json["options"] = serde_json::json!(["nosuid", "noexec", "nodev", "mode=1777"]);
                    continue;
                }
                bail!(
                    "vm backend: bind mount of the host directory {} at {} is not supported \
                     (only the rootfs and small files are carried into the guest)",
                    source.display(),
                    m.destination().display()
                );
            }
            if meta.len() > MAX_FILE {
                bail!(
                    "vm backend: bind mount source {} is {} bytes; files up to {MAX_FILE} bytes \
                     are carried into the guest",
                    source.display(),
                    meta.len()
                );
            }
            let content = std::fs::read(&source)
                .with_context(|| format!("vm backend: reading {}", source.display()))?;
            let name = i.to_string();
            json["source"] = format!("{FILE_PREFIX}{name}").into();
            files.push(GuestFile {
                name,
                mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()),
                content,
            });
        }
    }
    // Host cgroup paths (and systemd slice names) mean nothing in the guest: its runtime
    // places the container under its own default.
    if let Some(linux) = guest.get_mut("linux").and_then(|l| l.as_object_mut()) {
        linux.remove("cgroupsPath");
    }
    let limits = linux.resources().clone().unwrap_or_default();
    let from_limit = limits
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| (l as u64).div_ceil(1 << 20) as u32 + GUEST_OVERHEAD_MIB);
    let memory_mib = match annotation(spec, node, MEMORY_ANNOTATION) {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|m| (64..=65536).contains(m))
            .with_context(|| {
                format!("annotation {MEMORY_ANNOTATION}: expected 64 to 65536, got {v:?}")
            })?,
        None => from_limit
            .or(node.vm.memory_mib)
            .unwrap_or(DEFAULT_MEMORY_MIB),
    };
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let from_quota = limits.cpu().as_ref().and_then(|c| {
        let quota = c.quota().filter(|q| *q > 0)? as u64;
        let period = c.period().filter(|p| *p > 0).unwrap_or(100_000);
        Some(quota.div_ceil(period).clamp(1, host_cpus) as u8)
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
        files,
        memory_mib,
        vcpus,
        allow_vsock,
        rootfs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base = crate::default_spec::default_spec(false);
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
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
            serde_json::json!({"linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}),
        );
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(
            e.contains("linux.namespaces") && e.contains("/run/netns/x"),
            "{e}"
        );
        let s = spec(serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}));
        assert!(plan(&s, &b.0, &node)
            .unwrap_err()
            .to_string()
            .contains("hooks.prestart"));
        let s = spec(
            serde_json::json!({"mounts": [{"destination": "/data", "type": "bind", "source": "/etc", "options": ["rbind"]}]}),
        );
        let e = plan(&s, &b.0, &node).unwrap_err().to_string();
        assert!(e.contains("/etc") && e.contains("/data"), "{e}");
    }

    #[test]
    fn small_files_travel_and_shm_becomes_private() {
        let b = bundle();
        std::fs::write(b.0.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::create_dir(b.0.join("shm")).unwrap();
        let s = spec(serde_json::json!({"mounts": [
            {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["rbind", "ro"]},
            {"destination": "/dev/shm", "type": "bind", "source": b.0.join("shm"), "options": ["rbind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"}
        ], "linux": {"cgroupsPath": "machine.slice:libpod:x"}}));
        let p = plan(&s, &b.0, &NodeConfig::default()).unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].content, b"127.0.0.1 localhost\n");
        assert_eq!(p.spec["mounts"][0]["source"], format!("{FILE_PREFIX}0"));
        assert_eq!(p.spec["mounts"][1]["type"], "tmpfs");
        assert_eq!(p.spec["mounts"][2]["source"], "proc");
        assert!(p.spec["linux"].get("cgroupsPath").is_none());
    }
}
