//! The kernel log (`dmesg`) read straight from memory, for `monitor dmesg [N]` and
//! `dmastub dmesg`: after a panic, or on a machine we can only read, it is the first thing one
//! wants and the kernel can no longer print it.
//!
//! Two formats, tried in this order because 5.10+ kernels still have a `log_buf` symbol:
//!
//! * the lockless ring buffer of Linux 5.10+ (`prb`, `struct printk_ringbuffer`): a descriptor
//!   ring, a parallel `printk_info` array and a text data ring;
//! * the `log_buf` of Linux 3.5–5.9: `struct printk_log` headers each followed by their text,
//!   in one byte ring.
//!
//! Everything is untrusted (a crashed kernel, a torn live read, or simply the wrong guess):
//! ring sizes are range-checked, every walk is bounded by the ring size, at most
//! `MAX_READ_BYTES` are read, and a bad record is skipped and counted rather than trusted.
//! Arrays are read in [`CHUNK`]-sized pieces on first use, not field by field, because a read
//! may be a DMA round trip of ~10 µs.

use super::readahead::ReadAhead;
use super::{Memory, Symbols, TypeInfo};
use crate::bytes::LeBytes;
use crate::mmu::MemError;

mod log_buf;
mod prb;
mod read;
mod render;
#[cfg(test)]
mod tests;

use log_buf::read_log_buf;
use prb::read_prb;
use read::Reader;

/// Largest `prb_desc_ring.count_bits` accepted: 16 Mi descriptors, far above any real kernel
/// (`log_buf_len` is at most 2 GiB with 32 bytes per descriptor on average), small enough that
/// a garbage value cannot make us walk for minutes.
pub const MAX_COUNT_BITS: u32 = 24;
/// Largest `prb_data_ring.size_bits` accepted (1 GiB of text).
pub const MAX_SIZE_BITS: u32 = 30;
/// Most bytes one [`read_log`] reads, whatever the rings claim.
pub const MAX_READ_BYTES: u64 = 64 << 20;
/// Granule of the array reads: large enough that a typical 128 KiB log takes a handful of
/// reads, small enough that a huge ring is only read where the walk goes.
const CHUNK: u64 = 256 << 10;
/// Largest struct size believed from a layout: a garbage size must not become a huge
/// allocation or an overflow.
const MAX_STRUCT: u64 = 4096;

/// One log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The kernel's sequence number (in `log_buf` kernels counted from `log_first_seq`).
    pub seq: u64,
    /// `local_clock()` at the time of the `printk`, in nanoseconds since boot.
    pub ts_nsec: u64,
    /// The syslog level (0 = emerg … 7 = debug), if the layout says where it is.
    pub level: Option<u8>,
    /// The text, lossy UTF-8, with control characters other than `\n` and `\t` written as
    /// `\xNN` so that a corrupt record cannot drive the terminal.
    pub text: String,
}

/// The kernel log as found in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLog {
    /// Oldest first.
    pub records: Vec<LogRecord>,
    /// `"printk ring buffer"` or `"log_buf"`.
    pub format: &'static str,
    /// Where the struct offsets came from, and which were assumed (e.g. the `printk_info.level`
    /// bitfield, which VMCOREINFO does not export).
    pub layout: String,
    /// What was skipped or where reading stopped, one sentence each.
    pub problems: Vec<String>,
}

/// Why no log could be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrintkError {
    /// Neither a `prb` nor a `log_buf` symbol.
    #[error(
        "no kernel log symbol: looked for `prb` (printk ring buffer, Linux 5.10+) and `log_buf` (Linux 3.5-5.9)"
    )]
    NoSymbol,
    /// The layout lacks a member the log needs.
    #[error("the kernel log needs the offset of {field}, which the layout ({origin}) does not give")]
    MissingOffset {
        /// The header field, by name.
        field: String,
        /// Where the layout came from.
        origin: String,
    },
    /// The layout lacks a struct's size.
    #[error("the kernel log needs the size of struct {ty}, which the layout ({origin}) does not give")]
    MissingSize {
        /// The struct.
        ty: String,
        /// Where the layout came from.
        origin: String,
    },
    /// The layout's offsets or sizes cannot be right.
    #[error("the layout ({origin}) is not believable: {why}")]
    BadLayout {
        /// Where the layout came from.
        origin: String,
        /// What is wrong.
        why: String,
    },
    /// Memory the log needs could not be read.
    #[error("cannot read {what} at {addr:#x}: {source}")]
    Unreadable {
        /// What was being read.
        what: String,
        /// The address.
        addr: u64,
        /// Why it could not be.
        #[source]
        source: MemError,
    },
    /// The `MAX_READ_BYTES` budget ran out.
    #[error("cannot read {what} at {addr:#x}: the read limit was reached")]
    ReadLimit {
        /// What was being read.
        what: String,
        /// The address.
        addr: u64,
    },
    /// An offset computed from the rings lies outside their array.
    #[error("cannot read {what} at {addr:#x}: outside its array")]
    OutsideArray {
        /// What was being read.
        what: String,
        /// The address.
        addr: u64,
    },
    /// A structure read is not believable.
    #[error("{what} at {addr:#x} is corrupt: {why}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// The address.
        addr: u64,
        /// What is wrong.
        why: String,
    },
}

impl PrintkError {
    /// Whether the device itself failed (see [`MemError::is_device_failure`]).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, PrintkError::Unreadable { source, .. } if source.is_device_failure())
    }
}

/// Reads the kernel log: the printk ring buffer if there is a `prb` symbol, else `log_buf`.
pub fn read_log(
    mem: &mut dyn Memory,
    syms: &dyn Symbols,
    types: &dyn TypeInfo,
) -> Result<KernelLog, PrintkError> {
    let mut rd = Reader::new(mem);
    if let Some(prb) = syms.address("prb") {
        read_prb(&mut rd, prb, types)
    } else if let Some(log_buf) = syms.address("log_buf") {
        read_log_buf(&mut rd, log_buf, syms, types)
    } else {
        Err(PrintkError::NoSymbol)
    }
}

/// Record text as we show it: see [`LogRecord::text`].
fn clean_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}
