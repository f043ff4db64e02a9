//! The container's root filesystem, built by the init inside its mount namespace, in this
//! order: the rootfs made a mount point ([`pivot::prepare_root`]), the bundle's mounts
//! ([`mount`], with their [`options`], the rules for /proc and /sys in [`proc_mounts`], and
//! [`tmpcopyup`]), the device nodes ([`devices`]), pivot_root ([`pivot`]), then masked and
//! read-only paths and a read-only root ([`paths`]).
//!
//! Every path is resolved inside the rootfs with `openat2(RESOLVE_IN_ROOT)` ([`open`]) and
//! mounted on through `/proc/self/fd/N` of the resolved file, so a symlink planted in the
//! rootfs can never place a mount on the host.

pub mod devices;
pub mod mount;
pub mod open;
pub mod options;
pub mod paths;
pub mod pivot;
pub mod proc_mounts;
pub mod tmpcopyup;
