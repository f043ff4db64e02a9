//! Device access rules (`linux.resources.devices`): v1 `devices.allow`/`devices.deny`, and on
//! v2 an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup.
//!
//! The program is assembled here from a handful of instructions with raw bpf(2): the rule
//! language is tiny (type, major, minor, access; last match wins), and a BPF crate (aya,
//! libbpf-rs) would bring a loader, BTF handling and a build-time toolchain for ~60
//! instructions of straight-line code.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::resources::write;
use super::CgroupDir;
use crate::error::{Error, Result};

/// A rule in kernel terms: type 'a' | 'b' | 'c', major/minor (None = any), access bits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub allow: bool,
    pub typ: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

impl Rule {
    fn from_oci(d: &LinuxDeviceCgroup) -> Result<Rule> {
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => 'a',
            Some(LinuxDeviceType::B) => 'b',
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
            Some(LinuxDeviceType::P) => {
                return Err(Error::config(
                    "linux.resources.devices",
                    "type \"p\" (fifo) cannot be a cgroup device rule",
                ))
            }
        };
        let access = d.access().clone().unwrap_or_else(|| "rwm".into());
        if access.is_empty() || access.chars().any(|c| !"rwm".contains(c)) {
            return Err(Error::config(
                "linux.resources.devices",
                format!("access {access:?} must be made of r, w and m"),
            ));
        }
        Ok(Rule {
            allow: d.allow(),
            typ,
            major: d.major().filter(|m| *m >= 0),
            minor: d.minor().filter(|m| *m >= 0),
            access,
        })
    }

    fn v1_line(&self) -> String {
        let n = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "*".into());
        if self.typ == 'a' {
            // The kernel reads "a" alone as every device and every access.
            return "a".into();
        }
        format!(
            "{} {}:{} {}",
            self.typ,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

fn allow(typ: char, major: Option<i64>, minor: Option<i64>) -> Rule {
    Rule {
        allow: true,
        typ,
        major,
        minor,
        access: "rwm".into(),
    }
}

/// Devices every container may use whatever the spec says (runc's list): mknod of anything,
/// the standard character devices, ptys, and /dev/net/tun.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            access: "m".into(),
            ..allow('c', None, None)
        },
        Rule {
            access: "m".into(),
            ..allow('b', None, None)
        },
        allow('c', Some(1), Some(3)),
        allow('c', Some(1), Some(5)),
        allow('c', Some(1), Some(7)),
        allow('c', Some(1), Some(8)),
        allow('c', Some(1), Some(9)),
        allow('c', Some(5), Some(0)),
        allow('c', Some(5), Some(1)),
        allow('c', Some(5), Some(2)),
        allow('c', Some(136), None),
        allow('c', Some(10), Some(200)),
    ]
}

/// Whether `rules` let a process open (access "r", "w" or "rw") or make ("m") the device
/// `typ` ('c' or 'b') `major:minor`: as the v2 program decides it, the last rule that
/// matches (type, numbers, and every requested access in the rule's) wins, and none denies.
pub fn permits(rules: &[Rule], typ: char, major: i64, minor: i64, access: &str) -> bool {
    for r in rules.iter().rev() {
        if r.typ != 'a' {
            let numbers = r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor);
            if r.typ != typ || !numbers || !access.chars().all(|c| r.access.contains(c)) {
                continue;
            }
        }
        return r.allow;
    }
    false
}

/// The rules to enforce: the spec's, then the defaults and the spec's own `linux.devices`.
pub fn rules(
    spec_rules: &[LinuxDeviceCgroup],
    linux_devices: &[oci_spec::runtime::LinuxDevice],
) -> Result<Vec<Rule>> {
    let mut out: Vec<Rule> = spec_rules
        .iter()
        .map(Rule::from_oci)
        .collect::<Result<_>>()?;
    out.extend(default_rules());
    for d in linux_devices {
        let typ = match d.typ() {
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            _ => continue,
        };
        out.push(allow(typ, Some(d.major()), Some(d.minor())));
    }
    Ok(out)
}

/// v1: write the rules in order; each write changes the allow-list the way the next line
/// expects, so the last matching rule wins as on v2.
pub fn apply_v1(dir: &CgroupDir, rules: &[Rule]) -> Result<()> {
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(&dir.dir, file, &r.v1_line(), "linux.resources.devices")?;
    }
    Ok(())
}

// --- v2: eBPF -----------------------------------------------------------------------------

use super::bpf::{
    insn, Insn, ALU32_AND_K as BPF_ALU32_AND_K, ALU32_RSH_K as BPF_ALU32_RSH_K, EXIT as BPF_EXIT,
    JNE_K as BPF_JNE_K, JNE_X as BPF_JNE_X, LDX_MEM_W as BPF_LDX_MEM_W, MOV32_K as BPF_MOV32_K,
    MOV32_X as BPF_MOV32_X,
};

// Device types and access bits of struct bpf_cgroup_dev_ctx.
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_MKNOD: i32 = 1;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

