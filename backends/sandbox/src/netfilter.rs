//! The network policy, held by the kernel: cgroup eBPF programs attached to the container's
//! cgroup v2 directory, which see the address the kernel is about to use and so cannot be
//! raced by a thread that rewrites memory after a check.
//!
//! Two kinds of program:
//! - `sock_addr` hooks on connect (TCP and UDP connect(2), and TCP fast open through
//!   sendto/sendmsg with MSG_FASTOPEN, which goes through the same pre-connect hook), on UDP
//!   sendmsg to an address (sendto, sendmsg, sendmmsg), and on bind: a refused call fails
//!   with EPERM, at once, as the program's user expects of a policy;
//! - a `cgroup_skb` wall on ingress and egress that drops every packet of a container socket
//!   unless its remote end may be connected to or its local end may be bound. This is what
//!   holds for what no hook sees: a listening socket the kernel bound implicitly (listen(2)
//!   without bind, which binds to every address), a datagram socket bound implicitly by its
//!   first send, accepted connections on a wildcard address.
//!
//! A third, apart from the network policy: a `sock_addr` hook on Unix sendmsg (Linux 6.7)
//! that refuses a datagram to a socket path sent by the container itself. sendmsg(2) keeps
//! its address in memory the seccomp filter cannot read, so the supervisor never sees it to
//! check the path; sendto(2), trapped and checked, is performed by the supervisor, whose own
//! send the hook lets through.
//!
//! The endpoint sets are the policy's: the network class (loopback: 127.0.0.0/8 and ::1),
//! narrowed by `connect` and `bind` when given. A socket may bind the unspecified address
//! (a server listening "everywhere"): the wall then lets through only what arrives on an
//! address the policy allows. Raw and ICMP sockets, which choose their own source address,
//! are refused by the seccomp profile wherever these programs are needed.

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use strata_linux::cgroups::bpf::{self, insn, Asm, Insn, Label};

use crate::policy::{Endpoint, Network, Policy};
use crate::{Error, Result};

const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_INET4_BIND: u32 = 8;
const BPF_CGROUP_INET6_BIND: u32 = 9;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_CGROUP_UNIX_SENDMSG: u32 = 50;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_FUNC_SKB_LOAD_BYTES: i32 = 26;
const BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID: i32 = 123;

// Offsets in struct bpf_sock_addr.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const USER_PORT: i16 = 24;

/// Whether the policy says anything the kernel must enforce: not under "none" (no IP
/// socket can be made), nor under "any" without a `connect` or `bind` list.
pub fn needed(policy: &Policy) -> bool {
    match policy.network {
        Network::None => false,
        Network::Any => policy.connect.is_some() || policy.bind.is_some(),
        Network::Loopback => true,
    }
}

/// Loads the programs for `policy` and attaches them to the cgroup v2 directory open as
/// `dir`.
pub fn attach(policy: &Policy, dir: BorrowedFd) -> Result<()> {
    let programs = [
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_INET4_CONNECT,
            sock_addr(policy, Hook::Connect, false),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_INET6_CONNECT,
            sock_addr(policy, Hook::Connect, true),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_UDP4_SENDMSG,
            sock_addr(policy, Hook::Connect, false),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_UDP6_SENDMSG,
            sock_addr(policy, Hook::Connect, true),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_INET4_BIND,
            sock_addr(policy, Hook::Bind, false),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_INET6_BIND,
            sock_addr(policy, Hook::Bind, true),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_INGRESS,
            wall(policy, true),
        ),
        (
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_EGRESS,
            wall(policy, false),
        ),
    ];
    for (prog_type, attach_type, prog) in programs {
        let fd = bpf::load(prog_type, attach_type, &prog)
            .map_err(|e| Error::Setup(format!("loading network filter {attach_type}: {e}")))?;
        bpf::attach_to(dir, &fd, attach_type, BPF_F_ALLOW_MULTI)
            .map_err(|e| Error::Setup(format!("network filter {attach_type}: {e}")))?;
    }
    Ok(())
}

/// Whether this kernel has the cgroup hooks of Unix sockets (Linux 6.7).
pub fn unix_hooks_supported() -> bool {
    kernel_release().is_some_and(|v| v >= (6, 7))
}

/// The running kernel's major and minor version.
fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into the struct we own.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates the release within its array.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_str()
        .ok()?;
    let mut it = release.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Attaches the Unix sendmsg hook to the cgroup v2 directory open as `dir`, whose level in
