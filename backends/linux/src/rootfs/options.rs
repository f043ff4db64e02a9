//! A mount's `options`, split into what each goes to: mount(2) flags, propagation changes,
//! attributes set recursively with mount_setattr(2), strata's extensions, and the words left
//! for the filesystem.
//!
//! Nothing is passed on that strata does not understand where it would be dropped without a
//! word: the kernel ignores the data of a bind mount, so a leftover word there is an error;
//! other filesystems get their words and reject what they do not know themselves (runc's
//! rule). Options other runtimes define and strata does not implement are refused by name.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use crate::error::{Error, Result};

/// MS_NOSYMFOLLOW (Linux 5.10); nix has no name for it.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);

/// Options that are mount(2) flags: the flag, and whether the option clears it.
const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("defaults", false, MsFlags::empty()),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("suid", true, MsFlags::MS_NOSUID),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("dev", true, MsFlags::MS_NODEV),
    ("nodev", false, MsFlags::MS_NODEV),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("atime", true, MsFlags::MS_NOATIME),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("iversion", false, MsFlags::MS_I_VERSION),
    ("noiversion", true, MsFlags::MS_I_VERSION),
    ("silent", false, MsFlags::MS_SILENT),
    ("loud", true, MsFlags::MS_SILENT),
    ("nosymfollow", false, MS_NOSYMFOLLOW),
    ("symfollow", true, MS_NOSYMFOLLOW),
    ("bind", false, MsFlags::MS_BIND),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
];

const PROPAGATION: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

// The kernel's MOUNT_ATTR_* values (include/uapi/linux/mount.h), a stable ABI.
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
/// The atime mode is a value in these bits, not a set of flags.
const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x20_0000;

/// What a recursive option does to the mount tree.
enum Recursive {
    Set(u64),
    Clear(u64),
    /// The mount's one atime mode.
    Atime(u64),
}

/// runc 1.1's recursive options. A mount has one atime mode, so an option that only says
/// which mode it must not be picks one: the kernel's default (relatime) for ratime and
/// rnostrictatime, full updates (strictatime) for rnorelatime, as mount(8) reads the plain
/// `norelatime`.
const RECURSIVE: &[(&str, Recursive)] = &[
    ("rro", Recursive::Set(ATTR_RDONLY)),
    ("rrw", Recursive::Clear(ATTR_RDONLY)),
    ("rnosuid", Recursive::Set(ATTR_NOSUID)),
    ("rsuid", Recursive::Clear(ATTR_NOSUID)),
    ("rnodev", Recursive::Set(ATTR_NODEV)),
    ("rdev", Recursive::Clear(ATTR_NODEV)),
    ("rnoexec", Recursive::Set(ATTR_NOEXEC)),
    ("rexec", Recursive::Clear(ATTR_NOEXEC)),
    ("rnodiratime", Recursive::Set(ATTR_NODIRATIME)),
    ("rdiratime", Recursive::Clear(ATTR_NODIRATIME)),
    ("rrelatime", Recursive::Atime(ATTR_RELATIME)),
    ("rnorelatime", Recursive::Atime(ATTR_STRICTATIME)),
    ("rnoatime", Recursive::Atime(ATTR_NOATIME)),
    ("ratime", Recursive::Atime(ATTR_RELATIME)),
    ("rstrictatime", Recursive::Atime(ATTR_STRICTATIME)),
    ("rnostrictatime", Recursive::Atime(ATTR_RELATIME)),
    ("rnosymfollow", Recursive::Set(ATTR_NOSYMFOLLOW)),
    ("rsymfollow", Recursive::Clear(ATTR_NOSYMFOLLOW)),
];

/// Copy the destination's contents into a new tmpfs (podman passes it on every `--tmpfs`
/// and on the tmpfs mounts of `--systemd`).
const TMPCOPYUP: &str = "tmpcopyup";

