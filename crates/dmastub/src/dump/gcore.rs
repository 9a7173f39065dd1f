//! A process's core file, as gdb's own `gcore` writes it on the live machine: an ELF64
//! `ET_CORE` with one PT_NOTE (NT_PRSTATUS per thread, the leader first, NT_PRPSINFO, NT_AUXV,
//! NT_FILE) and one PT_LOAD per run of a mapping's memory at its user virtual address.
//!
//! Memory the source cannot give (a page swapped out, never touched, or not in the image) is
//! never written as zeros: the mapping's PT_LOAD is split there and the part left out is not
//! described at all, so gdb says it cannot access it (or reads a file-backed mapping from the
//! file NT_FILE names). gdb reads a PT_LOAD with `p_filesz` 0 as zeros (its last fallback,
//! "sections with no contents"), so such headers are not written either.
//!
//! Data is written as it is read, and the program header table last, after the data (`e_phoff`
//! says where): the number of runs is known only once every page is read. The file is written
//! under a temporary name next to the target and renamed into place when complete.

use crate::addr::VirtAddr;
use crate::linux::{Linux, LinuxError, Regs, encode_prstatus};
use crate::mmu::{AddressSpace, MemError};
use crate::phys::elf::{EHDR_SIZE, PHDR_SIZE, PT_LOAD, PT_NOTE};
use crate::phys::encode_note;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const PAGE: u64 = crate::addr::PAGE_SIZE;
/// Note types of a process core (`include/uapi/linux/elf.h`).
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: `user_i387_struct` (the FXSAVE area).
pub const NT_PRFPREG: u32 = 2;
/// `NT_PRPSINFO`.
pub const NT_PRPSINFO: u32 = 3;
/// `NT_AUXV`.
pub const NT_AUXV: u32 = 6;
/// `NT_FILE`: the file-backed mappings.
pub const NT_FILE: u32 = 0x4649_4c45;
/// `sizeof(struct elf_prpsinfo)` on x86-64.
pub const PRPSINFO_SIZE: usize = 136;
/// `vm_flags` bits (`include/linux/mm.h`).
pub const VM_READ: u64 = 0x1;
/// Writable.
pub const VM_WRITE: u64 = 0x2;
/// Executable.
pub const VM_EXEC: u64 = 0x4;
/// Memory-mapped I/O: never read (a device's registers, not memory).
pub const VM_IO: u64 = 0x4000;
/// Raw page frames without `struct page` (device memory, `[vvar]`): never read.
pub const VM_PFNMAP: u64 = 0x400;
/// `madvise(MADV_DONTDUMP)`: the kernel leaves these out of cores; so does this writer.
pub const VM_DONTDUMP: u64 = 0x0400_0000;
/// Pages asked for in one read (a DMA source puts them on the wire together).
const BATCH_PAGES: usize = 256;
/// Absent ranges kept for the report.
const ABSENT_KEPT: usize = 8;
/// Program headers at most (`e_phnum` is 16 bits; `PN_XNUM` would need a section header).
const MAX_PHDRS: usize = 0xfffe;

/// One thread of the process: its id and user-mode registers.
#[derive(Clone, Debug)]
pub struct CoreThread {
    /// Its thread id (`pr_pid` of its NT_PRSTATUS).
    pub tid: i32,
    /// Its user-mode registers.
    pub regs: Regs,
    /// Its `user_i387_struct` (512 bytes, FXSAVE layout), when known.
    pub fpregs: Option<Vec<u8>>,
}

/// One mapping (VMA) of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Its `vm_flags`.
    pub vm_flags: u64,
    /// Its offset in the file, in pages (`vm_pgoff`).
    pub pgoff: u64,
    /// The file it maps, when it maps one.
    pub path: Option<String>,
}