/// the hierarchy is at least `level` (the depth of its path as this process sees it: more
/// inside a cgroup namespace whose root is not the hierarchy's).
pub fn attach_unix_sendmsg(dir: BorrowedFd, level: u32) -> Result<()> {
    // A cgroup v2 directory's inode number is the cgroup's ID, what the helper returns.
    let id = nix::sys::stat::fstat(dir)
        .map_err(|e| Error::Setup(format!("the container's cgroup: {e}")))?
        .st_ino;
    let prog = unix_sendmsg(id, level);
    let fd = bpf::load(
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        BPF_CGROUP_UNIX_SENDMSG,
        &prog,
    )
    .map_err(|e| Error::Setup(format!("loading the Unix sendmsg filter: {e}")))?;
    bpf::attach_to(dir, &fd, BPF_CGROUP_UNIX_SENDMSG, BPF_F_ALLOW_MULTI)
        .map_err(|e| Error::Setup(format!("the Unix sendmsg filter: {e}")))
}

/// Levels above the apparent one where the container's cgroup may really be: the cgroup
/// namespace of whoever started the supervisor may have its root that far down.
const LEVELS_BEYOND: u32 = 16;

/// The Unix sendmsg program: refuses (0, EPERM) a datagram to a path when the sending task
/// is in the cgroup `id` or beneath it, lets through (1) the rest: abstract names (held by
/// the network namespace, or in the host's by Landlock's abstract-socket scope) and sends by
/// tasks outside the container (the supervisor's, on a caller's behalf, after its check).
/// The hook runs for every socket made in the container's cgroup, whoever sends on it.
fn unix_sendmsg(id: u64, level: u32) -> Vec<Insn> {
    let mut a = Asm::default();
    let allow = a.label();
    let refuse = a.label();
    // user_port reads the two bytes where sin_port would be: sun_path[0] and [1].
    a.op(insn(bpf::LDX_MEM_W, SCRATCH, 1, USER_PORT, 0));
    a.op(insn(bpf::ALU32_AND_K, SCRATCH, 0, 0, 0xff));
    a.jump_if(bpf::JMP32_JEQ_K, SCRATCH, 0, allow);
    a.load_u64(7, id);
    for l in level..level + LEVELS_BEYOND {
        a.op(insn(bpf::MOV64_K, 1, 0, 0, l as i32));
        a.op(insn(
            bpf::CALL,
            0,
            0,
            0,
            BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID,
        ));
        // 0: the task's cgroup is shallower than this level, and than every next one.
        a.jump_if(bpf::JEQ_K, 0, 0, allow);
        a.jump_if_reg(bpf::JEQ_X, 0, 7, refuse);
    }
    a.goto(allow);
    a.bind(refuse);
    a.ret(0);
    a.bind(allow);
    a.ret(1);
    a.finish()
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

fn net_words(ip: IpAddr, prefix: u8) -> (Vec<u32>, Vec<u32>) {
    match ip {
        IpAddr::V4(v) => (words(&v.octets()), mask_words(prefix, 4)),
        IpAddr::V6(v) => (words(&v.octets()), mask_words(prefix, 16)),
    }
}

const SCRATCH: u8 = 0;
const PORT: u8 = 9;
/// The program's context, kept across helper calls (which clobber r1-r5).
const CTX: u8 = 6;
const FP: u8 = 10;

/// Where an endpoint's address and port are in memory: address words at `base + addr`,
/// one word (IPv4) or four (IPv6); the port at `base + port`, a 32-bit word (sock_addr's
/// user_port) or 16 bits (a packet's), in network order.
#[derive(Clone, Copy)]
struct At {
    base: u8,
    addr: i16,
    v6: bool,
    port: i16,
    port_word: bool,
}

/// Loads the endpoint's port into [`PORT`], in host order.
fn load_port(a: &mut Asm, at: At) {
    let op = if at.port_word {
        bpf::LDX_MEM_W
    } else {
        bpf::LDX_MEM_H
    };
    a.op(insn(op, PORT, at.base, at.port, 0));
    a.op(insn(bpf::END_TO_BE, PORT, 0, 0, 16));
}

/// Jumps to `miss` unless the address at `at` equals `net` under `mask`.
fn match_net(a: &mut Asm, at: At, net: &[u32], mask: &[u32], miss: Label) {
    for (i, (n, m)) in net.iter().zip(mask).enumerate() {
        if *m == 0 {
            continue;
        }
        a.op(insn(
            bpf::LDX_MEM_W,
            SCRATCH,
            at.base,
            at.addr + 4 * i as i16,
            0,
        ));
        a.op(insn(bpf::ALU32_AND_K, SCRATCH, 0, 0, *m as i32));
        a.jump_if(bpf::JMP32_JNE_K, SCRATCH, (n & m) as i32, miss);
    }
}

/// The networks of a class, as the programs test them. `wildcards` adds the unspecified
/// address, which a connect uses for "this host" and a bind for "every address".
fn class_nets(network: Network, wildcards: bool) -> Option<Vec<(IpAddr, u8)>> {
    match network {
        Network::Any => None,
        Network::None => Some(Vec::new()),
        Network::Loopback => {
            let mut nets: Vec<(IpAddr, u8)> = vec![
                ([127, 0, 0, 0].into(), 8),
                (std::net::Ipv6Addr::LOCALHOST.into(), 128),
            ];
            if wildcards {
                nets.push(([0, 0, 0, 0].into(), 32));
                nets.push((std::net::Ipv6Addr::UNSPECIFIED.into(), 128));
            }
            Some(nets)
        }
    }
}

/// One set of endpoints: a class (None: any address) narrowed by a list (None: no list).
struct Set<'a> {
    class: Option<Vec<(IpAddr, u8)>>,
    list: Option<&'a [Endpoint]>,
    /// In a list, the unspecified address stands for every address (packets carry the
    /// address a wildcard socket was reached on).
    unspecified_is_any: bool,
}

