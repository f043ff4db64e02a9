//! Sockets: connect, bind, sendto and listen on the caller's own socket, held to the
//! network policy and, for Unix paths, to the file policy.

use super::*;

impl Emulator {
    /// listen(2) on the caller's socket. One that has no port yet gets one from the kernel
    /// here (every address and an ephemeral port, for a socket never bound), which no bind
    /// hook sees: held to the `bind` list like a bind of its address to port 0.
    pub(super) fn listen(&mut self, c: &Creds, fd: i32, backlog: i32) -> R<Outcome> {
        let sock = self.caller_fd(c, fd)?;
        if socket_type(&sock) == libc::SOCK_STREAM {
            if let Some((ip, 0)) = local_ip_endpoint(&sock) {
                self.check_endpoint(ip, 0, true, "listen")?;
            }
        }
        // SAFETY: listen(2) on our copy of the caller's socket, with integers.
        let r = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
        Errno::result(r)?;
        Ok(Outcome::Value(0))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn socket(
        &mut self,
        tid: u32,
        c: &Creds,
        kind: SockOp,
        fd: i32,
        addr: Vec<u8>,
        listener: BorrowedFd,
        id: u64,
    ) -> R<Outcome> {
        let bind = matches!(kind, SockOp::Bind);
        let what = match kind {
            SockOp::Bind => "bind",
            SockOp::Connect => "connect",
            SockOp::SendTo { .. } => "sendto",
        };
        let addr = &addr[..];
        if addr.len() < 2 {
            return Err(Errno::EINVAL);
        }
        let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
        // For a Unix socket path: the directory to act from and the address to use there.
        let mut unix_at: Option<(Dir, Vec<u8>)> = None;
        let mut held_socket_file: Option<OwnedFd> = None;
        match family {
            libc::AF_INET | libc::AF_INET6 => {
                let (ip, port) = ip_endpoint(addr).ok_or(Errno::EINVAL)?;
                self.check_endpoint(ip, port, bind, what)?;
            }
            libc::AF_UNIX => {
                let raw = &addr[2..];
                let path: Vec<u8> = raw.iter().take_while(|b| **b != 0).copied().collect();
                if raw.first() == Some(&0) || path.is_empty() {
                    // Abstract sockets live in the network namespace: network rules apply.
                    if self.policy.network == crate::policy::Network::None {
                        self.deny(what, "@abstract", "network = none");
                        return Err(Errno::EACCES);
                    }
                    // In the host's network namespace the abstract names are the host's
                    // (X11, D-Bus, other runtimes' sockets): only names the container bound
                    // itself are reached. (Landlock's abstract-socket scope holds sendmsg,
                    // which is not trapped, to the same; it does not see this supervisor's
                    // connect on the caller's behalf.)
                    if self.host_network && !bind && !self.abstract_names().contains(raw) {
                        self.deny(what, "@abstract", "not bound by the container");
                        return Err(Errno::EACCES);
                    }
                } else if bind {
                    // A new name: bound as that one component from its checked parent, so
                    // nothing swapped into the path in between can move it.
                    let (parent, last) = self.parent(tid, c, libc::AT_FDCWD, &path)?;
                    self.check_named(&parent, &last, Access::Write, what)?;
                    unix_at = Some((Dir::Own(parent), sun_path(last.as_bytes())?));
                } else {
                    // An existing socket: reached again through the fd of the inode that was
                    // checked (host /proc/self/fd/N, which connect follows), not by its path.
                    let sock_file = self.resolve(tid, c, libc::AT_FDCWD, &path, 0)?;
                    self.check(&sock_file, Access::Write, what)?;
                    let via = format!("self/fd/{}", sock_file.as_raw_fd());
                    let proc_dir = self.host_proc.try_clone().map_err(|_| Errno::EMFILE)?;
                    unix_at = Some((Dir::Own(proc_dir), sun_path(via.as_bytes())?));
                    // Kept open until the call is made.
                    held_socket_file = Some(sock_file);
                }
            }
            // Routing sockets (the only netlink family the profile lets be made): binding
            // one sets its groups, as `ip` does.
            libc::AF_NETLINK => {}
            _ => {
                if self.policy.network != crate::policy::Network::Any {
                    self.deny(
                        what,
                        &format!("address family {family}"),
                        "network is not any",
                    );
                    return Err(Errno::EACCES);
                }
            }
        }
        // Act on the caller's own socket, with the address we checked.
        let sock = self.caller_fd(c, fd)?;
        // Unix peers see who connected or sent (SO_PEERCRED, SCM_CREDENTIALS): the caller's
        // IDs, not the supervisor's root.
        let as_caller = family == libc::AF_UNIX;
        let caller = c.clone();
        if matches!(kind, SockOp::Connect) {
            // A connect may wait (a remote host, a full Unix backlog), and whether it does
            // can change under us (another thread clears O_NONBLOCK): always from a thread
            // of its own, which answers the caller itself.
            let unix_at = unix_at
                .map(|(dir, a)| Ok::<_, Errno>((dir.into_owned()?, a)))
                .transpose()?;
            let addr = addr.to_vec();
            return self.defer(listener, id, move || {
                let _held = held_socket_file;
                worker_call(&sock, &kind, unix_at, &addr, as_caller.then_some(&caller))
            });
        }
        if let SockOp::SendTo { data, asked, flags } = &kind {
            if flags & libc::MSG_DONTWAIT == 0 && blocks(&sock, &kind) {
                // Tried without waiting first; a send that would wait is waited for on a
                // thread of its own (a full Unix receiver, a full socket buffer).
                let now = SockOp::SendTo {
                    data: data.clone(),
                    asked: *asked,
                    flags: flags | libc::MSG_DONTWAIT,
                };
                let tried = self.unix_or_ip_call(
                    &sock,
                    &now,
                    unix_at.as_ref(),
                    addr,
                    as_caller.then_some(c),
                );
                if !matches!(tried, Err(Errno::EAGAIN)) {
                    drop(held_socket_file);
                    return tried;
                }
                let unix_at = unix_at
                    .map(|(dir, a)| Ok::<_, Errno>((dir.into_owned()?, a)))
                    .transpose()?;
                let addr = addr.to_vec();
                return self.defer(listener, id, move || {
                    let _held = held_socket_file;
                    worker_call(&sock, &kind, unix_at, &addr, as_caller.then_some(&caller))
                });
            }
        }
        let result =
            self.unix_or_ip_call(&sock, &kind, unix_at.as_ref(), addr, as_caller.then_some(c));
        drop(held_socket_file);
        if bind && family == libc::AF_UNIX && result.is_ok() {
            // The name the socket now has: abstract (or autobound, when the address is the
            // family alone), or a path (which the abstract rule ignores).
            if let Some(name) = unix_name(&sock) {
                let mut names = self.abstract_names();
                if names.len() < 65536 {
                    names.insert(name);
                }
            }
        }
        result
    }

    /// bind or sendto on the caller's socket from this (the serving) thread: a Unix path
    /// relative to its checked directory (this thread's cwd for the one call), with the
    /// caller's IDs for Unix peers when `caller` is given.
    pub(super) fn unix_or_ip_call(
        &mut self,
        sock: &OwnedFd,
        kind: &SockOp,
        unix_at: Option<&(Dir, Vec<u8>)>,
        addr: &[u8],
        caller: Option<&Creds>,
    ) -> R<Outcome> {
        let call = || -> R<Outcome> {
            let Some((dir, unix_addr)) = unix_at else {
                return sock_call(sock, kind, addr);
            };
            let here = openat_raw(
                libc::AT_FDCWD,
                c".",
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )?;
            nix::unistd::fchdir(dir.as_fd())?;
            let result = sock_call(sock, kind, unix_addr);
            let _ = nix::unistd::fchdir(here.as_fd());
            result
        };
        match caller {
            Some(c) => self.ident.borrow_mut().with_caller_ids(c, call)?,
            None => call(),
        }
    }

    pub(super) fn check_endpoint(
        &mut self,
        ip: std::net::IpAddr,
        port: u16,
        bind: bool,
        what: &str,
    ) -> R<()> {
        self.policy.check_endpoint(ip, port, bind).map_err(|d| {
            self.deny(
                what,
                &std::net::SocketAddr::new(ip, port).to_string(),
                d.rule,
            );
            Errno::EACCES
        })
    }
}

pub(super) enum SockOp {
    Bind,
    Connect,
    SendTo {
        data: Vec<u8>,
        /// The length the caller passed (`data` holds at most MAX_SEND of it).
        asked: usize,
        flags: i32,
    },
}

/// The most of one sendto the supervisor copies: the largest datagram.
pub(super) const MAX_SEND: usize = 65536;

/// Whether the call on the caller's socket may wait: the socket is in blocking mode and
/// the call does not say MSG_DONTWAIT.
pub(super) fn blocks(sock: &OwnedFd, kind: &SockOp) -> bool {
    // SAFETY: F_GETFL on our fd.
    let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    let dontwait = matches!(kind, SockOp::SendTo { flags, .. } if flags & libc::MSG_DONTWAIT != 0);
    fl >= 0 && fl & libc::O_NONBLOCK == 0 && !dontwait
}

/// bind, connect or sendto on the caller's socket with the address that was checked.
pub(super) fn sock_call(sock: &OwnedFd, kind: &SockOp, addr: &[u8]) -> R<Outcome> {
    let len = addr.len() as libc::socklen_t;
    // SAFETY: addr is the caller's sockaddr bytes, passed with its length; data is ours.
    let r = unsafe {
        match kind {
            SockOp::Bind => libc::bind(sock.as_raw_fd(), addr.as_ptr().cast(), len) as isize,
            SockOp::Connect => libc::connect(sock.as_raw_fd(), addr.as_ptr().cast(), len) as isize,
            SockOp::SendTo { data, asked, flags } => {
                if *asked > data.len() && socket_type(sock) != libc::SOCK_STREAM {
                    // Larger than any datagram: what the kernel would say.
                    return Err(Errno::EMSGSIZE);
                }
                libc::sendto(
                    sock.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    *flags,
                    addr.as_ptr().cast(),
                    len,
                )
            }
        }
    };
    let n = Errno::result(r)?;
    Ok(Outcome::Value(if matches!(kind, SockOp::SendTo { .. }) {
        n as i64
    } else {
        0
    }))
}

pub(super) fn socket_type(sock: &OwnedFd) -> i32 {
    let mut t: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `t`, whose size is passed.
    unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut t as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    t
}

/// A connect or send on a worker thread (see `defer`), which answers the caller itself: a
/// Unix path relative to its checked directory (the worker's own cwd: it leaves the shared
/// filesystem context first, so the serving thread's is untouched), with the caller's IDs
/// for Unix peers when `caller` is given. The thread ends after the call, so nothing of
/// either is undone.
pub(super) fn worker_call(
    sock: &OwnedFd,
    kind: &SockOp,
    unix_at: Option<(OwnedFd, Vec<u8>)>,
    addr: &[u8],
    caller: Option<&Creds>,
) -> R<Outcome> {
    if let Some(c) = caller {
        crate::identity::set_caller_ids(c)?;
    }
    match unix_at {
        Some((dir, unix_addr)) => {
            // SAFETY: unshare with a flag; only this thread's filesystem context changes.
            Errno::result(unsafe { libc::unshare(libc::CLONE_FS) })?;
            nix::unistd::fchdir(dir.as_fd())?;
            sock_call(sock, kind, &unix_addr)
        }
        None => sock_call(sock, kind, addr),
    }
}

/// A sockaddr_un for `path` (relative to the directory the call is made from).
pub(super) fn sun_path(path: &[u8]) -> R<Vec<u8>> {
    // sun_path holds 108 bytes, the terminating NUL included.
    if path.len() >= 108 {
        return Err(Errno::ENAMETOOLONG);
    }
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(path);
    a.push(0);
    Ok(a)
}

/// The address and port of a sockaddr_in or sockaddr_in6 (ports in network byte order).
pub(super) fn ip_endpoint(addr: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]) as i32;
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        libc::AF_INET if addr.len() >= 8 => Some((
            std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]).into(),
            port,
        )),
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            Some((std::net::Ipv6Addr::from(b).into(), port))
        }
        _ => None,
    }
}

/// The local address and port of an IP socket (the unspecified address and port 0 for one
/// never bound); None for other sockets.
pub(super) fn local_ip_endpoint(sock: &OwnedFd) -> Option<(std::net::IpAddr, u16)> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes of it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above, with our fd.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: viewing the filled part of a plain-data struct as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&addr as *const libc::sockaddr_storage).cast::<u8>(),
            (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    ip_endpoint(bytes)
}

/// The name a Unix socket is bound to (the bytes after sun_family), if it has one.
pub(super) fn unix_name(sock: &OwnedFd) -> Option<Vec<u8>> {
    // SAFETY: sockaddr_un is plain data; getsockname fills at most `len` bytes of it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: as above, with our fd.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    };
    let n = (len as usize).checked_sub(2)?;
    if r != 0 || n == 0 {
        return None;
    }
    // SAFETY: viewing the filled part of a plain-data struct as bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            addr.sun_path.as_ptr().cast::<u8>(),
            n.min(addr.sun_path.len()),
        )
    };
    Some(bytes.to_vec())
}