/// What a process core holds besides memory.
#[derive(Clone, Debug, Default)]
pub struct CoreProcess {
    /// Its pid (the thread group id).
    pub pid: i32,
    /// Its parent's pid (0 unknown).
    pub ppid: i32,
    /// Its name (`comm`).
    pub comm: String,
    /// Its state letter as `ps` shows it.
    pub state: char,
    /// Its command line (`arg_start..arg_end`, NULs between the words), when read.
    pub args: Vec<u8>,
    /// Its threads, the thread group leader first.
    pub threads: Vec<CoreThread>,
    /// `mm->saved_auxv` up to and including `AT_NULL`.
    pub auxv: Vec<(u64, u64)>,
    /// Its mappings, in address order.
    pub mappings: Vec<CoreMapping>,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcoreSummary {
    /// PT_LOADs written.
    pub segments: usize,
    /// Pages of memory written.
    pub pages_written: u64,
    /// Pages of readable mappings the source could not give: left out.
    pub pages_absent: u64,
    /// The first few absent ranges (start, end) and why.
    pub absent: Vec<(u64, u64, String)>,
    /// Mappings not read, and why (no read permission, device memory, MADV_DONTDUMP).
    pub skipped: Vec<String>,
    /// Size of the file.
    pub file_bytes: u64,
}

/// Why no core was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcoreError {
    /// The mappings to read add up to more than the limit.
    #[error(
        "the process's readable mappings add up to {total} bytes ({} MiB), more than the limit of {limit} bytes ({} MiB): raise it to write them",
        total >> 20,
        limit >> 20
    )]
    TooBig {
        /// Bytes of mappings to read.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// The process has no thread with registers.
    #[error("no thread of the process has user-mode registers: a core without them is no use to gdb")]
    NoThreads,
    /// More runs than an ELF program header table holds.
    #[error(
        "more than {MAX_PHDRS} runs of memory (mappings split by absent pages): an ELF header cannot list them"
    )]
    TooManySegments,
    /// Writing the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

/// How to write a core.
#[derive(Clone, Copy, Debug)]
pub struct GcoreOptions {
    /// Most bytes of mappings read (their sizes added up, before reading).
    pub max_bytes: u64,
}

impl Default for GcoreOptions {
    fn default() -> Self {
        Self { max_bytes: Self::DEFAULT_MAX }
    }
}

impl GcoreOptions {
    /// 4 GiB of mappings: more than most processes map readably, little enough for a DMA link.
    pub const DEFAULT_MAX: u64 = 4 << 30;
}

/// Whether a mapping's memory is read, or why not.
pub fn skip_reason(m: &CoreMapping) -> Option<&'static str> {
    if m.vm_flags & (VM_IO | VM_PFNMAP) != 0 {
        Some("device memory (VM_IO/VM_PFNMAP): never read")
    } else if m.vm_flags & VM_DONTDUMP != 0 {
        Some("MADV_DONTDUMP")
    } else if m.vm_flags & VM_READ == 0 {
        Some("not readable (a guard region)")
    } else {
        None
    }
}

/// An `elf_prpsinfo` (x86-64) for the process.
pub fn encode_prpsinfo(p: &CoreProcess) -> Vec<u8> {
    let mut d = vec![0u8; PRPSINFO_SIZE];
    // pr_state: the index of the state letter in "RSDTZW" (the kernel's own numbering).
    let letter = if p.state.is_ascii() { p.state as u8 } else { b'?' };
    d[0] = b"RSDTZW".iter().position(|&c| c == letter).unwrap_or(0) as u8;
    d[1] = letter; // pr_sname
    d[2] = u8::from(letter == b'Z'); // pr_zomb
    d[24..28].copy_from_slice(&p.pid.to_le_bytes());
    d[28..32].copy_from_slice(&p.ppid.to_le_bytes());
    let comm = p.comm.as_bytes();
    let n = comm.len().min(15);
    d[40..40 + n].copy_from_slice(&comm[..n]);
    // pr_psargs: the command line, words separated by spaces, at most 79 bytes and a NUL.
    let args: Vec<u8> = p.args.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let args = args.trim_ascii_end();
    let n = args.len().min(79);
    d[56..56 + n].copy_from_slice(&args[..n]);
    d
}

