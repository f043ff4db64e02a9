//! A rig for the device's tests: a [`Vsock`] on a Unix socket in a scratch directory, activated
//! with rx, tx and event queues driven by [`Driver`], and a guest side that sends and receives
//! packets on them.

use std::path::PathBuf;

use vm_memory::ByteValued;

use super::device::{Vsock, RXQ, TXQ};
use super::packet::{PacketHeader, HEADER_LEN, HOST_CID, TYPE_STREAM};
use crate::devices::mmio::VirtioDevice;
use crate::devices::testing::{interrupt, Buf, Driver, Used};
use crate::GuestMemory;

pub(super) const CID: u64 = 3;

pub(super) struct Rig<'a> {
    pub(super) dev: Vsock,
    pub(super) rx: Driver<'a>,
    tx: Driver<'a>,
    dir: PathBuf,
    pub(super) uds: PathBuf,
}

impl Drop for Rig<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn rig<'a>(mem: &'a GuestMemory, name: &str) -> Rig<'a> {
    let dir = std::env::temp_dir().join(format!("strata-vsock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let mut dev = Vsock::new(CID, &uds).unwrap();
    let mut rx = Driver::new(mem, 0x0, 0x100_0000, 64);
    let tx = Driver::new(mem, 0x10000, 0x200_0000, 64);
    let ev = Driver::new(mem, 0x20000, 0x300_0000, 64);
    for _ in 0..32 {
        rx.push(&[Buf::In(4096)]);
    }
    dev.activate(
        mem.clone(),
        vec![rx.queue(), tx.queue(), ev.queue()],
        interrupt(),
    )
    .unwrap();
    Rig {
        dev,
        rx,
        tx,
        dir,
        uds,
    }
}

pub(super) fn hdr(
    op: u16,
    src_port: u32,
    dst_port: u32,
    len: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
) -> PacketHeader {
    PacketHeader {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

impl Rig<'_> {
    pub(super) fn guest_send(&mut self, h: PacketHeader, data: &[u8]) {
        let mut bytes = h.as_slice().to_vec();
        bytes.extend_from_slice(data);
        self.tx.push(&[Buf::Out(bytes)]);
        self.dev.queue_notify(TXQ as u32);
    }

    /// Packets the device put on rx, waiting for at least one.
    pub(super) fn guest_recv(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
        let used: Vec<Used> = self.rx.wait_used();
        let n = used.len();
        for _ in 0..n {
            self.rx.push(&[Buf::In(4096)]);
        }
        self.dev.queue_notify(RXQ as u32);
        used.into_iter()
            .map(|u| {
                let h = PacketHeader::from_slice(&u.written[..HEADER_LEN])
                    .copied()
                    .unwrap();
                (h, u.written[HEADER_LEN..].to_vec())
            })
            .collect()
    }

    pub(super) fn guest_recv_one(&mut self) -> (PacketHeader, Vec<u8>) {
        let mut packets = self.guest_recv();
        assert_eq!(
            packets.len(),
            1,
            "expected one packet, got {:?}",
            packets.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        packets.remove(0)
    }
}