/// Jumps to `yes` if the endpoint at `at` is in `set`, else falls through. Returns whether
/// the fall-through is reachable at all: the verifier refuses a program with unreachable
/// instructions, so a caller emits what follows only then.
fn member(a: &mut Asm, set: &Set, at: At, yes: Label) -> bool {
    let v6 = at.v6;
    // Jumped to when the class rules the endpoint out.
    let out = a.label();
    if let Some(nets) = &set.class {
        let nets: Vec<&(IpAddr, u8)> = nets.iter().filter(|(n, _)| n.is_ipv6() == v6).collect();
        if nets.is_empty() {
            return true;
        }
        let class_ok = a.label();
        for (net, prefix) in nets {
            let next = a.label();
            let (n, m) = net_words(*net, *prefix);
            match_net(a, at, &n, &m, next);
            a.goto(class_ok);
            a.bind(next);
        }
        a.goto(out);
        a.bind(class_ok);
    }
    let Some(list) = set.list else {
        a.goto(yes);
        return bind_if_used(a, out);
    };
    load_port(a, at);
    for e in list {
        let (net, ports) = e.parts();
        let net = net.filter(|(ip, _)| !(set.unspecified_is_any && ip.is_unspecified()));
        if matches!(net, Some((ip, _)) if ip.is_ipv6() != v6) {
            // An entry of the other family never matches.
            continue;
        }
        let next = a.label();
        if let Some((ip, prefix)) = net {
            let (n, m) = net_words(ip, prefix);
            match_net(a, at, &n, &m, next);
        }
        if ports.0 > 0 {
            a.jump_if(bpf::JMP32_JLT_K, PORT, ports.0 as i32, next);
        }
        if ports.1 < u16::MAX {
            a.jump_if(bpf::JMP32_JGT_K, PORT, ports.1 as i32, next);
        }
        a.goto(yes);
        if !bind_if_used(a, next) {
            // The entry takes everything: later entries are never reached.
            return bind_if_used(a, out);
        }
    }
    a.goto(out);
    bind_if_used(a, out)
}

/// Binds `l` here if some jump goes to it; returns whether it did (whether this point can
/// be reached, the previous instruction being a jump).
fn bind_if_used(a: &mut Asm, l: Label) -> bool {
    let used = a.is_jumped_to(l);
    if used {
        a.bind(l);
    }
    used
}

#[derive(Clone, Copy, PartialEq)]
enum Hook {
    /// connect, and sendmsg to an address: the destination must be connectable.
    Connect,
    /// bind: the local address must be bindable.
    Bind,
}

