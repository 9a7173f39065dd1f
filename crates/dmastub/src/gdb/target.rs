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
use crate::linux::{Hint, Origin, render};
use crate::mmu::{AddressSpace, MemError, Mode};
use gdbstub::common::Pid;
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::single_register_access::{SingleRegisterAccess, SingleRegisterAccessOps};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::extended_mode::{
    Args, AttachKind, CurrentActivePid, CurrentActivePidOps, ExtendedMode, ExtendedModeOps, ShouldTerminate,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps, outputln};
use gdbstub::target::ext::section_offsets::{Offsets, SectionOffsets, SectionOffsetsOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use log::{debug, info, warn};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An error that ends the gdb session (the server keeps listening for the next one).
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("memory source failed: {0}")]
    Source(String),
}

/// What gdb is told when it tries to run the machine.
pub const CANNOT_RESUME: &str = "dmastub: memory only: this target's CPUs cannot be continued or stepped: \
     dmastub reads the machine's memory from outside its CPUs (the machine itself may still be running). \
     Stopped again at once.\n";

/// Which client is attached: lldb reads some answers differently from gdb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Client {
    #[default]
    Gdb,
    Lldb,
}

/// The session state a new client starts from: what the server was started with.
#[derive(Clone, Debug)]
struct InitialState {
    mode: Mode,
    cr3: Option<u64>,
    cr3_origin: String,
    cr3_pinned: bool,
    task_context: bool,
}

/// A breakpoint or watchpoint gdb asked for: accepted, never hit (the CPUs are not ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopper {
    Breakpoint(u64),
    Watchpoint(u64, u64),
}

impl std::fmt::Display for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopper::Breakpoint(a) => write!(f, "breakpoint at {a:#x}"),
            Stopper::Watchpoint(a, n) => write!(f, "watchpoint at {a:#x} ({n} bytes)"),
        }
    }
}

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
    /// Kept only as long as the address space keeps its page tables: for a live source, one
    /// burst of requests (see [`AddressSpace::cache_generation`]).
    text_pages: HashMap<u64, Box<[u8]>>,
    text_generation: u64,
    /// The state every session starts from, taken when the first client connects.
    initial: Option<InitialState>,
    client: Client,
    /// Whether gdb uses `target extended-remote` (it sent `!`).
    extended: bool,
    /// The task `attach PID` chose in extended mode: gdb's process id.
    attached_pid: Option<u64>,
    /// Breakpoints and watchpoints gdb inserted: never hit, and said so at every resume.
    stoppers: Vec<Stopper>,
    /// The thread a resume request named, and the thread the last stop was reported in: a
    /// resume stops again in the thread the user was on, whatever threads the client read
    /// since (lldb reads every thread's registers at a stop).
    resume_tid: Option<Tid>,
    last_stop_tid: Option<Tid>,
    /// Whether lldb's first `p` (its probe of `p` support) was answered.
    lldb_probed_p: bool,
}

/// What a Linux command answers without a kernel.
const NO_LINUX: &str =
    "no Linux kernel was found in this memory (see the server's log); this command needs one";

/// A memory reply is sent with what was read once this much time has passed: well within gdb's
/// default remote timeout of 2 s.
const REPLY_BUDGET: Duration = Duration::from_millis(1000);