/// Options of other runtimes that strata does not implement; ignoring them would change what
/// the container sees (ownership through an idmapped mount, a symlink instead of a bind).
const REFUSED: &[(&str, &str)] = &[
    ("idmap", "idmapped mounts are not supported by strata"),
    ("ridmap", "idmapped mounts are not supported by strata"),
    (
        "copy-symlink",
        "crun's copy-symlink extension is not supported by strata",
    ),
];

/// The propagation change a word names (also the values of `linux.rootfsPropagation`).
pub fn propagation(word: &str) -> Option<MsFlags> {
    PROPAGATION.iter().find(|p| p.0 == word).map(|p| p.1)
}

/// Every option strata acts on, for `strata features`.
pub fn known() -> Vec<&'static str> {
    let mut all: Vec<&str> = FLAGS
        .iter()
        .map(|f| f.0)
        .chain(PROPAGATION.iter().map(|p| p.0))
        .chain(RECURSIVE.iter().map(|r| r.0))
        .chain([TMPCOPYUP])
        .collect();
    all.sort_unstable();
    all
}

/// Attributes mount_setattr(2) sets on a mount and every mount under it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RecursiveAttrs {
    set: u64,
    clear: u64,
}

/// The kernel's `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl RecursiveAttrs {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    fn add(&mut self, r: &Recursive) {
        match *r {
            Recursive::Set(bits) => {
                self.set |= bits;
                self.clear &= !bits;
            }
            Recursive::Clear(bits) => {
                self.clear |= bits;
                self.set &= !bits;
            }
            Recursive::Atime(mode) => {
                // The kernel takes a new atime mode only with the whole mask cleared.
                self.clear |= ATTR_ATIME_MASK;
                self.set = (self.set & !ATTR_ATIME_MASK) | mode;
            }
        }
    }

    /// Applies the attributes to the mount whose root `target` is, and to every mount under
    /// it.
    pub fn apply(&self, target: &OwnedFd) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        mount_setattr(target, true, self.set, self.clear).map_err(|e| {
            let why = if e == nix::Error::ENOSYS {
                "recursive mount options need mount_setattr(2), Linux 5.12 or later".to_string()
            } else {
                format!("mount_setattr: {e}")
            };
            Error::Sys {
                what: format!("applying recursive mount options ({why})"),
                error: e,
            }
        })
    }
}

/// mount_setattr(2) on the mount whose root `target` is (AT_EMPTY_PATH), and with
/// `recursive` on every mount under it.
pub(crate) fn mount_setattr(
    target: &OwnedFd,
    recursive: bool,
    set: u64,
    clear: u64,
) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: the fd is open for the call, the path is an empty NUL-terminated string, and
    // `attr` is a live `struct mount_attr` whose size is passed with it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Makes the mount at `target`, and every mount under it, nosuid and nodev, and read-only
/// when `readonly`: how a host directory is handed to a file server that acts as root for a
/// guest (a device node or a set-id program there must mean nothing on the host side).
pub fn restrict_tree(target: &std::path::Path, readonly: bool) -> Result<()> {
    let what = || format!("restricting the mounts at {}", target.display());
    let fd = nix::fcntl::open(
        target,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|error| Error::Sys {
        what: what(),
        error,
    })?;
    restrict_tree_fd(&fd, readonly).map_err(|error| Error::Sys {
        what: what(),
        error,
    })
}

/// [`restrict_tree`] on an fd: the root of a mount (or of a detached tree from open_tree).
pub fn restrict_tree_fd(fd: &OwnedFd, readonly: bool) -> nix::Result<()> {
    let set = ATTR_NOSUID | ATTR_NODEV | if readonly { ATTR_RDONLY } else { 0 };
    mount_setattr(fd, true, set, 0)
}

/// Sets MOUNT_ATTR_RDONLY on one mount, leaving its superblock and submounts as they are.
pub(crate) fn make_mount_readonly(target: &OwnedFd) -> nix::Result<()> {
    mount_setattr(target, false, ATTR_RDONLY, 0)
}

