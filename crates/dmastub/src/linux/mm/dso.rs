//! A process's loaded ELF objects as its dynamic linker keeps them: where the executable was
//! loaded (its program headers at `AT_PHDR`), and the shared objects of the link map
//! (`DT_DEBUG` → `r_debug` → `link_map`). What gdb's svr4 code reads through a live process's
//! memory, read here from the machine's, for the gdb packets that ask the stub instead
//! (`qOffsets`, `qXfer:libraries:read`). Everything is read from the process's own memory and
//! bounded; a link map that cannot be read leaves the libraries out, saying why.

use super::ProcessMaps;
use super::batch::uint;
use crate::linux::{Memory, View};
use std::collections::HashSet;

/// `AT_PHDR`, `AT_PHENT`, `AT_PHNUM`.
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
/// `PT_LOAD`, `PT_DYNAMIC`, `PT_PHDR`.
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_PHDR: u32 = 6;
/// `DT_NULL`, `DT_DEBUG`.
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;
/// Bytes of an `Elf64_Phdr`, an `Elf64_Dyn`, a `struct link_map`'s first five words.
const PHDR_SIZE: usize = 56;
const DYN_SIZE: usize = 16;
const LINK_MAP_SIZE: usize = 40;
/// Most program headers, dynamic entries and link-map entries believed.
const MAX_PHDRS: u64 = 128;
const MAX_DYN: u64 = 1024;
const MAX_OBJECTS: usize = 4096;
/// Longest path read for a shared object.
const MAX_NAME: u64 = 4096;

/// The executable's load bias and the shared objects' first segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedObjects {
    /// What the executable's link-time addresses are moved by (0 unless it is position
    /// independent).
    pub exec_bias: u64,
    /// Each shared object: its path as the dynamic linker opened it, and where its first
    /// loadable segment is (its file's first page, mapped at offset 0).
    pub libraries: Vec<(String, u64)>,
    /// What could not be read or made sense of, as sentences.
    pub problems: Vec<String>,
}

/// The 64-bit word at `off` in `b` (0 past its end).
fn u64_at(b: &[u8], off: u64) -> u64 {
    uint(b, off, 8).unwrap_or(0)
}

