//! The sandbox policy, as data (TOML):
//!
//! ```toml
//! read_only = ["/"]                  # may be read
//! read_write = ["/tmp", "/dev"]      # may be read, created, written, removed
//! exec = ["/bin", "/usr/bin"]        # may be executed (and read)
//! network = "loopback"               # "none" | "loopback" | "any"
//! ```
//!
//! Paths are the container's own, compared component by component after the supervisor has
//! resolved every symlink and `..` inside the container's root.

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
        }
    }

    pub fn parse(text: &str, origin: &Path) -> Result<Policy> {
        let policy: Policy = toml::from_str(text).map_err(|e| Error::Policy {
            path: origin.display().to_string(),
            msg: e.message().trim().to_string(),
        })?;
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

    /// Whether an IP destination may be connected to or bound.
    pub fn check_ip(&self, ip: std::net::IpAddr) -> std::result::Result<(), Denial> {
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
    }
}
