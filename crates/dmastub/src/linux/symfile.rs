//! Kernel symbols from files the user gives: a System.map, or a vmlinux ELF's symbol table.
//! Both hold link addresses; discovery moves them by the KASLR slide.

use super::kallsyms::Kallsyms;
use object::{Object, ObjectSymbol};
use std::path::Path;

/// Largest symbol file read (a vmlinux with full DWARF is under 1 GiB; only its headers and
/// symbol table are touched, through a map).
/// Why a System.map or vmlinux gave no symbols.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymfileError {
    /// The file could not be read.
    #[error("cannot read {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        err: std::io::Error,
    },
    /// A line of a System.map is not one.
    #[error("{path} line {line}: not a System.map line (ADDRESS TYPE NAME): {text:?}")]
    BadLine {
        /// The file.
        path: String,
        /// The line's number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A vmlinux is not an ELF file with a symbol table.
    #[error("{path}: not an ELF file with a symbol table: {source}")]
    BadElf {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: object::read::Error,
    },
    /// The file holds no symbols.
    #[error("{path}: no symbols in it")]
    Empty {
        /// The file.
        path: String,
    },
}

/// `ffffffff81000000 T _text` lines. Absolute (`A`) symbols and per-CPU offsets are kept
/// as they are.
pub fn load_system_map(path: &Path) -> Result<Kallsyms, SymfileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| SymfileError::Io { path: p.clone(), err })?;
    parse_system_map(&text, &p)
}

/// Symbols from System.map text; `origin` names it in errors.
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
    let elf =
        object::File::parse(&*map).map_err(|source| SymfileError::BadElf { path: p.clone(), source })?;
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
