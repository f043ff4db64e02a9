//! Where the cgroup hierarchies are mounted (from mountinfo), which layout that makes (v1,
//! v2, hybrid), and where in them a container's cgroup goes (`linux.cgroupsPath`).

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Context, Error, Result};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// `true` for cgroup2.
    pub unified: bool,
    /// v1 controllers (and `name=...`) from the mount options; empty for cgroup2.
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Legacy,
    Unified,
    Hybrid,
}

/// Reads the cgroup mounts of this process's mount namespace.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let text = fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading mountinfo".into())?;
    Ok(parse_mountinfo(&text))
}

pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(pre[4]));
        match post[0] {
            "cgroup2" => out.push(Hierarchy {
                mount_point,
                unified: true,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let controllers = post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("relatime"))
                    .filter(|o| {
                        !matches!(
                            *o,
                            "nosuid" | "nodev" | "noexec" | "clone_children" | "xattr"
                        )
                    })
                    .map(str::to_string)
                    .collect();
                out.push(Hierarchy {
                    mount_point,
                    unified: false,
                    controllers,
                })
            }
            _ => {}
        }
    }
    // A hierarchy mounted twice (e.g. bind mounts) is still one hierarchy.
    out.dedup_by(|a, b| a.controllers == b.controllers && a.unified == b.unified);
    out
}

/// A path as mountinfo writes it, with the characters the kernel escapes (space, tab,
/// newline, backslash) back; the backslash last, so that an escaped `\\` stays one.
pub fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn layout(hs: &[Hierarchy]) -> Layout {
    let v1 = hs.iter().any(|h| !h.unified);
    let v2 = hs.iter().any(|h| h.unified);
    match (v1, v2) {
        (true, true) => Layout::Hybrid,
        (false, true) => Layout::Unified,
        _ => Layout::Legacy,
    }
}

/// Where the container's cgroup is, given `linux.cgroupsPath`: an absolute path is taken as
/// is, a relative one is placed under the hierarchy root, and none means `/strata/<id>`.
pub fn resolve_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let path = match cgroups_path {
        None => PathBuf::from("/strata").join(id),
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("/strata").join(id),
        Some(p) => Path::new("/").join(p),
    };
    if path.as_os_str().to_string_lossy().contains(':') {
        return Err(Error::config(
            "linux.cgroupsPath",
            format!(
                "{} looks like a systemd slice:prefix:name path; strata drives cgroupfs \
                 directly (run without --systemd-cgroup)",
                path.display()
            ),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::config(
            "linux.cgroupsPath",
            format!("{} must not contain '.' or '..'", path.display()),
        ));
    }
    if path == Path::new("/") {
        return Err(Error::config(
            "linux.cgroupsPath",
            "the root cgroup cannot hold a container",
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_come_back() {
        assert_eq!(
            unescape_mountinfo("/a\\040b\\011c\\012d\\134040"),
            "/a b\tc\nd\\040"
        );
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_hybrid_layout() {
        let hs = parse_mountinfo(HYBRID);
        assert_eq!(hs.len(), 4);
        assert_eq!(hs[0].controllers, vec!["cpu"]);
        assert_eq!(hs[2].controllers, vec!["name=systemd"]);
        assert!(hs[3].unified);
        assert_eq!(layout(&hs), Layout::Hybrid);
        assert_eq!(layout(&hs[3..]), Layout::Unified);
        assert_eq!(layout(&hs[..3]), Layout::Legacy);
    }

    #[test]
    fn resolves_paths() {
        assert_eq!(
            resolve_path(None, "abc").unwrap(),
            PathBuf::from("/strata/abc")
        );
        assert_eq!(
            resolve_path(Some(Path::new("a/b")), "x").unwrap(),
            PathBuf::from("/a/b")
        );
        assert!(resolve_path(Some(Path::new("/a/../b")), "x").is_err());
        assert!(resolve_path(Some(Path::new("system.slice:strata:x")), "x").is_err());
    }
}
