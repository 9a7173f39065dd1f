//! The gdb layer's errors, typed by what they do to the session (as gdbstub splits them): a
//! [`RequestError`] refuses one request with an error reply and the session goes on; a
//! [`CommandError`] is a `monitor` command's answer; only a [`FatalError`] would end the
//! session.

use crate::mmu::MemError;

/// An error that ends the gdb session (the server keeps listening for the next one).
///
/// dmastub has none today: every failure of the machine's memory, even of the device it is
/// read through, refuses only the request that met it (`RequestError`), since the next
/// request may succeed (a DMA link recovers, another address is mapped). The type is what
/// gdbstub's target returns, so a future fatal condition has its place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FatalError {}

/// Why one gdb request was refused: gdb gets an error reply (it prints "Cannot access memory
/// at address …" for memory) and the session goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RequestError {
    /// The memory could not be read or written.
    #[error(transparent)]
    Memory(#[from] MemError),
    /// A write to a server that only reads.
    #[error("the server is read-only (writes were not allowed when it started)")]
    ReadOnly,
    /// A register other than CR3 was written.
    #[error("only cr3 (the page-table root dmastub walks) can be set")]
    RegisterReadOnly {
        /// The register's name.
        name: &'static str,
    },
    /// `attach PID` named no task.
    #[error("no task with that pid in the task list")]
    NoSuchTask {
        /// The pid asked for.
        pid: u64,
    },
    /// `run`: dmastub starts nothing.
    #[error(
        "dmastub cannot start programs on the machine, it only reads its memory ('attach PID' selects a task)"
    )]
    CannotRun,
}

/// Why a `monitor` command could not do what it was asked: the message is its answer, and the
/// session goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CommandError {
    /// A Linux command without a kernel found in memory.
    #[error("no Linux kernel was found in this memory (see the server's log); this command needs one")]
    NoLinux,
    /// A PID out of range.
    #[error("{0} is not a PID")]
    NotAPid(u64),
    /// `bt` without a PID while gdb's thread is not a task.
    #[error("gdb's selected thread is not a task (no task list was read): give a PID")]
    NoSelectedTask,
    /// The Linux layer could not answer.
    #[error(transparent)]
    Linux(Box<dyn std::error::Error + Send + Sync>),
}

impl CommandError {
    /// The Linux layer's error, whatever its type (its own error, or its message).
    pub(crate) fn linux(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        CommandError::Linux(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VirtAddr;
    use crate::addr::PhysAddr;
    use crate::mmu::{Level, TranslateError};
    use crate::phys::PhysError;
    use std::error::Error;

    #[test]
    fn a_device_failure_is_recognised_through_the_layers() {
        let device = PhysError::device(PhysAddr(0x1000), "nic", "timed out");
        let table = TranslateError::TableUnreadable {
            virt: VirtAddr(0xffff_8880_0000_0000),
            level: Level::Pd,
            table: PhysAddr(0x1000),
            source: device.clone(),
        };
        let e = RequestError::from(MemError::from(table));
        assert!(matches!(&e, RequestError::Memory(m) if m.is_device_failure()));
        // The physical error stays reachable as the source, not flattened into text.
        let source = e.source().expect("the phys error is the source");
        assert_eq!(source.downcast_ref::<PhysError>(), Some(&device));
        let not_ram = PhysError::NotRam { addr: PhysAddr(0), len: 1, source_name: "x".into() };
        assert!(!MemError::from(not_ram).is_device_failure());
    }

    #[test]
    fn a_linux_error_keeps_its_message() {
        let e = CommandError::linux("no task with pid 7");
        assert_eq!(e.to_string(), "no task with pid 7");
        assert!(CommandError::NoLinux.to_string().contains("no Linux kernel was found"));
    }
}
