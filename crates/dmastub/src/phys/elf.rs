//! ELF cores (QEMU `dump-guest-memory`, kdump vmcores): headers to [`FileRange`]s and notes.
//!
//! Only the headers are parsed here; [`super::file::FileMem`] does the reading. Parsed by hand
//! from the 64-bit little-endian layout because every field needs a bounds check with a message
//! that names it, and a core file is exactly where a truncated or corrupt header shows up.

use super::ranges::{Aliases, FileRange, RangeError, RangeOrigin, ReadAt, array_at, sort_ranges};
use crate::bytes::LeBytes;

/// The first four bytes of every ELF file.
pub(crate) const MAGIC: &[u8] = b"\x7fELF";

pub(crate) const EHDR_SIZE: usize = 64;
pub(crate) const PHDR_SIZE: u64 = 56;
pub(crate) const SHDR_SIZE: u64 = 64;
pub(crate) const ELFCLASS64: u8 = 2;
pub(crate) const ELFDATA2LSB: u8 = 1;
pub(crate) const ET_CORE: u16 = 4;
pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_NOTE: u32 = 4;
/// `e_phnum` value meaning "the real count is in section header 0's `sh_info`": large kdump
/// vmcores with more than 65534 segments use it.
const PN_XNUM: u16 = 0xffff;

/// Bounds on what notes may hold, so a corrupt core cannot make us allocate without limit.
const MAX_NOTE_BYTES: u64 = 64 << 20;
const MAX_NOTES: usize = 100_000;

/// One ELF note from a core's PT_NOTE segments: VMCOREINFO, per-CPU NT_PRSTATUS, QEMU's CPU
/// state. Kept so later layers can read the kernel's own description of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreNote {
    /// The owner, without its terminating NUL: "CORE", "VMCOREINFO", "QEMU".
    pub name: String,
    /// The note type (`NT_PRSTATUS` = 1; VMCOREINFO and QEMU notes use 0).
    pub n_type: u32,
    /// The note's payload.
    pub desc: Vec<u8>,
}

/// What an ELF core's headers say: where its memory is, and its notes.
#[derive(Debug)]
pub(crate) struct ElfCore {
    pub ranges: Vec<FileRange>,
    pub notes: Vec<CoreNote>,
}

