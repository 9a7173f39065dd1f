//! kdump-compressed (diskdump) vmcores and makedumpfile's flattened streams, as a memory source.
//!
//! [`header`] holds the on-disk structures and [`codec`] the page compressions; both are shared
//! with `dmastub dump`, which writes what this module reads.

pub mod codec;
mod error;
pub mod header;

pub use codec::Compression;
pub use error::KdumpError;
pub use header::{DiskDumpHeader, PageDesc, SubHeader};
