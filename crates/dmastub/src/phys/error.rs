//! What can go wrong reading physical memory, and what a user can do about it.

use crate::addr::PhysAddr;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A failed read or write of physical memory. None of these end a gdb session: they become
/// an error reply ("Cannot access memory at address …").
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhysError {
    /// Some byte of the range is not RAM the source holds.
    #[error("phys {addr} (+{len:#x} bytes) is not RAM in {source_name}")]
    NotRam {
        /// The first byte asked for.
        addr: PhysAddr,
        /// How many bytes were asked for.
        len: u64,
        /// The source's [`PhysMem::name`](super::PhysMem::name).
        source_name: String,
    },
    /// A write to a source opened without writes ([`Remedy::AllowWrite`]).
    #[error("{source_name} is read-only")]
    ReadOnly {
        /// The source's [`PhysMem::name`](super::PhysMem::name).
        source_name: String,
    },
    /// The address is RAM, but the dump left its page out: a kdump-compressed file's dump level
    /// excluded it (zero, cache, user or free pages), or an incomplete dump stopped before it.
    /// The bytes are unknown, so they are never made up; not a device failure.
    #[error("{source_name}: physical {:#x} {reason}", addr.0)]
    Excluded {
        /// The first byte of the request on the excluded page.
        addr: PhysAddr,
        /// The source's [`PhysMem::name`](super::PhysMem::name).
        source_name: String,
        /// Why the dump does not hold the page.
        reason: Exclusion,
    },
    /// The device or file failed (timeouts, no adapter, a file that shrank): reading on would
    /// only fail again, slowly. See [`PhysError::is_device_failure`].
    #[error("reading phys {addr} from {source_name} failed: {why}")]
    Device {
        /// The first byte that could not be read or written.
        addr: PhysAddr,
        /// The source's [`PhysMem::name`](super::PhysMem::name).
        source_name: String,
        /// What failed and where, for people.
        why: String,
        /// The operating system's error behind it, when there is one.
        #[source]
        source: Option<IoError>,
    },
}

impl PhysError {
    /// A [`PhysError::Device`] without an operating-system error behind it.
    pub fn device(addr: PhysAddr, source_name: impl Into<String>, why: impl Into<String>) -> Self {
        PhysError::Device { addr, source_name: source_name.into(), why: why.into(), source: None }
    }

    /// Whether the device itself failed (no adapter, timeouts, a file that shrank), rather
    /// than the address being outside RAM: reading on would only wait out its timeout again.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, PhysError::Device { .. })
    }

    /// For a read at `addr` that is not sent because `self`, a device failure on `context`,
    /// came first: the same failure, at its own address (sending it would only wait out the
    /// device's timeout again). Any other error is returned as it is.
    pub fn not_sent_after(&self, addr: PhysAddr, context: &str) -> Self {
        match self {
            PhysError::Device { addr: failed, source_name, why, source } => PhysError::Device {
                addr,
                source_name: source_name.clone(),
                why: format!("not sent, since {context} failed at phys {failed}: {why}"),
                source: source.clone(),
            },
            other => other.clone(),
        }
    }

    /// What the user can change so that this does not happen again, if anything.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            PhysError::ReadOnly { .. } => Some(Remedy::AllowWrite),
            _ => None,
        }
    }
}

/// Why a dump does not hold a page of RAM ([`PhysError::Excluded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exclusion {
    /// makedumpfile's dump level (`-d N`) left the page's class out.
    DumpLevel(u32),
    /// The dump is marked incomplete and stopped before this page was written.
    NotCaptured,
    /// The page lies past the last page of a dump marked incomplete, whose dump level (`-d N`,
    /// above 0) could also have left it out: which of the two cannot be told.
    NotCapturedOrLevel(u32),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::DumpLevel(level) => write!(
                f,
                "was excluded by the dump (dump level {level}: {} left out)",
                super::kdump::header::excluded_classes(*level)
            ),
            Exclusion::NotCaptured => f.write_str("was not captured: the dump was stopped before this page"),
            Exclusion::NotCapturedOrLevel(level) => write!(
                f,
                "is not in the dump: it was stopped before this page, or dump level {level} left it out ({})",
                super::kdump::header::excluded_classes(*level)
            ),
        }
    }
}

/// An operating-system error kept as the [`source`](std::error::Error::source) of another
/// error. Shared so the errors that hold it can be cloned; two are equal when they have the same
/// kind and message.
#[derive(Debug, Clone)]
pub struct IoError(Arc<io::Error>);

impl IoError {
    /// The error itself.
    pub fn get_ref(&self) -> &io::Error {
        &self.0
    }

    /// Its kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }
}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError(Arc::new(e))
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for IoError {}

/// What a user can change to get past an error. Data, not text: each front end says it in its
/// own terms (the command line as a flag, a library user as a field of a config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Open the source with writes allowed ([`OpenOptions::write`](super::OpenOptions::write),
    /// [`NetTlpConfig::allow_write`](super::nettlp::NetTlpConfig::allow_write)).
    AllowWrite,
    /// Read the file as a raw image whatever its size
    /// ([`OpenOptions::format`](super::OpenOptions::format) = [`Format::Raw`](super::Format::Raw)).
    ForceRawFormat,
    /// Give a different value of this NetTLP setting.
    NetTlp(NetTlpSetting),
}

/// A setting of [`NetTlpConfig`](super::nettlp::NetTlpConfig) that an error names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetTlpSetting {
    /// `local`: our address on the adapter's link; it must be an address of this machine.
    Local,
    /// `tags`: requests in flight.
    Tags,
    /// `mrrs`: the max read request size.
    Mrrs,
    /// `timeout`: the first wait for completions.
    Timeout,
    /// `retries`: how many times a request is sent again.
    Retries,
    /// `deadline`: when every DMA read gives up.
    Deadline,
}

/// A scattered read that stopped: segment `index` failed, and every segment before it was
/// filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment {index}: {error}")]
pub struct SegmentError {
    /// The first segment that was not filled.
    pub index: usize,
    /// Why.
    #[source]
    pub error: PhysError,
}
