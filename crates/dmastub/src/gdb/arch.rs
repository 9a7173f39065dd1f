//! The x86-64 register set as dmastub shows it to gdb.
//!
//! `gdbstub_arch`'s `X86_64_SSE` has no control registers and no way to say "unknown". A stub
//! that only reads memory knows almost no register of the machine, and must not invent them,
//! so this arch describes QEMU's register layout (general registers, segment bases, CR0–CR8,
//! EFER, x87, SSE) in a target description, and lets every register be unavailable. gdb then
//! prints `<unavailable>` instead of a made-up zero, and `p $cr3` shows the active page-table
//! root.

use crate::linux::threads::{Reg, Regs, reg};
use gdbstub::arch::{Arch, RegId, Registers};
use std::fmt::Write;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

/// One register in gdb's numbering: the order of the target description.
struct RegDef {
    name: &'static str,
    bits: usize,
    ty: &'static str,
    group: Option<&'static str>,
}

const fn reg(name: &'static str, bits: usize, ty: &'static str) -> RegDef {
    RegDef { name, bits, ty, group: None }
}

const fn grouped(name: &'static str, bits: usize, ty: &'static str, group: &'static str) -> RegDef {
    RegDef { name, bits, ty, group: Some(group) }
}

/// The `org.gnu.gdb.i386.core` feature, in QEMU's order: what gdb expects of an x86-64 system
/// target, with the system registers QEMU adds.
const CORE: &[RegDef] = &[
    reg("rax", 64, "int64"),
    reg("rbx", 64, "int64"),
    reg("rcx", 64, "int64"),
    reg("rdx", 64, "int64"),
    reg("rsi", 64, "int64"),
    reg("rdi", 64, "int64"),
    reg("rbp", 64, "data_ptr"),
    reg("rsp", 64, "data_ptr"),
    reg("r8", 64, "int64"),
    reg("r9", 64, "int64"),
    reg("r10", 64, "int64"),
    reg("r11", 64, "int64"),
    reg("r12", 64, "int64"),
    reg("r13", 64, "int64"),
    reg("r14", 64, "int64"),
    reg("r15", 64, "int64"),
    reg("rip", 64, "code_ptr"),
    reg("eflags", 32, "int32"),
    reg("cs", 32, "int32"),
    reg("ss", 32, "int32"),
    reg("ds", 32, "int32"),
    reg("es", 32, "int32"),
    reg("fs", 32, "int32"),
    reg("gs", 32, "int32"),
    grouped("fs_base", 64, "int64", "system"),
    grouped("gs_base", 64, "int64", "system"),
    grouped("k_gs_base", 64, "int64", "system"),
    grouped("cr0", 64, "int64", "system"),
    grouped("cr2", 64, "int64", "system"),
    grouped("cr3", 64, "int64", "system"),
    grouped("cr4", 64, "int64", "system"),
    grouped("cr8", 64, "int64", "system"),
    grouped("efer", 64, "int64", "system"),
    reg("st0", 80, "i387_ext"),
    reg("st1", 80, "i387_ext"),
    reg("st2", 80, "i387_ext"),
    reg("st3", 80, "i387_ext"),
    reg("st4", 80, "i387_ext"),
    reg("st5", 80, "i387_ext"),
    reg("st6", 80, "i387_ext"),
    reg("st7", 80, "i387_ext"),
    grouped("fctrl", 32, "int", "float"),
    grouped("fstat", 32, "int", "float"),
    grouped("ftag", 32, "int", "float"),
    grouped("fiseg", 32, "int", "float"),
    grouped("fioff", 32, "int", "float"),
    grouped("foseg", 32, "int", "float"),
    grouped("fooff", 32, "int", "float"),
    grouped("fop", 32, "int", "float"),
];

/// The `org.gnu.gdb.i386.sse` feature (gdb's amd64 support requires it).
const SSE: &[RegDef] = &[
    reg("xmm0", 128, "uint128"),
    reg("xmm1", 128, "uint128"),
    reg("xmm2", 128, "uint128"),
    reg("xmm3", 128, "uint128"),
    reg("xmm4", 128, "uint128"),
    reg("xmm5", 128, "uint128"),
    reg("xmm6", 128, "uint128"),
    reg("xmm7", 128, "uint128"),
    reg("xmm8", 128, "uint128"),
    reg("xmm9", 128, "uint128"),
    reg("xmm10", 128, "uint128"),
    reg("xmm11", 128, "uint128"),
    reg("xmm12", 128, "uint128"),
    reg("xmm13", 128, "uint128"),
    reg("xmm14", 128, "uint128"),
    reg("xmm15", 128, "uint128"),
    grouped("mxcsr", 32, "int", "vector"),
];

