//! Filesystems that are the kernel's own interface rather than storage: what a share or a
//! policy must not hand on as if it were a directory of files.

/// procfs: the processes of a pid namespace, and the kernel's /proc/sys.
pub const PROC: i64 = 0x9fa0;

/// Whether `magic` (statfs f_type) is a kernel interface filesystem other than procfs (a
/// container's own /proc is its processes', which callers decide on apart).
pub fn is_interface(magic: i64) -> bool {
    const SYSFS: i64 = 0x6265_6572;
    const CGROUP: i64 = 0x0027_e0eb;
    const CGROUP2: i64 = 0x6367_7270;
    const DEBUGFS: i64 = 0x6462_6720;
    const TRACEFS: i64 = 0x7472_6163;
    const SECURITYFS: i64 = 0x7365_6373;
    const BPF_FS: i64 = 0xcafe_4a11;
    const PSTORE: i64 = 0x6165_676c;
    const EFIVARFS: i64 = 0xde5e_81e4;
    const CONFIGFS: i64 = 0x6265_6570;
    const FUSECTL: i64 = 0x6573_5546;
    matches!(
        magic,
        SYSFS
            | CGROUP
            | CGROUP2
            | DEBUGFS
            | TRACEFS
            | SECURITYFS
            | BPF_FS
            | PSTORE
            | EFIVARFS
            | CONFIGFS
            | FUSECTL
    )
}
