//! The sandbox backend's own parts. The container is built by strata-linux exactly as for
//! the native backend; this crate adds:
//! - [`policy`]: what the container may read, write, execute and connect to, as data;
//! - [`profile`]: a deny-by-default seccomp profile whose file and socket syscalls return
//!   SECCOMP_RET_USER_NOTIF, loaded after the bundle's own profile (the kernel applies the
//!   strictest action of all filters);
//! - [`supervisor`]: the process that receives those notifications and performs each call
//!   itself, inside the container's root and with the caller's credentials;
//! - [`landlock`]: the same policy enforced again by the kernel, for what is not trapped;
//! - [`confine`]: all of that for one container process, as the one value the runtime
//!   applies to it.

mod confine;
pub mod landlock;
pub mod policy;
pub mod profile;
pub mod supervisor;

mod creds;
mod emulate;
mod guard;
mod identity;
pub mod netfilter;
mod notif;
mod procfs;
mod serving;
mod waits;

pub use confine::{confine, Confinement};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox policy {path}: {msg}")]
    Policy { path: String, msg: String },
    #[error("sandbox: {0}")]
    Setup(String),
    // The cause in the message, not chained: `{:#}` would print it twice.
    #[error("sandbox: {what}: {error}")]
    Sys { what: String, error: nix::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, nix::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Sys {
            what: what(),
            error,
        })
    }
}
