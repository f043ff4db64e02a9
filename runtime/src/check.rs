//! `strata check`: what this host can run, one sentence per item, so a user learns before the
//! first container why a backend will or will not work here.

use std::path::{Path, PathBuf};

use crate::backend::NodeConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Missing,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub name: &'static str,
    pub level: Level,
    pub sentence: String,
}

/// What `/dev/kvm` is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmKind {
    /// No usable /dev/kvm.
    Absent(String),
    /// Intel VT-x or AMD-V: a stock Linux guest boots.
    Hardware(&'static str),
    /// Pagetable-based Virtual Machine (a nested guest without VMX/SVM): VMs and vCPUs can be
    /// created and tiny guests run, but Linux cannot boot.
    Pvm,
    /// /dev/kvm opens, but neither VMX/SVM nor a known software backend is visible.
    Unknown,
}

impl KvmKind {
    /// Whether our own VMM can boot the Linux guest here.
    pub fn boots_linux(&self) -> bool {
        matches!(self, KvmKind::Hardware(_))
    }
}

/// Classifies KVM from the CPU flags of /proc/cpuinfo and the loaded KVM modules.
pub fn kvm_kind(kvm_opens: Result<(), String>, cpu_flags: &str, modules: &[&str]) -> KvmKind {
    if let Err(e) = kvm_opens {
        return KvmKind::Absent(e);
    }
    let flags: Vec<&str> = cpu_flags.split_whitespace().collect();
    if modules.contains(&"kvm_pvm") {
        return KvmKind::Pvm;
    }
    if flags.contains(&"vmx") && modules.contains(&"kvm_intel") {
        return KvmKind::Hardware("VT-x");
    }
    if flags.contains(&"svm") && modules.contains(&"kvm_amd") {
        return KvmKind::Hardware("AMD-V");
    }
    KvmKind::Unknown
}

pub fn host_kvm_kind() -> KvmKind {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| e.to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.to_string())
        .unwrap_or_default();
    let modules: Vec<String> = ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .map(|m| m.to_string())
        .collect();
    let modules: Vec<&str> = modules.iter().map(String::as_str).collect();
    kvm_kind(opens, &flags, &modules)
}

fn cgroups_item() -> Item {
    use strata_linux::cgroups::{hierarchies, layout, Layout};
    match hierarchies() {
        Ok(hs) if hs.is_empty() => Item {
            name: "cgroups",
            level: Level::Missing,
            sentence: "no cgroup filesystem is mounted; containers cannot be given limits".into(),
        },
        Ok(hs) => {
            let v1: Vec<String> = hs
                .iter()
                .filter(|h| !h.unified)
                .flat_map(|h| h.controllers.clone())
                .collect();
            let v2: Vec<String> = hs
                .iter()
                .filter(|h| h.unified)
                .map(|h| h.mount_point.display().to_string())
                .collect();
            let sentence = match layout(&hs) {
                Layout::Legacy => format!("cgroup v1 only ({}); strata drives it", v1.join(", ")),
                Layout::Unified => format!("cgroup v2 at {}; strata drives it", v2.join(", ")),
                Layout::Hybrid => format!(
                    "hybrid: v1 controllers ({}) and cgroup2 at {}; strata places containers in both",
                    v1.join(", "),
                    v2.join(", ")
                ),
            };
            Item {
                name: "cgroups",
                level: Level::Ok,
                sentence,
            }
        }
        Err(e) => Item {
            name: "cgroups",
            level: Level::Missing,
            sentence: format!("cannot read the cgroup mounts: {e}"),
        },
    }
}

fn seccomp_item() -> Item {
    // SECCOMP_GET_ACTION_AVAIL tells which return actions the kernel knows.
    let avail = |action: u32| {
        // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from the pointer, which points at a
        // live local; the call has no other effect.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                2, // SECCOMP_GET_ACTION_AVAIL
                0,
                &action as *const u32,
            ) == 0
        }
    };
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_USER_NOTIF: u32 = 0x7fc0_0000;
    match (avail(RET_ERRNO), avail(RET_USER_NOTIF)) {
        (true, true) => Item {
            name: "seccomp",
            level: Level::Ok,
            sentence: "filters and user notification are available (native, sandbox)".into(),
        },
        (true, false) => Item {
            name: "seccomp",
            level: Level::Warn,
            sentence:
                "filters work but SECCOMP_RET_USER_NOTIF does not: the sandbox backend cannot run"
                    .into(),
        },
        _ => Item {
            name: "seccomp",
            level: Level::Missing,
            sentence:
                "the kernel has no seccomp filters: profiles in config.json cannot be applied"
                    .into(),
        },
    }
}

fn landlock_item() -> Item {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or an error); it creates nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if abi > 0 {
        Item {
            name: "landlock",
            level: Level::Ok,
            sentence: format!("ABI v{abi}: the sandbox backend's second wall is enforced"),
        }
    } else {
        Item {
            name: "landlock",
            level: Level::Warn,
            sentence: "not available: the sandbox backend runs with its seccomp wall only".into(),
        }
    }
}