/// Why an ELF file is not a core dmastub can read: what is wrong, and where (file offsets;
/// program headers numbered from 0, as `readelf -l` lists them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// No `\x7fELF` at offset 0.
    #[error("not an ELF file (no \\x7fELF magic at offset 0)")]
    NotElf,
    /// The file is shorter than the 64-byte ELF header.
    #[error("truncated ELF header: the file is {size} bytes, the header needs 64")]
    TruncatedHeader {
        /// The file's size.
        size: u64,
    },
    /// A 32-bit core.
    #[error("ELF class {0} is not ELFCLASS64: only 64-bit x86-64 cores are supported")]
    Class(u8),
    /// A big-endian core.
    #[error("ELF data encoding {0} is not little-endian: only x86-64 cores are supported")]
    Encoding(u8),
    /// An ELF file that is not a core: a program, an object.
    #[error("e_type {e_type} is {}, not a core (ET_CORE): pass a memory dump, not a program", describe_type(*e_type))]
    NotCore {
        /// The header's `e_type`.
        e_type: u16,
    },
    /// A core of another architecture.
    #[error("e_machine {0} is not x86-64 (62): only x86-64 machines are supported")]
    Machine(u16),
    /// `e_phnum` says the count is in section header 0, which is not in the file.
    #[error(
        "e_phnum is PN_XNUM but section header 0 at {e_shoff:#x} runs past end of file (file is {size:#x} bytes)"
    )]
    SectionHeaderPastEnd {
        /// Where section header 0 would be.
        e_shoff: u64,
        /// The file's size.
        size: u64,
    },
    /// No program headers at all.
    #[error("no program headers, so no PT_LOAD: the core holds no memory")]
    NoProgramHeaders,
    /// Program headers smaller than the 64-bit layout.
    #[error("e_phentsize {0} is smaller than a 64-bit program header (56)")]
    ProgramHeaderSize(u64),
    /// The program header table is not all in the file.
    #[error(
        "program header table ({phnum} entries of {e_phentsize} bytes at offset {e_phoff:#x}) runs past end of \
         file (file is {size:#x} bytes)"
    )]
    ProgramHeadersPastEnd {
        /// Entries.
        phnum: u64,
        /// Bytes per entry.
        e_phentsize: u64,
        /// Where the table starts.
        e_phoff: u64,
        /// The file's size.
        size: u64,
    },
    /// A program header could not be read.
    #[error("program header {0}: truncated")]
    ProgramHeaderTruncated(u64),
    /// A PT_LOAD stores more bytes than it has memory.
    #[error("PT_LOAD {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")]
    FileszOverMemsz {
        /// The program header.
        index: u64,
        /// Its `p_filesz`.
        filesz: u64,
        /// Its `p_memsz`.
        memsz: u64,
    },
    /// A PT_LOAD or PT_NOTE whose bytes are not all in the file.
    #[error(
        "{} {index} runs past end of file (offset {offset:#x}, size {filesz:#x}, file is {size:#x} bytes)",
        if *note { "PT_NOTE" } else { "PT_LOAD" }
    )]
    SegmentPastEnd {
        /// Whether it is a PT_NOTE (else a PT_LOAD).
        note: bool,
        /// The program header.
        index: u64,
        /// Its `p_offset`.
        offset: u64,
        /// Its `p_filesz`.
        filesz: u64,
        /// The file's size.
        size: u64,
    },
    /// A PT_LOAD runs past 2^64.
    #[error(
        "PT_LOAD {index} at phys {paddr:#x} (+{memsz:#x} bytes) runs past the top of the 64-bit address space"
    )]
    LoadPastTop {
        /// The program header.
        index: u64,
        /// Its `p_paddr`.
        paddr: u64,
        /// Its `p_memsz`.
        memsz: u64,
    },
    /// No PT_LOAD holds any memory.
    #[error("no PT_LOAD segment with memory in it: the core holds no RAM")]
    NoLoad,
    /// The PT_LOADs overlap or wrap around.
    #[error("{0}: QEMU `dump-guest-memory -p` writes such cores; dump without -p")]
    Ranges(#[source] RangeError),
    /// A note header could not be read.
    #[error("note at offset {0:#x}: truncated header")]
    NoteHeaderTruncated(u64),
    /// A note's sizes run past its segment.
    #[error(
        "malformed note at offset {offset:#x}: name size {namesz:#x} and desc size {descsz:#x} run past the end \
         of PT_NOTE {index} at {end:#x}"
    )]
    NotePastSegment {
        /// Where the note starts.
        offset: u64,
        /// Its name size.
        namesz: u64,
        /// Its desc size.
        descsz: u64,
        /// The PT_NOTE's program header.
        index: u64,
        /// Where the segment ends.
        end: u64,
    },
    /// More notes than any real core has.
    #[error("more than {MAX_NOTES} notes (at offset {0:#x}): not a plausible core")]
    TooManyNotes(u64),
    /// Notes larger than any real core has.
    #[error("notes hold more than {limit} MiB (at offset {0:#x}): not a plausible core", limit = MAX_NOTE_BYTES >> 20)]
    NotesTooLarge(u64),
    /// A note's name or desc could not be read.
    #[error("note at offset {0:#x}: truncated")]
    NoteTruncated(u64),
}

fn describe_type(e_type: u16) -> &'static str {
    match e_type {
        1 => "a relocatable object",
        2 => "an executable (vmlinux?)",
        3 => "a shared object or PIE",
        _ => "not a core file",
    }
}

/// At most this many bytes of a note's name are kept (real names are a few bytes): a corrupt
/// size cannot make us allocate what it says.
const MAX_NOTE_NAME: u64 = 256;