/// An NT_FILE description: every file-backed mapping's range, page offset and path.
pub fn encode_nt_file(mappings: &[CoreMapping]) -> Vec<u8> {
    let files: Vec<&CoreMapping> = mappings.iter().filter(|m| m.path.is_some()).collect();
    let mut d = Vec::new();
    d.extend_from_slice(&(files.len() as u64).to_le_bytes());
    d.extend_from_slice(&PAGE.to_le_bytes());
    for m in &files {
        for v in [m.start, m.end, m.pgoff] {
            d.extend_from_slice(&v.to_le_bytes());
        }
    }
    for m in &files {
        d.extend_from_slice(m.path.as_deref().unwrap_or_default().as_bytes());
        d.push(0);
    }
    d
}

/// An auxiliary vector as the kernel gives it (`/proc/PID/auxv`, NT_AUXV): 64-bit type and
/// value pairs up to and including the first AT_NULL (`mm->saved_auxv` is a fixed-size array
/// with zeros after it); one is added when it has none.
pub fn encode_auxv(auxv: &[(u64, u64)]) -> Vec<u8> {
    let end = auxv.iter().position(|(k, _)| *k == 0).map_or(auxv.len(), |i| i + 1);
    let mut v: Vec<u8> =
        auxv[..end].iter().flat_map(|(k, val)| [k.to_le_bytes(), val.to_le_bytes()]).flatten().collect();
    if auxv[..end].last().is_none_or(|(k, _)| *k != 0) {
        v.extend_from_slice(&[0u8; 16]);
    }
    v
}

/// The PT_NOTE's contents, in the kernel's order: the first thread's NT_PRSTATUS (and
/// NT_PRFPREG), NT_PRPSINFO, NT_AUXV, NT_FILE, then every other thread's.
pub fn encode_notes(p: &CoreProcess) -> Vec<u8> {
    let mut out = Vec::new();
    let thread = |out: &mut Vec<u8>, t: &CoreThread| {
        let mut desc = encode_prstatus(t.tid, &t.regs);
        // pr_ppid, pr_pgrp, pr_sid: the process's parent; the group and session are not read.
        desc[36..40].copy_from_slice(&p.ppid.to_le_bytes());
        encode_note(out, "CORE", NT_PRSTATUS, &desc);
        if let Some(fp) = &t.fpregs {
            encode_note(out, "CORE", NT_PRFPREG, fp);
        }
    };
    let mut threads = p.threads.iter();
    if let Some(first) = threads.next() {
        thread(&mut out, first);
    }
    encode_note(&mut out, "CORE", NT_PRPSINFO, &encode_prpsinfo(p));
    if !p.auxv.is_empty() {
        encode_note(&mut out, "CORE", NT_AUXV, &encode_auxv(&p.auxv));
    }
    if p.mappings.iter().any(|m| m.path.is_some()) {
        encode_note(&mut out, "CORE", NT_FILE, &encode_nt_file(&p.mappings));
    }
    for t in threads {
        thread(&mut out, t);
    }
    out
}

/// One PT_LOAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its virtual address.
    pub vaddr: u64,
    /// Its bytes (in the file and in memory alike).
    pub len: u64,
    /// Where they are in the file.
    pub offset: u64,
    /// `PF_R`/`PF_W`/`PF_X`.
    pub flags: u32,
}

/// `p_flags` of a mapping.
fn pflags(vm_flags: u64) -> u32 {
    let mut f = 0;
    if vm_flags & VM_READ != 0 {
        f |= 4;
    }
    if vm_flags & VM_WRITE != 0 {
        f |= 2;
    }
    if vm_flags & VM_EXEC != 0 {
        f |= 1;
    }
    f
}