/// gdb's numbers of the registers dmastub can know (the order of the target description, as
/// QEMU numbers them); the x87 and SSE registers never are.
pub mod regnum {
    /// `rax`.
    pub const RAX: usize = 0;
    /// `rbx`.
    pub const RBX: usize = 1;
    /// `rcx`.
    pub const RCX: usize = 2;
    /// `rdx`.
    pub const RDX: usize = 3;
    /// `rsi`.
    pub const RSI: usize = 4;
    /// `rdi`.
    pub const RDI: usize = 5;
    /// `rbp`.
    pub const RBP: usize = 6;
    /// `rsp`.
    pub const RSP: usize = 7;
    /// `r8`.
    pub const R8: usize = 8;
    /// `r9`.
    pub const R9: usize = 9;
    /// `r10`.
    pub const R10: usize = 10;
    /// `r11`.
    pub const R11: usize = 11;
    /// `r12`.
    pub const R12: usize = 12;
    /// `r13`.
    pub const R13: usize = 13;
    /// `r14`.
    pub const R14: usize = 14;
    /// `r15`.
    pub const R15: usize = 15;
    /// `rip`.
    pub const RIP: usize = 16;
    /// `eflags`.
    pub const EFLAGS: usize = 17;
    /// `cs`.
    pub const CS: usize = 18;
    /// `ss`.
    pub const SS: usize = 19;
    /// `ds`.
    pub const DS: usize = 20;
    /// `es`.
    pub const ES: usize = 21;
    /// `fs`.
    pub const FS: usize = 22;
    /// `gs`.
    pub const GS: usize = 23;
    /// `fs_base`.
    pub const FS_BASE: usize = 24;
    /// `gs_base`.
    pub const GS_BASE: usize = 25;
    /// `k_gs_base`: the kernel's GS base while user GS is loaded.
    pub const K_GS_BASE: usize = 26;
    /// `cr0`.
    pub const CR0: usize = 27;
    /// `cr2`.
    pub const CR2: usize = 28;
    /// `cr3`: the page-table root memory is read through.
    pub const CR3: usize = 29;
    /// `cr4`.
    pub const CR4: usize = 30;
    /// `cr8`.
    pub const CR8: usize = 31;
    /// `efer`.
    pub const EFER: usize = 32;
}

/// Where each register a Linux task can have goes in gdb's numbering: Linux names its
/// registers ([`threads::reg`]) and gdb numbers them, and only this table knows both.
const TASK_REGS: [(Reg, usize); Reg::COUNT] = [
    (reg::RAX, regnum::RAX),
    (reg::RBX, regnum::RBX),
    (reg::RCX, regnum::RCX),
    (reg::RDX, regnum::RDX),
    (reg::RSI, regnum::RSI),
    (reg::RDI, regnum::RDI),
    (reg::RBP, regnum::RBP),
    (reg::RSP, regnum::RSP),
    (reg::R8, regnum::R8),
    (reg::R9, regnum::R9),
    (reg::R10, regnum::R10),
    (reg::R11, regnum::R11),
    (reg::R12, regnum::R12),
    (reg::R13, regnum::R13),
    (reg::R14, regnum::R14),
    (reg::R15, regnum::R15),
    (reg::RIP, regnum::RIP),
    (reg::EFLAGS, regnum::EFLAGS),
    (reg::CS, regnum::CS),
    (reg::SS, regnum::SS),
    (reg::DS, regnum::DS),
    (reg::ES, regnum::ES),
    (reg::FS, regnum::FS),
    (reg::GS, regnum::GS),
    (reg::FS_BASE, regnum::FS_BASE),
    (reg::GS_BASE, regnum::GS_BASE),
];

/// How many registers, from number 0, fit in a `u64` and so can hold a known value.
pub const SCALAR_REGS: usize = 33;

fn all_regs() -> impl Iterator<Item = &'static RegDef> {
    CORE.iter().chain(SSE.iter())
}

fn reg_bytes(id: usize) -> Option<usize> {
    all_regs().nth(id).map(|r| r.bits / 8)
}

/// The target description gdb reads with `qXfer:features:read`.
fn target_xml() -> &'static str {
    static XML: OnceLock<String> = OnceLock::new();
    XML.get_or_init(|| {
        let mut x = String::from(
            "<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM \"gdb-target.dtd\">\
             <target version=\"1.0\"><architecture>i386:x86-64</architecture>",
        );
        let mut regnum = 0;
        for (feature, regs) in [("org.gnu.gdb.i386.core", CORE), ("org.gnu.gdb.i386.sse", SSE)] {
            let _ = write!(x, "<feature name=\"{feature}\">");
            for r in regs {
                let _ = write!(
                    x,
                    "<reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{regnum}\"",
                    r.name, r.bits, r.ty
                );
                if let Some(g) = r.group {
                    let _ = write!(x, " group=\"{g}\"");
                }
                x.push_str("/>");
                regnum += 1;
            }
            x.push_str("</feature>");
        }
        x.push_str("</target>");
        x
    })
}

/// The register file: a value for each register dmastub knows, `None` for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaRegs {
    /// Values by gdb's register number ([`regnum`]).
    pub values: [Option<u64>; SCALAR_REGS],
}

