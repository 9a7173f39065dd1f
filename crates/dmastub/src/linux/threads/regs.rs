//! Registers from `user_regs_struct`/`pt_regs` words and from `elf_prstatus` notes.

use super::*;

/// `user_regs_struct`'s words, in order, as register indexes (`None`: orig_rax). Its first 21
/// words are `struct pt_regs`, which entry code saves on the kernel stack.
pub(super) const USER_REGS: [Option<usize>; 27] = [
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
            regs.0[*r] = Some(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
    }
    regs
}

/// Registers from an `elf_prstatus` (x86-64): its pid and its `user_regs_struct`.
pub fn parse_prstatus(desc: &[u8]) -> Option<(i32, Regs)> {
    const PID: usize = 32;
    const REGS: usize = 112;
    let raw = desc.get(REGS..REGS + USER_REGS.len() * 8)?;
    let pid = i32::from_le_bytes(desc.get(PID..PID + 4)?.try_into().ok()?);
    Some((pid, user_regs(raw, 0)))
}
