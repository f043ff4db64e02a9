//! The sandbox policy, as data (TOML):
//!
//! ```toml
//! read_only = ["/"]                  # may be read
//! read_write = ["/tmp", "/dev"]      # may be read, created, written, removed
//! exec = ["/bin", "/usr/bin"]        # may be executed (and read)
//! network = "loopback"               # "none" | "loopback" | "any"
//! connect = ["127.0.0.1:5432", "[::1]:5432", "10.0.0.0/8:443", "*:53"]   # optional
//! bind = ["127.0.0.1:8000-8099"]                                         # optional
//! ```
//!
//! Paths are the container's own, compared component by component after the supervisor has
//! resolved every symlink and `..` inside the container's root.
//!
//! `network` decides which addresses can be reached at all, and with "none" which socket
//! families can be made (Unix only). `connect` and `bind`, when given, narrow it further to
//! the listed endpoints: `ADDRESS[/PREFIX]:PORT[-PORT]`, `*` for any address or port, IPv6
//! addresses in brackets. Connecting covers `connect(2)` and `sendto(2)` with an address.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    #[serde(default)]
    pub read_write: Vec<PathBuf>,
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    #[serde(default)]
    pub network: Network,
    /// When set, the only endpoints a socket may connect or send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Vec<Endpoint>>,
    /// When set, the only endpoints a socket may bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<Vec<Endpoint>>,
    /// Set by [`Policy::for_bundle`] only (a policy file may not): the path sets are the
    /// bundle's own, so the kernel decides every file call by itself (Landlock holds the same
    /// sets, the mount table the read-only places, the devices cgroup the device rules) and
    /// none is trapped. A named policy narrower than the bundle needs the supervisor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel_decides_files: bool,
}

/// One `ADDRESS[/PREFIX]:PORT[-PORT]` entry of `connect` or `bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    text: String,
    /// None: any address.
    net: Option<(std::net::IpAddr, u8)>,
    ports: (u16, u16),
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Endpoint, String> {
        let bad = |why: &str| format!("{text:?}: {why} (expected ADDRESS[/PREFIX]:PORT[-PORT])");
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let ports = if port == "*" {
            (0, u16::MAX)
        } else {
            let (lo, hi) = port.split_once('-').unwrap_or((port, port));
            let p = |v: &str| v.parse::<u16>().map_err(|_| bad("bad port"));
            let (lo, hi) = (p(lo)?, p(hi)?);
            if lo > hi {
                return Err(bad("port range runs backwards"));
            }
            (lo, hi)
        };
        let net = if host == "*" {
            None
        } else {
            let (addr, prefix) = match host.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (host, None),
            };
            let addr = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            let ip: std::net::IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| bad("bad prefix length"))?,
                None => max,
            };
            Some((ip, prefix))
        };
        Ok(Endpoint { text, net, ports })
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.text
    }
}

impl Endpoint {
    /// The network (None: any address) and the port range.
    pub fn parts(&self) -> (Option<(std::net::IpAddr, u8)>, (u16, u16)) {
        (self.net, self.ports)
    }

    fn matches(&self, ip: std::net::IpAddr, port: u16) -> bool {
        let in_net = match self.net {
            None => true,
            Some((net, prefix)) => {
                let bits = |ip: std::net::IpAddr| -> (u128, u32) {
                    match ip {
                        std::net::IpAddr::V4(v) => (u32::from(v) as u128, 32),
                        std::net::IpAddr::V6(v) => (u128::from(v), 128),
                    }
                };
                // An IPv4 address reached through an IPv4-mapped IPv6 one is the same host.
                let ip = match ip {
                    std::net::IpAddr::V6(v) => {
                        v.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip)
                    }
                    v4 => v4,
                };
                let ((a, width_a), (b, width_b)) = (bits(ip), bits(net));
                width_a == width_b && {
                    let shift = width_a - prefix as u32;
                    shift >= width_a || (a >> shift) == (b >> shift)
                }
            }
        };
        in_net && (self.ports.0..=self.ports.1).contains(&port)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No sockets beyond Unix ones inside the read-write paths.
    None,
    /// IPv4 127.0.0.0/8 and IPv6 ::1 only.
    #[default]
    Loopback,
    Any,
}

