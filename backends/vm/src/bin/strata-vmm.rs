//! `strata-vmm`: runs one microVM until the guest resets, then exits 0; exits 1 with a one-line
//! error when the VM cannot be built or a vCPU fails. Spawned by strata's vm backend, one
//! process per container; usable by hand for debugging a guest kernel.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata_vm::devices::net::{parse_mac, NetConfig};
use strata_vm::vm::{self, NetDevice, SerialOutput, VmConfig, VmExit};

#[derive(Parser, Debug)]
#[command(name = "strata-vmm", version, about = "strata's microVM monitor (KVM)")]
struct Args {
    /// Guest kernel: an ELF vmlinux (PVH entry, or 64-bit boot protocol without the note).
    #[arg(long)]
    kernel: PathBuf,
    /// initramfs (cpio) handed to the kernel.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command line, after the VMM's own entries.
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long, default_value_t = 128)]
    memory_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Serial console: off, stderr, or a file path.
    #[arg(long, default_value = "off")]
    serial: String,
    /// vsock device: GUEST_CID:UDS_PATH (hybrid vsock, see strata_vm::devices::vsock).
    #[arg(long)]
    vsock: Option<String>,
    /// virtio-fs share: TAG=DIR; repeatable.
    #[arg(long = "fs")]
    fs: Vec<String>,
    /// A share's tag the guest may only read; repeatable.
    #[arg(long = "fs-readonly")]
    fs_readonly: Vec<String>,
    /// virtio-net interface over an open tap fd (IFF_TAP|IFF_NO_PI, inherited):
    /// fd=N,mac=aa:bb:cc:dd:ee:ff[,mtu=M]; repeatable.
    #[arg(long = "net")]
    net: Vec<String>,
    /// Do not confine the VMM's threads with seccomp (debugging only).
    #[arg(long)]
    no_seccomp: bool,
}

fn config(args: Args) -> Result<VmConfig, String> {
    let serial = match args.serial.as_str() {
        "off" => SerialOutput::Off,
        "stderr" => SerialOutput::Stderr,
        path => SerialOutput::File(PathBuf::from(path)),
    };
    let vsock = match args.vsock {
        Some(spec) => {
            let (cid, path) = spec
                .split_once(':')
                .ok_or_else(|| format!("--vsock expects CID:PATH, got '{spec}'"))?;
            let cid: u64 = cid
                .parse()
                .ok()
                .filter(|c| *c > 2 && *c < u64::from(u32::MAX))
                .ok_or_else(|| format!("--vsock: guest CID must be 3..2^32-1, got '{cid}'"))?;
            Some((cid, PathBuf::from(path)))
        }
        None => None,
    };
    let fs = args
        .fs
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .map(|(tag, dir)| (tag.to_string(), PathBuf::from(dir)))
                .ok_or_else(|| format!("--fs expects TAG=DIR, got '{spec}'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let net = args
        .net
        .iter()
        .map(|spec| net_device(spec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        memory_mib: args.memory_mib,
        vcpus: args.vcpus,
        serial,
        vsock,
        fs,
        fs_readonly: args.fs_readonly,
        net,
        seccomp: !args.no_seccomp,
    })
}

/// `fd=N,mac=M[,mtu=K]`: the fd must be open, and is the VMM's from here on.
fn net_device(spec: &str) -> Result<NetDevice, String> {
    let bad =
        |why: &str| format!("--net {spec:?}: {why} (expected fd=N,mac=aa:bb:cc:dd:ee:ff[,mtu=M])");
    let (mut fd, mut mac, mut mtu) = (None, None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("fd", v)) => {
                fd = Some(v.parse::<RawFd>().map_err(|_| bad("fd is not a number"))?)
            }
            Some(("mac", v)) => mac = Some(parse_mac(v).ok_or_else(|| bad("bad mac"))?),
            Some(("mtu", v)) => mtu = Some(v.parse::<u16>().map_err(|_| bad("bad mtu"))?),
            _ => return Err(bad(&format!("unknown part {part:?}"))),
        }
    }
    let fd = fd
        .filter(|fd| *fd > 2)
        .ok_or_else(|| bad("fd=N above 2 is required"))?;
    let mac = mac.ok_or_else(|| bad("mac= is required"))?;
    // SAFETY: F_GETFD only reads the fd's flags; it tells whether the number is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("that fd is not open"));
    }
    // SAFETY: the fd is open (checked above) and was handed to this process for the device:
    // nothing else in the VMM knows of it, so the OwnedFd is its only owner.
    let tap = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(NetDevice {
        tap: std::sync::Arc::new(tap),
        config: NetConfig { mac, mtu },
    })
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            eprintln!(
                "strata-vmm: {}",
                text.lines()
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = config(args)
        .map_err(|e| e.to_string())
        .and_then(|c| vm::run(&c).map_err(|e| e.to_string()));
    match result {
        Ok(VmExit::Reset) => ExitCode::SUCCESS,
        Ok(VmExit::Error(e)) => {
            eprintln!("strata-vmm: the guest stopped: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("strata-vmm: {e}");
            ExitCode::from(1)
        }
    }
}
