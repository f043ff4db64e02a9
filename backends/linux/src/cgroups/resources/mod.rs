//! Writing `linux.resources` into the container's cgroup: each controller is written in the
//! one directory that manages it (a v1 hierarchy, or the v2 one), with the v1 or v2 file
//! names and value conversions.
//!
//! One file per controller; this one has where each controller lives ([`Controllers`]), what
//! the spec sets dispatched to them ([`apply`]), rdma, the `unified` keys, and the zeros
//! Docker sends for "unset".

use std::fs;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{CgroupDir, CgroupSet};
use crate::error::{Error, Result};

mod blkio;
mod cpu;
mod hugetlb;
mod memory;
mod network;
mod pids;

pub use blkio::blkio_weight_to_io;
use blkio::block_io;
use cpu::cpu;
pub use cpu::shares_to_weight;
use hugetlb::hugetlb;
use memory::memory;
use network::network;
use pids::pids;

/// Writes `value` to `dir/file`, with an error naming the field, the file and the value.
pub(crate) fn write(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    fs::write(dir.join(file), value).map_err(|e| {
        Error::config(
            field,
            format!("writing {value:?} to {}: {e}", dir.join(file).display()),
        )
    })
}

fn read_trim(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Where each controller lives.
pub struct Controllers<'a> {
    set: &'a CgroupSet,
}

impl<'a> Controllers<'a> {
    pub fn new(set: &'a CgroupSet) -> Self {
        Controllers { set }
    }

    /// The directory managing `name`: a v1 hierarchy that mounts it, else the v2 cgroup if it
    /// has it enabled.
    pub fn dir(&self, name: &str) -> Option<&'a CgroupDir> {
        let v1 = self
            .set
            .dirs
            .iter()
            .find(|d| !d.unified && d.controllers.iter().any(|c| c == name));
        v1.or_else(|| {
            self.set
                .dirs
                .iter()
                .find(|d| d.unified && d.controllers.iter().any(|c| c == name))
        })
    }

    pub fn unified(&self) -> Option<&'a CgroupDir> {
        self.set.dirs.iter().find(|d| d.unified)
    }

    fn require(&self, name: &str, field: &str) -> Result<&'a CgroupDir> {
        self.dir(name).ok_or_else(|| {
            Error::config(
                field,
                format!("the {name} cgroup controller is not available on this host"),
            )
        })
    }
}

