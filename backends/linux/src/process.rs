//! The process side of a container: rlimits, oomScoreAdj, user and groups, capabilities,
//! noNewPrivileges, environment, the executable, and which fds survive execve.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::fcntl::OFlag;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(t: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    use PosixRlimitType as R;
    match t {
        R::RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        R::RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        R::RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        R::RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        R::RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        R::RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        R::RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        R::RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        R::RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        R::RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        R::RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        R::RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        R::RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        R::RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        R::RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        R::RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<()> {
    for l in limits {
        let (res, name) = rlimit_resource(l.typ());
        let field = format!("process.rlimits[{name}]");
        if l.soft() > l.hard() {
            return Err(Error::config(
                field,
                format!("soft limit {} is above hard limit {}", l.soft(), l.hard()),
            ));
        }
        let lim = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        // SAFETY: setrlimit reads one valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let err = std::io::Error::last_os_error();
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit struct we own.
            unsafe { libc::getrlimit(res, &mut cur) };
            let reason = if err.raw_os_error() == Some(libc::EPERM) {
                format!(
                    "hard limit {} is above the current hard limit {} and raising it needs \
                     CAP_SYS_RESOURCE, which this runtime lacks",
                    l.hard(),
                    cur.rlim_max
                )
            } else {
                err.to_string()
            };
            return Err(Error::config(field, reason));
        }
    }
    Ok(())
}

pub fn set_oom_score_adj(adj: i32) -> Result<()> {
    std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
        let reason = if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            format!(
                "cannot set {adj}: lowering the OOM score needs CAP_SYS_RESOURCE, which this \
                 runtime lacks"
            )
        } else {
            e.to_string()
        };
        Error::config("process.oomScoreAdj", reason)
    })
}

fn to_caps(set: &Option<Capabilities>, field: &str) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap = Cap::from_str(&name)
            .map_err(|_| Error::config(field, format!("unknown capability {name}")))?;
        out.insert(cap);
    }
    Ok(out)
}

/// The five capability sets, checked against what this kernel knows.
pub struct CapabilityPlan {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    inheritable: CapsHashSet,
    permitted: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapabilityPlan {
    /// Drops, with a warning, capabilities this runtime does not have itself (not in its
    /// bounding set, e.g. CAP_SYS_RESOURCE here): no process can hand them on.
    pub fn limit_to_available(&mut self) {
        let Ok(have) = caps::read(None, CapSet::Bounding) else {
            return;
        };
        let mut dropped: Vec<String> = Vec::new();
        for set in [
            &mut self.bounding,
            &mut self.effective,
            &mut self.inheritable,
            &mut self.permitted,
            &mut self.ambient,
        ] {
            for cap in set.iter().filter(|c| !have.contains(c)) {
                dropped.push(cap.to_string());
            }
            set.retain(|c| have.contains(c));
        }
        dropped.sort();
        dropped.dedup();
        if !dropped.is_empty() {
            tracing::warn!(
                "process.capabilities: this runtime does not hold {} itself, so the container cannot get it",
                dropped.join(", ")
            );
        }
    }

    pub fn new(c: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = c else {
            return Ok(CapabilityPlan {
                bounding: CapsHashSet::new(),
                effective: CapsHashSet::new(),
                inheritable: CapsHashSet::new(),
                permitted: CapsHashSet::new(),
                ambient: CapsHashSet::new(),
            });
        };
        Ok(CapabilityPlan {
            bounding: to_caps(c.bounding(), "process.capabilities.bounding")?,
            effective: to_caps(c.effective(), "process.capabilities.effective")?,
            inheritable: to_caps(c.inheritable(), "process.capabilities.inheritable")?,
            permitted: to_caps(c.permitted(), "process.capabilities.permitted")?,
            ambient: to_caps(c.ambient(), "process.capabilities.ambient")?,
        })
    }

    pub fn add_all(&mut self, extra: &[String]) -> Result<()> {
        for name in extra {
            let full = if name.to_uppercase().starts_with("CAP_") {
                name.to_uppercase()
            } else {
                format!("CAP_{}", name.to_uppercase())
            };
            let cap = Cap::from_str(&full)
                .map_err(|_| Error::config("--cap", format!("unknown capability {name}")))?;
            // Never inheritable (see runc's CVE-2022-29162).
            for set in [&mut self.bounding, &mut self.effective, &mut self.permitted] {
                set.insert(cap);
            }
        }
        Ok(())
    }

    /// Drops the bounding set. Must run while we still have CAP_SETPCAP.
    pub fn apply_bounding(&self) -> Result<()> {
        let known: HashSet<Cap> =
            caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
        for cap in known {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                    Error::config(
                        "process.capabilities.bounding",
                        format!("dropping {cap}: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Sets effective, permitted, inheritable and ambient after the uid change.
    pub fn apply_rest(&self) -> Result<()> {
        let set = |which: CapSet, caps: &CapsHashSet, field: &str| {
            caps::set(None, which, caps).map_err(|e| Error::config(field, e.to_string()))
        };
        // Inheritable while CAP_SETPCAP is still effective; effective must stay a subset of
        // permitted at every step, so it narrows before permitted does.
        set(
            CapSet::Inheritable,
            &self.inheritable,
            "process.capabilities.inheritable",
        )?;
        if !self.effective.is_subset(&self.permitted) {
            return Err(Error::config(
                "process.capabilities.effective",
                "holds capabilities that are not in process.capabilities.permitted",
            ));
        }
        set(
            CapSet::Effective,
            &self.effective,
            "process.capabilities.effective",
        )?;
        set(
            CapSet::Permitted,
            &self.permitted,
            "process.capabilities.permitted",
        )?;
        let _ = caps::clear(None, CapSet::Ambient);
        for cap in &self.ambient {
            // The kernel refuses an ambient cap not in permitted and inheritable, which is
            // what `runc spec` bundles ask since CVE-2022-29162's fix (ambient without
            // inheritable); runc goes on silently, and so do we: the workload's stderr is the
            // user's, not the place for this.
            if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
                tracing::debug!("ambient capability {cap} not raised: {e}");
            }
        }
        Ok(())
    }
}

/// Switches to the process's user, keeping capabilities across the uid change so that
/// [`CapabilityPlan::apply_rest`] can set them afterwards.
pub fn set_user(uid: u32, gid: u32, additional_gids: &[u32]) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "PR_SET_KEEPCAPS".into());
    }
    let groups: Vec<Gid> = additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        // A user namespace whose setgroups is denied has no supplementary groups to set.
        Err(nix::Error::EPERM) if groups.is_empty() => {}
        Err(e) => {
            return Err(Error::config(
                "process.user.additionalGids",
                format!("setgroups: {e}"),
            ))
        }
    }
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g)
        .map_err(|e| Error::config("process.user.gid", format!("setgid {gid}: {e}")))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u)
        .map_err(|e| Error::config("process.user.uid", format!("setuid {uid}: {e}")))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "PR_SET_NO_NEW_PRIVS".into());
    }
    Ok(())
}

