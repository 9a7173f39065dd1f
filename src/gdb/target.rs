//! The gdbstub target: gdb's packets turned into reads of the [`AddressSpace`].
//!
//! Errors follow gdbstub's split: a memory read that fails is a non-fatal error reply (gdb
//! prints "Cannot access memory at address …") and the session goes on; only a [`FatalError`]
//! ends it.

use super::arch::{DmaRegId, DmaRegs, X86_64System, reg_name, regnum};
use super::monitor::{self, Command, LinuxCommand};
use crate::addr::VirtAddr;
use crate::linux::Symbols;
use crate::linux::commands::Linux;
use crate::linux::threads::{self, ThreadList};
use crate::mmu::{AddressSpace, MemError, Mode};
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::single_register_access::{SingleRegisterAccess, SingleRegisterAccessOps};
use gdbstub::target::ext::breakpoints::{Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps, outputln};
use gdbstub::target::ext::section_offsets::{Offsets, SectionOffsets, SectionOffsetsOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use log::{debug, info, warn};
use std::collections::HashMap;

/// An error that ends the gdb session (the server keeps listening for the next one).
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("memory source failed: {0}")]
    Source(String),
}

/// What gdb is told when it tries to run the machine.
pub const CANNOT_RESUME: &str = "dmastub: this target's CPUs cannot be continued or stepped: dmastub only reads \
     the machine's memory (the machine itself may still be running). Stopped again at once.\n";

/// The machine as gdb sees it: its memory through an address space, and the few registers
/// dmastub knows.
pub struct DmaTarget {
    space: AddressSpace,
    /// The kernel found in memory, when there is one.
    linux: Option<Linux>,
    allow_write: bool,
    cr3_origin: String,
    resume_requested: bool,
    /// Every task as a thread, read once per stop (see [`DmaTarget::on_stop`]).
    threads: Option<ThreadList>,
    /// The thread whose registers or memory gdb last read, in whose context memory packets are
    /// read: selecting another one (`Hg`, gdb's `thread N`) switches to its process's page
    /// tables.
    context_tid: Option<Tid>,
    /// Whether the user chose the active CR3 (`--cr3`, `monitor switch`, `set-cr3`, `set $cr3`):
    /// gdb's first thread selection of a session then leaves it in place.
    cr3_pinned: bool,
    /// Whether the active CR3 is a task's own (its thread selected, or `monitor switch PID`):
    /// kernel addresses are then read through the kernel's tables, which map the kernel half
    /// the same in every process, so that a change of process costs no page-table reads.
    task_context: bool,
    /// Kernel text (`_stext`..`_etext`), and its pages read this stop: gdb reads the byte at
    /// each thread's pc twice when it lists threads, and most threads sleep at the same pc.
    text: Option<(u64, u64)>,
    text_pages: HashMap<u64, Box<[u8]>>,
}

/// What a Linux command answers without a kernel.
const NO_LINUX: &str =
    "no Linux kernel was found in this memory (see the server's log); this command needs one";

/// Most kernel-text pages kept in one stop (4 MiB).
const MAX_TEXT_PAGES: usize = 1024;

/// The only thread of a target without a kernel (or whose task list cannot be read).
const MACHINE_TID: Tid = match Tid::new(1) {
    Some(t) => t,
    None => unreachable!(),
};

impl DmaTarget {
    /// A target over `space`. Memory writes are refused unless `allow_write`. `cr3_origin`
    /// says where the CR3 already set in `space` came from (`monitor cr3` shows it).
    pub fn new(space: AddressSpace, allow_write: bool, cr3_origin: &str) -> Self {
        let space_has_cr3 = space.cr3().is_some();
        Self {
            space,
            linux: None,
            allow_write,
            cr3_origin: cr3_origin.to_string(),
            resume_requested: false,
            threads: None,
            context_tid: None,
            cr3_pinned: space_has_cr3,
            task_context: false,
            text: None,
            text_pages: HashMap::new(),
        }
    }

