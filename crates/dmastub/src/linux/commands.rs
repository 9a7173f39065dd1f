//! The [`Linux`] facade: a kernel found in memory, answering with data (tasks, threads,
//! backtraces, the kernel log). [`render`](super::render) turns the data into the commands' text.

use super::discover::Kernel;
use super::error::{LayoutError, LinuxError, ThreadLayoutError};
use super::origin::{Hint, HintNames, render_remedies};
use super::printk::{self, KernelLog};
use super::tasks::{self, TaskLayout, TaskList};
use super::threads::{self, Thread, ThreadLayout, ThreadList};
use super::unwind::{self, Backtrace, Orc};
use super::{TypeInfo, View};
use crate::mmu::AddressSpace;
use std::sync::OnceLock;

/// A kernel found in memory, ready to answer commands.
pub struct Linux {
    /// What discovery found.
    pub kernel: Kernel,
    /// The task layout, or why there is none (which hint to give).
    pub(crate) layout: Result<TaskLayout, LayoutError>,
    /// Where a task's saved registers and the runqueues are, or why that is unknown.
    pub(crate) thread_layout: Result<ThreadLayout, ThreadLayoutError>,
    /// The kernel's unwind tables, read at the first backtrace.
    orc: OnceLock<Orc>,
    /// How hints are named to the user.
    hint_names: HintNames,
}

/// What `switch` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The task's page-table root.
    pub cr3: u64,
    /// Its pid.
    pub pid: i32,
    /// Its name.
    pub comm: String,
}

impl Linux {
    /// The facade over `kernel`, as [`discover`](super::discover::discover) found it.
    pub fn new(kernel: Kernel) -> Self {
        let layout = match (&kernel.types, &kernel.btf_unreadable) {
            // Reads of the BTF failed: that, not the fallback's gaps, is why.
            (_, Some(failed)) => kernel
                .types
                .as_ref()
                .map_or(Err(LayoutError::NoLayout), |t| TaskLayout::from_types(t.as_ref()))
                .map_err(|_| LayoutError::BtfUnreadable(failed.clone())),
            (Some(t), None) => TaskLayout::from_types(t.as_ref()),
            (None, None) => Err(LayoutError::NoLayout),
        };
        let thread_layout = match (&kernel.types, &layout) {
            (Some(t), Ok(l)) => ThreadLayout::from_types(t.as_ref(), l),
            (_, Err(e)) => Err(e.clone().into()),
            (None, Ok(_)) => Err(LayoutError::NoLayout.into()),
        };
        Self { kernel, layout, thread_layout, orc: OnceLock::new(), hint_names: Hint::describe }
    }

    /// Names hints the application's way (the `dmastub` command: as its flags) in the text
    /// this facade's users show: `monitor kernel`, errors' remedies.
    pub fn with_hint_names(mut self, names: HintNames) -> Self {
        self.hint_names = names;
        self
    }

    /// How hints are named to the user.
    pub fn hint_names(&self) -> HintNames {
        self.hint_names
    }

    /// What discovery found.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Where the task list's fields are, or why that is unknown.
    pub fn task_layout(&self) -> Result<&TaskLayout, &LayoutError> {
        self.layout.as_ref()
    }

    /// `e` and what the user could give instead, hints named the application's way.
    pub fn explain(&self, e: &LinuxError) -> String {
        match render_remedies(e.remedies(), self.hint_names) {
            r if r.is_empty() => e.to_string(),
            r => format!("{e}; {r}"),
        }
    }

    /// The kernel's ORC tables: read once (a few MiB), then kept. A failed read is tried again
    /// next time (a DMA link may come back).
    fn orc(&self, view: &mut View) -> Result<&Orc, unwind::UnwindError> {
        if let Some(orc) = self.orc.get() {
            return Ok(orc);
        }
        let types = self.kernel.types.as_deref().map(|t| t as &dyn TypeInfo);
        let orc = Orc::load(view, &self.kernel.symbols, types)?;
        Ok(self.orc.get_or_init(|| orc))
    }

