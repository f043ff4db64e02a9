//! Compiled filters kept between runs. Compiling a profile with libseccomp (the rules, then
//! the BPF program with its binary tree of syscall numbers) takes about a millisecond per
//! `create` and `exec` here, for a profile that is almost always the same: Docker's default,
//! the sandbox's. The program is kept under the SHA-256 of everything that decides it (the
//! profile as JSON, libseccomp's version and API level, this format), so a hit is the
//! program libseccomp would make.
//!
//! The cache is trusted only as far as its owner: the directory and each file must belong to
//! the runtime's effective user and be writable by no one else, and files are opened without
//! following symlinks; anything else is ignored and the profile compiled afresh. A file is
//! written whole under a temporary name and renamed, so a reader never sees half of one.
//! Root's cache lives on /run (cleared at boot, when a new kernel may change what libseccomp
//! emits), a rootless user's under `$XDG_RUNTIME_DIR`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What the kernel takes at most in one classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// A sock_filter: code (u16), jt, jf (u8), k (u32).
const INSN: usize = 8;

/// The default cache directory for this process, if there is one to use.
pub fn default_dir() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/run/strata-seccomp"));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("strata-seccomp"))
}

/// Entries at most: a hostile config.json may name a new profile each time, and /run is
/// memory. Past this, programs are compiled every time instead of kept.
const MAX_ENTRIES: usize = 512;

/// The key of a profile's program: its JSON (without what only the runtime reads: the
/// listener's path and metadata, which differ per container) and everything else that
/// decides the program: strata's translation (its source), libseccomp's version, API level
/// and the very library file (a distribution may patch its syscall tables in place).
pub fn key(profile: &oci_spec::runtime::LinuxSeccomp) -> Option<String> {
    let mut p = profile.clone();
    p.set_listener_path(None);
    p.set_listener_metadata(None);
    // A profile that cannot be written out has no key, and is compiled every time.
    let json = serde_json::to_vec(&p).ok()?;
    let v = libseccomp::ScmpVersion::current().ok();
    let api = libseccomp::get_api();
    let mut h = Sha256::new();
    h.update(b"strata seccomp cache v2\0");
    h.update(include_bytes!("mod.rs"));
    h.update(include_bytes!("cache.rs"));
    h.update(format!("{v:?} api {api} {} {}\0", std::env::consts::ARCH, library()).as_bytes());
    h.update(&json);
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The libseccomp file this process runs with, as device, inode, size and change time.
fn library() -> String {
    // SAFETY: dladdr reads the address of a function of ours and fills `info`, a plain
    // struct on our stack; dli_fname, if set, points at the loader's NUL-terminated name.
    let name = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let sym = libseccomp_sys::seccomp_init as *const libc::c_void;
        if libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    };
    match std::fs::metadata(&name) {
        Ok(m) => format!("{name} {} {} {} {}", m.dev(), m.ino(), m.size(), m.ctime()),
        Err(_) => name,
    }
}

/// Whether a file or directory is the effective user's alone to write.
fn trusted(md: &std::fs::Metadata) -> bool {
    md.uid() == nix::unistd::geteuid().as_raw() && md.mode() & 0o022 == 0
}

/// The cache directory, made if missing (mode 0700), if it can be trusted.
fn open_dir(dir: &Path) -> Option<OwnedFd> {
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !trusted(&file.metadata().ok()?) {
        tracing::debug!(
            "seccomp cache {}: not the runtime's alone; unused",
            dir.display()
        );
        return None;
    }
    Some(OwnedFd::from(file))
}