    /// Makes the target Linux-aware: the `ps`/`switch`/`kernel`/`dmesg` commands, `qOffsets`
    /// with the KASLR slide, and the kernel's CR3 as the active one (virtual mode).
    pub fn with_linux(mut self, linux: Linux) -> Self {
        let origin = match linux.kernel.cr3.source.as_str() {
            "--cr3" => "--cr3".to_string(),
            found => format!("the kernel's page tables, from {found}"),
        };
        self.activate(linux.kernel.cr3.value, &origin);
        self.cr3_pinned = origin == "--cr3";
        let sym = |n: &str| linux.kernel.symbols.address(n);
        self.text = match (sym("_stext").or(sym("_text")), sym("_etext")) {
            (Some(lo), Some(hi)) if lo < hi && hi - lo < 1 << 30 => Some((lo, hi)),
            _ => None,
        };
        self.linux = Some(linux);
        self
    }

    pub fn linux(&self) -> Option<&Linux> {
        self.linux.as_ref()
    }

    /// Makes `cr3` the active page-table root; `origin` says who set it (`monitor cr3` shows it).
    pub fn set_cr3(&mut self, cr3: u64, origin: &str) {
        self.space.set_cr3(cr3);
        self.cr3_origin = origin.to_string();
        self.cr3_pinned = true;
        self.task_context = false;
    }

    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    pub fn space_mut(&mut self) -> &mut AddressSpace {
        &mut self.space
    }

    pub fn allow_write(&self) -> bool {
        self.allow_write
    }

    /// Called when gdb connects and at every stop: nothing read from a live source before it
    /// may be used after it.
    pub fn on_stop(&mut self) {
        self.text_pages.clear();
        if self.space.mem().is_volatile() {
            self.space.flush();
            // Tasks come and go on a running machine: the next stop reads them again.
            self.threads = None;
        }
    }

    /// The tasks as threads, read now if this stop has not read them yet. Empty without a
    /// kernel or a task list (the target is then one thread).
    pub fn threads(&mut self) -> &ThreadList {
        if self.threads.is_none() {
            let list = match &self.linux {
                Some(linux) => linux.threads(&mut self.space).unwrap_or_else(|e| {
                    warn!("no tasks as threads: {e}");
                    ThreadList::default()
                }),
                None => ThreadList::default(),
            };
            for p in &list.problems {
                info!("threads: {p}");
            }
            debug!("{} tasks as threads", list.threads.len());
            self.threads = Some(list);
        }
        self.threads.get_or_insert_with(ThreadList::default)
    }

    /// A new gdb session: its first thread selection is not a change of thread.
    pub fn on_connect(&mut self) {
        self.context_tid = None;
        self.on_stop();
    }

    /// The thread a stop is reported in: the one whose context memory is read in, so that gdb
    /// stays on it.
    pub fn stop_thread(&mut self) -> Tid {
        if let Some(tid) = self.context_tid {
            return tid;
        }
        let first = self.threads().threads.first().map(|t| t.tid);
        first.and_then(|t| usize::try_from(t).ok()).and_then(Tid::new).unwrap_or(MACHINE_TID)
    }

    /// Memory packets for thread `tid` read its process's memory: a newly selected thread (gdb
    /// reads its registers or memory) makes its page tables the active ones, and is the thread
    /// `monitor bt` means; until gdb selects another thread, `monitor switch` and `set $cr3`
    /// still decide. A CR3 the user chose before the session's first selection stays.
    fn follow_thread(&mut self, tid: Tid) {
        if self.context_tid == Some(tid) {
            return;
        }
        let first = self.context_tid.is_none();
        self.context_tid = Some(tid);
        if first && self.cr3_pinned {
            return;
        }
        let Some(t) = self.threads().get(tid.get() as u64) else { return };
        let (cr3, origin) = (t.cr3, format!("thread {} (pid {} {})", t.tid, t.task.pid, t.task.comm));
        if self.space.cr3() != Some(cr3) || self.space.mode() != Mode::Virt {
            debug!("memory now read as {origin}, CR3 {cr3:#x}");
        }
        self.activate(cr3, &origin);
        self.cr3_pinned = false;
        self.task_context = true;
    }

