//! Commands that only report: state, list, spec, features.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::backend;
use crate::cli::ListFormat;
use crate::config;
use crate::state::{self, Record, Status};

use super::globals::Globals;

/// What the container's backend adds to its `state` (nothing, in a build without it).
fn backend_annotations(rec: &Record) -> Vec<(String, String)> {
    backend::of(rec.backend)
        .map(|b| b.state_annotations(rec))
        .unwrap_or_default()
}

pub fn state(g: &Globals, id: &str) -> Result<i32> {
    state::validate_id(id)?;
    let path = g.root.join(id).join("state.json");
    if !path.exists() {
        bail!("container {id:?} does not exist");
    }
    let rec = state::read_record(&path)?;
    let st = rec.oci_state(rec.live_status(), backend_annotations(&rec));
    println!("{}", serde_json::to_string_pretty(&st)?);
    Ok(0)
}

pub fn list(g: &Globals, format: ListFormat, quiet: bool) -> Result<i32> {
    let recs = state::list(g.root);
    if quiet {
        for r in &recs {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    match format {
        ListFormat::Json => {
            let states: Vec<_> = recs
                .iter()
                .map(|r| r.oci_state(r.live_status(), backend_annotations(r)))
                .collect();
            println!("{}", serde_json::to_string(&states)?);
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = recs
                .iter()
                .map(|r| {
                    let st = r.live_status();
                    [
                        r.id.clone(),
                        if st == Status::Stopped { 0 } else { r.pid }.to_string(),
                        st.to_string(),
                        r.bundle.display().to_string(),
                        r.created.clone(),
                        r.owner.clone(),
                    ]
                })
                .collect();
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut widths = [0usize; 6];
            for row in std::iter::once(&header).chain(rows.iter()) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(rows.iter()) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
    }
    Ok(0)
}

pub fn spec(bundle: &Path, rootless: bool) -> Result<i32> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    let v = crate::default_spec::default_spec(rootless);
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}

pub fn features() -> Result<i32> {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let mut annotations = HashMap::new();
    annotations.insert("dev.strata.version", env!("CARGO_PKG_VERSION"));
    annotations.insert(config::ANNOTATION, "native");
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        // The parser's own tables: what strata acts on, and nothing it refuses (idmap).
        "mountOptions": strata_linux::rootfs::options::known(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                               "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                   "SECCOMP_FILTER_FLAG_LOG"]
            },
            // Supported by strata (applied where the host runs the module), as runc means it.
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": annotations,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}
