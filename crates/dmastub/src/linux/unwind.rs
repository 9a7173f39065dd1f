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

use super::kallsyms::Kallsyms;
use super::readahead::ReadAhead;
use super::threads::{
    IRET_FRAME_WORD, PT_REGS_WORDS, Reg, Regs, RegsOrigin, THREAD_SIZE, Thread, reg, user_regs,
};
use super::{Member, Memory, Symbols, TypeInfo};
use crate::mmu::MemError;
use std::fmt::Write as _;

/// Most frames one backtrace shows.
pub const MAX_FRAMES: usize = 64;
/// Most entries believed in one ORC table (6.1's vmlinux has 385k, 6.12's 440k).
const MAX_ORC_ENTRIES: u64 = 4 << 20;
/// Most times a backtrace may move to another stack (exception → IRQ → task stack).
const MAX_STACK_SWITCHES: u32 = 4;
/// Where x86-64 loads modules (`MODULES_VADDR`, lowest without KASLR, to `MODULES_END`).
const MODULE_SPACE: std::ops::Range<u64> = 0xffff_ffff_a000_0000..0xffff_ffff_ff00_0000;
/// Most modules walked on the `modules` list.
const MAX_MODULES: usize = 8192;
/// Most symbols believed in one module's symbol table.
const MAX_MODULE_SYMBOLS: u64 = 1 << 20;
/// `sizeof(Elf64_Sym)`.
const ELF_SYM_SIZE: usize = 24;
/// Longest symbol name read from a module's string table.
const MAX_NAME: usize = 256;

/// Why there is no backtrace, or why one stopped. The text is what `monitor bt` shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnwindError {
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

    fn read(what: String, addr: u64, source: MemError) -> Self {
        UnwindError::Read { what, addr, source }
    }
}

/// ORC's register numbers (`ORC_REG_*` in `arch/x86/include/asm/orc_types.h`).
mod orc_reg {
    pub const UNDEFINED: u8 = 0;
    pub const PREV_SP: u8 = 1;
    pub const DX: u8 = 2;
    pub const DI: u8 = 3;
    pub const BP: u8 = 4;
    pub const SP: u8 = 5;
    pub const R10: u8 = 6;
    pub const R13: u8 = 7;
    pub const BP_INDIRECT: u8 = 8;
    pub const SP_INDIRECT: u8 = 9;
}

/// What an ORC entry says the frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A function called by another: the return address is just below the caller's sp.
    Call,
    /// Entry code that saved a whole `struct pt_regs` at the computed sp.
    Regs,
    /// Entry code with only the CPU's interrupt frame (ip, cs, flags, sp, ss) at the sp.
    RegsPartial,
    /// The first frame of a kernel thread or of entry code: nothing above it.
    EndOfStack,
    /// Code the unwinder cannot unwind through.
    Undefined,
    Unknown(u8),
}

/// One decoded `struct orc_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrcEntry {
    pub sp_offset: i16,
    pub bp_offset: i16,
    pub sp_reg: u8,
    pub bp_reg: u8,
    pub kind: FrameKind,
    /// The next frame's ip is exact (interrupted there), not a return address.
    pub signal: bool,
}

/// Where the fields of `struct orc_entry` are, from BTF. Three layouts exist: before 6.3
/// (`type:2, end:1`: types CALL 0, REGS 1, REGS_PARTIAL 2; `end` marks the end of the stack),
/// 6.3 (`type:2, signal:1, end:1`), and from 6.4 (`type:3, signal:1`: UNDEFINED 0,
/// END_OF_STACK 1, CALL 2, REGS 3, REGS_PARTIAL 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrcLayout {
    size: usize,
    sp_offset: Member,
    bp_offset: Member,
    sp_reg: Member,
    bp_reg: Member,
    kind: Member,
    end: Option<Member>,
    signal: Option<Member>,
}

impl OrcLayout {
    pub fn from_types(t: &dyn TypeInfo) -> Result<Self, UnwindError> {
        let origin = t.source();
        let ty = "orc_entry";
        let size = t.size_of(ty).ok_or_else(|| {
            UnwindError::Layout(format!(
                "the struct layout ({origin}) has no struct orc_entry: no ORC unwinding"
            ))
        })?;
        if !(4..=16).contains(&size) {
            return Err(UnwindError::Layout(format!(
                "struct orc_entry ({origin}) is {size} bytes: not an ORC entry dmastub knows"
            )));
        }
        let member = |name: &str| -> Result<Option<Member>, UnwindError> {
            let Some(m) = t.member(ty, name) else { return Ok(None) };
            let (bit, width) = m.bitfield.unwrap_or((0, m.size as u32 * 8));
            if width == 0 || width > 16 || m.offset * 8 + u64::from(bit) + u64::from(width) > size * 8 {
                return Err(UnwindError::Layout(format!(
                    "orc_entry.{name} ({origin}) does not fit a {size}-byte entry"
                )));
            }
            Ok(Some(m))
        };
        let need = |name: &str| {
            member(name)?.ok_or_else(|| {
                UnwindError::Layout(format!("struct orc_entry ({origin}) has no member {name}"))
            })
        };
        let layout = Self {
            size: size as usize,
            sp_offset: need("sp_offset")?,
            bp_offset: need("bp_offset")?,
            sp_reg: need("sp_reg")?,
            bp_reg: need("bp_reg")?,
            kind: need("type")?,
            end: member("end")?,
            signal: member("signal")?,
        };
        let width = |m: &Member| m.bitfield.map_or(m.size as u32 * 8, |b| b.1);
        let known = match (&layout.end, &layout.signal) {
            (Some(end), _) => width(end) == 1 && width(&layout.kind) >= 2,
            (None, Some(signal)) => width(signal) == 1 && width(&layout.kind) >= 3,
            (None, None) => false,
        };
        if !known {
            return Err(UnwindError::Layout(format!(
                "struct orc_entry ({origin}) has neither the `end` nor the `signal` bit dmastub knows: an ORC \
                 layout it cannot read"
            )));
        }
        Ok(layout)
    }

    /// Which of the layouts this is, for messages.
    pub fn describe(&self) -> &'static str {
        match (&self.end, &self.signal) {
            (Some(_), None) => "type:2, end:1 (before 6.3)",
            (Some(_), Some(_)) => "type:2, signal:1, end:1 (6.3)",
            _ => "type:3, signal:1 (6.4 and later)",
        }
    }

    /// Decodes one entry of `self.size` bytes.
    pub fn decode(&self, raw: &[u8]) -> OrcEntry {
        let field = |m: &Member| {
            // A bitfield's storage unit may run past the end of the packed struct: zeros there.
            let mut b = [0u8; 8];
            for (i, byte) in b.iter_mut().enumerate().take(m.size.min(8) as usize) {
                *byte = raw.get(m.offset as usize + i).copied().unwrap_or(0);
            }
            let v = u64::from_le_bytes(b);
            match m.bitfield {
                Some((bit, width)) => (v >> bit) & ((1u64 << width) - 1),
                None => v,
            }
        };
        let sp_reg = field(&self.sp_reg) as u8;
        let raw_kind = field(&self.kind) as u8;
        let kind = match &self.end {
            Some(end) if sp_reg == orc_reg::UNDEFINED => {
                if field(end) != 0 {
                    FrameKind::EndOfStack
                } else {
                    FrameKind::Undefined
                }
            }
            Some(_) => match raw_kind {
                0 => FrameKind::Call,
                1 => FrameKind::Regs,
                2 => FrameKind::RegsPartial,
                k => FrameKind::Unknown(k),
            },
            None => match raw_kind {
                0 => FrameKind::Undefined,
                1 => FrameKind::EndOfStack,
                2 => FrameKind::Call,
                3 => FrameKind::Regs,
                4 => FrameKind::RegsPartial,
                k => FrameKind::Unknown(k),
            },
        };
        let signal = match &self.signal {
            Some(s) => field(s) != 0,
            None => matches!(kind, FrameKind::Regs | FrameKind::RegsPartial),
        };
        OrcEntry {
            sp_offset: field(&self.sp_offset) as u16 as i16,
            bp_offset: field(&self.bp_offset) as u16 as i16,
            sp_reg,
            bp_reg: field(&self.bp_reg) as u8,
            kind,
            signal,
        }
    }
}

