//! `linux.seccomp` compiled to a BPF filter with libseccomp, kept compiled between runs
//! (`cache`), and loaded with seccomp(2).
//!
//! libseccomp rather than seccompiler: it has the NOTIFY action (SECCOMP_RET_USER_NOTIF,
//! which the spec's `listenerPath` and our sandbox backend need), resolves syscall names per
//! architecture including x32/i386, and implements every comparison the spec allows
//! (SCMP_CMP_MASKED_EQ too); seccompiler has no USER_NOTIF action.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F,
    LinuxSeccompOperator as Op,
};

use crate::error::{Error, Result};

pub mod cache;

const FIELD: &str = "linux.seccomp";

/// A filter ready to load, with what the runtime must do around it.
pub struct Filter {
    /// The program: sock_filter instructions, as libseccomp exports them.
    bpf: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* for seccomp(2).
    flags: libc::c_ulong,
    /// Some rule returns SECCOMP_RET_USER_NOTIF: the listener fd must go somewhere.
    pub has_notify: bool,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: String,
}

fn action(a: A, errno: Option<u32>, default_errno: Option<u32>) -> ScmpAction {
    let errno = errno.or(default_errno).unwrap_or(libc::EPERM as u32) as i32;
    match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(errno),
        A::ScmpActTrace => ScmpAction::Trace(errno as u16),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
        A::ScmpActAllow => ScmpAction::Allow,
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn err(what: impl std::fmt::Display) -> Error {
    Error::config(FIELD, what.to_string())
}

/// Compiles the spec's profile (or takes its program from the default cache); every problem is
/// reported here, before any process exists.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    compile_in(s, cache::default_dir().as_deref())
}

/// [`compile`], with the cache in `cache_dir` (none: compiled every time).
pub fn compile_in(s: &LinuxSeccomp, cache_dir: Option<&Path>) -> Result<Filter> {
    let default = s.default_action();
    let has_notify = default == A::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|sc| sc.action() == A::ScmpActNotify);
    if s.listener_path().is_some() && !has_notify {
        return Err(err("listenerPath is set but no rule uses SCMP_ACT_NOTIFY"));
    }
    if has_notify && s.listener_path().is_none() {
        return Err(err("SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath"));
    }
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            F::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => {
                return Err(err(
                    "flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs libseccomp 2.6; this \
                     host has an older one",
                ))
            }
        };
    }
    if has_notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // With both, the kernel can report a thread it could not sync only as an error.
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    let key = cache::key(s);
    let cache_dir = cache_dir.filter(|_| key.is_some());
    let key = key.unwrap_or_default();
    let cached = cache_dir.and_then(|d| cache::get(d, &key));
    let bpf = match cached {
        Some(bpf) => bpf,
        None => {
            let bpf = export(&build(s)?)?;
            if let Some(d) = cache_dir {
                cache::put(d, &key, &bpf);
            }
            bpf
        }
    };
    Ok(Filter {
        bpf,
        flags: flags as libc::c_ulong,
        has_notify,
        listener_path: s.listener_path().clone(),
        listener_metadata: s.listener_metadata().clone().unwrap_or_default(),
    })
}

/// The context's BPF program (libseccomp 2.5 exports only to an fd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    // SAFETY: memfd_create with a NUL-terminated name and flags; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"strata-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    let fd = nix::errno::Errno::result(fd).map_err(|e| err(format!("memfd_create: {e}")))?;
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| err(format!("exporting the filter: {e}")))?;
    let mut bpf = Vec::new();
    std::io::Seek::rewind(&mut file)
        .and_then(|()| std::io::Read::read_to_end(&mut file, &mut bpf))
        .map_err(|e| err(format!("reading the exported filter: {e}")))?;
    Ok(bpf)
}

/// SECCOMP_FILTER_FLAG_TSYNC_ESRCH (Linux 5.7), not in the libc crate.
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u64 = 1 << 4;

