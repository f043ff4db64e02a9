//! The operations a trapped call becomes once decoded: its arguments read once, by value.

use super::*;

pub(super) enum Op {
    Open {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
        mode: u32,
        resolve: u64,
    },
    Stat {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
        buf: u64,
        statx_mask: Option<u32>,
    },
    Access {
        dirfd: i32,
        path: Vec<u8>,
        mode: i32,
        flags: i32,
    },
    Readlink {
        dirfd: i32,
        path: Vec<u8>,
        buf: u64,
        size: usize,
    },
    Unlink {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
    },
    Mkdir {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
    },
    Rename {
        olddir: i32,
        old: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
        flags: u32,
    },
    Chmod {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
        flags: i32,
    },
    Mknod {
        dirfd: i32,
        path: Vec<u8>,
        mode: u32,
        dev: u64,
    },
    Utimes {
        dirfd: i32,
        path: Vec<u8>,
        times: Option<[libc::timespec; 2]>,
        flags: i32,
    },
    Chown {
        dirfd: i32,
        path: Vec<u8>,
        uid: u32,
        gid: u32,
        flags: i32,
    },
    Link {
        olddir: i32,
        old: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
        flags: i32,
    },
    Symlink {
        target: Vec<u8>,
        newdir: i32,
        new: Vec<u8>,
    },
    Exec {
        dirfd: i32,
        path: Vec<u8>,
        flags: i32,
    },
    /// fchmod, fchown, futimens: a change made through an fd.
    FdMeta {
        fd: i32,
        meta: Meta,
    },
    Socket {
        kind: SockOp,
        fd: i32,
        addr: Vec<u8>,
    },
    Listen {
        fd: i32,
        backlog: i32,
    },
}

pub(super) enum Meta {
    Mode(u32),
    Owner(u32, u32),
    Times(Option<[libc::timespec; 2]>),
}

impl Meta {
    pub(super) fn syscall(&self) -> &'static str {
        match self {
            Meta::Mode(_) => "fchmod",
            Meta::Owner(..) => "fchown",
            Meta::Times(_) => "futimens",
        }
    }
}