/// Whether `[offset, offset + len)` lies inside a file of `size` bytes.
fn in_file(offset: u64, len: u64, size: u64) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// Parses an ELF core's headers. `data` is the whole file, read only where the headers and
/// notes are.
pub(crate) fn parse(data: &dyn ReadAt) -> Result<ElfCore, ElfError> {
    let size = data.size();
    if array_at::<4>(data, 0).is_none_or(|m| m != MAGIC) {
        return Err(ElfError::NotElf);
    }
    let Some(ehdr) = array_at::<EHDR_SIZE>(data, 0) else {
        return Err(ElfError::TruncatedHeader { size });
    };
    let ehdr = &ehdr[..];
    let (class, encoding) = (ehdr[4], ehdr[5]);
    if class != ELFCLASS64 {
        return Err(ElfError::Class(class));
    }
    if encoding != ELFDATA2LSB {
        return Err(ElfError::Encoding(encoding));
    }
    // `ehdr` is 64 bytes: every field below lies inside it.
    let field16 = |off| ehdr.u16_at(off).unwrap_or_default();
    let field64 = |off| ehdr.u64_at(off).unwrap_or_default();
    let (e_type, e_machine) = (field16(16), field16(18));
    if e_type != ET_CORE {
        return Err(ElfError::NotCore { e_type });
    }
    if e_machine != EM_X86_64 {
        return Err(ElfError::Machine(e_machine));
    }
    let (e_phoff, e_shoff) = (field64(32), field64(40));
    let e_phentsize = u64::from(field16(54));
    let e_phnum = field16(56);

    let phnum = if e_phnum == PN_XNUM {
        // sh_info of section header 0 is at offset 44 inside it.
        let shdr = in_file(e_shoff, SHDR_SIZE, size)
            .then(|| array_at::<{ SHDR_SIZE as usize }>(data, e_shoff))
            .flatten()
            .ok_or(ElfError::SectionHeaderPastEnd { e_shoff, size })?;
        // `shdr` is 64 bytes: the field lies inside it.
        u64::from(shdr[..].u32_at(44).unwrap_or_default())
    } else {
        u64::from(e_phnum)
    };
    if phnum == 0 {
        return Err(ElfError::NoProgramHeaders);
    }
    if e_phentsize < PHDR_SIZE {
        return Err(ElfError::ProgramHeaderSize(e_phentsize));
    }
    // phnum < 2^32 and e_phentsize < 2^16: the product cannot overflow.
    let table_len = phnum * e_phentsize;
    if !in_file(e_phoff, table_len, size) {
        return Err(ElfError::ProgramHeadersPastEnd { phnum, e_phentsize, e_phoff, size });
    }

    let mut ranges = Vec::new();
    let mut load_index = Vec::new();
    let mut notes = Notes::default();
    for idx in 0..phnum {
        let ph = array_at::<{ PHDR_SIZE as usize }>(data, e_phoff + idx * e_phentsize)
            .ok_or(ElfError::ProgramHeaderTruncated(idx))?;
        let ph = &ph[..];
        // `ph` is 56 bytes: every field lies inside it.
        let field = |off| ph.u64_at(off).unwrap_or_default();
        let p_type = ph.u32_at(0).unwrap_or_default();
        let (p_offset, p_paddr, p_filesz, p_memsz, p_align) =
            (field(8), field(24), field(32), field(40), field(48));
        match p_type {
            PT_LOAD => {
                if p_filesz > p_memsz {
                    return Err(ElfError::FileszOverMemsz { index: idx, filesz: p_filesz, memsz: p_memsz });
                }
                if p_memsz == 0 {
                    continue;
                }
                if p_paddr.checked_add(p_memsz).is_none() {
                    return Err(ElfError::LoadPastTop { index: idx, paddr: p_paddr, memsz: p_memsz });
                }
                if p_filesz > 0 && !in_file(p_offset, p_filesz, size) {
                    let (offset, filesz) = (p_offset, p_filesz);
                    return Err(ElfError::SegmentPastEnd { note: false, index: idx, offset, filesz, size });
                }
                ranges.push(FileRange {
                    phys_start: p_paddr,
                    len: p_memsz,
                    file_offset: p_offset,
                    file_len: p_filesz,
                });
                load_index.push(idx);
            }
            PT_NOTE => {
                if !in_file(p_offset, p_filesz, size) {
                    let (offset, filesz) = (p_offset, p_filesz);
                    return Err(ElfError::SegmentPastEnd { note: true, index: idx, offset, filesz, size });
                }
                let align = if p_align == 8 { 8 } else { 4 };
                notes.parse_segment(data, p_offset, p_filesz, align, idx)?;
            }
            _ => {}
        }
    }
    if ranges.is_empty() {
        return Err(ElfError::NoLoad);
    }
    let ranges = sort_ranges(ranges, Aliases::DropContained, |i| {
        RangeOrigin::ProgramHeader(load_index.get(i).copied().unwrap_or_default())
    })
    .map_err(ElfError::Ranges)?;
    Ok(ElfCore { ranges, notes: notes.list })
}

