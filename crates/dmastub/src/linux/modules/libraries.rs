//! Modules as gdb's libraries: the `qXfer:libraries:read` document.
//!
//! gdb (solib-target, what it uses for a vmlinux, which has no OS ABI) relocates a library given
//! as `<section address="…"/>` elements by handing out the addresses, in order, to the file's
//! `SHF_ALLOC` sections, and refuses the library when the counts differ ("wrong number of ALLOC
//! sections"). The kernel keeps the address of each loaded non-empty section
//! (`sect_attrs`), but not `.modinfo` and `__versions` (it clears their ALLOC flag) nor empty
//! ones: the order and count gdb wants come from the module's `.ko` file, when dmastub is told
//! where the files are. A section the kernel did not load gets the module's lowest address
//! (nothing of it is in memory; it only has to be counted).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The `SHF_ALLOC` sections of a module's `.ko` file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KoSections {
    /// The file.
    pub path: PathBuf,
    /// Each ALLOC section's name.
    pub alloc: Vec<String>,
}

impl KoSections {
    /// Reads the section headers of the ELF file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        use object::read::elf::{ElfFile64, SectionHeader as _};
        use object::{Object, ObjectSection};
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let elf = ElfFile64::<object::Endianness>::parse(&*bytes)
            .map_err(|e| format!("{} is not a 64-bit ELF file: {e}", path.display()))?;
        let endian = elf.endian();
        let alloc = elf
            .sections()
            .filter(|s| s.elf_section_header().sh_flags(endian).contains(object::elf::SHF_ALLOC))
            .map(|s| s.name().unwrap_or("").to_string())
            .collect();
        Ok(Self { path: path.to_path_buf(), alloc })
    }
}

/// Where the `.ko` files of modules are: directories searched (recursively, as Debian's
/// `usr/lib/debug/lib/modules/RELEASE/` holds them under `kernel/…`) once, by module name
/// (`-` and `_` alike, as the kernel names `snd-hda-intel.ko` `snd_hda_intel`).
#[derive(Clone, Debug, Default)]
pub struct KoIndex {
    files: HashMap<String, PathBuf>,
}

/// Most directory entries looked at when indexing (a distribution's debug tree has ~6000 .ko).
const MAX_INDEXED: usize = 200_000;

impl KoIndex {
    /// Indexes the `.ko` files under `dirs`; the first found for a name wins.
    pub fn new(dirs: &[PathBuf]) -> Self {
        let mut files = HashMap::new();
        let mut budget = MAX_INDEXED;
        let mut stack: Vec<(PathBuf, u32)> = dirs.iter().rev().map(|d| (d.clone(), 0)).collect();
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut subdirs = Vec::new();
            for e in entries.flatten() {
                if budget == 0 {
                    log::warn!("module files: stopped indexing after {MAX_INDEXED} entries");
                    return Self { files };
                }
                budget -= 1;
                let path = e.path();
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && depth < 12 {
                    subdirs.push((path, depth + 1));
                } else if let Some(stem) =
                    path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
                {
                    files.entry(stem.replace('-', "_")).or_insert(path);
                }
            }
            subdirs.sort();
            stack.extend(subdirs.into_iter().rev());
        }
        Self { files }
    }

    /// The `.ko` file of module `name`.
    pub fn find(&self, name: &str) -> Option<&Path> {
        self.files.get(&name.replace('-', "_")).map(PathBuf::as_path)
    }
}

/// `s` in an XML attribute, also without the bytes the remote protocol escapes (`$#}*`).
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' | '<' | '>' | '"' | '$' | '#' | '}' | '*' | '\'' => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One module as one of gdb's libraries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// The module's name (the library is `NAME.ko`).
    pub name: String,
    /// Its loaded sections (`sect_attrs`): name and address.
    pub sections: Vec<(String, u64)>,
    /// Its `.ko` file's ALLOC sections, when the file was found.
    pub file: Option<KoSections>,
}

/// A process's shared objects as gdb's library list: one `<library>` per object, named by its
/// path, with the address of its first loadable segment (gdb moves all its segments by the
/// same amount).
pub fn segment_library_list(objects: &[(String, u64)]) -> String {
    let mut s = String::from("<library-list version=\"1.0\">\n");
    for (name, first_segment) in objects {
        let _ = writeln!(
            s,
            "  <library name=\"{}\"><segment address=\"{first_segment:#x}\"/></library>",
            xml_escape(name)
        );
    }
    s.push_str("</library-list>\n");
    s
}

/// The library list: one `<library name="NAME.ko">` per module, its sections' addresses in
/// the order of its `.ko` file's ALLOC sections when the file is known, else in the kernel's.
pub fn library_list(modules: &[Library]) -> String {
    let mut s = String::from("<library-list version=\"1.0\">\n");
    for Library { name, sections, file: ko } in modules {
        let _ = write!(s, "  <library name=\"{}.ko\">", xml_escape(name));
        let lowest = sections.iter().map(|&(_, a)| a).filter(|&a| a != 0).min().unwrap_or(0);
        match ko {
            Some(ko) => {
                for sect in &ko.alloc {
                    let addr = sections.iter().find(|(n, _)| n == sect).map_or(lowest, |&(_, a)| a);
                    let _ = write!(s, "<section address=\"{addr:#x}\"/>");
                }
            }
            None => {
                for &(_, addr) in sections {
                    let _ = write!(s, "<section address=\"{addr:#x}\"/>");
                }
            }
        }
        s.push_str("</library>\n");
    }
    s.push_str("</library-list>\n");
    s
}
