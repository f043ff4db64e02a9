//! The backends, one module each over the contract they share, and the choice of one by kind.

pub mod contract;
pub mod native;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "vm")]
pub mod vm;

pub use contract::{Backend, CreateRequest, Created, ExecRequest};

use anyhow::{bail, Result};

use crate::config::Kind;

/// The backend that runs containers of `kind`; an error in a build without it (the guest
/// agent's runs only native).
pub fn of(kind: Kind) -> Result<Box<dyn Backend>> {
    match kind {
        Kind::Native => Ok(Box::new(native::Native)),
        #[cfg(feature = "sandbox")]
        Kind::Sandbox => Ok(Box::new(sandbox::Sandbox)),
        #[cfg(feature = "vm")]
        Kind::Vm => Ok(Box::new(vm::Vm)),
        #[allow(unreachable_patterns)]
        other => bail!("this build of strata has no {} backend", other.name()),
    }
}