/// One ORC table: instruction addresses, sorted, and their entries.
#[derive(Clone, Debug)]
pub struct OrcTable {
    ips: Vec<u64>,
    entries: Vec<u8>,
    entry_size: usize,
}

impl OrcTable {
    /// Reads `count` entries: the ip table at `ip_at`, the entries at `orc_at`. `what` names the
    /// tables in errors ("vmlinux", "module ext4").
    pub fn read(
        mem: &mut dyn Memory,
        layout: &OrcLayout,
        ip_at: u64,
        orc_at: u64,
        count: u64,
        what: &str,
    ) -> Result<Self, UnwindError> {
        if count == 0 || count > MAX_ORC_ENTRIES {
            return Err(UnwindError::Tables(format!(
                "{what}'s ORC table at {ip_at:#x} has {count} entries: not a plausible size (1 to {MAX_ORC_ENTRIES})"
            )));
        }
        let n = count as usize;
        let mut raw_ips = vec![0u8; n * 4];
        mem.read(ip_at, &mut raw_ips).map_err(|e| {
            UnwindError::read(format!("{what}'s ORC ip table at {ip_at:#x} ({n} entries)"), ip_at, e)
        })?;
        let mut entries = vec![0u8; n * layout.size];
        mem.read(orc_at, &mut entries).map_err(|e| {
            UnwindError::read(
                format!("{what}'s ORC entries at {orc_at:#x} ({n} of {} bytes)", layout.size),
                orc_at,
                e,
            )
        })?;
        let mut ips = Vec::with_capacity(n);
        for (i, w) in raw_ips.chunks_exact(4).enumerate() {
            let rel = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let ip = ip_at.wrapping_add(4 * i as u64).wrapping_add_signed(i64::from(rel));
            if ips.last().is_some_and(|&prev| ip < prev) {
                return Err(UnwindError::Tables(format!(
                    "{what}'s ORC ip table at {ip_at:#x} is not sorted at entry {i} ({ip:#x}): not an ORC table"
                )));
            }
            ips.push(ip);
        }
        Ok(Self { ips, entries, entry_size: layout.size })
    }

    /// The entry for `ip`: the last one at or below it, and its address.
    fn find(&self, layout: &OrcLayout, ip: u64) -> Option<(u64, OrcEntry)> {
        let i = self.ips.partition_point(|&a| a <= ip).checked_sub(1)?;
        let raw = self.entries.get(i * self.entry_size..(i + 1) * self.entry_size)?;
        Some((self.ips[i], layout.decode(raw)))
    }
}

/// Where the fields of `struct module` this module reads are.
#[derive(Clone, Debug)]
struct ModuleLayout {
    list: u64,
    name: (u64, u64),
    /// The text's base pointer and its size field (offset, size).
    text_base: u64,
    text_size: (u64, u64),
    orc_ip: u64,
    orc: u64,
    num_orcs: (u64, u64),
    /// `kallsyms` and, in `struct mod_kallsyms`, `symtab`, `num_symtab` (offset, size), `strtab`.
    kallsyms: Option<(u64, u64, (u64, u64), u64)>,
}

impl ModuleLayout {
    fn from_types(t: &dyn TypeInfo) -> Result<Self, UnwindError> {
        let origin = t.source();
        let m = |ty: &str, path: &str| {
            t.member(ty, path).ok_or_else(|| {
                UnwindError::Layout(format!("the struct layout ({origin}) has no {ty}.{path}"))
            })
        };
        let sized = |mm: Member| (mm.offset, mm.size);
        // Before 6.4: core_layout.{base,text_size}; from 6.4: mem[MOD_TEXT].{base,size}, and
        // MOD_TEXT is 0.
        let (text_base, text_size) = match (t.member("module", "core_layout.base"), t.member("module", "mem"))
        {
            (Some(base), _) => {
                let size = t
                    .member("module", "core_layout.text_size")
                    .map_or_else(|| m("module", "core_layout.size").map(sized), |s| Ok(sized(s)))?;
                (base.offset, size)
            }
            (None, Some(mem)) => {
                let base = m("module_memory", "base")?;
                let size = m("module_memory", "size")?;
                (mem.offset + base.offset, (mem.offset + size.offset, size.size))
            }
            (None, None) => {
                return Err(UnwindError::Layout(format!(
                    "the struct layout ({origin}) has no module text layout"
                )));
            }
        };
        let kallsyms = (|| {
            Some((
                t.member("module", "kallsyms")?.offset,
                t.member("mod_kallsyms", "symtab")?.offset,
                sized(t.member("mod_kallsyms", "num_symtab")?),
                t.member("mod_kallsyms", "strtab")?.offset,
            ))
        })();
        Ok(Self {
            list: m("module", "list")?.offset,
            name: sized(m("module", "name")?),
            text_base,
            text_size,
            orc_ip: m("module", "arch.orc_unwind_ip")?.offset,
            orc: m("module", "arch.orc_unwind")?.offset,
            num_orcs: sized(m("module", "arch.num_orcs")?),
            kallsyms,
        })
    }
}

/// A loaded module, as far as backtraces need it.
struct Module {
    name: String,
    text: (u64, u64),
    orc_at: (u64, u64, u64),
    /// Its ORC table, read when a frame first needs it.
    table: Option<Result<OrcTable, UnwindError>>,
    kallsyms: Option<u64>,
}

/// The kernel's unwind tables, read once per discovery.
pub struct Orc {
    layout: OrcLayout,
    vmlinux: OrcTable,
    /// vmlinux's text: what its table covers (`_stext`..`_etext`, `_sinittext`..`_einittext`).
    text: Vec<(u64, u64)>,
    /// How to find modules, or why that is not possible.
    modules: Result<(u64, ModuleLayout), UnwindError>,
    /// `ret_from_fork` (and 6.5's `ret_from_fork_asm`): a new task's switch frame returns
    /// there exactly, not after a call.
    ret_from_fork: Vec<u64>,
}

impl Orc {
    /// Reads vmlinux's ORC tables, found by their kallsyms symbols; `types` gives the layout of
    /// `struct orc_entry` and `struct module`.
    pub fn load(
        mem: &mut dyn Memory,
        symbols: &Kallsyms,
        types: Option<&dyn TypeInfo>,
    ) -> Result<Self, UnwindError> {
        let sym = |n: &str| symbols.address(n);
        let types = types.ok_or_else(|| {
            UnwindError::Layout(
                "no struct layout: the ORC entry's layout comes from BTF (give --btf FILE)".into(),
            )
        })?;
        let layout = OrcLayout::from_types(types)?;
        let (Some(ip_start), Some(ip_stop), Some(orc_start)) =
            (sym("__start_orc_unwind_ip"), sym("__stop_orc_unwind_ip"), sym("__start_orc_unwind"))
        else {
            return Err(UnwindError::Tables(
                "no ORC tables: kallsyms has no __start_orc_unwind_ip/__stop_orc_unwind_ip/\
                        __start_orc_unwind (a kernel without CONFIG_UNWINDER_ORC, or without KALLSYMS_ALL: \
                        give --system-map FILE)"
                    .to_string(),
            ));
        };
        let bytes = ip_stop.checked_sub(ip_start).filter(|b| b % 4 == 0).ok_or_else(|| {
            UnwindError::Tables(format!("__stop_orc_unwind_ip {ip_stop:#x} is not 4-byte entries after __start_orc_unwind_ip {ip_start:#x}"))
        })?;
        let count = bytes / 4;
        if let Some(orc_stop) = sym("__stop_orc_unwind")
            && orc_stop.checked_sub(orc_start) != Some(count.saturating_mul(layout.size as u64))
        {
            return Err(UnwindError::Tables(format!(
                "vmlinux's ORC tables disagree: {count} addresses at {ip_start:#x}, but {orc_start:#x}..{orc_stop:#x} \
                 is not {count} entries of {} bytes",
                layout.size
            )));
        }
        let vmlinux = OrcTable::read(mem, &layout, ip_start, orc_start, count, "vmlinux")?;
        let mut text = Vec::new();
        for (lo, hi) in
            [(sym("_stext").or_else(|| sym("_text")), sym("_etext")), (sym("_sinittext"), sym("_einittext"))]
        {
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo < hi
            {
                text.push((lo, hi));
            }
        }
        if text.is_empty() {
            return Err(UnwindError::Tables(
                "no _stext/_etext symbols: where kernel text is, is unknown".to_string(),
            ));
        }
        let modules = match sym("modules") {
            Some(head) => ModuleLayout::from_types(types).map(|l| (head, l)),
            None => Err(UnwindError::Tables("no `modules` symbol".to_string())),
        };
        let ret_from_fork = ["ret_from_fork", "ret_from_fork_asm"].into_iter().filter_map(sym).collect();
        Ok(Self { layout, vmlinux, text, modules, ret_from_fork })
    }

