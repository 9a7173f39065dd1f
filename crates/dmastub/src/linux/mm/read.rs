//! Reading one process's map: `mm_struct`, the VMA tree (or list), then every VMA's file,
//! inode and path, or its special name, all VMAs' reads of one level together.

use super::batch::{Batcher, uint};
use super::layout::{F, MmLayout, span};
use super::maple;
use super::{MAX_VMAS, MappedFile, MapsError, MmInfo, ProcessMaps, Vma};
use crate::linux::kallsyms::Kallsyms;
use crate::linux::tasks::{PF_KTHREAD, Task};
use crate::linux::{Memory, Symbols, View};
use crate::mmu::MemError;
use std::collections::HashSet;

/// Most path components followed (`PATH_MAX` is 4096 bytes, so at most 2048 names).
const MAX_COMPONENTS: usize = 2048;
/// Most bytes of one name (`NAME_MAX` is 255; pseudo file systems may go a little further).
const MAX_NAME: u64 = 1024;
/// Rounds of reads for the names: the longest chain of pointers, with room to spare.
const MAX_ROUNDS: usize = MAX_COMPONENTS + 64;
/// `vsyscall_mode` value `NONE` (`enum { EMULATE, XONLY, NONE }`).
const VSYSCALL_NONE: u64 = 2;
/// `MM_CONTEXT_HAS_VSYSCALL` in `mm->context.flags`.
const MM_CONTEXT_HAS_VSYSCALL: u64 = 2;

fn field(b: &[u8], lo: u64, f: F) -> Option<u64> {
    uint(b, f.off.checked_sub(lo)?, f.size)
}

