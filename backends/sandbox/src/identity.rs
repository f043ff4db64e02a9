//! Whose identity the supervisor's thread acts with (the callers' identities are read and
//! cached in `creds`).
//!
//! The supervisor performs each call with the caller's filesystem identity (fsuid/fsgid,
//! groups, effective capabilities, umask), so its own root privileges never lend the
//! container access it does not have. Switching identity costs a credential commit per
//! part, and reading a caller's identity from /proc costs more than the call itself, so:
//! - the identity applied stays applied after a call ([`Identity::apply`] changes only the
//!   parts that differ), and the supervisor takes its full privilege back only for its own
//!   business, and only where the caller's identity does not suffice ([`Identity::privileged`]);
//! - callers' identities are cached per thread (see `creds`).

use nix::errno::Errno;

use crate::creds::Creds;

type R<T> = std::result::Result<T, Errno>;

/// Makes the calling thread's real and effective IDs the caller's (its saved IDs stay the
/// supervisor's root), with raw per-thread syscalls: Unix socket peers see them in
/// SO_PEERCRED and SCM_CREDENTIALS when the supervisor connects or sends for the caller.
/// Its filesystem IDs and effective capabilities end up the caller's too; a thread that goes
/// on serving returns to root afterwards (see [`Identity::with_caller_ids`]).
pub(crate) fn set_caller_ids(c: &Creds) -> R<()> {
    let keep = u32::MAX;
    // Changing IDs takes CAP_SETUID and CAP_SETGID, which the caller's identity, applied to
    // this thread, often lacks (a caller that is not root has none): the supervisor's own
    // capabilities for the changes, the caller's for the call.
    set_effective_caps(None)?;
    // SAFETY: integer arguments; the gid first, while the thread is still root.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, c.gid, c.egid, keep) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, c.uid, c.euid, keep) })?;
    // Leaving euid 0 emptied the effective set; the saved uid 0 kept the permitted one.
    set_effective_caps(None)?;
    // The IDs moved the filesystem IDs to the effective ones; the caller's may differ.
    // SAFETY: integer arguments; each setfs* call with -1 only reports the value in effect.
    let (fsgid, fsuid) = unsafe {
        libc::setfsgid(c.fsgid);
        libc::setfsuid(c.fsuid);
        (
            libc::setfsgid(u32::MAX) as u32,
            libc::setfsuid(u32::MAX) as u32,
        )
    };
    if (fsgid, fsuid) != (c.fsgid, c.fsuid) {
        return Err(Errno::EPERM);
    }
    set_effective_caps(Some(c.cap_eff))
}

/// Sets the calling thread's effective capabilities to `effective` (all of its permitted
/// ones for None), within its permitted set, which stays as it is.
fn set_effective_caps(effective: Option<u64>) -> R<()> {
    let mut data = [CapData::default(); 2];
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capget writes two CapData (v3), which `data` holds.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    let permitted = data[0].permitted as u64 | (data[1].permitted as u64) << 32;
    let e = effective.unwrap_or(permitted) & permitted;
    data[0].effective = e as u32;
    data[1].effective = (e >> 32) as u32;
    // SAFETY: capset reads the header and two CapData (v3), all ours.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    Ok(())
}

/// Undoes [`set_caller_ids`]: the saved IDs are root, so the thread may return to them.
fn set_root_ids() -> R<()> {
    let keep = u32::MAX;
    // SAFETY: integer arguments; the uid first (the saved uid is 0), then the gid as root.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, keep) })?;
    // SAFETY: as above.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, keep) })?;
    Ok(())
}

/// The filesystem identity a thread acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    /// Effective capabilities (a bit per capability), within the supervisor's permitted set.
    pub caps: u64,
    pub umask: u32,
}

