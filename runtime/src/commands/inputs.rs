//! What a command reads from its caller besides flags (the bundle's config.json, JSON
//! files, socket-activation fds) and the pid file it writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_spec::runtime::Spec;

pub(super) fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("bundle {}: cannot read config.json", bundle.display()))?;
    parse_json(&text, &path)
}

/// Parses JSON, naming the field that is wrong ("process.args: invalid type ...").
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        if field == "." {
            anyhow::anyhow!("{}: {}", path.display(), e.inner())
        } else {
            anyhow::anyhow!("{}: {field}: {}", path.display(), e.inner())
        }
    })
}

/// LISTEN_FDS from systemd socket activation are passed on like runc does: as the first
/// preserved fds, with LISTEN_FDS and LISTEN_PID=1 in the container's environment.
pub(super) fn listen_fds() -> (i32, Vec<String>) {
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    if n > 0 && for_us {
        (
            n,
            vec![format!("LISTEN_FDS={n}"), "LISTEN_PID=1".to_string()],
        )
    } else {
        (0, Vec::new())
    }
}

pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("writing --pid-file {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing --pid-file {}", path.display()))
}
