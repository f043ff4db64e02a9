//! virtio-vsock in user space (this host has no vhost-vsock), exposed to the host the way
//! Firecracker's hybrid vsock is:
//! - the guest connects to host port N: the device connects to the Unix socket `<uds>_N`;
//! - a host process connects to `<uds>` and writes `CONNECT N\n`: the device opens a stream to
//!   guest port N and answers `OK <host port>\n` once the guest accepted (or closes the stream).
//!
//! One thread per device waits on the Unix sockets (epoll); queue notifications from the vCPU
//! are handled on the vCPU thread. Both work on [`VsockState`] under one lock.
//!
//! Flow control follows the virtio-vsock credit scheme: we never send a guest connection more
//! than the buffer it advertised minus what it has not consumed, and we advertise a fixed buffer
//! per connection whose consumption (`fwd_cnt`) only advances when bytes reach the host socket,
//! so a slow host reader throttles the guest instead of growing our memory.
//!
//! The files: `packet` the header on the wire; `connection` one stream and its credit;
//! `muxer` the host's Unix sockets and the table of connections; `device` the virtio
//! device, its queues and the thread that waits on the sockets.

mod connection;
mod device;
mod muxer;
mod packet;
#[cfg(test)]
mod testing;

pub use device::{Vsock, VsockError, VIRTIO_ID_VSOCK};
pub use muxer::VsockState;
pub use packet::{PacketHeader, HEADER_LEN, HOST_CID};
