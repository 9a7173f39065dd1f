//! Linux awareness: finding the kernel in memory with no hints, its symbols, struct layouts
//! (from BTF, VMCOREINFO or a `targets/` profile), the task list and the kernel log.
//!
//! Reads go through [`Memory`], a kernel-virtual view of an [`AddressSpace`];
//! nothing here knows the remote protocol. Everything read is untrusted: every walk is bounded,
//! and every failure names the address and what was being read.

pub(crate) mod btf;
pub(crate) mod commands;
pub(crate) mod discover;
mod error;
pub(crate) mod kallsyms;
pub(crate) mod layout;
mod list;
pub mod mm;
pub mod modules;
mod name_index;
pub(crate) mod origin;
pub(crate) mod pages;
pub(crate) mod printk;
pub(crate) mod profile;
pub(crate) mod ram;
pub(crate) mod readahead;
pub mod render;
pub(crate) mod symfile;
pub(crate) mod tasks;
pub(crate) mod threads;
pub(crate) mod unwind;
pub(crate) mod vmcoreinfo;
pub(crate) mod vmlayout;

pub use btf::{Btf, BtfError};
pub use commands::{Linux, Switch};
pub use discover::{DiscoverError, FailedReads, Hints, ImageError, Kernel, TrampolineError, discover};
pub use error::{LayoutError, LinuxError, ThreadLayoutError};
pub use kallsyms::{Kallsyms, KallsymsError};
pub use layout::{Member, TypeInfo, TypeMap};
pub use mm::{MappedFile, MapsError, MmInfo, ProcessMaps, Vma};
pub use origin::{Found, Hint, HintNames, Origin};
pub use origin::{Remedies, render_remedies};
pub use pages::{
    BATCH_BYTES, ClassCounts, DumpLevel, PageClass, PageFilterError, PageLayout, PageSet, classify,
    classify_with,
};
pub use printk::{KernelLog, LogRecord};
pub use printk::{PrintkError, read_log};
pub use profile::{Profile, ProfileError};
pub use ram::{RamMapError, ram_map};
pub use symfile::{SymfileError, load_system_map, load_vmlinux, parse_system_map};
pub use tasks::{Task, TaskList};
pub use tasks::{TaskError, TaskLayout};
pub use threads::{PRSTATUS_SIZE, ThreadLayout, encode_prstatus, parse_prstatus, reg};
pub use threads::{Reg, Regs, Thread, ThreadList, UserRegs, UserRegsError};
pub use unwind::{Backtrace, Frame, Orc, Start, UnwindError, unwind};
pub use vmcoreinfo::VmcoreInfo;

use crate::addr::{PhysAddr, VirtAddr};
pub use crate::mmu::TranslateError;
use crate::mmu::{AddressSpace, MemError};

