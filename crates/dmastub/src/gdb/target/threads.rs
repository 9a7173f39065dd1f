//! Which thread gdb is on, and so whose address space memory packets read; each thread's
//! registers as gdb is shown them.

use super::{Client, DmaTarget, MACHINE_TID};
use crate::gdb::arch::{DmaRegs, regnum};
use crate::gdb::monitor::RegSet;
use crate::gdb::state::Mode;
use crate::linux::{Regs, Thread};
use gdbstub::common::Tid;
use log::debug;

impl DmaTarget {
    /// The thread a stop is reported in: the one whose context memory is read in, so that gdb
    /// stays on it.
    pub(crate) fn stop_thread(&mut self) -> Tid {
        match self.state.selected {
            Some(tid) => tid,
            None => self.first_thread(),
        }
    }

    /// The first thread, which gdbstub reports the first stop in (`?`).
    pub(super) fn first_thread(&mut self) -> Tid {
        let first = self.threads().threads.first().map(|t| t.tid);
        first.and_then(|t| usize::try_from(t).ok()).and_then(Tid::new).unwrap_or(MACHINE_TID)
    }

    /// The thread of the last stop reported after a resume (at first, the first thread): what
    /// a resume request without a thread applies to, and lldb's memory context.
    pub(crate) fn last_stop_thread(&mut self) -> Tid {
        match self.last_stop_tid {
            Some(t) => t,
            None => self.first_thread(),
        }
    }

    /// The thread the stop after a resume request is reported in: the one the request named,
    /// else the one the previous stop was reported in (at first, the first thread); one that
    /// is still a thread after the task list was read again.
    pub(crate) fn resume_stop_thread(&mut self) -> Tid {
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
    pub(super) fn follow_thread(&mut self, tid: Tid) {
        if self.state.selected == Some(tid) {
            return;
        }
        let first = self.state.selected.is_none();
        self.state.selected = Some(tid);
        if first && self.state.cr3_pinned {
            return;
        }
        let Some(t) = self.threads().get(tid.get() as u64) else { return };
        let (cr3, origin) = (t.cr3, format!("thread {} (pid {} {})", t.tid, t.task.pid, t.task.comm));
        if self.state.cr3() != Some(cr3) || self.state.mode() != Mode::Virt {
            debug!("memory now read as {origin}, CR3 {cr3:#x}");
        }
        self.activate(cr3, &origin);
        self.state.cr3_pinned = false;
        self.state.task_context = true;
    }

    /// A register read of thread `tid` selects it for gdb, which reads registers when the user
    /// selects a thread. lldb reads every thread's registers at every stop and never says which
    /// thread the user selects: its memory context is the thread of the last stop instead (see
    /// [`Self::memory_thread`]).
    pub(super) fn follow_registers(&mut self, tid: Tid) {
        if self.client != Client::Lldb {
            self.follow_thread(tid);
        }
    }

    /// The thread whose address space a memory packet for `tid` reads: `tid` for gdb; for lldb,
    /// whose `Hg` only picks registers, the thread of the last stop (a step or continue of the
    /// selected thread stops in it).
    pub(super) fn memory_thread(&mut self, tid: Tid) -> Tid {
        match self.client {
            Client::Gdb => tid,
            Client::Lldb => self.last_stop_thread(),
        }
    }

    /// The thread gdb's `qC` should name: the attached task's after `attach PID`.
    pub(crate) fn attached_thread(&mut self) -> Option<(u64, u64)> {
        let pid = self.attached_pid?;
        let tid = self.threads().by_pid(pid).ok()?.tid;
        Some((pid, tid))
    }

    /// Thread `tid`'s registers: a task's as [`threads`] found them, with the page-table root
    /// its memory is read through as CR3 (gdb reads them after selecting the thread, which
    /// made it the context: the active CR3). Without tasks the one thread knows only the
    /// active CR3, and a rip of 0:
    /// gdb refuses to attach to a target whose PC is unavailable, and 0 is plainly no real
    /// instruction.
    pub(super) fn registers(&mut self, tid: Tid) -> DmaRegs {
        let mut regs = DmaRegs::unknown();
        let active = self.state.cr3();
        let list = self.threads();
        let first = list.threads.first().map(|t| t.tid);
        let thread = list.get(tid.get() as u64).cloned();
        let user = self.state.regs == RegSet::User;
        match thread {
            Some(t) => {
                let task_regs = if user { self.user_registers(&t).unwrap_or_default() } else { t.regs };
                regs = DmaRegs::of_task(&task_regs);
                // gdb cannot attach when the first thread has no pc, and threads are ordered so
                // that it has one whenever any thread has: otherwise it reads 0, as without tasks.
                if first == Some(t.tid) && task_regs.pc().is_none() {
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

    /// `thread`'s user-mode registers (`monitor regs user`), read once per stop; `None` for a
    /// kernel thread or a task whose user entry frame cannot be read (logged once).
    pub(crate) fn user_registers(&mut self, thread: &Thread) -> Option<Regs> {
        if !self.user_regs.contains_key(&thread.tid) {
            let linux = self.linux.as_ref()?;
            let r = linux.user_regs(&mut self.space, thread).map(|u| u.regs).map_err(|e| linux.explain(&e));
            if let Err(why) = &r {
                debug!("thread {}: no user-mode registers: {why}", thread.tid);
            }
            self.user_regs.insert(thread.tid, r);
        }
        self.user_regs.get(&thread.tid)?.as_ref().ok().copied()
    }
}
