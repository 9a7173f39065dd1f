//! The bytes of a kdump file: the file itself, or a flattened stream read through an index of
//! its records (no temp file, no `makedumpfile -R`).
//!
//! A flattened file (makedumpfile's `-F`, for piping a dump over ssh) is a 4096-byte header
//! starting `"makedumpfile"`, then records `{ i64 offset; i64 size; }` (big-endian), each
//! followed by `size` bytes that belong at `offset` of the kdump file, ended by a record with
//! offset = size = -1. Records come in the order makedumpfile wrote them, so they may go
//! backwards and overlap; a later record wins where they overlap, as `makedumpfile -R` would
//! have it.

use super::error::KdumpError;
use crate::phys::ranges::ReadAt;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The signature at offset 0 of a flattened file.
pub const FLAT_SIGNATURE: &[u8] = b"makedumpfile";
/// Bytes of the flattened header (`MAX_SIZE_MDF_HEADER`).
pub const FLAT_HEADER_SIZE: u64 = 4096;
/// `makedumpfile_header.type` of a flattened file.
pub const FLAT_TYPE: i64 = 1;
/// Bytes of one record header.
pub const FLAT_RECORD_SIZE: u64 = 16;

/// One piece of the kdump file: `[start, start + len)` of it is at `src` of the flattened file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub start: u64,
    pub len: u64,
    pub src: u64,
}

/// Where the kdump file's bytes are.
pub(crate) struct Store {
    file: File,
    /// The size of the file on disk when opened.
    file_size: u64,
    /// `None`: the file is the kdump file. Else the flattened index, sorted and disjoint.
    extents: Option<Vec<Extent>>,
    /// The size of the kdump file: the file's size, or the end of the last record.
    size: u64,
}

impl Store {
    /// The file itself as the kdump file.
    pub(crate) fn plain(file: File, file_size: u64) -> Self {
        Store { file, file_size, extents: None, size: file_size }
    }

    /// A flattened file, indexed: every record header is read once (bounded by the file size).
    pub(crate) fn flattened(file: File, file_size: u64) -> Result<Self, KdumpError> {
        let reader = crate::phys::ranges::FileReader { file: &file, size: file_size };
        let extents = index(&reader)?;
        let size = extents.last().map_or(0, |e| e.start + e.len);
        Ok(Store { file, file_size, extents: Some(extents), size })
    }

    /// Whether the file is flattened.
    pub(crate) fn is_flattened(&self) -> bool {
        self.extents.is_some()
    }

    /// The flattened index (for tests).
    #[cfg(test)]
    pub(crate) fn extents(&self) -> Option<&[Extent]> {
        self.extents.as_deref()
    }

    /// Fills `buf` from offset `off` of the kdump file; an error says which byte could not be
    /// read and why (past the end, in no flattened record, an I/O error).
    pub(crate) fn pread(&self, off: u64, buf: &mut [u8]) -> Result<(), String> {
        let end = off.checked_add(buf.len() as u64).ok_or_else(|| format!("offset {off:#x} overflows"))?;
        if end > self.size {
            return Err(format!(
                "offset {:#x} is past the end of the {} at {:#x}",
                off.max(self.size),
                if self.is_flattened() { "kdump file the flattened records describe" } else { "file" },
                self.size
            ));
        }
        let Some(extents) = &self.extents else { return self.read_file(off, buf) };
        let mut i = extents.partition_point(|e| e.start + e.len <= off);
        let mut cur = off;
        let mut done = 0usize;
        while done < buf.len() {
            let Some(e) = extents.get(i).filter(|e| e.start <= cur) else {
                return Err(format!(
                    "offset {cur:#x} of the kdump file is in no record of the flattened file"
                ));
            };
            let n = (e.start + e.len - cur).min((buf.len() - done) as u64) as usize;
            self.read_file(e.src + (cur - e.start), &mut buf[done..done + n])?;
            done += n;
            cur += n as u64;
            i += 1;
        }
        Ok(())
    }

    fn read_file(&self, off: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) => {
                    return Err(format!(
                        "file offset {at:#x} is beyond the file's current end ({:#x} bytes when opened: it shrank)",
                        self.file_size
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading file offset {at:#x}: {e}")),
            }
        }
        Ok(())
    }
}

impl ReadAt for Store {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        self.pread(off, buf).is_ok()
    }
}

