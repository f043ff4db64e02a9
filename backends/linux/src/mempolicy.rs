//! `linux.memoryPolicy`: the NUMA memory policy of the container's process, set with
//! set_mempolicy(2) by the init before execve (a policy is inherited across fork and execve).

use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType};

use crate::error::{Error, Result};

const FIELD: &str = "linux.memoryPolicy";
/// Enough for any node number a machine has today (the kernel's MAX_NUMNODES is 1024).
const MAX_NODE: usize = 1023;

fn mode_number(m: MemoryPolicyModeType) -> i32 {
    match m {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    }
}

fn flag_bits(f: MemoryPolicyFlagType) -> i32 {
    match f {
        MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
        MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
    }
}

/// A node list as the kernel's cpuset syntax writes it (`0-3,5`) as a bitmask of words.
fn node_mask(nodes: &str) -> Result<Vec<libc::c_ulong>> {
    let bits = libc::c_ulong::BITS as usize;
    let mut mask = vec![0 as libc::c_ulong; (MAX_NODE + 1) / bits];
    let bad = |why: String| Error::config(format!("{FIELD}.nodes"), why);
    for part in nodes.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("{part:?} is not a node number or range")))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi || hi > MAX_NODE {
            return Err(bad(format!(
                "{part:?} is not a range of nodes 0 to {MAX_NODE}"
            )));
        }
        for n in lo..=hi {
            mask[n / bits] |= 1 << (n % bits);
        }
    }
    Ok(mask)
}

/// The arguments of set_mempolicy(2), checked: refused here rather than at execve.
fn arguments(p: &LinuxMemoryPolicy) -> Result<(i32, Vec<libc::c_ulong>)> {
    let mode = mode_number(p.mode())
        | p.flags()
            .iter()
            .flatten()
            .map(|f| flag_bits(*f))
            .sum::<i32>();
    let mask = node_mask(p.nodes().as_deref().unwrap_or(""))?;
    let empty = mask.iter().all(|w| *w == 0);
    match p.mode() {
        MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal if !empty => Err(
            Error::config(FIELD, format!("{:?} takes no nodes", p.mode())),
        ),
        MemoryPolicyModeType::MpolBind
        | MemoryPolicyModeType::MpolInterleave
        | MemoryPolicyModeType::MpolWeightedInterleave
        | MemoryPolicyModeType::MpolPreferredMany
            if empty =>
        {
            Err(Error::config(FIELD, format!("{:?} needs nodes", p.mode())))
        }
        _ => Ok((mode, mask)),
    }
}

pub fn validate(p: &LinuxMemoryPolicy) -> Result<()> {
    arguments(p).map(|_| ())
}

/// Sets the policy for the calling process.
pub fn apply(p: &LinuxMemoryPolicy) -> Result<()> {
    let (mode, mask) = arguments(p)?;
    // The kernel reads one bit less than `maxnode` says (an off-by-one kept for
    // compatibility, as numactl allows for): one more, so that node MAX_NODE counts.
    let maxnode = (mask.len() * libc::c_ulong::BITS as usize + 1) as libc::c_ulong;
    // SAFETY: set_mempolicy reads maxnode - 1 bits from `mask`, exactly the bits it holds;
    // the mask lives until the call returns.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask.as_ptr(), maxnode) };
    if r != 0 {
        return Err(Error::config(
            FIELD,
            format!("set_mempolicy: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_become_masks_and_bad_ones_are_refused() {
        let m = node_mask("0-2,5").unwrap();
        assert_eq!(m[0], 0b100111);
        assert!(node_mask("3-1").is_err());
        assert!(node_mask("x").is_err());
        assert!(node_mask("4096").is_err());
        let p: LinuxMemoryPolicy = serde_json::from_str(r#"{"mode": "MPOL_BIND"}"#).unwrap();
        assert!(validate(&p).is_err(), "bind needs nodes");
        let p: LinuxMemoryPolicy = serde_json::from_str(
            r#"{"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES"]}"#,
        )
        .unwrap();
        assert_eq!(arguments(&p).unwrap().0, 1 | (1 << 14));
    }
}
