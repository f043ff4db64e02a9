//! The v1 net_cls and net_prio controllers; absent ones are only warned about, as runc does.

use oci_spec::runtime::LinuxNetwork;

use super::{write, Controllers};
use crate::error::Result;

pub(super) fn network(c: &Controllers, n: &LinuxNetwork) -> Result<()> {
    let f = "linux.resources.network";
    if let Some(id) = n.class_id() {
        match c.dir("net_cls") {
            Some(d) => write(
                &d.dir,
                "net_cls.classid",
                &id.to_string(),
                &format!("{f}.classID"),
            )?,
            None => tracing::warn!("{f}.classID: the net_cls controller is not mounted; ignored"),
        }
    }
    if let Some(prios) = n.priorities() {
        match c.dir("net_prio") {
            Some(d) => {
                for p in prios {
                    write(
                        &d.dir,
                        "net_prio.ifpriomap",
                        &format!("{} {}", p.name(), p.priority()),
                        &format!("{f}.priorities"),
                    )?;
                }
            }
            None => {
                tracing::warn!("{f}.priorities: the net_prio controller is not mounted; ignored")
            }
        }
    }
    Ok(())
}
