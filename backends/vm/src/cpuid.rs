//! The CPUID a vCPU shows its guest: what KVM supports, plus what only the VMM knows.
//!
//! KVM_GET_SUPPORTED_CPUID reports the host's features that KVM can virtualize, including its
//! paravirtual leaves (0x4000_0000 "KVMKVMKVM" and 0x4000_0001, kvm-clock and the other PV
//! features), but it leaves to the VMM what is per vCPU (APIC IDs, the topology) and two
//! bits: CPUID.1:ECX[31], "running under a hypervisor", and CPUID.1:ECX[24], the TSC-deadline
//! timer, which KVM reports through a capability instead. Linux only looks for the KVM leaves
//! when the hypervisor bit is set: without it the guest believes it is on bare hardware, has no
//! kvm-clock, and spends seconds calibrating the TSC, PIT and APIC timer (and on nested SVM
//! fails to), which `shared/notes/nested-svm.md` measured as half of a boot.

use kvm_bindings::CpuId;

/// CPUID.1:ECX: the guest runs under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX: the local APIC timer has a TSC-deadline mode.
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:EDX: the EBX[23:16] count of logical processors is valid.
const EDX_HTT: u32 = 1 << 28;
/// The KVM paravirtual signature leaf; its EBX/ECX/EDX spell "KVMKVMKVM\0\0\0".
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// The KVM paravirtual features leaf.
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;

/// What the host's KVM offers beyond the supported CPUID.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCaps {
    /// KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel local APIC emulates the TSC-deadline mode.
    pub tsc_deadline: bool,
}

/// The CPUID of vCPU `id` of `vcpus`, from KVM's supported CPUID.
pub fn for_vcpu(supported: &CpuId, id: u8, vcpus: u8, caps: HostCaps) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = u32::from(id);
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // Initial APIC ID, and the number of logical processors in the package.
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (u32::from(vcpus) << 16);
                if vcpus > 1 {
                    e.edx |= EDX_HTT;
                }
                e.ecx |= ECX_HYPERVISOR;
                if caps.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                } else {
                    e.ecx &= !ECX_TSC_DEADLINE;
                }
            }
            // The extended topology leaves: EDX is the vCPU's x2APIC ID in every sub-leaf.
            0xb | 0x1f => e.edx = apic_id,
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn supported() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0, [0xd, 0, 0, 0]),
            // What KVM reports: no hypervisor bit, APIC ID 0, a CLFLUSH size in EBX[15:8].
            entry(1, 0, [0x00a2_0f12, 0x0000_0800, 0x7ef8_320b, 0x178b_fbff]),
            entry(0xb, 0, [1, 1, 0x100, 0]),
            entry(0xb, 1, [2, 2, 0x201, 0]),
            entry(
                KVM_SIGNATURE_LEAF,
                0,
                [KVM_FEATURES_LEAF, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(KVM_FEATURES_LEAF, 0, [0x0100_7afb, 0, 0, 0]),
        ])
        .unwrap()
    }

    fn leaf(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn the_guest_is_told_it_runs_under_a_hypervisor() {
        let c = for_vcpu(&supported(), 0, 1, HostCaps::default());
        assert_ne!(leaf(&c, 1, 0).ecx & ECX_HYPERVISOR, 0);
        // The paravirtual leaves the hypervisor bit points the guest to are KVM's own.
        assert_eq!(
            leaf(&c, KVM_SIGNATURE_LEAF, 0),
            leaf(&supported(), KVM_SIGNATURE_LEAF, 0)
        );
        assert_eq!(leaf(&c, KVM_FEATURES_LEAF, 0).eax, 0x0100_7afb);
    }

    #[test]
    fn each_vcpu_has_its_own_apic_id_and_sees_the_count() {
        for id in 0..4u8 {
            let c = for_vcpu(&supported(), id, 4, HostCaps::default());
            let l1 = leaf(&c, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(id));
            assert_eq!((l1.ebx >> 16) & 0xff, 4);
            // CLFLUSH line size and brand index are KVM's.
            assert_eq!(l1.ebx & 0xffff, 0x0800);
            assert_ne!(l1.edx & EDX_HTT, 0);
            assert_eq!(leaf(&c, 0xb, 0).edx, u32::from(id));
            assert_eq!(leaf(&c, 0xb, 1).edx, u32::from(id));
        }
    }

    #[test]
    fn tsc_deadline_follows_the_capability() {
        let on = for_vcpu(&supported(), 0, 1, HostCaps { tsc_deadline: true });
        assert_ne!(leaf(&on, 1, 0).ecx & ECX_TSC_DEADLINE, 0);
        let mut s = supported();
        s.as_mut_slice()[1].ecx |= ECX_TSC_DEADLINE;
        let off = for_vcpu(&s, 0, 1, HostCaps::default());
        assert_eq!(leaf(&off, 1, 0).ecx & ECX_TSC_DEADLINE, 0);
    }
}
