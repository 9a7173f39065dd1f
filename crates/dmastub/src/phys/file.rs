//! File-backed physical memory: raw images, live VM RAM files, ELF cores and LiME dumps.
//!
//! All three formats come down to the same thing once their headers are parsed: a sorted list
//! of [`FileRange`]s saying which bytes of the file hold which physical addresses. So one
//! struct, [`FileMem`], does the reading for all of them with `pread`, and the format modules
//! ([`super::elf`], [`super::lime`]) only turn headers into that list, reading them through
//! `ReadAt`. Nothing is memory-mapped: a mapped file that shrinks under us kills the process
//! with SIGBUS, whereas a `pread` past the new end only comes back short (see [`FileMem`]).

use super::elf::{self, CoreNote};
use super::{PhysError, PhysMem, RamRange, SourceKind, human_bytes, lime};
use crate::addr::PhysAddr;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
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

/// What [`PhysMem::write`] does to a file source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Writes fail with [`PhysError::ReadOnly`]; the file is opened read-only. A forensic tool
    /// must never change evidence by accident.
    #[default]
    ReadOnly,
    /// Writes change what later reads see but never reach the file (a private mapping): lets a
    /// user poke at a dump without altering it. On a live file, a page once written stops
    /// following the guest.
    CopyOnWrite,
    /// Writes reach the file (a shared mapping of a file opened read-write): changes a live
    /// VM's RAM, or a dump when the user asks for exactly that.
    Shared,
}

/// The layout of a memory image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// File offset = physical address.
    Raw,
    /// ELF core (QEMU `dump-guest-memory`, kdump vmcore): PT_LOAD `p_paddr` is the address.
    Elf,
    /// LiME: 32-byte range headers, each followed by that range's bytes.
    Lime,
}

/// Why a file could not be opened as physical memory. Every message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: empty file: it holds no memory", path.display())]
    Empty { path: PathBuf },
    /// A file we recognise but cannot read; `hint` says what to do about it.
    #[error("{}: {what}: {hint}", path.display())]
    Unsupported { path: PathBuf, what: &'static str, hint: &'static str },
    #[error(
        "{}: not an ELF core or LiME dump, and size {size} is not a multiple of 4 KiB: not a raw \
         RAM image; pass --format raw to read it anyway",
        path.display()
    )]
    NotRaw { path: PathBuf, size: u64 },
    #[error("{}: ELF core: {why}", path.display())]
    Elf { path: PathBuf, why: String },
    #[error("{}: LiME: {why}", path.display())]
    Lime { path: PathBuf, why: String },
}

/// Where one physical range lives in the file: `[phys_start, phys_start + len)` is RAM, its
/// first `file_len` bytes are at `file_offset`, and the rest reads as zeros (ELF
/// `p_filesz < p_memsz`, which makedumpfile uses for pages it knows are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRange {
    pub phys_start: u64,
    pub len: u64,
    pub file_offset: u64,
    pub file_len: u64,
}

impl FileRange {
    fn phys_end(&self) -> u64 {
        self.phys_start.saturating_add(self.len)
    }
}

/// What to do with a range that lies wholly inside another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aliases {
    /// Any overlap is an error (LiME: a dump of disjoint ranges).
    Refuse,
    /// Drop the contained range. Real kdump vmcores need this: the kernel and kexec-tools add a
    /// PT_LOAD for the kernel text mapping whose physical range is also inside a System RAM
    /// PT_LOAD; both were read from the same memory, so either copy is the truth. Partial
    /// overlaps are still refused.
    DropContained,
}

/// Sorts `ranges` by physical address and checks that they neither overlap nor wrap around
/// the 64-bit space: the one check ELF and LiME share. `label(i)` names the `i`th range of the
/// input for messages ("PT_LOAD 2", "range at offset 0x20"). Zero-length ranges are dropped.
pub(crate) fn sort_ranges(
    ranges: Vec<FileRange>,
    aliases: Aliases,
    label: impl Fn(usize) -> String,
) -> Result<Vec<FileRange>, String> {
    let show = |r: &FileRange| format!("[{:#x}, {:#x})", r.phys_start, r.phys_end());
    for (i, r) in ranges.iter().enumerate() {
        if r.phys_start.checked_add(r.len).is_none() {
            return Err(format!(
                "{} at phys {:#x} (+{:#x} bytes) runs past the top of the 64-bit address space",
                label(i),
                r.phys_start,
                r.len
            ));
        }
    }
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].len > 0).collect();
    // By start, and the longer first at the same start, so a contained range always comes
    // after the range that contains it.
    order.sort_by_key(|&i| (ranges[i].phys_start, std::cmp::Reverse(ranges[i].len)));
    let mut kept: Vec<usize> = Vec::with_capacity(order.len());
    for i in order {
        let r = &ranges[i];
        if let Some(&k) = kept.last() {
            // Kept ranges are disjoint and sorted, so only the last one can reach past r's start.
            let last = &ranges[k];
            if r.phys_start < last.phys_end() {
                if aliases == Aliases::DropContained && r.phys_end() <= last.phys_end() {
                    log::debug!("{} {} lies inside {}: ignored as an alias", label(i), show(r), label(k));
                    continue;
                }
                return Err(format!("{} {} overlaps {} {}", label(i), show(r), label(k), show(last)));
            }
        }
        kept.push(i);
    }
    Ok(kept.into_iter().map(|i| ranges[i]).collect())
}