/// Reads the map of `task` under the kernel's view.
pub(crate) fn process_maps(
    view: &mut View,
    l: &MmLayout,
    syms: &Kallsyms,
    task: &Task,
) -> Result<ProcessMaps, MapsError> {
    let (pid, comm) = (task.pid, task.comm.clone());
    let kthread = task.flags.is_some_and(|f| f & PF_KTHREAD != 0);
    let mm = match task.mm {
        _ if kthread => return Err(MapsError::KernelThread { pid, comm }),
        // Without flags, no mm is taken for a kernel thread (as `ps` does).
        Some(0) if task.flags.is_none() => return Err(MapsError::KernelThread { pid, comm }),
        Some(0) => return Err(MapsError::Exited { pid, comm }),
        Some(mm) => mm,
        None => {
            return Err(MapsError::Layout {
                what: "task_struct.mm".into(),
                origin: "the kernel's layout".into(),
            });
        }
    };
    let mut problems = Vec::new();
    // The mm_struct's fields and the task's fs pointer: one batch.
    let (lo, hi) = span(&l.mm_fields());
    let mut mm_bytes = vec![0u8; (hi - lo) as usize];
    let mut fs_word = [0u8; 8];
    let results = {
        let mut reads: Vec<(u64, &mut [u8])> = vec![(mm.wrapping_add(lo), &mut mm_bytes[..])];
        if let Some(f) = l.task_fs {
            reads.push((task.addr.wrapping_add(f.off), &mut fs_word[..]));
        }
        view.read_together(&mut reads)
    };
    if let Some(Err(source)) = results.first() {
        return Err(MapsError::Mm { pid, comm, mm, source: source.clone() });
    }
    let fs = match results.get(1) {
        Some(Ok(())) => Some(u64::from_le_bytes(fs_word)).filter(|&f| f != 0),
        Some(Err(e)) => {
            problems
                .push(format!("task {:#x} fs: {e}: paths are shown from the namespace's root", task.addr));
            None
        }
        None => None,
    };
    let get = |f: F| field(&mm_bytes, lo, f).unwrap_or(0);
    let mut info = MmInfo {
        mm,
        start_code: get(l.start_code),
        end_code: get(l.end_code),
        start_data: get(l.start_data),
        end_data: get(l.end_data),
        start_brk: get(l.start_brk),
        brk: get(l.brk),
        start_stack: get(l.start_stack),
        arg_start: get(l.arg_start),
        arg_end: get(l.arg_end),
        env_start: get(l.env_start),
        env_end: get(l.env_end),
        saved_auxv: Vec::new(),
    };
    if let Some(a) = l.saved_auxv {
        for i in 0..(a.size / 16) {
            let at = |k: u64| field(&mm_bytes, lo, F { off: a.off + 16 * i + 8 * k, size: 8 });
            let (Some(t), Some(v)) = (at(0), at(1)) else { break };
            info.saved_auxv.push((t, v));
            if t == 0 {
                break;
            }
        }
    }
    let context_flags = l.context_flags.and_then(|f| field(&mm_bytes, lo, f));
    let cr3 = match task.cr3 {
        Some(c) => c,
        None => {
            let pgd = l.mm_pgd.and_then(|f| field(&mm_bytes, lo, f)).unwrap_or(0);
            match view.translate(pgd) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("mm {mm:#x}: its pgd {pgd:#x} does not translate: {e}"));
                    0
                }
            }
        }
    };

    view.log_traffic("memory map, after the mm");
    // The VMAs' addresses: from the maple tree, or the old list.
    let vma_addrs: Vec<(u64, Option<(u64, u64)>)> = if let Some(root_f) = l.mm_mt_root {
        let root = field(&mm_bytes, lo, root_f).unwrap_or(0);
        let mut read_nodes = |addrs: &[u64]| {
            let mut bufs = vec![vec![0u8; maple::NODE_SIZE]; addrs.len()];
            let mut reads: Vec<(u64, &mut [u8])> =
                addrs.iter().zip(bufs.iter_mut()).map(|(a, b)| (*a, &mut b[..])).collect();
            let results = view.read_together(&mut reads);
            results.into_iter().zip(bufs).map(|(r, b)| r.map(|()| b)).collect()
        };
        let (entries, errors) = maple::walk(&l.maple, root, MAX_VMAS, &mut read_nodes);
        problems.extend(errors.iter().map(|e| format!("mm {mm:#x}: {e}")));
        entries.into_iter().map(|e| (e.value, Some((e.min, e.max)))).collect()
    } else {
        let first = l.mm_mmap.and_then(|f| field(&mm_bytes, lo, f)).unwrap_or(0);
        walk_vma_list(view, l, mm, first, &mut problems).into_iter().map(|a| (a, None)).collect()
    };

    view.log_traffic("memory map, after the VMAs' tree");
    // Every VMA's fields, together (in bounded batches).
    let (vlo, vhi) = span(&l.vma_fields());
    let vlen = (vhi - vlo) as usize;
    let mut raw: Vec<(u64, Vec<u8>)> = Vec::with_capacity(vma_addrs.len());
    for chunk in vma_addrs.chunks(4096) {
        let mut bufs = vec![vec![0u8; vlen]; chunk.len()];
        let results = {
            let mut reads: Vec<(u64, &mut [u8])> = chunk
                .iter()
                .zip(bufs.iter_mut())
                .map(|((a, _), b)| (a.wrapping_add(vlo), &mut b[..]))
                .collect();
            view.read_together(&mut reads)
        };
        for (((addr, range), b), r) in chunk.iter().zip(bufs).zip(results) {
            match r {
                Ok(()) => {
                    let (start, end) =
                        (field(&b, vlo, l.vm_start).unwrap_or(0), field(&b, vlo, l.vm_end).unwrap_or(0));
                    if let Some((min, max)) = range
                        && (start != *min || end.wrapping_sub(1) != *max)
                    {
                        problems.push(format!(
                            "vma {addr:#x}: {start:#x}-{end:#x} but the maple tree has it at {min:#x}-{:#x}",
                            max.wrapping_add(1)
                        ));
                    }
                    if start >= end {
                        problems.push(format!(
                            "vma {addr:#x}: empty or inverted range {start:#x}-{end:#x}; left out"
                        ));
                        continue;
                    }
                    raw.push((*addr, b));
                }
                Err(e) => problems.push(format!("vma {addr:#x}: {e}; left out")),
            }
        }
    }

    view.log_traffic("memory map, after the VMAs");
    // Files, inodes, paths and special names: level by level for all VMAs together.
    let mut b = Batcher::new(view);
    let names = Names::new(syms);
    let root = fs.and_then(|fs| match (l.fs_root_mnt, l.fs_root_dentry) {
        (Some(m), Some(d)) => Some((fs, m, d)),
        _ => None,
    });
    // The gate VMA (`[vsyscall]`), which /proc/PID/maps lists last when the kernel maps it.
    let gate = match (syms.address("gate_vma"), syms.address("vsyscall_mode"), context_flags) {
        (Some(g), Some(m), Some(cf)) if cf & MM_CONTEXT_HAS_VSYSCALL != 0 => Some((g, m)),
        _ => None,
    };
    let mut gate_vma: Option<Result<Option<Vec<u8>>, String>> = gate.is_none().then_some(Ok(None));
    let mut done: Vec<Option<Vma>> = vec![None; raw.len()];
    let mut vma_problems: Vec<Vec<String>> = vec![Vec::new(); raw.len()];
    let mut rounds = 0usize;
    loop {
        let root_path = match root {
            Some((fs, m, d)) => {
                match (owned(&mut b, fs.wrapping_add(m.off), 8), owned(&mut b, fs.wrapping_add(d.off), 8)) {
                    (Some(Ok(mb)), Some(Ok(db))) => {
                        Some((uint(&mb, 0, 8).unwrap_or(0), uint(&db, 0, 8).unwrap_or(0)))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        for (i, (addr, bytes)) in raw.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let mut p = Vec::new();
            if let Some(v) = resolve_vma(&mut b, l, &names, &info, *addr, bytes, vlo, root_path, &mut p) {
                done[i] = Some(v);
                vma_problems[i] = p;
            }
        }
        if gate_vma.is_none()
            && let Some((g, m)) = gate
        {
            gate_vma = match b.get(m, 4) {
                Some(Ok(mode)) if uint(mode, 0, 4) == Some(VSYSCALL_NONE) => Some(Ok(None)),
                Some(Ok(_)) => match b.get(g.wrapping_add(vlo), vlen) {
                    Some(Ok(v)) => Some(Ok(Some(v.to_vec()))),
                    Some(Err(e)) => Some(Err(format!("gate_vma {g:#x}: {e}"))),
                    None => None,
                },
                Some(Err(e)) => Some(Err(format!("vsyscall_mode {m:#x}: {e}"))),
                None => None,
            };
        }
        rounds += 1;
        if !b.pending() || rounds > MAX_ROUNDS || !b.round() {
            break;
        }
    }
    let mut vmas = Vec::with_capacity(raw.len() + 1);
    for (i, v) in done.into_iter().enumerate() {
        match v {
            Some(v) => vmas.push(v),
            None => {
                let (addr, bytes) = &raw[i];
                problems
                    .push(format!("vma {addr:#x}: its file or name could not be read (bounds of the walk)"));
                vmas.push(bare_vma(l, *addr, bytes, vlo));
            }
        }
    }
    for p in vma_problems.into_iter().flatten() {
        problems.push(p);
    }
    vmas.sort_by_key(|v| v.start);
    match gate_vma {
        Some(Ok(Some(bytes))) => {
            let mut v = bare_vma(l, gate.map_or(0, |g| g.0), &bytes, vlo);
            v.name = Some("[vsyscall]".into());
            vmas.push(v);
        }
        Some(Err(e)) => problems.push(format!("[vsyscall]: {e}")),
        _ => {}
    }
    if let Some(why) = view_budget(&b) {
        problems.push(why);
    }
    b.view.log_traffic(&format!("memory map, after names ({rounds} rounds)"));
    Ok(ProcessMaps { pid, comm, cr3, mm: info, vmas, problems })
}

fn view_budget(b: &Batcher) -> Option<String> {
    b.view.budget_spent().map(|w| format!("truncated: {w}"))
}

/// The list of VMAs of kernels before 6.1 (`mm->mmap`, linked by `vm_next`): a read per VMA.
fn walk_vma_list(view: &mut View, l: &MmLayout, mm: u64, first: u64, problems: &mut Vec<String>) -> Vec<u64> {
    let Some(next) = l.vm_next else {
        problems.push("the layout has mm_struct.mmap but no vm_area_struct.vm_next".into());
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut at = first;
    while at != 0 {
        if !seen.insert(at) {
            problems.push(format!("mm {mm:#x}: the VMA list loops back to {at:#x}; stopped"));
            break;
        }
        if out.len() >= MAX_VMAS {
            problems.push(format!("mm {mm:#x}: stopped after {MAX_VMAS} VMAs (the most believed)"));
            break;
        }
        out.push(at);
        at = match view.read_u64(at.wrapping_add(next.off)) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("vma {at:#x}: reading vm_next: {e}; the list stops there"));
                break;
            }
        };
    }
    out
}

