//! What the VMM's virtio-fs shares may do to the host's filesystem. The file server acts as
//! root on the host for a guest that may be entirely in an attacker's hands, so:
//! - it cannot make device nodes: CAP_MKNOD is dropped from the whole process (bounding set
//!   too), and a node the guest asks for fails with EPERM, as virtiofsd's `--modcaps=-mknod`
//!   makes it fail. Otherwise a guest could leave, say, a world-writable node of the host's
//!   disk in the shared directory, for any host user who can reach it;
//! - a share asked read-only (the bundle's `root.readonly`) is read-only on the host side,
//!   by a read-only bind mount in a mount namespace of the VMM's own, so that guest root
//!   remounting it read-write changes nothing.
//!
//! Both happen before the VMM starts a thread (unshare(CLONE_NEWNS) refuses a process whose
//! threads share its filesystem context).

use std::io;
use std::path::Path;

const CAP_MKNOD: u32 = 27;

/// The last OS error, saying what failed.
fn sys_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Drops CAP_MKNOD from every capability set of this process.
pub fn drop_mknod() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
    {
        return Err(sys_err("dropping CAP_MKNOD from the bounding set"));
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two Data (version 3), which `data` holds; header is ours.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(sys_err("reading the VMM's capabilities"));
    }
    let bit = 1u32 << CAP_MKNOD;
    data[0].effective &= !bit;
    data[0].permitted &= !bit;
    data[0].inheritable &= !bit;
    // SAFETY: capset reads the header and two Data of ours.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(sys_err("dropping CAP_MKNOD"));
    }
    Ok(())
}

/// Makes `dirs` read-only (and nosuid, nodev) for this process only: a mount namespace of
/// its own, a slave of the caller's, with each directory bind-mounted read-only onto itself.
pub fn read_only(dirs: &[&Path]) -> io::Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    // SAFETY: unshare with a flag; affects only this (still single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(sys_err("a mount namespace for the read-only share"));
    }
    let mount = |src: Option<&Path>, target: &Path, flags: libc::c_ulong| -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
        let target_c = c(target).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let src_c = src
            .map(c)
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: valid C strings (or null) for the call; no data argument.
        let r = unsafe {
            libc::mount(
                src_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                target_c.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(sys_err(&format!("mounting {}", target.display())));
        }
        Ok(())
    };
    // A slave, not private: what the launching process mounts in its share later (a pod's
    // containers joining its VM) must still reach this namespace.
    mount(None, Path::new("/"), libc::MS_REC | libc::MS_SLAVE)?;
    for dir in dirs {
        mount(Some(dir), dir, libc::MS_BIND | libc::MS_REC)?;
        mount(
            None,
            dir,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        )?;
    }
    Ok(())
}
