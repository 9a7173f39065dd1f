//! The gdbstub target: gdb's packets turned into reads of the [`AddressSpace`].
//!
//! Errors follow gdbstub's split: a memory read that fails is a non-fatal error reply (gdb
//! prints "Cannot access memory at address …") and the session goes on; only a [`FatalError`]
//! ends it.
//!
//! The target's jobs, one file each: this file holds the target's state, its life across
//! sessions and stops, and the memory read path; [`threads`](self::threads) decides which
//! thread's address space memory packets read; [`commands`](self::commands) runs `monitor`
//! commands; [`base`](self::base) and [`extensions`](self::extensions) implement gdbstub's
//! traits (registers, memory, resume; breakpoints, extended mode, section offsets).

mod base;
mod commands;
mod extensions;
mod threads;

pub(crate) use super::error::FatalError;
use super::state::{Mode, SessionState};
use crate::addr::VirtAddr;
use crate::linux::Symbols;
use crate::linux::commands::Linux;
use crate::linux::threads::ThreadList;
use crate::linux::{Hint, HintNames, Origin};
use crate::mmu::{AddressSpace, MemError};
use gdbstub::common::{Signal, Tid};
use log::{debug, info, warn};
use std::collections::HashMap;
use std::time::Duration;

/// What gdb is told when it tries to run the machine.
pub(crate) const CANNOT_RESUME: &str = "dmastub: memory only: this target's CPUs cannot be continued or stepped: \
     dmastub reads the machine's memory from outside its CPUs (the machine itself may still be running). \
     Stopped again at once.\n";

/// Which client is attached: lldb reads some answers differently from gdb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Client {
    #[default]
    Gdb,
    Lldb,
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
    /// How the application names hints in advice ("start with --cr3"): its flags.
    hint_names: HintNames,
    /// Mode, active CR3 and selected thread of the session being served.
    state: SessionState,
    /// Every task as a thread, read once per stop (see [`DmaTarget::on_stop`]).
    threads: Option<ThreadList>,
    /// Kernel text (`_stext`..`_etext`), and its pages read this stop: gdb reads the byte at
    /// each thread's pc twice when it lists threads, and most threads sleep at the same pc.
    text: Option<(u64, u64)>,
    /// Kept only as long as the address space keeps its page tables: for a live source, one
    /// burst of requests (see [`AddressSpace::cache_generation`]).
    text_pages: HashMap<u64, Box<[u8]>>,
    text_generation: u64,
    /// The state every session starts from, taken when the first client connects.
    initial: Option<SessionState>,
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
    /// A memory read the session encodes itself (see [`Self::capture_next_read`]).
    read_capture: ReadCapture,
    /// Threads' user-mode registers read this stop (`monitor regs user`), or why there are none.
    user_regs: HashMap<u64, Result<crate::linux::Regs, String>>,
    /// The auxiliary vector of the process `monitor switch PID` chose (`qXfer:auxv:read`).
    auxv: Option<Vec<u8>>,
    /// That process's executable load bias and shared objects (`qOffsets`,
    /// `qXfer:libraries:read` while in its context).
    objects: Option<crate::linux::mm::LoadedObjects>,
    /// Where modules' `.ko` files are: the order of their sections for gdb's library list.
    module_files: crate::linux::modules::KoIndex,
    /// The library list (the modules) gdb is reading, made at its first window.
    libraries: Option<String>,
}

