//! The supervisor's worker threads: each waits for one trapped call on its caller's behalf (a
//! FIFO's open, a connect, an open that breaks a lease, a send to a full receiver) and answers
//! it. They are the supervisor's, outside the container's pids limit, so:
//! - there are at most [`MAX_WAITS`] at once (a call beyond gets EAGAIN);
//! - a wait whose caller has gone (killed, or interrupted by a signal, which cancels its
//!   notification) is cut short: the serving thread checks the waits now and then and sends
//!   the thread of each stale one a signal whose handler does nothing and does not restart
//!   the call, so the blocked syscall returns EINTR.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Waits at once. A container's blocked callers count against its own pids limit, but a
/// caller that gave up leaves its wait behind until it is cut short.
pub const MAX_WAITS: usize = 256;

/// The signal that interrupts a stale wait.
const INTERRUPT: libc::c_int = libc::SIGUSR1;

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// The eventfd that wakes the serving loop (the supervisor's main thread), which then polls
/// with a timeout while there are waits to check; -1 before it is set.
static WAKER: AtomicI32 = AtomicI32::new(-1);

/// Names the eventfd that [`reserve`] writes to when the first wait begins. The fd must stay
/// open for the life of the process.
pub fn set_waker(fd: RawFd) {
    WAKER.store(fd, Ordering::SeqCst);
}

/// Waiting notifications: id → (the worker's dup of its listener, the worker's thread ID).
static WAITING: Mutex<Option<HashMap<u64, (RawFd, libc::pid_t)>>> = Mutex::new(None);

/// Takes a place for a new worker; false when all are taken.
pub fn reserve() -> bool {
    let before = COUNT.fetch_add(1, Ordering::SeqCst);
    if before >= MAX_WAITS {
        COUNT.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    let waker = WAKER.load(Ordering::SeqCst);
    if before == 0 && waker >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array to the eventfd, open for the process's
        // life (see `set_waker`).
        unsafe { libc::write(waker, one.as_ptr().cast(), one.len()) };
    }
    true
}

pub fn release() {
    COUNT.fetch_sub(1, Ordering::SeqCst);
}

/// A worker's wait, registered until dropped.
pub struct Registered(u64);

/// Registers the calling worker thread as waiting for notification `id` of `listener` (the
/// worker's own dup, open for as long as the registration).
pub fn begin(id: u64, listener: RawFd) -> Registered {
    // SAFETY: gettid has no arguments.
    let tid = unsafe { libc::gettid() };
    let mut w = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    w.get_or_insert_with(HashMap::new)
        .insert(id, (listener, tid));
    Registered(id)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut w = WAITING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = w.as_mut() {
            map.remove(&self.0);
        }
    }
}

/// Whether any worker is waiting (then the serving thread checks on them).
pub fn any() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

extern "C" fn interrupted(_: libc::c_int) {}

/// Installs the handler of the interrupting signal: it does nothing, and without SA_RESTART
/// the interrupted syscall fails with EINTR.
pub fn install_handler() {
    // SAFETY: a zeroed sigaction with a handler that touches nothing; no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = interrupted as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(INTERRUPT, &sa, std::ptr::null_mut());
    }
}

/// Interrupts every wait whose notification is no longer pending.
pub fn interrupt_stale() {
    let w = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(map) = w.as_ref() else { return };
    for (id, (fd, tid)) in map {
        // SAFETY: the fd is the worker's dup of its listener, closed only after the worker
        // unregisters, which waits for this lock.
        let listener = unsafe { BorrowedFd::borrow_raw(*fd) };
        if !crate::notif::still_valid(listener, *id) {
            // SAFETY: tgkill to a thread of this process, with a handled signal.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), *tid, INTERRUPT) };
        }
    }
}