    fn in_vmlinux_text(&self, ip: u64) -> bool {
        self.text.iter().any(|&(lo, hi)| ip >= lo && ip < hi)
    }
}

/// One line of a backtrace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A frame: its pc (a return address, except in the first frame and after an entry) and
    /// the function it is in.
    Frame { ip: u64, sp: u64, name: String },
    /// Registers an interrupt, exception or system call saved (`pt_regs`): where the code it
    /// interrupted was.
    Entry { ip: u64, sp: u64, user: bool },
}

/// A backtrace: its lines, and why it stopped when that was not the end of the stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backtrace {
    pub lines: Vec<Line>,
    pub stopped: Option<UnwindError>,
}

impl Backtrace {
    /// The frames' function names, without offsets.
    pub fn functions(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Frame { name, .. } => Some(name.split('+').next().unwrap_or(name)),
                Line::Entry { .. } => None,
            })
            .collect()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut n = 0;
        for l in &self.lines {
            let _ = match l {
                Line::Frame { ip, name, .. } => {
                    n += 1;
                    writeln!(s, "#{:<3}{ip:#018x} {name}", n - 1)
                }
                Line::Entry { ip, sp, user: true } => {
                    writeln!(s, "--- interrupt/syscall entry from user mode: user rip {ip:#x}, rsp {sp:#x}")
                }
                Line::Entry { ip, sp, user: false } => {
                    writeln!(s, "--- interrupt/exception entry: kernel rip {ip:#x}, rsp {sp:#x}")
                }
            };
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(s, "stopped: {why}");
        }
        s
    }
}

/// Where a backtrace starts: a thread's registers, and whether its pc is exact.
#[derive(Clone, Debug)]
pub struct Start {
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
pub fn no_registers(thread: &Thread) -> Option<UnwindError> {
    match &thread.origin {
        RegsOrigin::Unavailable(why) => Some(UnwindError::NoRegisters(why.to_string())),
        _ if thread.regs.pc().is_none() || thread.regs.get(reg::RSP).is_none() => {
            Some(UnwindError::NoRegisters("no rip and rsp".to_string()))
        }
        _ => None,
    }
}

/// The words of a backtrace come through a [`ReadAhead`] holding the task's stack, read whole
/// once; anything else falls through to memory.
type StackWords<'m> = ReadAhead<'m>;

/// The word at `addr`, naming `what` if it cannot be read.
fn word(words: &mut StackWords, addr: u64, what: &str) -> Result<u64, UnwindError> {
    words.read_u64(addr).map_err(|e| UnwindError::read(format!("{what} at {addr:#x}"), addr, e))
}

/// `n` words at `addr`.
fn words_at(words: &mut StackWords, addr: u64, n: usize, what: &str) -> Result<Vec<u8>, UnwindError> {
    let mut buf = vec![0u8; n * 8];
    words.read(addr, &mut buf).map_err(|e| UnwindError::read(format!("{what} at {addr:#x}"), addr, e))?;
    Ok(buf)
}

/// The modules, read when a frame is first outside vmlinux.
struct Modules {
    list: Option<Result<Vec<Module>, UnwindError>>,
}

impl Modules {
    fn read(view: &mut dyn Memory, orc: &Orc) -> Result<Vec<Module>, UnwindError> {
        let (head, l) = orc.modules.as_ref().map_err(|e| e.clone())?;
        let mut out = Vec::new();
        let mut node = view
            .read_u64(*head)
            .map_err(|e| UnwindError::read(format!("the modules list at {head:#x}"), *head, e))?;
        let mut seen = std::collections::HashSet::new();
        while node != *head {
            if out.len() >= MAX_MODULES || !seen.insert(node) {
                return Err(UnwindError::Tables(format!(
                    "the modules list at {head:#x} loops or is corrupt (at {node:#x})"
                )));
            }
            let m = node.wrapping_sub(l.list);
            let field =
                |view: &mut dyn Memory, (off, size): (u64, u64)| view.read_uint(m.wrapping_add(off), size);
            let read = |view: &mut dyn Memory| -> Result<Module, crate::mmu::MemError> {
                let mut name = vec![0u8; l.name.1.min(64) as usize];
                view.read(m.wrapping_add(l.name.0), &mut name)?;
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                let name: String =
                    name[..end].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
                let base = view.read_u64(m.wrapping_add(l.text_base))?;
                let size = field(view, l.text_size)?;
                let orc_at = (
                    view.read_u64(m.wrapping_add(l.orc_ip))?,
                    view.read_u64(m.wrapping_add(l.orc))?,
                    field(view, l.num_orcs)?,
                );
                let kallsyms = match l.kallsyms {
                    Some((off, ..)) => Some(view.read_u64(m.wrapping_add(off))?),
                    None => None,
                };
                Ok(Module { name, text: (base, base.wrapping_add(size)), orc_at, table: None, kallsyms })
            };
            out.push(read(view).map_err(|e| UnwindError::read(format!("module at {m:#x}"), m, e))?);
            node = view
                .read_u64(node)
                .map_err(|e| UnwindError::read(format!("the modules list at {node:#x}"), node, e))?;
        }
        Ok(out)
    }

    fn find<'m>(
        &'m mut self,
        view: &mut dyn Memory,
        orc: &Orc,
        ip: u64,
    ) -> Result<Option<&'m mut Module>, UnwindError> {
        let list = self.list.get_or_insert_with(|| Self::read(view, orc));
        let list = list.as_mut().map_err(|e| e.clone())?;
        Ok(list.iter_mut().find(|m| ip >= m.text.0 && ip < m.text.1))
    }
}

