//! Facts about the host that more than one part of strata asks: what `/dev/kvm` is, where
//! helper programs and strata's cache are. `check` reports them; the vm backend acts on them.

use std::path::{Path, PathBuf};

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
}
