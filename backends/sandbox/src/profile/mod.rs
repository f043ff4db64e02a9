//! The sandbox's seccomp profile: deny by default, an allowlist much tighter than Docker's,
//! the file and socket syscalls trapped to the supervisor, and the dangerous ones refused
//! with EPERM. Built as an OCI `linux.seccomp` object so strata-linux loads it like any
//! bundle profile, after the bundle's own.
//!
//! The files: `syscalls` the syscall lists by answer, `ioctls` the second filter (metadata
//! ioctls), `rule` one rule of either; here, the profile built from the lists, with the rules
//! that look at arguments (clone flags, socket families, sendto, listen, memfd_create).

use std::path::Path;

use oci_spec::runtime::LinuxSeccomp;

use crate::policy::{Network, Policy};

mod ioctls;
mod rule;
mod syscalls;

pub use ioctls::fd_metadata_profile;
use rule::rule;
use syscalls::CLONE_NAMESPACES;
pub use syscalls::{ALLOWED, CREDENTIAL_CHANGES, FORBIDDEN, TRAPPED, XATTR_WRITES};

/// Socket families a policy lets the container create: Unix sockets only without a
/// network, else also IP and netlink (which `ip` and glibc's interface listing use). Others
/// (packet, vsock, crypto, ...) reach kernel surface a container has no use for.
fn socket_families(policy: &Policy) -> &'static [i32] {
    match policy.network {
        Network::None => &[libc::AF_UNIX],
        _ => &[
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ],
    }
}

/// Whether this kernel has vm.memfd_noexec (Linux 6.3), with which the sandbox makes every
/// memfd of the container non-executable: memfds live on no path, so Landlock's exec rules
/// do not reach them. Without it the sandbox refuses memfd_create altogether.
pub fn memfd_noexec_supported() -> bool {
    std::path::Path::new("/proc/sys/vm/memfd_noexec").exists()
}

