//! Telling a memory image's format from its first bytes, and recognising the files dmastub
//! cannot read (compressed images, pipes and devices) so that the
//! error says what to do instead.

use super::{elf, kdump, lime};

/// The layout of a memory image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// File offset = physical address.
    Raw,
    /// ELF core (QEMU `dump-guest-memory`, kdump vmcore): PT_LOAD `p_paddr` is the address.
    Elf,
    /// LiME: 32-byte range headers, each followed by that range's bytes.
    Lime,
    /// kdump-compressed (diskdump): makedumpfile's and QEMU's `"KDUMP   "` files.
    Kdump,
    /// makedumpfile's flattened stream of a kdump-compressed file (`"makedumpfile"`).
    Flattened,
}

/// A file dmastub recognises but cannot read as memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreadable {
    /// A directory.
    Directory,
    /// A FIFO: reading it would wait for a writer, and it cannot be read at random offsets.
    Fifo,
    /// A socket.
    Socket,
    /// A character device.
    CharDevice,
    /// zstd-compressed.
    Zstd,
    /// gzip-compressed.
    Gzip,
    /// xz-compressed.
    Xz,
    /// bzip2-compressed.
    Bzip2,
    /// lz4-compressed.
    Lz4,
    /// AVML's compressed LiME variant.
    Avml,
}

impl Unreadable {
    /// What the file is.
    pub fn what(self) -> &'static str {
        match self {
            Unreadable::Directory => "a directory",
            Unreadable::Fifo => "a FIFO (named pipe), not a file that can be read at any offset",
            Unreadable::Socket => "a socket, not a file that can be read at any offset",
            Unreadable::CharDevice => "a character device, not a file that can be read at any offset",
            Unreadable::Zstd => "zstd-compressed",
            Unreadable::Gzip => "gzip-compressed",
            Unreadable::Xz => "xz-compressed",
            Unreadable::Bzip2 => "bzip2-compressed",
            Unreadable::Lz4 => "lz4-compressed",
            Unreadable::Avml => "an AVML compressed image",
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Unreadable::Directory => "pass the memory image file inside it",
            Unreadable::Fifo => {
                "save the stream to a file first (e.g. `cat FIFO > image.raw`) and pass that file"
            }
            Unreadable::Socket => "pass a memory image file",
            Unreadable::CharDevice => {
                "pass a memory image file, a VM's RAM file (e.g. under /dev/shm) or a block device"
            }
            Unreadable::Zstd => "unpack it first with `zstd -d`",
            Unreadable::Gzip => "unpack it first with `gunzip`",
            Unreadable::Xz => "unpack it first with `xz -d`",
            Unreadable::Bzip2 => "unpack it first with `bunzip2`",
            Unreadable::Lz4 => "unpack it first with `lz4 -d`",
            Unreadable::Avml => "convert it to LiME with `avml-convert`",
        }
    }
}

/// What kind of file `meta` describes, if it is one dmastub cannot read at random offsets; a
/// block device (a raw partition or a persistent-memory device holding an image) is allowed.
pub(crate) fn unreadable_kind(meta: &std::fs::Metadata) -> Option<Unreadable> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        Some(Unreadable::Directory)
    } else if t.is_fifo() {
        Some(Unreadable::Fifo)
    } else if t.is_socket() {
        Some(Unreadable::Socket)
    } else if t.is_char_device() {
        Some(Unreadable::CharDevice)
    } else {
        None
    }
}

/// What the first bytes of a file say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// A format dmastub reads.
    Format(Format),
    /// A format it recognises and cannot read.
    Unreadable(Unreadable),
    /// Nothing recognised, and a size no RAM image has.
    NotRaw,
}

/// The format of a non-empty file from its first bytes and size.
pub(crate) fn detect(data: &[u8], size: u64) -> Detected {
    let starts = |magic: &[u8]| data.starts_with(magic);
    let lime_magic = lime::MAGIC.to_le_bytes();
    let avml_magic = lime::AVML_MAGIC.to_le_bytes();
    let magics: &[(&[u8], Detected)] = &[
        (elf::MAGIC, Detected::Format(Format::Elf)),
        (&lime_magic, Detected::Format(Format::Lime)),
        (&[0x28, 0xb5, 0x2f, 0xfd], Detected::Unreadable(Unreadable::Zstd)),
        (&[0x1f, 0x8b], Detected::Unreadable(Unreadable::Gzip)),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Detected::Unreadable(Unreadable::Xz)),
        (b"BZh", Detected::Unreadable(Unreadable::Bzip2)),
        (&[0x04, 0x22, 0x4d, 0x18], Detected::Unreadable(Unreadable::Lz4)),
        (&kdump::header::SIGNATURE, Detected::Format(Format::Kdump)),
        (&kdump::header::DISKDUMP_SIGNATURE, Detected::Format(Format::Kdump)),
        (kdump::FLAT_SIGNATURE, Detected::Format(Format::Flattened)),
        (&avml_magic, Detected::Unreadable(Unreadable::Avml)),
    ];
    if let Some((_, d)) = magics.iter().find(|(m, _)| starts(m)) {
        return *d;
    }
    if !size.is_multiple_of(crate::addr::PAGE_SIZE) {
        return Detected::NotRaw;
    }
    Detected::Format(Format::Raw)
}
