//! VMCOREINFO: the `KEY=value` lines every kernel with crash support keeps for dump tools (in
//! RAM, and as a note in ELF cores written by kdump or QEMU's `dump-guest-memory`).

use super::TypeMap;
use std::collections::BTreeMap;

/// Longest VMCOREINFO text believed (the kernel allocates one page for it).
pub const MAX_LEN: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// The kernel's VMCOREINFO: `KEY=value` lines it keeps for crash tools.
pub struct VmcoreInfo {
    /// Every line, by key.
    pub entries: BTreeMap<String, String>,
}

impl VmcoreInfo {
    /// Parses the text; lines that are not `KEY=value` are ignored, as the kernel's own readers do.
    pub fn parse(text: &[u8]) -> Self {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len()).min(MAX_LEN);
        let text = String::from_utf8_lossy(&text[..end]);
        let entries = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !k.is_empty() && k.len() < 128)
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        Self { entries }
    }

    /// Whether no line was found.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// `SYMBOL(name)`: a hex address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        u64::from_str_radix(self.get(&format!("SYMBOL({name})"))?, 16).ok()
    }

    /// `NUMBER(name)`: decimal, or a signed decimal written as such.
    pub fn number(&self, name: &str) -> Option<i64> {
        self.get(&format!("NUMBER({name})"))?.parse().ok()
    }

    /// `KERNELOFFSET`: the KASLR slide, hex.
    pub fn kernel_offset(&self) -> Option<u64> {
        u64::from_str_radix(self.get("KERNELOFFSET")?, 16).ok()
    }

    /// `OSRELEASE`: the kernel release.
    pub fn release(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    /// The `OFFSET(type.member)` and `SIZE(type)` lines as a layout table.
    pub fn types(&self) -> TypeMap {
        let mut map = TypeMap::new("VMCOREINFO");
        for (k, v) in &self.entries {
            let Ok(n) = v.parse::<u64>() else { continue };
            if let Some(inner) = k.strip_prefix("OFFSET(").and_then(|r| r.strip_suffix(')')) {
                if let Some((ty, member)) = inner.split_once('.') {
                    map.insert_member(ty, member, n, 0);
                }
            } else if let Some(ty) = k.strip_prefix("SIZE(").and_then(|r| r.strip_suffix(')')) {
                map.insert_size(ty, n);
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::TypeInfo;

    #[test]
    fn parses_lines_and_tables() {
        let v = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffffb7810000\n\
              OFFSET(printk_info.ts_nsec)=8\nSIZE(printk_info)=88\nNUMBER(phys_base)=-777\nKERNELOFFSET=34e00000\n\
              garbage line\n\0OSRELEASE=ignored",
        );
        assert_eq!(v.release(), Some("6.1.0"));
        assert_eq!(v.symbol("swapper_pg_dir"), Some(0xffffffffb7810000));
        assert_eq!(v.number("phys_base"), Some(-777));
        assert_eq!(v.kernel_offset(), Some(0x34e00000));
        let t = v.types();
        assert_eq!(t.member("printk_info", "ts_nsec").map(|m| m.offset), Some(8));
        assert_eq!(t.size_of("printk_info"), Some(88));
    }
}
