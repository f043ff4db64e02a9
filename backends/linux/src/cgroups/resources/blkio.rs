//! Block I/O: the v1 blkio controller (or BFQ's files), or v2's io: weights and throttles.

use oci_spec::runtime::LinuxBlockIo;

use super::{write, Controllers};
use crate::error::{Error, Result};

/// blkio.weight (10..1000) to io.weight (1..10000).
pub fn blkio_weight_to_io(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

pub(super) fn block_io(c: &Controllers, b: &LinuxBlockIo) -> Result<()> {
    let f = "linux.resources.blockIO";
    let Some(d) = c.dir("blkio").or_else(|| c.dir("io")) else {
        return Err(Error::config(
            f,
            "neither the blkio nor the io cgroup controller is available",
        ));
    };
    let dir = &d.dir;
    let exists = |name: &str| dir.join(name).exists();
    if d.unified {
        let weight_file = if exists("io.weight") {
            "io.weight"
        } else {
            "io.bfq.weight"
        };
        if let Some(w) = b.weight() {
            write(
                dir,
                weight_file,
                &format!("default {}", blkio_weight_to_io(w)),
                &format!("{f}.weight"),
            )?;
        }
        for wd in b.weight_device().iter().flatten() {
            if let Some(w) = wd.weight() {
                write(
                    dir,
                    weight_file,
                    &format!("{}:{} {}", wd.major(), wd.minor(), blkio_weight_to_io(w)),
                    &format!("{f}.weightDevice"),
                )?;
            }
        }
        let throttles = [
            (
                "rbps",
                b.throttle_read_bps_device(),
                "throttleReadBpsDevice",
            ),
            (
                "wbps",
                b.throttle_write_bps_device(),
                "throttleWriteBpsDevice",
            ),
            (
                "riops",
                b.throttle_read_iops_device(),
                "throttleReadIOPSDevice",
            ),
            (
                "wiops",
                b.throttle_write_iops_device(),
                "throttleWriteIOPSDevice",
            ),
        ];
        for (key, list, name) in throttles {
            for t in list.iter().flatten() {
                let v = if t.rate() == 0 {
                    "max".to_string()
                } else {
                    t.rate().to_string()
                };
                write(
                    dir,
                    "io.max",
                    &format!("{}:{} {key}={v}", t.major(), t.minor()),
                    &format!("{f}.{name}"),
                )?;
            }
        }
        return Ok(());
    }
    // Kernels with BFQ expose blkio.bfq.weight instead of blkio.weight.
    let (weight_file, weight_dev_file) = if exists("blkio.weight") {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight() {
        write(dir, weight_file, &w.to_string(), &format!("{f}.weight"))?;
    }
    if let Some(w) = b.leaf_weight() {
        if exists("blkio.leaf_weight") {
            write(
                dir,
                "blkio.leaf_weight",
                &w.to_string(),
                &format!("{f}.leafWeight"),
            )?;
        } else {
            tracing::warn!("{f}.leafWeight: this kernel has no blkio.leaf_weight; ignored");
        }
    }
    for wd in b.weight_device().iter().flatten() {
        if let Some(w) = wd.weight() {
            write(
                dir,
                weight_dev_file,
                &format!("{}:{} {w}", wd.major(), wd.minor()),
                &format!("{f}.weightDevice"),
            )?;
        }
        if wd.leaf_weight().is_some() && !exists("blkio.leaf_weight_device") {
            tracing::warn!("{f}.weightDevice.leafWeight: not supported by this kernel; ignored");
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
            "throttleReadBpsDevice",
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
            "throttleWriteBpsDevice",
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
            "throttleReadIOPSDevice",
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
            "throttleWriteIOPSDevice",
        ),
    ];
    for (file, list, name) in throttles {
        for t in list.iter().flatten() {
            write(
                dir,
                file,
                &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                &format!("{f}.{name}"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
    }
}