fn kvm_item(kind: &KvmKind) -> Item {
    let (level, sentence) = match kind {
        KvmKind::Absent(e) => (Level::Missing, format!("/dev/kvm cannot be opened ({e}): the vm backend cannot run")),
        KvmKind::Hardware(what) => (Level::Ok, format!("hardware virtualization ({what}): strata's own VMM boots the guest")),
        KvmKind::Pvm => (
            Level::Warn,
            "kvm_pvm (nested PVM, no VMX/SVM): VMs can be created but a stock Linux guest cannot boot; the vm backend uses QEMU with TCG instead".into(),
        ),
        KvmKind::Unknown => (
            Level::Warn,
            "/dev/kvm opens but neither VMX nor SVM is visible: booting Linux may fail; the vm backend uses QEMU with TCG".into(),
        ),
    };
    Item {
        name: "kvm",
        level,
        sentence,
    }
}

/// Finds a helper program: on PATH, then in strata's tool cache.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cache = cache_dir().join("tools").join(name).join("bin");
    std::env::split_paths(&path)
        .chain(std::iter::once(cache))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How to get a helper program the vm backend needs.
pub fn install_hint(program: &str) -> &'static str {
    if program == "strata-vmm" {
        "backends/vm/build installs it"
    } else {
        "scripts/install-deps --vm installs it"
    }
}

/// `$STRATA_CACHE`, else `~/.cache/strata`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/strata")
}

fn vm_items(node: &NodeConfig, kind: &KvmKind) -> Vec<Item> {
    let mut items = Vec::new();
    match node.vm.kernel.as_deref() {
        Some(k) if k.is_file() => items.push(Item {
            name: "guest kernel",
            level: Level::Ok,
            sentence: format!("{} (node config vm.kernel)", k.display()),
        }),
        Some(k) => items.push(Item {
            name: "guest kernel",
            level: Level::Missing,
            sentence: format!(
                "vm.kernel {} does not exist; build one with kernel-config/build",
                k.display()
            ),
        }),
        None => items.push(Item {
            name: "guest kernel",
            level: Level::Missing,
            sentence:
                "no vm.kernel in the node config; build one with kernel-config/build and set it"
                    .into(),
        }),
    }
    let programs: &[&str] = if kind.boots_linux() {
        &["strata-vmm"]
    } else {
        &["qemu-system-x86_64", "virtiofsd", "vhost-device-vsock"]
    };
    for p in programs {
        items.push(match find_program(p) {
            Some(path) => Item {
                name: "vm helper",
                level: Level::Ok,
                sentence: format!("{p}: {}", path.display()),
            },
            None => Item {
                name: "vm helper",
                level: Level::Missing,
                sentence: format!(
                    "{p} is not on PATH nor in {}; {}",
                    cache_dir().join("tools").display(),
                    install_hint(p)
                ),
            },
        });
    }
    items
}

pub fn items(node: &NodeConfig) -> Vec<Item> {
    let kind = host_kvm_kind();
    let mut items = vec![
        cgroups_item(),
        seccomp_item(),
        landlock_item(),
        kvm_item(&kind),
    ];
    items.extend(vm_items(node, &kind));
    items
}

/// Prints the report; fails when the native backend itself cannot run.
pub fn run(node: &NodeConfig) -> anyhow::Result<i32> {
    let items = items(node);
    for item in &items {
        let mark = match item.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Missing => "missing",
        };
        println!("{:<13} {:<8} {}", item.name, mark, item.sentence);
    }
    let native_ok = items
        .iter()
        .filter(|i| i.name == "cgroups" || i.name == "seccomp")
        .all(|i| i.level != Level::Missing);
    Ok(if native_ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_kinds() {
        assert_eq!(
            kvm_kind(Ok(()), "fpu vme hypervisor", &["kvm_pvm"]),
            KvmKind::Pvm
        );
        assert_eq!(
            kvm_kind(Ok(()), "fpu vmx", &["kvm_intel"]),
            KvmKind::Hardware("VT-x")
        );
        assert_eq!(
            kvm_kind(Ok(()), "fpu svm", &["kvm_amd"]),
            KvmKind::Hardware("AMD-V")
        );
        assert_eq!(kvm_kind(Ok(()), "fpu hypervisor", &[]), KvmKind::Unknown);
        assert!(matches!(
            kvm_kind(Err("ENOENT".into()), "vmx", &["kvm_intel"]),
            KvmKind::Absent(_)
        ));
        assert!(KvmKind::Hardware("VT-x").boots_linux());
        assert!(!KvmKind::Pvm.boots_linux());
    }

    #[test]
    fn every_item_is_one_sentence() {
        for item in items(&NodeConfig::default()) {
            assert!(
                !item.sentence.is_empty() && !item.sentence.contains('\n'),
                "{item:?}"
            );
        }
    }
}
