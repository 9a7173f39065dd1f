//! gdb's session state: which addresses memory packets mean (physical, or virtual under the
//! active CR3), who chose that CR3, and the thread gdb selected.
//!
//! The [`AddressSpace`] below knows only how to read in an address space it is given; the
//! choice of address space is the debugger's, and lives here.

use crate::addr::{PhysAddr, VirtAddr};
use crate::mmu::{AddressSpace, MemError, TranslateError, WalkTrace};
use gdbstub::common::Tid;
use std::fmt;

/// Whether gdb's addresses are physical or virtual (through the active CR3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Addresses are physical.
    #[default]
    Phys,
    /// Addresses are virtual, translated under the active CR3.
    Virt,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Mode::Phys => "physical",
            Mode::Virt => "virtual",
        })
    }
}

/// One gdb session's view of memory: the mode, the active CR3 and where it came from, and the
/// thread gdb selected. A new session starts from a copy of the server's initial state.
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    mode: Mode,
    cr3: Option<u64>,
    /// Who set the active CR3, as `monitor cr3` shows it.
    pub(crate) cr3_origin: String,
    /// Whether the user chose the active CR3 (`--cr3`, `monitor switch`, `set-cr3`, `set $cr3`):
    /// gdb's first thread selection of a session then leaves it in place.
    pub(crate) cr3_pinned: bool,
    /// Whether the active CR3 is a task's own (its thread selected, or `monitor switch PID`):
    /// kernel addresses are then read through the kernel's tables, which map the kernel half
    /// the same in every process, so that a change of process costs no page-table reads.
    pub(crate) task_context: bool,
    /// The thread whose registers or memory gdb last read, in whose context memory packets are
    /// read: selecting another one (`Hg`, gdb's `thread N`) switches to its process's page
    /// tables.
    pub(crate) selected: Option<Tid>,
    /// Which registers threads report: the kernel's saved context, or user mode (`monitor regs`).
    pub(crate) regs: crate::gdb::monitor::RegSet,
}

impl SessionState {
    /// Physical mode, no CR3, no thread selected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether memory packets address physical or virtual memory.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches between physical and virtual addressing; virtual needs a CR3.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), TranslateError> {
        if mode == Mode::Virt && self.cr3.is_none() {
            return Err(TranslateError::NoCr3);
        }
        self.mode = mode;
        Ok(())
    }

    /// The active CR3 as it was set (flag bits included).
    pub fn cr3(&self) -> Option<u64> {
        self.cr3
    }

    /// Sets the active CR3 (the mode is unchanged). The address space's caches are keyed by
    /// root, so switching between processes keeps what was learnt about each.
    pub fn set_cr3(&mut self, cr3: u64) {
        self.cr3 = Some(cr3);
    }

    /// Forgets the CR3 and goes back to physical mode.
    pub fn clear_cr3(&mut self) {
        self.cr3 = None;
        self.mode = Mode::Phys;
    }

    /// The thread gdb selected this session, if any.
    pub fn selected_thread(&self) -> Option<Tid> {
        self.selected
    }

    /// Reads at `addr` in the active mode, filling `buf` from the start and stopping at the
    /// first byte that fails: `Ok(n)` when `n > 0` bytes were read (or `buf` is empty), else
    /// why the first byte failed.
    pub fn read(&self, space: &mut AddressSpace, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        match (self.mode, self.cr3) {
            (Mode::Phys, _) => space.read_phys_partial(PhysAddr(addr), buf),
            (Mode::Virt, Some(cr3)) => space.read_in(cr3, addr, buf),
            (Mode::Virt, None) => Err(TranslateError::NoCr3.into()),
        }
    }

    /// Writes `data` at `addr` in the active mode (see [`AddressSpace::write_virt_in`]).
    pub fn write(&self, space: &mut AddressSpace, addr: u64, data: &[u8]) -> Result<(), MemError> {
        match (self.mode, self.cr3) {
            (Mode::Phys, _) => space.write_phys(PhysAddr(addr), data),
            (Mode::Virt, Some(cr3)) => space.write_virt_in(cr3, VirtAddr(addr), data),
            (Mode::Virt, None) => Err(TranslateError::NoCr3.into()),
        }
    }

    /// The walk of `virt` under the active CR3 (whatever the mode), every entry read fresh.
    pub fn vtop(&self, space: &mut AddressSpace, virt: VirtAddr) -> WalkTrace {
        match self.cr3 {
            Some(cr3) => space.vtop_in(cr3, virt),
            None => WalkTrace {
                virt,
                cr3: 0,
                paging: space.paging(),
                steps: Vec::new(),
                result: Err(TranslateError::NoCr3),
            },
        }
    }
}

#[cfg(test)]
mod tests;