    /// Reads memory as gdb asked, through the active mode and CR3; see `task_context` and
    /// `text_pages` for the two shortcuts.
    fn read_memory(&mut self, start: u64, data: &mut [u8]) -> Result<usize, MemError> {
        let kernel_cr3 = self.linux.as_ref().map(|l| l.kernel.cr3.value);
        if self.space.mode() == Mode::Virt
            && let Some(kernel_cr3) = kernel_cr3
        {
            if let Some(n) = self.read_text(kernel_cr3, start, data) {
                return Ok(n);
            }
            if self.task_context && start >> 63 == 1 {
                return self.space.read_in(kernel_cr3, start, data);
            }
        }
        self.space.read(start, data)
    }

    /// `data` from kernel text, when all of it lies there and its pages can be read whole.
    fn read_text(&mut self, kernel_cr3: u64, start: u64, data: &mut [u8]) -> Option<usize> {
        let (lo, hi) = self.text?;
        let end = start.checked_add(data.len() as u64)?;
        if start < lo || end > hi || data.is_empty() {
            return None;
        }
        let mut at = start;
        while at < end {
            let page = at & !0xfff;
            if !self.text_pages.contains_key(&page) {
                let mut bytes = vec![0u8; 0x1000].into_boxed_slice();
                self.space.read_virt_in(kernel_cr3, VirtAddr(page), &mut bytes).ok()?;
                if self.text_pages.len() >= MAX_TEXT_PAGES {
                    self.text_pages.clear();
                }
                self.text_pages.insert(page, bytes);
            }
            let bytes = self.text_pages.get(&page)?;
            let n = (end.min(page + 0x1000) - at) as usize;
            let from = (at - page) as usize;
            data[(at - start) as usize..][..n].copy_from_slice(&bytes[from..from + n]);
            at += n as u64;
        }
        Some(data.len())
    }

    /// Whether gdb asked to resume since the last stop (consumed by the event loop).
    pub fn take_resume_request(&mut self) -> bool {
        std::mem::take(&mut self.resume_requested)
    }

    /// Thread `tid`'s registers: a task's as [`threads`] found them, with the page-table root
    /// its memory is read through as CR3 (gdb reads them after selecting the thread, which
    /// made it the context: the active CR3). Without tasks the one thread knows only the
    /// active CR3, and a rip of 0:
    /// gdb refuses to attach to a target whose PC is unavailable, and 0 is plainly no real
    /// instruction.
    fn registers(&mut self, tid: Tid) -> DmaRegs {
        let mut regs = DmaRegs::unknown();
        let active = self.space.cr3();
        let list = self.threads();
        let first = list.threads.first().map(|t| t.tid);
        match list.get(tid.get() as u64) {
            Some(t) => {
                regs.values[..threads::REG_COUNT].copy_from_slice(&t.regs.0);
                // gdb cannot attach when the first thread has no pc, and threads are ordered so
                // that it has one whenever any thread has: otherwise it reads 0, as without tasks.
                if first == Some(t.tid) && t.regs.pc().is_none() {
                    regs.values[regnum::RIP] = Some(0);
                }
            }
            None => regs.values[regnum::RIP] = Some(0),
        }
        regs.values[regnum::CR3] = active;
        regs
    }

