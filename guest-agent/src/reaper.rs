//! One thread reaps every child (as PID 1, every orphan of the guest too) and records exit
//! statuses; whoever waits for a PID reads its status from here, never with waitpid itself, so
//! that no status is stolen. A status is kept with the moment it was reaped, and a waiter names
//! the moment before it started the process: a status from an earlier process that had the same
//! PID is older than that, so a reused PID is never mistaken for an exited one.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub fn block_sigchld() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("blocking SIGCHLD")
}

/// Exit status and reap time by PID.
type Statuses = Mutex<HashMap<i32, (i32, Instant)>>;

#[derive(Clone)]
pub struct Reaper {
    inner: Arc<(Statuses, Condvar)>,
}

impl Reaper {
    pub fn start() -> Result<Reaper> {
        let reaper = Reaper {
            inner: Arc::new((Mutex::new(HashMap::new()), Condvar::new())),
        };
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.run())
            .context("starting the reaper")?;
        Ok(reaper)
    }

    fn run(&self) {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        loop {
            self.reap_all();
            let _ = set.wait();
        }
    }

    fn reap_all(&self) {
        loop {
            let code = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let (map, cond) = &*self.inner;
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(code.0.as_raw(), (code.1, Instant::now()));
            cond.notify_all();
        }
    }

    /// The exit status of `pid` (code, or 128+N for signal N), started after `since`, waiting
    /// up to `timeout` (None: for as long as it takes).
    pub fn wait(&self, pid: i32, since: Instant, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (map, cond) = &*self.inner;
        let mut guard = map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((status, _)) = guard.get(&pid).filter(|(_, at)| *at >= since) {
                return Some(*status);
            }
            guard = match deadline {
                None => cond.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    cond.wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub fn exited(&self, pid: i32, since: Instant) -> Option<i32> {
        let (map, _) = &*self.inner;
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .filter(|(_, at)| *at >= since)
            .map(|(status, _)| *status)
    }
}