impl Target {
    /// The caller's filesystem identity, or with `real` its real IDs (access(2) without
    /// AT_EACCESS checks those).
    pub fn of(c: &Creds, real: bool) -> Target {
        let (fsuid, fsgid) = if real {
            (c.uid, c.gid)
        } else {
            (c.fsuid, c.fsgid)
        };
        Target {
            fsuid,
            fsgid,
            groups: c.groups.clone(),
            caps: c.cap_eff,
            umask: c.umask,
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The supervisor thread's identity, applied lazily.
pub(crate) struct Identity {
    own: Target,
    permitted: u64,
    inheritable: u64,
    applied: Target,
}

impl Identity {
    /// The calling thread's identity as it is now (the supervisor's own: root, with its
    /// permitted capabilities).
    pub fn current() -> R<Identity> {
        let mut data = [CapData::default(); 2];
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        // SAFETY: capget writes two CapData (v3), which `data` holds.
        Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
        let join = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        let permitted = join(data[0].permitted, data[1].permitted);
        // SAFETY: umask cannot fail; set back at once.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        let own = Target {
            // SAFETY: the setfs* calls with -1 only report the current value.
            fsuid: unsafe { libc::setfsuid(u32::MAX) } as u32,
            // SAFETY: as above.
            fsgid: unsafe { libc::setfsgid(u32::MAX) } as u32,
            groups: Vec::new(),
            caps: join(data[0].effective, data[1].effective),
            umask,
        };
        Ok(Identity {
            applied: own.clone(),
            own: Target {
                caps: permitted,
                ..own
            },
            permitted,
            inheritable: join(data[0].inheritable, data[1].inheritable),
        })
    }

    /// Makes `t` the thread's identity, changing only what differs from the applied one.
    /// Groups and fs IDs change under the supervisor's own capabilities (setgroups needs
    /// CAP_SETGID, setfs[ug]id CAP_SETUID/CAP_SETGID, which the caller's set mostly lacks);
    /// the target's capabilities are set last, as the kernel may have dropped some with the
    /// fsuid.
    pub fn apply(&mut self, t: &Target) -> R<()> {
        let caps = t.caps & self.permitted;
        let ids_change = self.applied.groups != t.groups
            || self.applied.fsgid != t.fsgid
            || self.applied.fsuid != t.fsuid;
        if ids_change {
            if self.applied.caps != self.permitted {
                self.set_caps(self.permitted)?;
            }
            if self.applied.groups != t.groups {
                // The raw syscall, per thread: glibc's setgroups would change every thread.
                // SAFETY: reads `len` gids from the vector, which is ours.
                Errno::result(unsafe {
                    libc::syscall(libc::SYS_setgroups, t.groups.len(), t.groups.as_ptr())
                })?;
                self.applied.groups = t.groups.clone();
            }
            if self.applied.fsgid != t.fsgid {
                // SAFETY: integer argument; setfsgid reports failure only through a second call.
                unsafe { libc::setfsgid(t.fsgid) };
                // SAFETY: as above; -1 changes nothing and reports the value now in effect.
                if unsafe { libc::setfsgid(u32::MAX) } as u32 != t.fsgid {
                    return Err(Errno::EPERM);
                }
                self.applied.fsgid = t.fsgid;
            }
            if self.applied.fsuid != t.fsuid {
                // SAFETY: as for setfsgid.
                unsafe { libc::setfsuid(t.fsuid) };
                // SAFETY: as above.
                if unsafe { libc::setfsuid(u32::MAX) } as u32 != t.fsuid {
                    return Err(Errno::EPERM);
                }
                self.applied.fsuid = t.fsuid;
            }
            // What the kernel did to the effective set with the fsuid is not tracked.
            self.applied.caps = u64::MAX;
        }
        if self.applied.caps != caps {
            self.set_caps(caps)?;
        }
        if self.applied.umask != t.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(t.umask as libc::mode_t) };
            self.applied.umask = t.umask;
        }
        Ok(())
    }

    /// Sets the thread's effective capabilities to `caps` (within the permitted set).
    fn set_caps(&mut self, caps: u64) -> R<()> {
        let split = |v: u64| (v as u32, (v >> 32) as u32);
        let (e0, e1) = split(caps);
        let (p0, p1) = split(self.permitted);
        let (i0, i1) = split(self.inheritable);
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: e0,
                permitted: p0,
                inheritable: i0,
            },
            CapData {
                effective: e1,
                permitted: p1,
                inheritable: i1,
            },
        ];
        // SAFETY: capset reads the header and two CapData (v3), all ours.
        Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
        self.applied.caps = caps;
        Ok(())
    }

    /// Runs `f` with the caller's real and effective IDs too (see [`set_caller_ids`]), then
    /// returns to root and forgets what was applied, so that the next call applies it all.
    pub fn with_caller_ids<T>(&mut self, c: &Creds, f: impl FnOnce() -> T) -> R<T> {
        set_caller_ids(c)?;
        let r = f();
        set_root_ids()?;
        // fsuid, fsgid and the effective capabilities moved with the IDs: nothing is known.
        self.applied.fsuid = u32::MAX;
        self.applied.fsgid = u32::MAX;
        self.applied.caps = u64::MAX;
        Ok(r)
    }

    /// Runs the supervisor's own step `f` (reaching into the caller's /proc entry or memory)
    /// first with the identity applied, and only if that is refused with the supervisor's
    /// full privilege, which is then given up again.
    pub fn privileged<T>(&mut self, f: impl Fn() -> R<T>) -> R<T> {
        match f() {
            Err(Errno::EPERM | Errno::EACCES) if self.applied != self.own => {
                let before = self.applied.clone();
                let own = self.own.clone();
                self.apply(&own)?;
                let r = f();
                self.apply(&before)?;
                r
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsh\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t812\n\
        Ngid:\t0\nPid:\t815\nPPid:\t1\nUid:\t1000\t1001\t1002\t1003\n\
        Gid:\t2000\t2001\t2002\t2003\nGroups:\t10 20 \nNStgid:\t812\t1\nNSpid:\t815\t4\n\
        CapEff:\t00000000a80425fb\n";

    #[test]
    fn parses_the_fields_a_filesystem_check_needs() {
        let c = Creds::parse(STATUS, 815).unwrap();
        assert_eq!(
            c,
            Creds {
                uid: 1000,
                euid: 1001,
                fsuid: 1003,
                gid: 2000,
                egid: 2001,
                fsgid: 2003,
                groups: vec![10, 20],
                cap_eff: 0xa80425fb,
                umask: 0o027,
                ns_pid: 4,
                ns_tgid: 1,
                tgid: 812,
            }
        );
        assert_eq!(Creds::parse("Name:\tx\n", 1), Err(Errno::ESRCH));
        let real = Target::of(&c, true);
        assert_eq!((real.fsuid, real.fsgid), (1000, 2000));
    }
}
