//! The node's configuration (`/etc/strata/config.toml`) and the policy that picks a backend
//! per container: the global `--backend` flag, else the bundle's `dev.strata.backend`
//! annotation, else the node config's `default_backend`; never weaker than the node's
//! `min_backend`. A leaf: it knows no backend's code.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

pub const ANNOTATION: &str = "dev.strata.backend";

/// Isolation strengths, weakest first. Stored in state records by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Native,
    Sandbox,
    Vm,
}

impl Kind {
    pub fn parse(s: &str, what: &str) -> Result<Kind> {
        match s {
            "native" => Ok(Kind::Native),
            "sandbox" => Ok(Kind::Sandbox),
            "vm" => Ok(Kind::Vm),
            other => bail!("{what}: unknown backend {other:?} (expected native, sandbox or vm)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Sandbox => "sandbox",
            Kind::Vm => "vm",
        }
    }
}

/// `/etc/strata/config.toml`. Every key is optional; absent keys take built-in defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub default_backend: Option<String>,
    /// The floor: nothing on this node runs with weaker isolation.
    pub min_backend: Option<String>,
    /// Annotation keys a bundle may use to steer strata; others are ignored. Absent: every
    /// `dev.strata.*` key.
    pub honored_annotations: Option<Vec<String>>,
    #[serde(default)]
    pub vm: VmConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

/// Settings of the vm backend, read when it is chosen.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The guest kernel (an uncompressed ELF vmlinux).
    pub kernel: Option<PathBuf>,
    /// The static guest agent (absent: `~/.cache/strata/guest/strata-agent`, where
    /// guest-agent/build puts it).
    pub agent: Option<PathBuf>,
    /// Hypervisor driver: auto (ours where KVM boots Linux, else QEMU), strata or qemu.
    pub driver: Option<String>,
    pub memory_mib: Option<u32>,
    pub vcpus: Option<u8>,
}

/// Settings of the sandbox backend, read when it is chosen.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The policy used when a bundle names none (absent: the built-in one).
    pub policy: Option<PathBuf>,
    /// Named policies a bundle may pick with the `dev.strata.sandbox.policy` annotation.
    #[serde(default)]
    pub policies: std::collections::HashMap<String, PathBuf>,
}

impl NodeConfig {
    /// The default path may be absent (built-in defaults); a path given with --config must
    /// exist.
    pub fn load(path: &Path, explicit: bool) -> Result<NodeConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(NodeConfig::default())
            }
            Err(e) => return Err(e).with_context(|| format!("node config {}", path.display())),
        };
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks the text of a node config read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("node config {}: {}", path.display(), e.message().trim())
        })?;
        cfg.validate()
            .with_context(|| format!("node config {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if let Some(d) = &self.default_backend {
            Kind::parse(d, "default_backend")?;
        }
        if let Some(m) = &self.min_backend {
            Kind::parse(m, "min_backend")?;
        }
        // Paths in the node config are used from wherever strata is called: only absolute
        // ones mean the same thing every time.
        let fixed = [
            ("vm.kernel", &self.vm.kernel),
            ("vm.agent", &self.vm.agent),
            ("sandbox.policy", &self.sandbox.policy),
        ];
        let named = self
            .sandbox
            .policies
            .iter()
            .map(|(k, p)| (format!("sandbox.policies.{k}"), p));
        let all = fixed
            .into_iter()
            .filter_map(|(k, p)| p.as_ref().map(|p| (k.to_string(), p)))
            .chain(named);
        for (key, p) in all {
            if !p.is_absolute() {
                bail!("{key} must be an absolute path, not {}", p.display());
            }
        }
        if let Some(d) = &self.vm.driver {
            if !matches!(d.as_str(), "auto" | "strata" | "qemu") {
                bail!("vm.driver: unknown driver {d:?} (expected auto, strata or qemu)");
            }
        }
        if self.vm.memory_mib == Some(0) {
            bail!("vm.memory_mib must be at least 1");
        }
        if self.vm.vcpus == Some(0) {
            bail!("vm.vcpus must be at least 1");
        }
        Ok(())
    }

    /// Whether a bundle's annotation `key` may steer strata on this node.
    pub fn honors(&self, key: &str) -> bool {
        match &self.honored_annotations {
            Some(keys) => keys.iter().any(|k| k == key),
            None => key.starts_with("dev.strata."),
        }
    }
}

/// The value of the bundle's annotation `key`, if this node lets that key steer strata.
pub fn annotation<'a>(spec: &'a Spec, node: &NodeConfig, key: &str) -> Option<&'a str> {
    let value = spec.annotations().as_ref()?.get(key)?;
    if !node.honors(key) {
        tracing::debug!("ignoring annotation {key}: not in honored_annotations");
        return None;
    }
    Some(value.as_str())
}

