//! The threads that serve one notify fd (a container's init and its children share one; each
//! `exec` brings its own), leader and followers: one thread at a time, the leader, polls the
//! fd and receives the next notification; it hands the lead to an idle follower before it
//! performs the call, so calls of several container threads are performed at once.
//!
//! Why this shape: the trapped thread wakes its supervisor synchronously (on its own CPU,
//! see `notif::set_sync_wakeup`) only when the supervisor waits in poll(2); a thread that
//! waits in the receive ioctl itself is woken the ordinary way, ~10x slower here. And only
//! the leader receives, after poll said a notification is there, so no thread ever blocks
//! in the ioctl, where a filter that lost its last process would leave it for ever.
//!
//! A fd starts with one thread; another is asked of the supervisor's main thread (which
//! starts threads with the supervisor's own identity, never a caller's) when a notification
//! was still waiting as the leader took one and no follower was idle, up to [`max_threads`].
//! A single-threaded container so never has more than one, and pays nothing for this.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::emulate::Emulator;
use crate::notif::{self, answer, Notif, Outcome};

/// Serving threads per notify fd at most: one a CPU (the calls are CPU work; calls that
/// block are handed to the waiting threads of `waits`), at most 8. Asked once, before the
/// supervisor enters the container: the answer reads /proc and /sys, which are the
/// container's from then on.
pub fn max_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// The network and Unix-datagram programs being attached (see `supervisor::hook_kernel`):
/// the first execve is let through only once they are in place.
pub type KernelHooks = Arc<Mutex<Option<JoinHandle<()>>>>;

/// One notify fd and its serving threads.
pub struct Fd {
    pub fd: OwnedFd,
    state: Mutex<State>,
    turn: Condvar,
    /// Written to ask the main thread for another serving thread.
    more: Arc<OwnedFd>,
    hooks: KernelHooks,
    max: usize,
}

#[derive(Default)]
struct State {
    leader: bool,
    idle: usize,
    threads: usize,
    /// Another thread has been asked for and not started yet.
    asked: bool,
    /// The fd hung up: its filter has no process left.
    closed: bool,
}

impl Fd {
    pub fn new(fd: OwnedFd, more: Arc<OwnedFd>, hooks: KernelHooks, max: usize) -> Arc<Fd> {
        Arc::new(Fd {
            fd,
            state: Mutex::default(),
            turn: Condvar::new(),
            more,
            hooks,
            max,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the main thread should start another thread for this fd (and, if so, counts
    /// it as started).
    pub fn take_ask(&self) -> bool {
        let mut st = self.state();
        let start = st.asked && !st.closed;
        st.asked = false;
        if start {
            st.threads += 1;
        }
        start
    }

    /// A thread [`Fd::take_ask`] counted could not be started.
    pub fn not_started(&self) {
        self.state().threads -= 1;
    }

    /// Starts a serving thread with `em`, counted already (by [`Fd::take_ask`], or as the
    /// first).
    pub fn spawn(self: &Arc<Fd>, em: Emulator, first: bool) -> std::io::Result<()> {
        if first {
            self.state().threads += 1;
        }
        let fd = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("sandbox-serve".into())
            .spawn(move || fd.serve(em));
        if spawned.is_err() && first {
            self.state().threads -= 1;
        }
        spawned.map(drop)
    }

    fn serve(&self, mut em: Emulator) {
        // A filesystem context of its own (umask, working directory; the root stays the
        // container's): threads share one by default, and each serving thread sets the umask
        // of the caller it serves and changes directory for Unix socket calls.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS) {
            tracing::error!("sandbox supervisor: a serving thread's own fs context: {e}");
            std::process::exit(1);
        }
        let mut st = self.state();
        loop {
            while st.leader && !st.closed {
                st.idle += 1;
                st = self.turn.wait(st).unwrap_or_else(|p| p.into_inner());
                st.idle -= 1;
            }
            if st.closed {
                st.threads -= 1;
                return;
            }
            st.leader = true;
            drop(st);
            let next = self.lead();
            st = self.state();
            st.leader = false;
            match next {
                Next::Closed => {
                    st.closed = true;
                    st.threads -= 1;
                    self.turn.notify_all();
                    return;
                }
                Next::Nothing => {}
                Next::Call(n, waiting) => {
                    // Someone polls while this thread performs the call.
                    if st.idle > 0 {
                        self.turn.notify_one();
                    } else if waiting && !st.asked && st.threads < self.max {
                        st.asked = true;
                        ask_for_more(self.more.as_fd());
                    }
                    drop(st);
                    self.perform(&mut em, &n);
                    st = self.state();
                }
            }
        }
    }

    /// The leader's turn: waits for the next notification and receives it.
    fn lead(&self) -> Next {
        let fd = self.fd.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Next::Nothing,
            Err(e) => {
                tracing::error!("sandbox supervisor: poll: {e}");
                return Next::Closed;
            }
        }
        let ready = fds[0].revents().unwrap_or(PollFlags::empty());
        if ready.contains(PollFlags::POLLIN) {
            // The one receiver, after poll saw a notification: the ioctl does not block.
            match notif::recv(fd) {
                Ok(n) => Next::Call(n, pending(fd)),
                // The caller died or a signal interrupted it: nothing to answer.
                Err(_) => Next::Nothing,
            }
        } else if ready.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            Next::Closed
        } else {
            Next::Nothing
        }
    }

    fn perform(&self, em: &mut Emulator, n: &Notif) {
        let fd = self.fd.as_fd();
        if matches!(n.data.nr as i64, libc::SYS_execve | libc::SYS_execveat) {
            // Held while joining: a concurrent execve waits for the programs too.
            let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = hooks.take() {
                let _ = h.join();
            }
        }
        let outcome = em.handle(fd, n);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let what = match &outcome {
                Outcome::Value(v) => format!("= {v}"),
                Outcome::Errno(e) => format!("= {e}"),
                Outcome::Fd { fd, .. } => format!("= fd {}", fd.as_raw_fd()),
                Outcome::Continue => "continued".into(),
                Outcome::Deferred => "answered by a worker".into(),
            };
            tracing::debug!("sandbox: pid {} syscall {} {what}", n.pid, n.data.nr);
        }
        answer(fd, n.id, outcome);
    }
}

enum Next {
    /// A notification, and whether another was already waiting behind it.
    Call(Notif, bool),
    Nothing,
    Closed,
}

/// Whether a notification is waiting on `fd` now.
fn pending(fd: BorrowedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// Wakes the main thread (an eventfd) to start another serving thread.
fn ask_for_more(more: BorrowedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local array to an eventfd.
    unsafe { libc::write(more.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}
