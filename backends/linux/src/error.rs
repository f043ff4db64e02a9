//! One error type for everything that builds or runs a container on Linux.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle asks for something invalid; `field` names the config.json field.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// A system call failed while doing `what`. The cause is in the message, not chained as
    /// a source: `{:#}` at the CLI would print it twice.
    #[error("{what}: {error}")]
    Sys { what: String, error: nix::Error },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    /// The container's init (or an exec'd process) failed before the workload started; the
    /// message is the child's own, already phrased for the user.
    #[error("{0}")]
    Child(String),
    #[error("hook {path}: {reason}")]
    Hook { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A system call refused for want of privilege (EACCES, EPERM, EROFS).
    pub fn is_permission(&self) -> bool {
        let errno = match self {
            Error::Sys { error, .. } => *error as i32,
            Error::Io { error, .. } => error.raw_os_error().unwrap_or(0),
            _ => 0,
        };
        matches!(errno, libc::EACCES | libc::EPERM | libc::EROFS)
    }

    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Attaches a description of the failed step to a syscall or I/O error.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Sys {
            what: what(),
            error,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Io {
            what: what(),
            error,
        })
    }
}
