//! The backends, one module each over the contract they share, and the choice of one by kind.

pub mod contract;
pub mod native;
pub mod sandbox;
pub mod vm;

pub use contract::{Backend, CreateRequest, Created, ExecRequest};

use crate::config::Kind;

/// The backend that runs containers of `kind`.
pub fn of(kind: Kind) -> Box<dyn Backend> {
    match kind {
        Kind::Native => Box::new(native::Native),
        Kind::Sandbox => Box::new(sandbox::Sandbox),
        Kind::Vm => Box::new(vm::Vm),
    }
}