/// Stops other processes (the container's own, before it is fully set up) from opening
/// `/proc/<pid>/exe`, `/proc/<pid>/mem` and friends of this process, which until execve still
/// maps the host's strata binary. execve resets it for the workload.
pub fn set_non_dumpable() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "PR_SET_DUMPABLE".into());
    }
    Ok(())
}

/// While an unprivileged runtime writes this process's id maps (rootless): /proc/<pid>/uid_map
/// of a non-dumpable process belongs to root, whom a rootless runtime is not. Nothing of the
/// container runs yet, and the rest of /proc/<pid> is the user's own anyway.
pub fn with_dumpable<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !crate::rootless() {
        return f();
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "PR_SET_DUMPABLE".into());
    }
    let r = f();
    set_non_dumpable()?;
    r
}

/// The environment the workload gets: the spec's, plus HOME (from the container's
/// /etc/passwd, else "/") and PATH when missing, plus extra variables.
pub fn build_env(process: &Process, extra: &[String]) -> Vec<String> {
    let mut env = spec_env(process, extra);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

/// process.env with `extra` (LISTEN_FDS and the like) in place of variables of the same name.
pub fn spec_env(process: &Process, extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    for kv in extra {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

/// The home directory of `uid` in the container's /etc/passwd: read only if it is a
/// regular file of a sane size (a FIFO there would hang the exec, a huge file fill memory).
fn home_of(uid: u32) -> Option<String> {
    use std::io::Read;
    const MAX: u64 = 4 << 20;
    let fd = open_in_own_root(
        Path::new("/etc/passwd"),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
    )
    .ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > MAX {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// Finds the executable as execvp would, in the container's view (call after pivot_root).
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let not_found = || {
        Error::Child(format!(
            "exec: {arg0:?}: executable file not found in $PATH"
        ))
    };
    if arg0.is_empty() {
        return Err(Error::config("process.args", "args must not be empty"));
    }
    let check = |p: &Path| -> Result<()> {
        let meta = std::fs::metadata(p)
            .map_err(|e| Error::Child(format!("exec: {}: {e}", p.display())))?;
        use std::os::unix::fs::PermissionsExt;
        if meta.is_dir() {
            return Err(Error::Child(format!(
                "exec: {}: is a directory",
                p.display()
            )));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(Error::Child(format!(
                "exec: {}: permission denied",
                p.display()
            )));
        }
        Ok(())
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        check(&p)?;
        return Ok(p);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if check(&cand).is_ok() {
            return Ok(cand);
        }
    }
    Err(not_found())
}

/// Makes `cwd` the working directory, resolved inside the process's root (call after
/// pivot_root, chroot or setns): `..` stops at the root and no magic link of /proc is followed,
/// so no fd the runtime holds, and no /proc/<pid>/cwd or root of another process, can give
/// the workload a directory outside the container (CVE-2024-21626).
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    let fail = |e: nix::Error| Error::config("process.cwd", format!("{}: {e}", cwd.display()));
    if !cwd.is_absolute() {
        return Err(Error::config(
            "process.cwd",
            format!("{} is not an absolute path", cwd.display()),
        ));
    }
    let dir = open_in_own_root(cwd, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(fail)?;
    nix::unistd::fchdir(std::os::fd::AsFd::as_fd(&dir)).map_err(fail)
}

/// Opens `path` as the container sees it from the current root (call after pivot_root or
/// chroot), with `flags` and O_CLOEXEC: symlinks stay inside that root, and /proc magic
/// links (a container's `/etc/passwd -> /proc/self/fd/N`, reaching an fd the runtime
/// holds) are refused.
pub fn open_in_own_root(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    use std::path::Component;
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        rel = PathBuf::from(".");
    }
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(std::os::fd::AsFd::as_fd(&root), &rel, how)
}

/// Sets `linux.personality` (checked by [`personality_of`]).
pub fn set_personality(value: libc::c_ulong) -> Result<()> {
    // SAFETY: personality takes an integer and changes only this process's execution domain.
    if unsafe { libc::personality(value) } == -1 {
        return Err(std::io::Error::last_os_error()).ctx(|| "linux.personality".into());
    }
    Ok(())
}

/// The execution domain `linux.personality` asks for: LINUX or LINUX32, without flags (the
/// spec defines none that runtimes agree on, and runc refuses them too).
pub fn personality_of(p: &oci_spec::runtime::LinuxPersonality) -> Result<libc::c_ulong> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::config(
            "linux.personality.flags",
            "personality flags are not supported",
        ));
    }
    Ok(match p.domain() {
        D::PerLinux => 0x0000,
        D::PerLinux32 => 0x0008,
    })
}

