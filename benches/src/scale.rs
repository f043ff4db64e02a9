//! Many containers up and down, one and two at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::bundles::container_id;
use crate::memory::container_pids;
use crate::ms;
use crate::runtime::Runtime;

/// N containers up, then down: one at a time and two at a time; then a leak check.
pub(crate) fn scale(
    rt: &Runtime,
    ri: usize,
    count: usize,
    bundle: &str,
    rootfs: &Path,
) -> Result<Value> {
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    let ids: Vec<String> = (0..count).map(|i| container_id("scl", ri, i)).collect();
    let t = Instant::now();
    for id in &ids {
        rt.ok(&["run", "--detach", "--bundle", bundle, id])?;
    }
    let seq_up = ms(t.elapsed());
    let t = Instant::now();
    for id in &ids {
        rt.force_delete(id)?;
    }
    let seq_down = ms(t.elapsed());
    let halves: Vec<Vec<String>> = ids.chunks(count.div_ceil(2)).map(|c| c.to_vec()).collect();
    let parallel = |f: &(dyn Fn(&str) -> Result<()> + Sync)| -> Result<f64> {
        let t = Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = halves
                .iter()
                .map(|h| s.spawn(move || h.iter().try_for_each(|id| f(id))))
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
        })?;
        Ok(ms(t.elapsed()))
    };
    let par_up = parallel(&|id| rt.ok(&["run", "--detach", "--bundle", bundle, id]))?;
    let par_down = parallel(&|id| rt.force_delete(id).map(|_| ()))?;
    // Leak check: mounts, state dirs, processes, cgroups. Some runtimes finish removing
    // cgroups just after their CLI returns; give everyone the same 2 s grace.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && (cgroup_dirs_named(&ids) > 0
            || ids.iter().any(|id| !container_pids(rootfs, id).is_empty()))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut leaks = Vec::new();
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    if mounts_after != mounts_before {
        leaks.push(format!(
            "{} mounts",
            mounts_after as i64 - mounts_before as i64
        ));
    }
    let left: Vec<String> = std::fs::read_dir(&rt.root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| ids.contains(n))
        .collect();
    if !left.is_empty() {
        leaks.push(format!("{} state dirs", left.len()));
    }
    let procs = ids
        .iter()
        .map(|id| container_pids(rootfs, id).len())
        .sum::<usize>();
    if procs > 0 {
        leaks.push(format!("{procs} processes"));
    }
    let cgroups = cgroup_dirs_named(&ids);
    if cgroups > 0 {
        leaks.push(format!("{cgroups} cgroups"));
    }
    Ok(json!({
        "containers": count,
        "sequential_up_ms": seq_up, "sequential_down_ms": seq_down,
        "two_at_a_time_up_ms": par_up, "two_at_a_time_down_ms": par_down,
        "leaks": leaks,
    }))
}

fn cgroup_dirs_named(ids: &[String]) -> usize {
    let mut n = 0;
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return 0;
    };
    for c in ctrls.flatten() {
        for sub in ["", "strata", "machine.slice"] {
            let base = c.path().join(sub);
            n += ids.iter().filter(|id| base.join(id).exists()).count();
        }
    }
    n
}