/// A VMA with no file and no name.
fn bare_vma(l: &MmLayout, addr: u64, b: &[u8], lo: u64) -> Vma {
    Vma {
        addr,
        start: field(b, lo, l.vm_start).unwrap_or(0),
        end: field(b, lo, l.vm_end).unwrap_or(0),
        flags: field(b, lo, l.vm_flags).unwrap_or(0),
        pgoff: field(b, lo, l.vm_pgoff).unwrap_or(0),
        file: None,
        name: None,
    }
}

/// Kernel functions whose identity decides a name.
struct Names {
    special_mapping_name: Option<u64>,
    simple_dname: Option<u64>,
    anon_inodefs_dname: Option<u64>,
}

impl Names {
    fn new(syms: &Kallsyms) -> Self {
        Self {
            special_mapping_name: syms.address("special_mapping_name"),
            simple_dname: syms.address("simple_dname"),
            anon_inodefs_dname: syms.address("anon_inodefs_dname"),
        }
    }
}

/// Bytes at `addr` owned, or `None` while not read yet; a failed read is `Some(Err)`.
fn owned(b: &mut Batcher, addr: u64, len: usize) -> Option<Result<Vec<u8>, MemError>> {
    b.get(addr, len).map(|r| r.map(<[u8]>::to_vec))
}