/// Reads a flattened file's records into a sorted, disjoint index of the kdump file.
pub(crate) fn index(data: &dyn ReadAt) -> Result<Vec<Extent>, KdumpError> {
    let size = data.size();
    let mut head = [0u8; 32];
    if !data.read_at(0, &mut head) || size < FLAT_HEADER_SIZE {
        return Err(KdumpError::FlatHeader(format!(
            "the file is {size:#x} bytes, the header needs {FLAT_HEADER_SIZE:#x}"
        )));
    }
    if !head.starts_with(FLAT_SIGNATURE) {
        return Err(KdumpError::FlatHeader("no \"makedumpfile\" signature".into()));
    }
    let ty = i64::from_be_bytes(head[16..24].try_into().unwrap_or_default());
    if ty != FLAT_TYPE {
        return Err(KdumpError::FlatHeader(format!("type {ty} is not a flattened dump (1)")));
    }
    // Start -> (len, src); kept disjoint as records are laid over each other.
    let mut map: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut off = FLAT_HEADER_SIZE;
    loop {
        let mut rec = [0u8; FLAT_RECORD_SIZE as usize];
        if !data.read_at(off, &mut rec) {
            return Err(KdumpError::FlatNoEnd(off));
        }
        let target = i64::from_be_bytes(rec[..8].try_into().unwrap_or_default());
        let len = i64::from_be_bytes(rec[8..].try_into().unwrap_or_default());
        if target == -1 && len == -1 {
            break;
        }
        let bad = |why| KdumpError::FlatRecord { offset: off, target, len, why };
        if target < 0 {
            return Err(bad("a negative offset"));
        }
        if len < 0 {
            return Err(bad("a negative size"));
        }
        let (start, n) = (target as u64, len as u64);
        let src = off + FLAT_RECORD_SIZE;
        if src.checked_add(n).is_none_or(|e| e > size) {
            return Err(bad("its bytes run past the end of the file"));
        }
        if start.checked_add(n).is_none_or(|e| e > 1 << 56) {
            return Err(bad("it writes past 2^56 bytes: not a plausible dump"));
        }
        if n > 0 {
            lay(&mut map, Extent { start, len: n, src });
        }
        off = src + n;
    }
    let extents: Vec<Extent> =
        map.into_iter().map(|(start, (len, src))| Extent { start, len, src }).collect();
    if extents.is_empty() {
        return Err(KdumpError::FlatHeader("the stream holds no records".into()));
    }
    Ok(extents)
}

/// Lays `e` over the index, cutting what it covers out of earlier extents.
fn lay(map: &mut BTreeMap<u64, (u64, u64)>, e: Extent) {
    let end = e.start + e.len;
    let hits: Vec<(u64, u64, u64)> = map
        .range(..end)
        .rev()
        .take_while(|(s, (l, _))| *s + *l > e.start)
        .map(|(s, (l, src))| (*s, *l, *src))
        .collect();
    for (s, l, src) in hits {
        map.remove(&s);
        if s < e.start {
            map.insert(s, (e.start - s, src));
        }
        if s + l > end {
            map.insert(end, (s + l - end, src + (end - s)));
        }
    }
    map.insert(e.start, (e.len, e.src));
}

/// A flattened stream of `records` (offset, bytes) in the given order, for tests.
#[cfg(test)]
pub(crate) fn build_flattened(records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut v = vec![0u8; FLAT_HEADER_SIZE as usize];
    v[..FLAT_SIGNATURE.len()].copy_from_slice(FLAT_SIGNATURE);
    v[16..24].copy_from_slice(&FLAT_TYPE.to_be_bytes());
    v[24..32].copy_from_slice(&1i64.to_be_bytes());
    for (off, bytes) in records {
        v.extend_from_slice(&(*off as i64).to_be_bytes());
        v.extend_from_slice(&(bytes.len() as i64).to_be_bytes());
        v.extend_from_slice(bytes);
    }
    v.extend_from_slice(&(-1i64).to_be_bytes());
    v.extend_from_slice(&(-1i64).to_be_bytes());
    v
}