/// A mount's options, sorted by what takes them.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub recursive: RecursiveAttrs,
    pub tmpcopyup: bool,
    /// Words for the filesystem.
    pub data: Vec<String>,
}

/// Sorts `opts`; Err names the option that strata refuses and why.
pub fn parse(opts: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        recursive: RecursiveAttrs::default(),
        tmpcopyup: false,
        data: Vec::new(),
    };
    for opt in opts {
        let opt = opt.as_str();
        if let Some((_, clear, f)) = FLAGS.iter().find(|f| f.0 == opt) {
            if *clear {
                out.flags.remove(*f);
            } else {
                out.flags.insert(*f);
            }
        } else if let Some(p) = propagation(opt) {
            out.propagation.push(p);
        } else if let Some((_, r)) = RECURSIVE.iter().find(|r| r.0 == opt) {
            out.recursive.add(r);
        } else if opt == TMPCOPYUP {
            out.tmpcopyup = true;
        } else if let Some((_, why)) = REFUSED.iter().find(|r| r.0 == opt) {
            return Err(format!("option {opt:?}: {why}"));
        } else {
            out.data.push(opt.to_string());
        }
    }
    Ok(out)
}

/// Whether the kernel makes `m` a bind mount (type "bind", or a bind/rbind option).
pub fn is_bind(m: &Mount, opts: &MountOptions) -> bool {
    m.typ().as_deref() == Some("bind") || opts.flags.contains(MsFlags::MS_BIND)
}

/// The options of `mounts[index]`, checked against what its kind of mount can take.
pub fn for_mount(index: usize, m: &Mount) -> Result<MountOptions> {
    let field = || format!("mounts[{index}] ({})", m.destination().display());
    let mut opts =
        parse(m.options().as_deref().unwrap_or(&[])).map_err(|e| Error::config(field(), e))?;
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = is_bind(m, &opts);
    if bind {
        // mount(2) ignores a bind's data, and runc passes such words (a `mode=755` copied from
        // a tmpfs) without a word: a `key=value` is dropped. A bare word is refused below: it
        // is most likely a misspelt flag ("nosiud"), which would leave the mount without it.
        opts.data.retain(|w| {
            let fs_word = w.contains('=');
            if fs_word {
                tracing::debug!(
                    "{}: {w:?} ignored: a bind mount passes no options to a filesystem",
                    field()
                );
            }
            !fs_word
        });
    }
    // Both take no filesystem data: a bind mount's is ignored by the kernel, and strata builds
    // cgroup mounts itself.
    if bind || typ == "cgroup" || typ == "cgroup2" {
        if let Some(word) = opts.data.first() {
            let kind = if bind {
                "a bind mount"
            } else {
                "a cgroup mount"
            };
            return Err(Error::config(
                field(),
                format!("unknown option {word:?}: not a mount flag, and {kind} passes no options to a filesystem"),
            ));
        }
    }
    // A remount that is not of a bind changes the filesystem already mounted there, for
    // every mount of it, the host's included (a bind-mounted host directory made read-only
    // everywhere); a bind's remount changes only the container's mount.
    if opts.flags.contains(MsFlags::MS_REMOUNT) && !bind {
        return Err(Error::config(
            field(),
            "option \"remount\" is only for bind mounts: it would change the filesystem mounted there for all its mounts",
        ));
    }
    if opts.tmpcopyup && (bind || typ != "tmpfs") {
        return Err(Error::config(
            field(),
            "option \"tmpcopyup\" is only for tmpfs mounts",
        ));
    }
    Ok(opts)
}

