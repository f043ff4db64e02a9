//! `process.execCPUAffinity` (runtime-spec 1.3) of an exec'd process: the CPUs its setup runs
//! on until it has joined the container's cgroups (`initial`), and the CPUs the process runs
//! on from then on (`final`). Without `final` the affinity stays what the kernel makes it when
//! the process joins the cgroups (a v1 cpuset resets it to the cpuset's CPUs). The spec keeps
//! the container's init out of it.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct ExecAffinity {
    initial: Option<CpuSet>,
    last: Option<CpuSet>,
}

const INITIAL: &str = "process.execCPUAffinity.initial";
const FINAL: &str = "process.execCPUAffinity.final";

impl ExecAffinity {
    pub fn of(p: &Process) -> Result<ExecAffinity> {
        let Some(a) = p.exec_cpu_affinity() else {
            return Ok(ExecAffinity::default());
        };
        let set = |field, list: &Option<String>| {
            list.as_deref()
                .filter(|l| !l.is_empty())
                .map(|l| parse(field, l))
                .transpose()
        };
        Ok(ExecAffinity {
            initial: set(INITIAL, a.initial())?,
            last: set(FINAL, a.cpu_affinity_final())?,
        })
    }

    /// Runs `spawn` (the clone of the setup process, which inherits the calling thread's
    /// affinity) with the calling thread on the `initial` CPUs, then puts the thread back.
    pub fn spawning<T>(&self, spawn: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(initial) = &self.initial else {
            return spawn();
        };
        // runc's debug line has these words; conformance suites look for them.
        tracing::debug!(
            "exec: the setup runs on the initial CPUs until it is in the container's cgroups (affinity: {:#x})",
            low_mask(initial)
        );
        let own = sched_getaffinity(Pid::from_raw(0))
            .map_err(|e| Error::config(INITIAL, format!("reading this thread's affinity: {e}")))?;
        set(INITIAL, initial)?;
        let spawned = spawn();
        let _ = sched_setaffinity(Pid::from_raw(0), &own);
        spawned
    }

    /// In the process, once it is in the container's cgroups.
    pub fn apply_final(&self) -> Result<()> {
        match &self.last {
            Some(cpus) => set(FINAL, cpus),
            None => Ok(()),
        }
    }
}

fn set(field: &str, cpus: &CpuSet) -> Result<()> {
    sched_setaffinity(Pid::from_raw(0), cpus).map_err(|e| {
        Error::config(
            field,
            format!("cannot run on these CPUs ({e}: none of them is allowed here)"),
        )
    })
}

/// CPUs 0 to 63 of `set` as a bit mask.
fn low_mask(set: &CpuSet) -> u64 {
    (0..64)
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .fold(0, |m, c| m | 1 << c)
}

/// "0-3,7": CPUs 0 to 3 and 7.
fn parse(field: &str, list: &str) -> Result<CpuSet> {
    let bad = |why: String| Error::config(field, format!("{list:?}: {why}"));
    let mut set = CpuSet::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("{part:?} is not a CPU number or range")))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi {
            return Err(bad(format!("the range {part} is backwards")));
        }
        for cpu in lo..=hi {
            set.set(cpu).map_err(|_| {
                bad(format!(
                    "CPU {cpu} is beyond the {} this host can name",
                    CpuSet::count()
                ))
            })?;
        }
    }
    Ok(set)
}

/// Checks the lists at create, so that a bad one fails there and not at every exec.
pub fn validate(p: &Process) -> Result<()> {
    ExecAffinity::of(p).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_spec_writes_them() {
        let s = parse(FINAL, "0-2,5").unwrap();
        for cpu in 0..8 {
            assert_eq!(s.is_set(cpu).unwrap(), [0, 1, 2, 5].contains(&cpu), "{cpu}");
        }
        assert_eq!(low_mask(&s), 0b10_0111);
        for bad in ["3-1", "x", "1,", "-1", "99999"] {
            let err = parse(FINAL, bad).unwrap_err().to_string();
            assert!(err.contains(FINAL), "{bad}: {err}");
        }
    }
}