/// The profile in libseccomp's terms, checked rule by rule.
fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default_errno = s.default_errno_ret();
    let default = action(s.default_action(), None, default_errno);
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| err(format!("defaultAction: {e}")))?;
    // The kernel, not libseccomp, sets no_new_privs where the spec asks for it.
    ctx.set_ctl_nnp(false).map_err(err)?;
    // A binary tree of syscall numbers instead of a linear chain: long allowlists (the
    // sandbox's has ~250 entries) cost a few comparisons per syscall, not hundreds.
    ctx.set_ctl_optimize(2).map_err(err)?;
    for a in s.architectures().iter().flatten() {
        let a = arch(*a);
        // An architecture the filter already has (native) is not an error.
        if let Err(e) = ctx.add_arch(a) {
            if !ctx.is_arch_present(a).unwrap_or(false) {
                return Err(err(format!("architectures: {a:?}: {e}")));
            }
        }
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret(), default_errno);
        if act == default {
            // libseccomp refuses a rule that repeats the default action; it changes nothing.
            continue;
        }
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            if a.index() > 5 {
                return Err(err(format!(
                    "syscalls[{i}].args: index {} is above 5",
                    a.index()
                )));
            }
            let op = match a.op() {
                Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
                Op::ScmpCmpLt => ScmpCompareOp::Less,
                Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                Op::ScmpCmpEq => ScmpCompareOp::Equal,
                Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                Op::ScmpCmpGt => ScmpCompareOp::Greater,
                // The spec's value is the mask and valueTwo the value to compare with.
                Op::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(a.value()),
            };
            let datum = if a.op() == Op::ScmpCmpMaskedEq {
                a.value_two().unwrap_or(0)
            } else {
                a.value()
            };
            conds.push((
                a.index() as u32,
                ScmpArgCompare::new(a.index() as u32, op, datum),
            ));
        }
        for name in sc.names() {
            // Like runc: a syscall this libseccomp or kernel does not know is skipped.
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: unknown syscall {name:?} skipped");
                continue;
            };
            let res = if conds.is_empty() {
                ctx.add_rule(act, nr).map(|_| ())
            } else {
                add_conditional(&mut ctx, act, nr, &conds)
            };
            res.map_err(|e| err(format!("syscalls[{i}] ({name}): {e}")))?;
        }
    }
    Ok(ctx)
}

/// libseccomp takes one comparison per argument in a rule; conditions on the same argument
/// (e.g. two masked checks of flags) become separate rules, as runc adds them.
fn add_conditional(
    ctx: &mut ScmpFilterContext,
    act: ScmpAction,
    nr: ScmpSyscall,
    conds: &[(u32, ScmpArgCompare)],
) -> std::result::Result<(), libseccomp::error::SeccompError> {
    let mut seen = std::collections::HashSet::new();
    let unique = conds.iter().all(|(arg, _)| seen.insert(*arg));
    let all: Vec<ScmpArgCompare> = conds.iter().map(|(_, c)| *c).collect();
    if unique {
        ctx.add_rule_conditional(act, nr, &all)?;
    } else {
        for c in all {
            ctx.add_rule_conditional(act, nr, &[c])?;
        }
    }
    Ok(())
}

/// The filters a process gets, loaded in order: the bundle's own profile, then any the backend
/// adds (the sandbox's). The kernel runs every one on each syscall and the strictest action
/// wins, so adding a filter can only confine more.
pub fn compile_chain(profiles: &[&LinuxSeccomp]) -> Result<Vec<Filter>> {
    profiles.iter().map(|p| compile(p)).collect()
}

impl Filter {
    pub fn has_notify(&self) -> bool {
        self.has_notify
    }

