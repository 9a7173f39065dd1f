//! The one checked reader of little-endian fields in a byte slice. Every parser of untrusted
//! bytes (ELF and LiME headers, kallsyms and ORC tables, BTF, printk records, NetTLP packets)
//! reads its fields through it: a field past the end is `None`, never a panic.

/// Little-endian fields at a byte offset, checked against the slice's end.
pub(crate) trait LeBytes {
    /// The `N` bytes at `offset`, or `None` if any lies past the end.
    fn array_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// The `u8` at `offset`.
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.array_at::<1>(offset).map(|b| b[0])
    }

    /// The little-endian `u16` at `offset`.
    fn u16_at(&self, offset: usize) -> Option<u16> {
        self.array_at(offset).map(u16::from_le_bytes)
    }

    /// The little-endian `u32` at `offset`.
    fn u32_at(&self, offset: usize) -> Option<u32> {
        self.array_at(offset).map(u32::from_le_bytes)
    }

    /// The little-endian `u64` at `offset`.
    fn u64_at(&self, offset: usize) -> Option<u64> {
        self.array_at(offset).map(u64::from_le_bytes)
    }

    /// The little-endian `i32` at `offset`.
    fn i32_at(&self, offset: usize) -> Option<i32> {
        self.array_at(offset).map(i32::from_le_bytes)
    }

    /// An unsigned little-endian integer of `size` bytes (1 to 8) at `offset`; `None` for any
    /// other size or past the end.
    fn uint_at(&self, offset: usize, size: usize) -> Option<u64>;
}

impl LeBytes for [u8] {
    fn array_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }

    fn uint_at(&self, offset: usize, size: usize) -> Option<u64> {
        if !(1..=8).contains(&size) {
            return None;
        }
        let field = self.get(offset..offset.checked_add(size)?)?;
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(field);
        Some(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::LeBytes;

    #[test]
    fn fields_inside_are_read_and_fields_past_the_end_are_none() {
        let b: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(b.u8_at(8), Some(9));
        assert_eq!(b.u16_at(0), Some(0x0201));
        assert_eq!(b.u32_at(1), Some(0x0504_0302));
        assert_eq!(b.u64_at(1), Some(0x0908_0706_0504_0302));
        assert_eq!(b.u64_at(2), None);
        assert_eq!(b.u16_at(usize::MAX), None);
        assert_eq!(b.uint_at(6, 3), Some(0x09_0807));
        assert_eq!(b.uint_at(7, 3), None);
        assert_eq!(b.uint_at(0, 0), None);
        assert_eq!(b.uint_at(0, 9), None);
        assert_eq!(b.i32_at(0), Some(0x0403_0201));
    }
}
