//! Backtraces from memory alone, with the kernel's own unwind tables (ORC).
//!
//! A Debian kernel has no frame pointers and no `.eh_frame`, so without its DWARF vmlinux
//! gdb cannot unwind a kernel stack. But an x86-64 kernel built with `CONFIG_UNWINDER_ORC`
//! keeps what its own unwinder needs in memory: `.orc_unwind_ip` (sorted 32-bit offsets, each
//! relative to its own address, giving an instruction address) and `.orc_unwind` (one
//! `struct orc_entry` per address: where the caller's stack pointer and frame pointer are, and
//! whether the frame is a call, saved registers, or the end of the stack). Modules carry
//! their own pair in `struct module`. This module reads those tables (the entry's layout from
//! BTF: it changed in 6.3 and 6.4), starts from a task's registers ([`Thread`]) and walks the
//! stack as `arch/x86/kernel/unwind_orc.c` does, naming each frame from kallsyms.
//!
//! Memory is untrusted: tables are bounded and checked to be sorted, every frame must move the
//! stack pointer up (or leave an interrupt stack for another), a walk stops after
//! [`MAX_FRAMES`], and every stop says where and why.

mod modules;
mod orc;
mod render;
mod tables;
#[cfg(test)]
mod tests;
mod walk;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use orc::OrcLayout;
pub use tables::Orc;
pub use walk::{unwind, unwind_one};

use super::Memory;
use super::kallsyms::Kallsyms;
use super::origin::{Hint, Remedies};
use super::threads::Regs;
use super::threads::{RegsOrigin, Thread, reg};
use crate::mmu::MemError;

/// Most frames one backtrace shows.
pub const MAX_FRAMES: usize = 64;
/// Most entries believed in one ORC table (6.1's vmlinux has 385k, 6.12's 440k).
const MAX_ORC_ENTRIES: u64 = 4 << 20;
/// Most times a backtrace may move to another stack (exception → IRQ → task stack).
const MAX_STACK_SWITCHES: u32 = 4;
/// Where x86-64 loads modules (`MODULES_VADDR`, lowest without KASLR, to `MODULES_END`).
const MODULE_SPACE: std::ops::Range<u64> = 0xffff_ffff_a000_0000..0xffff_ffff_ff00_0000;
/// `sizeof(Elf64_Sym)`.
#[cfg(test)]
const ELF_SYM_SIZE: usize = 24;

/// Why there is no backtrace, or why one stopped. The text is what `monitor bt` shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnwindError {
    /// No struct layout at all: the ORC entry's layout comes from BTF (remedy: a BTF file or a
    /// profile).
    #[error("no struct layout: the ORC entry's layout comes from BTF")]
    NoTypes,
    /// kallsyms has none of the symbols that bound the ORC tables (remedy: a System.map or a
    /// vmlinux).
    #[error(
        "no ORC tables: kallsyms has no __start_orc_unwind_ip/__stop_orc_unwind_ip/__start_orc_unwind \
         (a kernel without CONFIG_UNWINDER_ORC, or without KALLSYMS_ALL)"
    )]
    NoOrcSymbols,
    /// The struct layout lacks what ORC unwinding needs, or is one dmastub cannot read.
    #[error("{0}")]
    Layout(String),
    /// The ORC tables or the symbols around them are missing or not believable.
    #[error("{0}")]
    Tables(String),
    /// Memory the walk needed could not be read; `what` names it and where it is.
    #[error("{what}: {source}")]
    Read {
        /// What was being read, and at which address.
        what: String,
        /// The address read.
        addr: u64,
        /// Why it could not be.
        #[source]
        source: MemError,
    },
    /// A frame is in module space, and the modules could not be read.
    #[error("{ip:#x} is in module space: in module code, no unwind table read ({source})")]
    NoModules {
        /// The frame's pc.
        ip: u64,
        /// Why the modules could not be read.
        #[source]
        source: Box<UnwindError>,
    },
    /// A frame is in a module whose ORC table could not be read.
    #[error("in module {module} code, no unwind table read: {source}")]
    NoModuleTable {
        /// The module's name.
        module: String,
        /// Why its table could not be read.
        #[source]
        source: Box<UnwindError>,
    },
    /// The thread has no registers to start from.
    #[error("registers unavailable: {0}")]
    NoRegisters(String),
    /// The unwind data or the stack says the walk cannot go on here.
    #[error("{0}")]
    Stop(String),
}