fn connect_set(policy: &Policy, wildcards: bool) -> Set<'_> {
    Set {
        class: class_nets(policy.network, wildcards),
        list: policy.connect.as_deref(),
        unspecified_is_any: false,
    }
}

fn bind_set(policy: &Policy, wildcards: bool) -> Set<'_> {
    Set {
        class: class_nets(policy.network, wildcards),
        list: policy.bind.as_deref(),
        unspecified_is_any: !wildcards,
    }
}

/// The program for a sock_addr hook (IPv4, or IPv6 with `v6`). Returns 1 to let the call
/// go, 0 to refuse it (EPERM).
fn sock_addr(policy: &Policy, hook: Hook, v6: bool) -> Vec<Insn> {
    let mut a = Asm::default();
    let allow = a.label();
    let set = match hook {
        Hook::Connect => connect_set(policy, true),
        Hook::Bind => bind_set(policy, true),
    };
    let at = |addr: i16, v6: bool| At {
        base: 1,
        addr,
        v6,
        port: USER_PORT,
        port_word: true,
    };
    let refused = if v6 {
        // ::ffff:a.b.c.d is a.b.c.d: the IPv4 checks on the last word.
        let native = a.label();
        let mapped = words(&[0, 0, 0xff, 0xff])[0];
        for (i, want) in [(0, 0), (1, 0), (2, mapped)] {
            a.op(insn(bpf::LDX_MEM_W, SCRATCH, 1, USER_IP6 + 4 * i, 0));
            a.jump_if(bpf::JMP32_JNE_K, SCRATCH, want as i32, native);
        }
        if member(&mut a, &set, at(USER_IP6 + 12, false), allow) {
            a.ret(0);
        }
        a.bind(native);
        member(&mut a, &set, at(USER_IP6, true), allow)
    } else {
        member(&mut a, &set, at(USER_IP4, false), allow)
    };
    if refused {
        a.ret(0);
    }
    if bind_if_used(&mut a, allow) {
        a.ret(1);
    }
    a.finish()
}

/// Where the wall keeps the packet's network header (up to 40 bytes) and its two ports.
const HDR: i16 = -48;
const PORTS: i16 = -8;

/// Copies `len` bytes of the packet at the offset in `offset_reg` (or `offset` if None) to
/// the stack at `to`; r0 is the helper's result.
fn load_bytes(a: &mut Asm, offset_reg: Option<u8>, offset: i32, to: i16, len: i32) {
    a.op(insn(bpf::MOV64_X, 1, CTX, 0, 0));
    match offset_reg {
        Some(r) => a.op(insn(bpf::MOV64_X, 2, r, 0, 0)),
        None => a.op(insn(bpf::MOV64_K, 2, 0, 0, offset)),
    }
    a.op(insn(bpf::MOV64_X, 3, FP, 0, 0));
    a.op(insn(bpf::ALU64_ADD_K, 3, 0, 0, to as i32));
    a.op(insn(bpf::MOV64_K, 4, 0, 0, len));
    a.op(insn(bpf::CALL, 0, 0, 0, BPF_FUNC_SKB_LOAD_BYTES));
}

