//! Building and running an OCI container on Linux. Used by strata's native backend, by the
//! sandbox backend, and inside the VM guest by the agent.

pub mod cgroups;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec;
pub mod fault;
pub mod hooks;
pub mod lsm;
pub mod mount_options;
pub mod mounts;
pub mod namespaces;
pub mod proc;
pub mod proc_mounts;
pub mod process;
pub mod seccomp;
pub mod sync;
pub mod sysctl;
pub mod tmpcopyup;
pub mod trampoline;
pub mod tty;

pub use error::{Error, Result};
