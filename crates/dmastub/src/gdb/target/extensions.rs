//! gdbstub's optional extensions: breakpoints and watchpoints (accepted, never hit),
//! `target extended-remote` (`attach PID` selects a task), and the KASLR section offsets.

use super::{DmaTarget, FatalError, Stopper};
use crate::gdb::error::RequestError;
use gdbstub::common::{Pid, Tid};
use gdbstub::target::TargetError;
use gdbstub::target::TargetResult;
use gdbstub::target::ext::auxv::Auxv;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint, SwBreakpointOps,
    WatchKind,
};
use gdbstub::target::ext::extended_mode::{
    Args, AttachKind, CurrentActivePid, CurrentActivePidOps, ExtendedMode, ShouldTerminate,
};
use gdbstub::target::ext::section_offsets::{Offsets, SectionOffsets};
use log::{info, warn};

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
        warn!("refused 'run {name}': {}", RequestError::CannotRun);
        Err(TargetError::NonFatal)
    }

    fn attach(&mut self, pid: Pid) -> TargetResult<(), Self> {
        let pid = pid.get() as u64;
        let Some(tid) =
            self.threads().by_pid(pid).ok().and_then(|t| usize::try_from(t.tid).ok()).and_then(Tid::new)
        else {
            warn!("refused 'attach {pid}': {}", RequestError::NoSuchTask { pid });
            return Err(TargetError::NonFatal);
        };
        info!("attach {pid}: its thread {tid} is selected; memory is read in its address space");
        self.follow_thread(tid);
        self.attached_pid = Some(pid);
        // Its auxiliary vector, load bias and shared objects, as after `monitor switch`: gdb
        // asks for them after an attach (qOffsets moves the binary, qXfer:libraries:read lists
        // the libraries).
        if let Ok(pid) = i32::try_from(pid) {
            self.enter_process(pid);
        }
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
        // In a process's context, with user registers, the file gdb loads is its executable.
        if let Some(objects) = self.process_view() {
            let bias = objects.exec_bias;
            return Ok(Offsets::Sections { text: bias, data: bias, bss: Some(bias) });
        }
        let Some(linux) = &self.linux else { return Ok(Offsets::Sections { text: 0, data: 0, bss: None }) };
        let (text, data) = linux.kernel.segment_bases();
        Ok(Offsets::Segments { text_seg: text, data_seg: Some(data) })
    }
}

impl Auxv for DmaTarget {
    /// The auxiliary vector of the process `monitor switch PID` chose (its `mm->saved_auxv`):
    /// gdb finds the dynamic linker's `r_debug` from it and lists the shared libraries. Outside
    /// a process context there is none (an empty one: gdb then looks no further).
    fn get_auxv(&self, offset: u64, length: usize, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let Some(auxv) = &self.auxv else { return Ok(0) };
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(auxv.len());
        let n = length.min(buf.len()).min(auxv.len() - from);
        buf[..n].copy_from_slice(&auxv[from..from + n]);
        Ok(n)
    }
}