/// Random access to the bytes of a file being parsed: the whole file as a slice (tests), or an
/// open file read with `pread` ([`FileReader`]). The header parsers ([`super::elf`],
/// [`super::lime`]) read through it, so they never need the file mapped.
pub(crate) trait ReadAt {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from offset `off`; `false` if any byte of it is past the end or unreadable.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool;
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        let from = usize::try_from(off).ok();
        match from.and_then(|f| self.get(f..f.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        self.as_slice().read_at(off, buf)
    }
}

/// The `N` bytes at `off` of a `dyn ReadAt`.
pub(crate) fn array_at<const N: usize>(data: &dyn ReadAt, off: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    data.read_at(off, &mut b).then_some(b)
}

/// An open file as [`ReadAt`], with the size it had when opened.
struct FileReader<'a> {
    file: &'a File,
    size: u64,
}

impl ReadAt for FileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        off.checked_add(buf.len() as u64).is_some_and(|end| end <= self.size)
            && self.file.read_exact_at(buf, off).is_ok()
    }
}

/// Opens a memory image or live RAM file as physical memory: [`FileMem::open`], boxed.
pub fn open_file(path: &Path, opts: &OpenOptions) -> Result<Box<dyn PhysMem>, OpenError> {
    Ok(Box::new(FileMem::open(path, opts)?))
}

/// At most this many bytes of pages changed under [`WriteMode::CopyOnWrite`] are kept, so that
/// writes from gdb cannot grow the process without bound.
const MAX_COW_BYTES: u64 = 256 << 20;
const PAGE: u64 = crate::addr::PAGE_SIZE;

/// Physical memory read from a file through a list of [`FileRange`]s: the one reader behind raw
/// images, live RAM files, ELF cores and LiME dumps.
///
/// Reads are `pread`s, not copies out of a memory map: a mapped file that another process
/// truncates (a VM shut down, a dump being rewritten) raises SIGBUS on the next touch of a page
/// past the new end, which kills the whole server and no check made before the access can rule
/// out. `pread` instead returns short, and the read fails with an error that says the file
/// shrank. The file's pages are not mapped into this process either, so reading a whole image
/// does not show up as resident memory of ours.
pub struct FileMem {
    name: String,
    kind: SourceKind,
    file: File,
    /// The size the file had when opened: every range lies inside it.
    size: u64,
    write: WriteMode,
    /// Under [`WriteMode::CopyOnWrite`]: the changed pages, by page-aligned file offset (the last
    /// page of a file whose size is not a multiple of a page holds only the file's bytes).
    cow: BTreeMap<u64, Box<[u8]>>,
    ranges: Vec<FileRange>,
    ram: Vec<RamRange>,
    notes: Vec<CoreNote>,
}

/// What kind of file `meta` describes, if it is one dmastub cannot read at random offsets; a
/// block device (a raw partition or a persistent-memory device holding an image) is allowed.
fn unreadable_kind(meta: &std::fs::Metadata) -> Option<(&'static str, &'static str)> {
    let t = meta.file_type();
    if t.is_dir() {
        Some(("a directory", "pass the memory image file inside it"))
    } else if t.is_fifo() {
        Some((
            "a FIFO (named pipe), not a file that can be read at any offset",
            "save the stream to a file first (e.g. `cat FIFO > image.raw`) and pass that file",
        ))
    } else if t.is_socket() {
        Some(("a socket, not a file that can be read at any offset", "pass a memory image file"))
    } else if t.is_char_device() {
        Some((
            "a character device, not a file that can be read at any offset",
            "pass a memory image file, a VM's RAM file (e.g. under /dev/shm) or a block device",
        ))
    } else {
        None
    }
}

