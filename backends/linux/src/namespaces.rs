//! Linux namespaces as the bundle asks for them: new ones, joined ones (`path`), id mappings.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};

/// The namespace types in the order they are joined: the user namespace last would leave us
/// without the capabilities to join the others, so it goes first.
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
];

pub fn clone_flag(ns: LinuxNamespaceType) -> CloneFlags {
    match ns {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME shares its bit with CSIGNAL: it is valid for unshare(2) only.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name under /proc/<pid>/ns/.
pub fn proc_name(ns: LinuxNamespaceType) -> &'static str {
    match ns {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to join, opened by the runtime before any process is cloned so that a bad
/// path is reported before anything exists.
pub struct JoinNs {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub file: File,
    /// The path names the runtime's own namespace (the host's): joining it isolates nothing.
    pub is_runtimes: bool,
}

impl JoinNs {
    pub fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), clone_flag(self.typ)).ctx(|| {
            format!(
                "joining the {} namespace {}",
                proc_name(self.typ),
                self.path.display()
            )
        })
    }
}

/// What the bundle's `linux.namespaces` asks for, checked.
pub struct NamespacePlan {
    /// Namespaces to create.
    pub new: Vec<LinuxNamespaceType>,
    /// Namespaces to join, in [`JOIN_ORDER`].
    pub join: Vec<JoinNs>,
}

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let empty = Vec::new();
        let list: &Vec<LinuxNamespace> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .unwrap_or(&empty);
        let mut new = Vec::new();
        let mut join = Vec::new();
        for typ in JOIN_ORDER {
            let matching: Vec<&LinuxNamespace> = list.iter().filter(|n| n.typ() == typ).collect();
            if matching.len() > 1 {
                return Err(Error::config(
                    "linux.namespaces",
                    format!("the {} namespace is listed twice", proc_name(typ)),
                ));
            }
            let Some(ns) = matching.first() else { continue };
            match ns.path() {
                None => new.push(typ),
                Some(path) if path.as_os_str().is_empty() => new.push(typ),
                Some(path) => join.push(open_ns(typ, path)?),
            }
        }
        Ok(NamespacePlan { new, join })
    }

    pub fn is_new(&self, typ: LinuxNamespaceType) -> bool {
        self.new.contains(&typ)
    }

    pub fn joins(&self, typ: LinuxNamespaceType) -> Option<&JoinNs> {
        self.join.iter().find(|j| j.typ == typ)
    }

    /// Whether the container has a namespace of this type that is not the runtime's own: a
    /// new one, or a joined one other than the one the runtime runs in.
    pub fn owns(&self, typ: LinuxNamespaceType) -> bool {
        self.is_new(typ) || self.joins(typ).is_some_and(|j| !j.is_runtimes)
    }

    pub fn new_flags(&self) -> CloneFlags {
        self.new
            .iter()
            .fold(CloneFlags::empty(), |acc, t| acc | clone_flag(*t))
    }
}

/// Opens the namespace file `path`, checked to be on nsfs and of type `typ`.
pub fn open_ns(typ: LinuxNamespaceType, path: &Path) -> Result<JoinNs> {
    let field = format!("linux.namespaces[{}].path", proc_name(typ));
    let file = open_nsfs(path).map_err(|e| Error::config(&field, e))?;
    // NS_GET_NSTYPE tells whether the file really is a namespace of that type.
    // SAFETY: ioctl on an fd we own with an argument-less request; the result is an int.
    let got = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE) };
    if got < 0 {
        return Err(Error::config(
            &field,
            format!("{} is not a namespace file", path.display()),
        ));
    }
    if got != clone_flag(typ).bits() {
        return Err(Error::config(
            &field,
            format!("{} is not a {} namespace", path.display(), proc_name(typ)),
        ));
    }
    let is_runtimes = same_file(&file, &format!("/proc/self/ns/{}", proc_name(typ)));
    Ok(JoinNs {
        typ,
        path: path.to_path_buf(),
        file,
        is_runtimes,
    })
}

