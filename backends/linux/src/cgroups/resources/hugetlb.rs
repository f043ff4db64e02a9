//! The hugetlb controller: a limit per huge page size.

use oci_spec::runtime::LinuxHugepageLimit;

use super::{limit_v1, limit_v2, write, Controllers};
use crate::error::{Error, Result};

pub(super) fn hugetlb(c: &Controllers, limits: &[LinuxHugepageLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let f = "linux.resources.hugepageLimits";
    let d = c.require("hugetlb", f)?;
    for l in limits {
        let size = l.page_size();
        let (file, v) = if d.unified {
            (format!("hugetlb.{size}.max"), limit_v2(l.limit()))
        } else {
            (
                format!("hugetlb.{size}.limit_in_bytes"),
                limit_v1(l.limit()),
            )
        };
        if !d.dir.join(&file).exists() {
            return Err(Error::config(
                f,
                format!("this host has no {size} huge pages ({file})"),
            ));
        }
        write(&d.dir, &file, &v, f)?;
    }
    Ok(())
}