impl UnwindError {
    /// Whether the device itself failed (see [`MemError::is_device_failure`]).
    pub fn is_device_failure(&self) -> bool {
        match self {
            UnwindError::Read { source, .. } => source.is_device_failure(),
            UnwindError::NoModules { source, .. } | UnwindError::NoModuleTable { source, .. } => {
                source.is_device_failure()
            }
            _ => false,
        }
    }

    /// What the user could give so that unwinding works: alternatives, as data the
    /// application names (see [`HintNames`](crate::linux::HintNames)).
    pub fn remedies(&self) -> Remedies {
        match self {
            UnwindError::NoTypes => &[&[Hint::Btf], &[Hint::Profile]],
            UnwindError::NoOrcSymbols => &[&[Hint::SystemMap], &[Hint::Vmlinux]],
            _ => &[],
        }
    }

    fn read(what: String, addr: u64, source: MemError) -> Self {
        UnwindError::Read { what, addr, source }
    }
}

/// One frame of a backtrace, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A function's frame: its pc (a return address, except in the first frame and after an
    /// entry) and the function it is in.
    Function {
        /// The pc.
        ip: u64,
        /// The stack pointer in this frame.
        sp: u64,
        /// `function+offset/size`, with ` [module]` for a module's code; `??` when unknown.
        name: String,
    },
    /// Registers an interrupt, exception or system call saved (`pt_regs`): where the code it
    /// interrupted was.
    Entry {
        /// The interrupted pc.
        ip: u64,
        /// The interrupted stack pointer.
        sp: u64,
        /// Whether user mode was interrupted (the walk ends there).
        user: bool,
    },
}

/// A backtrace: its frames, and why it stopped when that was not the end of the stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backtrace {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Why the walk stopped before the end of the stack, if it did.
    pub stopped: Option<UnwindError>,
}

/// Where a backtrace starts: a thread's registers, and whether its pc is exact.
#[derive(Clone, Debug)]
pub struct Start {
    /// The registers to start from: at least rip and rsp.
    pub regs: Regs,
    /// The pc is where the CPU was (registers from the CPU), not a return address.
    pub signal: bool,
    /// The registers are a full set (the CPU's), usable as base registers.
    pub full: bool,
    /// The base of the task's kernel stack.
    pub stack: Option<u64>,
}

impl Start {
    /// The thread's registers, or why there are none.
    pub fn of(thread: &Thread, orc: &Orc) -> Result<Self, UnwindError> {
        if let Some(why) = no_registers(thread) {
            return Err(why);
        }
        let regs = thread.regs;
        let (signal, full) = match &thread.origin {
            RegsOrigin::Cpu { .. } => (true, true),
            RegsOrigin::SwitchFrame => (regs.pc().is_some_and(|pc| orc.ret_from_fork.contains(&pc)), false),
            RegsOrigin::Reconstructed(_) | RegsOrigin::Unavailable(_) => (false, false),
        };
        Ok(Self { regs, signal, full, stack: thread.stack })
    }
}

/// Why `thread` has no backtrace before any table is read: it has no registers to start from.
pub(crate) fn no_registers(thread: &Thread) -> Option<UnwindError> {
    match &thread.origin {
        RegsOrigin::Unavailable(why) => Some(UnwindError::NoRegisters(why.to_string())),
        _ if thread.regs.pc().is_none() || thread.regs.get(reg::RSP).is_none() => {
            Some(UnwindError::NoRegisters("no rip and rsp".to_string()))
        }
        _ => None,
    }
}

/// The backtrace of `thread`, with the unwind tables in `orc`.
pub(crate) fn backtrace(
    view: &mut dyn Memory,
    symbols: &Kallsyms,
    orc: &Orc,
    thread: &Thread,
) -> Result<Backtrace, UnwindError> {
    let start = Start::of(thread, orc)?;
    Ok(unwind(view, symbols, orc, &start))
}
