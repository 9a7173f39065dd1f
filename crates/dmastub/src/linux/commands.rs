//! The Linux commands (`ps`, `switch`, `kernel`, `dmesg`) over a discovered kernel, shared by
//! `monitor` and the one-shot command line.

use super::discover::Kernel;
use super::tasks::{self, LayoutError, TaskLayout};
use super::threads::{self, Thread, ThreadLayout, ThreadList};
use super::unwind::{self, Orc};
use super::{TypeInfo, View, printk};
use crate::mmu::AddressSpace;
use std::sync::OnceLock;

/// A kernel found in memory, ready to answer commands.
pub struct Linux {
    pub kernel: Kernel,
    /// The task layout, or why there is none (which hint to give).
    pub layout: Result<TaskLayout, LayoutError>,
    /// Where a task's saved registers and the runqueues are, or why that is unknown.
    pub thread_layout: Result<ThreadLayout, String>,
    /// The kernel's unwind tables, read at the first backtrace.
    orc: OnceLock<Orc>,
}

/// What `switch` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub cr3: u64,
    pub pid: i32,
    pub comm: String,
}

impl Linux {
    pub fn new(kernel: Kernel) -> Self {
        let layout = match (&kernel.types, &kernel.btf_unreadable) {
            // Reads of the BTF failed: that, not the fallback's gaps, is why.
            (_, Some(why)) => kernel
                .types
                .as_ref()
                .map_or(Err(LayoutError::NoLayout), |t| TaskLayout::from_types(t.as_ref()))
                .map_err(|_| LayoutError::BtfUnreadable(why.clone())),
            (Some(t), None) => TaskLayout::from_types(t.as_ref()),
            (None, None) => Err(LayoutError::NoLayout),
        };
        let thread_layout = match (&kernel.types, &layout) {
            (Some(t), Ok(l)) => ThreadLayout::from_types(t.as_ref(), l),
            (_, Err(e)) => Err(e.to_string()),
            (None, Ok(_)) => Err(LayoutError::NoLayout.to_string()),
        };
        Self { kernel, layout, thread_layout, orc: OnceLock::new() }
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

    /// `dmastub bt`: the backtrace of task `pid`, or of the panicking task, else of the first
    /// thread.
    pub fn bt(&self, space: &mut AddressSpace, pid: Option<u64>) -> Result<String, String> {
        let list = self.threads(space)?;
        let thread = match pid {
            Some(pid) => list.by_pid(pid)?,
            None => list.threads.iter().find(|t| t.panicking).or(list.threads.first()).ok_or_else(|| {
                format!(
                    "no tasks: {}",
                    list.problems.first().map_or("the task list is empty", String::as_str)
                )
            })?,
        };
        let bt = self.backtrace(space, thread);
        // A thread chosen from a list the budget cut may not be the one asked for: say so.
        Ok(match &list.truncated {
            Some(why) if pid.is_none() => format!("bt: the task list was {why}\n{bt}"),
            _ => bt,
        })
    }

    /// `bt`: the backtrace of `thread`, from its registers and the kernel's unwind tables.
    pub fn backtrace(&self, space: &mut AddressSpace, thread: &Thread) -> String {
        let mut view = View::new(space, self.kernel.cr3.value);
        // Tables are read only for a thread that has registers to start from.
        let bt = match unwind::no_registers(thread) {
            Some(why) => Err(why),
            None => self
                .orc(&mut view)
                .and_then(|orc| unwind::backtrace(&mut view, &self.kernel.symbols, orc, thread)),
        };
        unwind::render(thread, bt)
    }

    /// Every task and idle task as a thread, with registers and contexts (CPU registers from
    /// the source's ELF notes, when it kept them).
    pub fn threads(&self, space: &mut AddressSpace) -> Result<ThreadList, String> {
        let layout = self.layout.as_ref().map_err(|e| e.to_string())?;
        let notes = space.mem().core_notes().to_vec();
        let mut view = View::new(space, self.kernel.cr3.value);
        Ok(threads::list(
            &mut view,
            &self.kernel,
            layout,
            self.thread_layout.as_ref().map_err(|e| e.as_str()),
            &notes,
        ))
    }

    fn init_task(&self) -> Result<u64, String> {
        self.kernel.init_task.as_ref().map(|f| f.value).ok_or_else(|| {
            "no init_task symbol: the kernel's symbols were not found; give --system-map FILE or --vmlinux FILE"
                .to_string()
        })
    }

    /// The task list, rendered; `threads` adds every thread of multi-threaded processes.
    pub fn ps(&self, space: &mut AddressSpace, threads: bool) -> Result<String, String> {
        let layout = self.layout.as_ref().map_err(|e| e.to_string())?;
        let init = self.init_task()?;
        let mut view = View::new(space, self.kernel.cr3.value);
        let mut list = tasks::list(&mut view, layout, init, threads);
        list.problems.extend(layout.unavailable());
        Ok(tasks::render(&list))
    }

    /// The CR3 of task `pid` (a process or a thread).
    pub fn task_cr3(&self, space: &mut AddressSpace, pid: i32) -> Result<Switch, String> {
        let layout = self.layout.as_ref().map_err(|e| e.to_string())?;
        let init = self.init_task()?;
        let mut view = View::new(space, self.kernel.cr3.value);
        let list = tasks::list(&mut view, layout, init, true);
        let Some(t) = list.tasks.iter().find(|t| t.pid == pid) else {
            let why = list
                .truncated
                .as_ref()
                .or(list.problems.first())
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            return Err(format!(
                "no task with pid {pid} in the task list of {} tasks{why}",
                list.tasks.len()
            ));
        };
        match t.cr3 {
            Some(cr3) => Ok(Switch { cr3, pid, comm: t.comm.clone() }),
            None if t.is_kernel_thread() => Err(format!(
                "pid {pid} ({}) is a kernel thread: it has no address space of its own; 'switch kernel' shows the kernel's",
                t.comm
            )),
            None => Err(format!("pid {pid} ({}): its mm->pgd could not be read or translated", t.comm)),
        }
    }

    /// The kernel log, last `lines` lines (all with `None`).
    pub fn dmesg(&self, space: &mut AddressSpace, lines: Option<usize>) -> Result<String, String> {
        let types =
            self.kernel.types.as_deref().ok_or("no struct layout: give --btf FILE or --profile NAME")?;
        let mut view = View::new(space, self.kernel.cr3.value);
        let log = printk::read_log(&mut view, &self.kernel.symbols, types).map_err(|e| e.to_string())?;
        Ok(log.render(lines))
    }
}
