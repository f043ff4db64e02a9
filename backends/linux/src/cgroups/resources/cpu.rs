//! The cpu and cpuset controllers: shares or weight, quota and period, burst, idle, realtime
//! limits (v1 only), and the cpus and memory nodes.

use oci_spec::runtime::LinuxCpu;

use super::{limit_v1, write, Controllers};
use crate::error::{Error, Result};

/// cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

pub(super) fn cpu(c: &Controllers, cpu: &LinuxCpu) -> Result<()> {
    let f = "linux.resources.cpu";
    // As for memory: -1 is "no quota", any other negative value a mistake that would
    // otherwise lift the limit.
    if let Some(q) = cpu.quota().filter(|q| *q < -1) {
        return Err(Error::config(
            format!("{f}.quota"),
            format!("{q} is not a quota (use -1 for none)"),
        ));
    }
    let wants_cpu = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
        || cpu.idle().is_some()
        || cpu.burst().is_some();
    if wants_cpu {
        let d = c.require("cpu", f)?;
        if d.unified {
            if let Some(s) = cpu.shares() {
                write(
                    &d.dir,
                    "cpu.weight",
                    &shares_to_weight(s).to_string(),
                    &format!("{f}.shares"),
                )?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let period = cpu.period().unwrap_or(100_000);
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                write(
                    &d.dir,
                    "cpu.max",
                    &format!("{quota} {period}"),
                    &format!("{f}.quota"),
                )?;
            }
            if let Some(b) = cpu.burst() {
                write(
                    &d.dir,
                    "cpu.max.burst",
                    &b.to_string(),
                    &format!("{f}.burst"),
                )?;
            }
            if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
                return Err(Error::config(
                    format!("{f}.realtimeRuntime"),
                    "realtime scheduling limits need cgroup v1",
                ));
            }
        } else {
            if let Some(s) = cpu.shares() {
                write(&d.dir, "cpu.shares", &s.to_string(), &format!("{f}.shares"))?;
            }
            if let Some(p) = cpu.period() {
                write(
                    &d.dir,
                    "cpu.cfs_period_us",
                    &p.to_string(),
                    &format!("{f}.period"),
                )?;
            }
            if let Some(q) = cpu.quota() {
                write(
                    &d.dir,
                    "cpu.cfs_quota_us",
                    &limit_v1(q),
                    &format!("{f}.quota"),
                )?;
            }
            if let Some(b) = cpu.burst() {
                write(
                    &d.dir,
                    "cpu.cfs_burst_us",
                    &b.to_string(),
                    &format!("{f}.burst"),
                )?;
            }
            // The runtime may only grow within the period, so the period goes first.
            if let Some(p) = cpu.realtime_period() {
                write(
                    &d.dir,
                    "cpu.rt_period_us",
                    &p.to_string(),
                    &format!("{f}.realtimePeriod"),
                )?;
            }
            if let Some(r) = cpu.realtime_runtime() {
                write(
                    &d.dir,
                    "cpu.rt_runtime_us",
                    &r.to_string(),
                    &format!("{f}.realtimeRuntime"),
                )?;
            }
        }
        if let Some(i) = cpu.idle() {
            write(&d.dir, "cpu.idle", &i.to_string(), &format!("{f}.idle"))?;
        }
    }
    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let d = c.require("cpuset", f)?;
        if let Some(cpus) = cpu.cpus() {
            write(&d.dir, "cpuset.cpus", cpus, &format!("{f}.cpus"))?;
        }
        if let Some(mems) = cpu.mems() {
            write(&d.dir, "cpuset.mems", mems, &format!("{f}.mems"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