/// Checks every mount's options before anything is built, so that a bad one fails `create`
/// with nothing to undo.
pub fn check_all(mounts: &[Mount]) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        for_mount(i, m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn mount(json: serde_json::Value) -> Mount {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn splits_flags_propagation_and_data() {
        let o = parse(&opts(&[
            "nosuid",
            "ro",
            "rbind",
            "rslave",
            "mode=755",
            "size=65536k",
        ]))
        .unwrap();
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert!(o.recursive.is_empty());
        let o = parse(&opts(&["ro", "rw", "nosymfollow"])).unwrap();
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.flags.contains(MS_NOSYMFOLLOW));
        let o = parse(&opts(&["nosymfollow", "symfollow"])).unwrap();
        assert!(!o.flags.contains(MS_NOSYMFOLLOW));
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        let o = parse(&opts(&["rbind", "rro", "rnosuid", "rnodev", "rnoexec"])).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttrs {
                set: ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
                clear: 0
            }
        );
        assert!(o.data.is_empty());
        // Later options win, as for the plain flags.
        let o = parse(&opts(&["rro", "rrw", "rnosymfollow"])).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttrs {
                set: ATTR_NOSYMFOLLOW,
                clear: ATTR_RDONLY
            }
        );
        // One atime mode, sent with the whole atime mask cleared.
        let o = parse(&opts(&["rnoatime", "rstrictatime"])).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttrs {
                set: ATTR_STRICTATIME,
                clear: ATTR_ATIME_MASK
            }
        );
        let o = parse(&opts(&["rnoatime", "ratime", "rnodiratime"])).unwrap();
        assert_eq!(
            o.recursive,
            RecursiveAttrs {
                set: ATTR_RELATIME | ATTR_NODIRATIME,
                clear: ATTR_ATIME_MASK
            }
        );
    }

    #[test]
    fn other_runtimes_extensions() {
        let o = parse(&opts(&["rw", "tmpcopyup"])).unwrap();
        assert!(o.tmpcopyup && o.data.is_empty());
        for word in ["idmap", "ridmap", "copy-symlink"] {
            let e = parse(&opts(&["rbind", word])).unwrap_err();
            assert!(e.contains(word) && e.contains("not supported"), "{e}");
        }
    }

    #[test]
    fn a_bind_mount_takes_no_filesystem_words_and_ignores_their_values() {
        let m = mount(serde_json::json!({
            "destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "bogus"]
        }));
        let e = for_mount(3, &m).unwrap_err().to_string();
        assert!(
            e.contains("mounts[3] (/data)") && e.contains("\"bogus\""),
            "{e}"
        );
        // Without type "bind" too.
        let m = mount(serde_json::json!({
            "destination": "/data", "source": "/tmp", "options": ["bind", "nosiud"]
        }));
        assert!(for_mount(0, &m).is_err());
        // A filesystem's `key=value` is dropped, as the kernel would ignore it.
        let m = mount(serde_json::json!({
            "destination": "/data", "source": "/tmp", "options": ["bind", "mode=755", "ro"]
        }));
        let o = for_mount(0, &m).unwrap();
        assert!(o.data.is_empty() && o.flags.contains(MsFlags::MS_RDONLY));
        let m = mount(serde_json::json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["ro", "nsdelegate"]
        }));
        assert!(for_mount(0, &m).is_err());
        // A filesystem gets its words and judges them itself.
        let m = mount(serde_json::json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "size=1m", "huge=never", "tmpcopyup"]
        }));
        assert_eq!(
            for_mount(0, &m).unwrap().data,
            vec!["size=1m", "huge=never"]
        );
        let m = mount(serde_json::json!({
            "destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "tmpcopyup"]
        }));
        assert!(for_mount(0, &m).is_err());
    }

    #[test]
    fn the_features_list_is_what_the_parser_takes() {
        let all = known();
        for word in [
            "rro",
            "rnosymfollow",
            "nosymfollow",
            "tmpcopyup",
            "rbind",
            "rslave",
        ] {
            assert!(all.contains(&word), "{word}");
            assert!(parse(&opts(&[word])).unwrap().data.is_empty(), "{word}");
        }
        for word in ["idmap", "ridmap", "copy-symlink"] {
            assert!(!all.contains(&word), "{word}");
        }
    }
}
