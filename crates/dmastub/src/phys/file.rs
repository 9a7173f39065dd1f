//! File-backed physical memory: raw images, live VM RAM files, ELF cores and LiME dumps.
//!
//! All three formats come down to the same thing once their headers are parsed: a sorted list
//! of [`FileRange`]s saying which bytes of the file hold which physical addresses. So one
//! struct, [`FileMem`], does the reading for all of them with `pread`, and the format modules
//! ([`super::elf`], [`super::lime`]) only turn headers into that list, reading them through
//! `ReadAt`. Nothing is memory-mapped: a mapped file that shrinks under us kills the process
//! with SIGBUS, whereas a `pread` past the new end only comes back short (see [`FileMem`]).

use super::elf::CoreNote;
use super::ranges::FileRange;
use super::{IoError, PhysError, PhysMem, RamRange, SourceKind, human_bytes};
use crate::addr::PhysAddr;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// At most this many bytes of pages changed under [`WriteMode::CopyOnWrite`] are kept, so that
/// writes from gdb cannot grow the process without bound.
const MAX_COW_BYTES: u64 = 256 << 20;
const PAGE: u64 = crate::addr::PAGE_SIZE;

/// What [`PhysMem::write`] does to a file source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Writes fail with [`PhysError::ReadOnly`](super::PhysError::ReadOnly); the file is opened
    /// read-only. A forensic tool must never change evidence by accident.
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

impl FileMem {
    /// `ranges` must be sorted and disjoint (`sort_ranges`); checked again here against the
    /// file's size, so that no read asks for bytes the file did not hold when opened.
    pub(super) fn new(
        name: String,
        kind: SourceKind,
        file: File,
        size: u64,
        write: WriteMode,
        ranges: Vec<FileRange>,
        notes: Vec<CoreNote>,
    ) -> Result<Self, FileRange> {
        for (i, r) in ranges.iter().enumerate() {
            let in_file = r.file_len == 0 || r.file_offset.checked_add(r.file_len).is_some_and(|e| e <= size);
            if r.len == 0 || r.file_len > r.len || !in_file || r.phys_start.checked_add(r.len).is_none() {
                return Err(*r);
            }
            if i > 0 && ranges[i - 1].phys_end() > r.phys_start {
                return Err(*r);
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
                    return Err(self.io_error(phys + done as u64, why, e));
                }
            }
        }
        Ok(())
    }

    fn device_error(&self, addr: u64, why: String) -> PhysError {
        PhysError::device(PhysAddr(addr), self.name.clone(), why)
    }

    fn io_error(&self, addr: u64, why: String, e: std::io::Error) -> PhysError {
        let source = Some(IoError::from(e));
        PhysError::Device { addr: PhysAddr(addr), source_name: self.name.clone(), why, source }
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
                    .map_err(|e| self.io_error(phys, format!("writing file offset {off:#x}: {e}"), e))?;
            } else {
                self.write_cow(off, phys, piece)?;
            }
            data = rest;
            phys += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