impl Module {
    fn table(&mut self, view: &mut dyn Memory, layout: &OrcLayout) -> Result<&OrcTable, UnwindError> {
        let (ip_at, orc_at, count) = self.orc_at;
        let what = format!("module {}", self.name);
        self.table
            .get_or_insert_with(|| OrcTable::read(view, layout, ip_at, orc_at, count, &what))
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// The function symbol of this module at or below `ip`: name, start and size.
    fn symbol(&self, view: &mut dyn Memory, l: &ModuleLayout, ip: u64) -> Option<(String, u64, u64)> {
        let (_, symtab_off, num_off, strtab_off) = l.kallsyms?;
        let ks = self.kallsyms.filter(|&k| k != 0)?;
        let symtab = view.read_u64(ks.wrapping_add(symtab_off)).ok()?;
        let num = view.read_uint(ks.wrapping_add(num_off.0), num_off.1).ok()?;
        let strtab = view.read_u64(ks.wrapping_add(strtab_off)).ok()?;
        if num == 0 || num > MAX_MODULE_SYMBOLS {
            return None;
        }
        let mut raw = vec![0u8; num as usize * ELF_SYM_SIZE];
        view.read(symtab, &mut raw).ok()?;
        let mut best: Option<(u32, u64, u64)> = None;
        for s in raw.chunks_exact(ELF_SYM_SIZE) {
            const STT_FUNC: u8 = 2;
            let name = u32::from_le_bytes(s[0..4].try_into().ok()?);
            let value = u64::from_le_bytes(s[8..16].try_into().ok()?);
            let size = u64::from_le_bytes(s[16..24].try_into().ok()?);
            if s[4] & 0xf == STT_FUNC && value <= ip && best.is_none_or(|b| value > b.1) {
                best = Some((name, value, size));
            }
        }
        let (name_off, start, size) = best?;
        let mut name = vec![0u8; MAX_NAME];
        view.read(strtab.wrapping_add(u64::from(name_off)), &mut name).ok()?;
        let end = name.iter().position(|&b| b == 0)?;
        let name = String::from_utf8_lossy(&name[..end]).into_owned();
        Some((name, start, size))
    }
}

/// What the walk knows at one frame, as `unwind_orc.c`'s state.
struct State {
    ip: u64,
    sp: u64,
    bp: Option<u64>,
    /// The pc is exact, not a return address.
    signal: bool,
    /// The registers saved at this frame (pt_regs, or the CPU's), and whether they are whole.
    regs: Option<Regs>,
    full: bool,
    /// A whole set from the frame before a partial one.
    prev_regs: Option<Regs>,
}

impl State {
    fn get(&self, r: Reg) -> Option<u64> {
        match (&self.regs, self.full, &self.prev_regs) {
            (Some(regs), true, _) => regs.get(r),
            (Some(_), false, Some(prev)) => prev.get(r),
            _ => None,
        }
    }
}

/// Walks the stack from `start`, reading kernel memory through `view`, naming frames with
/// `symbols`.
pub fn unwind(view: &mut dyn Memory, symbols: &Kallsyms, orc: &Orc, start: &Start) -> Backtrace {
    let mut bt = Backtrace::default();
    let regs = start.regs;
    let (Some(ip), Some(sp)) = (regs.pc(), regs.get(reg::RSP)) else {
        bt.stopped = Some(UnwindError::Stop("no rip and rsp to start from".to_string()));
        return bt;
    };
    if regs.get(reg::CS).is_some_and(|cs| cs & 3 != 0) {
        bt.lines.push(Line::Entry { ip, sp, user: true });
        bt.stopped = Some(UnwindError::Stop("the CPU was in user mode: no kernel stack to walk".to_string()));
        return bt;
    }
    if sp >> 63 == 0 {
        bt.stopped = Some(UnwindError::Stop(format!("the stack pointer {sp:#x} is not a kernel address")));
        return bt;
    }
    // The whole kernel stack in one read: one round trip over DMA for most backtraces.
    let mut words = ReadAhead::new(view);
    if let Some(base) = start.stack {
        // Unreadable as a whole: every word is then read alone (and fails alone).
        let _ = words.fetch(base, THREAD_SIZE as usize);
    }
    let mut modules = Modules { list: None };
    let mut st = State {
        ip,
        sp,
        bp: regs.get(reg::RBP),
        signal: start.signal,
        regs: start.full.then_some(regs),
        full: start.full,
        prev_regs: None,
    };
    let mut switches = 0;
    for _ in 0..MAX_FRAMES {
        let lookup = if st.signal { st.ip } else { st.ip.wrapping_sub(1) };
        let name = name_of(&mut words, symbols, orc, &mut modules, st.ip, lookup);
        bt.lines.push(Line::Frame { ip: st.ip, sp: st.sp, name });
        let prev_sp = st.sp;
        let stop = match step(&mut words, orc, &mut modules, &mut st, lookup) {
            Ok(Step::Caller) => check_sp(prev_sp, st.sp, start.stack, &mut switches).err(),
            Ok(Step::Entry { user }) => {
                bt.lines.push(Line::Entry { ip: st.ip, sp: st.sp, user });
                if user {
                    return bt;
                }
                check_sp(prev_sp, st.sp, start.stack, &mut switches).err()
            }
            Ok(Step::End) => return bt,
            Err(why) => Some(why),
        };
        if stop.is_some() {
            bt.stopped = stop;
            return bt;
        }
    }
    bt.stopped = Some(UnwindError::Stop(format!("after {MAX_FRAMES} frames")));
    bt
}

/// What one step found above a frame.
enum Step {
    /// The caller.
    Caller,
    /// Registers saved by entry code, and whether they are user mode's (the walk ends there).
    Entry { user: bool },
    /// The end of the stack.
    End,
}

/// The caller's stack pointer may only go up on one stack; it may go down when an interrupt
/// or exception stack returns to the stack it interrupted, a few times, never back from the
/// task's own stack.
fn check_sp(prev: u64, sp: u64, stack: Option<u64>, switches: &mut u32) -> Result<(), UnwindError> {
    let top = |b: u64| b.wrapping_add(THREAD_SIZE);
    let on_task_stack = |sp: u64| stack.is_some_and(|b| sp >= b && sp <= top(b));
    if sp >> 63 == 0 {
        return Err(UnwindError::Stop(format!("stack pointer {sp:#x} is not a kernel address")));
    }
    if on_task_stack(prev) && !on_task_stack(sp) {
        let b = stack.unwrap_or_default();
        return Err(UnwindError::Stop(format!(
            "stack pointer {sp:#x} left the task's stack ({b:#x}..{:#x})",
            top(b)
        )));
    }
    if sp <= prev {
        if on_task_stack(prev) || *switches >= MAX_STACK_SWITCHES {
            return Err(UnwindError::Stop(format!(
                "stack pointer went from {prev:#x} down to {sp:#x}: a loop or bad unwind data"
            )));
        }
        *switches += 1;
    }
    Ok(())
}

/// The ORC entry for `lookup` (the frame's pc, less one for a return address), from vmlinux's
/// table or its module's, and the address it is for.
fn entry_for(
    words: &mut StackWords,
    orc: &Orc,
    modules: &mut Modules,
    ip: u64,
    lookup: u64,
) -> Result<(u64, OrcEntry), UnwindError> {
    if orc.in_vmlinux_text(lookup) {
        return orc
            .vmlinux
            .find(&orc.layout, lookup)
            .ok_or_else(|| UnwindError::Stop(format!("no ORC entry for {ip:#x} in vmlinux")));
    }
    if !MODULE_SPACE.contains(&lookup) {
        return Err(UnwindError::Stop(format!("{ip:#x} is not kernel text")));
    }
    let module = match modules.find(&mut *words, orc, lookup) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(UnwindError::Stop(format!("{ip:#x} is in no loaded module's text (nor vmlinux's)")));
        }
        Err(why) => return Err(UnwindError::NoModules { ip, source: Box::new(why) }),
    };
    let name = module.name.clone();
    let table = module
        .table(&mut *words, &orc.layout)
        .map_err(|why| UnwindError::NoModuleTable { module: name.clone(), source: Box::new(why) })?;
    table
        .find(&orc.layout, lookup)
        .ok_or_else(|| UnwindError::Stop(format!("no ORC entry for {ip:#x} in module {name}")))
}

