//! The memory controller: limit, reservation, swap (memory+swap in the spec, swap alone on
//! v2), and on v1 swappiness, the OOM killer and useHierarchy.

use oci_spec::runtime::LinuxMemory;

use super::{limit_v1, limit_v2, write, Controllers};
use crate::error::{Error, Result};

pub(super) fn memory(c: &Controllers, m: &LinuxMemory) -> Result<()> {
    let f = "linux.resources.memory";
    // -1 is the spec's "unlimited"; any other negative value is a mistake, not a wish for
    // no limit.
    for (name, v) in [
        ("limit", m.limit()),
        ("reservation", m.reservation()),
        ("swap", m.swap()),
    ] {
        if let Some(v) = v.filter(|v| *v < -1) {
            return Err(Error::config(
                format!("{f}.{name}"),
                format!("{v} is negative (use -1 for no limit)"),
            ));
        }
    }
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!("linux.resources.memory.kernel and kernelTCP are not supported by the kernel and are ignored");
    }
    let d = c.require("memory", f)?;
    if d.unified {
        if let Some(l) = m.limit() {
            write(&d.dir, "memory.max", &limit_v2(l), &format!("{f}.limit"))?;
        }
        if let Some(r) = m.reservation() {
            write(
                &d.dir,
                "memory.low",
                &limit_v2(r),
                &format!("{f}.reservation"),
            )?;
        }
        if let Some(s) = m.swap() {
            // OCI swap is memory+swap (v1 semantics); v2 limits swap alone.
            let v = match (s, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(Error::config(
                            format!("{f}.swap"),
                            format!("memory+swap {s} is below the memory limit {l}"),
                        ));
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            write(&d.dir, "memory.swap.max", &v, &format!("{f}.swap"))?;
        }
        if m.swappiness().is_some() {
            tracing::warn!("{f}.swappiness has no cgroup v2 equivalent and is ignored");
        }
        if m.disable_oom_killer() == Some(true) {
            tracing::warn!("{f}.disableOOMKiller has no cgroup v2 equivalent and is ignored");
        }
        return Ok(());
    }
    // v1: memory+swap must never be below memory, so the order depends on the direction.
    let set_limit = |l: i64| {
        write(
            &d.dir,
            "memory.limit_in_bytes",
            &limit_v1(l),
            &format!("{f}.limit"),
        )
    };
    let set_swap = |s: i64| {
        write(
            &d.dir,
            "memory.memsw.limit_in_bytes",
            &limit_v1(s),
            &format!("{f}.swap"),
        )
    };
    match (m.limit(), m.swap()) {
        (Some(l), Some(s)) => {
            if set_limit(l).is_err() {
                set_swap(s)?;
                set_limit(l)?;
            } else {
                set_swap(s)?;
            }
        }
        (Some(l), None) => set_limit(l)?,
        (None, Some(s)) => set_swap(s)?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation() {
        write(
            &d.dir,
            "memory.soft_limit_in_bytes",
            &limit_v1(r),
            &format!("{f}.reservation"),
        )?;
    }
    if let Some(sw) = m.swappiness() {
        if sw > 100 {
            return Err(Error::config(
                format!("{f}.swappiness"),
                format!("{sw} is above 100"),
            ));
        }
        write(
            &d.dir,
            "memory.swappiness",
            &sw.to_string(),
            &format!("{f}.swappiness"),
        )?;
    }
    if let Some(dis) = m.disable_oom_killer() {
        write(
            &d.dir,
            "memory.oom_control",
            if dis { "1" } else { "0" },
            &format!("{f}.disableOOMKiller"),
        )?;
    }
    if let Some(h) = m.use_hierarchy() {
        // Always 1 on current kernels; writing 0 fails, so only a request for 1 is written.
        if h {
            write(
                &d.dir,
                "memory.use_hierarchy",
                "1",
                &format!("{f}.useHierarchy"),
            )?;
        }
    }
    Ok(())
}