/// Parses the ELF notes at `[start, start + len)` of `data` (4-byte aligned, as in a PT_NOTE
/// segment): the notes a kdump-compressed file copies into its sub-header area. Errors name the
/// region as PT_NOTE 0.
pub(crate) fn parse_notes(data: &dyn ReadAt, start: u64, len: u64) -> Result<Vec<CoreNote>, ElfError> {
    if !in_file(start, len, data.size()) {
        return Err(ElfError::SegmentPastEnd {
            note: true,
            index: 0,
            offset: start,
            filesz: len,
            size: data.size(),
        });
    }
    let mut notes = Notes::default();
    notes.parse_segment(data, start, len, 4, 0)?;
    Ok(notes.list)
}

/// Notes collected from all PT_NOTE segments, with the running totals that bound them.
#[derive(Default)]
struct Notes {
    list: Vec<CoreNote>,
    bytes: u64,
}

impl Notes {
    /// Parses the notes of one PT_NOTE segment `[start, start + len)`, already checked to lie
    /// inside `data`. A note with an empty name ends the segment: kdump pads its per-CPU note
    /// buffers with one.
    fn parse_segment(
        &mut self,
        data: &dyn ReadAt,
        start: u64,
        len: u64,
        align: u64,
        idx: u64,
    ) -> Result<(), ElfError> {
        let end = start + len;
        let pad = |n: u64| n.div_ceil(align) * align;
        let mut off = start;
        while end - off >= 12 {
            let Some(header) = array_at::<12>(data, off) else {
                return Err(ElfError::NoteHeaderTruncated(off));
            };
            let header = &header[..];
            // `header` is 12 bytes: the three fields lie inside it.
            let field = |at| header.u32_at(at).unwrap_or_default();
            let (namesz, descsz, n_type) = (field(0), field(4), field(8));
            if namesz == 0 {
                break;
            }
            let (namesz, descsz) = (u64::from(namesz), u64::from(descsz));
            let name_at = off + 12;
            // u32 sizes padded stay far below 2^64: no overflow in these sums.
            let desc_at = name_at + pad(namesz);
            let next = desc_at + pad(descsz);
            if desc_at + descsz > end {
                return Err(ElfError::NotePastSegment { offset: off, namesz, descsz, index: idx, end });
            }
            if self.list.len() >= MAX_NOTES {
                return Err(ElfError::TooManyNotes(off));
            }
            self.bytes += descsz;
            if self.bytes > MAX_NOTE_BYTES {
                return Err(ElfError::NotesTooLarge(off));
            }
            // Both sizes are bounded here: the name by MAX_NOTE_NAME, the desc by MAX_NOTE_BYTES.
            let slice = |at: u64, n: u64| {
                let mut v = vec![0u8; n as usize];
                data.read_at(at, &mut v).then_some(v).ok_or(ElfError::NoteTruncated(off))
            };
            let name = slice(name_at, namesz.min(MAX_NOTE_NAME))?;
            let name = String::from_utf8_lossy(&name).trim_end_matches('\0').to_string();
            let desc = slice(desc_at, descsz)?;
            self.list.push(CoreNote { name, n_type, desc });
            off = next.min(end);
        }
        Ok(())
    }
}

/// Appends one ELF note (`Elf64_Nhdr`, name, desc, each 4-byte aligned) to `out`, as cores and
/// kdump files hold them; returns where in `out` its desc starts.
pub fn encode_note(out: &mut Vec<u8>, name: &str, n_type: u32, desc: &[u8]) -> usize {
    let namesz = if name.is_empty() { 0 } else { name.len() as u32 + 1 };
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&n_type.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    if namesz > 0 {
        out.push(0);
    }
    out.resize(out.len().div_ceil(4) * 4, 0);
    let desc_at = out.len();
    out.extend_from_slice(desc);
    out.resize(out.len().div_ceil(4) * 4, 0);
    desc_at
}

/// Builders for tiny ELF cores, shared by the tests of this module and of `file.rs`.
#[cfg(test)]
pub(crate) mod build {
    /// One program header.
    #[derive(Clone, Copy)]
    pub struct Seg {
        pub p_type: u32,
        pub offset: u64,
        pub paddr: u64,
        pub filesz: u64,
        pub memsz: u64,
    }

    pub fn load(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Seg {
        Seg { p_type: super::PT_LOAD, offset, paddr, filesz, memsz }
    }

    /// One note, 4-byte aligned, as a core holds it.
    pub fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        super::encode_note(&mut v, name, n_type, desc);
        v
    }

