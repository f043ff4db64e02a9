//! `strata check`: what this host can run, one sentence per item, so a user learns before the
//! first container why a backend will or will not work here.

use crate::config::NodeConfig;
use crate::host::{cache_dir, find_program, host_kvm_kind, install_hint, KvmKind};

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
    fn every_item_is_one_sentence() {
        for item in items(&NodeConfig::default()) {
            assert!(
                !item.sentence.is_empty() && !item.sentence.contains('\n'),
                "{item:?}"
            );
        }
    }
}