/// The state of [`DmaTarget::capture_next_read`].
#[derive(Default)]
pub(super) enum ReadCapture {
    #[default]
    Off,
    /// The next read that succeeds is kept in this buffer.
    Armed(Vec<u8>),
    /// A read succeeded: its bytes.
    Done(Vec<u8>),
}

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
    /// A target over `space`, in physical mode until a CR3 is given ([`Self::with_cr3`],
    /// [`Self::with_linux`]). Memory writes are refused unless `allow_write`.
    pub fn new(space: AddressSpace, allow_write: bool) -> Self {
        Self {
            space,
            linux: None,
            allow_write,
            hint_names: Hint::describe,
            state: SessionState::new(),
            threads: None,
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
            read_capture: ReadCapture::Off,
            user_regs: HashMap::new(),
            auxv: None,
            objects: None,
            module_files: Default::default(),
            libraries: None,
        }
    }

    /// Where the modules' `.ko` files are (searched recursively, e.g. Debian's
    /// `usr/lib/debug/lib/modules/RELEASE`): gdb's library list gives each module's section
    /// addresses in its file's order, which only the file has.
    pub fn with_module_files(mut self, dirs: &[std::path::PathBuf]) -> Self {
        self.module_files = crate::linux::modules::KoIndex::new(dirs);
        self
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
        self.state.cr3_pinned = pinned;
        let sym = |n: &str| linux.kernel.symbols.address(n);
        self.text = match (sym("_stext").or(sym("_text")), sym("_etext")) {
            (Some(lo), Some(hi)) if lo < hi && hi - lo < 1 << 30 => Some((lo, hi)),
            _ => None,
        };
        self.linux = Some(linux);
        self
    }

    /// Names hints in advice as the application does (the `dmastub` command: its flags);
    /// [`Hint::describe`] by default.
    pub fn with_hint_names(mut self, names: HintNames) -> Self {
        self.hint_names = names;
        self
    }

    /// Advice for a session with no CR3.
    pub(crate) fn no_cr3_advice(&self) -> String {
        format!(
            "no CR3 is known: give one with 'monitor set-cr3 ADDR' (or start with {})",
            (self.hint_names)(Hint::Cr3)
        )
    }

    /// Makes `cr3` the active page-table root, chosen by the user, and memory packets virtual;
    /// `origin` says who chose it (`monitor cr3` shows it).
    pub fn with_cr3(mut self, cr3: u64, origin: &str) -> Self {
        self.activate(cr3, origin);
        self
    }

    /// The kernel found in memory, when there is one.
    pub fn linux(&self) -> Option<&Linux> {
        self.linux.as_ref()
    }

    /// The process whose executable and libraries gdb is shown (`qOffsets`,
    /// `qXfer:libraries:read`): the one `attach PID` or `monitor switch PID` entered, while
    /// threads report user registers (`monitor regs user`). Otherwise gdb's file is vmlinux,
    /// moved by KASLR, and its libraries the modules.
    pub(crate) fn process_view(&self) -> Option<&crate::linux::mm::LoadedObjects> {
        self.objects.as_ref().filter(|_| self.state.regs == super::monitor::RegSet::User)
    }

    /// Makes `cr3` the active page-table root; `origin` says who set it (`monitor cr3` shows it).
    pub fn set_cr3(&mut self, cr3: u64, origin: &str) {
        // The auxiliary vector is the process's whose tables `monitor switch PID` made active.
        self.auxv = None;
        self.objects = None;
        self.state.set_cr3(cr3);
        self.state.cr3_origin = origin.to_string();
        self.state.cr3_pinned = true;
        self.state.task_context = false;
    }

    /// Makes `cr3` the active root and memory packets virtual.
    fn activate(&mut self, cr3: u64, origin: &str) {
        self.set_cr3(cr3, origin);
        // Cannot fail: a CR3 is set.
        let _ = self.state.set_mode(Mode::Virt);
    }

    /// The session's mode, active CR3 and selected thread.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The address space memory is read through.
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// The address space memory is read through, to change its settings or its source.
    pub fn space_mut(&mut self) -> &mut AddressSpace {
        &mut self.space
    }

    /// Whether gdb's memory writes are carried out.
    pub fn allow_write(&self) -> bool {
        self.allow_write
    }

    /// Called when gdb connects and at every stop: nothing read from a live source before it
    /// may be used after it.
    pub(crate) fn on_stop(&mut self) {
        self.text_pages.clear();
        self.user_regs.clear();
        if self.space.mem().is_volatile() {
            self.space.flush();
            // Tasks come and go on a running machine: the next stop reads them again.
            self.threads = None;
        }
    }

    /// The tasks as threads, read now if this stop has not read them yet. Empty without a
    /// kernel or a task list (the target is then one thread).
    pub(crate) fn threads(&mut self) -> &ThreadList {
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
    pub(crate) fn on_connect(&mut self) {
        match &self.initial {
            None => {
                let mut init = self.state.clone();
                init.selected = None;
                self.initial = Some(init);
            }
            Some(init) => self.state = init.clone(),
        }
        self.state.selected = None;
        self.client = Client::Gdb;
        self.extended = false;
        self.attached_pid = None;
        self.stoppers.clear();
        self.resume_tid = None;
        self.last_stop_tid = None;
        self.lldb_probed_p = false;
        self.auxv = None;
        self.objects = None;
        self.on_stop();
    }

    /// Records which client is attached (from what it sent).
    pub(crate) fn set_client(&mut self, client: Client) {
        if client != self.client {
            debug!("the client is {client:?}");
        }
        self.client = client;
    }

    /// Which client is attached.
    pub(crate) fn client(&self) -> Client {
        self.client
    }

    /// Whether the client uses gdb's extended-remote mode.
    pub(crate) fn is_extended(&self) -> bool {
        self.extended
    }

    /// `detach` in extended mode: the client stays connected with no process attached.
    pub(crate) fn on_detach(&mut self) {
        info!("the client detached; the session goes on (extended-remote)");
        self.attached_pid = None;
        self.stoppers.clear();
    }

    /// The one offset that moves every vmlinux section to where the running kernel has it
    /// (the KASLR slide), for clients that apply only a uniform `qOffsets` (lldb).
    pub(crate) fn uniform_offset(&self) -> Option<u64> {
        self.linux.as_ref().map(|l| l.kernel.slide.value)
    }

    /// What a client is told when it asks to run the machine: that it cannot, and what became
    /// of its breakpoints and watchpoints.
    pub(crate) fn resume_message(&self) -> String {
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
    pub(crate) fn resume_stop_signal(&self) -> Signal {
        match self.client {
            Client::Gdb => Signal(0),
            Client::Lldb => Signal::SIGSTOP,
        }
    }

    /// The modules as gdb's library list (`qXfer:libraries:read`): made when gdb asks for its
    /// start (`fresh`), the same document for the windows after. In a process's context, that
    /// process's shared objects instead.
    pub(crate) fn libraries(&mut self, fresh: bool) -> String {
        if let Some(objects) = self.process_view() {
            return crate::linux::modules::segment_library_list(&objects.libraries);
        }
        if fresh || self.libraries.is_none() {
            let doc = match &self.linux {
                Some(linux) => {
                    linux.module_libraries(&mut self.space, &self.module_files).unwrap_or_else(|e| {
                        log::warn!("libraries: no modules offered to gdb: {e}");
                        String::new()
                    })
                }
                None => String::new(),
            };
            self.libraries =
                Some(if doc.is_empty() { "<library-list version=\"1.0\"/>\n".to_string() } else { doc });
        }
        self.libraries.clone().unwrap_or_default()
    }

    /// gdb's `info os` documents (`qXfer:osdata:read`): the list of types, and `processes`
    /// from the task list. `None` for a type dmastub does not have.
    pub(crate) fn osdata(&mut self, annex: &[u8]) -> Option<String> {
        match annex {
            b"" => Some(super::osdata::types()),
            b"processes" => {
                let linux = self.linux.is_some();
                Some(super::osdata::processes(self.threads(), linux))
            }
            _ => None,
        }
    }

    /// Reads memory as gdb asked, through the active mode and CR3; see `task_context` and
    /// `text_pages` for the two shortcuts.
    fn read_memory(&mut self, start: u64, data: &mut [u8]) -> Result<usize, MemError> {
        let kernel_cr3 = self.linux.as_ref().map(|l| l.kernel.cr3.value);
        if self.state.mode() == Mode::Virt
            && let Some(kernel_cr3) = kernel_cr3
        {
            if let Some(n) = self.read_text(kernel_cr3, start, data) {
                return Ok(n);
            }
            if self.state.task_context && start >> 63 == 1 {
                return self.space.read_in(kernel_cr3, start, data);
            }
        }
        self.state.read(&mut self.space, start, data)
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

    /// Makes the next memory read that succeeds give gdbstub no bytes (it answers an empty
    /// reply) and keep them, in `buf`, for [`Self::take_captured_read`]: the session then
    /// sends their reply itself, encoded in bulk. Errors and short reads are decided as usual.
    pub(crate) fn capture_next_read(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.read_capture = ReadCapture::Armed(buf);
    }

    /// The bytes of the read captured since [`Self::capture_next_read`], if one succeeded;
    /// the capture ends either way.
    pub(crate) fn take_captured_read(&mut self) -> Option<Vec<u8>> {
        match std::mem::take(&mut self.read_capture) {
            ReadCapture::Done(bytes) => Some(bytes),
            ReadCapture::Off | ReadCapture::Armed(_) => None,
        }
    }
}
