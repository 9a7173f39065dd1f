//! The `monitor` commands: parsed by [`crate::gdb::monitor`], run here against the target.

use super::DmaTarget;
use crate::addr::VirtAddr;
use crate::gdb::error::{CommandError, FatalError};
use crate::gdb::monitor::{self, Command, LinuxCommand, RegSet};
use crate::gdb::state::Mode;
use crate::linux::render;
use crate::linux::threads;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, outputln};
use log::info;

impl DmaTarget {
    /// Runs one parsed monitor command and returns what to print.
    pub(crate) fn run_command(&mut self, cmd: Command) -> String {
        match cmd {
            Command::Help => monitor::help_text(),
            Command::Phys => {
                // Setting phys mode cannot fail.
                let _ = self.state.set_mode(Mode::Phys);
                "memory packets now address physical memory\n".to_string()
            }
            Command::Virt => match self.state.set_mode(Mode::Virt) {
                Ok(()) => format!(
                    "memory packets now address virtual memory through CR3 {:#x}\n",
                    self.state.cr3().unwrap_or_default()
                ),
                Err(_) => format!("{}\n", self.no_cr3_advice()),
            },
            Command::SetCr3(cr3) => {
                self.set_cr3(cr3, "monitor set-cr3");
                let mut s = format!("active CR3 = {cr3:#x}");
                if self.state.mode() == Mode::Phys {
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
                if self.state.cr3().is_none() {
                    return format!("{}\n", self.no_cr3_advice());
                }
                format!("{}\n", self.state.vtop(&mut self.space, VirtAddr(virt)))
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

    fn run_linux_command(&mut self, cmd: LinuxCommand) -> Result<String, CommandError> {
        let Some(linux) = &self.linux else {
            return Err(CommandError::NoLinux);
        };
        match cmd {
            LinuxCommand::Lsmod { proc } => match linux.modules(&mut self.space) {
                Ok(list) if proc => Ok(crate::linux::modules::proc_modules(&list)),
                Ok(list) => Ok(crate::linux::modules::lsmod(&list)),
                Err(e) => Err(CommandError::linux(format!("lsmod: {e}"))),
            },
            LinuxCommand::Ps { threads } => match linux.tasks(&mut self.space, threads) {
                Ok(list) => Ok(render::ps(&list)),
                Err(e) => Err(CommandError::linux(linux.explain(&e))),
            },
            LinuxCommand::Threads => Ok(render::threads(self.threads())),
            LinuxCommand::Kernel => Ok(render::kernel_report(&linux.kernel, linux.hint_names())),
            LinuxCommand::Dmesg(n) => match linux.log(&mut self.space) {
                Ok(log) => Ok(render::dmesg(&log, n.map(|n| n as usize))),
                Err(e) => Err(CommandError::linux(linux.explain(&e))),
            },
            LinuxCommand::Switch(None) => {
                let cr3 = linux.kernel.cr3.value;
                self.activate(cr3, "monitor switch kernel");
                Ok(format!("active CR3 = {cr3:#x} (the kernel's page tables)\n"))
            }
            LinuxCommand::Bt(pid) => self.backtrace(pid),
            LinuxCommand::Regs(set) => Ok(self.regs_command(set)),
            LinuxCommand::Unwind { ip, sp, bp, exact } => {
                let Some(linux) = &self.linux else { return Err(CommandError::NoLinux) };
                match linux.unwind_step(&mut self.space, ip, sp, bp, exact) {
                    Ok((regs, entry)) => Ok(render::unwound(&regs, entry)),
                    // One line gdb's unwinder reads as "no caller here", not a failed command.
                    Err(e) => Ok(format!("no caller: {}\n", linux.explain(&e))),
                }
            }
            LinuxCommand::BtAll => {
                self.threads();
                let (Some(linux), Some(list)) = (&self.linux, &self.threads) else {
                    return Err(CommandError::NoLinux);
                };
                let names = linux.hint_names();
                Ok(render::backtraces_of_cpus(list, |t| {
                    render::backtrace(t, linux.backtrace(&mut self.space, t), names)
                }))
            }
            LinuxCommand::Maps(pid) => self.maps(pid),
            LinuxCommand::Switch(Some(pid)) => {
                let pid = i32::try_from(pid).map_err(|_| CommandError::NotAPid(pid))?;
                let sw = linux
                    .task_cr3(&mut self.space, pid)
                    .map_err(|e| CommandError::linux(linux.explain(&e)))?;
                self.activate(sw.cr3, &format!("monitor switch {} ({})", sw.pid, sw.comm));
                self.state.task_context = true;
                // Its auxiliary vector (qXfer:auxv:read) and loaded objects (qXfer:libraries:read).
                self.enter_process(sw.pid);
                let tid = threads::thread_id(sw.pid, None);
                Ok(format!(
                    "active CR3 = {:#x}: the address space of pid {} ({}); kernel addresses still map\n\
                     (its gdb thread, Thread {tid} in 'info threads', reads the same; until gdb selects another thread)\n",
                    sw.cr3, sw.pid, sw.comm
                ))
            }
        }
    }

    /// `monitor regs [user|kernel]`: which register set threads report, and what it means for
    /// the thread gdb has selected.
    fn regs_command(&mut self, set: Option<RegSet>) -> String {
        let Some(set) = set else {
            return match self.state.regs {
                RegSet::Kernel => "threads report kernel registers (the saved switch frame, or the CPU's)\n",
                RegSet::User => "threads report user-mode registers (task_pt_regs)\n",
            }
            .to_string();
        };
        self.state.regs = set;
        self.user_regs.clear();
        let mut s = match set {
            RegSet::Kernel => {
                "threads now report kernel registers (the saved switch frame, or the CPU's)\n".to_string()
            }
            RegSet::User => {
                "threads now report user-mode registers: the pt_regs saved at the top of each task's \
                             kernel stack on its last entry from user space (kernel threads: unavailable)\n"
                    .to_string()
            }
        };
        // What the selected thread now shows, so that a wrong frame is seen at once.
        let selected = self.stop_thread();
        let thread = self.threads().get(selected.get() as u64).cloned();
        if let (RegSet::User, Some(t)) = (set, thread) {
            let linux = self.linux.as_ref();
            match linux.map(|l| l.user_regs(&mut self.space, &t)) {
                Some(Ok(u)) => s.push_str(&format!(
                    "thread {} (pid {} {}): rip {:#x} rsp {:#x} (pt_regs at {:#x})\n",
                    t.tid,
                    t.task.pid,
                    t.task.comm,
                    u.regs.pc().unwrap_or_default(),
                    u.regs.get(crate::linux::reg::RSP).unwrap_or_default(),
                    u.frame
                )),
                Some(Err(e)) => s.push_str(&format!(
                    "thread {}: {}\n",
                    t.tid,
                    linux.map(|l| l.explain(&e)).unwrap_or_default()
                )),
                None => {}
            }
        }
        // gdb keeps the registers it read until the next stop; it cannot be told from here.
        s.push_str("(gdb shows them for threads it reads again: 'maint flush register-cache', then 'thread N', 'bt')\n");
        s
    }

    /// Makes process `pid`'s auxiliary vector and loaded objects the ones gdb is given
    /// (`qXfer:auxv:read`, `qOffsets`, `qXfer:libraries:read`): from its memory map.
    pub(super) fn enter_process(&mut self, pid: i32) {
        let Some(linux) = self.linux.as_ref() else { return };
        let maps = match linux.maps(&mut self.space, pid) {
            Ok(m) => m,
            Err(e) => {
                log::info!("pid {pid}: no auxiliary vector or libraries for gdb: {}", linux.explain(&e));
                return;
            }
        };
        self.auxv = Some(crate::dump::gcore::encode_auxv(&maps.mm.saved_auxv));
        match linux.loaded_objects(&mut self.space, &maps) {
            Ok(objects) => {
                for p in &objects.problems {
                    log::info!("pid {pid}: {p}");
                }
                self.objects = Some(objects);
            }
            Err(why) => log::info!("pid {pid}: its executable's load bias and libraries are unknown: {why}"),
        }
    }

    /// `monitor bt [PID]`: the backtrace of task PID, or of the thread gdb has selected.
    fn backtrace(&mut self, pid: Option<u64>) -> Result<String, CommandError> {
        let selected = self.stop_thread();
        self.threads();
        let (Some(linux), Some(list)) = (&self.linux, &self.threads) else {
            return Err(CommandError::NoLinux);
        };
        let thread = match pid {
            Some(pid) => list.by_pid(pid).map_err(|e| CommandError::linux(linux.explain(&e)))?,
            None => list.get(selected.get() as u64).ok_or(CommandError::NoSelectedTask)?,
        };
        Ok(render::backtrace(thread, linux.backtrace(&mut self.space, thread), linux.hint_names()))
    }

    /// `monitor maps PID`: the process's memory map.
    fn maps(&mut self, pid: u64) -> Result<String, CommandError> {
        let Some(linux) = &self.linux else {
            return Err(CommandError::NoLinux);
        };
        let pid = i32::try_from(pid).map_err(|_| CommandError::NotAPid(pid))?;
        let maps = linux.maps(&mut self.space, pid).map_err(|e| CommandError::linux(linux.explain(&e)))?;
        Ok(render::maps(&maps))
    }

    fn describe_cr3(&self) -> String {
        let mode = match self.state.mode() {
            Mode::Phys => "phys",
            Mode::Virt => "virt",
        };
        match self.state.cr3() {
            Some(cr3) => format!(
                "CR3 {cr3:#x} ({}), {}-level paging, memory packets in {mode} mode\n",
                self.state.cr3_origin,
                self.space.paging().levels()
            ),
            None => format!("{}; memory packets in {mode} mode\n", self.no_cr3_advice()),
        }
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