/// A C string at `addr`, at most `max` bytes, not read across a page boundary (a short
/// string near the end of a page must not fail for the page after).
fn c_string(b: &mut Batcher, addr: u64, max: u64) -> Option<Result<String, MemError>> {
    let len = max.min(0x1000 - (addr & 0xfff)).max(1) as usize;
    Some(owned(b, addr, len)?.map(|v| {
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    }))
}

/// The VMA at `addr`, its file or name resolved, or `None` while reads are pending.
#[allow(clippy::too_many_arguments)]
fn resolve_vma(
    b: &mut Batcher,
    l: &MmLayout,
    names: &Names,
    mm: &MmInfo,
    addr: u64,
    bytes: &[u8],
    lo: u64,
    root: Option<(u64, u64)>,
    problems: &mut Vec<String>,
) -> Option<Vma> {
    let mut v = bare_vma(l, addr, bytes, lo);
    let file = field(bytes, lo, l.vm_file).unwrap_or(0);
    if file != 0 {
        let (f, p) = resolve_file(b, l, names, file, root)?;
        v.file = Some(f);
        problems.extend(p.into_iter().map(|p| format!("vma {addr:#x} {:#x}-{:#x}: {p}", v.start, v.end)));
        return Some(v);
    }
    // A special mapping names itself (`vm_ops->name`): [vdso], [vvar], [uprobes].
    let ops = l.vm_ops.and_then(|f| field(bytes, lo, f)).unwrap_or(0);
    if ops != 0
        && let Some(name_f) = l.vm_ops_name
    {
        // The special mapping's name pointer is asked for with vm_ops->name (the round trip
        // after would otherwise be spent on it alone); unused when the function is another.
        let private = l.vm_private_data.and_then(|f| field(bytes, lo, f)).unwrap_or(0);
        let off = l.special_mapping_name.map_or(0, |f| f.off);
        let name_ptr = if private != 0 && names.special_mapping_name.is_some() {
            owned(b, private.wrapping_add(off), 8)
        } else {
            None
        };
        match owned(b, ops.wrapping_add(name_f.off), 8)? {
            Ok(w) => {
                let func = uint(&w, 0, 8).unwrap_or(0);
                if func != 0 && Some(func) == names.special_mapping_name {
                    match name_ptr.or_else(|| owned(b, private.wrapping_add(off), 8))? {
                        Ok(w) => {
                            let s = uint(&w, 0, 8).unwrap_or(0);
                            if s != 0 {
                                match c_string(b, s, 64)? {
                                    Ok(name) => {
                                        v.name = Some(name);
                                        return Some(v);
                                    }
                                    Err(e) => problems
                                        .push(format!("vma {addr:#x}: special mapping name at {s:#x}: {e}")),
                                }
                            }
                        }
                        Err(e) => {
                            problems.push(format!("vma {addr:#x}: vm_special_mapping {private:#x}: {e}"))
                        }
                    }
                } else if func != 0 {
                    problems.push(format!(
                        "vma {addr:#x}: vm_ops {ops:#x} names it with function {func:#x}, which dmastub cannot run; name left out"
                    ));
                }
            }
            Err(e) => problems.push(format!("vma {addr:#x}: vm_ops {ops:#x}: {e}")),
        }
    }
    if v.start <= mm.brk && v.end >= mm.start_brk {
        v.name = Some("[heap]".into());
    } else if v.start <= mm.start_stack && v.end >= mm.start_stack {
        v.name = Some("[stack]".into());
    } else if let Some(an) = l.anon_name.and_then(|f| field(bytes, lo, f)).filter(|&a| a != 0) {
        let off = l.anon_vma_name_name.map_or(4, |f| f.off);
        match c_string(b, an.wrapping_add(off), 80)? {
            Ok(s) => v.name = Some(format!("[anon:{s}]")),
            Err(e) => problems.push(format!("vma {addr:#x}: anon_name {an:#x}: {e}")),
        }
    }
    Some(v)
}