    /// Runs one parsed monitor command and returns what to print.
    pub fn run_command(&mut self, cmd: Command) -> String {
        match cmd {
            Command::Help => monitor::help_text(),
            Command::Phys => {
                // Setting phys mode cannot fail.
                let _ = self.space.set_mode(Mode::Phys);
                "memory packets now address physical memory\n".to_string()
            }
            Command::Virt => match self.space.set_mode(Mode::Virt) {
                Ok(()) => format!(
                    "memory packets now address virtual memory through CR3 {:#x}\n",
                    self.space.cr3().unwrap_or_default()
                ),
                Err(_) => "no CR3 is known: give one with 'monitor set-cr3 ADDR' (or start with --cr3)\n"
                    .to_string(),
            },
            Command::SetCr3(cr3) => {
                self.set_cr3(cr3, "monitor set-cr3");
                let mut s = format!("active CR3 = {cr3:#x}");
                if self.space.mode() == Mode::Phys {
                    s.push_str(" (memory packets still address physical memory: 'monitor virt' to use it)");
                }
                // gdb caches registers until the next stop; it cannot be told from here.
                s.push_str("\n(gdb's $cr3 shows it after 'maint flush register-cache'; 'set $cr3 = ADDR' does both)\n");
                s
            }
            Command::Cr3 => self.describe_cr3(),
            Command::Flush => {
                self.space.flush();
                "dropped cached page-table pages and translations\n".to_string()
            }
            Command::Vtop(virt) => {
                if self.space.cr3().is_none() {
                    return "no CR3 is known: give one with 'monitor set-cr3 ADDR' (or start with --cr3)\n"
                        .to_string();
                }
                format!("{}\n", self.space.vtop(VirtAddr(virt)))
            }
            Command::QemuInfo(what) => {
                info!(
                    "monitor info {what}: that is QEMU's monitor, not dmastub's; answered with nothing, so that \
                     Linux's gdb scripts do not take dmastub for QEMU ('monitor help' lists dmastub's commands)"
                );
                String::new()
            }
            Command::Linux(cmd) => match self.run_linux_command(cmd) {
                Ok(s) => s,
                Err(e) => format!("{e}\n"),
            },
            Command::Stats { reset } => {
                let mut s = format!("{}\n", self.space.stats());
                if let Some(t) = self.space.mem().traffic() {
                    s.push_str(&t);
                    s.push('\n');
                }
                if reset {
                    self.space.reset_stats();
                    self.space.mem_mut().reset_traffic();
                }
                s
            }
        }
    }

    fn run_linux_command(&mut self, cmd: LinuxCommand) -> Result<String, String> {
        let Some(linux) = &self.linux else {
            return Err(NO_LINUX.to_string());
        };
        match cmd {
            LinuxCommand::Ps { threads } => linux.ps(&mut self.space, threads),
            LinuxCommand::Threads => Ok(threads::render(self.threads())),
            LinuxCommand::Kernel => Ok(linux.kernel.report()),
            LinuxCommand::Dmesg(n) => linux.dmesg(&mut self.space, n.map(|n| n as usize)),
            LinuxCommand::Switch(None) => {
                let cr3 = linux.kernel.cr3.value;
                self.activate(cr3, "monitor switch kernel");
                Ok(format!("active CR3 = {cr3:#x} (the kernel's page tables)\n"))
            }
            LinuxCommand::Bt(pid) => self.backtrace(pid),
            LinuxCommand::Switch(Some(pid)) => {
                let pid = i32::try_from(pid).map_err(|_| format!("{pid} is not a PID"))?;
                let sw = linux.task_cr3(&mut self.space, pid)?;
                self.activate(sw.cr3, &format!("monitor switch {} ({})", sw.pid, sw.comm));
                self.task_context = true;
                let tid = threads::thread_id(sw.pid, None);
                Ok(format!(
                    "active CR3 = {:#x}: the address space of pid {} ({}); kernel addresses still map\n\
                     (its gdb thread, Thread {tid} in 'info threads', reads the same; until gdb selects another thread)\n",
                    sw.cr3, sw.pid, sw.comm
                ))
            }
        }
    }