    /// An x86-64 ET_CORE header and its program headers (at offset 64), zero-padded to `len`.
    pub fn core(machine: u16, segs: &[Seg], len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len.max(64 + 56 * segs.len())];
        v[..4].copy_from_slice(super::MAGIC);
        v[4] = 2; // ELFCLASS64
        v[5] = 1; // little-endian
        v[6] = 1; // EV_CURRENT
        v[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
        v[18..20].copy_from_slice(&machine.to_le_bytes());
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        v[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        v[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        v[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, s) in segs.iter().enumerate() {
            let p = 64 + 56 * i;
            v[p..p + 4].copy_from_slice(&s.p_type.to_le_bytes());
            v[p + 8..p + 16].copy_from_slice(&s.offset.to_le_bytes());
            v[p + 24..p + 32].copy_from_slice(&s.paddr.to_le_bytes());
            v[p + 32..p + 40].copy_from_slice(&s.filesz.to_le_bytes());
            v[p + 40..p + 48].copy_from_slice(&s.memsz.to_le_bytes());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Seg, core, load, note};
    use super::*;

    fn err(data: &[u8]) -> String {
        match parse(&data) {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loads_and_notes() {
        let notes = [note("CORE", 1, &[1, 2, 3, 4, 5]), note("VMCOREINFO", 0, b"OSRELEASE=x\n")].concat();
        let nseg = Seg { p_type: PT_NOTE, offset: 0x200, paddr: 0, filesz: notes.len() as u64, memsz: 0 };
        let segs = [load(0x1000, 0x100000, 0x1000, 0x1000), nseg, load(0x2000, 0, 0x800, 0x1000)];
        let mut data = core(EM_X86_64, &segs, 0x3000);
        data[0x200..0x200 + notes.len()].copy_from_slice(&notes);
        let c = parse(&data).unwrap();
        assert_eq!(
            c.ranges,
            vec![
                FileRange { phys_start: 0, len: 0x1000, file_offset: 0x2000, file_len: 0x800 },
                FileRange { phys_start: 0x100000, len: 0x1000, file_offset: 0x1000, file_len: 0x1000 },
            ]
        );
        assert_eq!(c.notes.len(), 2);
        assert_eq!(c.notes[0], CoreNote { name: "CORE".into(), n_type: 1, desc: vec![1, 2, 3, 4, 5] });
        assert_eq!(c.notes[1].name, "VMCOREINFO");
        assert_eq!(c.notes[1].desc, b"OSRELEASE=x\n");
    }

    #[test]
    fn kdump_kernel_text_alias_is_dropped() {
        // kexec adds a PT_LOAD for the kernel text that lies inside a System RAM PT_LOAD.
        let segs = [load(0x1000, 0x200000, 0x1000, 0x1000), load(0x2000, 0, 0x400000, 0x400000)];
        let c = parse(&core(EM_X86_64, &segs, 0x402000)).unwrap();
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.ranges[0].file_offset, 0x2000);
    }

    #[test]
    fn refuses_bad_headers() {
        let good = core(EM_X86_64, &[load(0x1000, 0, 0x1000, 0x1000)], 0x2000);
        assert!(parse(&good).is_ok());
        assert!(err(&good[..40]).contains("truncated ELF header"));
        assert!(err(&core(183, &[load(0x1000, 0, 0x1000, 0x1000)], 0x2000)).contains("e_machine 183"));
        let mut exec = good.clone();
        exec[16] = 2;
        assert!(err(&exec).contains("e_type 2 is an executable"));
        let mut class32 = good.clone();
        class32[4] = 1;
        assert!(err(&class32).contains("ELFCLASS64"));
        let mut big = good.clone();
        big[5] = 2;
        assert!(err(&big).contains("little-endian"));
        let mut many = good.clone();
        many[56..58].copy_from_slice(&200u16.to_le_bytes());
        let e = err(&many);
        assert!(
            e.contains("program header table (200 entries of 56 bytes at offset 0x40) runs past end of file"),
            "{e}"
        );
        let mut xnum = good.clone();
        xnum[56..58].copy_from_slice(&PN_XNUM.to_le_bytes());
        xnum[40..48].copy_from_slice(&0x1fd0u64.to_le_bytes()); // e_shoff: needs 0x40 bytes, 0x30 left
        assert!(err(&xnum).contains("PN_XNUM but section header 0 at 0x1fd0 runs past end of file"));
        // With the count in section header 0's sh_info, the core parses.
        xnum[40..48].copy_from_slice(&0x1f00u64.to_le_bytes());
        xnum[0x1f00 + 44..0x1f00 + 48].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&xnum).map(|c| c.ranges.len()), Ok(1));
        let e = err(&core(
            EM_X86_64,
            &[load(0x1000, 0, 0x1000, 0x1000), load(0x1800, 0x1000, 0x1000, 0x1000)],
            0x2000,
        ));
        assert_eq!(e, "PT_LOAD 1 runs past end of file (offset 0x1800, size 0x1000, file is 0x2000 bytes)");
        let e = err(&core(EM_X86_64, &[load(0x1000, 0, 0x1000, 0x800)], 0x2000));
        assert!(e.contains("PT_LOAD 0: p_filesz 0x1000 is larger than p_memsz 0x800"), "{e}");
        let e = err(&core(EM_X86_64, &[load(0x1000, 0, 0, 0)], 0x2000));
        assert!(e.contains("no PT_LOAD"), "{e}");
        let e = err(&core(EM_X86_64, &[], 0x2000));
        assert!(e.contains("no program headers"), "{e}");
        let overlap = [
            load(0x1000, 0, 0x800, 0x800),
            load(0x1000, 0x10000, 0x800, 0x800),
            load(0x1000, 0x400, 0x800, 0x800),
        ];
        let e = err(&core(EM_X86_64, &overlap, 0x2000));
        assert!(e.starts_with("PT_LOAD 2 [0x400, 0xc00) overlaps PT_LOAD 0 [0x0, 0x800)"), "{e}");
        let wrap = [load(0x1000, u64::MAX - 0xff, 0x100, 0x100)];
        assert!(err(&core(EM_X86_64, &wrap, 0x2000)).contains("top of the 64-bit address space"));
    }

    #[test]
    fn refuses_bad_notes() {
        let mut n = note("CORE", 1, &[0; 8]);
        n[4..8].copy_from_slice(&0x1000u32.to_le_bytes()); // desc size past the segment
        let nseg = Seg { p_type: PT_NOTE, offset: 0x200, paddr: 0, filesz: n.len() as u64, memsz: 0 };
        let mut data = core(EM_X86_64, &[nseg, load(0x1000, 0, 0x1000, 0x1000)], 0x2000);
        data[0x200..0x200 + n.len()].copy_from_slice(&n);
        let e = err(&data);
        assert!(e.starts_with("malformed note at offset 0x200: name size 0x5 and desc size 0x1000"), "{e}");
        let past = Seg { p_type: PT_NOTE, offset: 0x1f00, paddr: 0, filesz: 0x200, memsz: 0 };
        let e = err(&core(EM_X86_64, &[past, load(0x1000, 0, 0x1000, 0x1000)], 0x2000));
        assert!(e.starts_with("PT_NOTE 0 runs past end of file"), "{e}");
        // A zero-filled tail (kdump's padding) ends the notes quietly.
        let padded = Seg { p_type: PT_NOTE, offset: 0x200, paddr: 0, filesz: 0x100, memsz: 0 };
        let mut data = core(EM_X86_64, &[padded, load(0x1000, 0, 0x1000, 0x1000)], 0x2000);
        let n = note("CORE", 1, &[7; 4]);
        data[0x200..0x200 + n.len()].copy_from_slice(&n);
        assert_eq!(parse(&data).unwrap().notes.len(), 1);
    }

    #[test]
    fn never_panics_on_corrupt_headers() {
        let notes = note("VMCOREINFO", 0, b"OSRELEASE=x\n");
        let nseg = Seg { p_type: PT_NOTE, offset: 0x100, paddr: 0, filesz: notes.len() as u64, memsz: 0 };
        let mut base = core(EM_X86_64, &[nseg, load(0x200, 0, 0x100, 0x200)], 0x300);
        base[0x100..0x100 + notes.len()].copy_from_slice(&notes);
        // Flip every header byte through a few values, and cut the file everywhere.
        let mut rng = crate::testing::XorShift::new(0x2545_f491_4f6c_dd1d);
        for i in 0..0x100 {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut d = base.clone();
                d[i] = v;
                let _ = parse(&d);
                let _ = parse(&&d[..rng.below(0x300) as usize]);
            }
        }
    }
}
