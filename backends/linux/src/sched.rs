//! How the process is scheduled: `process.scheduler` (sched_setattr(2)) and
//! `process.ioPriority` (ioprio_set(2)), set by the process itself before it drops its
//! capabilities (a real-time policy needs CAP_SYS_NICE, the real-time I/O class
//! CAP_SYS_ADMIN), for the init and for every exec'd process alike.

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxSchedulerFlag, LinuxSchedulerPolicy, Process, Scheduler,
};

use crate::error::{Error, Result};

/// struct sched_attr of sched_setattr(2), its first version (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

fn policy_number(p: LinuxSchedulerPolicy) -> u32 {
    match p {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

fn flag_bit(f: LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

fn attr_of(s: &Scheduler) -> SchedAttr {
    SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy_number(*s.policy()),
        sched_flags: s.flags().iter().flatten().map(|f| flag_bit(*f)).sum(),
        sched_nice: s.nice().unwrap_or(0),
        sched_priority: s.priority().unwrap_or(0).max(0) as u32,
        sched_runtime: s.runtime().unwrap_or(0),
        sched_deadline: s.deadline().unwrap_or(0),
        sched_period: s.period().unwrap_or(0),
    }
}

/// The ioprio value of ioprio_set(2): the class in the top bits, the level below.
fn ioprio_of(p: &LinuxIOPriority) -> Result<i32> {
    let class = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = p.priority();
    if !(0..=7).contains(&level) {
        return Err(Error::config(
            "process.ioPriority.priority",
            format!("{level} is not a level from 0 to 7"),
        ));
    }
    Ok((class << 13) | level as i32)
}

/// Checks the fields before anything is built, so that a bad value fails `create`.
pub fn validate(process: &Process) -> Result<()> {
    if let Some(p) = process.io_priority() {
        ioprio_of(p)?;
    }
    if let Some(s) = process.scheduler() {
        if let Some(n) = s.nice() {
            if !(-20..=19).contains(n) {
                return Err(Error::config(
                    "process.scheduler.nice",
                    format!("{n} is not a nice value from -20 to 19"),
                ));
            }
        }
        if let Some(p) = s.priority() {
            if *p < 0 {
                return Err(Error::config(
                    "process.scheduler.priority",
                    format!("{p} is negative"),
                ));
            }
        }
    }
    Ok(())
}

/// Applies both to the calling process.
pub fn apply(process: &Process) -> Result<()> {
    if let Some(s) = process.scheduler() {
        let attr = attr_of(s);
        // SAFETY: sched_setattr reads `attr.size` bytes of a live, initialised SchedAttr of
        // exactly that size; pid 0 is the calling thread.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
        if r != 0 {
            return Err(Error::config(
                "process.scheduler",
                format!("sched_setattr: {}", std::io::Error::last_os_error()),
            ));
        }
    }
    if let Some(p) = process.io_priority() {
        let prio = ioprio_of(p)?;
        const IOPRIO_WHO_PROCESS: i32 = 1;
        // SAFETY: ioprio_set takes plain integers; who 0 is the calling process.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
        if r != 0 {
            return Err(Error::config(
                "process.ioPriority",
                format!("ioprio_set: {}", std::io::Error::last_os_error()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_is_the_kernels_first_version() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 48);
    }

    #[test]
    fn io_priorities_encode_class_and_level() {
        let p: LinuxIOPriority =
            serde_json::from_str(r#"{"class": "IOPRIO_CLASS_BE", "priority": 4}"#).unwrap();
        assert_eq!(ioprio_of(&p).unwrap(), (2 << 13) | 4);
        let p: LinuxIOPriority =
            serde_json::from_str(r#"{"class": "IOPRIO_CLASS_IDLE", "priority": 8}"#).unwrap();
        assert!(ioprio_of(&p).is_err());
    }
}
