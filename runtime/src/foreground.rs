//! Waiting for a process the runtime started in the foreground (`run`, `exec` without
//! --detach): forward signals to it, relay a terminal if the runtime owns the pty master, and
//! return its exit code (128+N for signal N).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the signals we forward, before the process exists, so none is lost or kills us
/// in between. Children unblock them before execve.
pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .context("blocking signals")
}

pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn copy_winsize(master: &OwnedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`; TIOCSWINSZ reads it back.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

fn read_some(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
}

/// Waits for `pid` (a child of ours, or an orphan reparented to us as subreaper).
pub fn wait(pid: i32, pty_master: Option<OwnedFd>) -> Result<i32> {
    let sfd =
        SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let _raw = pty_master.as_ref().and_then(|m| {
        copy_winsize(m);
        RawMode::enter()
    });
    let mut stdin_open = pty_master.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    // The process may already be gone before the first SIGCHLD is read.
    if let Some(code) = reap(pid) {
        drain(pty_master.as_ref(), &mut buf);
        return Ok(code);
    }
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let stdin = std::io::stdin();
        if let Some(m) = &pty_master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if let Some(m) = &pty_master {
            if ready[1] {
                let n = read_some(m.as_raw_fd(), &mut buf);
                if n > 0 {
                    write_all(1, &buf[..n as usize]);
                }
            }
            if stdin_open && ready.get(2).copied().unwrap_or(false) {
                let n = read_some(0, &mut buf);
                if n > 0 {
                    write_all(m.as_raw_fd(), &buf[..n as usize]);
                } else {
                    stdin_open = false;
                }
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGCHLD) => {
                        if let Some(code) = reap(pid) {
                            drain(pty_master.as_ref(), &mut buf);
                            return Ok(code);
                        }
                    }
                    Some(Signal::SIGWINCH) if pty_master.is_some() => {
                        if let Some(m) = &pty_master {
                            copy_winsize(m);
                        }
                    }
                    Some(s) => {
                        let _ = kill(Pid::from_raw(pid), s);
                    }
                    None => {}
                }
            }
        }
    }
}

/// Reaps every exited child; returns the exit code if `pid` was among them.
fn reap(pid: i32) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(st) => {
                if st.pid() == Some(Pid::from_raw(pid)) {
                    found = exit_code(st);
                }
            }
        }
    }
}

fn drain(master: Option<&OwnedFd>, buf: &mut [u8]) {
    let Some(m) = master else { return };
    loop {
        let mut fds = [PollFd::new(m.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        let n = read_some(m.as_raw_fd(), buf);
        if n <= 0 {
            return;
        }
        write_all(1, &buf[..n as usize]);
    }
}
