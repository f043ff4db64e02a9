//! Hypervisor drivers behind one small trait: strata's own VMM (the default where KVM has
//! hardware virtualization) and QEMU `-M microvm` with vhost-user virtio-fs (`virtiofsd`) and
//! vsock (`vhost-device-vsock`), which also runs under TCG where KVM cannot boot Linux. Both
//! expose the guest's vsock as the same hybrid-vsock Unix socket, so the agent client is shared.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use strata_agent_protocol::{GUEST_CID, SHARE_TAG};

use super::network::{mac_text, Nic};
use crate::host::{find_program, host_kvm_kind};

/// virtio-fs tag of the container rootfs; the agent reads it from `strata.rootfs=`.
pub const ROOTFS_TAG: &str = "rootfs";
/// The hybrid-vsock socket, relative to the VM's run directory.
pub const VSOCK_SOCKET: &str = "v.sock";

pub struct Launch<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub vcpus: u8,
    pub rootfs: &'a Path,
    /// The bundle's `root.readonly`: the share is read-only on the host side, so that guest
    /// root cannot undo it in the guest.
    pub readonly_rootfs: bool,
    /// The VM's share of bind-mounted directories and files, when the container has any
    /// (see `share`; read-only where a mount says so, on the host side already).
    pub share: Option<&'a Path>,
    /// Sockets and the console log live here (a short path: socket names are limited).
    pub run_dir: &'a Path,
    /// Network interfaces: each a tap the VM's process inherits.
    pub nics: &'a [Nic],
}

/// Lets the VM's process inherit the taps, under their own numbers: only that child's copies
/// lose close-on-exec (the helper daemons get none of them).
fn pass_taps(cmd: &mut Command, nics: &[Nic]) {
    let fds: Vec<i32> = nics.iter().map(|n| n.tap.as_raw_fd()).collect();
    if fds.is_empty() {
        return;
    }
    // SAFETY: between fork and exec: fcntl on fds this process owns, async-signal-safe; the
    // vector was allocated before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

pub trait Hypervisor {
    fn name(&self) -> &'static str;
    /// Starts the VM (and its helper daemons); every child dies with the calling process.
    fn launch(&self, l: &Launch) -> Result<Vec<Child>>;
}

/// Picks the driver: the node config's `vm.driver`, else ours where KVM boots Linux, else QEMU.
pub fn choose(configured: Option<&str>) -> Result<Box<dyn Hypervisor>> {
    match configured.unwrap_or("auto") {
        "strata" => Ok(Box::new(StrataVmm)),
        "qemu" => Ok(Box::new(Qemu {
            kvm: host_kvm_kind().boots_linux(),
        })),
        "auto" => {
            if host_kvm_kind().boots_linux() {
                Ok(Box::new(StrataVmm))
            } else {
                Ok(Box::new(Qemu { kvm: false }))
            }
        }
        other => {
            bail!("node config vm.driver: unknown driver {other:?} (expected auto, strata or qemu)")
        }
    }
}

fn program(name: &str) -> Result<PathBuf> {
    // Next to this binary first (a build tree), then PATH and strata's tool cache.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    beside
        .filter(|p| p.is_file())
        .or_else(|| find_program(name))
        .with_context(|| {
            format!(
                "vm backend: {name} not found ({})",
                crate::host::install_hint(name)
            )
        })
}

/// Children of the VM die with the process that launched them (the container's monitor), and
/// start with the signal mask and SIGPIPE disposition a fresh process has, not the monitor's.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls prctl, sigemptyset,
    // sigprocmask and signal, which are async-signal-safe; the set is a local.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        })
    }
}

/// The first CONSOLE_LIMIT bytes of the guest's console; the rest is read and dropped, so
/// that the guest never blocks on it.
const CONSOLE_LIMIT: u64 = 1 << 20;

fn keep_console(mut from: impl std::io::Read, to: std::fs::File) {
    use std::io::{Read, Write};
    // Unbuffered: the monitor quotes the last line when the guest does not come up.
    let mut kept = to;
    let copied = std::io::copy(&mut (&mut from).take(CONSOLE_LIMIT), &mut kept).unwrap_or(0);
    if copied == CONSOLE_LIMIT {
        let _ = kept.write_all(b"\n[strata: console output past this point is not kept]\n");
    }
    drop(kept);
    let _ = std::io::copy(&mut from, &mut std::io::sink());
}