/// The program kept under `key` in `dir`, if there is a sound one.
pub fn get(dir: &Path, key: &str) -> Option<Vec<u8>> {
    let d = open_dir(dir)?;
    let fd = nix::fcntl::openat(
        &d,
        key,
        // Not blocking on a FIFO put in the program's place.
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_NONBLOCK
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut file = std::fs::File::from(fd);
    let md = file.metadata().ok()?;
    let len = md.len() as usize;
    if !md.is_file()
        || !trusted(&md)
        || len == 0
        || !len.is_multiple_of(INSN)
        || len > MAX_INSNS * INSN
    {
        return None;
    }
    let mut bpf = Vec::with_capacity(len);
    std::io::Read::read_to_end(&mut file, &mut bpf).ok()?;
    (bpf.len() == len).then_some(bpf)
}

/// Keeps `bpf` under `key` in `dir`; a cache that cannot be written is only slower.
pub fn put(dir: &Path, key: &str, bpf: &[u8]) {
    // A program the kernel would refuse is not kept (loading it fails anyway).
    if bpf.is_empty() || bpf.len() > MAX_INSNS * INSN {
        return;
    }
    let Some(d) = open_dir(dir) else { return };
    let full = std::fs::read_dir(dir).map_or(true, |rd| rd.count() >= MAX_ENTRIES);
    if full {
        tracing::debug!("seccomp cache {}: full", dir.display());
        return;
    }
    let tmp = format!(".{key}.{}", std::process::id());
    let written = nix::fcntl::openat(
        &d,
        tmp.as_str(),
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(std::io::Error::from)
    .and_then(|fd| std::fs::File::from(fd).write_all(bpf))
    .and_then(|()| nix::fcntl::renameat(&d, tmp.as_str(), &d, key).map_err(std::io::Error::from));
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(&d, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        tracing::debug!("seccomp cache {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::seccomp::compile_in;

    fn profile() -> oci_spec::runtime::LinuxSeccomp {
        serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-seccomp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_hit_is_the_program_libseccomp_makes() {
        let dir = scratch("hit");
        let fresh = compile_in(&profile(), None).unwrap();
        let first = compile_in(&profile(), Some(&dir)).unwrap();
        let key = key(&profile()).unwrap();
        assert_eq!(get(&dir, &key).as_deref(), Some(&fresh.bpf[..]));
        assert_eq!(first.bpf, fresh.bpf);
        // The next compile takes the file: a marker instruction written there comes back.
        let mut marked = fresh.bpf.clone();
        marked[..8].copy_from_slice(&[6, 0, 0, 0, 0, 0, 0xff, 0x7f]);
        std::fs::write(dir.join(&key), &marked).unwrap();
        assert_eq!(compile_in(&profile(), Some(&dir)).unwrap().bpf, marked);
        // Another profile has another key; the listener's path and metadata, which change
        // nothing in the program, do not count.
        let mut other = profile();
        other.set_default_errno_ret(Some(1));
        assert_ne!(Some(&key), super::key(&other).as_ref());
        let mut listener = profile();
        listener.set_listener_path(Some("/run/x/supervisor.sock".into()));
        listener.set_listener_metadata(Some("m".into()));
        assert_eq!(Some(&key), super::key(&listener).as_ref());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_names_the_library_file() {
        // Debian links libseccomp dynamically; its file identity is part of every key.
        let lib = library();
        assert!(
            lib.contains("libseccomp") && lib.split(' ').count() == 5,
            "{lib}"
        );
    }

    #[test]
    fn unsound_or_untrusted_files_are_not_used() {
        let dir = scratch("unsound");
        let fresh = compile_in(&profile(), Some(&dir)).unwrap();
        let key = key(&profile()).unwrap();
        let file = dir.join(&key);
        // Not a whole number of instructions.
        std::fs::write(&file, &fresh.bpf[..fresh.bpf.len() - 3]).unwrap();
        assert_eq!(get(&dir, &key), None);
        assert_eq!(compile_in(&profile(), Some(&dir)).unwrap().bpf, fresh.bpf);
        // Writable by others.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(get(&dir, &key), None);
        // A symlink to a sound program elsewhere.
        std::fs::remove_file(&file).unwrap();
        let elsewhere = dir.with_extension("elsewhere");
        std::fs::write(&elsewhere, &fresh.bpf).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert_eq!(get(&dir, &key), None);
        // A FIFO in the program's place is not waited on.
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(get(&dir, &key), None);
        // A directory others may write to.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, &fresh.bpf).unwrap();
        assert!(get(&dir, &key).is_some());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(get(&dir, &key), None);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&elsewhere).unwrap();
    }
}