/// The loaded objects of the process whose map is `maps`, read through `view` (which must
/// read in that process's address space). `Err` when not even the executable's program
/// headers can be read.
pub fn loaded_objects(view: &mut View, maps: &ProcessMaps) -> Result<LoadedObjects, String> {
    let aux = |t: u64| maps.mm.saved_auxv.iter().find(|(k, _)| *k == t).map(|&(_, v)| v);
    let (Some(phdr_at), Some(phnum)) = (aux(AT_PHDR), aux(AT_PHNUM)) else {
        return Err("its auxiliary vector has no AT_PHDR/AT_PHNUM".into());
    };
    if aux(AT_PHENT).is_some_and(|e| e != PHDR_SIZE as u64) || phnum == 0 || phnum > MAX_PHDRS {
        return Err(format!("its program headers are not 64-bit ELF ones ({phnum} at {phdr_at:#x})"));
    }
    let mut phdrs = vec![0u8; phnum as usize * PHDR_SIZE];
    view.read(phdr_at, &mut phdrs).map_err(|e| format!("its program headers at {phdr_at:#x}: {e}"))?;
    // (type, vaddr, memsz) of each.
    let headers: Vec<(u32, u64, u64)> = phdrs
        .chunks_exact(PHDR_SIZE)
        .map(|p| (uint(p, 0, 4).unwrap_or(0) as u32, u64_at(p, 16), u64_at(p, 40)))
        .collect();
    // As the dynamic linker computes it: PT_PHDR says where the headers were linked. Without
    // one (a fixed-address executable), the headers lie in a PT_LOAD at their link address.
    let exec_bias = match headers.iter().find(|h| h.0 == PT_PHDR) {
        Some(&(_, vaddr, _)) => phdr_at.wrapping_sub(vaddr),
        None if headers.iter().any(|&(t, v, m)| t == PT_LOAD && v <= phdr_at && phdr_at - v < m) => 0,
        None => {
            return Err(format!("its program headers at {phdr_at:#x} have no PT_PHDR: load bias unknown"));
        }
    };
    let mut out = LoadedObjects { exec_bias, ..Default::default() };
    let Some(&(_, dyn_vaddr, dyn_size)) = headers.iter().find(|h| h.0 == PT_DYNAMIC) else {
        return Ok(out); // Statically linked: no shared objects.
    };
    let dyn_at = dyn_vaddr.wrapping_add(exec_bias);
    let mut dynamic = vec![0u8; (dyn_size / DYN_SIZE as u64).min(MAX_DYN) as usize * DYN_SIZE];
    if let Err(e) = view.read(dyn_at, &mut dynamic) {
        out.problems.push(format!("its dynamic section at {dyn_at:#x}: {e}: shared objects unknown"));
        return Ok(out);
    }
    let r_debug = dynamic
        .chunks_exact(DYN_SIZE)
        .map(|d| (u64_at(d, 0), u64_at(d, 8)))
        .take_while(|&(tag, _)| tag != DT_NULL)
        .find(|&(tag, _)| tag == DT_DEBUG)
        .map_or(0, |(_, v)| v);
    if r_debug == 0 {
        out.problems.push(
            "its DT_DEBUG is unset (the dynamic linker has not run yet): shared objects unknown".into(),
        );
        return Ok(out);
    }
    let first = match view.read_u64(r_debug.wrapping_add(8)) {
        Ok(m) => m,
        Err(e) => {
            out.problems.push(format!("r_debug at {r_debug:#x}: {e}: shared objects unknown"));
            return Ok(out);
        }
    };
    // The link map: (l_addr, l_name) of each entry, the executable's own first.
    let mut entries: Vec<(u64, u64, u64)> = Vec::new();
    let mut seen = HashSet::new();
    let mut at = first;
    while at != 0 {
        if !seen.insert(at) || entries.len() >= MAX_OBJECTS {
            out.problems.push(format!("the link map loops or runs long at {at:#x}; cut there"));
            break;
        }
        let mut lm = [0u8; LINK_MAP_SIZE];
        if let Err(e) = view.read(at, &mut lm) {
            out.problems.push(format!("link_map at {at:#x}: {e}; the list stops there"));
            break;
        }
        entries.push((at, u64_at(&lm, 0), u64_at(&lm, 8)));
        at = u64_at(&lm, 24);
    }
    // Where file mappings begin at their file's start: looked up, not searched, per object.
    let file_starts: HashSet<u64> =
        maps.vmas.iter().filter(|v| v.pgoff == 0 && v.file.is_some()).map(|v| v.start).collect();
    // Every name in one batch, each read up to its page's end (the page after may be absent).
    let mut names: Vec<Vec<u8>> = entries
        .iter()
        .map(|&(_, _, name)| vec![0u8; MAX_NAME.min(0x1000 - (name & 0xfff)).max(1) as usize])
        .collect();
    let results = {
        let mut reads: Vec<(u64, &mut [u8])> =
            entries.iter().zip(names.iter_mut()).map(|(&(_, _, name), b)| (name, &mut b[..])).collect();
        view.read_together(&mut reads)
    };
    for (i, ((lm, l_addr, name_at), (bytes, r))) in entries.iter().zip(names.iter().zip(results)).enumerate()
    {
        // The first entry is the executable itself, named "".
        if i == 0 || *name_at == 0 {
            continue;
        }
        if let Err(e) = r {
            out.problems.push(format!("link_map {lm:#x}: its name at {name_at:#x}: {e}; left out"));
            continue;
        }
        let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
        let name = String::from_utf8_lossy(&bytes[..end]).into_owned();
        // The vDSO has no file ("linux-vdso.so.1"); gdb reads its symbols from memory.
        if !name.starts_with('/') {
            continue;
        }
        // The first loadable segment starts the file's mapping at offset 0: at the link
        // address plus the bias, which is the mapping's start when it is linked at 0 (as
        // shared objects are). Anything else is not guessed at.
        if *l_addr != 0 && file_starts.contains(l_addr) {
            out.libraries.push((name, *l_addr));
        } else {
            out.problems.push(format!(
                "{name} (link_map {lm:#x}): no mapping of its first page at its base {l_addr:#x}; left out"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::mm::{MappedFile, MmInfo, Vma};
    use crate::mmu::{AddressSpace, MmuConfig, PageSize, Paging, bits};
    use crate::testing::page_tables::PageTableBuilder;
    use crate::{PhysAddr, VirtAddr};

    const BIAS: u64 = 0x5555_5555_4000;
    const LIBC: u64 = 0x7f00_0000_0000;
    const LDSO: u64 = 0x7f00_0010_0000;

    fn phdr(ty: u32, vaddr: u64, memsz: u64) -> Vec<u8> {
        let mut p = vec![0u8; PHDR_SIZE];
        p[..4].copy_from_slice(&ty.to_le_bytes());
        p[16..24].copy_from_slice(&vaddr.to_le_bytes());
        p[40..48].copy_from_slice(&memsz.to_le_bytes());
        p
    }

    /// A position-independent executable's two pages at BIAS: program headers, then its
    /// dynamic section, r_debug and a link map of itself, libc, ld.so and the vDSO, whose last
    /// entry points at `last_next`.
    fn process(last_next: u64) -> (AddressSpace, ProcessMaps) {
        let mut b = PageTableBuilder::new(Paging::Level4, 1 << 20);
        let (page0, page1) = (PhysAddr(0x1_0000), PhysAddr(0x1_1000));
        let flags = bits::USER | bits::WRITABLE;
        b.map(VirtAddr(BIAS), page0, PageSize::Size4K, flags).unwrap();
        b.map(VirtAddr(BIAS + 0x1000), page1, PageSize::Size4K, flags).unwrap();
        let headers = [phdr(PT_PHDR, 0x40, 3 * 56), phdr(PT_LOAD, 0, 0x2000), phdr(PT_DYNAMIC, 0x1000, 0x20)];
        b.write_bytes(PhysAddr(page0.0 + 0x40), &headers.concat()).unwrap();
        let at = |off: u64| PhysAddr(page1.0 + off);
        // Dynamic section: DT_DEBUG, DT_NULL.
        b.write_u64(at(0), DT_DEBUG).unwrap();
        b.write_u64(at(8), BIAS + 0x1800).unwrap();
        // r_debug: r_map.
        b.write_u64(at(0x808), BIAS + 0x1900).unwrap();
        let entries = [
            (0, "", 0xa00),
            (LIBC, "/lib/libc.so.6", 0xa10),
            (LDSO, "/lib64/ld.so", 0xa30),
            (0x7fff_f7fc_1000, "linux-vdso.so.1", 0xa50),
        ];
        for (i, (l_addr, name, name_off)) in entries.iter().enumerate() {
            let lm = 0x900 + 0x40 * i as u64;
            let next = if i + 1 < entries.len() { BIAS + 0x1900 + 0x40 * (i as u64 + 1) } else { last_next };
            b.write_u64(at(lm), *l_addr).unwrap();
            b.write_u64(at(lm + 8), BIAS + 0x1000 + name_off).unwrap();
            b.write_u64(at(lm + 24), next).unwrap();
            b.write_bytes(at(*name_off), name.as_bytes()).unwrap();
        }
        let root = b.root();
        let space = AddressSpace::new(Box::new(b.into_mem("process")), MmuConfig::new(Paging::Level4));
        let file = |path: &str| Some(MappedFile { dev_major: 0, dev_minor: 2, inode: 7, path: path.into() });
        let vma = |start: u64, pgoff: u64, path: &str| Vma {
            addr: 0,
            start,
            end: start + 0x1000,
            flags: 0x5,
            pgoff,
            file: file(path),
            name: None,
        };
        let maps = ProcessMaps {
            pid: 42,
            comm: "dyn".into(),
            cr3: root,
            mm: MmInfo {
                saved_auxv: vec![(AT_PHDR, BIAS + 0x40), (AT_PHENT, 56), (AT_PHNUM, 3)],
                ..Default::default()
            },
            // libc's first page at its base; ld.so's is not (only a later page of it is mapped).
            vmas: vec![
                vma(BIAS, 0, "/bin/dyn"),
                vma(LIBC, 0, "/lib/libc.so.6"),
                vma(LDSO + 0x1000, 1, "/lib64/ld.so"),
            ],
            problems: Vec::new(),
        };
        (space, maps)
    }

    #[test]
    fn the_link_map_gives_the_libraries_and_phdr_the_bias() {
        let (mut space, maps) = process(0);
        let mut view = View::new(&mut space, maps.cr3);
        let got = loaded_objects(&mut view, &maps).unwrap();
        assert_eq!(got.exec_bias, BIAS);
        assert_eq!(got.libraries, vec![("/lib/libc.so.6".to_string(), LIBC)], "{:?}", got.problems);
        assert!(
            got.problems.len() == 1
                && got.problems[0].contains("/lib64/ld.so")
                && got.problems[0].contains("no mapping"),
            "{:?}",
            got.problems
        );
    }

    #[test]
    fn a_looping_link_map_is_cut_and_a_static_binary_has_no_libraries() {
        let (mut space, maps) = process(BIAS + 0x1940);
        let mut view = View::new(&mut space, maps.cr3);
        let got = loaded_objects(&mut view, &maps).unwrap();
        assert_eq!(got.libraries.len(), 1);
        assert!(got.problems.iter().any(|p| p.contains("loops")), "{:?}", got.problems);
        // Without PT_DYNAMIC (linked statically, position independent): the bias, no libraries.
        let (mut space, mut maps) = process(0);
        maps.mm.saved_auxv = vec![(AT_PHDR, BIAS + 0x40), (AT_PHENT, 56), (AT_PHNUM, 2)];
        let mut view = View::new(&mut space, maps.cr3);
        let got = loaded_objects(&mut view, &maps).unwrap();
        assert_eq!((got.exec_bias, got.libraries.len()), (BIAS, 0));
        // Headers that cannot be read are an error naming them.
        maps.mm.saved_auxv = vec![(AT_PHDR, 0x1000), (AT_PHNUM, 2)];
        let err = loaded_objects(&mut view, &maps).unwrap_err();
        assert!(err.contains("0x1000"), "{err}");
    }
}
