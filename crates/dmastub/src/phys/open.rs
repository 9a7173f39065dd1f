//! Opening a memory image or live RAM file: [`open_file`], its options and its errors.

use super::elf::{self, ElfError};
use super::file::{FileMem, WriteMode};
use super::format::{self, Detected, Format, Unreadable};
use super::kdump::{KdumpError, KdumpMem};
use super::lime::{self, LimeError};
use super::ranges::{FileRange, FileReader, ReadAt};
use super::{PhysMem, Remedy, SourceKind};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How [`open_file`] opens a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The file is a live VM's RAM (QEMU `memory-backend-file,share=on`): read as raw whatever
    /// its first bytes, and reported as volatile because the guest keeps changing it.
    /// `format` is ignored.
    pub live: bool,
    /// Whether writes are refused, kept private, or reach the file.
    pub write: WriteMode,
    /// Forces a format instead of detecting it from the first bytes.
    pub format: Option<Format>,
}

/// Why a file could not be opened as physical memory. Every message starts with the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The operating system refused.
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing: "open", "find the size".
        what: &'static str,
        /// Its error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{}: empty file: it holds no memory", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A file we recognise but cannot read; [`Unreadable::hint`] says what to do about it.
    #[error("{}: {}: {}", path.display(), kind.what(), kind.hint())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: Unreadable,
    },
    /// Nothing recognised, and a size no RAM image has ([`Remedy::ForceRawFormat`]).
    #[error(
        "{}: not an ELF core or LiME dump, and size {size} is not a multiple of 4 KiB: not a raw RAM image",
        path.display()
    )]
    NotRaw {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// An ELF file that is not a core dmastub can read.
    #[error("{}: ELF core: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: ElfError,
    },
    /// A LiME file that dmastub cannot read.
    #[error("{}: LiME: {source}", path.display())]
    Lime {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: LimeError,
    },
    /// A kdump-compressed or flattened file that dmastub cannot read.
    #[error("{}: kdump-compressed: {source}", path.display())]
    Kdump {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: KdumpError,
    },
    /// Writes were asked for on a format that cannot take them.
    #[error("{}: a {format:?} file cannot be written: open it read-only", path.display())]
    ReadOnlyFormat {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
    },
    /// [`FileMem::open`] on a format another source reads ([`open_file`] picks the right one).
    #[error("{}: a {format:?} file is not read by FileMem: open it with open_file", path.display())]
    OtherSource {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
    },
    /// A parser produced a range table that does not fit the file: a bug of ours.
    #[error("{}: internal: file range {range:?} does not fit a {size}-byte file, or is out of order", path.display())]
    BadRange {
        /// The file.
        path: PathBuf,
        /// The range.
        range: FileRange,
        /// The file's size.
        size: u64,
    },
}

impl OpenError {
    /// What the user can change to open the file anyway, if anything.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            OpenError::NotRaw { .. } => Some(Remedy::ForceRawFormat),
            _ => None,
        }
    }
}

/// Opens a memory image or live RAM file as physical memory, as the source its format needs:
/// a [`FileMem`] for raw images, live RAM files, ELF cores and LiME dumps, a [`KdumpMem`] for
/// kdump-compressed and flattened files.
pub fn open_file(path: &Path, opts: &OpenOptions) -> Result<Box<dyn PhysMem>, OpenError> {
    let (file, size, format) = open_detect(path, opts)?;
    match format {
        Format::Kdump | Format::Flattened => {
            if opts.write != WriteMode::ReadOnly {
                return Err(OpenError::ReadOnlyFormat { path: path.to_path_buf(), format });
            }
            let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
            let mem = KdumpMem::from_file(name, file, size)
                .map_err(|source| OpenError::Kdump { path: path.to_path_buf(), source })?;
            log::debug!("{}: {}", path.display(), mem.describe());
            Ok(Box::new(mem))
        }
        _ => Ok(Box::new(FileMem::from_detected(path, opts, file, size, format)?)),
    }
}

