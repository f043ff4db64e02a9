//! Networking for VMs: tap devices, and the rtnetlink requests that read a network
//! namespace's interfaces on the host and configure them again in a guest.

pub mod netlink;
pub mod tap;