/// Moves `fd` to a number at or above `min` (close-on-exec), closing the old one.
pub fn move_fd_above(fd: i32, min: i32) -> Result<i32> {
    if fd >= min {
        return Ok(fd);
    }
    // SAFETY: fcntl duplicates an fd we own; the old number is closed right after.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "F_DUPFD_CLOEXEC".into());
    }
    // SAFETY: fd is ours and no longer used under this number.
    unsafe { libc::close(fd) };
    Ok(new)
}

pub fn cstrings<I, S>(items: I, what: &str) -> Result<Vec<CString>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    items
        .into_iter()
        .map(|s| {
            CString::new(s.as_ref())
                .map_err(|_| Error::config(what, "contains a NUL byte".to_string()))
        })
        .collect()
}

/// execve; returns only on failure.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> Error {
    let run = || -> Result<std::convert::Infallible> {
        let p = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::config("process.args", "contains a NUL byte"))?;
        let a = cstrings(args, "process.args")?;
        let e = cstrings(env, "process.env")?;
        nix::unistd::execve(&p, &a, &e).ctx(|| format!("exec {}", path.display()))
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_on_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_executable("sh", &env).unwrap().ends_with("sh"));
        let err = find_executable("no-such-binary-xyz", &env).unwrap_err();
        assert!(
            err.to_string().contains("executable file not found"),
            "{err}"
        );
        assert!(find_executable("/etc", &env).is_err());
    }

    #[test]
    fn env_overrides_and_home() {
        let mut p = Process::default();
        p.set_env(Some(vec!["A=1".into(), "HOME=/root".into()]));
        let env = build_env(&p, &["A=2".into(), "B=3".into()]);
        assert_eq!(env, vec!["HOME=/root", "A=2", "B=3"]);
    }

    #[test]
    fn rejects_unknown_extra_capability() {
        let mut plan = CapabilityPlan::new(None).unwrap();
        assert!(plan.add_all(&["CAP_NOT_A_CAP".into()]).is_err());
        plan.add_all(&["net_admin".into()]).unwrap();
        assert!(plan.bounding.contains(&Cap::CAP_NET_ADMIN));
        assert!(plan.inheritable.is_empty());
    }
}