/// One step of `unwind_next_frame`: the caller's ip, sp and bp from the entry for `lookup`.
fn step(
    words: &mut StackWords,
    orc: &Orc,
    modules: &mut Modules,
    st: &mut State,
    lookup: u64,
) -> Result<Step, UnwindError> {
    let (at, e) = entry_for(words, orc, modules, st.ip, lookup)?;
    let here = format!("the ORC entry at {at:#x} for {:#x}", st.ip);
    match e.kind {
        FrameKind::EndOfStack => return Ok(Step::End),
        FrameKind::Undefined => {
            return Err(UnwindError::Stop(format!("{here} says the stack cannot be unwound there")));
        }
        FrameKind::Unknown(k) => {
            return Err(UnwindError::Stop(format!(
                "{here} has type {k}, unknown to struct orc_entry {}",
                orc.layout.describe()
            )));
        }
        FrameKind::Call | FrameKind::Regs | FrameKind::RegsPartial => {}
    }
    let bp = st.bp.ok_or_else(|| UnwindError::Stop(format!("{here} needs rbp, which is unknown")));
    let saved = |r: Reg, name: &str| {
        st.get(r).ok_or_else(|| UnwindError::Stop(format!("{here} needs {name}, which nothing saved")))
    };
    let off = i64::from(e.sp_offset);
    let cfa = match e.sp_reg {
        orc_reg::SP => st.sp.wrapping_add_signed(off),
        orc_reg::BP => bp.clone()?.wrapping_add_signed(off),
        orc_reg::SP_INDIRECT => {
            word(words, st.sp, "the stack pointer a stack switch saved")?.wrapping_add_signed(off)
        }
        orc_reg::BP_INDIRECT => {
            word(words, bp.clone()?.wrapping_add_signed(off), "an indirect stack pointer")?
        }
        orc_reg::R10 => saved(reg::R10, "r10")?,
        orc_reg::R13 => saved(reg::R13, "r13")?,
        orc_reg::DI => saved(reg::RDI, "rdi")?,
        orc_reg::DX => saved(reg::RDX, "rdx")?,
        r => return Err(UnwindError::Stop(format!("{here} has an unknown stack base register {r}"))),
    };
    let found = match e.kind {
        FrameKind::Call => {
            st.ip = word(words, cfa.wrapping_sub(8), "the return address")?;
            st.sp = cfa;
            st.regs = None;
            st.prev_regs = None;
            Step::Caller
        }
        FrameKind::Regs => {
            let raw = words_at(words, cfa, PT_REGS_WORDS, "the registers entry code saved (pt_regs)")?;
            let regs = user_regs(&raw, 0);
            st.regs = Some(regs);
            st.full = true;
            st.prev_regs = None;
            took_regs(st, &regs)
        }
        _ => {
            let raw = words_at(words, cfa, PT_REGS_WORDS - IRET_FRAME_WORD, "the interrupt frame")?;
            let regs = user_regs(&raw, IRET_FRAME_WORD);
            if st.full {
                st.prev_regs = st.regs;
            }
            st.regs = Some(regs);
            st.full = false;
            took_regs(st, &regs)
        }
    };
    st.signal = e.signal;
    if let Step::Entry { user: true } = found {
        return Ok(found);
    }
    let boff = i64::from(e.bp_offset);
    match e.bp_reg {
        orc_reg::UNDEFINED => {
            if let Some(v) = st.get(reg::RBP) {
                st.bp = Some(v);
            }
        }
        orc_reg::PREV_SP => st.bp = Some(word(words, cfa.wrapping_add_signed(boff), "the saved rbp")?),
        orc_reg::BP => st.bp = Some(word(words, bp?.wrapping_add_signed(boff), "the saved rbp")?),
        r => return Err(UnwindError::Stop(format!("{here} has an unknown frame-pointer base register {r}"))),
    }
    Ok(found)
}

/// Moves to the code saved registers interrupted.
fn took_regs(st: &mut State, regs: &Regs) -> Step {
    st.ip = regs.pc().unwrap_or(0);
    st.sp = regs.get(reg::RSP).unwrap_or(0);
    Step::Entry { user: regs.get(reg::CS).unwrap_or(0) & 3 != 0 }
}

/// `function+offset/size` for a pc, as the kernel prints `%pB`: a return address is named by
/// the call before it (`lookup` is then `ip - 1`), the offset is the pc's.
fn name_of(
    view: &mut dyn Memory,
    symbols: &Kallsyms,
    orc: &Orc,
    modules: &mut Modules,
    ip: u64,
    lookup: u64,
) -> String {
    let adjust = ip.wrapping_sub(lookup);
    if orc.in_vmlinux_text(lookup)
        && let Some((name, off, size)) = symbols.lookup_sized(lookup)
    {
        return match size {
            Some(size) => format!("{name}+{:#x}/{size:#x}", off + adjust),
            None => format!("{name}+{:#x}", off + adjust),
        };
    }
    let layout = orc.modules.as_ref().ok().map(|(_, l)| l);
    if MODULE_SPACE.contains(&lookup)
        && let Ok(Some(m)) = modules.find(view, orc, lookup)
    {
        return match layout.and_then(|l| m.symbol(view, l, lookup)) {
            Some((name, start, size)) if size == 0 || lookup - start < size => {
                format!("{name}+{:#x}/{size:#x} [{}]", lookup - start + adjust, m.name)
            }
            _ => format!("[{}]+{:#x}", m.name, lookup - m.text.0 + adjust),
        };
    }
    "??".to_string()
}

/// `monitor bt`: the thread and where its registers came from, then its frames; one line when
/// there are none.
pub fn render(thread: &Thread, result: Result<Backtrace, UnwindError>) -> String {
    let head = format!("thread {}: {}", thread.tid, thread.describe());
    match result {
        Ok(bt) => format!("{head}; registers: {}\n{}", thread.origin_text(), bt.render()),
        Err(why) => format!("{head}; no backtrace: {why}\n"),
    }
}

