//! The vm backend: each container in a microVM of its own, with the guest agent running it.

pub mod client;
pub mod protocol;
