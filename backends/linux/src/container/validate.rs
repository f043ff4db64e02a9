//! The checks of a spec that need nothing built, so that a bad bundle fails before a process
//! or cgroup exists; the bundle's rootfs path and `linux.personality`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::process::{self, CapabilityPlan};
use crate::rootfs::mount;
use crate::rootfs::pivot;

/// Checks the parts of the spec that can be checked without building anything, so that a bad
/// bundle fails before a process or cgroup exists.
pub fn validate(spec: &Spec, rootfs: &Path) -> Result<()> {
    let v = spec.version();
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()) || parts[0] != "1" {
        return Err(Error::config(
            "ociVersion",
            format!("{v:?} is not a 1.x.y runtime-spec version"),
        ));
    }
    if let Some(process) = spec.process() {
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::config(
                "process.args",
                "must name at least the program to run",
            ));
        }
        if !process.cwd().is_absolute() {
            return Err(Error::config(
                "process.cwd",
                format!("{} is not an absolute path", process.cwd().display()),
            ));
        }
        CapabilityPlan::new(process.capabilities().as_ref())?;
        crate::sched::validate(process)?;
        crate::affinity::validate(process)?;
    }
    if let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    {
        crate::mempolicy::validate(p)?;
    }
    if !rootfs.is_dir() {
        return Err(Error::config(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    if rootfs == Path::new("/") {
        return Err(Error::config(
            "root.path",
            "resolves to / (the host's own root); a container needs a root of its own",
        ));
    }
    for (field, name) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if let Some(name) = name {
            // sethostname takes bytes up to a length: a NUL would be stored, and cut the name
            // for every reader.
            if name.len() > 64 || name.contains('\0') {
                return Err(Error::config(
                    field,
                    format!("{name:?} must be at most 64 bytes and hold no NUL"),
                ));
            }
        }
    }
    let linux = spec.linux().as_ref();
    if let Some(rdt) = linux.and_then(|l| l.intel_rdt().as_ref()) {
        return Err(intel_rdt_refusal(rdt));
    }
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        process::personality_of(p)?;
    }
    pivot::rootfs_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
    mount::check_mounts(spec.mounts().as_deref().unwrap_or(&[]))?;
    if let Some(m) = spec.mounts() {
        for (i, m) in m.iter().enumerate() {
            if !m.destination().is_absolute() {
                return Err(Error::config(
                    format!("mounts[{i}].destination"),
                    format!("{} is not an absolute path", m.destination().display()),
                ));
            }
        }
    }
    Ok(())
}

/// The `linux.personality` of a spec, as the value for personality(2).
pub fn personality_of_spec(spec: &Spec) -> Result<Option<libc::c_ulong>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.personality().as_ref())
        .map(process::personality_of)
        .transpose()
}

/// strata does not drive resctrl, and the spec says a runtime that cannot apply `intelRdt`
/// must fail; a `closID` that is not one directory name is named as such first.
fn intel_rdt_refusal(rdt: &oci_spec::runtime::LinuxIntelRdt) -> Error {
    if let Some(id) = rdt.clos_id() {
        if id != "/" && (id.is_empty() || id == "." || id == ".." || id.contains('/')) {
            return Error::config(
                "linux.intelRdt.closID",
                format!("{id:?} is not a resctrl group name"),
            );
        }
    }
    Error::config(
        "linux.intelRdt",
        "Intel RDT (resctrl) is not supported by strata",
    )
}

/// The absolute rootfs path of a bundle.
pub fn rootfs_of(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root", "missing"))?;
    let p = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    std::fs::canonicalize(&p)
        .map_err(|e| Error::config("root.path", format!("{}: {e}", p.display())))
}
