//! Registers from `user_regs_struct`/`pt_regs` words and from `elf_prstatus` notes.

use std::ops::{Index, IndexMut};

/// An x86-64 register a task can have a value for: the general registers, rip, eflags, the
/// segment selectors and the fs/gs bases. (gdb's numbers for them are gdb's: `gdb::arch`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // The registers' own names.
pub enum Reg {
    Rax,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rbp,
    Rsp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    Rip,
    Eflags,
    Cs,
    Ss,
    Ds,
    Es,
    Fs,
    Gs,
    FsBase,
    GsBase,
}

impl Reg {
    /// How many there are.
    pub const COUNT: usize = 26;

    /// Every register, in the order above.
    pub const ALL: [Reg; Reg::COUNT] = [
        Reg::Rax,
        Reg::Rbx,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rsi,
        Reg::Rdi,
        Reg::Rbp,
        Reg::Rsp,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
        Reg::Rip,
        Reg::Eflags,
        Reg::Cs,
        Reg::Ss,
        Reg::Ds,
        Reg::Es,
        Reg::Fs,
        Reg::Gs,
        Reg::FsBase,
        Reg::GsBase,
    ];
}

/// The registers by their upper-case names, for code that reads like the kernel's.
#[allow(missing_docs)]
pub mod reg {
    use super::Reg;
    pub const RAX: Reg = Reg::Rax;
    pub const RBX: Reg = Reg::Rbx;
    pub const RCX: Reg = Reg::Rcx;
    pub const RDX: Reg = Reg::Rdx;
    pub const RSI: Reg = Reg::Rsi;
    pub const RDI: Reg = Reg::Rdi;
    pub const RBP: Reg = Reg::Rbp;
    pub const RSP: Reg = Reg::Rsp;
    pub const R8: Reg = Reg::R8;
    pub const R9: Reg = Reg::R9;
    pub const R10: Reg = Reg::R10;
    pub const R11: Reg = Reg::R11;
    pub const R12: Reg = Reg::R12;
    pub const R13: Reg = Reg::R13;
    pub const R14: Reg = Reg::R14;
    pub const R15: Reg = Reg::R15;
    pub const RIP: Reg = Reg::Rip;
    pub const EFLAGS: Reg = Reg::Eflags;
    pub const CS: Reg = Reg::Cs;
    pub const SS: Reg = Reg::Ss;
    pub const DS: Reg = Reg::Ds;
    pub const ES: Reg = Reg::Es;
    pub const FS: Reg = Reg::Fs;
    pub const GS: Reg = Reg::Gs;
    pub const FS_BASE: Reg = Reg::FsBase;
    pub const GS_BASE: Reg = Reg::GsBase;
}

/// One task's registers; `None` is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs([Option<u64>; Reg::COUNT]);

impl Regs {
    /// The value of `r`, if known.
    pub fn get(&self, r: Reg) -> Option<u64> {
        self[r]
    }

    /// The program counter (rip), if known.
    pub fn pc(&self) -> Option<u64> {
        self[Reg::Rip]
    }

    /// Every register and its value, in [`Reg::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Reg, Option<u64>)> + '_ {
        Reg::ALL.iter().map(|&r| (r, self[r]))
    }
}

impl Index<Reg> for Regs {
    type Output = Option<u64>;
    fn index(&self, r: Reg) -> &Option<u64> {
        &self.0[r as usize]
    }
}

impl IndexMut<Reg> for Regs {
    fn index_mut(&mut self, r: Reg) -> &mut Option<u64> {
        &mut self.0[r as usize]
    }
}

/// `user_regs_struct`'s words, in order, as register indexes (`None`: orig_rax). Its first 21
/// words are `struct pt_regs`, which entry code saves on the kernel stack.
pub(super) const USER_REGS: [Option<Reg>; 27] = [
    Some(reg::R15),
    Some(reg::R14),
    Some(reg::R13),
    Some(reg::R12),
    Some(reg::RBP),
    Some(reg::RBX),
    Some(reg::R11),
    Some(reg::R10),
    Some(reg::R9),
    Some(reg::R8),
    Some(reg::RAX),
    Some(reg::RCX),
    Some(reg::RDX),
    Some(reg::RSI),
    Some(reg::RDI),
    None, // orig_rax
    Some(reg::RIP),
    Some(reg::CS),
    Some(reg::EFLAGS),
    Some(reg::RSP),
    Some(reg::SS),
    Some(reg::FS_BASE),
    Some(reg::GS_BASE),
    Some(reg::DS),
    Some(reg::ES),
    Some(reg::FS),
    Some(reg::GS),
];

/// Words of `struct pt_regs` on x86-64.
pub const PT_REGS_WORDS: usize = 21;
/// The word of `pt_regs` where the frame the CPU pushes on an interrupt starts (ip, cs, flags,
/// sp, ss): what an ORC "partial registers" frame points at.
pub const IRET_FRAME_WORD: usize = 16;

/// Registers from `user_regs_struct` (or `pt_regs`) words, starting at word `first` of it:
/// the registers `raw` covers are known, the others not.
pub fn user_regs(raw: &[u8], first: usize) -> Regs {
    let mut regs = Regs::default();
    for (slot, word) in USER_REGS.iter().skip(first).zip(raw.chunks_exact(8)) {
        if let Some(r) = slot {
            regs[*r] = Some(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
    }
    regs
}

/// `sizeof(struct elf_prstatus)` on x86-64.
pub const PRSTATUS_SIZE: usize = 336;
const PRSTATUS_PID: usize = 32;
const PRSTATUS_REGS: usize = 112;

/// Registers from an `elf_prstatus` (x86-64): its pid and its `user_regs_struct`.
pub fn parse_prstatus(desc: &[u8]) -> Option<(i32, Regs)> {
    const PID: usize = PRSTATUS_PID;
    const REGS: usize = PRSTATUS_REGS;
    let raw = desc.get(REGS..REGS + USER_REGS.len() * 8)?;
    let pid = i32::from_le_bytes(desc.get(PID..PID + 4)?.try_into().ok()?);
    Some((pid, user_regs(raw, 0)))
}

/// An `elf_prstatus` (x86-64) for task `pid` holding `regs`, as kdump writes one per CPU. The
/// format has no way to say "unknown": registers not known are written as 0, and readers of the
/// note see only what the kernel would have saved.
pub fn encode_prstatus(pid: i32, regs: &Regs) -> Vec<u8> {
    let mut desc = vec![0u8; PRSTATUS_SIZE];
    desc[PRSTATUS_PID..PRSTATUS_PID + 4].copy_from_slice(&pid.to_le_bytes());
    for (word, slot) in USER_REGS.iter().enumerate() {
        let value = slot.and_then(|r| regs[r]).unwrap_or(0);
        let at = PRSTATUS_REGS + word * 8;
        desc[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    desc
}
