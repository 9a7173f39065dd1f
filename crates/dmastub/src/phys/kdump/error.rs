//! Why a file is not a kdump-compressed or flattened dump dmastub can read.

use crate::phys::ElfError;

/// Why a kdump-compressed (or flattened) file cannot be read: what is wrong, and at which file
/// offset. Kept as the source of an [`OpenError::Kdump`](crate::phys::OpenError::Kdump).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KdumpError {
    /// No `"KDUMP   "` or `"DISKDUMP"` at offset 0.
    #[error("no kdump signature at offset 0 (found {found:?}, expected \"KDUMP   \" or \"DISKDUMP\")")]
    Signature {
        /// What stands there.
        found: String,
    },
    /// A structure or table whose bytes are not all in the file.
    #[error("{what} at offset {offset:#x} ({len:#x} bytes) runs past the end of the file ({size:#x} bytes)")]
    PastEnd {
        /// What it is: "disk_dump_header", "bitmap2", "page descriptors".
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's size.
        size: u64,
    },
    /// A header field whose value no real dump has.
    #[error("{what} {value:#x} at offset {offset:#x} {why}")]
    BadField {
        /// The field: "block_size", "header_version".
        what: &'static str,
        /// Its value.
        value: u64,
        /// Where it is in the file.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The notes the sub-header points at are malformed.
    #[error("ELF notes at offset {offset:#x}: {source}")]
    Notes {
        /// Where they start.
        offset: u64,
        /// What the note parser found.
        #[source]
        source: ElfError,
    },
    /// No pfn is valid: the dump holds no memory.
    #[error("bitmap1 at offset {offset:#x} marks no page as RAM: the dump holds no memory")]
    NoRam {
        /// Where bitmap1 starts.
        offset: u64,
    },
    /// A flattened stream's header is wrong.
    #[error("flattened: header at offset 0: {0}")]
    FlatHeader(String),
    /// A flattened record cannot be used.
    #[error("flattened: record at offset {offset:#x} (for offset {target}, {len} bytes): {why}")]
    FlatRecord {
        /// Where the record header is in the flattened file.
        offset: u64,
        /// The offset in the kdump file it writes.
        target: i64,
        /// How many bytes it carries.
        len: i64,
        /// What is wrong.
        why: &'static str,
    },
    /// A flattened stream without its end marker.
    #[error(
        "flattened: no end marker (offset -1, size -1) after the record at offset {0:#x}: the stream was cut short"
    )]
    FlatNoEnd(u64),
}
