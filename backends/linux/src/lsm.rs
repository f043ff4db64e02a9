//! Linux security modules: `process.apparmorProfile`, `process.selinuxLabel` and
//! `linux.mountLabel`.
//!
//! Where the host has the module, the bundle's request is applied as runc applies it: the
//! profile or label the workload runs under is set on the exec attribute of our own thread,
//! which the kernel applies at execve; the mount label becomes the `context=` option of the
//! filesystems that take one. A request that cannot be applied fails. Where the host has no
//! such module there is nothing to confine with: the fields are ignored, and a warning says
//! so once per create or exec, so that confinement never disappears without a word.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use crate::error::{Error, Result};

/// The modules the host runs, as far as strata uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostLsms {
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostLsms {
    /// Reads the host's state; call before pivot_root, where /sys and /proc are the host's.
    pub fn detect() -> HostLsms {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim_start().starts_with('Y'));
        // SELinux is usable only with its filesystem mounted: that is where the policy
        // decides, and what libselinux looks for.
        let selinux = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
            t.lines().any(|l| {
                l.split_once(" - ")
                    .is_some_and(|(_, fs)| fs.starts_with("selinuxfs "))
            })
        });
        HostLsms { apparmor, selinux }
    }
}

/// The labels the bundle asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    pub mount_label: Option<String>,
}

impl Requested {
    pub fn of_process(process: Option<&Process>) -> Requested {
        let nonempty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        Requested {
            apparmor_profile: nonempty(process.and_then(|p| p.apparmor_profile().as_ref())),
            selinux_label: nonempty(process.and_then(|p| p.selinux_label().as_ref())),
            mount_label: None,
        }
    }

    pub fn of_spec(spec: &Spec) -> Requested {
        Requested {
            mount_label: spec
                .linux()
                .as_ref()
                .and_then(|l| l.mount_label().clone())
                .filter(|s| !s.is_empty()),
            ..Requested::of_process(spec.process().as_ref())
        }
    }
}

/// What will be applied, and what is ignored and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    pub mount_label: Option<String>,
    /// The ignored fields with the reason, as one warning line.
    pub ignored: Option<String>,
}