/// Applies every resource the spec sets. Kernel memory limits are ignored with a warning, as
/// runc does (the kernel no longer supports them).
pub fn apply(set: &CgroupSet, r: &LinuxResources) -> Result<()> {
    let c = Controllers::new(set);
    let r = &without_unset_zeros(r);
    if let Some(m) = r.memory() {
        memory(&c, m)?;
    }
    if let Some(cpu) = r.cpu() {
        self::cpu(&c, cpu)?;
    }
    if let Some(p) = r.pids() {
        pids(&c, p)?;
    }
    if let Some(b) = r.block_io() {
        block_io(&c, b)?;
    }
    if let Some(h) = r.hugepage_limits() {
        hugetlb(&c, h)?;
    }
    if let Some(n) = r.network() {
        network(&c, n)?;
    }
    if let Some(rdma) = r.rdma() {
        let d = c.require("rdma", "linux.resources.rdma")?;
        for (dev, l) in rdma {
            let mut parts = vec![dev.clone()];
            if let Some(h) = l.hca_handles() {
                parts.push(format!("hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                parts.push(format!("hca_object={o}"));
            }
            write(&d.dir, "rdma.max", &parts.join(" "), "linux.resources.rdma")?;
        }
    }
    if let Some(u) = r.unified() {
        let d = c.unified().ok_or_else(|| {
            Error::config(
                "linux.resources.unified",
                "needs cgroup v2, which this host does not mount",
            )
        })?;
        for (k, v) in u {
            unified_key(k, d)?;
            write(&d.dir, k, v, &format!("linux.resources.unified[{k}]"))?;
        }
    }
    Ok(())
}

/// Controllers whose interface files `unified` may write: the files that set a resource of
/// the container's own cgroup. Never the core `cgroup.*` files: `cgroup.procs` would move any
/// host process into the container's cgroup (where `delete` kills it), `cgroup.kill` and
/// `cgroup.freeze` act on the processes, `cgroup.subtree_control` changes the hierarchy.
const UNIFIED_CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

/// Checks a `unified` key: `<controller>.<file>`, one file name, of a controller this cgroup
/// has on v2 (on a hybrid host a controller mounted on v1 would be written in the wrong
/// place, with no effect).
fn unified_key(key: &str, dir: &CgroupDir) -> Result<()> {
    let field = format!("linux.resources.unified[{key}]");
    let (controller, file) = key.split_once('.').unwrap_or((key, ""));
    if file.is_empty() || key.contains('/') || key.contains('\0') || file.starts_with('.') {
        return Err(Error::config(&field, "is not a cgroup interface file name"));
    }
    if !UNIFIED_CONTROLLERS.contains(&controller) {
        return Err(Error::config(
            &field,
            format!(
                "only controller files may be set ({}.*)",
                UNIFIED_CONTROLLERS.join(".*, ")
            ),
        ));
    }
    if !dir.controllers.iter().any(|c| c == controller) {
        return Err(Error::config(
            &field,
            format!("the {controller} controller is not enabled on cgroup v2 on this host"),
        ));
    }
    Ok(())
}

/// Docker and containerd write every field they know, with 0 (or "") for "not set"; runc
/// and crun read them that way, so must we: a zero weight, share, quota or limit is absent.
pub fn without_unset_zeros(r: &LinuxResources) -> LinuxResources {
    fn nz<T: Default + PartialEq + Copy>(v: Option<T>) -> Option<T> {
        v.filter(|x| *x != T::default())
    }
    fn non_empty(v: &Option<String>) -> Option<String> {
        v.clone().filter(|s| !s.trim().is_empty())
    }
    let mut r = r.clone();
    if let Some(mut m) = *r.memory() {
        m.set_limit(nz(m.limit()));
        m.set_reservation(nz(m.reservation()));
        m.set_swap(nz(m.swap()));
        m.set_kernel(nz(m.kernel()));
        m.set_kernel_tcp(nz(m.kernel_tcp()));
        r.set_memory(Some(m));
    }
    if let Some(mut c) = r.cpu().clone() {
        c.set_shares(nz(c.shares()));
        c.set_quota(nz(c.quota()));
        c.set_period(nz(c.period()));
        c.set_realtime_runtime(nz(c.realtime_runtime()));
        c.set_realtime_period(nz(c.realtime_period()));
        c.set_cpus(non_empty(c.cpus()));
        c.set_mems(non_empty(c.mems()));
        r.set_cpu(Some(c));
    }
    if let Some(mut b) = r.block_io().clone() {
        b.set_weight(nz(b.weight()));
        b.set_leaf_weight(nz(b.leaf_weight()));
        r.set_block_io(Some(b));
    }
    r
}

fn limit_v1(v: i64) -> String {
    if v < 0 {
        "-1".into()
    } else {
        v.to_string()
    }
}

fn limit_v2(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Current value of a cgroup file, for tests and stats.
pub fn read_value(dir: &Path, file: &str) -> Option<String> {
    read_trim(dir, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupDir;
    use std::path::PathBuf;

    #[test]
    fn zeros_docker_sends_mean_unset() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0},
                "cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""},
                "blockIO": {"weight": 0}}"#,
        )
        .unwrap();
        let n = without_unset_zeros(&r);
        let m = n.memory().as_ref().unwrap();
        assert_eq!(
            (m.limit(), m.reservation(), m.swap(), m.kernel()),
            (None, None, None, None)
        );
        let c = n.cpu().as_ref().unwrap();
        assert_eq!((c.shares(), c.quota(), c.period()), (None, None, None));
        assert_eq!((c.cpus().clone(), c.mems().clone()), (None, None));
        assert_eq!(n.block_io().as_ref().unwrap().weight(), None);
        let f = Fake::new(false);
        apply(&f.set, &r).unwrap();
        for (ctl, file) in [
            ("blkio", "blkio.weight"),
            ("cpu", "cpu.shares"),
            ("cpu", "cpu.cfs_quota_us"),
            ("memory", "memory.limit_in_bytes"),
            ("cpuset", "cpuset.cpus"),
        ] {
            assert_eq!(f.get(ctl, file), "", "{file} was written");
        }
    }

    /// A fake cgroupfs: plain directories with the files a controller would have.
    pub(crate) struct Fake {
        pub root: PathBuf,
        pub set: CgroupSet,
    }

    impl Fake {
        pub fn new(v2: bool) -> Fake {
            let root = std::env::temp_dir().join(format!(
                "strata-fakecg-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            let mut dirs = Vec::new();
            if v2 {
                let dir = root.join("unified/c");
                fs::create_dir_all(&dir).unwrap();
                for file in [
                    "memory.max",
                    "memory.low",
                    "memory.swap.max",
                    "cpu.weight",
                    "cpu.max",
                    "cpu.max.burst",
                    "cpu.idle",
                    "cpuset.cpus",
                    "cpuset.mems",
                    "pids.max",
                    "io.weight",
                    "io.max",
                    "hugetlb.2MB.max",
                    "rdma.max",
                    "memory.oom.group",
                ] {
                    fs::write(dir.join(file), "").unwrap();
                }
                dirs.push(CgroupDir {
                    dir,
                    mount_point: root.join("unified"),
                    name: String::new(),
                    created: Vec::new(),
                    unified: true,
                    controllers: ["memory", "cpu", "cpuset", "pids", "io", "hugetlb", "rdma"]
                        .map(String::from)
                        .to_vec(),
                });
            } else {
                for (ctl, files) in [
                    (
                        "memory",
                        &[
                            "memory.limit_in_bytes",
                            "memory.memsw.limit_in_bytes",
                            "memory.soft_limit_in_bytes",
                            "memory.swappiness",
                            "memory.oom_control",
                            "memory.use_hierarchy",
                        ][..],
                    ),
                    (
                        "cpu",
                        &[
                            "cpu.shares",
                            "cpu.cfs_quota_us",
                            "cpu.cfs_period_us",
                            "cpu.rt_runtime_us",
                            "cpu.rt_period_us",
                            "cpu.idle",
                            "cpu.cfs_burst_us",
                        ][..],
                    ),
                    ("cpuset", &["cpuset.cpus", "cpuset.mems"][..]),
                    ("pids", &["pids.max"][..]),
                    (
                        "blkio",
                        &[
                            "blkio.weight",
                            "blkio.weight_device",
                            "blkio.throttle.read_bps_device",
                            "blkio.throttle.write_bps_device",
                            "blkio.throttle.read_iops_device",
                            "blkio.throttle.write_iops_device",
                        ][..],
                    ),
                    ("hugetlb", &["hugetlb.2MB.limit_in_bytes"][..]),
                    ("net_cls", &["net_cls.classid"][..]),
                    ("net_prio", &["net_prio.ifpriomap"][..]),
                    ("devices", &["devices.allow", "devices.deny"][..]),
                ] {
                    let dir = root.join(ctl).join("c");
                    fs::create_dir_all(&dir).unwrap();
                    for file in files {
                        fs::write(dir.join(file), "").unwrap();
                    }
                    dirs.push(CgroupDir {
                        dir,
                        mount_point: root.join(ctl),
                        name: ctl.to_string(),
                        created: Vec::new(),
                        unified: false,
                        controllers: vec![ctl.to_string()],
                    });
                }
            }
            Fake {
                set: CgroupSet {
                    path: PathBuf::from("/c"),
                    dirs,
                },
                root,
            }
        }

        pub fn get(&self, ctl: &str, file: &str) -> String {
            let d = Controllers::new(&self.set).dir(ctl).unwrap().dir.clone();
            fs::read_to_string(d.join(file)).unwrap()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    const ALL: &str = r#"{
        "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200, "swappiness": 10, "disableOOMKiller": true},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0", "idle": 1, "realtimeRuntime": 1000, "realtimePeriod": 10000},
        "pids": {"limit": 32},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}
    }"#;

    #[test]
    fn v1_values_written() {
        let f = Fake::new(false);
        apply(&f.set, &resources(ALL)).unwrap();
        assert_eq!(f.get("memory", "memory.limit_in_bytes"), "104857600");
        assert_eq!(f.get("memory", "memory.memsw.limit_in_bytes"), "209715200");
        assert_eq!(f.get("memory", "memory.soft_limit_in_bytes"), "52428800");
        assert_eq!(f.get("memory", "memory.swappiness"), "10");
        assert_eq!(f.get("memory", "memory.oom_control"), "1");
        assert_eq!(f.get("cpu", "cpu.shares"), "512");
        assert_eq!(f.get("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(f.get("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(f.get("cpu", "cpu.rt_runtime_us"), "1000");
        assert_eq!(f.get("cpu", "cpu.rt_period_us"), "10000");
        assert_eq!(f.get("cpu", "cpu.idle"), "1");
        assert_eq!(f.get("cpuset", "cpuset.cpus"), "0");
        assert_eq!(f.get("pids", "pids.max"), "32");
        assert_eq!(f.get("blkio", "blkio.weight"), "500");
        assert_eq!(f.get("blkio", "blkio.weight_device"), "8:0 300");
        assert_eq!(
            f.get("blkio", "blkio.throttle.read_bps_device"),
            "8:0 1048576"
        );
        assert_eq!(
            f.get("blkio", "blkio.throttle.write_iops_device"),
            "8:0 100"
        );
        assert_eq!(f.get("hugetlb", "hugetlb.2MB.limit_in_bytes"), "4194304");
        assert_eq!(f.get("net_cls", "net_cls.classid"), "1048577");
        assert_eq!(f.get("net_prio", "net_prio.ifpriomap"), "eth0 5");
    }

    #[test]
    fn v2_values_converted() {
        let f = Fake::new(true);
        let mut r = resources(ALL);
        r.set_network(None);
        let mut cpu = r.cpu().clone().unwrap();
        cpu.set_realtime_runtime(None);
        cpu.set_realtime_period(None);
        r.set_cpu(Some(cpu));
        apply(&f.set, &r).unwrap();
        assert_eq!(f.get("memory", "memory.max"), "104857600");
        assert_eq!(f.get("memory", "memory.low"), "52428800");
        assert_eq!(f.get("memory", "memory.swap.max"), "104857600");
        assert_eq!(f.get("cpu", "cpu.weight"), "20");
        assert_eq!(f.get("cpu", "cpu.max"), "50000 100000");
        assert_eq!(f.get("cpu", "cpu.idle"), "1");
        assert_eq!(f.get("pids", "pids.max"), "32");
        assert_eq!(f.get("io", "io.weight"), "8:0 2930");
        assert_eq!(f.get("io", "io.max"), "8:0 wiops=100");
        assert_eq!(f.get("hugetlb", "hugetlb.2MB.max"), "4194304");
        // unified key/values pass through as given
        let r = resources(r#"{"unified": {"memory.oom.group": "1"}}"#);
        apply(&f.set, &r).unwrap();
        assert_eq!(f.get("memory", "memory.oom.group"), "1");
        for bad in [
            "../escape",
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.kill",
            "cgroup.freeze",
            "cgroup.subtree_control",
            "memory",
            "memory./x",
            "foo.max",
        ] {
            let r = resources(&format!(r#"{{"unified": {{"{bad}": "1"}}}}"#));
            let err = apply(&f.set, &r).unwrap_err().to_string();
            assert!(err.contains(&format!("unified[{bad}]")), "{bad}: {err}");
        }
        // realtime limits have no v2 equivalent
        let r = resources(r#"{"cpu": {"realtimeRuntime": 5}}"#);
        assert!(apply(&f.set, &r).is_err());
    }

    #[test]
    fn a_controller_not_on_v2_is_refused_in_unified() {
        let f = Fake::new(true);
        let mut set = f.set.clone();
        for d in &mut set.dirs {
            d.controllers.retain(|c| c != "memory");
        }
        let r = resources(r#"{"unified": {"memory.max": "1000000"}}"#);
        let err = apply(&set, &r).unwrap_err().to_string();
        assert!(err.contains("not enabled on cgroup v2"), "{err}");
    }

    #[test]
    fn negative_limits_other_than_unlimited_are_refused_and_zero_pids_is_zero() {
        let f = Fake::new(false);
        for bad in [
            r#"{"memory": {"limit": -2}}"#,
            r#"{"memory": {"reservation": -5}}"#,
            r#"{"memory": {"swap": -100}}"#,
            r#"{"pids": {"limit": -2}}"#,
        ] {
            assert!(apply(&f.set, &resources(bad)).is_err(), "{bad}");
        }
        apply(&f.set, &resources(r#"{"pids": {"limit": 0}}"#)).unwrap();
        assert_eq!(f.get("pids", "pids.max"), "0");
    }

    #[test]
    fn unlimited_values() {
        let f = Fake::new(false);
        apply(
            &f.set,
            &resources(r#"{"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}"#),
        )
        .unwrap();
        assert_eq!(f.get("memory", "memory.limit_in_bytes"), "-1");
        assert_eq!(f.get("pids", "pids.max"), "max");
        assert_eq!(f.get("cpu", "cpu.cfs_quota_us"), "-1");
        let f = Fake::new(true);
        apply(
            &f.set,
            &resources(r#"{"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}}"#),
        )
        .unwrap();
        assert_eq!(f.get("memory", "memory.max"), "max");
        assert_eq!(f.get("memory", "memory.swap.max"), "max");
        assert_eq!(f.get("cpu", "cpu.max"), "max 100000");
    }

    #[test]
    fn missing_controller_is_a_clear_error() {
        let mut f = Fake::new(false);
        f.set.dirs.retain(|d| d.name != "pids");
        let err = apply(&f.set, &resources(r#"{"pids": {"limit": 5}}"#)).unwrap_err();
        assert!(
            err.to_string()
                .contains("pids cgroup controller is not available"),
            "{err}"
        );
        // net_cls missing is only a warning, as runc treats it.
        f.set.dirs.retain(|d| d.name != "net_cls");
        apply(&f.set, &resources(r#"{"network": {"classID": 1}}"#)).unwrap();
    }
}