impl FileMem {
    /// Opens a memory image or live RAM file.
    ///
    /// The format comes from `opts.format`, else from the first bytes (see [`OpenOptions`]);
    /// files we recognise but cannot read (compressed, makedumpfile's kdump format, not an
    /// image at all) are refused with a message that says what to do. So are files that cannot
    /// be read at random offsets (FIFOs, sockets, character devices, directories): a FIFO would
    /// otherwise block forever waiting for a writer. Regular files and block devices are read.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, OpenError> {
        let path_buf = || path.to_path_buf();
        let io = |what: &'static str| move |source| OpenError::Io { path: path_buf(), what, source };
        let unsupported = |(what, hint)| OpenError::Unsupported { path: path_buf(), what, hint };
        // Refused before opening: opening a FIFO for reading waits for a writer.
        if let Some(kind) = std::fs::metadata(path).ok().as_ref().and_then(unreadable_kind) {
            return Err(unsupported(kind));
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
        if let Some(kind) = unreadable_kind(&file.metadata().map_err(io("read metadata"))?) {
            return Err(unsupported(kind));
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
                let mut head = vec![0u8; size.min(PAGE) as usize];
                if !reader.read_at(0, &mut head) {
                    let e = std::io::Error::other("the file ended before its first bytes could be read");
                    return Err(io("read the first bytes")(e));
                }
                detect(path, &head, size)?
            }
        };
        let bad = |why: String| match format {
            Format::Elf => OpenError::Elf { path: path_buf(), why },
            Format::Lime => OpenError::Lime { path: path_buf(), why },
            Format::Raw => {
                OpenError::Io { path: path_buf(), what: "read", source: std::io::Error::other(why) }
            }
        };
        let (kind, ranges, notes) = match format {
            Format::Raw => {
                let kind = if opts.live { SourceKind::LiveRam } else { SourceKind::RawImage };
                let whole = FileRange { phys_start: 0, len: size, file_offset: 0, file_len: size };
                (kind, vec![whole], Vec::new())
            }
            Format::Elf => {
                let core = elf::parse(&reader).map_err(bad)?;
                (SourceKind::ElfCore, core.ranges, core.notes)
            }
            Format::Lime => (SourceKind::Lime, lime::parse(&reader).map_err(bad)?, Vec::new()),
        };
        let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
        let mem = Self::new(name, kind, file, size, opts.write, ranges, notes).map_err(bad)?;
        log::debug!("{}: {}", path.display(), mem.describe());
        Ok(mem)
    }

    /// `ranges` must be sorted and disjoint ([`sort_ranges`]); checked again here against the
    /// file's size, so that no read asks for bytes the file did not hold when opened.
    fn new(
        name: String,
        kind: SourceKind,
        file: File,
        size: u64,
        write: WriteMode,
        ranges: Vec<FileRange>,
        notes: Vec<CoreNote>,
    ) -> Result<Self, String> {
        for (i, r) in ranges.iter().enumerate() {
            let in_file = r.file_len == 0 || r.file_offset.checked_add(r.file_len).is_some_and(|e| e <= size);
            if r.len == 0 || r.file_len > r.len || !in_file || r.phys_start.checked_add(r.len).is_none() {
                return Err(format!("internal: bad file range {r:?} for a {size}-byte file"));
            }
            if i > 0 && ranges[i - 1].phys_end() > r.phys_start {
                return Err(format!("internal: file ranges not sorted at {r:?}"));
            }
        }
        let ram = ranges.iter().map(|r| RamRange { start: PhysAddr(r.phys_start), len: r.len }).collect();
        Ok(Self { name, kind, file, size, write, cow: BTreeMap::new(), ranges, ram, notes })
    }

    /// Where each physical range lives in the file (for `monitor` output and tests).
    pub fn ranges(&self) -> &[FileRange] {
        &self.ranges
    }

    fn not_ram(&self, addr: PhysAddr, len: usize) -> PhysError {
        PhysError::NotRam { addr, len: len as u64, source_name: self.name.clone() }
    }

    /// The index of the range holding `addr`, after checking that `[addr, addr + len)` is
    /// covered by that range and, if it runs on, by ranges that follow it with no gap.
    fn locate(&self, addr: PhysAddr, len: usize) -> Result<usize, PhysError> {
        let end = addr.0.checked_add(len as u64).ok_or_else(|| self.not_ram(addr, len))?;
        let first = self.ranges.partition_point(|r| r.phys_end() <= addr.0);
        let mut cur = addr.0;
        for r in self.ranges.get(first..).unwrap_or_default() {
            if r.phys_start > cur {
                break;
            }
            if r.phys_end() >= end {
                return Ok(first);
            }
            cur = r.phys_end();
        }
        Err(self.not_ram(addr, len))
    }

    /// The file's size now, for messages (seeking also sizes block devices).
    fn size_now(&self) -> Option<u64> {
        (&self.file).seek(SeekFrom::End(0)).ok()
    }

    /// Fills `buf` from the file at `off`, which holds physical address `phys`. A file that
    /// ends early (it shrank since it was opened) or fails to read is an error naming the
    /// first byte that could not be read.
    fn pread(&self, off: u64, phys: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => {
                    let now = self.size_now().map_or("unknown".to_string(), human_bytes);
                    let what = if self.kind == SourceKind::LiveRam { "live RAM file" } else { "file" };
                    let why = format!(
                        "physical {:#x} is beyond the {what}'s current end at offset {:#x} (now {now}, {} \
                         when opened: it shrank)",
                        phys + done as u64,
                        off + done as u64,
                        human_bytes(self.size)
                    );
                    return Err(self.device_error(phys + done as u64, why));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = format!("reading file offset {:#x}: {e}", off + done as u64);
                    return Err(self.device_error(phys + done as u64, why));
                }
            }
        }
        Ok(())
    }

    fn device_error(&self, addr: u64, why: String) -> PhysError {
        PhysError::Device { addr: PhysAddr(addr), source_name: self.name.clone(), why }
    }

    /// Lays the copy-on-write pages over `buf`, which was read from file offset `off`.
    fn overlay(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        for (&page, bytes) in self.cow.range(off - off % PAGE..end) {
            let (from, to) = (page.max(off), (page + bytes.len() as u64).min(end));
            if from < to {
                let src = &bytes[(from - page) as usize..(to - page) as usize];
                buf[(from - off) as usize..(to - off) as usize].copy_from_slice(src);
            }
        }
    }

    /// Where `[addr, addr + len)` lies in the file, as (file offset, length) spans, after
    /// checking that every byte has a place in the file: the zero-filled tail of an ELF
    /// segment has none.
    fn file_spans(&self, addr: PhysAddr, len: usize) -> Result<Vec<(u64, u64)>, PhysError> {
        let first = self.locate(addr, len)?;
        let mut cur = addr.0;
        let end = addr.0 + len as u64;
        let mut spans = Vec::new();
        for r in &self.ranges[first..] {
            if cur >= end {
                break;
            }
            let off = cur - r.phys_start;
            let n = (r.len - off).min(end - cur);
            if off + n > r.file_len {
                return Err(self.device_error(
                    r.phys_start + r.file_len.max(off),
                    "these bytes are zeros the file does not store (ELF p_filesz < p_memsz): there is \
                     nothing to change"
                        .to_string(),
                ));
            }
            spans.push((r.file_offset + off, n));
            cur += n;
        }
        Ok(spans)
    }

    /// Changes the copy-on-write pages for `data` at file offset `off` (physical `phys`),
    /// reading each page from the file the first time it is changed.
    fn write_cow(&mut self, off: u64, phys: u64, data: &[u8]) -> Result<(), PhysError> {
        let end = off + data.len() as u64;
        let mut page = off - off % PAGE;
        while page < end {
            if !self.cow.contains_key(&page) {
                if (self.cow.len() as u64 + 1) * PAGE > MAX_COW_BYTES {
                    let why = format!(
                        "copy-on-write keeps at most {} of changed pages in memory, and they are all used",
                        human_bytes(MAX_COW_BYTES)
                    );
                    return Err(self.device_error(phys + page.saturating_sub(off), why));
                }
                let mut bytes = vec![0u8; (self.size - page).min(PAGE) as usize];
                self.pread(page, phys.wrapping_sub(off).wrapping_add(page), &mut bytes)?;
                self.cow.insert(page, bytes.into_boxed_slice());
            }
            let bytes = self.cow.get_mut(&page).expect("inserted above");
            let (from, to) = (page.max(off), (page + bytes.len() as u64).min(end));
            bytes[(from - page) as usize..(to - page) as usize]
                .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            page += PAGE;
        }
        Ok(())
    }
}