/// The kernel command line both drivers share.
fn guest_cmdline(l: &Launch) -> String {
    let mut line = format!("strata.rootfs={ROOTFS_TAG} quiet");
    if l.share.is_some() {
        line.push_str(&format!(" strata.share={SHARE_TAG}"));
    }
    line
}

pub struct StrataVmm;

impl Hypervisor for StrataVmm {
    fn name(&self) -> &'static str {
        "strata"
    }

    fn launch(&self, l: &Launch) -> Result<Vec<Child>> {
        let mut cmd = Command::new(program("strata-vmm")?);
        cmd.arg("--kernel").arg(l.kernel);
        cmd.arg("--initrd").arg(l.initrd);
        cmd.arg("--memory-mib").arg(l.memory_mib.to_string());
        cmd.arg("--vcpus").arg(l.vcpus.to_string());
        cmd.arg("--vsock").arg(format!(
            "{GUEST_CID}:{}",
            l.run_dir.join(VSOCK_SOCKET).display()
        ));
        cmd.arg("--fs")
            .arg(format!("{ROOTFS_TAG}={}", l.rootfs.display()));
        if l.readonly_rootfs {
            cmd.args(["--fs-readonly", ROOTFS_TAG]);
        }
        if let Some(share) = l.share {
            cmd.arg("--fs")
                .arg(format!("{SHARE_TAG}={}", share.display()));
        }
        cmd.arg("--serial").arg(l.run_dir.join("console.log"));
        cmd.arg("--cmdline").arg(guest_cmdline(l));
        for nic in l.nics {
            let mut spec = format!("fd={},mac={}", nic.tap.as_raw_fd(), mac_text(&nic.mac));
            if let Some(mtu) = nic.mtu {
                spec.push_str(&format!(",mtu={mtu}"));
            }
            cmd.arg("--net").arg(spec);
        }
        pass_taps(&mut cmd, l.nics);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(Stdio::from(std::fs::File::create(
            l.run_dir.join("vmm.log"),
        )?));
        let child = die_with_parent(&mut cmd)
            .spawn()
            .context("starting strata-vmm")?;
        Ok(vec![child])
    }
}

pub struct Qemu {
    /// Use KVM (it can boot Linux here) rather than TCG.
    pub kvm: bool,
}

/// The host's TSC frequency in kHz. Under TCG the guest's TSC calibration against the PIT fails
/// at random (and always under load) and the guest hangs; telling it the frequency avoids it.
fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

