//! strata's microVM monitor: one KVM virtual machine per container.
//!
//! The pieces follow the shape of Firecracker and Cloud Hypervisor, built from the rust-vmm
//! crates: [`layout`] fixes the guest physical memory map, [`boot`] loads an ELF `vmlinux`
//! through its PVH note (or the 64-bit Linux boot protocol when the note is absent), [`vm`]
//! creates the KVM VM and its vCPUs (each with the CPUID of [`cpuid`]) and runs them,
//! [`devices`] holds the legacy devices (8250 serial, i8042 reset) and the virtio-mmio
//! transport with the vsock, virtio-fs and virtio-net devices, and [`seccomp`] is the filter each VMM
//! thread installs once the guest runs.
//!
//! [`tiny_guest`] is a guest of a few dozen instructions that exercises all of this end to end on
//! hosts whose KVM cannot boot Linux (see `shared/notes/vm-on-this-host.md`).

pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod layout;
pub mod mptable;
pub mod seccomp;
pub mod share;
pub mod tiny_guest;
pub mod vm;

/// Guest memory as every part of the VMM sees it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
