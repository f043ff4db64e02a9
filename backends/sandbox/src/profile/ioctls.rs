//! The sandbox's second filter: the ioctls that change a file's metadata through an fd,
//! refused on a default of "allow" (why a filter of its own: see [`fd_metadata_profile`]).

use oci_spec::runtime::LinuxSeccomp;
use serde_json::Value;

use super::rule::rule;

/// ioctls that change a file's metadata through any fd, a read-only one too (the kernel asks
/// only for ownership and a writable mount): inode flags (immutable, append-only, ...), project
/// and extended flags, the inode version, encryption and verity (which make a file read-only
/// for good), fscrypt keys, ext4's migration between block maps and extents. The cmd argument
/// is 32 bits to the kernel: compared under that mask, so that high bits cannot slip a call
/// past the rule.
const METADATA_IOCTLS: &[u64] = &[
    0x4008_6602, // FS_IOC_SETFLAGS
    0x4004_6602, // FS_IOC32_SETFLAGS
    0x4008_7602, // FS_IOC_SETVERSION
    0x4004_7602, // FS_IOC32_SETVERSION
    0x4008_6604, // EXT4_IOC_SETVERSION
    0x4004_6604, // EXT4_IOC32_SETVERSION
    0x401c_5820, // FS_IOC_FSSETXATTR
    0x800c_6613, // FS_IOC_SET_ENCRYPTION_POLICY
    0xc050_6617, // FS_IOC_ADD_ENCRYPTION_KEY
    0xc040_6618, // FS_IOC_REMOVE_ENCRYPTION_KEY
    0xc040_6619, // FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS
    0x4080_6685, // FS_IOC_ENABLE_VERITY
    0x4100_9432, // FS_IOC_SETFSLABEL
    0x0000_6609, // EXT4_IOC_MIGRATE
];

/// Every write-only ioctl of the types 'f' (the inode flags and ext4's, fscrypt's and
/// fs-verity's calls) and 'v' (the inode version), whatever their number and size: the
/// list above names the known setters, this holds the ones it misses (ext4 alone has added
/// a few setters over the years). The direction bits and the type, on the kernel's 32 bits.
/// On x86-64 no terminal or socket ioctl has these types, and the calls a program reads
/// metadata with (FS_IOC_GETFLAGS, FS_IOC_GETVERSION, FS_IOC_FIEMAP) are read or read-write
/// ones; what this also takes are fscrypt's two oddly numbered getters and ext4's debugging
/// GETSTATE, of no use in a container.
const WRITE_IOCTL_TYPES: &[(u64, u64)] = &[(0xc000_ff00, 0x4000_6600), (0xc000_ff00, 0x4000_7600)];

/// btrfs's ioctls (type 0x94) include making and deleting subvolumes and snapshots in a
/// directory opened read-only: all refused.
const BTRFS_IOCTL_TYPE: u64 = 0x94;

/// A filter of its own, after the profile's: the profile allows ioctl unconditionally, and
/// libseccomp lets an unconditional rule override conditional ones on the same syscall, so
/// the refusals live here, on a default of "allow". The kernel applies the stricter action.
pub fn fd_metadata_profile() -> LinuxSeccomp {
    let mut syscalls: Vec<Value> = METADATA_IOCTLS
        .iter()
        .map(|cmd| {
            rule(
                &["ioctl"],
                "SCMP_ACT_ERRNO",
                Some(libc::ENOTTY as u32),
                &[(1, "SCMP_CMP_MASKED_EQ", 0xffff_ffff, *cmd)],
            )
        })
        .collect();
    for (mask, value) in WRITE_IOCTL_TYPES {
        syscalls.push(rule(
            &["ioctl"],
            "SCMP_ACT_ERRNO",
            Some(libc::ENOTTY as u32),
            &[(1, "SCMP_CMP_MASKED_EQ", *mask, *value)],
        ));
    }
    syscalls.push(rule(
        &["ioctl"],
        "SCMP_ACT_ERRNO",
        Some(libc::ENOTTY as u32),
        &[(1, "SCMP_CMP_MASKED_EQ", 0xff00, BTRFS_IOCTL_TYPE << 8)],
    ));
    let value = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    });
    serde_json::from_value(value).expect("the ioctl profile is a valid LinuxSeccomp")
}