    /// Installs the filter on the calling process; returns the notify fd if there is one.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        if self.bpf.len() / 8 > u16::MAX as usize {
            return Err(err(
                "the filter has more instructions than seccomp(2) takes",
            ));
        }
        let prog = libc::sock_fprog {
            len: (self.bpf.len() / 8) as u16,
            filter: self.bpf.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads `prog` and the `len` instructions it points at, all ours
        // and alive for the call (the kernel copies them).
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        let r =
            nix::errno::Errno::result(r).map_err(|e| err(format!("loading the filter: {e}")))?;
        if !self.has_notify {
            // With TSYNC, a thread that could not be synchronized is returned by its ID, and
            // nothing was installed.
            if r != 0 {
                return Err(err(format!(
                    "loading the filter: thread {r} could not be synchronized"
                )));
            }
            return Ok(None);
        }
        // SAFETY: with NEW_LISTENER, seccomp(2) returned a new fd that nothing else owns.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(r as i32) }))
    }
}

/// The `containerProcessState` message sent with the notify fd to `listenerPath`.
pub fn process_state(state_json: &[u8], pid: i32, metadata: &str) -> Vec<u8> {
    let state: serde_json::Value = serde_json::from_slice(state_json).unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": state.get("ociVersion").cloned().unwrap_or_default(),
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata,
        "state": state,
    }))
    .unwrap_or_default()
}

/// Connects to a Unix socket however long its path: one longer than sun_path holds (a state
/// dir named by a 64-character container ID under a deep root) is reached through its
/// directory's fd, as /proc/self/fd/N/NAME.
pub fn connect_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 100 {
        return std::os::unix::net::UnixStream::connect(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return std::os::unix::net::UnixStream::connect(path);
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    std::os::unix::net::UnixStream::connect(short)
}

/// Hands the notify fd to the agent at `listenerPath`, as the runtime spec describes.
pub fn send_to_listener(filter: &Filter, fd: &OwnedFd, state_json: &[u8], pid: i32) -> Result<()> {
    let Some(path) = &filter.listener_path else {
        return Ok(());
    };
    let sock =
        connect_unix(path).map_err(|e| err(format!("listenerPath {}: {e}", path.display())))?;
    let msg = process_state(state_json, pid, &filter.listener_metadata);
    crate::tty::send_fd(sock.as_raw_fd(), &msg, fd.as_raw_fd())
        .map_err(|e| err(format!("listenerPath {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_every_action_and_operator() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [
                  {"names": ["read", "write", "exit_group", "not_a_syscall_at_all"], "action": "SCMP_ACT_ALLOW"},
                  {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"},
                  {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
                  {"names": ["gettid"], "action": "SCMP_ACT_LOG"},
                  {"names": ["uname"], "action": "SCMP_ACT_TRACE", "errnoRet": 1},
                  {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                     {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                     {"index": 1, "value": 1, "op": "SCMP_CMP_NE"},
                     {"index": 2, "value": 2, "op": "SCMP_CMP_LT"},
                     {"index": 3, "value": 3, "op": "SCMP_CMP_LE"},
                     {"index": 4, "value": 4, "op": "SCMP_CMP_GE"},
                     {"index": 5, "value": 5, "op": "SCMP_CMP_GT"}]},
                  {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
                     {"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                  {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
                ]}"#,
        );
        let f = compile(&p).unwrap();
        assert!(!f.has_notify);
    }

    #[test]
    fn notify_needs_a_listener_and_the_other_way_round() {
        let e = compile(&profile(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#))
            .err()
            .unwrap();
        assert!(e.to_string().contains("listenerPath"), "{e}");
        let e = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock"}"#,
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
        let f = compile(&profile(r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock", "listenerMetadata": "m", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#)).unwrap();
        assert!(f.has_notify);
        assert_eq!(f.listener_metadata, "m");
    }

    #[test]
    fn unknown_actions_and_ops_are_rejected_at_parse() {
        assert!(
            serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction": "SCMP_ACT_EXPLODE"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SIDEWAYS"}]}]}"#).is_err());
    }

    #[test]
    fn process_state_message() {
        let st = br#"{"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42, "bundle": "/b"}"#;
        let v: serde_json::Value = serde_json::from_slice(&process_state(st, 42, "meta")).unwrap();
        assert_eq!(v["fds"][0], "seccompFd");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["metadata"], "meta");
        assert_eq!(v["state"]["id"], "c1");
    }
}