/// What a bundle grants its container, for [`Policy::for_bundle`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `root.readonly` is false.
    pub writable_root: bool,
    /// Destinations of the mounts the bundle declares read-write (not proc, sysfs or cgroup).
    pub writable_mounts: Vec<PathBuf>,
    /// The container has a network namespace of its own.
    pub own_network: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "exec",
        }
    }
}

/// Why a request was refused: the access asked for and the rule set that lacks the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub rule: &'static str,
}

impl Policy {
    /// The default: read everything, write only scratch places, execute only the usual
    /// program directories, talk only to loopback.
    pub fn builtin() -> Policy {
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect();
        Policy {
            read_only: p(&["/"]),
            read_write: p(&["/tmp", "/var/tmp", "/run", "/dev", "/proc/self"]),
            exec: p(&[
                "/bin",
                "/sbin",
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/usr/local/sbin",
                "/lib",
                "/lib64",
                "/usr/lib",
                "/usr/lib64",
                "/usr/libexec",
            ]),
            network: Network::Loopback,
            connect: None,
            bind: None,
            kernel_decides_files: false,
        }
    }

    /// The policy when none is named: everything the bundle grants, nothing of the host.
    /// Writable where the bundle makes it so (the whole root when `root.readonly` is false,
    /// else the scratch places and every mount it declares read-write: volumes, tmpfs,
    /// /dev/shm); programs run from anywhere in the container (the kernel still holds
    /// `noexec` mounts); any address in a network namespace of the container's own (a pod
    /// network), loopback only in the host's. A named policy is a narrower one; none reaches
    /// past the bundle, as read-only mounts stay read-only in the kernel.
    pub fn for_bundle(grants: &Grants) -> Policy {
        let mut p = Policy::builtin();
        p.exec = vec![PathBuf::from("/")];
        // The kernel decides here, and Landlock cannot tell one process's /proc/self from
        // another's: the container's own /proc (its processes' entries; /proc/sys and the
        // like stay read-only mounts), as under native.
        for w in p.read_write.iter_mut() {
            if w == Path::new("/proc/self") {
                *w = PathBuf::from("/proc");
            }
        }
        if grants.writable_root {
            p.read_write = vec![PathBuf::from("/")];
        } else {
            for m in &grants.writable_mounts {
                if !p.read_write.iter().any(|w| m.starts_with(w)) {
                    p.read_write.push(m.clone());
                }
            }
        }
        if grants.own_network {
            p.network = Network::Any;
        }
        p.kernel_decides_files = true;
        p
    }

    pub fn parse(text: &str, origin: &Path) -> Result<Policy> {
        let policy: Policy = toml::from_str(text).map_err(|e| Error::Policy {
            path: origin.display().to_string(),
            msg: e.message().trim().to_string(),
        })?;
        if policy.kernel_decides_files {
            return Err(Error::Policy {
                path: origin.display().to_string(),
                msg: "kernel_decides_files is the built-in policy's own, not a policy file's"
                    .to_string(),
            });
        }
        for (key, set) in [
            ("read_only", &policy.read_only),
            ("read_write", &policy.read_write),
            ("exec", &policy.exec),
        ] {
            if let Some(p) = set.iter().find(|p| !p.is_absolute()) {
                return Err(Error::Policy {
                    path: origin.display().to_string(),
                    msg: format!("{key}: {} is not an absolute path", p.display()),
                });
            }
        }
        Ok(policy)
    }

    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Policy {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Policy::parse(&text, path)
    }

    /// Whether `path` (resolved, inside the container) may be accessed as asked.
    pub fn check(&self, path: &Path, access: Access) -> std::result::Result<(), Denial> {
        let under = |set: &[PathBuf]| set.iter().any(|p| path.starts_with(p));
        let ok = match access {
            Access::Read => under(&self.read_only) || under(&self.read_write) || under(&self.exec),
            Access::Write => under(&self.read_write),
            Access::Exec => under(&self.exec),
        };
        if ok {
            Ok(())
        } else {
            Err(Denial {
                rule: match access {
                    Access::Read => "not in read_only, read_write or exec",
                    Access::Write => "not in read_write",
                    Access::Exec => "not in exec",
                },
            })
        }
    }

