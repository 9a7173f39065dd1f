//! Why a command over a discovered kernel failed ([`LinuxError`]), and which hints would help.

use super::discover::FailedReads;
use super::origin::{Hint, Remedies};
use super::printk::PrintkError;
use super::threads::UserRegsError;
use super::unwind::UnwindError;

/// Why there is no task layout (the struct layout lacks what the task list needs).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The layout has no offset for a field the task list needs.
    #[error("the struct layout ({origin}) has no {what}")]
    Missing {
        /// The field, `struct.member`.
        what: String,
        /// Where the layout came from.
        origin: String,
    },
    /// The kernel has no BTF in memory and no built-in profile matches it.
    #[error("no struct layout: the kernel has no BTF in memory and no built-in profile matches it")]
    NoLayout,
    /// The kernel's BTF is in memory, but reading it failed.
    #[error("no struct layout: the kernel's BTF is in memory, but {0} (reading again may succeed)")]
    BtfUnreadable(#[source] FailedReads),
}

impl LayoutError {
    /// Whether the device failed reading the BTF: no hint is needed, only another try.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, LayoutError::BtfUnreadable(f) if f.is_device_failure())
    }
}

/// Why tasks' registers cannot be read: where the scheduler saves them is unknown.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThreadLayoutError {
    /// The struct layout lacks what the switch frame needs.
    #[error("the struct layout ({origin}) has no {what}: task registers unavailable")]
    Missing {
        /// The field or struct.
        what: &'static str,
        /// Where the layout came from.
        origin: String,
    },
    /// The layout's `inactive_task_frame` cannot be the kernel's.
    #[error("the struct layout ({origin}) gives an implausible inactive_task_frame")]
    Implausible {
        /// Where the layout came from.
        origin: String,
    },
    /// There is no task layout either.
    #[error(transparent)]
    NoTasks(#[from] LayoutError),
}

/// Why a Linux command (`ps`, `threads`, `bt`, `dmesg`, `switch`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinuxError {
    /// No task layout: the task list cannot be read.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// No struct layout at all (the kernel log needs one).
    #[error("no struct layout")]
    NoTypes,
    /// No `init_task` symbol: the kernel's symbols were not found.
    #[error("no init_task symbol: the kernel's symbols were not found")]
    NoInitTask,
    /// The task list read has no task at all.
    #[error("no tasks: {0}")]
    NoTasks(String),
    /// No task has this pid.
    #[error("no task with pid {pid} {among}{}", why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    NoSuchPid {
        /// The pid asked for.
        pid: u64,
        /// What was searched ("among the 93 tasks and threads").
        among: String,
        /// Why the list may be incomplete.
        why: Option<String>,
    },
    /// The task is a kernel thread: it has no address space of its own.
    #[error(
        "pid {pid} ({comm}) is a kernel thread: it has no address space of its own; 'switch kernel' shows the kernel's"
    )]
    KernelThread {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// The task's `mm->pgd` could not be read or translated.
    #[error("pid {pid} ({comm}): its mm->pgd could not be read or translated")]
    NoPgd {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// No user-mode registers for the task: why (a kernel thread, no user entry frame).
    #[error(transparent)]
    UserRegs(#[from] UserRegsError),
    /// The kernel log could not be read.
    #[error(transparent)]
    Log(#[from] PrintkError),
    /// No backtrace for the thread: why (no registers, no unwind tables, unreadable memory).
    #[error(transparent)]
    Unwind(#[from] UnwindError),
    /// A process's memory map could not be read.
    #[error(transparent)]
    Maps(Box<super::mm::MapsError>),
}

impl From<super::mm::MapsError> for LinuxError {
    fn from(e: super::mm::MapsError) -> Self {
        LinuxError::Maps(Box::new(e))
    }
}

impl LinuxError {
    /// Whether the device failed (no adapter, timeouts): no hint would help.
    pub fn is_device_failure(&self) -> bool {
        match self {
            LinuxError::Layout(e) => e.is_device_failure(),
            LinuxError::Log(e) => e.is_device_failure(),
            LinuxError::Unwind(e) => e.is_device_failure(),
            LinuxError::Maps(e) => e.is_device_failure(),
            _ => false,
        }
    }

    /// What the user could give instead: alternatives, each a set of hints.
    pub fn remedies(&self) -> Remedies {
        const LAYOUT: Remedies = &[&[Hint::Btf], &[Hint::Profile]];
        match self {
            LinuxError::Layout(_) | LinuxError::NoTypes => LAYOUT,
            LinuxError::NoInitTask => &[&[Hint::SystemMap], &[Hint::Vmlinux]],
            LinuxError::Unwind(e) => e.remedies(),
            _ => &[],
        }
    }
}
