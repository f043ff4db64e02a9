//! Where the container's datagrams may go: a cgroup `sock_addr` eBPF program on the UDP
//! sendmsg hooks, attached to the container's cgroup v2 directory.
//!
//! `connect` and `sendto` with an address are checked by the supervisor, but `sendmsg` and
//! `sendmmsg` carry their destination inside a struct that another thread can rewrite after
//! any check, so the supervisor cannot check them without performing every one (fd passing
//! included). The kernel's hook sees the destination it is about to use, so it cannot be
//! raced. It runs for unconnected datagram sends only; a connected socket's peer was
//! checked at its connect.
//!
//! The program applies the policy's network class and its `connect` list, as the
//! supervisor's checks do, to IPv4 and IPv6 (an IPv4-mapped IPv6 address as the IPv4 one).
//! A refused send fails with EPERM.

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use strata_linux::cgroups::bpf::{self, insn, Asm, Insn, Label};

use crate::policy::{Network, Policy};
use crate::{Error, Result};

const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_F_ALLOW_MULTI: u32 = 2;

// Offsets in struct bpf_sock_addr.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const USER_PORT: i16 = 24;

/// Whether the policy says anything the hooks must enforce: not under "none" (no IP socket
/// can be made), nor under "any" without a `connect` list.
pub fn needed(policy: &Policy) -> bool {
    match policy.network {
        Network::None => false,
        Network::Any => policy.connect.is_some(),
        Network::Loopback => true,
    }
}

/// Loads the programs for `policy` and attaches them to the cgroup v2 directory open as
/// `dir`.
pub fn attach(policy: &Policy, dir: BorrowedFd) -> Result<()> {
    for (attach_type, prog) in [
        (BPF_CGROUP_UDP4_SENDMSG, program(policy, false)),
        (BPF_CGROUP_UDP6_SENDMSG, program(policy, true)),
    ] {
        let fd = bpf::load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, attach_type, &prog)
            .map_err(|e| Error::Setup(format!("loading the datagram filter: {e}")))?;
        bpf::attach_to(dir, &fd, attach_type, BPF_F_ALLOW_MULTI)
            .map_err(|e| Error::Setup(format!("the datagram filter: {e}")))?;
    }
    Ok(())
}

/// An address as the program sees it: 32-bit words loaded little-endian from the bytes in
/// network order.
fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The prefix mask of `prefix` bits over `len` bytes, as words like [`words`].
fn mask_words(prefix: u8, len: usize) -> Vec<u32> {
    let bytes: Vec<u8> = (0..len)
        .map(|i| {
            let bits = (prefix as usize).saturating_sub(i * 8).min(8);
            (0xffu16 << (8 - bits)) as u8
        })
        .collect();
    words(&bytes)
}

/// Registers of the program: r1 the context; r2..r5 the address words (r2 alone for IPv4);
/// r6 the port; r7 scratch.
const PORT: u8 = 6;
const SCRATCH: u8 = 7;

/// Jumps to `miss` unless the address in registers `regs` equals `net` under `mask`.
fn match_net(a: &mut Asm, regs: &[u8], net: &[u32], mask: &[u32], miss: Label) {
    for ((r, n), m) in regs.iter().zip(net).zip(mask) {
        if *m == 0 {
            continue;
        }
        a.op(insn(bpf::MOV32_X, SCRATCH, *r, 0, 0));
        a.op(insn(bpf::ALU32_AND_K, SCRATCH, 0, 0, *m as i32));
        a.jump_if(bpf::JMP32_JNE_K, SCRATCH, (n & m) as i32, miss);
    }
}