/// The profile for a container under `policy`; `listener` is the supervisor's socket
/// (`listenerPath`).
pub fn profile(listener: &Path, policy: &Policy) -> LinuxSeccomp {
    // Under a `bind` list, listen(2) on a socket nobody bound binds it itself, to every
    // address and a port of the kernel's choosing, which no bind hook sees: the supervisor
    // holds that to the list (and lets a bound socket listen).
    let trap_listen = policy.bind.is_some();
    let allowed: Vec<&str> = ALLOWED
        .iter()
        .copied()
        .filter(|s| !(trap_listen && *s == "listen"))
        .collect();
    // Under the built-in policy the kernel decides every file call (see
    // `Policy::kernel_decides_files`): the path calls and the credential changes (trapped
    // only for the supervisor's identity cache) run as made. connect and bind stay with the
    // supervisor unless any address may be reached: a Unix path there is its to check. execve
    // stays too: the supervisor holds the first one until the kernel's socket programs are
    // attached, so no code of the container's own runs before the network policy holds.
    let direct = policy.kernel_decides_files;
    let (trapped, passed): (Vec<&str>, Vec<&str>) = TRAPPED.iter().partition(|s| {
        !direct
            || matches!(**s, "execve" | "execveat")
            || (matches!(**s, "connect" | "bind") && policy.network != Network::Any)
    });
    // The supervisor performs a trapped connect or bind as the caller (a Unix peer sees its
    // IDs): its cache of the caller's identity must hear of every change while it does.
    let performs_sockets = !direct || policy.network != Network::Any;
    let (trapped_creds, passed_creds): (Vec<&str>, Vec<&str>) =
        CREDENTIAL_CHANGES.iter().partition(|_| performs_sockets);
    let mut syscalls: Vec<_> = [
        (&trapped, "SCMP_ACT_NOTIFY"),
        (&trapped_creds, "SCMP_ACT_NOTIFY"),
        (&passed, "SCMP_ACT_ALLOW"),
        (&passed_creds, "SCMP_ACT_ALLOW"),
    ]
    .into_iter()
    .filter(|(names, _)| !names.is_empty())
    .map(|(names, action)| rule(names, action, None, &[]))
    .collect();
    syscalls.extend([
        rule(&allowed, "SCMP_ACT_ALLOW", None, &[]),
        rule(FORBIDDEN, "SCMP_ACT_ERRNO", Some(libc::EPERM as u32), &[]),
        rule(
            XATTR_WRITES,
            "SCMP_ACT_ERRNO",
            Some(libc::EOPNOTSUPP as u32),
            &[],
        ),
    ]);
    if trap_listen {
        syscalls.push(rule(&["listen"], "SCMP_ACT_NOTIFY", None, &[]));
    }
    if memfd_noexec_supported() {
        syscalls.push(rule(&["memfd_create"], "SCMP_ACT_ALLOW", None, &[]));
    }
    // clone(2) without namespace flags; with any, EPERM (as unshare). clone3(2) carries its
    // flags in memory the filter cannot read: it is left to the default ENOSYS, and libc
    // falls back to clone(2).
    let all_ns = CLONE_NAMESPACES.iter().fold(0, |a, f| a | f);
    syscalls.push(rule(
        &["clone"],
        "SCMP_ACT_ALLOW",
        None,
        &[(0, "SCMP_CMP_MASKED_EQ", all_ns, 0)],
    ));
    for flag in CLONE_NAMESPACES {
        syscalls.push(rule(
            &["clone"],
            "SCMP_ACT_ERRNO",
            Some(libc::EPERM as u32),
            &[(0, "SCMP_CMP_MASKED_EQ", *flag, *flag)],
        ));
    }
    // socket(2): decided in the filter by its family argument, at no cost to the call. The
    // other families get EAFNOSUPPORT, rule by rule: libseccomp lets an unconditional rule
    // override the conditional ones on the same syscall, so the refusal is spelled out as
    // every other value.
    let families = socket_families(policy);
    let refused = Some(libc::EAFNOSUPPORT as u32);
    let top = families.iter().copied().max().unwrap_or(0);
    // Where the kernel's socket hooks hold IP traffic to the policy (see `netfilter`), an IP
    // socket may only be TCP or UDP: raw and ICMP sockets choose their own addresses and
    // skip the connect and bind hooks. Other types and protocols get the default ENOSYS.
    let ip_types: &[(u64, &[u64])] = &[
        (libc::SOCK_STREAM as u64, &[0, libc::IPPROTO_TCP as u64]),
        (libc::SOCK_DGRAM as u64, &[0, libc::IPPROTO_UDP as u64]),
    ];
    let narrow_ip = crate::netfilter::needed(policy);
    for family in 0..=top {
        let ip = family == libc::AF_INET || family == libc::AF_INET6;
        if !families.contains(&family) {
            syscalls.push(rule(
                &["socket"],
                "SCMP_ACT_ERRNO",
                refused,
                &[(0, "SCMP_CMP_EQ", family as u64, 0)],
            ));
        } else if family == libc::AF_NETLINK {
            // Routing only (what `ip` and getifaddrs use): the other netlink families reach
            // the audit log, uevents, every socket of a shared network namespace, netfilter.
            syscalls.push(rule(
                &["socket"],
                "SCMP_ACT_ALLOW",
                None,
                &[
                    (0, "SCMP_CMP_EQ", family as u64, 0),
                    (2, "SCMP_CMP_EQ", libc::NETLINK_ROUTE as u64, 0),
                ],
            ));
        } else if ip && narrow_ip {
            for (typ, protocols) in ip_types {
                for proto in *protocols {
                    syscalls.push(rule(
                        &["socket"],
                        "SCMP_ACT_ALLOW",
                        None,
                        &[
                            (0, "SCMP_CMP_EQ", family as u64, 0),
                            (1, "SCMP_CMP_MASKED_EQ", 0xf, *typ),
                            (2, "SCMP_CMP_EQ", *proto, 0),
                        ],
                    ));
                }
            }
        } else {
            syscalls.push(rule(
                &["socket"],
                "SCMP_ACT_ALLOW",
                None,
                &[(0, "SCMP_CMP_EQ", family as u64, 0)],
            ));
        }
    }
    syscalls.push(rule(
        &["socket"],
        "SCMP_ACT_ERRNO",
        refused,
        &[(0, "SCMP_CMP_GT", top as u64, 0)],
    ));
    // sendto(2) with a destination (argument 4) is a connect: checked by the supervisor;
    // without one (send(2) on a connected socket) it goes straight through.
    syscalls.push(rule(
        &["sendto"],
        "SCMP_ACT_ALLOW",
        None,
        &[(4, "SCMP_CMP_EQ", 0, 0)],
    ));
    syscalls.push(rule(
        &["sendto"],
        "SCMP_ACT_NOTIFY",
        None,
        &[(4, "SCMP_CMP_NE", 0, 0)],
    ));
    let value = serde_json::json!({
        // Unknown syscalls say "not implemented", so that programs probing for new ones
        // (clone3, statx, ...) fall back as they would on an older kernel.
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": listener,
        "listenerMetadata": "strata-sandbox",
        "syscalls": syscalls,
    });
    serde_json::from_value(value).expect("the sandbox profile is a valid LinuxSeccomp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_disjoint_and_compile() {
        for t in TRAPPED.iter().chain(CREDENTIAL_CHANGES) {
            assert!(!ALLOWED.contains(t) && !FORBIDDEN.contains(t), "{t}");
        }
        for t in CREDENTIAL_CHANGES {
            assert!(!TRAPPED.contains(t), "{t}");
        }
        for f in FORBIDDEN {
            assert!(!ALLOWED.contains(f), "{f}");
        }
        let p = profile(
            Path::new("/run/strata/x/supervisor.sock"),
            &Policy::builtin(),
        );
        let f = strata_linux::seccomp::compile(&p).unwrap();
        assert!(f.has_notify());
    }

    /// listen(2) binds a socket nobody bound: trapped where a `bind` list must see that,
    /// allowed elsewhere.
    #[test]
    fn listen_is_trapped_only_under_a_bind_list() {
        let actions = |text: &str| -> Vec<String> {
            let policy = Policy::parse(text, Path::new("p.toml")).unwrap();
            let v = serde_json::to_value(profile(Path::new("/s"), &policy)).unwrap();
            v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "listen"))
                .map(|r| r["action"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(actions("network = \"any\""), ["SCMP_ACT_ALLOW"]);
        assert_eq!(
            actions("network = \"any\"\nbind = [\"127.0.0.1:80\"]"),
            ["SCMP_ACT_NOTIFY"]
        );
    }

    /// Under the built-in policy (it follows the bundle) the kernel decides the file calls:
    /// none is trapped but execve, the sync point for the kernel's socket programs; connect,
    /// bind and the credential changes stay trapped unless any address may be reached. A
    /// named policy traps them all.
    #[test]
    fn the_builtin_policy_traps_no_file_call() {
        let action = |policy: &Policy, name: &str| -> String {
            let v = serde_json::to_value(profile(Path::new("/s"), policy)).unwrap();
            let acts: Vec<String> = v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
                .map(|r| r["action"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(acts.len(), 1, "{name}: {acts:?}");
            acts[0].clone()
        };
        let pod = Policy::for_bundle(&crate::policy::Grants {
            writable_root: true,
            writable_mounts: vec![],
            own_network: true,
        });
        for name in [
            "openat",
            "newfstatat",
            "mkdirat",
            "unlinkat",
            "fchmod",
            "connect",
            "setuid",
        ] {
            assert_eq!(action(&pod, name), "SCMP_ACT_ALLOW", "{name}");
        }
        assert_eq!(action(&pod, "execve"), "SCMP_ACT_NOTIFY");
        let host_net = Policy::for_bundle(&crate::policy::Grants::default());
        assert_eq!(action(&host_net, "openat"), "SCMP_ACT_ALLOW");
        for name in ["connect", "bind", "setuid", "execve"] {
            assert_eq!(action(&host_net, name), "SCMP_ACT_NOTIFY", "{name}");
        }
        let named = Policy::parse(
            "read_only = [\"/\"]\nnetwork = \"any\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        for name in ["openat", "newfstatat", "connect", "setuid", "execve"] {
            assert_eq!(action(&named, name), "SCMP_ACT_NOTIFY", "{name}");
        }
        // Only the built-in policy says the kernel decides; a file cannot.
        assert!(Policy::parse("kernel_decides_files = true\n", Path::new("p.toml")).is_err());
    }

    /// Loads the built-in profile in a forked child and reports what a few calls return
    /// (0 for success, else the errno), over a pipe. Trapped calls are not made: with the
    /// listener closed they would only fail with ENOSYS.
    fn under_the_profile(calls: &[fn() -> i64]) -> Vec<i64> {
        let p = profile(
            Path::new("/nonexistent/supervisor.sock"),
            &Policy::builtin(),
        );
        let filter = strata_linux::seccomp::compile(&p).unwrap();
        let ioctls = strata_linux::seccomp::compile(&fd_metadata_profile()).unwrap();
        // The child's stdin: a regular file (unlinked at once), on which the kernel itself
        // would answer an inode ioctl with something else than ENOTTY.
        let scratch = std::env::temp_dir().join(format!(
            "strata-profile-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::create(&scratch).unwrap();
        std::fs::remove_file(&scratch).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: dup2 and prctl with integer arguments (the file is ours, open).
                unsafe {
                    libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 0);
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
                };
                // As the runtime loads them: the ioctl filter first (the profile refuses
                // seccomp(2), so nothing loads after it).
                if ioctls.load().is_err() {
                    // SAFETY: ends the child without the test harness.
                    unsafe { libc::_exit(3) }
                }
                let listener = filter.load();
                drop(listener);
                for call in calls {
                    let v = call().to_ne_bytes();
                    // SAFETY: writes 8 bytes of ours to the pipe.
                    unsafe {
                        libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), v.as_ptr().cast(), 8)
                    };
                }
                // SAFETY: ends the child without the test harness.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).unwrap();
                nix::sys::wait::waitpid(child, None).unwrap();
                out.chunks(8)
                    .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    }

    /// A raw syscall with integer arguments (null pointers at most): 0, or the errno.
    fn sys(nr: libc::c_long, a: [u64; 5]) -> i64 {
        // SAFETY: every call below passes integers or null pointers, which the kernel checks;
        // no memory of ours is handed over.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
        if r == 0 {
            // SAFETY: a successful clone's child leaves at once, without the test harness.
            unsafe { libc::_exit(0) }
        }
        if r > 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) as i64
        }
    }

    #[test]
    fn namespaces_raw_sockets_and_xattr_writes_are_refused_in_the_filter() {
        const INET: u64 = libc::AF_INET as u64;
        const INET6: u64 = libc::AF_INET6 as u64;
        let got = under_the_profile(&[
            || {
                sys(
                    libc::SYS_clone,
                    [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0],
                )
            },
            || {
                let flags = libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::SIGCHLD;
                sys(libc::SYS_clone, [flags as u64, 0, 0, 0, 0])
            },
            || sys(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0]),
            || sys(libc::SYS_clone3, [0; 5]),
            || {
                sys(
                    libc::SYS_socket,
                    [INET, libc::SOCK_RAW as u64, libc::IPPROTO_ICMP as u64, 0, 0],
                )
            },
            || {
                sys(
                    libc::SYS_socket,
                    [
                        INET,
                        libc::SOCK_DGRAM as u64,
                        libc::IPPROTO_ICMP as u64,
                        0,
                        0,
                    ],
                )
            },
            || {
                sys(
                    libc::SYS_socket,
                    [
                        INET6,
                        (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                        0,
                        0,
                        0,
                    ],
                )
            },
            || {
                sys(
                    libc::SYS_socket,
                    [
                        INET,
                        libc::SOCK_DGRAM as u64,
                        libc::IPPROTO_UDP as u64,
                        0,
                        0,
                    ],
                )
            },
            || {
                sys(
                    libc::SYS_socket,
                    [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0],
                )
            },
            || sys(libc::SYS_fsetxattr, [0, 0, 0, 0, 0]),
            || {
                sys(
                    libc::SYS_socket,
                    [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0, 0, 0],
                )
            },
            || {
                let audit = libc::NETLINK_AUDIT as u64;
                sys(
                    libc::SYS_socket,
                    [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, audit, 0, 0],
                )
            },
            // FS_IOC_SETFLAGS on stdin, with high bits set that the kernel ignores.
            || sys(libc::SYS_ioctl, [0, 0x4008_6602, 0, 0, 0]),
            || sys(libc::SYS_ioctl, [0, 0xffff_ffff_4008_6602, 0, 0, 0]),
            || sys(libc::SYS_ioctl, [0, 0x9400_0000_5000_9401, 0, 0, 0]),
            // EXT4_IOC_SETVERSION; EXT4_IOC_GETSTATE, a write-only 'f' ioctl the list does
            // not name; an unknown 'v' one; an fscrypt key's.
            || sys(libc::SYS_ioctl, [0, 0xffff_ffff_4008_6604, 0, 0, 0]),
            || sys(libc::SYS_ioctl, [0, 0x4004_6629, 0, 0, 0]),
            || sys(libc::SYS_ioctl, [0, 0x4004_7605, 0, 0, 0]),
            || sys(libc::SYS_ioctl, [0, 0xc050_6617, 0, 0, 0]),
        ]);
        let (eperm, enosys, eafns, eopnotsupp) = (
            libc::EPERM as i64,
            libc::ENOSYS as i64,
            libc::EAFNOSUPPORT as i64,
            libc::EOPNOTSUPP as i64,
        );
        assert_eq!(
            got,
            vec![
                eperm,
                eperm,
                0,
                enosys,
                enosys,
                enosys,
                0,
                0,
                eafns,
                eopnotsupp,
                0,
                enosys,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64,
                libc::ENOTTY as i64
            ]
        );
    }
}
