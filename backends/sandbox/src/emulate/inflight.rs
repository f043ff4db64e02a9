//! The calls being performed for each caller thread. A thread makes one call at a time, but
//! a call it gave up (interrupted by a signal) may still be in a serving thread's hands when
//! its next call arrives on another. When that next call changes the thread's identity (the
//! setuid family, setgroups, capset, umask, execve), it is let through only once nothing is
//! being performed for the thread any more: no call is ever performed with an identity the
//! thread has already given up.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Default)]
pub(crate) struct InFlight {
    calls: Mutex<HashMap<u32, usize>>,
    done: Condvar,
}

/// One call being performed for a thread, until dropped.
pub(crate) struct Performing {
    of: Arc<InFlight>,
    tid: u32,
}

impl InFlight {
    fn calls(&self) -> MutexGuard<'_, HashMap<u32, usize>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(self: &Arc<Self>, tid: u32) -> Performing {
        *self.calls().entry(tid).or_insert(0) += 1;
        Performing {
            of: Arc::clone(self),
            tid,
        }
    }

    /// Waits until no call of `tid` is being performed; gives up (false) as soon as
    /// `still_wanted` says the waiting call itself was given up, so a call stuck elsewhere
    /// holds no serving thread for longer than its caller waits.
    pub fn wait_idle(&self, tid: u32, still_wanted: impl Fn() -> bool) -> bool {
        let mut calls = self.calls();
        while calls.contains_key(&tid) {
            if !still_wanted() {
                return false;
            }
            calls = self
                .done
                .wait_timeout(calls, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Performing {
    fn drop(&mut self) {
        let mut calls = self.of.calls();
        if let Some(n) = calls.get_mut(&self.tid) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.tid);
                self.of.done.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_change_waits_for_the_calls_in_flight() {
        let f = Arc::new(InFlight::default());
        let call = f.begin(7);
        let other = f.begin(8);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                assert!(f.wait_idle(7, || true));
                tx.send(()).unwrap();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "let through while a call is performed"
        );
        drop(call);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        // Another thread's call does not hold it.
        assert!(f.wait_idle(7, || true));
        // A waiting call given up stops waiting.
        let _again = f.begin(7);
        assert!(!f.wait_idle(7, || false));
        drop(other);
    }
}
