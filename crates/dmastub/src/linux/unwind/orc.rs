//! The kernel's ORC tables: the layout of `struct orc_entry` (three of them), one table of
//! addresses and entries, and vmlinux's tables found by their symbols.

use super::*;
use crate::bytes::LeBytes;
use crate::linux::{Member, TypeInfo};

/// ORC's register numbers (`ORC_REG_*` in `arch/x86/include/asm/orc_types.h`).
pub(super) mod orc_reg {
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
pub(crate) enum FrameKind {
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
pub(crate) struct OrcEntry {
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
pub(crate) struct OrcLayout {
    pub(super) size: usize,
    pub(super) sp_offset: Member,
    pub(super) bp_offset: Member,
    pub(super) sp_reg: Member,
    pub(super) bp_reg: Member,
    pub(super) kind: Member,
    pub(super) end: Option<Member>,
    pub(super) signal: Option<Member>,
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
pub(crate) struct OrcTable {
    pub(super) ips: Vec<u64>,
    pub(super) entries: Vec<u8>,
    pub(super) entry_size: usize,
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
            let rel = w.i32_at(0).unwrap_or(0);
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
    pub(super) fn find(&self, layout: &OrcLayout, ip: u64) -> Option<(u64, OrcEntry)> {
        let i = self.ips.partition_point(|&a| a <= ip).checked_sub(1)?;
        let raw = self.entries.get(i * self.entry_size..(i + 1) * self.entry_size)?;
        Some((self.ips[i], layout.decode(raw)))
    }
}