pub fn choose(flag: Option<&str>, spec: &Spec, node: &NodeConfig) -> Result<Kind> {
    let floor = match &node.min_backend {
        Some(s) => Kind::parse(s, "node config min_backend")?,
        None => Kind::Native,
    };
    let annotation = annotation(spec, node, ANNOTATION);
    let (kind, source) = if let Some(f) = flag {
        (Kind::parse(f, "--backend")?, "--backend")
    } else if let Some(a) = annotation {
        (
            Kind::parse(a, &format!("config.json annotation {ANNOTATION}"))?,
            "annotation dev.strata.backend",
        )
    } else if let Some(d) = &node.default_backend {
        (
            Kind::parse(d, "node config default_backend")?,
            "default_backend",
        )
    } else {
        (Kind::Native, "built-in default")
    };
    if kind < floor {
        bail!(
            "{source} asks for the {} backend, below this node's min_backend {}",
            kind.name(),
            floor.name()
        );
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(annotation: Option<&str>) -> Spec {
        let mut s = Spec::default();
        let mut a = std::collections::HashMap::new();
        if let Some(v) = annotation {
            a.insert(ANNOTATION.to_string(), v.to_string());
        }
        s.set_annotations(Some(a));
        s
    }

    #[test]
    fn order_flag_annotation_default() {
        let node = NodeConfig {
            default_backend: Some("sandbox".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(Some("vm"), &spec_with(Some("native")), &node).unwrap(),
            Kind::Vm
        );
        assert_eq!(
            choose(None, &spec_with(Some("vm")), &node).unwrap(),
            Kind::Vm
        );
        assert_eq!(
            choose(None, &spec_with(None), &node).unwrap(),
            Kind::Sandbox
        );
        assert_eq!(
            choose(None, &spec_with(None), &NodeConfig::default()).unwrap(),
            Kind::Native
        );
    }

    #[test]
    fn annotation_ignored_unless_honored() {
        let node = NodeConfig {
            honored_annotations: Some(vec!["dev.strata.sandbox.policy".into()]),
            ..Default::default()
        };
        assert_eq!(
            choose(None, &spec_with(Some("vm")), &node).unwrap(),
            Kind::Native
        );
        assert!(NodeConfig::default().honors(ANNOTATION));
        assert!(!NodeConfig::default().honors("io.kubernetes.cri.sandbox-id"));
    }

    #[test]
    fn floor_refuses_weaker_and_unknown() {
        let node = NodeConfig {
            min_backend: Some("sandbox".into()),
            ..Default::default()
        };
        let err = choose(None, &spec_with(Some("native")), &node).unwrap_err();
        assert!(
            err.to_string().contains("below this node's min_backend"),
            "{err}"
        );
        let err = choose(None, &spec_with(Some("fast")), &NodeConfig::default()).unwrap_err();
        assert!(err.to_string().contains("dev.strata.backend"), "{err}");
        assert!(err.to_string().contains("\"fast\""), "{err}");
    }

    #[test]
    fn node_config_parses_and_rejects_typos() {
        let dir = std::env::temp_dir().join(format!("strata-nodecfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "default_backend = \"vm\"\n").unwrap();
        assert_eq!(
            NodeConfig::load(&p, true)
                .unwrap()
                .default_backend
                .as_deref(),
            Some("vm")
        );
        std::fs::write(&p, "defualt_backend = \"vm\"\n").unwrap();
        assert!(NodeConfig::load(&p, true).is_err());
        std::fs::write(&p, "min_backend = \"strong\"\n").unwrap();
        let err = format!("{:#}", NodeConfig::load(&p, true).unwrap_err());
        assert!(
            err.contains("min_backend") && err.contains("strong"),
            "{err}"
        );
        std::fs::write(
            &p,
            "default_backend = \"native\"\nhonored_annotations = []\n\
             [vm]\nkernel = \"/k/vmlinux\"\nmemory_mib = 256\nvcpus = 1\n\
             [sandbox]\npolicy = \"/etc/strata/sandbox.toml\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(&p, true).unwrap();
        assert_eq!(cfg.vm.memory_mib, Some(256));
        assert_eq!(cfg.vm.kernel.as_deref(), Some(Path::new("/k/vmlinux")));
        assert!(!cfg.honors(ANNOTATION));
        std::fs::write(&p, "[vm]\nvcpus = 0\n").unwrap();
        assert!(NodeConfig::load(&p, true).is_err());
        std::fs::write(&p, "[sandbox]\npolicy = \"policy.toml\"\n").unwrap();
        let err = format!("{:#}", NodeConfig::load(&p, true).unwrap_err());
        assert!(
            err.contains("sandbox.policy must be an absolute path"),
            "{err}"
        );
        assert!(NodeConfig::load(&dir.join("missing"), true).is_err());
        assert!(NodeConfig::load(&dir.join("missing"), false).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