    /// `monitor bt [PID]`: the backtrace of task PID, or of the thread gdb has selected.
    fn backtrace(&mut self, pid: Option<u64>) -> Result<String, String> {
        let selected = self.stop_thread();
        self.threads();
        let (Some(linux), Some(list)) = (&self.linux, &self.threads) else {
            return Err(NO_LINUX.to_string());
        };
        let thread = match pid {
            Some(pid) => list.by_pid(pid)?,
            None => list
                .get(selected.get() as u64)
                .ok_or("gdb's selected thread is not a task (no task list was read): give a PID")?,
        };
        Ok(linux.backtrace(&mut self.space, thread))
    }

    /// Makes `cr3` the active root and memory packets virtual.
    fn activate(&mut self, cr3: u64, origin: &str) {
        self.set_cr3(cr3, origin);
        // Cannot fail: a CR3 is set.
        let _ = self.space.set_mode(Mode::Virt);
    }

    fn describe_cr3(&self) -> String {
        let mode = match self.space.mode() {
            Mode::Phys => "phys",
            Mode::Virt => "virt",
        };
        match self.space.cr3() {
            Some(cr3) => format!(
                "CR3 {cr3:#x} ({}), {}-level paging, memory packets in {mode} mode\n",
                self.cr3_origin,
                self.space.paging().levels()
            ),
            None => format!(
                "no CR3 is known: give one with 'monitor set-cr3 ADDR' (or start with --cr3); memory packets in {mode} mode\n"
            ),
        }
    }
}

impl Target for DmaTarget {
    type Arch = X86_64System;
    type Error = FatalError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_section_offsets(&mut self) -> Option<SectionOffsetsOps<'_, Self>> {
        // Without a kernel gdb keeps the file's own addresses.
        if self.linux.is_some() { Some(self) } else { None }
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // gdb would fall back to writing int3 into memory; breakpoints are refused explicitly
    // (see `SwBreakpoint` below), so this acknowledges the guard rail without using it.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for DmaTarget {
    fn read_registers(&mut self, regs: &mut DmaRegs, tid: Tid) -> TargetResult<(), Self> {
        self.follow_thread(tid);
        *regs = self.registers(tid);
        Ok(())
    }