fn ehdr(phoff: u64, phnum: u16) -> Vec<u8> {
    super::elf::core_header(phoff, phnum, 0)
}

#[allow(clippy::too_many_arguments)]
fn phdr(
    out: &mut Vec<u8>,
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&vaddr.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
    out.extend_from_slice(&filesz.to_le_bytes());
    out.extend_from_slice(&memsz.to_le_bytes());
    out.extend_from_slice(&align.to_le_bytes());
}

/// Reads pages of the process: each `(address, buffer)` filled, or its error.
pub type ReadPages<'a> = dyn FnMut(&mut [(u64, &mut [u8])]) -> Vec<Result<(), MemError>> + 'a;

/// Writes the core of `p` to `path` (atomically: a temporary file renamed into place),
/// reading its memory with `read`.
pub fn write_core(
    p: &CoreProcess,
    read: &mut ReadPages<'_>,
    path: &Path,
    opts: &GcoreOptions,
) -> Result<GcoreSummary, GcoreError> {
    if p.threads.is_empty() {
        return Err(GcoreError::NoThreads);
    }
    let total: u64 =
        p.mappings.iter().filter(|m| skip_reason(m).is_none()).map(|m| m.end.saturating_sub(m.start)).sum();
    if total > opts.max_bytes {
        return Err(GcoreError::TooBig { total, limit: opts.max_bytes });
    }
    let tmp = temp_name(path);
    let io = |error| GcoreError::Io { path: tmp.clone(), error };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let result = write_into(p, read, &file).map_err(|e| match e {
        Failure::Io(error) => GcoreError::Io { path: tmp.clone(), error },
        Failure::Core(e) => e,
    });
    let result = result.and_then(|s| {
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|error| GcoreError::Io { path: path.to_path_buf(), error })?;
        Ok(s)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `DIR/.NAME.tmp-PID`: in the target's directory, so that the rename does not cross file systems.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "core".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

enum Failure {
    Io(std::io::Error),
    Core(GcoreError),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

fn write_into(
    p: &CoreProcess,
    read: &mut ReadPages<'_>,
    file: &std::fs::File,
) -> Result<GcoreSummary, Failure> {
    let notes = encode_notes(p);
    let notes_at = EHDR_SIZE as u64;
    let data_at = (notes_at + notes.len() as u64).div_ceil(PAGE) * PAGE;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&ehdr(0, 0))?; // rewritten once the program headers are known
    w.write_all(&notes)?;
    w.write_all(&vec![0u8; (data_at - notes_at - notes.len() as u64) as usize])?;
    let mut summary = GcoreSummary::default();
    let mut segments: Vec<Segment> = Vec::new();
    let mut cursor = data_at;
    let mut pages = vec![0u8; BATCH_PAGES * PAGE as usize];
    for m in &p.mappings {
        if let Some(why) = skip_reason(m) {
            summary.skipped.push(format!(
                "{:#x}-{:#x} {}: {why}",
                m.start,
                m.end,
                m.path.as_deref().unwrap_or("")
            ));
            continue;
        }
        let flags = pflags(m.vm_flags);
        let mut at = m.start & !(PAGE - 1);
        while at < m.end {
            let n = (((m.end - at).div_ceil(PAGE)) as usize).min(BATCH_PAGES);
            let mut reads: Vec<(u64, &mut [u8])> = pages[..n * PAGE as usize]
                .chunks_mut(PAGE as usize)
                .enumerate()
                .map(|(i, b)| (at + i as u64 * PAGE, b))
                .collect();
            let results = read(&mut reads);
            drop(reads);
            for (i, r) in results.into_iter().enumerate().take(n) {
                let page_at = at + i as u64 * PAGE;
                match r {
                    Ok(()) => {
                        match segments.last_mut() {
                            Some(s)
                                if s.vaddr + s.len == page_at
                                    && s.offset + s.len == cursor
                                    && s.flags == flags =>
                            {
                                s.len += PAGE
                            }
                            _ => {
                                if segments.len() >= MAX_PHDRS {
                                    return Err(Failure::Core(GcoreError::TooManySegments));
                                }
                                segments.push(Segment { vaddr: page_at, len: PAGE, offset: cursor, flags });
                            }
                        }
                        w.write_all(&pages[i * PAGE as usize..(i + 1) * PAGE as usize])?;
                        cursor += PAGE;
                        summary.pages_written += 1;
                    }
                    Err(e) => {
                        summary.pages_absent += 1;
                        let kept = summary.absent.len();
                        match summary.absent.last_mut() {
                            Some(a) if a.1 == page_at => a.1 += PAGE,
                            _ if kept < ABSENT_KEPT => {
                                summary.absent.push((page_at, page_at + PAGE, e.to_string()))
                            }
                            _ => {}
                        }
                    }
                }
            }
            at += n as u64 * PAGE;
        }
    }
    let phoff = cursor;
    let mut h = Vec::with_capacity((1 + segments.len()) * PHDR_SIZE as usize);
    phdr(&mut h, PT_NOTE, 0, notes_at, 0, notes.len() as u64, 0, 0);
    for s in &segments {
        phdr(&mut h, PT_LOAD, s.flags, s.offset, s.vaddr, s.len, s.len, PAGE);
    }
    w.write_all(&h)?;
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&ehdr(phoff, (1 + segments.len()) as u16))?;
    w.flush()?;
    summary.segments = segments.len();
    summary.file_bytes = phoff + h.len() as u64;
    Ok(summary)
}

/// A process's core, ready to write: what it holds besides memory, the page-table root its
/// memory is read through, and what could not be read.
pub struct ProcessCore {
    /// The notes' contents and the mappings.
    pub process: CoreProcess,
    /// The process's page-table root (`mm->pgd`).
    pub cr3: u64,
    /// What is missing, one line each (a thread without user-mode registers, a mapping list cut short).
    pub problems: Vec<String>,
}

impl ProcessCore {
    /// Reads pages of the process through its page tables, for [`write_core`].
    pub fn reader<'a>(&self, space: &'a mut AddressSpace) -> Box<ReadPages<'a>> {
        let cr3 = self.cr3;
        Box::new(move |reads: &mut [(u64, &mut [u8])]| {
            let mut virt: Vec<(VirtAddr, &mut [u8])> =
                reads.iter_mut().map(|(a, b)| (VirtAddr(*a), &mut **b)).collect();
            space.read_virt_many_in(cr3, &mut virt)
        })
    }
}

