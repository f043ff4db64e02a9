//! The virtio-vsock packet header (virtio 1.2 §5.10.6) and the field values this device
//! speaks: the host's CID, stream sockets, the operations of a connection, shutdown flags. The
//! device reads headers from tx chains and writes them to rx chains as they are (`ByteValued`).

use vm_memory::ByteValued;

pub const HOST_CID: u64 = 2;

pub(super) const TYPE_STREAM: u16 = 1;
pub(super) const OP_REQUEST: u16 = 1;
pub(super) const OP_RESPONSE: u16 = 2;
pub(super) const OP_RST: u16 = 3;
pub(super) const OP_SHUTDOWN: u16 = 4;
pub(super) const OP_RW: u16 = 5;
pub(super) const OP_CREDIT_UPDATE: u16 = 6;
pub(super) const OP_CREDIT_REQUEST: u16 = 7;
pub(super) const SHUTDOWN_RCV: u32 = 1;
pub(super) const SHUTDOWN_SEND: u32 = 2;

/// Largest payload of one packet we put on the rx queue.
pub(super) const MAX_PKT_DATA: usize = 64 * 1024;

/// The virtio-vsock packet header (virtio 1.2 §5.10.6), little endian on the wire.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

// SAFETY: PacketHeader is plain old data: integers only, packed, so any byte pattern is valid.
unsafe impl ByteValued for PacketHeader {}

pub const HEADER_LEN: usize = std::mem::size_of::<PacketHeader>();
