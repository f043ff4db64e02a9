//! Fault injection for the crash-safety tests: `STRATA_FAULT_POINT=<name>` in the runtime's
//! environment makes it SIGKILL itself when it reaches that point, exactly as an OOM killer
//! or an impatient client would. Inert unless the variable names the point; the container's
//! processes never see it (their environment comes from the spec).

use std::sync::OnceLock;

pub const ENV: &str = "STRATA_FAULT_POINT";

/// SIGKILLs the runtime if `STRATA_FAULT_POINT` names this point. The points are named
/// `<command>:<step>` where they are placed; tests/faults.rs lists the ones it exercises.
pub fn point(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(ENV).ok());
    if wanted.as_deref() == Some(name) {
        // SAFETY: kill(2) on our own pid with a constant signal; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