/// What the core of process `pid` (any of its threads' ids) holds: its threads' user-mode
/// registers (the thread group leader first), its info, auxiliary vector and mappings. Fails
/// for an unknown pid and for a kernel thread (it has no user space to dump).
pub fn process_core(linux: &Linux, space: &mut AddressSpace, pid: i32) -> Result<ProcessCore, LinuxError> {
    let threads = linux.process_threads(space, pid)?;
    let Some((leader, _)) = threads.first() else {
        return Err(LinuxError::NoTasks(format!("pid {pid} has no threads")));
    };
    let task = leader.task.clone();
    let Some(cr3) = task.cr3 else {
        return Err(LinuxError::NoPgd { pid: task.pid, comm: task.comm.clone() });
    };
    let mut problems = Vec::new();
    // The leader's task, as the thread list read it: no second walk of the task list.
    let maps = linux.maps_of(space, &task)?;
    problems.extend(maps.problems.iter().map(|p| format!("mappings: {p}")));
    let mut core_threads = Vec::new();
    for (t, regs) in &threads {
        match regs {
            Ok(u) => {
                if u.fpregs.is_none() {
                    problems.extend(u.notes.iter().map(|n| format!("thread {}: {n}", t.task.pid)));
                }
                core_threads.push(CoreThread { tid: t.task.pid, regs: u.regs, fpregs: u.fpregs.clone() })
            }
            // A thread without registers is left out: a note of zeros would be a lie.
            Err(e) => problems.push(format!("thread {} left out: {e}", t.task.pid)),
        }
    }
    // The command line: the first 80 bytes are all NT_PRPSINFO holds.
    let mm = &maps.mm;
    let mut args = vec![0u8; mm.arg_end.saturating_sub(mm.arg_start).min(80) as usize];
    if !args.is_empty()
        && let Err(e) = space.read_virt_in(cr3, VirtAddr(mm.arg_start), &mut args)
    {
        problems.push(format!("its command line at {:#x}: {e}", mm.arg_start));
        args.clear();
    }
    let mappings = maps
        .vmas
        .iter()
        .map(|v| CoreMapping {
            start: v.start,
            end: v.end,
            vm_flags: v.flags,
            pgoff: v.pgoff,
            path: v.file.as_ref().map(|f| f.path.clone()),
        })
        .collect();
    let process = CoreProcess {
        pid: task.tgid,
        ppid: task.ppid.unwrap_or(0),
        comm: task.comm.clone(),
        state: task.state,
        args,
        threads: core_threads,
        auxv: mm.saved_auxv.clone(),
        mappings,
    };
    Ok(ProcessCore { process, cr3, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::reg;
    use crate::mmu::TranslateError;

    fn process() -> CoreProcess {
        let mut regs = Regs::default();
        regs[reg::RIP] = Some(0x401234);
        regs[reg::RSP] = Some(0x7ffc_0000_0ff0);
        CoreProcess {
            pid: 93,
            ppid: 1,
            comm: "timekeeper".into(),
            state: 'S',
            args: b"/bin/timekeeper\0--flag\0".to_vec(),
            threads: vec![
                CoreThread { tid: 93, regs, fpregs: None },
                CoreThread { tid: 94, regs: Regs::default(), fpregs: Some(vec![0x25; 512]) },
            ],
            auxv: vec![(6, 4096), (0, 0), (0, 0), (0, 0)],
            mappings: vec![
                CoreMapping {
                    start: 0x400000,
                    end: 0x403000,
                    vm_flags: VM_READ | VM_EXEC,
                    pgoff: 0,
                    path: Some("/bin/timekeeper".into()),
                },
                CoreMapping { start: 0x500000, end: 0x501000, vm_flags: 0, pgoff: 0, path: None },
                CoreMapping {
                    start: 0x7ffc_0000_0000,
                    end: 0x7ffc_0000_2000,
                    vm_flags: VM_READ | VM_WRITE,
                    pgoff: 0,
                    path: None,
                },
            ],
        }
    }

    /// Parsed notes: (name, type, desc).
    fn parse_notes(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        while b.len() >= 12 {
            let (namesz, descsz, ty) = (word(b, 0), word(b, 1), word(b, 2) as u32);
            let name = String::from_utf8_lossy(&b[12..12 + namesz.saturating_sub(1)]).into_owned();
            let d = 12 + namesz.div_ceil(4) * 4;
            v.push((name, ty, b[d..d + descsz].to_vec()));
            b = &b[d + descsz.div_ceil(4) * 4..];
        }
        v
    }

    #[test]
    fn notes_come_in_the_kernels_order() {
        let notes = parse_notes(&encode_notes(&process()));
        let types: Vec<u32> = notes.iter().map(|n| n.1).collect();
        assert_eq!(types, [NT_PRSTATUS, NT_PRPSINFO, NT_AUXV, NT_FILE, NT_PRSTATUS, NT_PRFPREG]);
        assert_eq!(notes[5].2.len(), 512, "each thread's FPU state after its registers");
        assert!(notes.iter().all(|n| n.0 == "CORE"));
        let pid = |d: &[u8]| i32::from_le_bytes(d[32..36].try_into().unwrap());
        assert_eq!(pid(&notes[0].2), 93, "the leader first");
        assert_eq!(pid(&notes[4].2), 94);
        let (_, regs) = crate::linux::parse_prstatus(&notes[0].2).unwrap();
        assert_eq!(regs.pc(), Some(0x401234));
        let ps = &notes[1].2;
        assert_eq!(ps.len(), PRPSINFO_SIZE);
        assert_eq!((ps[0], ps[1]), (1, b'S'));
        assert_eq!(&ps[40..50], b"timekeeper");
        assert_eq!(&ps[56..78], b"/bin/timekeeper --flag");
        assert_eq!(ps[78], 0);
        assert_eq!(notes[2].2.len(), 32);
        // NT_FILE: one file-backed mapping.
        let f = &notes[3].2;
        let w = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((w(0), w(1), w(2), w(3), w(4)), (1, 4096, 0x400000, 0x403000, 0));
        assert_eq!(&f[40..], b"/bin/timekeeper\0");
    }

    #[test]
    fn absent_pages_split_segments_and_are_never_written() {
        let dir = std::env::temp_dir().join(format!("dmastub-gcore-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("core");
        // Page 0x401000 is absent; every other page holds its own address.
        let mut read = |reads: &mut [(u64, &mut [u8])]| -> Vec<Result<(), MemError>> {
            reads
                .iter_mut()
                .map(|(a, b)| {
                    if *a == 0x401000 {
                        return Err(MemError::Translate(TranslateError::NoCr3));
                    }
                    for c in b.chunks_mut(8) {
                        c.copy_from_slice(&a.to_le_bytes());
                    }
                    Ok(())
                })
                .collect()
        };
        let s = write_core(&process(), &mut read, &path, &GcoreOptions::default()).unwrap();
        assert_eq!((s.segments, s.pages_written, s.pages_absent), (3, 4, 1));
        assert_eq!(s.absent[0].0..s.absent[0].1, 0x401000..0x402000);
        assert_eq!(s.skipped.len(), 1, "the unreadable mapping: {:?}", s.skipped);
        let b = std::fs::read(&path).unwrap();
        assert_eq!(b.len() as u64, s.file_bytes);
        let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(b[56..58].try_into().unwrap()) as usize;
        assert_eq!(phnum, 4);
        let ph: Vec<[u64; 6]> = (0..phnum)
            .map(|i| {
                let h = &b[phoff + i * 56..][..56];
                let q = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
                [
                    u32::from_le_bytes(h[0..4].try_into().unwrap()) as u64,
                    u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64,
                    q(8),
                    q(16),
                    q(32),
                    q(40),
                ]
            })
            .collect();
        assert_eq!(ph[0][0], PT_NOTE as u64);
        let loads: Vec<(u64, u64, u64)> = ph[1..].iter().map(|h| (h[3], h[4], h[1])).collect();
        assert_eq!(loads, [(0x400000, 0x1000, 5), (0x402000, 0x1000, 5), (0x7ffc_0000_0000, 0x2000, 6)]);
        for h in &ph[1..] {
            assert_eq!(h[4], h[5], "memsz = filesz: nothing described that was not read");
            let at = h[2] as usize;
            assert_eq!(
                u64::from_le_bytes(b[at..at + 8].try_into().unwrap()),
                h[3],
                "each page holds its own address"
            );
        }
        assert!(!dir.join(format!(".core.tmp-{}", std::process::id())).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_big_is_refused_before_writing() {
        let path = std::env::temp_dir().join(format!("dmastub-gcore-big-{}", std::process::id()));
        let mut read = |_: &mut [(u64, &mut [u8])]| -> Vec<Result<(), MemError>> { unreachable!() };
        let e = write_core(&process(), &mut read, &path, &GcoreOptions { max_bytes: 0x1000 }).unwrap_err();
        assert!(e.to_string().contains("raise it"), "{e}");
        assert!(!path.exists());
    }
}