    /// The thread `bt` shows: task `pid`'s, or the panicking task's, else the first.
    pub fn pick_thread<'l>(&self, list: &'l ThreadList, pid: Option<u64>) -> Result<&'l Thread, LinuxError> {
        match pid {
            Some(pid) => list.by_pid(pid),
            None => list.threads.iter().find(|t| t.panicking).or(list.threads.first()).ok_or_else(|| {
                LinuxError::NoTasks(
                    list.problems.first().map_or("the task list is empty", String::as_str).to_string(),
                )
            }),
        }
    }

    /// The backtrace of `thread`, from its registers and the kernel's unwind tables.
    pub fn backtrace(&self, space: &mut AddressSpace, thread: &Thread) -> Result<Backtrace, LinuxError> {
        let mut view = View::new(space, self.kernel.cr3.value);
        // Tables are read only for a thread that has registers to start from.
        if let Some(why) = unwind::no_registers(thread) {
            return Err(why.into());
        }
        self.orc(&mut view)
            .and_then(|orc| unwind::backtrace(&mut view, &self.kernel.symbols, orc, thread))
            .map_err(LinuxError::from)
    }

    /// One frame's caller by the kernel's unwind tables, from `ip`, `sp` and `bp` as the frame
    /// has them (`exact` when `ip` is where the CPU was, not a return address): every register
    /// when entry code saved them, and whether the caller is code an entry interrupted.
    pub fn unwind_step(
        &self,
        space: &mut AddressSpace,
        ip: u64,
        sp: u64,
        bp: Option<u64>,
        exact: bool,
    ) -> Result<(super::Regs, bool), LinuxError> {
        let mut view = View::new(space, self.kernel.cr3.value);
        self.orc(&mut view)
            .and_then(|orc| unwind::unwind_one(&mut view, orc, ip, sp, bp, exact))
            .map_err(LinuxError::from)
    }

    /// Every task and idle task as a thread, with registers and contexts (CPU registers from
    /// the source's ELF notes, when it kept them).
    pub fn threads(&self, space: &mut AddressSpace) -> Result<ThreadList, LinuxError> {
        let layout = self.layout.as_ref().map_err(LayoutError::clone)?;
        let notes = space.mem().core_notes().to_vec();
        let mut view = View::new(space, self.kernel.cr3.value);
        Ok(threads::list(&mut view, &self.kernel, layout, self.thread_layout.as_ref(), &notes))
    }

    fn init_task(&self) -> Result<u64, LinuxError> {
        self.kernel.init_task.as_ref().map(|f| f.value).ok_or(LinuxError::NoInitTask)
    }

    /// The task list; `threads` adds every thread of multi-threaded processes. What the layout
    /// cannot show is among its problems.
    pub fn tasks(&self, space: &mut AddressSpace, threads: bool) -> Result<TaskList, LinuxError> {
        let layout = self.layout.as_ref().map_err(LayoutError::clone)?;
        let init = self.init_task()?;
        let mut view = View::new(space, self.kernel.cr3.value);
        let mut list = tasks::list(&mut view, layout, init, threads);
        list.problems.extend(layout.unavailable());
        Ok(list)
    }

    /// Task `pid` (a process or a thread), found as the kernel finds it (the pid namespace's
    /// xarray: a few reads), else in the task list (a read per task).
    pub(crate) fn task_by_pid(&self, space: &mut AddressSpace, pid: i32) -> Result<tasks::Task, LinuxError> {
        let layout = self.layout.as_ref().map_err(LayoutError::clone)?;
        if let Some(types) = self.kernel.types.as_deref() {
            let mut view = View::new(space, self.kernel.cr3.value);
            let direct_map = self.kernel.page_offset_base.value;
            match super::mm::find_task(&mut view, types, &self.kernel.symbols, layout, pid, direct_map) {
                Ok(Some(task)) => return Ok(task),
                Ok(None) => {}
                Err(why) => {
                    log::info!("pid {pid} not looked up in init_pid_ns ({why}): walking the task list")
                }
            }
        }
        let init = self.init_task()?;
        let mut view = View::new(space, self.kernel.cr3.value);
        let list = tasks::list(&mut view, layout, init, true);
        let among = format!("in the task list of {} tasks", list.tasks.len());
        let why = list.truncated.as_ref().or(list.problems.first()).cloned();
        list.tasks.into_iter().find(|t| t.pid == pid).ok_or(LinuxError::NoSuchPid {
            pid: pid as u64,
            among,
            why,
        })
    }

    /// The CR3 of task `pid` (a process or a thread).
    pub fn task_cr3(&self, space: &mut AddressSpace, pid: i32) -> Result<Switch, LinuxError> {
        let t = self.task_by_pid(space, pid)?;
        match t.cr3 {
            Some(cr3) => Ok(Switch { cr3, pid, comm: t.comm.clone() }),
            None if t.is_kernel_thread() => Err(LinuxError::KernelThread { pid, comm: t.comm.clone() }),
            None => Err(LinuxError::NoPgd { pid, comm: t.comm.clone() }),
        }
    }

    /// The kernel log.
    pub fn log(&self, space: &mut AddressSpace) -> Result<KernelLog, LinuxError> {
        let types = self.kernel.types.as_deref().ok_or(LinuxError::NoTypes)?;
        let mut view = View::new(space, self.kernel.cr3.value);
        Ok(printk::read_log(&mut view, &self.kernel.symbols, types)?)
    }
}