/// Kernel-virtual memory as the Linux layer reads it.
pub trait Memory {
    /// Reads all of `buf` at virtual `addr`, or fails.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// A little-endian `u64` at `addr`.
    fn read_u64(&mut self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A little-endian `u32` at `addr`.
    fn read_u32(&mut self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A little-endian `u16` at `addr`.
    fn read_u16(&mut self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// An unsigned integer of `size` bytes (1, 2, 4 or 8), little-endian.
    fn read_uint(&mut self, addr: u64, size: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        let n = size.clamp(1, 8) as usize;
        self.read(addr, &mut b[..n])?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Kernel symbols by name (kallsyms from memory, System.map, vmlinux or a profile).
pub trait Symbols {
    /// The running kernel's address of `name` (KASLR applied).
    fn address(&self, name: &str) -> Option<u64>;
}

/// What one operation (a `ps`, the thread list gdb asks for, a backtrace) may spend on the
/// target's lists, all its walks together: memory after a crash can make any list as long as
/// its RAM allows (2 MiB of words that each point to the next is a task list of 256 Ki
/// entries, and every entry a thread group as long), and nothing read may grow without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Tasks and threads walked, every list of the operation counted.
    pub tasks: usize,
    /// Bytes read through the [`View`].
    pub bytes: u64,
}

impl Budget {
    /// 512 Ki tasks and threads: five times the ~100k threads of a big server, and more than
    /// any Linux has pids for by default (`pid_max` is 4 Mi only when raised by hand or
    /// with more than 4096 CPUs). A thread as gdb sees it ([`threads::Thread`]) takes about
    /// 600 bytes, so the longest list is about 300 MiB of this process's memory. 4 GiB read:
    /// 512 Ki `task_struct`s of a few KiB each, once.
    pub const DEFAULT: Budget = Budget { tasks: 1 << 19, bytes: 4 << 30 };
}

impl Default for Budget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An [`AddressSpace`] read under one CR3 (the kernel's, or a task's), counting the bytes read
/// and the tasks walked against the operation's [`Budget`].
pub struct View<'a> {
    space: &'a mut AddressSpace,
    cr3: u64,
    bytes_read: u64,
    /// Bytes lent in place by the source ([`View::borrow`]): read, but not through the space.
    lent: u64,
    budget: Budget,
    tasks: usize,
    /// Why the budget stopped a walk, and where: said once, when it first ran out.
    spent: Option<String>,
}

impl<'a> View<'a> {
    /// A view with the [`Budget::DEFAULT`] budget.
    pub fn new(space: &'a mut AddressSpace, cr3: u64) -> Self {
        Self::with_budget(space, cr3, Budget::DEFAULT)
    }

    /// A view that may spend `budget` on one operation.
    pub fn with_budget(space: &'a mut AddressSpace, cr3: u64, budget: Budget) -> Self {
        Self { space, cr3, bytes_read: 0, lent: 0, budget, tasks: 0, spent: None }
    }

    /// Counts one more task (or thread) walked in `what`; fails once the operation's budget of
    /// tasks or bytes is spent, and from then on.
    pub fn spend_task(&mut self, what: &str) -> Result<(), BudgetSpent> {
        self.check_budget(what)?;
        if self.tasks >= self.budget.tasks {
            return Err(self.exhaust(format!(
                "the budget of {} tasks and threads for one operation was spent in the {what}",
                self.budget.tasks
            )));
        }
        self.tasks += 1;
        Ok(())
    }

    /// Fails once the operation's budget of bytes is spent (reading the tasks already walked
    /// goes on when only the budget of tasks is).
    pub fn check_budget(&mut self, what: &str) -> Result<(), BudgetSpent> {
        if self.bytes_read <= self.budget.bytes {
            return Ok(());
        }
        Err(self.exhaust(format!(
            "the budget of {} MiB read for one operation was spent in the {what}",
            self.budget.bytes >> 20
        )))
    }

    /// Records the first reason the budget stopped a walk (later ones follow from it).
    fn exhaust(&mut self, why: String) -> BudgetSpent {
        match &self.spent {
            Some(first) => BudgetSpent(first.clone()),
            None => {
                log::warn!("{why}");
                self.spent = Some(why.clone());
                BudgetSpent(why)
            }
        }
    }

    /// Why the operation's budget stopped a walk, if it did: its result is then incomplete.
    pub fn budget_spent(&self) -> Option<&str> {
        self.spent.as_deref()
    }

    /// Tasks and threads walked so far.
    pub fn tasks_walked(&self) -> usize {
        self.tasks
    }

    /// The physical address of `virt` under this view's CR3.
    pub fn translate(&mut self, virt: u64) -> Result<u64, crate::mmu::TranslateError> {
        Ok(self.space.translate_in(self.cr3, VirtAddr(virt))?.phys.0)
    }

    /// `len` bytes at `virt` in place, without a copy, when they are physically contiguous and
    /// the source can lend them (a dump file). Counted as read.
    pub fn borrow(&mut self, virt: u64, len: u64) -> Option<&[u8]> {
        let first = self.translate(virt).ok()?;
        // Every page must follow the first one physically (the kernel image does).
        let mut page = virt & !0xfff;
        while page < virt.checked_add(len)? {
            let p = if page < virt { first } else { self.translate(page).ok()? };
            if p.wrapping_sub(first) != page.max(virt) - virt {
                return None;
            }
            page = page.checked_add(0x1000)?;
        }
        let bytes = self.space.mem().bytes_at(PhysAddr(first), len)?;
        self.bytes_read += len;
        self.lent += len;
        Some(bytes)
    }

    /// Reads several objects at once: one batch for a DMA source, where reading them in turn
    /// would cost a round trip each. Each result is that object's, as [`Memory::read`] would
    /// give it.
    pub fn read_together(&mut self, reads: &mut [(u64, &mut [u8])]) -> Vec<Result<(), MemError>> {
        self.bytes_read += reads.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        let mut virt: Vec<(VirtAddr, &mut [u8])> =
            reads.iter_mut().map(|(a, b)| (VirtAddr(*a), &mut **b)).collect();
        self.space.read_virt_many_in(self.cr3, &mut virt)
    }

    /// One 64-bit word at each of `addrs`, read together (see [`View::read_together`]).
    pub fn read_u64s(&mut self, addrs: &[u64]) -> Vec<Result<u64, MemError>> {
        let mut words = vec![[0u8; 8]; addrs.len()];
        let mut reads: Vec<(u64, &mut [u8])> =
            addrs.iter().zip(words.iter_mut()).map(|(a, w)| (*a, &mut w[..])).collect();
        let results = self.read_together(&mut reads);
        results.into_iter().zip(words).map(|(r, w)| r.map(|()| u64::from_le_bytes(w))).collect()
    }

    /// Runs `first` and `second` each with a view of its own (this one's root and what is left
    /// of its budget), their reads in lockstep (see [`AddressSpace::in_lockstep`]); what they
    /// read counts against this view's budget.
    pub fn in_lockstep<A, B>(
        &mut self,
        first: impl FnOnce(&mut View) -> A,
        second: impl FnOnce(&mut View) -> B + Send,
    ) -> (A, B)
    where
        B: Send,
    {
        let (cr3, left) = (
            self.cr3,
            Budget {
                tasks: self.budget.tasks.saturating_sub(self.tasks),
                bytes: self.budget.bytes.saturating_sub(self.bytes_read),
            },
        );
        let ((a, used_a), (b, used_b)) = self.space.in_lockstep(
            |space| {
                let mut v = View::with_budget(space, cr3, left);
                let a = first(&mut v);
                (a, (v.bytes_read, v.lent, v.tasks, v.spent))
            },
            |space| {
                let mut v = View::with_budget(space, cr3, left);
                let b = second(&mut v);
                (b, (v.bytes_read, v.lent, v.tasks, v.spent))
            },
        );
        for (bytes, lent, tasks, spent) in [used_a, used_b] {
            self.bytes_read += bytes;
            self.lent += lent;
            self.tasks += tasks;
            if self.spent.is_none() {
                self.spent = spent;
            }
        }
        (a, b)
    }

    /// The source's traffic so far ([`PhysMem::traffic`](crate::phys::PhysMem::traffic)).
    pub fn traffic(&self) -> Option<String> {
        self.space.mem().traffic()
    }

    /// Logs the source's traffic so far after `phase` of an operation (`RUST_LOG=debug`):
    /// where an operation's round trips go.
    pub fn log_traffic(&self, phase: &str) {
        if log::log_enabled!(log::Level::Debug)
            && let Some(traffic) = self.traffic()
        {
            log::debug!("{phase}: {traffic}");
        }
    }

    /// The root this view reads under.
    pub fn cr3(&self) -> u64 {
        self.cr3
    }

    /// Bytes lent in place rather than read through the address space.
    pub fn lent_bytes(&self) -> u64 {
        self.lent
    }

    /// Bytes this view asked for (page-table reads not included).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

impl Memory for View<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.bytes_read += buf.len() as u64;
        self.space.read_virt_in(self.cr3, VirtAddr(addr), buf)
    }
}

/// An operation's [`Budget`] is spent: what it read so far is all it shows, marked truncated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BudgetSpent(pub String);