/// The file at `file`: device, inode and path; problems as sentences. `None` while pending.
fn resolve_file(
    b: &mut Batcher,
    l: &MmLayout,
    names: &Names,
    file: u64,
    root: Option<(u64, u64)>,
) -> Option<(MappedFile, Vec<String>)> {
    let mut problems = Vec::new();
    let (flo, fhi) = span(&[Some(l.f_path_mnt), Some(l.f_path_dentry), l.f_inode]);
    let fb = match owned(b, file.wrapping_add(flo), (fhi - flo) as usize)? {
        Ok(fb) => fb,
        Err(e) => {
            let f = MappedFile { dev_major: 0, dev_minor: 0, inode: 0, path: "?".into() };
            return Some((f, vec![format!("file {file:#x}: {e}")]));
        }
    };
    let vfsmnt = field(&fb, flo, l.f_path_mnt).unwrap_or(0);
    let dentry = field(&fb, flo, l.f_path_dentry).unwrap_or(0);
    // Asked for together: the inode's fields and the path's first level.
    let inode = match l.f_inode.and_then(|f| field(&fb, flo, f)) {
        Some(i) => Some(Ok(i)),
        None => dentry_inode(b, l, dentry),
    };
    let path = resolve_path(b, l, names, dentry, vfsmnt, root);
    let inode = inode?;
    let (ilo, ihi) = span(&[Some(l.i_ino), Some(l.i_sb)]);
    let dev_ino = match inode {
        Ok(inode) => match owned(b, inode.wrapping_add(ilo), (ihi - ilo) as usize) {
            None => None,
            Some(Ok(ib)) => {
                let ino = field(&ib, ilo, l.i_ino).unwrap_or(0);
                let sb = field(&ib, ilo, l.i_sb).unwrap_or(0);
                match owned(b, sb.wrapping_add(l.s_dev.off), 4) {
                    None => None,
                    Some(Ok(d)) => Some((uint(&d, 0, 4).unwrap_or(0), ino)),
                    Some(Err(e)) => {
                        problems.push(format!("super_block {sb:#x}: {e}: device unknown"));
                        Some((0, ino))
                    }
                }
            }
            Some(Err(e)) => {
                problems.push(format!("inode {inode:#x}: {e}: device and inode unknown"));
                Some((0, 0))
            }
        },
        Err(e) => {
            problems.push(e);
            Some((0, 0))
        }
    };
    let path = path?;
    let (dev, ino) = dev_ino?;
    let path = path.unwrap_or_else(|e| {
        problems.push(e);
        "?".into()
    });
    // dev_t: 12 bits of major above 20 bits of minor.
    let f = MappedFile { dev_major: (dev >> 20) as u32, dev_minor: (dev & 0xfffff) as u32, inode: ino, path };
    Some((f, problems))
}