/// The ingress (or egress) wall: a packet passes if its remote end is in the connect set or
/// its local end in the bind set (addresses as on the wire: no wildcards). Returns 1 to pass,
/// 0 to drop. A packet it cannot read is dropped.
fn wall(policy: &Policy, ingress: bool) -> Vec<Insn> {
    let mut a = Asm::default();
    let pass = a.label();
    let drop = a.label();
    let v4 = a.label();
    let v6 = a.label();
    a.op(insn(bpf::MOV64_X, CTX, 1, 0, 0));
    load_bytes(&mut a, None, 0, HDR, 20);
    a.jump_if(bpf::JNE_K, 0, 0, drop);
    a.op(insn(bpf::ST_MEM_W, FP, 0, PORTS, 0));
    a.op(insn(bpf::LDX_MEM_B, 7, FP, HDR, 0));
    a.op(insn(bpf::MOV32_X, 8, 7, 0, 0));
    a.op(insn(bpf::ALU32_RSH_K, 8, 0, 0, 4));
    a.jump_if(bpf::JMP32_JEQ_K, 8, 4, v4);
    a.jump_if(bpf::JMP32_JEQ_K, 8, 6, v6);
    a.goto(drop);
    // Source then destination; the ports the same way round.
    let endpoints = |addr_src: i16, addr_dst: i16, v6: bool| {
        let src = At {
            base: FP,
            addr: addr_src,
            v6,
            port: PORTS,
            port_word: false,
        };
        let dst = At {
            addr: addr_dst,
            port: PORTS + 2,
            ..src
        };
        if ingress {
            (src, dst)
        } else {
            (dst, src)
        }
    };
    let decide = |a: &mut Asm, (remote, local): (At, At)| {
        if member(a, &connect_set(policy, false), remote, pass)
            && member(a, &bind_set(policy, false), local, pass)
        {
            a.goto(drop);
        }
    };
    // IPv4: header length from the low nibble; TCP and UDP ports follow the header.
    a.bind(v4);
    a.op(insn(bpf::ALU32_AND_K, 7, 0, 0, 0xf));
    a.op(insn(bpf::ALU32_LSH_K, 7, 0, 0, 2));
    a.jump_if(bpf::JMP32_JLT_K, 7, 20, drop);
    let have4 = a.label();
    let ports4 = a.label();
    a.op(insn(bpf::LDX_MEM_B, 8, FP, HDR + 9, 0));
    a.jump_if(bpf::JMP32_JEQ_K, 8, libc::IPPROTO_TCP, ports4);
    a.jump_if(bpf::JMP32_JEQ_K, 8, libc::IPPROTO_UDP, ports4);
    a.goto(have4);
    a.bind(ports4);
    load_bytes(&mut a, Some(7), 0, PORTS, 4);
    a.bind(have4);
    decide(&mut a, endpoints(HDR + 12, HDR + 16, false));
    // IPv6: the fixed 40-byte header; ports when the next header is TCP or UDP.
    a.bind(v6);
    load_bytes(&mut a, None, 0, HDR, 40);
    a.jump_if(bpf::JNE_K, 0, 0, drop);
    let have6 = a.label();
    let ports6 = a.label();
    a.op(insn(bpf::LDX_MEM_B, 8, FP, HDR + 6, 0));
    a.jump_if(bpf::JMP32_JEQ_K, 8, libc::IPPROTO_TCP, ports6);
    a.jump_if(bpf::JMP32_JEQ_K, 8, libc::IPPROTO_UDP, ports6);
    a.goto(have6);
    a.bind(ports6);
    load_bytes(&mut a, None, 40, PORTS, 4);
    a.bind(have6);
    decide(&mut a, endpoints(HDR + 8, HDR + 24, true));
    a.bind(drop);
    a.ret(0);
    if bind_if_used(&mut a, pass) {
        a.ret(1);
    }
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
        assert!(needed(&p("network = \"any\"\nbind = [\"*:8080\"]")));
    }

    /// Every program of a few policies passes the kernel's verifier (root only: loading
    /// needs CAP_BPF). The integration tests show what they decide.
    #[test]
    fn the_programs_load() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: loading BPF programs needs root");
            return;
        }
        let o = std::path::Path::new("p.toml");
        for text in [
            "network = \"loopback\"",
            "network = \"loopback\"\nconnect = [\"127.0.0.1:5432\", \"[::1]:80-90\"]\nbind = [\"*:8000-8099\"]",
            "network = \"any\"\nconnect = [\"10.0.0.0/8:*\", \"[2001:db8::]/32:443\"]",
            "network = \"any\"\nbind = [\"0.0.0.0:80\", \"[::]:80\"]",
        ] {
            let policy = Policy::parse(text, o).unwrap();
            for (t, at, prog) in [
                (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, sock_addr(&policy, Hook::Connect, false)),
                (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_CONNECT, sock_addr(&policy, Hook::Connect, true)),
                (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_BIND, sock_addr(&policy, Hook::Bind, false)),
                (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_BIND, sock_addr(&policy, Hook::Bind, true)),
                (BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_INGRESS, wall(&policy, true)),
                (BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS, wall(&policy, false)),
            ] {
                if let Err(e) = bpf::load(t, at, &prog) {
                    panic!("{text}: program {at}: {e}");
                }
            }
        }
        if unix_hooks_supported() {
            let prog = unix_sendmsg(u64::MAX - 1, 2);
            if let Err(e) = bpf::load(
                BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                BPF_CGROUP_UNIX_SENDMSG,
                &prog,
            ) {
                panic!("Unix sendmsg: {e}");
            }
        }
    }
}
