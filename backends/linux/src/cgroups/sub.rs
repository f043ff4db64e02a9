//! `exec --cgroup`: an exec'd process joins an existing sub-cgroup of the container's cgroup
//! instead of the cgroup itself, as with runc's `--cgroup [CONTROLLER[,CONTROLLER]:]PATH`
//! (repeatable; a PATH without controllers is for every hierarchy the others do not name).
//! PATH is inside the container's cgroup: `/` is the cgroup itself and `..` is refused.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::CgroupDir;
use crate::error::{Error, Result};

/// The sub-cgroups an exec joins; empty: the container's cgroup everywhere.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SubCgroups {
    all: Option<PathBuf>,
    by_controller: BTreeMap<String, PathBuf>,
}

const FLAG: &str = "exec --cgroup";

impl SubCgroups {
    pub fn parse(args: &[String]) -> Result<SubCgroups> {
        let mut sub = SubCgroups::default();
        for arg in args {
            match arg.split_once(':') {
                Some((controllers, path)) => {
                    let path = inside(arg, path)?;
                    for c in controllers.split(',') {
                        if c.is_empty() {
                            return Err(Error::config(
                                FLAG,
                                format!("{arg:?}: an empty controller name"),
                            ));
                        }
                        if sub
                            .by_controller
                            .insert(c.to_string(), path.clone())
                            .is_some()
                        {
                            return Err(Error::config(
                                FLAG,
                                format!("controller {c:?} is given twice"),
                            ));
                        }
                    }
                }
                None => {
                    if sub.all.replace(inside(arg, arg)?).is_some() {
                        return Err(Error::config(
                            FLAG,
                            "more than one path without controllers",
                        ));
                    }
                }
            }
        }
        Ok(sub)
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_none() && self.by_controller.is_empty()
    }

    /// Refuses a controller that none of the container's hierarchies has.
    pub fn check(&self, dirs: &[CgroupDir]) -> Result<()> {
        for c in self.by_controller.keys() {
            if !dirs.iter().any(|d| d.controllers.iter().any(|k| k == c)) {
                return Err(Error::config(
                    FLAG,
                    format!("the container's cgroups have no controller {c:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Where a process of the exec goes in the hierarchy of `d`.
    pub fn dir_in(&self, d: &CgroupDir) -> Result<PathBuf> {
        let mut named = self
            .by_controller
            .iter()
            .filter(|(c, _)| d.controllers.iter().any(|k| k == *c))
            .map(|(_, p)| p);
        let sub = match named.next() {
            Some(p) => {
                // One directory holds all of a v2 tree's (or a co-mounted v1 hierarchy's)
                // controllers: they cannot be in two places.
                if named.any(|q| q != p) {
                    return Err(Error::config(
                        FLAG,
                        format!(
                            "controllers of one hierarchy ({}) are given different paths",
                            d.controllers.join(",")
                        ),
                    ));
                }
                Some(p)
            }
            None => self.all.as_ref(),
        };
        let Some(sub) = sub.filter(|s| !s.as_os_str().is_empty()) else {
            return Ok(d.dir.clone());
        };
        let dir = d.dir.join(sub);
        if !dir.is_dir() {
            return Err(Error::config(
                FLAG,
                format!(
                    "no sub-cgroup {} in the container's cgroup {}",
                    sub.display(),
                    d.dir.display()
                ),
            ));
        }
        Ok(dir)
    }
}

/// `path` made relative to the container's cgroup; `..` would leave it.
fn inside(arg: &str, path: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::config(
                    FLAG,
                    format!("{arg:?} leaves the container's cgroup"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn dir(path: &Path, controllers: &[&str], unified: bool) -> CgroupDir {
        CgroupDir {
            dir: path.to_path_buf(),
            mount_point: PathBuf::from("/"),
            name: String::new(),
            created: Vec::new(),
            unified,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn paths_stay_inside_the_containers_cgroup() {
        for bad in ["..", "a/../..", "cpu:..", "/../x"] {
            assert!(SubCgroups::parse(&args(&[bad])).is_err(), "{bad}");
        }
        let s = SubCgroups::parse(&args(&["/"])).unwrap();
        assert_eq!(s.all, Some(PathBuf::new()));
        let s = SubCgroups::parse(&args(&["/a/./b"])).unwrap();
        assert_eq!(s.all, Some(PathBuf::from("a/b")));
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in [&["a", "b"][..], &["cpu:a", "cpu:b"], &[":a"], &["cpu,:a"]] {
            assert!(SubCgroups::parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(SubCgroups::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn each_hierarchy_gets_its_controllers_path_or_the_default() {
        let root = std::env::temp_dir().join(format!("strata-subcg-{}", std::process::id()));
        for d in ["cpu/c/x", "memory/c/y", "unified/c/y"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let cpu = dir(&root.join("cpu/c"), &["cpu", "cpuacct"], false);
        let mem = dir(&root.join("memory/c"), &["memory"], false);
        let v2 = dir(&root.join("unified/c"), &[], true);
        let s = SubCgroups::parse(&args(&["cpu:x", "y"])).unwrap();
        s.check(&[cpu.clone(), mem.clone(), v2.clone()]).unwrap();
        assert_eq!(s.dir_in(&cpu).unwrap(), root.join("cpu/c/x"));
        assert_eq!(s.dir_in(&mem).unwrap(), root.join("memory/c/y"));
        assert_eq!(s.dir_in(&v2).unwrap(), root.join("unified/c/y"));
        // A path that does not exist, a controller nobody has, one hierarchy in two places.
        let s = SubCgroups::parse(&args(&["memory:nope"])).unwrap();
        assert!(s.dir_in(&mem).is_err());
        let s = SubCgroups::parse(&args(&["waaat:/"])).unwrap();
        assert!(s.check(&[cpu.clone(), mem.clone()]).is_err());
        let s = SubCgroups::parse(&args(&["cpu:x", "cpuacct:/"])).unwrap();
        assert!(s.dir_in(&cpu).is_err());
        // Nothing asked: the container's own cgroup.
        assert_eq!(
            SubCgroups::default().dir_in(&cpu).unwrap(),
            root.join("cpu/c")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
