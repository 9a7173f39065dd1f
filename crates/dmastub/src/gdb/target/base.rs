//! gdbstub's base traits: the target itself, registers, memory, the thread list and resume
//! requests (answered at once: the machine's CPUs are not dmastub's to run).

use super::ReadCapture;
use super::{Client, DmaTarget, FatalError, MACHINE_TID, READ_PIECE, REPLY_BUDGET};
use crate::gdb::arch::{DmaRegId, DmaRegs, X86_64System, reg_name, regnum};
use crate::gdb::error::RequestError;
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::auxv::AuxvOps;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::single_register_access::{SingleRegisterAccess, SingleRegisterAccessOps};
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::extended_mode::ExtendedModeOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::ext::section_offsets::SectionOffsetsOps;
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use log::{debug, info, warn};
use std::time::Instant;

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

    fn support_auxv(&mut self) -> Option<AuxvOps<'_, Self>> {
        // Offered from the start (gdb asks what is supported once, at connect); empty until
        // `monitor switch PID` chooses a process.
        if self.linux.is_some() { Some(self) } else { None }
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
            Some(cr3) if Some(cr3) != self.state.cr3() => {
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
        if let ReadCapture::Armed(mut buf) = std::mem::take(&mut self.read_capture) {
            buf.extend_from_slice(&data[..done]);
            self.read_capture = ReadCapture::Done(buf);
            crate::gdb::reply::stop_checksum_scan(data);
            return Ok(0);
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let tid = self.memory_thread(tid);
        self.follow_thread(tid);
        self.text_pages.clear();
        if !self.allow_write {
            warn!("refused a write of {} bytes at {start:#x}: {}", data.len(), RequestError::ReadOnly);
            return Err(TargetError::NonFatal);
        }
        self.state.write(&mut self.space, start, data).map_err(|e| {
            warn!("write {start:#x} (+{:#x}): {}", data.len(), RequestError::from(e));
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
            let name = reg_name(reg.0);
            warn!("refused a write of register {name}: {}", RequestError::RegisterReadOnly { name });
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
        // The session answers the resume itself (see `session.rs`): nothing runs.
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
