//! Building and running one microVM: KVM VM with in-kernel irqchip and PIT, guest memory, the
//! devices, the boot vCPU state, one thread per vCPU, and the main thread waiting for the guest to
//! reset (`reboot=k` through the i8042); a triple fault is an error.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_fpu, kvm_pit_config, kvm_regs, kvm_segment, kvm_userspace_memory_region,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemory as _, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, BootEntry, EntryMode};
use crate::devices::fs::VirtioFs;
use crate::devices::legacy::PortBus;
use crate::devices::mmio::{lock, Interrupt, MmioTransport, VirtioDevice};
use crate::devices::net::{Net, NetConfig};
use crate::devices::vsock::Vsock;
use crate::layout::*;
use crate::seccomp::{self, ThreadRole};
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM refused to {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate {mib} MiB of guest memory: {0}", mib = .1)]
    Memory(String, u64),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Vsock(#[from] crate::devices::vsock::VsockError),
    #[error(transparent)]
    Fs(#[from] crate::devices::fs::FsError),
    #[error(transparent)]
    Net(#[from] crate::devices::net::NetError),
    #[error("invalid VM configuration: {0}")]
    Config(String),
    #[error("confining the shares: {0}")]
    Setup(String),
    #[error("VM setup: {0}")]
    Io(#[from] std::io::Error),
}

fn kvm<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, VmError> {
    r.map_err(|source| VmError::Kvm { what, source })
}

/// Where the guest's serial console goes. Off by default: a console costs a VM exit per byte.
#[derive(Debug, Clone, Default)]
pub enum SerialOutput {
    #[default]
    Off,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Appended to the VMM's own entries (console, virtio-mmio devices).
    pub cmdline: String,
    pub memory_mib: u64,
    pub vcpus: u8,
    pub serial: SerialOutput,
    /// Guest CID and host Unix socket of the vsock device.
    pub vsock: Option<(u64, PathBuf)>,
    /// virtio-fs shares: tag and host directory.
    pub fs: Vec<(String, PathBuf)>,
    /// Tags of the shares the guest may not write (see `share`).
    pub fs_readonly: Vec<String>,
    /// virtio-net interfaces, each over a tap device the caller opened.
    pub net: Vec<NetDevice>,
    /// Confine VMM threads with seccomp once the guest runs.
    pub seccomp: bool,
}

/// One guest network interface: the tap it is backed by, its MAC and MTU.
#[derive(Debug, Clone)]
pub struct NetDevice {
    pub tap: Arc<std::os::fd::OwnedFd>,
    pub config: NetConfig,
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest asked for a reset or power-off (the i8042, or a KVM system event).
    Reset,
    /// A vCPU stopped on something the VMM cannot handle.
    Error(String),
}

struct Mmio {
    base: u64,
    transport: Mutex<MmioTransport>,
}

struct Shared {
    ports: Mutex<PortBus>,
    mmio: Vec<Mmio>,
    exit: Arc<EventFd>,
    exit_reason: Mutex<Option<VmExit>>,
}

impl Shared {
    fn finish(&self, why: VmExit) {
        let mut reason = lock(&self.exit_reason);
        if reason.is_none() {
            *reason = Some(why);
        }
        let _ = self.exit.write(1);
    }
}

/// Checks a configuration before any resource is taken.
pub fn validate(config: &VmConfig) -> Result<(), VmError> {
    if config.memory_mib < 16 || config.memory_mib > 64 * 1024 {
        return Err(VmError::Config(format!(
            "guest memory must be 16 MiB to 64 GiB, got {} MiB",
            config.memory_mib
        )));
    }
    if config.vcpus == 0 || config.vcpus > 254 {
        return Err(VmError::Config(format!(
            "vCPUs must be 1 to 254 (the MP table's limit), got {}",
            config.vcpus
        )));
    }
    let devices = usize::from(config.vsock.is_some()) + config.fs.len() + config.net.len();
    if devices > MAX_VIRTIO_DEVICES {
        return Err(VmError::Config(format!(
            "at most {MAX_VIRTIO_DEVICES} virtio devices"
        )));
    }
    Ok(())
}

/// Builds the VM, runs it until the guest resets or fails, and returns how it ended.
pub fn run(config: &VmConfig) -> Result<VmExit, VmError> {
    validate(config)?;
    if !config.fs.is_empty() {
        let ro: Vec<&std::path::Path> = config
            .fs
            .iter()
            .filter(|(tag, _)| config.fs_readonly.contains(tag))
            .map(|(_, dir)| dir.as_path())
            .collect();
        crate::share::read_only(&ro).map_err(|e| VmError::Setup(e.to_string()))?;
        crate::share::drop_mknod().map_err(|e| VmError::Setup(e.to_string()))?;
    }
    let kvm_sys = Kvm::new().map_err(VmError::OpenKvm)?;
    let vm = kvm("create a VM", kvm_sys.create_vm())?;
    // Intel needs a TSS region below 4 GiB; others ignore it.
    let _ = vm.set_tss_address(0xfffb_d000);
    kvm("create the in-kernel irqchip", vm.create_irq_chip())?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    kvm("create the PIT", vm.create_pit2(pit))?;

    let mem = GuestMemory::from_ranges(&ram_regions(config.memory_mib << 20))
        .map_err(|e| VmError::Memory(e.to_string(), config.memory_mib))?;
    register_memory(&vm, &mem)?;

    // Devices first: their command-line entries go before the caller's text.
    let mut cmdline = String::from("reboot=k panic=1 pci=off nomodule 8250.nr_uarts=1");
    cmdline.push_str(match config.serial {
        SerialOutput::Off => " console=none quiet",
        _ => " console=ttyS0",
    });
    let mut virtio: Vec<Arc<Mutex<dyn VirtioDevice>>> = Vec::new();
    if let Some((cid, uds)) = &config.vsock {
        virtio.push(Arc::new(Mutex::new(Vsock::new(*cid, uds)?)));
    }
    for (tag, dir) in &config.fs {
        virtio.push(Arc::new(Mutex::new(VirtioFs::new(tag, dir)?)));
    }
    for net in &config.net {
        virtio.push(Arc::new(Mutex::new(Net::new(
            net.tap.try_clone()?,
            net.config,
        )?)));
    }
    let mut mmio = Vec::new();
    for (i, device) in virtio.into_iter().enumerate() {
        let (base, irq) = virtio_slot(i);
        let line = EventFd::new(libc::EFD_NONBLOCK)?;
        kvm("register a device interrupt", vm.register_irqfd(&line, irq))?;
        let transport = MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(line)))
            .map_err(VmError::Config)?;
        cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
        mmio.push(Mmio {
            base,
            transport: Mutex::new(transport),
        });
    }
    if !config.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&config.cmdline);
    }

    let serial_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
    kvm(
        "register the serial interrupt",
        vm.register_irqfd(&serial_irq, SERIAL_IRQ),
    )?;
    let exit = Arc::new(EventFd::new(0)?);
    let output: Box<dyn Write + Send> = match &config.serial {
        SerialOutput::Off => Box::new(std::io::sink()),
        SerialOutput::Stderr => Box::new(std::io::stderr()),
        SerialOutput::File(path) => Box::new(crate::devices::legacy::Capped::new(
            std::fs::File::create(path)?,
            crate::devices::legacy::CONSOLE_LIMIT,
        )),
    };
    let shared = Arc::new(Shared {
        ports: Mutex::new(PortBus::new(output, serial_irq, exit.clone())),
        mmio,
        exit: exit.clone(),
        exit_reason: Mutex::new(None),
    });

    let entry = boot::load(&mem, &config.kernel, config.initrd.as_deref(), &cmdline)?;
    boot::write_gdt(&mem, entry.mode == EntryMode::Linux64)?;
    // Secondary vCPUs wait in KVM for the guest's INIT/SIPI; the MP table tells the guest
    // they exist.
    crate::mptable::write(&mem, config.vcpus).map_err(|e| VmError::Config(e.to_string()))?;
    let cpuid = kvm(
        "report CPUID",
        kvm_sys.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES),
    )?;
    let caps = crate::cpuid::HostCaps {
        tsc_deadline: kvm_sys.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
    };
    let mut vcpus = Vec::new();
    for id in 0..config.vcpus {
        let vcpu = kvm("create a vCPU", vm.create_vcpu(u64::from(id)))?;
        let cpuid = crate::cpuid::for_vcpu(&cpuid, id, config.vcpus, caps);
        kvm("set CPUID", vcpu.set_cpuid2(&cpuid))?;
        setup_lapic(&vcpu)?;
        if id == 0 {
            setup_boot_vcpu(&vcpu, entry)?;
        }
        vcpus.push(vcpu);
    }

    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let shared = shared.clone();
        let use_seccomp = config.seccomp;
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                if use_seccomp {
                    seccomp::apply_current_thread(ThreadRole::Vcpu);
                }
                vcpu_loop(vcpu, &shared)
            })?;
    }
    if config.seccomp {
        seccomp::apply_current_thread(ThreadRole::Main);
    }
    // The main thread only waits for the end; the vsock thread serves the host sockets.
    let _ = exit.read();
    lock(&shared.ports).flush();
    // vCPU threads may still be parked in KVM_RUN holding the devices, so the vsock device is
    // never dropped: remove its socket here; the process exit takes care of the rest.
    if let Some((_, uds)) = &config.vsock {
        let _ = std::fs::remove_file(uds);
    }
    let reason = lock(&shared.exit_reason).clone().unwrap_or(VmExit::Reset);
    Ok(reason)
}

fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmError::Memory(e.to_string(), region.len() >> 20))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM: the VM fd
        // is dropped when `run` returns or the process exits, and `mem` is kept alive by every
        // device and by `run` until then. The slot numbers are distinct.
        kvm("map guest memory", unsafe {
            vm.set_user_memory_region(desc)
        })?;
    }
    Ok(())
}

/// LINT0 receives the legacy PIC's interrupts (ExtINT), LINT1 NMIs, as firmware sets them.
fn setup_lapic(vcpu: &VcpuFd) -> Result<(), VmError> {
    const LVT0: usize = 0x350;
    const LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = kvm("read the local APIC", vcpu.get_lapic())?;
    for (reg, mode) in [(LVT0, MODE_EXTINT), (LVT1, MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as libc::c_char;
        }
    }
    kvm("set the local APIC", vcpu.set_lapic(&lapic))
}

fn segment(selector: u16, type_: u8, long_mode: bool) -> kvm_segment {
    let code = type_ & 0x8 != 0;
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!(long_mode && code)),
        s: 1,
        l: u8::from(long_mode && code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The register state each entry protocol promises the kernel.
fn setup_boot_vcpu(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), VmError> {
    const CR0_PE: u64 = 1;
    const CR0_ET: u64 = 0x10;
    const CR0_PG: u64 = 0x8000_0000;
    const CR4_PAE: u64 = 0x20;
    const EFER_LME: u64 = 0x100;
    const EFER_LMA: u64 = 0x400;
    let long_mode = entry.mode == EntryMode::Linux64;
    let mut sregs = kvm("read special registers", vcpu.get_sregs())?;
    sregs.cs = segment(0x10, 0xb, long_mode);
    let data = segment(0x18, 0x3, long_mode);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        selector: 0x20,
        type_: 0xb,
        present: 1,
        limit: 0x67,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (boot::gdt_entries(long_mode).len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.entry,
        ..Default::default()
    };
    if long_mode {
        sregs.cr3 = PML4;
        sregs.cr4 = CR4_PAE;
        sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA;
        regs.rsi = ZERO_PAGE;
        regs.rsp = 0x8ff0;
        regs.rbp = 0x8ff0;
    } else {
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr4 = 0;
        sregs.efer = 0;
        regs.rbx = PVH_START_INFO;
    }
    kvm("set special registers", vcpu.set_sregs(&sregs))?;
    kvm("set registers", vcpu.set_regs(&regs))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    kvm("set the FPU", vcpu.set_fpu(&fpu))
}

fn vcpu_loop(mut vcpu: VcpuFd, shared: &Shared) {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => lock(&shared.ports).write(port, data),
            Ok(VcpuExit::IoIn(port, data)) => lock(&shared.ports).read(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => match find_mmio(shared, addr) {
                Some((dev, offset)) => lock(&dev.transport).read(offset, data),
                None => data.fill(0xff),
            },
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if let Some((dev, offset)) = find_mmio(shared, addr) {
                    lock(&dev.transport).write(offset, data);
                }
            }
            Ok(VcpuExit::SystemEvent(..)) => return shared.finish(VmExit::Reset),
            // The guest's kernel resets through the i8042 (`reboot=k`); a shutdown exit is a
            // triple fault, i.e. a guest that crashed, and must not pass for a clean reset.
            Ok(VcpuExit::Shutdown) => {
                return shared.finish(VmExit::Error(
                    "the guest triple-faulted (KVM_EXIT_SHUTDOWN)".into(),
                ));
            }
            Ok(VcpuExit::Hlt) => {
                // Only reached without an in-kernel local APIC: a halted guest with nothing to
                // wake it.
                return shared.finish(VmExit::Error("the guest halted".into()));
            }
            Ok(other) => {
                return shared.finish(VmExit::Error(format!("unexpected vCPU exit: {other:?}")));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return shared.finish(VmExit::Error(format!("KVM_RUN failed: {e}"))),
        }
    }
}

fn find_mmio(shared: &Shared, addr: u64) -> Option<(&Mmio, u64)> {
    shared
        .mmio
        .iter()
        .find(|d| (d.base..d.base + VIRTIO_MMIO_SIZE).contains(&addr))
        .map(|d| (d, addr - d.base))
}
