//! Kernel symbols from files the user gives: a System.map, or a vmlinux ELF's symbol table.
//! Both hold link addresses; discovery moves them by the KASLR slide.

use super::kallsyms::Kallsyms;
use object::{Object, ObjectSymbol};
use std::path::Path;

/// Largest symbol file read (a vmlinux with full DWARF is under 1 GiB; only its headers and
/// symbol table are touched, through a map).
#[derive(Debug, thiserror::Error)]
pub enum SymfileError {
    #[error("cannot read {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path} line {line}: not a System.map line (ADDRESS TYPE NAME): {text:?}")]
    BadLine { path: String, line: usize, text: String },
    #[error("{path}: not an ELF file with a symbol table: {why}")]
    BadElf { path: String, why: String },
    #[error("{path}: no symbols in it")]
    Empty { path: String },
}

/// `ffffffff81000000 T _text` lines. Absolute (`A`) symbols and per-CPU offsets are kept
/// as they are.
pub fn load_system_map(path: &Path) -> Result<Kallsyms, SymfileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| SymfileError::Io { path: p.clone(), err })?;
    parse_system_map(&text, &p)
}

pub fn parse_system_map(text: &str, origin: &str) -> Result<Kallsyms, SymfileError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            return Err(SymfileError::BadLine {
                path: origin.into(),
                line: i + 1,
                text: line.chars().take(80).collect(),
            });
        };
        let Ok(a) = u64::from_str_radix(addr, 16) else {
            return Err(SymfileError::BadLine {
                path: origin.into(),
                line: i + 1,
                text: line.chars().take(80).collect(),
            });
        };
        pairs.push((name.to_string(), a));
    }
    if pairs.is_empty() {
        return Err(SymfileError::Empty { path: origin.into() });
    }
    Ok(Kallsyms::from_pairs(pairs))
}

/// The `.symtab` of a vmlinux (with or without DWARF).
pub fn load_vmlinux(path: &Path) -> Result<Kallsyms, SymfileError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|err| SymfileError::Io { path: p.clone(), err })?;
    // SAFETY: the file is only read; a concurrent truncation would at worst fault this process,
    // as with any mapped reader.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|err| SymfileError::Io { path: p.clone(), err })?;
    let elf = object::File::parse(&*map)
        .map_err(|e| SymfileError::BadElf { path: p.clone(), why: e.to_string() })?;
    let pairs: Vec<(String, u64)> = elf
        .symbols()
        .filter(|s| !s.name().unwrap_or("").is_empty() && (s.is_definition() || s.address() != 0))
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect();
    if pairs.is_empty() {
        return Err(SymfileError::Empty { path: p });
    }
    Ok(Kallsyms::from_pairs(pairs))
}