impl Plan {
    /// Decides from what the bundle asks and what the host has.
    pub fn new(want: Requested, host: HostLsms) -> Result<Plan> {
        for (field, value) in [
            ("process.apparmorProfile", &want.apparmor_profile),
            ("process.selinuxLabel", &want.selinux_label),
            ("linux.mountLabel", &want.mount_label),
        ] {
            if let Some(v) = value {
                // Written to a /proc attribute and into mount data: one line, no quote.
                if v.contains(['\n', '\0', '"']) {
                    return Err(Error::config(field, format!("{v:?} is not a valid label")));
                }
            }
        }
        let mut ignored = Vec::new();
        if want.apparmor_profile.is_some() && !host.apparmor {
            ignored.push("process.apparmorProfile is ignored: this host has no AppArmor (/sys/module/apparmor/parameters/enabled is not Y)".to_string());
        }
        let selinux_fields: Vec<&str> = [
            want.selinux_label.as_ref().map(|_| "process.selinuxLabel"),
            want.mount_label.as_ref().map(|_| "linux.mountLabel"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !selinux_fields.is_empty() && !host.selinux {
            let verb = if selinux_fields.len() == 1 {
                "is"
            } else {
                "are"
            };
            ignored.push(format!(
                "{} {verb} ignored: this host has no SELinux (no selinuxfs mounted)",
                selinux_fields.join(" and ")
            ));
        }
        Ok(Plan {
            apparmor_profile: want.apparmor_profile.filter(|_| host.apparmor),
            selinux_label: want.selinux_label.filter(|_| host.selinux),
            mount_label: want.mount_label.filter(|_| host.selinux),
            ignored: (!ignored.is_empty()).then(|| ignored.join("; ")),
        })
    }

    /// The plan for a container, with the host detected; warns about what it ignores.
    pub fn for_container(spec: &Spec) -> Result<Plan> {
        let plan = Plan::new(Requested::of_spec(spec), HostLsms::detect())?;
        plan.warn();
        Ok(plan)
    }

    /// The plan for an exec'd process; warns about what it ignores.
    pub fn for_process(process: &Process) -> Result<Plan> {
        let plan = Plan::new(Requested::of_process(Some(process)), HostLsms::detect())?;
        plan.warn();
        Ok(plan)
    }

    fn warn(&self) {
        if let Some(w) = &self.ignored {
            tracing::warn!("{w}");
        }
    }

    /// Sets the profile and label the next execve of this thread applies. Runs before the
    /// process changes its user: the init is not dumpable, so its /proc files stay root's.
    pub fn apply_before_exec(&self) -> Result<()> {
        if let Some(profile) = &self.apparmor_profile {
            let text = format!("exec {profile}");
            write_attr(&["apparmor/exec", "exec"], &text).map_err(|e| {
                Error::config(
                    "process.apparmorProfile",
                    format!("cannot apply AppArmor profile {profile:?}: {e}"),
                )
            })?;
        }
        if let Some(label) = &self.selinux_label {
            write_attr(&["exec"], label).map_err(|e| {
                Error::config(
                    "process.selinuxLabel",
                    format!("cannot apply SELinux label {label:?}: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Filesystems that get no `context=`, as in runc: procfs and sysfs label themselves, cgroup
/// mounts are binds or strata's own, a bind mount ignores data, and mqueue is labelled
/// through its root once mounted ([`label_file`]).
fn takes_context(typ: &str) -> bool {
    !matches!(
        typ,
        "proc" | "sysfs" | "cgroup" | "cgroup2" | "mqueue" | "bind"
    )
}

/// The filesystem data for a mount of `typ`: `data`, with the mount label (given only where
/// the host has SELinux) as `context="..."` where the filesystem takes one.
pub fn mount_data(typ: &str, data: &[String], label: Option<&str>) -> Vec<String> {
    let mut out = data.to_vec();
    let Some(label) = label else {
        return out;
    };
    // A context the bundle gives itself wins; two would make the mount fail.
    let has_context = data.iter().any(|w| {
        ["context=", "fscontext=", "defcontext=", "rootcontext="]
            .iter()
            .any(|p| w.starts_with(p))
    });
    if takes_context(typ) && !has_context {
        out.push(format!("context=\"{label}\""));
    }
    out
}

/// Gives the file `fd` (O_PATH) the SELinux label `label`.
pub fn label_file(fd: &std::os::fd::OwnedFd, label: &str) -> Result<()> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Error::config("linux.mountLabel", e.to_string()))?;
    // SAFETY: both strings are NUL-terminated and live for the call; the value is `label`'s
    // bytes with their length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if r != 0 {
        return Err(Error::config(
            "linux.mountLabel",
            format!(
                "labelling the mqueue mount: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

/// Writes `text` to the first of `/proc/thread-self/attr/<name>` that exists, after checking
/// it is procfs's own file and not something a rootfs put there.
fn write_attr(names: &[&str], text: &str) -> std::result::Result<(), String> {
    let mut last = String::from("no attribute file");
    for name in names {
        let path = Path::new("/proc/thread-self/attr").join(name);
        let mut f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = format!("{}: {e}", path.display());
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let on_proc = nix::sys::statfs::fstatfs(f.as_fd())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if !on_proc {
            return Err(format!("{} is not on procfs", path.display()));
        }
        return f
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()));
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(aa: Option<&str>, se: Option<&str>, mount: Option<&str>) -> Requested {
        Requested {
            apparmor_profile: aa.map(String::from),
            selinux_label: se.map(String::from),
            mount_label: mount.map(String::from),
        }
    }

    const NONE: HostLsms = HostLsms {
        apparmor: false,
        selinux: false,
    };
    const BOTH: HostLsms = HostLsms {
        apparmor: true,
        selinux: true,
    };

    #[test]
    fn nothing_asked_nothing_said() {
        assert_eq!(
            Plan::new(Requested::default(), NONE).unwrap(),
            Plan::default()
        );
        assert_eq!(
            Plan::new(Requested::default(), BOTH).unwrap(),
            Plan::default()
        );
    }

    #[test]
    fn applied_where_the_host_has_the_module() {
        let p = Plan::new(
            want(
                Some("docker-default"),
                Some("system_u:system_r:container_t:s0"),
                Some("system_u:object_r:container_file_t:s0"),
            ),
            BOTH,
        )
        .unwrap();
        assert_eq!(p.apparmor_profile.as_deref(), Some("docker-default"));
        assert_eq!(
            p.selinux_label.as_deref(),
            Some("system_u:system_r:container_t:s0")
        );
        assert!(p.mount_label.is_some());
        assert_eq!(p.ignored, None);
    }

    #[test]
    fn ignored_with_a_reason_where_it_has_none() {
        let p = Plan::new(want(Some("docker-default"), None, Some("l:o:t:s0")), NONE).unwrap();
        assert_eq!((p.apparmor_profile, p.mount_label), (None, None));
        let w = p.ignored.unwrap();
        assert!(
            w.contains("process.apparmorProfile is ignored: this host has no AppArmor"),
            "{w}"
        );
        assert!(
            w.contains("linux.mountLabel is ignored: this host has no SELinux"),
            "{w}"
        );
        assert_eq!(w.lines().count(), 1);
        // Each module on its own.
        let p = Plan::new(
            want(Some("p"), Some("u:r:t:s0"), Some("u:o:t:s0")),
            HostLsms {
                apparmor: true,
                selinux: false,
            },
        )
        .unwrap();
        assert_eq!(p.apparmor_profile.as_deref(), Some("p"));
        let w = p.ignored.unwrap();
        assert!(!w.contains("AppArmor"), "{w}");
        assert!(
            w.contains("process.selinuxLabel and linux.mountLabel are ignored"),
            "{w}"
        );
    }

    #[test]
    fn a_label_that_cannot_be_written_is_refused() {
        assert!(Plan::new(want(Some("a\nb"), None, None), BOTH).is_err());
        assert!(Plan::new(want(None, None, Some("x\",size=1")), NONE).is_err());
    }

    #[test]
    fn the_mount_label_goes_to_filesystems_that_take_it() {
        let data = vec!["mode=755".to_string()];
        let l = Some("system_u:object_r:container_file_t:s0:c1,c2");
        assert_eq!(
            mount_data("tmpfs", &data, l),
            vec![
                "mode=755".to_string(),
                "context=\"system_u:object_r:container_file_t:s0:c1,c2\"".to_string()
            ]
        );
        assert_eq!(mount_data("devpts", &[], l).len(), 1);
        for typ in ["proc", "sysfs", "mqueue", "cgroup", "cgroup2", "bind"] {
            assert_eq!(mount_data(typ, &data, l), data, "{typ}");
        }
        assert_eq!(mount_data("tmpfs", &data, None), data);
        let own = vec!["context=\"u:o:t:s0\"".to_string()];
        assert_eq!(mount_data("tmpfs", &own, l), own);
    }
}