    /// Whether an IP endpoint may be connected (or sent) to, or with `bind` bound.
    pub fn check_endpoint(
        &self,
        ip: std::net::IpAddr,
        port: u16,
        bind: bool,
    ) -> std::result::Result<(), Denial> {
        self.check_ip(ip)?;
        let (list, rule) = if bind {
            (&self.bind, "not in bind")
        } else {
            (&self.connect, "not in connect")
        };
        match list {
            Some(l) if !l.iter().any(|e| e.matches(ip, port)) => Err(Denial { rule }),
            _ => Ok(()),
        }
    }

    /// Whether an IP address may be reached at all.
    pub fn check_ip(&self, ip: std::net::IpAddr) -> std::result::Result<(), Denial> {
        // An IPv4 address reached through an IPv4-mapped IPv6 one is the same host.
        let ip = match ip {
            std::net::IpAddr::V6(v) => v.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match self.network {
            Network::Any => Ok(()),
            Network::Loopback if ip.is_loopback() || ip.is_unspecified() => Ok(()),
            Network::Loopback => Err(Denial {
                rule: "network = loopback",
            }),
            Network::None => Err(Denial {
                rule: "network = none",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policy_sets() {
        let p = Policy::builtin();
        assert!(p.check(Path::new("/etc/passwd"), Access::Read).is_ok());
        assert!(p.check(Path::new("/etc/passwd"), Access::Write).is_err());
        assert!(p.check(Path::new("/tmp/x"), Access::Write).is_ok());
        // Component-wise: /tmpfoo is not under /tmp.
        assert!(p.check(Path::new("/tmpfoo"), Access::Write).is_err());
        assert!(p.check(Path::new("/bin/sh"), Access::Exec).is_ok());
        assert!(p.check(Path::new("/tmp/sh"), Access::Exec).is_err());
        assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("::1".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn parse_rejects_typos_and_relative_paths() {
        let o = Path::new("p.toml");
        let p = Policy::parse("read_only = [\"/\"]\nnetwork = \"none\"\n", o).unwrap();
        assert_eq!(p.network, Network::None);
        assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_err());
        let e = Policy::parse("read_onyl = [\"/\"]", o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_onyl"), "{e}");
        let e = Policy::parse("exec = [\"bin\"]", o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exec: bin is not an absolute path"), "{e}");
        let e = Policy::parse("network = \"lan\"", o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lan"), "{e}");
        for (entry, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:http", "bad port"),
            ("127.0.0.1:9-3", "backwards"),
            ("localhost:80", "bad address"),
            ("10.0.0.0/33:80", "bad prefix length"),
        ] {
            let e = Policy::parse(&format!("connect = [\"{entry}\"]"), o)
                .unwrap_err()
                .to_string();
            assert!(e.contains(entry) && e.contains(why), "{entry}: {e}");
        }
    }

    #[test]
    fn endpoints_narrow_the_network_class() {
        let o = Path::new("p.toml");
        let p = Policy::parse(
            "network = \"any\"\nconnect = [\"127.0.0.1:5432\", \"10.0.0.0/8:443-444\", \"[::1]:80\", \"*:53\"]\n\
             bind = [\"127.0.0.1:8000-8099\"]\n",
            o,
        )
        .unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(p.check_endpoint(ip("127.0.0.1"), 5432, false).is_ok());
        assert!(p.check_endpoint(ip("127.0.0.1"), 5433, false).is_err());
        assert!(p.check_endpoint(ip("10.9.8.7"), 444, false).is_ok());
        assert!(p.check_endpoint(ip("11.0.0.1"), 443, false).is_err());
        assert!(p.check_endpoint(ip("::1"), 80, false).is_ok());
        assert!(p
            .check_endpoint(ip("::ffff:127.0.0.1"), 5432, false)
            .is_ok());
        assert!(p.check_endpoint(ip("8.8.8.8"), 53, false).is_ok());
        assert!(p.check_endpoint(ip("127.0.0.1"), 8050, true).is_ok());
        assert_eq!(
            p.check_endpoint(ip("127.0.0.1"), 5432, true),
            Err(Denial {
                rule: "not in bind"
            })
        );
        // The class still applies first.
        let lo = Policy::parse("network = \"loopback\"\nconnect = [\"*:53\"]\n", o).unwrap();
        assert!(lo.check_endpoint(ip("8.8.8.8"), 53, false).is_err());
        assert!(lo.check_endpoint(ip("127.0.0.53"), 53, false).is_ok());
        // The recorded form (JSON, for exec) reads back the same.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
    }
}