impl PhysMem for FileMem {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    fn is_volatile(&self) -> bool {
        self.kind == SourceKind::LiveRam
    }

    fn core_notes(&self) -> &[CoreNote] {
        &self.notes
    }

    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut i = self.locate(addr, buf.len())?;
        let mut cur = addr.0;
        let mut out = buf;
        // `locate` checked that the ranges from `i` on cover the whole request, and `new` that
        // every range's file bytes lay inside the file when it was opened.
        while !out.is_empty() {
            let r = &self.ranges[i];
            let off = cur - r.phys_start;
            let n = (r.len - off).min(out.len() as u64) as usize;
            let (piece, rest) = out.split_at_mut(n);
            let from_file = r.file_len.saturating_sub(off).min(n as u64) as usize;
            if from_file > 0 {
                let f = r.file_offset + off;
                self.pread(f, cur, &mut piece[..from_file])?;
                if !self.cow.is_empty() {
                    self.overlay(f, &mut piece[..from_file]);
                }
            }
            piece[from_file..].fill(0);
            out = rest;
            cur += n as u64;
            i += 1;
        }
        Ok(())
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        if self.write == WriteMode::ReadOnly {
            return Err(PhysError::ReadOnly { source_name: self.name.clone() });
        }
        // First check that every byte has a place in the file, so a refused write changes
        // nothing.
        let spans = self.file_spans(addr, data.len())?;
        if self.write == WriteMode::Shared {
            // A write past the end would grow a file that shrank: refuse it instead.
            let now = self.size_now().unwrap_or(0);
            if let Some(&(off, n)) = spans.iter().find(|&&(off, n)| off + n > now) {
                let phys = addr.0 + spans.iter().take_while(|s| s.0 != off).map(|s| s.1).sum::<u64>();
                let why = format!(
                    "file offset {:#x} is beyond the file's current end (now {}, {} when opened: it shrank)",
                    off + n,
                    human_bytes(now),
                    human_bytes(self.size)
                );
                return Err(self.device_error(phys, why));
            }
        }
        let (mut phys, mut data) = (addr.0, data);
        for (off, n) in spans {
            let (piece, rest) = data.split_at(n as usize);
            if self.write == WriteMode::Shared {
                self.file
                    .write_all_at(piece, off)
                    .map_err(|e| self.device_error(phys, format!("writing file offset {off:#x}: {e}")))?;
            } else {
                self.write_cow(off, phys, piece)?;
            }
            data = rest;
            phys += n;
        }
        Ok(())
    }
}