/// Memory is read in pieces of this many bytes, so that a slow read can stop between them.
const READ_PIECE: usize = 16 * 1024;

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
            text_generation: 0,
            initial: None,
            client: Client::Gdb,
            extended: false,
            attached_pid: None,
            stoppers: Vec::new(),
            resume_tid: None,
            last_stop_tid: None,
            lldb_probed_p: false,
        }
    }

    /// Makes the target Linux-aware: the `ps`/`switch`/`kernel`/`dmesg` commands, `qOffsets`
    /// with the KASLR slide, and the kernel's CR3 as the active one (virtual mode).
    pub fn with_linux(mut self, linux: Linux) -> Self {
        let pinned = linux.kernel.cr3.origin == Origin::Hint(Hint::Cr3);
        let origin = match pinned {
            true => linux.hint_names()(Hint::Cr3).to_string(),
            false => format!(
                "the kernel's page tables, from {}",
                linux.kernel.cr3.origin.render(linux.hint_names())
            ),
        };
        self.activate(linux.kernel.cr3.value, &origin);
        self.cr3_pinned = pinned;
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

    /// A new client session. It starts from the server's initial state, whatever the previous
    /// session changed (mode, active CR3, selected thread, breakpoints); its first thread
    /// selection is not a change of thread.
    pub fn on_connect(&mut self) {
        match &self.initial {
            None => {
                self.initial = Some(InitialState {
                    mode: self.space.mode(),
                    cr3: self.space.cr3(),
                    cr3_origin: self.cr3_origin.clone(),
                    cr3_pinned: self.cr3_pinned,
                    task_context: self.task_context,
                })
            }
            Some(init) => {
                let init = init.clone();
                match init.cr3 {
                    Some(cr3) => self.space.set_cr3(cr3),
                    None => self.space.clear_cr3(),
                }
                // Cannot fail: virtual mode was in force with this CR3 before.
                let _ = self.space.set_mode(init.mode);
                self.cr3_origin = init.cr3_origin;
                self.cr3_pinned = init.cr3_pinned;
                self.task_context = init.task_context;
            }
        }
        self.context_tid = None;
        self.resume_requested = false;
        self.client = Client::Gdb;
        self.extended = false;
        self.attached_pid = None;
        self.stoppers.clear();
        self.resume_tid = None;
        self.last_stop_tid = None;
        self.lldb_probed_p = false;
        self.on_stop();
    }

    pub fn set_client(&mut self, client: Client) {
        if client != self.client {
            debug!("the client is {client:?}");
        }
        self.client = client;
    }

    pub fn client(&self) -> Client {
        self.client
    }

    /// Whether the client uses gdb's extended-remote mode.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// `detach` in extended mode: the client stays connected with no process attached.
    pub fn on_detach(&mut self) {
        info!("the client detached; the session goes on (extended-remote)");
        self.attached_pid = None;
        self.stoppers.clear();
    }

    /// The one offset that moves every vmlinux section to where the running kernel has it
    /// (the KASLR slide), for clients that apply only a uniform `qOffsets` (lldb).
    pub fn uniform_offset(&self) -> Option<u64> {
        self.linux.as_ref().map(|l| l.kernel.slide.value)
    }

    /// What a client is told when it asks to run the machine: that it cannot, and what became
    /// of its breakpoints and watchpoints.
    pub fn resume_message(&self) -> String {
        let mut s = CANNOT_RESUME.to_string();
        if !self.stoppers.is_empty() {
            let list: Vec<String> = self.stoppers.iter().map(Stopper::to_string).collect();
            s.push_str(&format!(
                "dmastub: cannot insert breakpoints or watchpoints into a machine it only reads: {} never \
                 triggers (delete them with 'delete')\n",
                list.join(", ")
            ));
        }
        s
    }

    /// The signal a resume request stops with at once. gdb: 0, which ends any step or `next`
    /// (gdb would step again on a trap that left the pc where it was). lldb steps again on 0
    /// and on a trap alike, so it gets SIGSTOP, which it reports and stops on.
    pub fn resume_stop_signal(&self) -> Signal {
        match self.client {
            Client::Gdb => Signal(0),
            Client::Lldb => Signal::SIGSTOP,
        }
    }

    /// gdb's `info os` documents (`qXfer:osdata:read`): the list of types, and `processes`
    /// from the task list. `None` for a type dmastub does not have.
    pub fn osdata(&mut self, annex: &[u8]) -> Option<String> {
        match annex {
            b"" => Some(super::osdata::types()),
            b"processes" => {
                let linux = self.linux.is_some();
                Some(super::osdata::processes(self.threads(), linux))
            }
            _ => None,
        }
    }

    /// The thread a stop is reported in: the one whose context memory is read in, so that gdb
    /// stays on it.
    pub fn stop_thread(&mut self) -> Tid {
        match self.context_tid {
            Some(tid) => tid,
            None => self.first_thread(),
        }
    }

    /// The first thread, which gdbstub reports the first stop in (`?`).
    fn first_thread(&mut self) -> Tid {
        let first = self.threads().threads.first().map(|t| t.tid);
        first.and_then(|t| usize::try_from(t).ok()).and_then(Tid::new).unwrap_or(MACHINE_TID)
    }

    /// The thread of the last stop reported after a resume (at first, the first thread): what
    /// a resume request without a thread applies to, and lldb's memory context.
    pub fn last_stop_thread(&mut self) -> Tid {
        match self.last_stop_tid {
            Some(t) => t,
            None => self.first_thread(),
        }
    }

    /// The thread the stop after a resume request is reported in: the one the request named,
    /// else the one the previous stop was reported in (at first, the first thread); one that
    /// is still a thread after the task list was read again.
    pub fn resume_stop_thread(&mut self) -> Tid {
        let wanted = self.resume_tid.take().or(self.last_stop_tid);
        let tid = match wanted {
            Some(t) if self.threads().get(t.get() as u64).is_some() => t,
            _ => self.first_thread(),
        };
        self.last_stop_tid = Some(tid);
        tid
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

    /// A register read of thread `tid` selects it for gdb, which reads registers when the user
    /// selects a thread. lldb reads every thread's registers at every stop and never says which
    /// thread the user selects: its memory context is the thread of the last stop instead (see
    /// [`Self::memory_thread`]).
    fn follow_registers(&mut self, tid: Tid) {
        if self.client != Client::Lldb {
            self.follow_thread(tid);
        }
    }

    /// The thread whose address space a memory packet for `tid` reads: `tid` for gdb; for lldb,
    /// whose `Hg` only picks registers, the thread of the last stop (a step or continue of the
    /// selected thread stops in it).
    fn memory_thread(&mut self, tid: Tid) -> Tid {
        match self.client {
            Client::Gdb => tid,
            Client::Lldb => self.last_stop_thread(),
        }
    }

    /// The thread gdb's `qC` should name: the attached task's after `attach PID`.
    pub fn attached_thread(&mut self) -> Option<(u64, u64)> {
        let pid = self.attached_pid?;
        let tid = self.threads().by_pid(pid).ok()?.tid;
        Some((pid, tid))
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
        // Kernel text follows the page tables' freshness rules: on a live source it is kept
        // for one burst of requests only (it changes: alternatives, static keys, kprobes).
        let generation = self.space.cache_generation();
        if generation != self.text_generation {
            self.text_pages.clear();
            self.text_generation = generation;
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
                for (r, v) in t.regs.iter() {
                    regs.values[regnum::of(r)] = v;
                }
                // gdb cannot attach when the first thread has no pc, and threads are ordered so
                // that it has one whenever any thread has: otherwise it reads 0, as without tasks.
                if first == Some(t.tid) && t.regs.pc().is_none() {
                    regs.values[regnum::RIP] = Some(0);
                }
            }
            None => regs.values[regnum::RIP] = Some(0),
        }
        // The root memory packets are read through: for gdb the active one (its thread is
        // selected by this read); lldb selects no thread by reading it, so it gets the thread's.
        let own = self.threads.as_ref().and_then(|l| l.get(tid.get() as u64)).map(|t| t.cr3);
        regs.values[regnum::CR3] = match self.client {
            Client::Lldb => own.or(active),
            Client::Gdb => active,
        };
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
            LinuxCommand::Ps { threads } => match linux.tasks(&mut self.space, threads) {
                Ok(list) => Ok(render::ps(&list)),
                Err(e) => Err(linux.explain(&e)),
            },
            LinuxCommand::Threads => Ok(render::threads(self.threads())),
            LinuxCommand::Kernel => Ok(render::kernel_report(&linux.kernel, linux.hint_names())),
            LinuxCommand::Dmesg(n) => match linux.log(&mut self.space) {
                Ok(log) => Ok(render::dmesg(&log, n.map(|n| n as usize))),
                Err(e) => Err(linux.explain(&e)),
            },
            LinuxCommand::Switch(None) => {
                let cr3 = linux.kernel.cr3.value;
                self.activate(cr3, "monitor switch kernel");
                Ok(format!("active CR3 = {cr3:#x} (the kernel's page tables)\n"))
            }
            LinuxCommand::Bt(pid) => self.backtrace(pid),
            LinuxCommand::Switch(Some(pid)) => {
                let pid = i32::try_from(pid).map_err(|_| format!("{pid} is not a PID"))?;
                let sw = linux.task_cr3(&mut self.space, pid).map_err(|e| linux.explain(&e))?;
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
            Some(pid) => list.by_pid(pid).map_err(|e| linux.explain(&e))?,
            None => list
                .get(selected.get() as u64)
                .ok_or("gdb's selected thread is not a task (no task list was read): give a PID")?,
        };
        Ok(render::backtrace(thread, linux.backtrace(&mut self.space, thread)))
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

    fn support_extended_mode(&mut self) -> Option<ExtendedModeOps<'_, Self>> {
        Some(self)
    }

    // gdb would fall back to writing int3 into memory; breakpoints are accepted and never
    // inserted (see `SwBreakpoint` below), so this acknowledges the guard rail without using it.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for DmaTarget {
    fn read_registers(&mut self, regs: &mut DmaRegs, tid: Tid) -> TargetResult<(), Self> {
        self.follow_registers(tid);
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
        let tid = self.memory_thread(tid);
        self.follow_thread(tid);
        // Read in pieces, and answer with what is read once the reply budget is spent: gdb gives
        // up on a reply after its remote timeout (2 s by default), and a short reply is allowed
        // (the client asks for the rest). Only a slow or lossy DMA link ever gets here.
        let began = Instant::now();
        let mut done = 0usize;
        while done < data.len() {
            let at = start.wrapping_add(done as u64);
            let end = (done + READ_PIECE).min(data.len());
            let piece = &mut data[done..end];
            let wanted = piece.len();
            match self.read_memory(at, piece) {
                Ok(n) => {
                    done += n;
                    if n < wanted {
                        break;
                    }
                }
                Err(e) if done == 0 => {
                    debug!("read {start:#x} (+{:#x}): {e}", data.len());
                    return Err(TargetError::NonFatal);
                }
                Err(e) => {
                    debug!("read {at:#x}: {e}; answered with the {done:#x} bytes before it");
                    break;
                }
            }
            if done < data.len() && began.elapsed() >= REPLY_BUDGET {
                info!(
                    "read {start:#x} (+{:#x}): answered with the first {done:#x} bytes after {:?} (gdb's reply \
                     timeout); the client asks for the rest",
                    data.len(),
                    began.elapsed()
                );
                break;
            }
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let tid = self.memory_thread(tid);
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
        // After `attach PID` that task's thread comes first: gdbstub reports the attach's stop
        // in the first thread, and gdb then reads memory in its context.
        let attached = self.attached_pid;
        let list = self.threads();
        if list.threads.is_empty() {
            thread_is_active(MACHINE_TID);
        }
        let first = attached.and_then(|pid| list.by_pid(pid).ok()).map(|t| t.tid);
        let order = first.into_iter().chain(list.threads.iter().map(|t| t.tid).filter(|&t| Some(t) != first));
        for tid in order {
            if let Some(tid) = usize::try_from(tid).ok().and_then(Tid::new) {
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
        self.follow_registers(tid);
        match self.registers(tid).values.get(reg.0).copied().flatten() {
            Some(v) => {
                self.lldb_probed_p = true;
                let n = buf.len().min(8);
                buf[..n].copy_from_slice(&v.to_le_bytes()[..n]);
                Ok(n)
            }
            // lldb reads gdb's "unavailable" (`xx…`) as the bytes 0xcc, and shows a register
            // whose read fails as unavailable. But its first `p` is a probe of whether `p` works
            // at all (an error makes it read every register with `g`, all 0xcc): that one gets
            // "unavailable". gdb always gets "unavailable" (zero bytes).
            None if self.client == Client::Lldb && self.lldb_probed_p => Err(TargetError::NonFatal),
            None if self.client == Client::Lldb => {
                self.lldb_probed_p = true;
                Ok(0)
            }
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
        self.resume_tid = None;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), FatalError> {
        self.resume_tid.get_or_insert(tid);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for DmaTarget {
    /// `set scheduler-locking on`, or a plain `c`/`s` (which gdbstub applies to one thread):
    /// nothing runs either way.
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), FatalError> {
        Ok(())
    }
}

impl MultiThreadSingleStep for DmaTarget {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), FatalError> {
        // The stepped thread is the one the user is looking at.
        self.resume_tid = Some(tid);
        Ok(())
    }
}

impl Breakpoints for DmaTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

// Breakpoints and watchpoints are accepted and never hit: the machine's CPUs are not
// dmastub's to stop. Refusing them would make gdb write int3 into memory instead (refused too,
// as "Cannot access memory") and then refuse every later `continue`; accepted, gdb resumes and
// the resume's console message says that they cannot trigger (see `resume_message`). Nothing
// is written to the machine.
impl DmaTarget {
    fn add_stopper(&mut self, stopper: Stopper) -> TargetResult<bool, Self> {
        warn!("{stopper} requested: accepted but never hit (dmastub cannot run or stop the machine's CPUs)");
        if !self.stoppers.contains(&stopper) && self.stoppers.len() < 256 {
            self.stoppers.push(stopper);
        }
        Ok(true)
    }

    fn remove_stopper(&mut self, stopper: Stopper) -> TargetResult<bool, Self> {
        self.stoppers.retain(|s| *s != stopper);
        Ok(true)
    }
}

impl SwBreakpoint for DmaTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_stopper(Stopper::Breakpoint(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_stopper(Stopper::Breakpoint(addr))
    }
}

impl HwBreakpoint for DmaTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_stopper(Stopper::Breakpoint(addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_stopper(Stopper::Breakpoint(addr))
    }
}

impl HwWatchpoint for DmaTarget {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, _kind: WatchKind) -> TargetResult<bool, Self> {
        self.add_stopper(Stopper::Watchpoint(addr, len))
    }

    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, _kind: WatchKind) -> TargetResult<bool, Self> {
        self.remove_stopper(Stopper::Watchpoint(addr, len))
    }
}

/// gdb's process id for the machine as a whole (gdbstub's own default).
const MACHINE_PID: Pid = match Pid::new(1) {
    Some(p) => p,
    None => unreachable!(),
};

/// `target extended-remote`: `attach PID` looks at a task, `kill` and `detach` leave the
/// session open, `run` is refused (dmastub starts nothing).
impl ExtendedMode for DmaTarget {
    fn run(&mut self, filename: Option<&[u8]>, _args: Args<'_, '_>) -> TargetResult<Pid, Self> {
        let name = filename.map(String::from_utf8_lossy).unwrap_or_default();
        warn!(
            "refused 'run {name}': dmastub cannot start programs on the machine, it only reads its memory \
             ('attach PID' selects a task)"
        );
        Err(TargetError::NonFatal)
    }

    fn attach(&mut self, pid: Pid) -> TargetResult<(), Self> {
        let pid = pid.get() as u64;
        let Some(tid) =
            self.threads().by_pid(pid).ok().and_then(|t| usize::try_from(t.tid).ok()).and_then(Tid::new)
        else {
            warn!("refused 'attach {pid}': no task with that pid in the task list");
            return Err(TargetError::NonFatal);
        };
        info!("attach {pid}: its thread {tid} is selected; memory is read in its address space");
        self.follow_thread(tid);
        self.attached_pid = Some(pid);
        Ok(())
    }

    fn query_if_attached(&mut self, _pid: Pid) -> TargetResult<AttachKind, Self> {
        Ok(AttachKind::Attach)
    }

    fn kill(&mut self, pid: Option<Pid>) -> TargetResult<ShouldTerminate, Self> {
        info!("kill {pid:?}: nothing is done to the machine; the client detaches");
        self.attached_pid = None;
        self.stoppers.clear();
        // In extended mode the client stays connected with no process; otherwise it closes.
        Ok(if self.extended { ShouldTerminate::No } else { ShouldTerminate::Yes })
    }

    fn restart(&mut self) -> Result<(), FatalError> {
        warn!("ignored a restart request: dmastub cannot restart the machine");
        Ok(())
    }

    fn on_start(&mut self) -> Result<(), FatalError> {
        self.extended = true;
        Ok(())
    }

    fn support_current_active_pid(&mut self) -> Option<CurrentActivePidOps<'_, Self>> {
        Some(self)
    }
}

impl CurrentActivePid for DmaTarget {
    /// The pid `attach` was given (gdb checks that the threads it is then shown belong to it),
    /// else 1: the machine as a whole.
    fn current_active_pid(&mut self) -> Result<Pid, FatalError> {
        Ok(self.attached_pid.and_then(|p| usize::try_from(p).ok()).and_then(Pid::new).unwrap_or(MACHINE_PID))
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
