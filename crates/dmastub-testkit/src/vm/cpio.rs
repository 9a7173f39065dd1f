//! The initramfs: a `newc` cpio archive, the format the kernel unpacks into its first root.
//!
//! Written here rather than by `cpio(1)` so that building the guest needs no root and no tool
//! beyond the compiler: a device node is only a header in the archive.

use std::io::{self, Write};

/// One archive member.
#[allow(missing_docs)] // the fields are the cpio header's, named as there
pub enum Entry<'a> {
    /// A directory.
    Dir { path: &'a str },
    /// A regular file with its permission bits and contents.
    File { path: &'a str, mode: u32, data: &'a [u8] },
    /// A symbolic link.
    Symlink { path: &'a str, target: &'a str },
    /// A character device node.
    CharDev { path: &'a str, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes `entries` and the trailer. Paths are relative to the root (`bin/busybox`).
pub fn write_newc(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut offset = 0usize;
    for (ino, e) in entries.iter().enumerate() {
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match *e {
            Entry::Dir { path } => (path, S_IFDIR | 0o755, &[], (0, 0)),
            Entry::File { path, mode, data } => (path, S_IFREG | (mode & 0o7777), data, (0, 0)),
            Entry::Symlink { path, target } => (path, S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
            Entry::CharDev { path, major, minor } => (path, S_IFCHR | 0o600, &[], (major, minor)),
        };
        offset += member(out, offset, ino as u32 + 1, path, mode, data, rdev)?;
    }
    member(out, offset, 0, "TRAILER!!!", 0, &[], (0, 0))?;
    Ok(())
}

/// Writes one header, name and data, each padded to 4 bytes; returns the bytes written.
fn member(
    out: &mut impl Write,
    offset: usize,
    ino: u32,
    path: &str,
    mode: u32,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> io::Result<usize> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::other(format!("initramfs member {path} is over 4 GiB")))?;
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let name_len = path.len() + 1;
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_len as u32, 0];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    let mut written = 0;
    out.write_all(header.as_bytes())?;
    out.write_all(path.as_bytes())?;
    out.write_all(&[0])?;
    written += header.len() + name_len;
    written += pad(out, offset + written)?;
    out.write_all(data)?;
    written += data.len();
    written += pad(out, offset + written)?;
    Ok(written)
}

fn pad(out: &mut impl Write, at: usize) -> io::Result<usize> {
    let n = (4 - at % 4) % 4;
    out.write_all(&[0u8; 3][..n])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_aligned_and_headers_hold_the_sizes() {
        let mut buf = Vec::new();
        let entries = [
            Entry::Dir { path: "bin" },
            Entry::File { path: "bin/x", mode: 0o755, data: b"hello" },
            Entry::Symlink { path: "bin/sh", target: "x" },
            Entry::CharDev { path: "dev/console", major: 5, minor: 1 },
        ];
        write_newc(&mut buf, &entries).unwrap();
        assert_eq!(buf.len() % 4, 0);
        // Walk the archive back: every header starts on a 4-byte boundary with the magic.
        let mut at = 0;
        let mut names = Vec::new();
        while at < buf.len() {
            assert_eq!(&buf[at..at + 6], b"070701", "header at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&buf[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap() as usize
            };
            let (mode, size, major, name_len) = (field(1), field(6), field(9), field(11));
            let name = std::str::from_utf8(&buf[at + 110..at + 110 + name_len - 1]).unwrap().to_string();
            if name == "bin/x" {
                assert_eq!((mode as u32 & 0o170000, size), (S_IFREG, 5));
            }
            if name == "dev/console" {
                assert_eq!((mode as u32 & 0o170000, major), (S_IFCHR, 5));
            }
            names.push(name);
            at = (at + 110 + name_len).next_multiple_of(4);
            at = (at + size).next_multiple_of(4);
        }
        assert_eq!(names, ["bin", "bin/x", "bin/sh", "dev/console", "TRAILER!!!"]);
    }
}
