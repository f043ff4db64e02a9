//! The pids controller: `pids.max`.

use oci_spec::runtime::LinuxPids;

use super::{write, Controllers};
use crate::error::{Error, Result};

pub(super) fn pids(c: &Controllers, p: &LinuxPids) -> Result<()> {
    let d = c.require("pids", "linux.resources.pids")?;
    // runtime-spec 1.3: -1 is no limit, and 0 is a limit of zero like any other, "and SHOULD
    // be treated as such". (Docker and podman send -1 for "unlimited".)
    let v = match p.limit() {
        -1 => "max".to_string(),
        l if l < 0 => {
            return Err(Error::config(
                "linux.resources.pids.limit",
                format!("{l} is negative (use -1 for no limit)"),
            ))
        }
        l => l.to_string(),
    };
    write(&d.dir, "pids.max", &v, "linux.resources.pids.limit")
}
