//! Why discovery failed, and which hints would help.

use crate::linux::origin::{Hint, Remedies};
use crate::mmu::MemError;

/// Reads that failed: how many of how many, and the first error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{failed} of {total} reads {what} failed: {first} ({})", failure_kind(first))]
pub struct FailedReads {
    /// What was being read ("below 1 MiB", "of the BTF at …").
    pub what: String,
    /// Reads that failed.
    pub failed: usize,
    /// Reads made.
    pub total: usize,
    /// The first failure (boxed: it keeps every error that carries it small).
    #[source]
    pub first: Box<MemError>,
    /// Whether any of the failures was the device's.
    pub device: bool,
}

impl FailedReads {
    /// The failures among `results`, if any, reading `what`.
    pub(crate) fn of(results: &[Result<(), MemError>], what: &str) -> Option<Self> {
        let first = Box::new(results.iter().find_map(|r| r.as_ref().err())?.clone());
        Some(Self {
            what: what.to_string(),
            failed: results.iter().filter(|r| r.is_err()).count(),
            total: results.len(),
            first,
            device: results.iter().any(|r| r.as_ref().is_err_and(MemError::is_device_failure)),
        })
    }

    /// Whether the device failed (no adapter, timeouts), rather than the data being absent.
    pub fn is_device_failure(&self) -> bool {
        self.device
    }
}

/// Whether a failed read says the device failed, or that the data is not there: for messages
/// that must not pass one off as the other.
pub(crate) fn failure_kind(e: &MemError) -> &'static str {
    if e.is_device_failure() { "device" } else { "not in memory" }
}

/// Why the real-mode trampoline was not found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrampolineError {
    /// Every page below 1 MiB was read, and none holds a real-mode header.
    #[error("no real-mode header in the {pages} RAM pages below 1 MiB")]
    Absent {
        /// Pages searched.
        pages: usize,
    },
    /// Some pages could be read, and none of those holds a real-mode header.
    #[error("no real-mode header in the {read} RAM pages below 1 MiB that could be read; {failed}")]
    AbsentWhereRead {
        /// Pages read and searched.
        read: usize,
        /// The reads that failed.
        #[source]
        failed: FailedReads,
    },
    /// No page below 1 MiB could be read.
    #[error("{0}")]
    Unreadable(#[source] FailedReads),
}

impl TrampolineError {
    /// Whether the device failed for every page: nothing could be searched.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, TrampolineError::Unreadable(f) if f.device)
    }
}

/// Why the kernel image was not found under a root.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The entry point given or found is not mapped.
    #[error("the entry point {0:#x} is not mapped")]
    EntryUnmapped(u64),
    /// Too much is mapped below the entry point for a kernel image.
    #[error("more than 128 MiB mapped below the entry point {0:#x}")]
    TooLong(u64),
    /// Nothing at all is mapped where the kernel image would be.
    #[error("nothing mapped in the top 2 GiB")]
    NothingMapped,
}

/// Why no kernel was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// No page-table root that maps the kernel image was found.
    #[error("no kernel page tables found: {}", no_root(notes, trampoline.as_ref()))]
    NoRoot {
        /// What was tried, and what was not believed, before the trampoline.
        notes: Vec<String>,
        /// Why the real-mode trampoline was not found, when it was looked for.
        #[source]
        trampoline: Option<TrampolineError>,
    },
    /// The root maps no kernel image.
    #[error("no kernel image found under CR3 {cr3:#x}: {source}")]
    NoImage {
        /// The root searched.
        cr3: u64,
        /// What was (not) mapped.
        #[source]
        source: ImageError,
    },
    /// The source failed as a device (no adapter, timeouts): no hint would help.
    #[error("the memory cannot be read: {0}")]
    Unreadable(#[source] FailedReads),
}

fn no_root(notes: &[String], trampoline: Option<&TrampolineError>) -> String {
    let mut all: Vec<String> = notes.to_vec();
    all.extend(trampoline.map(|t| format!("real-mode trampoline: {t}")));
    if all.is_empty() { "nothing to start from".to_string() } else { all.join("; ") }
}

impl DiscoverError {
    /// Whether the device failed: no hint would help.
    pub fn is_device_failure(&self) -> bool {
        match self {
            DiscoverError::Unreadable(f) => f.is_device_failure(),
            DiscoverError::NoRoot { trampoline, .. } => {
                trampoline.as_ref().is_some_and(TrampolineError::is_device_failure)
            }
            DiscoverError::NoImage { .. } => false,
        }
    }

    /// What the user could give instead: alternatives, each a set of hints.
    pub fn remedies(&self) -> Remedies {
        match self {
            DiscoverError::NoRoot { .. } => {
                &[&[Hint::Cr3], &[Hint::SystemMap, Hint::Kaslr], &[Hint::Vmlinux, Hint::Kaslr]]
            }
            DiscoverError::NoImage { .. } => &[&[Hint::Kaslr], &[Hint::Cr3]],
            DiscoverError::Unreadable(_) => &[],
        }
    }
}