/// Opens `path` as `opts` asks, refusing what cannot be read at random offsets, and tells its
/// format (from `opts`, else from the first bytes).
fn open_detect(path: &Path, opts: &OpenOptions) -> Result<(std::fs::File, u64, Format), OpenError> {
    let path_buf = || path.to_path_buf();
    let io = |what: &'static str| move |source| OpenError::Io { path: path_buf(), what, source };
    let unreadable = |kind| OpenError::Unreadable { path: path_buf(), kind };
    // Refused before opening: opening a FIFO for reading waits for a writer.
    if let Some(kind) = std::fs::metadata(path).ok().as_ref().and_then(format::unreadable_kind) {
        return Err(unreadable(kind));
    }
    let shared = opts.write == WriteMode::Shared;
    // O_NONBLOCK in case the path became a FIFO since the check above; it changes nothing
    // for regular files and block devices, and the file is checked again once open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(shared)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io(if shared { "open for reading and writing" } else { "open" }))?;
    if let Some(kind) = format::unreadable_kind(&file.metadata().map_err(io("read metadata"))?) {
        return Err(unreadable(kind));
    }
    // Seeking, rather than metadata, also sizes block devices.
    let size = (&file).seek(SeekFrom::End(0)).map_err(io("find the size"))?;
    if size == 0 {
        return Err(OpenError::Empty { path: path_buf() });
    }
    let reader = FileReader { file: &file, size };
    let format = match (opts.live, opts.format) {
        (true, _) => Format::Raw,
        (false, Some(f)) => f,
        (false, None) => {
            let mut head = vec![0u8; size.min(crate::addr::PAGE_SIZE) as usize];
            if !reader.read_at(0, &mut head) {
                let e = std::io::Error::other("the file ended before its first bytes could be read");
                return Err(io("read the first bytes")(e));
            }
            match format::detect(&head, size) {
                Detected::Format(f) => f,
                Detected::Unreadable(kind) => return Err(unreadable(kind)),
                Detected::NotRaw => return Err(OpenError::NotRaw { path: path_buf(), size }),
            }
        }
    };
    Ok((file, size, format))
}

impl FileMem {
    /// Opens a memory image or live RAM file.
    ///
    /// The format comes from `opts.format`, else from the first bytes (see [`OpenOptions`]);
    /// files we recognise but cannot read (compressed, not an image at all) are refused with a
    /// message that says what to do, and kdump-compressed files with
    /// [`OpenError::OtherSource`] ([`open_file`] reads them). So are files that cannot
    /// be read at random offsets (FIFOs, sockets, character devices, directories): a FIFO would
    /// otherwise block forever waiting for a writer. Regular files and block devices are read.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, OpenError> {
        let (file, size, format) = open_detect(path, opts)?;
        Self::from_detected(path, opts, file, size, format)
    }

    fn from_detected(
        path: &Path,
        opts: &OpenOptions,
        file: std::fs::File,
        size: u64,
        format: Format,
    ) -> Result<Self, OpenError> {
        let path_buf = || path.to_path_buf();
        let reader = FileReader { file: &file, size };
        let (kind, ranges, notes) = match format {
            Format::Raw => {
                let kind = if opts.live { SourceKind::LiveRam } else { SourceKind::RawImage };
                let whole = FileRange { phys_start: 0, len: size, file_offset: 0, file_len: size };
                (kind, vec![whole], Vec::new())
            }
            Format::Elf => {
                let core =
                    elf::parse(&reader).map_err(|source| OpenError::Elf { path: path_buf(), source })?;
                (SourceKind::ElfCore, core.ranges, core.notes)
            }
            Format::Lime => {
                let ranges =
                    lime::parse(&reader).map_err(|source| OpenError::Lime { path: path_buf(), source })?;
                (SourceKind::Lime, ranges, Vec::new())
            }
            Format::Kdump | Format::Flattened => {
                return Err(OpenError::OtherSource { path: path_buf(), format });
            }
        };
        let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
        let mem = Self::new(name, kind, file, size, opts.write, ranges, notes)
            .map_err(|range| OpenError::BadRange { path: path_buf(), range, size })?;
        log::debug!("{}: {}", path.display(), mem.describe());
        Ok(mem)
    }
}
