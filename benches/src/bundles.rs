//! The bundles every runtime runs, made once from `strata spec` and busybox, and container IDs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::memory::MAXRSS;

pub(crate) struct Bundles {
    pub(crate) dir: PathBuf,
    pub(crate) rootfs: PathBuf,
}

impl Bundles {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Busybox rootfs (shared) plus one bundle per workload: `true`, `sleep`, `sysbench`.
pub(crate) fn make_bundles(strata: &Path) -> Result<Bundles> {
    let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("busybox-static is needed")?;
    for a in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("syscalls.c");
    let st = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(rootfs.join("bin/sysbench"))
        .arg(&src)
        .status()
        .context("gcc (for the syscall benchmark)")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("maxrss.c");
    let st = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(dir.join("maxrss"))
        .arg(&src)
        .status()
        .context("gcc (for the peak RSS helper)")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    MAXRSS
        .set(dir.join("maxrss"))
        .map_err(|_| anyhow::anyhow!("bundles made twice"))?;
    let spec_dir = dir.join("spec");
    std::fs::create_dir_all(&spec_dir)?;
    let st = Command::new(strata)
        .args(["spec", "--bundle"])
        .arg(&spec_dir)
        .status()?;
    if !st.success() {
        bail!("strata spec failed");
    }
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_dir.join("config.json"))?)?;
    for (name, args) in [
        ("true", vec!["/bin/true"]),
        ("sleep", vec!["/bin/sleep", "100000"]),
        ("sysbench", vec!["/bin/sysbench"]),
    ] {
        let mut c = base.clone();
        // The oldest peer (crun 1.8) accepts versions up to 1.0.x.
        c["ociVersion"] = json!("1.0.2");
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(args);
        c["root"] = json!({"path": rootfs, "readonly": true});
        let b = dir.join(name);
        std::fs::create_dir_all(&b)?;
        std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&c)?)?;
    }
    Ok(Bundles { dir, rootfs })
}

/// IDs of one width per tag, so that none is a prefix of another (runsc matches prefixes).
pub fn container_id(tag: &str, rt: usize, n: usize) -> String {
    format!("{tag}{rt:02}{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_prefixes_of_each_other() {
        let ids: Vec<String> = (0..200).map(|i| container_id("run", 1, i)).collect();
        for a in &ids {
            for b in &ids {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
    }
}