/// Assembles the program: load type, access, major, minor from the context, then test the
/// rules last to first (the last matching rule decides), denying when none matches.
pub fn assemble(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(BPF_LDX_MEM_W, 2, 1, 0, 0),        // r2 = ctx->access_type
        insn(BPF_MOV32_X, 3, 2, 0, 0),          // r3 = r2
        insn(BPF_ALU32_AND_K, 3, 0, 0, 0xffff), // r3 = type
        insn(BPF_ALU32_RSH_K, 2, 0, 0, 16),     // r2 = access
        insn(BPF_LDX_MEM_W, 4, 1, 4, 0),        // r4 = major
        insn(BPF_LDX_MEM_W, 5, 1, 8, 0),        // r5 = minor
    ];
    for r in rules.iter().rev() {
        let mut block = Vec::new();
        match r.typ {
            'b' => block.push(insn(BPF_JNE_K, 3, 0, 0, DEVCG_DEV_BLOCK)),
            'c' => block.push(insn(BPF_JNE_K, 3, 0, 0, DEVCG_DEV_CHAR)),
            _ => {}
        }
        let mut acc = 0;
        for ch in r.access.chars() {
            acc |= match ch {
                'r' => DEVCG_ACC_READ,
                'w' => DEVCG_ACC_WRITE,
                _ => DEVCG_ACC_MKNOD,
            };
        }
        if r.typ != 'a' && acc != DEVCG_ACC_READ | DEVCG_ACC_WRITE | DEVCG_ACC_MKNOD {
            // Matches only if every requested access bit is in the rule: (r2 & acc) == r2.
            block.push(insn(BPF_MOV32_X, 6, 2, 0, 0));
            block.push(insn(BPF_ALU32_AND_K, 6, 0, 0, acc));
            block.push(insn(BPF_JNE_X, 6, 2, 0, 0));
        }
        if r.typ != 'a' {
            if let Some(m) = r.major {
                block.push(insn(BPF_JNE_K, 4, 0, 0, m as i32));
            }
            if let Some(m) = r.minor {
                block.push(insn(BPF_JNE_K, 5, 0, 0, m as i32));
            }
        }
        block.push(insn(BPF_MOV32_K, 0, 0, 0, r.allow as i32));
        block.push(insn(BPF_EXIT, 0, 0, 0, 0));
        // Every conditional jump skips to the end of this block.
        let len = block.len();
        let mut conditional = false;
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == BPF_JNE_K || ins.code == BPF_JNE_X {
                ins.off = (len - i - 1) as i16;
                conditional = true;
            }
        }
        p.extend(block);
        if !conditional {
            // This rule matches everything: earlier rules can never decide, and the
            // verifier rejects unreachable instructions.
            return p;
        }
    }
    p.push(insn(BPF_MOV32_K, 0, 0, 0, 0));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_OVERRIDE: u32 = 1;

/// v2: attach the rules as a device program to the cgroup, replacing a previous one of ours.
pub fn apply_v2(dir: &CgroupDir, rules: &[Rule]) -> Result<()> {
    let what = "linux.resources.devices";
    let prog = super::bpf::load(BPF_PROG_TYPE_CGROUP_DEVICE, 0, &assemble(rules))
        .map_err(|e| Error::config(what, format!("loading the device filter: {e}")))?;
    super::bpf::attach(&dir.dir, &prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_OVERRIDE)
        .map_err(|e| Error::config(what, format!("the device filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let r = Rule {
            allow: false,
            typ: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        };
        assert_eq!(r.v1_line(), "a");
        assert_eq!(allow('c', Some(1), Some(3)).v1_line(), "c 1:3 rwm");
        assert_eq!(allow('c', Some(136), None).v1_line(), "c 136:* rwm");
    }

    #[test]
    fn rules_decide_as_the_last_match() {
        let deny_all = Rule {
            allow: false,
            typ: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        };
        let mut rules = vec![deny_all];
        rules.extend(default_rules());
        // /dev/null yes, /dev/kvm (10:232) no, any device may be made.
        assert!(permits(&rules, 'c', 1, 3, "rw"));
        assert!(!permits(&rules, 'c', 10, 232, "r"));
        assert!(permits(&rules, 'c', 10, 232, "m"));
        assert!(!permits(&rules, 'b', 8, 0, "r"));
        rules.push(Rule {
            allow: true,
            typ: 'c',
            major: Some(10),
            minor: Some(232),
            access: "r".into(),
        });
        assert!(permits(&rules, 'c', 10, 232, "r"));
        assert!(!permits(&rules, 'c', 10, 232, "rw"));
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let rules = vec![
            Rule {
                allow: false,
                typ: 'a',
                major: None,
                minor: None,
                access: "rwm".into(),
            },
            Rule {
                allow: true,
                typ: 'c',
                major: Some(1),
                minor: Some(3),
                access: "r".into(),
            },
        ];
        let p = assemble(&rules);
        // prologue 6, rule c 1:3 r: type, 3 access, major, minor, mov, exit = 8; rule a: 2,
        // which matches everything, so no default tail follows.
        assert_eq!(p.len(), 6 + 8 + 2);
        assert_eq!(p[6].code, BPF_JNE_K);
        assert_eq!(p[6].off, 7, "type mismatch skips the rest of its block");
        assert_eq!(p[12].imm, 1, "allow");
        assert_eq!(p[14].imm, 0, "the deny-all rule");
    }
}