/// The checks for an address of one family held in `regs` (1 word: IPv4; 4: IPv6).
fn checks(a: &mut Asm, policy: &Policy, regs: &[u8], allow: Label, deny: Label) {
    let v4 = regs.len() == 1;
    let class_ok = a.label();
    if policy.network == Network::Loopback {
        // 127.0.0.0/8 or ::1, and the unspecified address (this host).
        let nets: Vec<(IpAddr, u8)> = if v4 {
            vec![([127, 0, 0, 0].into(), 8), ([0, 0, 0, 0].into(), 32)]
        } else {
            vec![
                (std::net::Ipv6Addr::LOCALHOST.into(), 128),
                (std::net::Ipv6Addr::UNSPECIFIED.into(), 128),
            ]
        };
        for (net, prefix) in nets {
            let next = a.label();
            let (n, m) = net_words(net, prefix);
            match_net(a, regs, &n, &m, next);
            a.goto(class_ok);
            a.bind(next);
        }
        a.goto(deny);
    }
    a.bind(class_ok);
    let Some(list) = &policy.connect else {
        a.goto(allow);
        return;
    };
    for e in list {
        let (net, ports) = e.parts();
        let next = a.label();
        match net {
            None => {}
            Some((ip, prefix)) if ip.is_ipv4() == v4 => {
                let (n, m) = net_words(ip, prefix);
                match_net(a, regs, &n, &m, next);
            }
            // An entry of the other family never matches.
            Some(_) => continue,
        }
        if ports.0 > 0 {
            a.jump_if(bpf::JMP32_JLT_K, PORT, ports.0 as i32, next);
        }
        if ports.1 < u16::MAX {
            a.jump_if(bpf::JMP32_JGT_K, PORT, ports.1 as i32, next);
        }
        a.goto(allow);
        a.bind(next);
    }
    a.goto(deny);
}

fn net_words(ip: IpAddr, prefix: u8) -> (Vec<u32>, Vec<u32>) {
    match ip {
        IpAddr::V4(v) => (words(&v.octets()), mask_words(prefix, 4)),
        IpAddr::V6(v) => (words(&v.octets()), mask_words(prefix, 16)),
    }
}

/// The program for the IPv4 hook, or with `v6` the IPv6 one. Returns 1 to let the datagram
/// go, 0 to refuse it.
pub fn program(policy: &Policy, v6: bool) -> Vec<Insn> {
    let mut a = Asm::default();
    let allow = a.label();
    let deny = a.label();
    a.op(insn(bpf::LDX_MEM_W, PORT, 1, USER_PORT, 0));
    a.op(insn(bpf::END_TO_BE, PORT, 0, 0, 16));
    if v6 {
        for (i, r) in [2u8, 3, 4, 5].into_iter().enumerate() {
            a.op(insn(bpf::LDX_MEM_W, r, 1, USER_IP6 + 4 * i as i16, 0));
        }
        // ::ffff:a.b.c.d is a.b.c.d: the IPv4 checks on the last word.
        let native = a.label();
        let mapped = words(&[0, 0, 0xff, 0xff])[0];
        a.jump_if(bpf::JMP32_JNE_K, 2, 0, native);
        a.jump_if(bpf::JMP32_JNE_K, 3, 0, native);
        a.jump_if(bpf::JMP32_JNE_K, 4, mapped as i32, native);
        checks(&mut a, policy, &[5], allow, deny);
        a.bind(native);
        checks(&mut a, policy, &[2, 3, 4, 5], allow, deny);
    } else {
        a.op(insn(bpf::LDX_MEM_W, 2, 1, USER_IP4, 0));
        checks(&mut a, policy, &[2], allow, deny);
    }
    a.bind(deny);
    a.ret(0);
    a.bind(allow);
    a.ret(1);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_words_follow_the_bytes_in_network_order() {
        assert_eq!(words(&[127, 0, 0, 1]), vec![0x0100007f]);
        assert_eq!(mask_words(8, 4), vec![0x000000ff]);
        assert_eq!(mask_words(20, 4), vec![0x00f0ffff]);
        assert_eq!(mask_words(128, 16), vec![u32::MAX; 4]);
        assert_eq!(mask_words(0, 4), vec![0]);
    }

    #[test]
    fn only_policies_that_reach_the_network_in_part_need_the_hooks() {
        let o = std::path::Path::new("p.toml");
        let p = |t: &str| Policy::parse(t, o).unwrap();
        assert!(needed(&Policy::builtin()));
        assert!(!needed(&p("network = \"none\"")));
        assert!(!needed(&p("network = \"any\"")));
        assert!(needed(&p(
            "network = \"any\"\nconnect = [\"10.0.0.0/8:53\"]"
        )));
    }
}