    fn write_registers(&mut self, regs: &DmaRegs, _tid: Tid) -> TargetResult<(), Self> {
        // gdb sends the whole set (`G`) only when it cannot write one register: honour a new
        // CR3 and nothing else.
        match regs.values[regnum::CR3] {
            Some(cr3) if Some(cr3) != self.space.cr3() => {
                self.set_cr3(cr3, "set $cr3");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        self.follow_thread(tid);
        match self.read_memory(start, data) {
            Ok(n) => Ok(n),
            Err(e) => {
                debug!("read {start:#x} (+{:#x}): {e}", data.len());
                Err(TargetError::NonFatal)
            }
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        self.follow_thread(tid);
        self.text_pages.clear();
        if !self.allow_write {
            warn!(
                "refused a write of {} bytes at {start:#x}: the server is read-only (start it with --allow-write)",
                data.len()
            );
            return Err(TargetError::NonFatal);
        }
        self.space.write(start, data).map_err(|e| {
            warn!("write {start:#x} (+{:#x}): {e}", data.len());
            TargetError::NonFatal
        })
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), FatalError> {
        let list = self.threads();
        if list.threads.is_empty() {
            thread_is_active(MACHINE_TID);
        }
        for t in &list.threads {
            if let Some(tid) = usize::try_from(t.tid).ok().and_then(Tid::new) {
                thread_is_active(tid);
            }
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl ThreadExtraInfo for DmaTarget {
    /// `info threads` shows this after the thread id: `pid 121 crasher R [cpu0, panicking]`.
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, FatalError> {
        let text = match self.threads.as_ref().and_then(|l| l.get(tid.get() as u64)) {
            Some(t) => t.describe(),
            None if self.linux.is_some() => "no task list".to_string(),
            None => "the machine".to_string(),
        };
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(n)
    }
}

impl SingleRegisterAccess<Tid> for DmaTarget {
    fn read_register(&mut self, tid: Tid, reg: DmaRegId, buf: &mut [u8]) -> TargetResult<usize, Self> {
        self.follow_thread(tid);
        match self.registers(tid).values.get(reg.0).copied().flatten() {
            Some(v) => {
                let n = buf.len().min(8);
                buf[..n].copy_from_slice(&v.to_le_bytes()[..n]);
                Ok(n)
            }
            // Zero bytes: gdbstub answers "unavailable".
            None => Ok(0),
        }
    }

    fn write_register(&mut self, _tid: Tid, reg: DmaRegId, val: &[u8]) -> TargetResult<(), Self> {
        if reg.0 != regnum::CR3 {
            warn!(
                "refused a write of register {}: only cr3 (the page-table root dmastub walks) can be set",
                reg_name(reg.0)
            );
            return Err(TargetError::NonFatal);
        }
        let mut le = [0u8; 8];
        let n = val.len().min(8);
        le[..n].copy_from_slice(&val[..n]);
        let cr3 = u64::from_le_bytes(le);
        info!("set $cr3 = {cr3:#x}");
        self.set_cr3(cr3, "set $cr3");
        Ok(())
    }
}

impl MultiThreadResume for DmaTarget {
    fn resume(&mut self) -> Result<(), FatalError> {
        self.resume_requested = true;
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), FatalError> {
        Ok(())
    }

    fn set_resume_action_continue(&mut self, _tid: Tid, _signal: Option<Signal>) -> Result<(), FatalError> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

/// gdb's `set scheduler-locking on` resumes one thread only. Without this, gdbstub ended the
/// session at the first `stepi` or `continue` (found by the protocol fuzz target). Nothing runs
/// either way: the resume is answered like any other.
impl MultiThreadSchedulerLocking for DmaTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), FatalError> {
        Ok(())
    }
}

impl MultiThreadSingleStep for DmaTarget {
    fn set_resume_action_step(&mut self, _tid: Tid, _signal: Option<Signal>) -> Result<(), FatalError> {
        Ok(())
    }
}

impl Breakpoints for DmaTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for DmaTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        warn!("refused a breakpoint at {addr:#x}: dmastub cannot run the target's CPUs");
        Ok(false)
    }

    fn remove_sw_breakpoint(&mut self, _addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(false)
    }
}

impl SectionOffsets for DmaTarget {
    /// vmlinux's first segment (text and rodata) and second (data) moved by the slide. gdb 13
    /// relocates by segments when given `TextSeg`/`DataSeg`, so rodata lands right too; it
    /// applies the data offset to every later segment, the per-CPU one included, which KASLR does
    /// not move — `monitor kernel` prints the command that gets that one right as well.
    fn get_section_offsets(&mut self) -> Result<Offsets<u64>, FatalError> {
        let Some(linux) = &self.linux else { return Ok(Offsets::Sections { text: 0, data: 0, bss: None }) };
        let (text, data) = linux.kernel.segment_bases();
        Ok(Offsets::Segments { text_seg: text, data_seg: Some(data) })
    }
}

impl MonitorCmd for DmaTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), FatalError> {
        // Every monitor command starts a new burst: nothing cached from a live source survives it.
        self.on_stop();
        let text = match std::str::from_utf8(cmd) {
            Ok(line) => match monitor::parse(line) {
                Ok(c) => self.run_command(c),
                Err(e) => format!("{e}\n"),
            },
            Err(_) => "the command is not UTF-8 text; 'monitor help' lists the commands\n".to_string(),
        };
        for line in text.lines() {
            outputln!(out, "{line}");
        }
        Ok(())
    }
}