/// `dentry->d_inode`, for layouts without `file.f_inode`.
fn dentry_inode(b: &mut Batcher, l: &MmLayout, dentry: u64) -> Option<Result<u64, String>> {
    let Some(f) = l.d_inode else {
        return Some(Err("the layout has neither file.f_inode nor dentry.d_inode".into()));
    };
    Some(match owned(b, dentry.wrapping_add(f.off), 8)? {
        Ok(w) => Ok(uint(&w, 0, 8).unwrap_or(0)),
        Err(e) => Err(format!("dentry {dentry:#x}: {e}")),
    })
}

/// A dentry's fields: (parent, name pointer, name length, hashed, d_op).
struct Dentry {
    parent: u64,
    name: u64,
    len: u64,
    hashed: bool,
    op: u64,
    bytes: Vec<u8>,
    lo: u64,
}

fn read_dentry(b: &mut Batcher, l: &MmLayout, d: u64) -> Option<Result<Dentry, String>> {
    let (lo, hi) = span(&l.dentry_fields());
    Some(match owned(b, d.wrapping_add(lo), (hi - lo) as usize)? {
        Ok(bytes) => Ok(Dentry {
            parent: field(&bytes, lo, l.d_parent).unwrap_or(0),
            name: field(&bytes, lo, l.d_name_name).unwrap_or(0),
            len: field(&bytes, lo, l.d_name_len).unwrap_or(0),
            hashed: l.d_hash_pprev.is_none_or(|f| field(&bytes, lo, f).unwrap_or(0) != 0),
            op: l.d_op.and_then(|f| field(&bytes, lo, f)).unwrap_or(0),
            bytes,
            lo,
        }),
        Err(e) => Err(format!("dentry {d:#x}: {e}")),
    })
}

/// A dentry's name: from its own bytes when inline (`d_iname`), else read.
fn dentry_name(b: &mut Batcher, at: u64, d: &Dentry) -> Option<Result<Vec<u8>, String>> {
    let len = d.len.min(MAX_NAME);
    let base = at.wrapping_add(d.lo);
    if d.name >= base && d.name.saturating_add(len) <= base + d.bytes.len() as u64 {
        let off = (d.name - base) as usize;
        return Some(Ok(d.bytes[off..off + len as usize].to_vec()));
    }
    if len == 0 {
        return Some(Ok(Vec::new()));
    }
    Some(owned(b, d.name, len as usize)?.map_err(|e| format!("name of dentry {at:#x} at {:#x}: {e}", d.name)))
}

/// The mount whose `vfsmount` is at `vfsmnt`: (mount address, root dentry, parent, mountpoint).
fn read_mount(b: &mut Batcher, l: &MmLayout, vfsmnt: u64) -> Option<Result<(u64, u64, u64, u64), String>> {
    let (Some(mnt), Some(parent), Some(point)) = (l.mount_mnt, l.mnt_parent, l.mnt_mountpoint) else {
        return Some(Err("the layout has no struct mount: paths stop at their file system's root".into()));
    };
    let m = vfsmnt.wrapping_sub(mnt.off);
    let fields = l.mount_fields();
    let (lo, hi) = span(&fields);
    Some(match owned(b, m.wrapping_add(lo), (hi - lo) as usize)? {
        Ok(bytes) => Ok((
            m,
            fields[2].and_then(|f| field(&bytes, lo, f)).unwrap_or(0),
            field(&bytes, lo, parent).unwrap_or(0),
            field(&bytes, lo, point).unwrap_or(0),
        )),
        Err(e) => Err(format!("mount {m:#x}: {e}")),
    })
}

