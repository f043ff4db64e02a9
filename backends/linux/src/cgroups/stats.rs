//! Container statistics in runc's `events` JSON shape, read from v1 or v2 files.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resources::Controllers;
use super::CgroupSet;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total: u64,
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttling {
    pub periods: u64,
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    pub current: u64,
    pub limit: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Blkio {
    #[serde(rename = "ioServiceBytesRecursive")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

fn num(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| {
            let s = s.trim();
            if s == "max" {
                Some(u64::MAX)
            } else {
                s.parse().ok()
            }
        })
        .unwrap_or(0)
}

fn kv(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

pub fn read(set: &CgroupSet) -> Stats {
    let c = Controllers::new(set);
    let mut s = Stats::default();
    if let Some(d) = c.dir("cpuacct").or_else(|| c.dir("cpu")) {
        let dir = &d.dir;
        if d.unified {
            let st = kv(dir, "cpu.stat");
            let g = |k: &str| st.get(k).copied().unwrap_or(0);
            s.cpu.usage.total = g("usage_usec") * 1000;
            s.cpu.usage.user = g("user_usec") * 1000;
            s.cpu.usage.kernel = g("system_usec") * 1000;
            s.cpu.throttling.periods = g("nr_periods");
            s.cpu.throttling.throttled_periods = g("nr_throttled");
            s.cpu.throttling.throttled_time = g("throttled_usec") * 1000;
        } else {
            s.cpu.usage.total = num(dir, "cpuacct.usage");
            s.cpu.usage.percpu = fs::read_to_string(dir.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // cpuacct.stat is in USER_HZ ticks.
            let st = kv(dir, "cpuacct.stat");
            s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * 10_000_000;
            s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * 10_000_000;
        }
    }
    if let Some(d) = c.dir("cpu") {
        if !d.unified {
            let st = kv(&d.dir, "cpu.stat");
            s.cpu.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
            s.cpu.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            s.cpu.throttling.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
        }
    }
    if let Some(d) = c.dir("memory") {
        let dir = &d.dir;
        if d.unified {
            s.memory.usage = MemoryEntry {
                usage: num(dir, "memory.current"),
                limit: num(dir, "memory.max"),
                max: num(dir, "memory.peak"),
                failcnt: kv(dir, "memory.events").get("max").copied().unwrap_or(0),
            };
            s.memory.swap = MemoryEntry {
                usage: num(dir, "memory.swap.current"),
                limit: num(dir, "memory.swap.max"),
                ..Default::default()
            };
            s.memory.raw = kv(dir, "memory.stat");
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        } else {
            let entry = |p: &str| MemoryEntry {
                usage: num(dir, &format!("{p}.usage_in_bytes")),
                limit: num(dir, &format!("{p}.limit_in_bytes")),
                max: num(dir, &format!("{p}.max_usage_in_bytes")),
                failcnt: num(dir, &format!("{p}.failcnt")),
            };
            s.memory.usage = entry("memory");
            s.memory.swap = entry("memory.memsw");
            s.memory.kernel = entry("memory.kmem");
            s.memory.raw = kv(dir, "memory.stat");
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
    }
    if let Some(d) = c.dir("pids") {
        s.pids.current = num(&d.dir, "pids.current");
        s.pids.limit = num(&d.dir, "pids.max");
        if s.pids.limit == u64::MAX {
            s.pids.limit = 0;
        }
    }
    if let Some(d) = c.dir("blkio") {
        for (file, list) in [
            (
                "blkio.throttle.io_service_bytes_recursive",
                &mut s.blkio.io_service_bytes_recursive,
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                &mut s.blkio.io_serviced_recursive,
            ),
        ] {
            for line in fs::read_to_string(d.dir.join(file))
                .unwrap_or_default()
                .lines()
            {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() != 3 {
                    continue;
                }
                let Some((maj, min)) = f[0].split_once(':') else {
                    continue;
                };
                list.push(BlkioEntry {
                    major: maj.parse().unwrap_or(0),
                    minor: min.parse().unwrap_or(0),
                    op: f[1].to_string(),
                    value: f[2].parse().unwrap_or(0),
                });
            }
        }
    } else if let Some(d) = c.dir("io") {
        for line in fs::read_to_string(d.dir.join("io.stat"))
            .unwrap_or_default()
            .lines()
        {
            let mut it = line.split_whitespace();
            let Some((maj, min)) = it.next().and_then(|x| x.split_once(':')) else {
                continue;
            };
            for pair in it {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let (list, op) = match k {
                    "rbytes" => (&mut s.blkio.io_service_bytes_recursive, "Read"),
                    "wbytes" => (&mut s.blkio.io_service_bytes_recursive, "Write"),
                    "rios" => (&mut s.blkio.io_serviced_recursive, "Read"),
                    "wios" => (&mut s.blkio.io_serviced_recursive, "Write"),
                    _ => continue,
                };
                list.push(BlkioEntry {
                    major: maj.parse().unwrap_or(0),
                    minor: min.parse().unwrap_or(0),
                    op: op.into(),
                    value: v.parse().unwrap_or(0),
                });
            }
        }
    }
    if let Some(d) = c.dir("hugetlb") {
        if let Ok(rd) = fs::read_dir(&d.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let size = if d.unified {
                    name.strip_prefix("hugetlb.")
                        .and_then(|n| n.strip_suffix(".current"))
                } else {
                    name.strip_prefix("hugetlb.")
                        .and_then(|n| n.strip_suffix(".usage_in_bytes"))
                };
                let Some(size) = size else { continue };
                if size.contains('.') {
                    continue;
                }
                let h = if d.unified {
                    Hugetlb {
                        usage: num(&d.dir, &format!("hugetlb.{size}.current")),
                        max: num(&d.dir, &format!("hugetlb.{size}.max")),
                        failcnt: kv(&d.dir, &format!("hugetlb.{size}.events"))
                            .get("max")
                            .copied()
                            .unwrap_or(0),
                    }
                } else {
                    Hugetlb {
                        usage: num(&d.dir, &format!("hugetlb.{size}.usage_in_bytes")),
                        max: num(&d.dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                        failcnt: num(&d.dir, &format!("hugetlb.{size}.failcnt")),
                    }
                };
                s.hugetlb.insert(size.to_string(), h);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{CgroupDir, CgroupSet};

    #[test]
    fn reads_v2_files() {
        let dir = std::env::temp_dir().join(format!("strata-stats-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\nthrottled_usec 7\n").unwrap();
        fs::write(dir.join("memory.current"), "4096\n").unwrap();
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(dir.join("memory.stat"), "anon 100\nfile 200\n").unwrap();
        fs::write(dir.join("pids.current"), "3\n").unwrap();
        fs::write(dir.join("pids.max"), "10\n").unwrap();
        fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        )
        .unwrap();
        fs::write(dir.join("hugetlb.2MB.current"), "0\n").unwrap();
        fs::write(dir.join("hugetlb.2MB.max"), "max\n").unwrap();
        let set = CgroupSet {
            path: "/x".into(),
            dirs: vec![CgroupDir {
                dir: dir.clone(),
                mount_point: dir.clone(),
                name: String::new(),
                created: vec![],
                unified: true,
                controllers: ["cpu", "memory", "pids", "io", "hugetlb"]
                    .map(String::from)
                    .to_vec(),
            }],
        };
        let s = read(&set);
        assert_eq!(s.cpu.usage.total, 1_500_000);
        assert_eq!(s.cpu.usage.kernel, 500_000);
        assert_eq!(s.cpu.throttling.throttled_periods, 1);
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.failcnt, 2);
        assert_eq!(s.memory.cache, 200);
        assert_eq!(s.pids.current, 3);
        assert_eq!(s.pids.limit, 10);
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(s.blkio.io_serviced_recursive[1].value, 2);
        assert!(s.hugetlb.contains_key("2MB"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