/// The backtrace of `thread`, with the unwind tables in `orc`.
pub fn backtrace(
    view: &mut dyn Memory,
    symbols: &Kallsyms,
    orc: &Orc,
    thread: &Thread,
) -> Result<Backtrace, UnwindError> {
    let start = Start::of(thread, orc)?;
    Ok(unwind(view, symbols, orc, &start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::TypeMap;
    use crate::mmu::MemError;

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    const ORC: u64 = 0xffff_ffff_8200_0000;
    const ORC_ENTRIES: u64 = ORC + 0x1000;
    const STACK: u64 = 0xffff_c900_0001_0000;
    const S0: u64 = STACK + 0x3000;
    const F_A: u64 = TEXT;
    const F_B: u64 = TEXT + 0x100;
    const ENTRY: u64 = TEXT + 0x200;
    const F_C: u64 = TEXT + 0x300;
    const FORK: u64 = TEXT + 0x400;
    const H: u64 = TEXT + 0x600;
    const SWITCH: u64 = TEXT + 0x700;
    const PARTIAL: u64 = TEXT + 0x800;
    /// An IRQ stack, above the task's.
    const IRQ: u64 = 0xffff_c900_0020_0000;
    /// A module's text, and its `struct module` and tables.
    const MOD: u64 = 0xffff_ffff_c000_0000;
    const MODS: u64 = 0xffff_ffff_c010_0000;

    /// Kernel memory in a few regions; anything else does not read.
    struct Sparse(Vec<(u64, Vec<u8>)>);

    impl Sparse {
        fn new() -> Self {
            Self(vec![
                (ORC, vec![0; 0x2000]),
                (STACK, vec![0; THREAD_SIZE as usize]),
                (IRQ, vec![0; 0x1000]),
                (MODS, vec![0; 0x1000]),
            ])
        }
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            let (base, region) =
                self.0.iter_mut().find(|(b, r)| addr >= *b && addr < b + r.len() as u64).unwrap();
            let off = (addr - *base) as usize;
            region[off..off + bytes.len()].copy_from_slice(bytes);
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
    }

    impl Memory for Sparse {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            for (base, region) in &self.0 {
                if let Some(off) = addr.checked_sub(*base).map(|o| o as usize)
                    && let Some(src) = region.get(off..off + buf.len())
                {
                    buf.copy_from_slice(src);
                    return Ok(());
                }
            }
            Err(MemError::Phys(crate::phys::PhysError::NotRam {
                addr: crate::PhysAddr(addr),
                len: buf.len() as u64,
                source_name: "test".into(),
            }))
        }
    }

    /// `struct orc_entry` as BTF describes it: before 6.3 (`type:2, end:1`) or from 6.4
    /// (`type:3, signal:1`). The bitfields live in a 4-byte unit at byte 4 of a 6-byte struct.
    fn types(new: bool) -> TypeMap {
        let mut t = TypeMap::new("test BTF");
        t.insert_size("orc_entry", 6);
        let mut bits = |name: &str, bit: u32, width: u32| {
            t.members.insert(
                ("orc_entry".into(), name.into()),
                Member { offset: 4, size: 4, bitfield: Some((bit, width)) },
            );
        };
        bits("sp_reg", 0, 4);
        bits("bp_reg", 4, 4);
        if new {
            bits("type", 8, 3);
            bits("signal", 11, 1);
        } else {
            bits("type", 8, 2);
            bits("end", 10, 1);
        }
        t.insert_member("orc_entry", "sp_offset", 0, 2);
        t.insert_member("orc_entry", "bp_offset", 2, 2);
        t
    }

    /// What objtool would write for an entry, in either layout.
    fn encode(new: bool, sp_reg: u8, sp_offset: i16, bp_reg: u8, bp_offset: i16, kind: FrameKind) -> [u8; 6] {
        let (sp_reg, code, flag) = match (new, kind) {
            (false, FrameKind::EndOfStack) => (orc_reg::UNDEFINED, 0, 1),
            (false, FrameKind::Undefined) => (orc_reg::UNDEFINED, 0, 0),
            (false, FrameKind::Call) => (sp_reg, 0, 0),
            (false, FrameKind::Regs) => (sp_reg, 1, 0),
            (false, FrameKind::RegsPartial) => (sp_reg, 2, 0),
            (true, FrameKind::Undefined) => (sp_reg, 0, 0),
            (true, FrameKind::EndOfStack) => (sp_reg, 1, 0),
            (true, FrameKind::Call) => (sp_reg, 2, 0),
            (true, FrameKind::Regs) => (sp_reg, 3, 1),
            (true, FrameKind::RegsPartial) => (sp_reg, 4, 1),
            (_, FrameKind::Unknown(k)) => (sp_reg, k, 0),
        };
        let mut e = [0u8; 6];
        e[0..2].copy_from_slice(&sp_offset.to_le_bytes());
        e[2..4].copy_from_slice(&bp_offset.to_le_bytes());
        e[4] = sp_reg | bp_reg << 4;
        e[5] = if new { code | flag << 3 } else { code | flag << 2 };
        e
    }

    #[test]
    fn orc_entries_decode_in_both_layouts() {
        use orc_reg::*;
        // Real entries: `CALL, sp = sp + 8, bp unchanged` from 6.1 and from 6.12.
        let old = OrcLayout::from_types(&types(false)).unwrap();
        let new = OrcLayout::from_types(&types(true)).unwrap();
        let call = OrcEntry {
            sp_offset: 8,
            bp_offset: 0,
            sp_reg: SP,
            bp_reg: UNDEFINED,
            kind: FrameKind::Call,
            signal: false,
        };
        assert_eq!(old.decode(&[8, 0, 0, 0, 5, 0]), call);
        assert_eq!(new.decode(&[8, 0, 0, 0, 5, 2]), call);
        // End of stack: sp undefined with `end` set, or type 1.
        assert_eq!(old.decode(&[0, 0, 0, 0, 0, 4]).kind, FrameKind::EndOfStack);
        assert_eq!(old.decode(&[0, 0, 0, 0, 0, 0]).kind, FrameKind::Undefined);
        assert_eq!(new.decode(&[0, 0, 0, 0, 0, 1]).kind, FrameKind::EndOfStack);
        assert_eq!(new.decode(&[0, 0, 0, 0, 0, 0]).kind, FrameKind::Undefined);
        for (is_new, layout) in [(false, &old), (true, &new)] {
            for kind in [FrameKind::Call, FrameKind::Regs, FrameKind::RegsPartial] {
                let e = layout.decode(&encode(is_new, BP, -16, PREV_SP, -24, kind));
                assert_eq!(
                    (e.sp_reg, e.sp_offset, e.bp_reg, e.bp_offset, e.kind),
                    (BP, -16, PREV_SP, -24, kind)
                );
                assert_eq!(e.signal, kind != FrameKind::Call, "{kind:?}: an entry frame's pc is exact");
            }
            let k = if is_new { 7 } else { 3 };
            assert_eq!(
                layout.decode(&encode(is_new, SP, 8, 0, 0, FrameKind::Unknown(k))).kind,
                FrameKind::Unknown(k)
            );
        }
        // The new layout's own signal bit decides, whatever the type.
        assert!(new.decode(&[8, 0, 0, 0, 5, 2 | 8]).signal);
        // A layout with neither bit, or fields past the struct's end, is refused by name.
        let mut odd = types(false);
        odd.members.remove(&("orc_entry".to_string(), "end".to_string()));
        let e = OrcLayout::from_types(&odd).unwrap_err().to_string();
        assert!(e.contains("neither") && e.contains("test BTF"), "{e}");
        odd.insert_size("orc_entry", 4);
        assert!(OrcLayout::from_types(&odd).unwrap_err().to_string().contains("does not fit"));
        assert!(
            OrcLayout::from_types(&TypeMap::new("empty"))
                .unwrap_err()
                .to_string()
                .contains("no struct orc_entry")
        );
    }

    /// A kernel with five functions, their ORC entries in `new` or the old layout, and a task
    /// stack holding: f_a (a frame with rbp saved) called by f_b, called from entry code
    /// that saved pt_regs, which interrupted f_c (a frame-pointer function), called from
    /// ret_from_fork, the end of the stack.
    fn machine(new: bool, user: bool) -> (Sparse, Kallsyms, Orc) {
        use orc_reg::*;
        let mut mem = Sparse::new();
        let entries = [
            (F_A, encode(new, SP, 16, PREV_SP, -16, FrameKind::Call)),
            (F_B, encode(new, SP, 8, UNDEFINED, 0, FrameKind::Call)),
            (ENTRY, encode(new, SP, 0, UNDEFINED, 0, FrameKind::Regs)),
            (F_C, encode(new, BP, 16, PREV_SP, -16, FrameKind::Call)),
            (FORK, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::EndOfStack)),
            (TEXT + 0x500, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::Undefined)),
            (H, encode(new, SP, 8, UNDEFINED, 0, FrameKind::Call)),
            (SWITCH, encode(new, SP_INDIRECT, 8, UNDEFINED, 0, FrameKind::Call)),
            (PARTIAL, encode(new, SP, 0, UNDEFINED, 0, FrameKind::RegsPartial)),
            (TEXT + 0x900, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::Undefined)),
        ];
        for (i, (ip, e)) in entries.iter().enumerate() {
            let at = ORC + 4 * i as u64;
            mem.put(at, &((*ip as i64 - at as i64) as i32).to_le_bytes());
            mem.put(ORC_ENTRIES + 6 * i as u64, e);
        }
        mem.put_u64(S0, 0x5a5a); // f_a's saved rbp
        mem.put_u64(S0 + 8, F_B + 0x20); // f_a returns into f_b
        mem.put_u64(S0 + 16, ENTRY + 0x30); // f_b returns into the entry code
        let mut regs = [0u64; PT_REGS_WORDS];
        regs[4] = S0 + 0x200; // bp: f_c's frame pointer
        regs[16] = F_C + 8; // ip
        regs[17] = 0x10; // cs
        regs[19] = S0 + 0x200; // sp
        if user {
            (regs[16], regs[17], regs[19]) = (0x40_1000, 0x33, 0x7ffc_0000);
        }
        for (i, r) in regs.iter().enumerate() {
            mem.put_u64(S0 + 24 + 8 * i as u64, *r);
        }
        mem.put_u64(S0 + 0x200, 0x6b6b); // f_c's saved rbp
        mem.put_u64(S0 + 0x208, FORK + 5); // f_c returns into ret_from_fork
        let symbols = Kallsyms::from_pairs(
            [
                ("_stext", TEXT),
                ("f_a", F_A),
                ("f_b", F_B),
                ("entry_asm", ENTRY),
                ("f_c", F_C),
                ("ret_from_fork", FORK),
                ("h", H),
                ("switcher", SWITCH),
                ("partial_entry", PARTIAL),
                ("_etext", TEXT + 0x1000),
                ("modules", MODS + 0x700),
                ("__start_orc_unwind_ip", ORC),
                ("__stop_orc_unwind_ip", ORC + 4 * entries.len() as u64),
                ("__start_orc_unwind", ORC_ENTRIES),
                ("__stop_orc_unwind", ORC_ENTRIES + 6 * entries.len() as u64),
            ]
            .map(|(n, a)| (n.to_string(), a)),
        );
        let orc = Orc::load(&mut mem, &symbols, Some(&types(new))).expect("ORC tables");
        (mem, symbols, orc)
    }

    /// One module, `mymod`, whose function m_f (0x40 bytes at `MOD`) has its own ORC entry and
    /// symbol, on the `modules` list at `MODS + 0x700`.
    fn with_module(mem: &mut Sparse, new: bool) -> TypeMap {
        let mut t = types(new);
        for (ty, path, off, size) in [
            ("module", "list", 8, 16),
            ("module", "name", 24, 56),
            ("module", "core_layout.base", 0x80, 8),
            ("module", "core_layout.text_size", 0x88, 4),
            ("module", "arch.orc_unwind_ip", 0x90, 8),
            ("module", "arch.orc_unwind", 0x98, 8),
            ("module", "arch.num_orcs", 0xa0, 4),
            ("module", "kallsyms", 0xa8, 8),
            ("mod_kallsyms", "symtab", 0, 8),
            ("mod_kallsyms", "num_symtab", 8, 4),
            ("mod_kallsyms", "strtab", 16, 8),
        ] {
            t.insert_member(ty, path, off, size);
        }
        let head = MODS + 0x700;
        mem.put_u64(head, MODS + 8);
        mem.put_u64(MODS + 8, head);
        mem.put(MODS + 24, b"mymod\0");
        mem.put_u64(MODS + 0x80, MOD);
        mem.put(MODS + 0x88, &0x1000u32.to_le_bytes());
        mem.put_u64(MODS + 0x90, MODS + 0x200);
        mem.put_u64(MODS + 0x98, MODS + 0x300);
        mem.put(MODS + 0xa0, &2u32.to_le_bytes());
        mem.put_u64(MODS + 0xa8, MODS + 0x600);
        for (i, (ip, e)) in [
            (MOD, encode(new, orc_reg::SP, 8, 0, 0, FrameKind::Call)),
            (MOD + 0x40, encode(new, 0, 0, 0, 0, FrameKind::Undefined)),
        ]
        .iter()
        .enumerate()
        {
            let at = MODS + 0x200 + 4 * i as u64;
            mem.put(at, &((*ip as i64 - at as i64) as i32).to_le_bytes());
            mem.put(MODS + 0x300 + 6 * i as u64, e);
        }
        // Elf64_Sym m_f: name 1, STT_FUNC, value MOD, size 0x40; then the string table.
        let mut sym = [0u8; ELF_SYM_SIZE];
        sym[0] = 1;
        sym[4] = 0x12;
        sym[8..16].copy_from_slice(&MOD.to_le_bytes());
        sym[16..24].copy_from_slice(&0x40u64.to_le_bytes());
        mem.put(MODS + 0x400, &sym);
        mem.put(MODS + 0x500, b"\0m_f\0");
        mem.put_u64(MODS + 0x600, MODS + 0x400);
        mem.put(MODS + 0x608, &1u32.to_le_bytes());
        mem.put_u64(MODS + 0x610, MODS + 0x500);
        t
    }

    /// The walk went through `functions` to the end of the stack.
    fn assert_walked(bt: &Backtrace, functions: &[&str]) {
        assert_eq!((bt.functions(), &bt.stopped), (functions.to_vec(), &None), "{}", bt.render());
    }

    fn start(ip: u64, sp: u64, stack: Option<u64>) -> Start {
        let mut regs = Regs::default();
        regs[reg::RIP] = Some(ip);
        regs[reg::RSP] = Some(sp);
        regs[reg::RBP] = Some(0xdead);
        regs[reg::CS] = Some(0x10);
        Start { regs, signal: false, full: false, stack }
    }

    #[test]
    fn unwinds_calls_frame_pointers_and_entry_registers() {
        for new in [false, true] {
            let (mut mem, symbols, orc) = machine(new, false);
            let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
            assert_walked(&bt, &["f_a", "f_b", "entry_asm", "f_c", "ret_from_fork"]);
            assert_eq!(bt.lines[3], Line::Entry { ip: F_C + 8, sp: S0 + 0x200, user: false });
            let text = bt.render();
            assert!(
                text.starts_with(
                    "#0  0xffffffff81000010 f_a+0x10/0x100\n#1  0xffffffff81000120 f_b+0x20/0x100\n"
                ),
                "{text}"
            );
            assert!(text.contains("--- interrupt/exception entry: kernel rip 0xffffffff81000308"), "{text}");
            // After the entry the pc is exact: f_c+0x8 is named as it is.
            assert!(text.contains("#3  0xffffffff81000308 f_c+0x8/0x100"), "{text}");
        }
    }

    #[test]
    fn an_interrupt_on_an_irq_stack_unwinds_back_to_the_task_stack() {
        for new in [false, true] {
            let (mut mem, symbols, orc) = machine(new, false);
            // h was called by the stack switcher on the IRQ stack, which saved the task's
            // stack pointer at the IRQ stack's top; the partial entry's interrupt frame there
            // says f_b was interrupted at f_b+0x20.
            let top = IRQ + 0xf00;
            let t1 = S0 - 0x100;
            mem.put_u64(top, SWITCH + 0x10);
            mem.put_u64(top + 8, t1);
            mem.put_u64(t1, PARTIAL + 0x10);
            for (i, v) in [F_B + 0x20, 0x10, 0x246, S0 + 16, 0x18].iter().enumerate() {
                mem.put_u64(t1 + 8 + 8 * i as u64, *v);
            }
            let bt = unwind(&mut mem, &symbols, &orc, &start(H + 0x10, top, Some(STACK)));
            assert_walked(
                &bt,
                &["h", "switcher", "partial_entry", "f_b", "entry_asm", "f_c", "ret_from_fork"],
            );
            assert_eq!(bt.lines[3], Line::Entry { ip: F_B + 0x20, sp: S0 + 16, user: false });
        }
    }

    #[test]
    fn a_cpus_exact_pc_is_looked_up_as_it_is() {
        // At f_b's first instruction: as a return address it would be f_a's last byte.
        let (mut mem, symbols, orc) = machine(true, false);
        let mut s = start(F_B, S0 + 16, Some(STACK));
        s.signal = true;
        let bt = unwind(&mut mem, &symbols, &orc, &s);
        assert_walked(&bt, &["f_b", "entry_asm", "f_c", "ret_from_fork"]);
        assert!(bt.render().starts_with("#0  0xffffffff81000100 f_b+0x0/0x100\n"));
    }

    #[test]
    fn module_frames_use_the_modules_own_table_and_symbols() {
        for new in [false, true] {
            let (mut mem, symbols, _) = machine(new, false);
            let t = with_module(&mut mem, new);
            let orc = Orc::load(&mut mem, &symbols, Some(&t)).unwrap();
            let bt = unwind(&mut mem, &symbols, &orc, &start(MOD + 0x10, S0 + 8, Some(STACK)));
            assert_walked(&bt, &["m_f", "f_b", "entry_asm", "f_c", "ret_from_fork"]);
            assert!(bt.render().contains("m_f+0x10/0x40 [mymod]"), "{}", bt.render());
            // Without the module's layout: its code is named and the walk stops there.
            let orc = Orc::load(&mut mem, &symbols, Some(&types(new))).unwrap();
            let bt = unwind(&mut mem, &symbols, &orc, &start(MOD + 0x10, S0 + 8, Some(STACK)));
            assert_eq!(bt.functions(), ["??"]);
            let why = bt.stopped.unwrap().to_string();
            assert!(why.contains("in module code, no unwind table read"), "{why}");
        }
    }

    #[test]
    fn entry_from_user_mode_ends_the_walk() {
        let (mut mem, symbols, orc) = machine(true, true);
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
        assert_eq!(bt.functions(), ["f_a", "f_b", "entry_asm"]);
        assert_eq!(bt.lines.last(), Some(&Line::Entry { ip: 0x40_1000, sp: 0x7ffc_0000, user: true }));
        assert_eq!(bt.stopped, None);
        assert!(bt.render().contains("user mode: user rip 0x401000, rsp 0x7ffc0000"));
        // A CPU caught in user mode has no kernel stack to walk.
        let mut s = start(0x40_1000, 0x7ffc_0000, Some(STACK));
        s.regs[reg::CS] = Some(0x33);
        let bt = unwind(&mut mem, &symbols, &orc, &s);
        assert!(bt.functions().is_empty() && bt.stopped.unwrap().to_string().contains("user mode"));
    }

    #[test]
    fn bad_stacks_stop_with_a_reason() {
        // A return address outside kernel text.
        let (mut mem, symbols, orc) = machine(false, false);
        mem.put_u64(S0 + 8, 0x1234);
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
        assert_eq!(bt.functions(), ["f_a", "??"]);
        assert!(
            bt.stopped
                .as_ref()
                .map(ToString::to_string)
                .as_deref()
                .unwrap()
                .contains("0x1234 is not kernel text"),
            "{:?}",
            bt.stopped
        );
        // A return address that leads back into the same frame: the stack pointer must rise.
        mem.put_u64(S0 + 8, F_A + 0x10);
        mem.put(ORC_ENTRIES, &encode(false, orc_reg::SP, 0, 0, 0, FrameKind::Call));
        let orc = Orc::load(&mut mem, &symbols, Some(&types(false))).unwrap();
        mem.put_u64(S0 - 8, F_A + 0x10);
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
        assert!(
            bt.stopped.as_ref().map(ToString::to_string).as_deref().unwrap().contains("down to"),
            "{:?}",
            bt.stopped
        );
        assert_eq!(bt.lines.len(), 1);
        // A stack pointer outside the task's stack, and one that is not a kernel address.
        let (mut mem, symbols, orc) = machine(false, false);
        mem.put_u64(S0 + 16, ENTRY + 0x30);
        mem.put_u64(S0 + 24 + 19 * 8, STACK + 0x8000);
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
        assert!(
            bt.stopped
                .as_ref()
                .map(ToString::to_string)
                .as_deref()
                .unwrap()
                .contains("left the task's stack"),
            "{:?}",
            bt.stopped
        );
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, 0x7fff_0000, Some(STACK)));
        assert!(
            bt.stopped.as_ref().map(ToString::to_string).as_deref().unwrap().contains("not a kernel address"),
            "{:?}",
            bt.stopped
        );
        // Unreadable stack: the error names what and where.
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, STACK + 0x10_0000, None));
        let why = bt.stopped.unwrap().to_string();
        assert!(why.contains("the return address at 0xffffc90000110008"), "{why}");
    }

    #[test]
    fn a_recursion_stops_after_the_frame_limit() {
        let (mut mem, symbols, orc) = machine(false, false);
        // f_a returning into itself, each frame 16 bytes up the stack.
        for i in 0..(THREAD_SIZE / 16) {
            mem.put_u64(STACK + 16 * i + 8, F_A + 0x10);
        }
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, STACK, Some(STACK)));
        assert_eq!(bt.lines.len(), MAX_FRAMES);
        assert_eq!(bt.stopped.as_ref().map(ToString::to_string).as_deref(), Some("after 64 frames"));
    }

    #[test]
    fn garbage_stacks_end_in_a_bounded_walk() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let (mut mem, symbols, orc) = machine(round % 2 == 0, false);
            // Words that are text addresses, stack addresses, small numbers or anything.
            for i in 0..THREAD_SIZE / 8 {
                let r = next();
                let w = match r % 4 {
                    0 => TEXT + r % 0x1000,
                    1 => STACK + r % (THREAD_SIZE + 0x100),
                    2 => r % 0x100,
                    _ => r,
                };
                mem.put_u64(STACK + 8 * i, w);
            }
            let sp = STACK + next() % THREAD_SIZE;
            let bt = unwind(&mut mem, &symbols, &orc, &start(TEXT + next() % 0x1000, sp, Some(STACK)));
            let frames = bt.lines.iter().filter(|l| matches!(l, Line::Frame { .. })).count();
            assert!((1..=MAX_FRAMES).contains(&frames), "{}", bt.render());
        }
    }

    #[test]
    fn stack_switches_are_bounded_and_never_leave_the_task_stack_downwards() {
        let task = Some(STACK);
        let mut n = 0;
        // From an IRQ stack above the task's, down onto the task stack: allowed.
        assert!(check_sp(STACK + 0x10_0000, S0, task, &mut n).is_ok());
        assert_eq!(n, 1);
        // On the task stack, down is a loop; up past its top is leaving it.
        assert!(check_sp(S0, S0 - 8, task, &mut n).unwrap_err().to_string().contains("down to"));
        assert!(
            check_sp(S0, STACK + 0x5000, task, &mut n)
                .unwrap_err()
                .to_string()
                .contains("left the task's stack")
        );
        // Between foreign stacks, a few switches at most.
        let mut n = 0;
        for _ in 0..MAX_STACK_SWITCHES {
            assert!(check_sp(0xffff_8000_0010_0000, 0xffff_8000_0000_1000, None, &mut n).is_ok());
        }
        assert!(check_sp(0xffff_8000_0010_0000, 0xffff_8000_0000_1000, None, &mut n).is_err());
    }

    #[test]
    fn tables_are_bounded_and_sorted() {
        let layout = OrcLayout::from_types(&types(false)).unwrap();
        let mut mem = Sparse::new();
        let e = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 0, "vmlinux").unwrap_err().to_string();
        assert!(e.contains("0 entries"), "{e}");
        let e =
            OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 1 << 40, "vmlinux").unwrap_err().to_string();
        assert!(e.contains("not a plausible size"), "{e}");
        // Offsets are relative to each entry: 0x100 then 0x100 from 4 bytes further is sorted,
        // a drop back is not.
        mem.put(ORC, &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        let t = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 2, "vmlinux").unwrap();
        assert_eq!(t.ips, [ORC + 0x100, ORC + 0x104]);
        let e = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 3, "vmlinux").unwrap_err().to_string();
        assert!(e.contains("not sorted at entry 2"), "{e}");
        let e = OrcTable::read(&mut mem, &layout, ORC + 0x1ff0, ORC_ENTRIES, 16, "module x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("module x's ORC ip table at 0xffffffff82001ff0"), "{e}");
        // Symbols missing, or tables of different lengths.
        let e = Orc::load(&mut mem, &Kallsyms::default(), Some(&types(false))).err().unwrap().to_string();
        assert!(e.contains("no ORC tables"), "{e}");
        let (mut mem, symbols, _) = machine(false, false);
        let mut pairs: Vec<(String, u64)> = symbols.iter().map(|(n, a)| (n.to_string(), a)).collect();
        pairs.retain(|(n, _)| n != "__stop_orc_unwind");
        pairs.push(("__stop_orc_unwind".into(), ORC_ENTRIES + 7));
        let e =
            Orc::load(&mut mem, &Kallsyms::from_pairs(pairs), Some(&types(false))).err().unwrap().to_string();
        assert!(e.contains("disagree"), "{e}");
    }
}
