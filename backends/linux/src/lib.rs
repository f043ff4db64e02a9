//! Building and running an OCI container on Linux. Used by strata's native backend, by the
//! sandbox backend, and inside the VM guest by the agent.

pub mod affinity;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod exec;
pub mod fault;
pub mod hooks;
pub mod lsm;
pub mod mempolicy;
pub mod namespaces;
pub mod net;
pub mod proc;
pub mod process;
pub mod rootfs;
pub mod sched;
pub mod seccomp;
pub mod sync;
pub mod sysctl;
pub mod trampoline;
pub mod tty;

pub use error::{Error, Result};
