//! Small cgroup eBPF programs with raw bpf(2): an instruction type, an assembler with
//! labels, and load/attach. The programs strata needs (the v2 device filter, the sandbox's
//! datagram destination filter) are a few dozen straight-line instructions; a BPF crate
//! (aya, libbpf-rs) would bring a loader, BTF handling and a build-time toolchain for that.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Insn {
    pub code: u8,
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub const LDX_MEM_H: u8 = 0x69;
pub const LDX_MEM_B: u8 = 0x71;
/// BPF_ST | BPF_MEM | BPF_W: store the immediate.
pub const ST_MEM_W: u8 = 0x62;
pub const MOV64_X: u8 = 0xbf;
pub const MOV64_K: u8 = 0xb7;
pub const ALU64_ADD_K: u8 = 0x07;
pub const ALU32_LSH_K: u8 = 0x64;
/// BPF_JMP | BPF_CALL: a helper, by number in the immediate.
pub const CALL: u8 = 0x85;
pub const ALU32_AND_K: u8 = 0x54;
pub const ALU32_RSH_K: u8 = 0x74;
pub const MOV32_X: u8 = 0xbc;
pub const MOV32_K: u8 = 0xb4;
/// BPF_ALU | BPF_END | BPF_TO_BE: byte order to big endian (imm: 16, 32 or 64 bits).
pub const END_TO_BE: u8 = 0xdc;
pub const JA: u8 = 0x05;
pub const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub const JNE_X: u8 = 0x5d;
pub const JEQ_K: u8 = 0x15;
pub const JEQ_X: u8 = 0x1d;
/// BPF_LD | BPF_DW | BPF_IMM: a 64-bit immediate, over two instructions.
pub const LD_IMM64: u8 = 0x18;
/// 32-bit compares (BPF_JMP32), so that immediates are not sign-extended to 64 bits.
pub const JMP32_JEQ_K: u8 = 0x16;
pub const JMP32_JNE_K: u8 = 0x56;
pub const JMP32_JGT_K: u8 = 0x26;
pub const JMP32_JLT_K: u8 = 0xa6;
pub const EXIT: u8 = 0x95;

pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0xf),
        off,
        imm,
    }
}

/// A place in a program that jumps name before it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program whose jumps name labels; [`Asm::finish`] turns them into offsets.
#[derive(Default)]
pub struct Asm {
    prog: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    at: Vec<Option<usize>>,
}

impl Asm {
    pub fn op(&mut self, i: Insn) {
        self.prog.push(i);
    }

    pub fn label(&mut self) -> Label {
        self.at.push(None);
        Label(self.at.len() - 1)
    }

    /// The next instruction is where `l` points.
    pub fn bind(&mut self, l: Label) {
        self.at[l.0] = Some(self.prog.len());
    }

    /// A conditional jump (`code` with register `dst` and immediate `imm`) to `l`.
    pub fn jump_if(&mut self, code: u8, dst: u8, imm: i32, l: Label) {
        self.jumps.push((self.prog.len(), l));
        self.prog.push(insn(code, dst, 0, 0, imm));
    }

    /// A conditional jump comparing registers `dst` and `src` (`code` is a BPF_X jump) to `l`.
    pub fn jump_if_reg(&mut self, code: u8, dst: u8, src: u8, l: Label) {
        self.jumps.push((self.prog.len(), l));
        self.prog.push(insn(code, dst, src, 0, 0));
    }

    /// `dst = value`, all 64 bits.
    pub fn load_u64(&mut self, dst: u8, value: u64) {
        self.op(insn(LD_IMM64, dst, 0, 0, value as u32 as i32));
        self.op(insn(0, 0, 0, 0, (value >> 32) as u32 as i32));
    }

    /// Whether some jump goes to `l`.
    pub fn is_jumped_to(&self, l: Label) -> bool {
        self.jumps.iter().any(|(_, j)| *j == l)
    }

    pub fn goto(&mut self, l: Label) {
        self.jump_if(JA, 0, 0, l);
    }

    /// `r0 = value; exit`.
    pub fn ret(&mut self, value: i32) {
        self.op(insn(MOV32_K, 0, 0, 0, value));
        self.op(insn(EXIT, 0, 0, 0, 0));
    }

    /// The program, every label bound.
    pub fn finish(mut self) -> Vec<Insn> {
        for (i, l) in &self.jumps {
            let target = self.at[l.0].expect("every label used is bound");
            self.prog[*i].off = (target as isize - *i as isize - 1) as i16;
        }
        self.prog
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;

/// The leading fields of bpf(2)'s attribute block for BPF_PROG_LOAD, up to
/// expected_attach_type.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// bpf(2) with the attribute block `attr`, its size passed along.
///
/// # Safety
/// `attr` must be the attribute block `cmd` expects, and every address in it must point at
/// memory that stays valid for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> libc::c_long {
    // SAFETY: the caller vouches for the block; its size is passed with it.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    }
}

/// Loads a program; a refusal carries the verifier's log.
pub fn load(prog_type: u32, expected_attach_type: u32, prog: &[Insn]) -> Result<OwnedFd, String> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type,
    };
    // SAFETY: attr points at live instruction, license and log buffers for the whole call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let text = String::from_utf8_lossy(&log);
        return Err(format!("{err} {}", text.trim_end_matches('\0').trim()));
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a loaded program to the cgroup directory `dir`.
pub fn attach(dir: &Path, prog: &OwnedFd, attach_type: u32, flags: u32) -> Result<(), String> {
    let cg = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    attach_to(cg.as_fd(), prog, attach_type, flags).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Attaches a loaded program to the cgroup directory open as `cgroup`.
pub fn attach_to(
    cgroup: BorrowedFd,
    prog: &OwnedFd,
    attach_type: u32,
    flags: u32,
) -> Result<(), String> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
    };
    // SAFETY: attr is a valid, live BPF_PROG_ATTACH attribute block.
    let r = unsafe { bpf(BPF_PROG_ATTACH, &attr) };
    if r < 0 {
        return Err(format!("attaching: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_offsets_forward_and_back() {
        let mut a = Asm::default();
        let end = a.label();
        let top = a.label();
        a.bind(top);
        a.jump_if(JMP32_JEQ_K, 2, 7, end); // 0 -> 3
        a.op(insn(MOV32_K, 2, 0, 0, 7)); // 1
        a.goto(top); // 2 -> 0
        a.bind(end);
        a.ret(1); // 3, 4
        let p = a.finish();
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].off, 2);
        assert_eq!(p[2].off, -3);
    }
}