/// The format of a non-empty file from its first bytes and size.
fn detect(path: &Path, data: &[u8], size: u64) -> Result<Format, OpenError> {
    let unsupported = |what, hint| Err(OpenError::Unsupported { path: path.to_path_buf(), what, hint });
    let starts = |magic: &[u8]| data.starts_with(magic);
    if starts(elf::MAGIC) {
        return Ok(Format::Elf);
    }
    if starts(&lime::MAGIC.to_le_bytes()) {
        return Ok(Format::Lime);
    }
    if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return unsupported("zstd-compressed", "unpack it first with `zstd -d`");
    }
    if starts(&[0x1f, 0x8b]) {
        return unsupported("gzip-compressed", "unpack it first with `gunzip`");
    }
    if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return unsupported("xz-compressed", "unpack it first with `xz -d`");
    }
    if starts(b"BZh") {
        return unsupported("bzip2-compressed", "unpack it first with `bunzip2`");
    }
    if starts(&[0x04, 0x22, 0x4d, 0x18]) {
        return unsupported("lz4-compressed", "unpack it first with `lz4 -d`");
    }
    if starts(b"KDUMP   ") || starts(b"DISKDUMP") {
        return unsupported(
            "a compressed kdump file (makedumpfile/diskdump format)",
            "convert it with `makedumpfile -E` to an ELF vmcore",
        );
    }
    if starts(b"makedumpfile") {
        return unsupported(
            "a flattened makedumpfile stream",
            "rebuild it with `makedumpfile -R`, then convert with `makedumpfile -E` to an ELF vmcore",
        );
    }
    if starts(&lime::AVML_MAGIC.to_le_bytes()) {
        return unsupported("an AVML compressed image", "convert it to LiME with `avml-convert`");
    }
    if !size.is_multiple_of(crate::addr::PAGE_SIZE) {
        return Err(OpenError::NotRaw { path: path.to_path_buf(), size });
    }
    Ok(Format::Raw)
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed when dropped.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("dmastub-phys-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        /// Writes `bytes` to a file named `name` in the directory.
        pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).expect("write temp file");
            p
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::TempDir;
    use super::*;

    fn ro() -> OpenOptions {
        OpenOptions::default()
    }

    fn open_err(path: &Path, opts: &OpenOptions) -> String {
        match open_file(path, opts) {
            Ok(m) => panic!("{} opened as {}", path.display(), m.describe()),
            Err(e) => e.to_string(),
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
    }

    #[test]
    fn raw_image_reads_and_bounds() {
        let dir = TempDir::new();
        let bytes = pattern(3 * 4096);
        let path = dir.file("ram.raw", &bytes);
        let mut m = open_file(&path, &ro()).unwrap();
        assert_eq!(m.kind(), SourceKind::RawImage);
        assert_eq!(m.name(), "ram.raw");
        assert!(!m.is_volatile());
        assert_eq!(m.ram(), &[RamRange { start: PhysAddr(0), len: 3 * 4096 }]);
        assert!(m.core_notes().is_empty());
        let mut b = [0u8; 64];
        m.read(PhysAddr(0x0fe0), &mut b).unwrap();
        assert_eq!(&b[..], &bytes[0x0fe0..0x1020]);
        m.read(PhysAddr(3 * 4096 - 64), &mut b).unwrap();
        assert_eq!(&b[..], &bytes[3 * 4096 - 64..]);
        assert!(matches!(m.read(PhysAddr(3 * 4096 - 63), &mut b), Err(PhysError::NotRam { .. })));
        assert!(matches!(m.read(PhysAddr(u64::MAX - 3), &mut b), Err(PhysError::NotRam { .. })));
        assert!(matches!(m.write(PhysAddr(0), &b), Err(PhysError::ReadOnly { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn live_file_is_raw_and_volatile_whatever_it_starts_with() {
        let dir = TempDir::new();
        let mut bytes = pattern(4096 + 10);
        bytes[..4].copy_from_slice(b"\x7fELF");
        let path = dir.file("guest.ram", &bytes);
        let opts = OpenOptions { live: true, ..ro() };
        let mut m = open_file(&path, &opts).unwrap();
        assert_eq!(m.kind(), SourceKind::LiveRam);
        assert!(m.is_volatile());
        assert_eq!(m.ram_bytes(), 4096 + 10);
        let mut b = [0u8; 8];
        m.read(PhysAddr(0), &mut b).unwrap();
        assert_eq!(&b[..], &bytes[..8]);
    }

    #[test]
    fn copy_on_write_keeps_the_file() {
        let dir = TempDir::new();
        let bytes = pattern(2 * 4096);
        let path = dir.file("ram.raw", &bytes);
        let opts = OpenOptions { write: WriteMode::CopyOnWrite, ..ro() };
        let mut m = open_file(&path, &opts).unwrap();
        m.write(PhysAddr(0x1ffe), &[0xaa, 0xbb]).unwrap();
        let mut b = [0u8; 4];
        m.read(PhysAddr(0x1ffc), &mut b).unwrap();
        assert_eq!(b, [bytes[0x1ffc], bytes[0x1ffd], 0xaa, 0xbb]);
        assert!(matches!(m.write(PhysAddr(0x1fff), &[1, 2]), Err(PhysError::NotRam { .. })));
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn shared_writes_reach_the_file() {
        let dir = TempDir::new();
        let bytes = pattern(4096);
        let path = dir.file("ram.raw", &bytes);
        let opts = OpenOptions { write: WriteMode::Shared, ..ro() };
        let mut m = open_file(&path, &opts).unwrap();
        m.write(PhysAddr(0x10), b"dmastub").unwrap();
        let mut b = [0u8; 7];
        m.read(PhysAddr(0x10), &mut b).unwrap();
        assert_eq!(&b, b"dmastub");
        drop(m);
        let mut expect = bytes;
        expect[0x10..0x17].copy_from_slice(b"dmastub");
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn forced_raw_reads_any_size() {
        let dir = TempDir::new();
        let path = dir.file("odd.bin", &[0xaa; 5000]);
        let opts = OpenOptions { format: Some(Format::Raw), ..ro() };
        let m = open_file(&path, &opts).unwrap();
        assert_eq!(m.ram_bytes(), 5000);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let dir = TempDir::new();
        let cases: [(&str, Vec<u8>, &str); 8] = [
            ("empty", vec![], "empty file"),
            (
                "odd",
                vec![0xaa; 5000],
                "size 5000 is not a multiple of 4 KiB: not a raw RAM image; pass --format raw",
            ),
            (
                "z",
                [&[0x28, 0xb5, 0x2f, 0xfd][..], &[0; 4092]].concat(),
                "zstd-compressed: unpack it first with `zstd -d`",
            ),
            ("gz", [&[0x1f, 0x8b, 8, 0][..], &[0; 4092]].concat(), "gzip-compressed"),
            ("xz", [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &[0; 4090]].concat(), "xz-compressed"),
            ("bz", [&b"BZh9"[..], &[0; 4092]].concat(), "bzip2-compressed"),
            (
                "kdump",
                [&b"KDUMP   "[..], &[0; 4088]].concat(),
                "convert it with `makedumpfile -E` to an ELF vmcore",
            ),
            ("disk", [&b"DISKDUMP"[..], &[0; 4088]].concat(), "makedumpfile -E"),
        ];
        for (name, bytes, want) in cases {
            let path = dir.file(name, &bytes);
            let msg = open_err(&path, &ro());
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains(want), "{name}: {msg}");
        }
        let msg = open_err(dir.path(), &ro());
        assert!(msg.contains("a directory"), "{msg}");
        let msg = open_err(&dir.path().join("missing"), &ro());
        assert!(msg.contains("cannot open"), "{msg}");
    }

    /// A file truncated under an open source: reads past the new end fail with a message that
    /// says the file shrank (a mapped file killed the process with SIGBUS here), reads below it
    /// still work, and nothing is made up.
    #[test]
    fn a_file_that_shrinks_is_an_error_not_a_crash() {
        let dir = TempDir::new();
        let bytes = pattern(64 * 4096);
        let path = dir.file("guest.ram", &bytes);
        for (opts, what) in [
            (OpenOptions { live: true, ..ro() }, "live RAM file's"),
            (ro(), "file's"),
            (OpenOptions { write: WriteMode::CopyOnWrite, ..ro() }, "file's"),
            (OpenOptions { live: true, write: WriteMode::Shared, ..ro() }, "live RAM file's"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let mut m = open_file(&path, &opts).unwrap();
            let mut b = vec![0u8; 8192];
            m.read(PhysAddr(60 * 4096), &mut b).unwrap();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(16 * 4096).unwrap();
            b.fill(0xee);
            m.read(PhysAddr(15 * 4096), &mut b[..4096]).unwrap();
            assert_eq!(&b[..4096], &bytes[15 * 4096..16 * 4096]);
            let e = m.read(PhysAddr(15 * 4096 + 8), &mut b).unwrap_err();
            assert!(matches!(e, PhysError::Device { addr: PhysAddr(0x10000), .. }), "{e:?}");
            let msg = e.to_string();
            let want = format!(
                "reading phys 0x10000 from guest.ram failed: physical 0x10000 is beyond the {what} current end \
                 at offset 0x10000 (now 64 KiB, 256 KiB when opened: it shrank)"
            );
            assert_eq!(msg, want);
            if opts.write != WriteMode::ReadOnly {
                let e = m.write(PhysAddr(40 * 4096), &[1, 2, 3]).unwrap_err();
                assert!(e.to_string().contains("it shrank"), "{e}");
                // Nothing grew the file back.
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * 4096);
            }
            // Gone altogether: the open file still reads what is left.
            std::fs::remove_file(&path).unwrap();
            m.read(PhysAddr(0), &mut b[..64]).unwrap();
            assert_eq!(&b[..64], &bytes[..64]);
        }
    }

    /// A FIFO would block the open (and every read) forever waiting for a writer: refused at
    /// once, for --image and --live alike. So are sockets and character devices; block devices
    /// are read (a raw partition can hold an image).
    #[test]
    fn refuses_fifos_and_character_devices_at_once() {
        let dir = TempDir::new();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for opts in
            [ro(), OpenOptions { live: true, ..ro() }, OpenOptions { write: WriteMode::Shared, ..ro() }]
        {
            let (tx, rx) = std::sync::mpsc::channel();
            let f = fifo.clone();
            std::thread::spawn(move || {
                let _ = tx.send(open_err(&f, &opts));
            });
            let msg = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("opening a FIFO hung");
            assert!(msg.starts_with(&fifo.display().to_string()), "{msg}");
            assert!(msg.contains("a FIFO (named pipe)"), "{msg}");
            assert!(msg.contains("save the stream to a file first"), "{msg}");
        }
        let msg = open_err(Path::new("/dev/null"), &ro());
        assert!(msg.contains("/dev/null: a character device"), "{msg}");
    }

    /// The byte the test images hold at physical address `a`.
    fn at(a: u64) -> u8 {
        (a ^ (a >> 8) ^ 0x5a) as u8
    }

    fn fill(v: &mut [u8], file_offset: usize, phys: u64, len: usize) {
        for (i, b) in v[file_offset..file_offset + len].iter_mut().enumerate() {
            *b = at(phys + i as u64);
        }
    }

    /// An ELF core with RAM at [0, 0x2000) and [0x10000, 0x14000): the second range is two
    /// adjacent PT_LOADs, the first of which stores only 0x1000 of its 0x3000 bytes (the rest
    /// reads as zeros). One PT_NOTE holds a CORE and a VMCOREINFO note.
    fn elf_image() -> Vec<u8> {
        use crate::phys::elf::build::{Seg, core, load, note};
        let notes = [note("CORE", 1, &[9; 12]), note("VMCOREINFO", 0, b"OSRELEASE=6.1.0-test\n")].concat();
        let segs = [
            Seg { p_type: 4, offset: 0x200, paddr: 0, filesz: notes.len() as u64, memsz: 0 },
            load(0x1000, 0, 0x2000, 0x2000),
            load(0x3000, 0x10000, 0x1000, 0x3000),
            load(0x4000, 0x13000, 0x1000, 0x1000),
        ];
        let mut v = core(62, &segs, 0x5000);
        v[0x200..0x200 + notes.len()].copy_from_slice(&notes);
        fill(&mut v, 0x1000, 0, 0x2000);
        fill(&mut v, 0x3000, 0x10000, 0x1000);
        fill(&mut v, 0x4000, 0x13000, 0x1000);
        v
    }

    /// What `elf_image` reads as at `[a, a + n)`.
    fn elf_expect(a: u64, n: u64) -> Vec<u8> {
        (a..a + n).map(|p| if (0x11000..0x13000).contains(&p) { 0 } else { at(p) }).collect()
    }

    fn is_not_ram(m: &mut Box<dyn PhysMem>, a: u64, n: usize) -> bool {
        matches!(m.read(PhysAddr(a), &mut vec![0; n]), Err(PhysError::NotRam { .. }))
    }

    #[test]
    fn elf_core_reads_ranges_holes_and_zero_tails() {
        let dir = TempDir::new();
        let path = dir.file("vmcore", &elf_image());
        let mut m = open_file(&path, &ro()).unwrap();
        assert_eq!(m.kind(), SourceKind::ElfCore);
        assert_eq!(
            m.ram(),
            &[
                RamRange { start: PhysAddr(0), len: 0x2000 },
                RamRange { start: PhysAddr(0x10000), len: 0x3000 },
                RamRange { start: PhysAddr(0x13000), len: 0x1000 },
            ]
        );
        assert_eq!(m.describe(), "ELF core, 24 KiB RAM in 3 ranges");
        let notes = m.core_notes();
        assert_eq!(notes.len(), 2);
        assert_eq!(
            (notes[0].name.as_str(), notes[0].n_type, &notes[0].desc[..]),
            ("CORE", 1, &[9u8; 12][..])
        );
        assert_eq!(notes[1].name, "VMCOREINFO");
        assert_eq!(notes[1].desc, b"OSRELEASE=6.1.0-test\n");
        // Inside, at both edges of each range, across the stored/zero boundary, and across the
        // two adjacent PT_LOADs.
        for (a, n) in [
            (0, 16),
            (0x1ff0, 16),
            (0x1000, 0x1000),
            (0x10000, 8),
            (0x10ff8, 16),
            (0x12ff0, 0x20),
            (0x10000, 0x4000),
            (0x13ff8, 8),
        ] {
            let mut b = vec![0xee; n as usize];
            m.read(PhysAddr(a), &mut b).unwrap();
            assert_eq!(b, elf_expect(a, n), "read {a:#x}+{n:#x}");
        }
        let mut empty = [0u8; 0];
        m.read(PhysAddr(0x10), &mut empty).unwrap();
        // Holes, ranges running into holes, and past the end.
        assert!(is_not_ram(&mut m, 0x2000, 1));
        assert!(is_not_ram(&mut m, 0x1fff, 2));
        assert!(is_not_ram(&mut m, 0x8000, 16));
        assert!(is_not_ram(&mut m, 0xfff8, 16));
        assert!(is_not_ram(&mut m, 0x13ff8, 16));
        assert!(is_not_ram(&mut m, 0x14000, 1));
        assert!(is_not_ram(&mut m, 0x1000, 0x10000));
        assert!(is_not_ram(&mut m, u64::MAX, 2));
        let e = m.read(PhysAddr(0x2000), &mut [0; 4]).unwrap_err();
        assert_eq!(e.to_string(), "phys 0x2000 (+0x4 bytes) is not RAM in vmcore");
    }

    #[test]
    fn elf_core_writes() {
        let dir = TempDir::new();
        let image = elf_image();
        let path = dir.file("vmcore", &image);
        let mut m = open_file(&path, &ro()).unwrap();
        assert!(matches!(m.write(PhysAddr(0), &[1]), Err(PhysError::ReadOnly { .. })));

        let opts = OpenOptions { write: WriteMode::CopyOnWrite, ..ro() };
        let mut m = open_file(&path, &opts).unwrap();
        m.write(PhysAddr(0x1ffe), &[1, 2]).unwrap();
        // Spans the two adjacent PT_LOADs... but starts in the zero tail, which the file does
        // not store: refused, and nothing changes.
        assert!(matches!(m.write(PhysAddr(0x12fff), &[3, 4]), Err(PhysError::Device { .. })));
        let mut b = [0u8; 2];
        m.read(PhysAddr(0x12fff), &mut b).unwrap();
        assert_eq!(b, [0, at(0x13000)]);
        m.read(PhysAddr(0x1ffe), &mut b).unwrap();
        assert_eq!(b, [1, 2]);
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), image);

        let opts = OpenOptions { write: WriteMode::Shared, ..ro() };
        let mut m = open_file(&path, &opts).unwrap();
        m.write(PhysAddr(0x10ffe), &[5, 6]).unwrap();
        drop(m);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(&after[0x3ffe..0x4000], &[5, 6]);
        assert_eq!(&after[..0x3ffe], &image[..0x3ffe]);
    }

    #[test]
    fn detects_elf_and_refuses_bad_cores() {
        use crate::phys::elf::build::{core, load};
        let dir = TempDir::new();
        let bad: [(&str, Vec<u8>, &str); 4] = [
            ("trunc", elf_image()[..40].to_vec(), "ELF core: truncated ELF header"),
            (
                "phdrs",
                core(62, &[load(0x1000, 0, 0x100, 0x100)], 0x1000)[..0x60].to_vec(),
                "program header table",
            ),
            ("past", core(62, &[load(0x1000, 0, 0x2000, 0x2000)], 0x2000), "PT_LOAD 0 runs past end of file"),
            ("arm", core(183, &[load(0x1000, 0, 0x1000, 0x1000)], 0x2000), "e_machine 183 is not x86-64"),
        ];
        for (name, bytes, want) in bad {
            let path = dir.file(name, &bytes);
            let msg = open_err(&path, &ro());
            assert!(msg.starts_with(&format!("{}: ELF core: ", path.display())), "{msg}");
            assert!(msg.contains(want), "{name}: {msg}");
        }
        // A forced format is parsed as that format, whatever the bytes.
        let path = dir.file("raw", &[0u8; 4096]);
        let msg = open_err(&path, &OpenOptions { format: Some(Format::Elf), ..ro() });
        assert!(msg.contains("not an ELF file"), "{msg}");
    }

    #[test]
    fn lime_dump_reads() {
        let dir = TempDir::new();
        let chunk = |phys: u64, n: usize| (phys, (phys..phys + n as u64).map(at).collect::<Vec<u8>>());
        let parts = [chunk(0x100000, 0x1000), chunk(0, 0x2000), chunk(0x2000, 0x1000)];
        let refs: Vec<(u64, &[u8])> = parts.iter().map(|(p, v)| (*p, &v[..])).collect();
        let path = dir.file("mem.lime", &crate::phys::lime::build(&refs));
        let mut m = open_file(&path, &ro()).unwrap();
        assert_eq!(m.kind(), SourceKind::Lime);
        assert_eq!(m.describe(), "LiME dump, 16 KiB RAM in 3 ranges");
        for (a, n) in [(0, 8u64), (0x1ff8, 0x10), (0, 0x3000), (0x100ff0, 0x10)] {
            let mut b = vec![0; n as usize];
            m.read(PhysAddr(a), &mut b).unwrap();
            assert_eq!(b, (a..a + n).map(at).collect::<Vec<u8>>(), "read {a:#x}+{n:#x}");
        }
        assert!(is_not_ram(&mut m, 0x2ff8, 0x10));
        assert!(is_not_ram(&mut m, 0xffff8, 0x10));
        assert!(is_not_ram(&mut m, 0x101000, 1));
    }

    #[test]
    fn refuses_bad_lime_dumps() {
        let dir = TempDir::new();
        let good = crate::phys::lime::build(&[(0, &[1; 0x100]), (0x1000, &[2; 0x100])]);
        let mut v2 = good.clone();
        v2[4] = 2;
        let overlap = crate::phys::lime::build(&[(0, &[1; 0x100]), (0x80, &[2; 0x100])]);
        let bad: [(&str, Vec<u8>, &str); 4] = [
            ("version", v2, "header at offset 0x0: version 2"),
            ("past", good[..good.len() - 1].to_vec(), "header at offset 0x120: range [0x1000, 0x10ff]"),
            ("overlap", overlap, "range at offset 0x120 [0x80, 0x180) overlaps range at offset 0x0"),
            ("garbage", [&good[..], &[0xaa; 64]].concat(), "bytes at offset 0x240 after the last range"),
        ];
        for (name, bytes, want) in bad {
            let path = dir.file(name, &bytes);
            let msg = open_err(&path, &ro());
            assert!(msg.starts_with(&format!("{}: LiME: ", path.display())), "{msg}");
            assert!(msg.contains(want), "{name}: {msg}");
        }
    }

    fn r(phys_start: u64, len: u64) -> FileRange {
        FileRange { phys_start, len, file_offset: 0, file_len: len }
    }

    #[test]
    fn sorting_and_overlaps() {
        let label = |i: usize| format!("R{i}");
        let sorted = sort_ranges(vec![r(0x3000, 0x1000), r(0, 0x1000), r(0x1000, 0)], Aliases::Refuse, label);
        assert_eq!(sorted, Ok(vec![r(0, 0x1000), r(0x3000, 0x1000)]));
        let e = sort_ranges(vec![r(0, 0x2000), r(0x1000, 0x2000)], Aliases::DropContained, label);
        assert_eq!(e, Err("R1 [0x1000, 0x3000) overlaps R0 [0x0, 0x2000)".to_string()));
        let inner = vec![r(0x1000, 0x1000), r(0, 0x4000), r(0x4000, 0x1000)];
        assert!(sort_ranges(inner.clone(), Aliases::Refuse, label).is_err());
        let kept = sort_ranges(inner, Aliases::DropContained, label);
        assert_eq!(kept, Ok(vec![r(0, 0x4000), r(0x4000, 0x1000)]));
        let e = sort_ranges(vec![r(u64::MAX - 1, 4)], Aliases::Refuse, label).unwrap_err();
        assert!(e.contains("R0 at phys 0xfffffffffffffffe"), "{e}");
    }
}