fn wait_for_socket(path: &Path, daemon: &mut Child, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if let Some(status) = daemon.try_wait()? {
            bail!("vm backend: {name} exited ({status}) before it was ready");
        }
        if Instant::now() > deadline {
            bail!(
                "vm backend: {name} did not create {} within 10 s",
                path.display()
            );
        }
        // The daemon offers no readiness signal but the socket itself; it appears within
        // about a millisecond.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// virtiofsd serving `dir` on a socket we bind ourselves (`--fd`), so it is ready the moment
/// it exists.
fn virtiofsd(dir: &Path, readonly: bool, sock: &Path, log: &Path) -> Result<Child> {
    let listener = UnixListener::bind(sock).context("binding a virtio-fs socket")?;
    let fs_fd: OwnedFd = listener.into();
    let mut fs = Command::new(program("virtiofsd")?);
    // No device nodes from the guest: virtiofsd acts as root on the host, and a guest could
    // otherwise leave (say) a world-writable node of the host's disk in the share.
    fs.arg(format!("--fd={}", 3))
        .arg("--shared-dir")
        .arg(dir)
        .args(["--cache=auto", "--log-level=error", "--modcaps=-mknod"]);
    if readonly {
        fs.arg("--readonly");
    }
    fs.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log)?));
    let raw = fs_fd.as_raw_fd();
    // SAFETY: between fork and exec: dup2 on fds this process owns, async-signal-safe.
    unsafe {
        fs.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    die_with_parent(&mut fs)
        .spawn()
        .context("starting virtiofsd")
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, l: &Launch) -> Result<Vec<Child>> {
        let mut children = Vec::new();
        let fs_sock = l.run_dir.join("fs.sock");
        children.push(virtiofsd(
            l.rootfs,
            l.readonly_rootfs,
            &fs_sock,
            &l.run_dir.join("virtiofsd.log"),
        )?);
        let share_sock = l.run_dir.join("share.sock");
        if let Some(share) = l.share {
            // Read-only entries are read-only binds already; the share as a whole is not.
            children.push(virtiofsd(
                share,
                false,
                &share_sock,
                &l.run_dir.join("virtiofsd-share.log"),
            )?);
        }

        let vhost_sock = l.run_dir.join("vsock-vhost.sock");
        let mut vs = Command::new(program("vhost-device-vsock")?);
        vs.arg("--vm").arg(format!(
            "guest-cid={GUEST_CID},socket={},uds-path={}",
            vhost_sock.display(),
            l.run_dir.join(VSOCK_SOCKET).display()
        ));
        vs.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                l.run_dir.join("vhost-device-vsock.log"),
            )?));
        let mut vsock = die_with_parent(&mut vs)
            .spawn()
            .context("starting vhost-device-vsock")?;
        let ready = wait_for_socket(&vhost_sock, &mut vsock, "vhost-device-vsock");
        children.push(vsock);
        ready?;

        let mut cmdline = format!("console=ttyS0 reboot=t panic=-1 {}", guest_cmdline(l));
        if !self.kvm {
            if let Some(khz) = tsc_khz() {
                cmdline.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
        let mem = format!("{}M", l.memory_mib);
        let mut q = Command::new(program("qemu-system-x86_64")?);
        // acpi=off: our guest kernel has no ACPI, and with it off QEMU lists the virtio-mmio devices
        // on the kernel command line and writes an MP table for the vCPUs.
        q.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off,memory-backend=mem",
        ]);
        q.args(["-accel", if self.kvm { "kvm" } else { "tcg" }]);
        if self.kvm {
            q.args(["-cpu", "host"]);
        }
        q.args(["-m", &mem, "-smp", &l.vcpus.to_string()]);
        // vhost-user devices need guest memory the daemons can map.
        q.args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ]);
        q.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        q.arg("-kernel").arg(l.kernel);
        q.arg("-initrd").arg(l.initrd);
        q.args(["-append", &cmdline]);
        q.arg("-chardev")
            .arg(format!("socket,id=fs0,path={}", fs_sock.display()));
        q.args([
            "-device",
            &format!("vhost-user-fs-device,chardev=fs0,tag={ROOTFS_TAG}"),
        ]);
        if l.share.is_some() {
            q.arg("-chardev")
                .arg(format!("socket,id=fs1,path={}", share_sock.display()));
            q.args([
                "-device",
                &format!("vhost-user-fs-device,chardev=fs1,tag={SHARE_TAG}"),
            ]);
        }
        q.arg("-chardev")
            .arg(format!("socket,id=vs0,path={}", vhost_sock.display()));
        q.args(["-device", "vhost-user-vsock-device,chardev=vs0"]);
        for (i, nic) in l.nics.iter().enumerate() {
            q.arg("-netdev")
                .arg(format!("tap,id=net{i},fd={}", nic.tap.as_raw_fd()));
            let mut dev = format!("virtio-net-device,netdev=net{i},mac={}", mac_text(&nic.mac));
            if let Some(mtu) = nic.mtu {
                dev.push_str(&format!(",host_mtu={mtu}"));
            }
            q.arg("-device").arg(dev);
        }
        pass_taps(&mut q, l.nics);
        // The console comes to us on QEMU's stdout, and only its first CONSOLE_LIMIT bytes
        // are kept: the guest writes what it likes there, and the log is host memory.
        q.args(["-serial", "stdio"]);
        q.stdin(Stdio::null()).stdout(Stdio::piped());
        q.stderr(Stdio::from(std::fs::File::create(
            l.run_dir.join("qemu.log"),
        )?));
        let mut qemu = die_with_parent(&mut q)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let console = std::fs::File::create(l.run_dir.join("console.log"))?;
        if let Some(out) = qemu.stdout.take() {
            std::thread::spawn(move || keep_console(out, console));
        }
        children.push(qemu);
        Ok(children)
    }
}