/// `d_path` of (`dentry`, `vfsmnt`): names up the `d_parent` chain, crossing into the parent
/// mount at each mount's root, up to the process's root (or the namespace's), then
/// ` (deleted)` for an unlinked file; newlines escaped as `seq_file_path` does.
fn resolve_path(
    b: &mut Batcher,
    l: &MmLayout,
    names: &Names,
    dentry: u64,
    vfsmnt: u64,
    root: Option<(u64, u64)>,
) -> Option<Result<String, String>> {
    // The mount is asked for with the leaf dentry: both are known from the file.
    let _ = read_mount(b, l, vfsmnt);
    let leaf = match read_dentry(b, l, dentry)? {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    // Pseudo files name themselves (`d_op->d_dname`): asked for, but the walk up goes on
    // meanwhile (most d_ops have no d_dname).
    let dname = match (leaf.op, l.d_dname) {
        (0, _) | (_, None) => Some(Ok(0)),
        (op, Some(f)) => owned(b, op.wrapping_add(f.off), 8).map(|r| {
            r.map(|w| uint(&w, 0, 8).unwrap_or(0)).map_err(|e| format!("dentry_operations {op:#x}: {e}"))
        }),
    };
    let walked = walk_up(b, l, dentry, vfsmnt, root);
    let func = match dname? {
        Ok(f) => f,
        Err(e) => return Some(Err(e)),
    };
    if func != 0 {
        let name = match dentry_name(b, dentry, &leaf)? {
            Ok(n) => String::from_utf8_lossy(&n).into_owned(),
            Err(e) => return Some(Err(e)),
        };
        if Some(func) == names.anon_inodefs_dname {
            return Some(Ok(format!("anon_inode:{name}")));
        }
        if Some(func) == names.simple_dname {
            return Some(Ok(escape(&format!("/{name} (deleted)"))));
        }
        return Some(Err(format!(
            "dentry {dentry:#x} is named by function {func:#x} (d_dname), which dmastub cannot run"
        )));
    }
    let mut path = match walked? {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    if !leaf.hashed && leaf.parent != dentry {
        path.push_str(" (deleted)");
    }
    Some(Ok(escape(&path)))
}

/// The names from `dentry` up to the root, joined: `/a/b/c`.
fn walk_up(
    b: &mut Batcher,
    l: &MmLayout,
    dentry: u64,
    vfsmnt: u64,
    root: Option<(u64, u64)>,
) -> Option<Result<String, String>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut waiting = false;
    let (mut d, mut mnt) = (dentry, vfsmnt);
    let mut seen = HashSet::new();
    let mut mount_problem = None;
    loop {
        if Some((mnt, d)) == root {
            break;
        }
        if !seen.insert((d, mnt)) || parts.len() >= MAX_COMPONENTS {
            return Some(Err(format!("path of dentry {dentry:#x}: the d_parent chain loops at {d:#x}")));
        }
        if mount_problem.is_none() {
            match read_mount(b, l, mnt) {
                None => return None,
                Some(Ok((m, mroot, parent, point))) => {
                    if d == mroot {
                        if parent != m && parent != 0 {
                            d = point;
                            mnt = parent.wrapping_add(l.mount_mnt.map_or(0, |f| f.off));
                            continue;
                        }
                        break;
                    }
                }
                Some(Err(e)) => mount_problem = Some(e),
            }
        }
        let cur = match read_dentry(b, l, d) {
            None => return None,
            Some(Ok(x)) => x,
            Some(Err(e)) => return Some(Err(format!("path of dentry {dentry:#x}: {e}"))),
        };
        if cur.parent == d {
            break;
        }
        match dentry_name(b, d, &cur) {
            None => {
                waiting = true;
                parts.push(Vec::new());
            }
            Some(Ok(n)) => parts.push(n),
            Some(Err(e)) => return Some(Err(format!("path of dentry {dentry:#x}: {e}"))),
        }
        d = cur.parent;
    }
    if waiting {
        return None;
    }
    let mut path = String::new();
    for p in parts.iter().rev() {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(p));
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(why) = mount_problem {
        log::debug!("path {path}: mounts not crossed: {why}");
    }
    Some(Ok(path))
}

/// `mangle_path` with `seq_file_path`'s escapes ("\n"): a newline becomes `\012`.
fn escape(s: &str) -> String {
    s.replace('\n', "\\012")
}