impl DmaRegs {
    /// Every register unknown.
    pub fn unknown() -> Self {
        Self { values: [None; SCALAR_REGS] }
    }

    /// A Linux task's registers in gdb's numbering; the rest unknown.
    pub fn of_task(task: &Regs) -> Self {
        let mut regs = Self::unknown();
        for (linux, gdb) in TASK_REGS {
            regs.values[gdb] = task.get(linux);
        }
        regs
    }
}

impl Default for DmaRegs {
    fn default() -> Self {
        Self::unknown()
    }
}

impl Registers for DmaRegs {
    type ProgramCounter = u64;

    /// gdbstub asks for a PC only for a few stop replies; an unknown one reads as 0 there.
    fn pc(&self) -> u64 {
        self.values[regnum::RIP].unwrap_or(0)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for (id, def) in all_regs().enumerate() {
            let bytes = def.bits / 8;
            match self.values.get(id).copied().flatten() {
                Some(v) => v.to_le_bytes()[..bytes].iter().for_each(|b| write_byte(Some(*b))),
                None => (0..bytes).for_each(|_| write_byte(None)),
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let mut at = 0;
        for (id, def) in all_regs().enumerate().take(SCALAR_REGS) {
            let n = def.bits / 8;
            let Some(chunk) = bytes.get(at..at + n) else { break };
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(chunk);
            self.values[id] = Some(u64::from_le_bytes(le));
            at += n;
        }
        Ok(())
    }
}

/// A register by gdb's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRegId(pub usize);

impl RegId for DmaRegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let size = NonZeroUsize::new(reg_bytes(id)?)?;
        Some((DmaRegId(id), Some(size)))
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(self.0)
    }
}

/// x86-64 with QEMU's system registers, every one possibly unavailable.
pub enum X86_64System {}

impl Arch for X86_64System {
    type Usize = u64;
    type Registers = DmaRegs;
    type RegId = DmaRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(target_xml())
    }
}

/// The name of register `id`, for messages.
pub fn reg_name(id: usize) -> &'static str {
    all_regs().nth(id).map_or("?", |r| r.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_qemu() {
        assert_eq!(all_regs().count(), 66);
        assert_eq!(reg_name(regnum::CR3), "cr3");
        // A task's registers land in gdb's numbering as they are.
        let names =
            ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13"];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(reg_name(i), *n);
        }
        assert_eq!(Reg::COUNT, 26);
        assert_eq!(reg_name(regnum::R15), "r15");
        assert_eq!(reg_name(regnum::EFLAGS), "eflags");
        assert_eq!(reg_name(regnum::GS), "gs");
        assert_eq!(reg_name(regnum::GS_BASE), "gs_base");
        assert_eq!(reg_name(regnum::RIP), "rip");
        assert_eq!(reg_name(SCALAR_REGS), "st0");
        assert!(target_xml().contains("<reg name=\"cr3\" bitsize=\"64\" type=\"int64\" regnum=\"29\""));
    }

    #[test]
    fn a_task_s_registers_land_by_name() {
        let mut task = Regs::default();
        task[reg::RIP] = Some(0xffff_ffff_8100_0000);
        task[reg::RSP] = Some(0xffff_c900_0000_3f00);
        task[reg::GS_BASE] = Some(0xffff_8880_7fc0_0000);
        let regs = DmaRegs::of_task(&task);
        assert_eq!(regs.values[regnum::RIP], Some(0xffff_ffff_8100_0000));
        assert_eq!(regs.values[regnum::RSP], Some(0xffff_c900_0000_3f00));
        assert_eq!(regs.values[regnum::GS_BASE], Some(0xffff_8880_7fc0_0000));
        assert_eq!(regs.values.iter().filter(|v| v.is_some()).count(), 3);
        // Every gdb number is named once, and every one of them is a scalar register.
        let mut seen: Vec<usize> = TASK_REGS.iter().map(|&(_, g)| g).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), Reg::COUNT);
        assert!(seen.iter().all(|&g| g < SCALAR_REGS));
    }

    #[test]
    fn unknown_registers_serialize_as_unavailable() {
        let mut regs = DmaRegs::unknown();
        regs.values[regnum::CR3] = Some(0x1a20000);
        let mut out = Vec::new();
        regs.gdb_serialize(|b| out.push(b));
        let total: usize = all_regs().map(|r| r.bits / 8).sum();
        assert_eq!(out.len(), total);
        let cr3_at: usize = all_regs().take(regnum::CR3).map(|r| r.bits / 8).sum();
        assert_eq!(
            out[cr3_at..cr3_at + 8].iter().map(|b| b.unwrap()).collect::<Vec<_>>(),
            0x1a20000u64.to_le_bytes()
        );
        assert_eq!(out[0], None);
        let mut back = DmaRegs::unknown();
        let bytes: Vec<u8> = out.iter().map(|b| b.unwrap_or(0)).collect();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back.values[regnum::CR3], Some(0x1a20000));
    }
}
