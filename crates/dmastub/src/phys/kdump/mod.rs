//! kdump-compressed (diskdump) vmcores and makedumpfile's flattened streams, as a memory source.
//!
//! What kdump's makedumpfile writes on distributions (`-c`/`-l`/`-p`/`-z`, `-d 31`) and QEMU's
//! `dump-guest-memory -z/-l/-s`: a header, two bitmaps (pages that are RAM, pages the dump
//! holds), one descriptor per held page and the pages, each compressed on its own. [`KdumpMem`]
//! reads it as physical memory: RAM is what bitmap1 marks, and a page of RAM the dump level left
//! out reads as [`PhysError::Excluded`](crate::phys::PhysError::Excluded), never as zeros. The
//! flattened form (`makedumpfile -F`) is read in place through an index of its records.
//!
//! [`header`] holds the on-disk structures and [`codec`] the page compressions; both are shared
//! with `dmastub dump`, which writes what this module reads.

pub mod codec;
mod error;
pub mod header;
mod reader;
mod store;

pub use codec::Compression;
pub use error::KdumpError;
pub use header::{DiskDumpHeader, PageDesc, SubHeader};
pub use reader::KdumpMem;
pub(crate) use store::FLAT_SIGNATURE;

#[cfg(test)]
mod tests;