/// Opens `path` only if it is on nsfs: an open(2) of a FIFO or a device a hostile config
/// names would block or act before NS_GET_NSTYPE could say what it is. The path is opened
/// O_PATH (no side effect), checked, then reopened through that fd.
fn open_nsfs(path: &Path) -> std::result::Result<File, String> {
    use std::os::fd::AsRawFd;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot open {}: {e}", path.display());
    let probe = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| cannot(&e))?;
    let fs = nix::sys::statfs::fstatfs(&probe).map_err(|e| cannot(&e))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(format!("{} is not a namespace file", path.display()));
    }
    File::open(format!("/proc/self/fd/{}", probe.as_raw_fd())).map_err(|e| cannot(&e))
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether the open file and the file at `path` are one inode.
fn same_file(file: &File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

// _IO(0xb7, 0x3)
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Writes `/proc/<pid>/uid_map` and `gid_map` for a process that just entered a new user
/// namespace. With no mappings given, the process stays unmapped, which the spec forbids for a
/// new user namespace, so that is an error.
pub fn write_id_maps(
    pid: i32,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<()> {
    if uid_maps.is_empty() || gid_maps.is_empty() {
        return Err(Error::config(
            "linux.uidMappings",
            "a new user namespace needs linux.uidMappings and linux.gidMappings",
        ));
    }
    let fmt = |maps: &[LinuxIdMapping]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    // Root of a user namespace (rootless podman's runtime) maps what its namespace has.
    if !nix::unistd::geteuid().is_root() {
        return write_id_maps_rootless(pid, uid_maps, gid_maps);
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uid_maps))
        .ctx(|| "writing linux.uidMappings to uid_map".into())?;
    std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gid_maps))
        .ctx(|| "writing linux.gidMappings to gid_map".into())?;
    Ok(())
}

/// An unprivileged user may map only their own uid and gid, one id each, and the gid only
/// with setgroups denied; anything more goes through the setuid newuidmap/newgidmap (Debian's
/// uidmap), which allow the ranges /etc/subuid and /etc/subgid grant the user.
fn write_id_maps_rootless(
    pid: i32,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<()> {
    let own = |maps: &[LinuxIdMapping], id: u32| {
        maps.len() == 1 && maps[0].size() == 1 && maps[0].host_id() == id
    };
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if own(uid_maps, uid) {
        let m = &uid_maps[0];
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{} {} 1\n", m.container_id(), m.host_id()),
        )
        .ctx(|| "writing linux.uidMappings to uid_map".into())?;
    } else {
        helper_map("newuidmap", "linux.uidMappings", pid, uid_maps)?;
    }
    if own(gid_maps, gid) {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .ctx(|| "denying setgroups (rootless, own gid only)".into())?;
        let m = &gid_maps[0];
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{} {} 1\n", m.container_id(), m.host_id()),
        )
        .ctx(|| "writing linux.gidMappings to gid_map".into())?;
    } else {
        helper_map("newgidmap", "linux.gidMappings", pid, gid_maps)?;
    }
    Ok(())
}

fn helper_map(tool: &str, field: &str, pid: i32, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = std::process::Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::config(
                field,
                format!(
                    "mapping more than your own id needs {tool} (Debian's uidmap package): {e}"
                ),
            )
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(Error::config(
            field,
            format!(
                "{tool} refused the mappings (does /etc/sub{}id grant them?): {}",
                if tool == "newuidmap" { "u" } else { "g" },
                why.trim().replace('\n', " ")
            ),
        ));
    }
    Ok(())
}

/// Whether `pid` lives in a different namespace of this type than we do.
pub fn differs_from_ours(pid: i32, typ: LinuxNamespaceType) -> bool {
    let name = proc_name(typ);
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
    let ours = std::fs::read_link(format!("/proc/self/ns/{name}"));
    match (theirs, ours) {
        (Ok(a), Ok(b)) => a != b,
        _ => false,
    }
}
