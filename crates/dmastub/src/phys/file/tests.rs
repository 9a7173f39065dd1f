//! The file sources, opened from real files in a temporary directory.

use crate::addr::PhysAddr;
use crate::phys::{
    Format, OpenOptions, PhysError, PhysMem, RamRange, Remedy, SourceKind, WriteMode, open_file,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dmastub-phys-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Writes `bytes` to a file named `name` in the directory.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ro() -> OpenOptions {
    OpenOptions::default()
}

fn open_err(path: &Path, opts: &OpenOptions) -> String {
    match open_file(path, opts) {
        Ok(m) => panic!("{} opened as {}", path.display(), m.describe()),
        // As the command line says it: the remedy is data, the flag is the CLI's.
        Err(e) => match e.remedy() {
            Some(Remedy::ForceRawFormat) => format!("{e}; pass --image-format raw to read it anyway"),
            _ => e.to_string(),
        },
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

#[test]
fn raw_image_reads_and_bounds() {
    let dir = TempDir::new();
    let bytes = pattern(3 * 4096);
    let path = dir.file("ram.raw", &bytes);
    let mut m = open_file(&path, &ro()).unwrap();
    assert_eq!(m.kind(), SourceKind::RawImage);
    assert_eq!(m.name(), "ram.raw");
    assert!(!m.is_volatile());
    assert_eq!(m.ram(), &[RamRange { start: PhysAddr(0), len: 3 * 4096 }]);
    assert!(m.core_notes().is_empty());
    let mut b = [0u8; 64];
    m.read(PhysAddr(0x0fe0), &mut b).unwrap();
    assert_eq!(&b[..], &bytes[0x0fe0..0x1020]);
    m.read(PhysAddr(3 * 4096 - 64), &mut b).unwrap();
    assert_eq!(&b[..], &bytes[3 * 4096 - 64..]);
    assert!(matches!(m.read(PhysAddr(3 * 4096 - 63), &mut b), Err(PhysError::NotRam { .. })));
    assert!(matches!(m.read(PhysAddr(u64::MAX - 3), &mut b), Err(PhysError::NotRam { .. })));
    assert!(matches!(m.write(PhysAddr(0), &b), Err(PhysError::ReadOnly { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn live_file_is_raw_and_volatile_whatever_it_starts_with() {
    let dir = TempDir::new();
    let mut bytes = pattern(4096 + 10);
    bytes[..4].copy_from_slice(b"\x7fELF");
    let path = dir.file("guest.ram", &bytes);
    let opts = OpenOptions { live: true, ..ro() };
    let mut m = open_file(&path, &opts).unwrap();
    assert_eq!(m.kind(), SourceKind::LiveRam);
    assert!(m.is_volatile());
    assert_eq!(m.ram_bytes(), 4096 + 10);
    let mut b = [0u8; 8];
    m.read(PhysAddr(0), &mut b).unwrap();
    assert_eq!(&b[..], &bytes[..8]);
}

#[test]
fn copy_on_write_keeps_the_file() {
    let dir = TempDir::new();
    let bytes = pattern(2 * 4096);
    let path = dir.file("ram.raw", &bytes);
    let opts = OpenOptions { write: WriteMode::CopyOnWrite, ..ro() };
    let mut m = open_file(&path, &opts).unwrap();
    m.write(PhysAddr(0x1ffe), &[0xaa, 0xbb]).unwrap();
    let mut b = [0u8; 4];
    m.read(PhysAddr(0x1ffc), &mut b).unwrap();
    assert_eq!(b, [bytes[0x1ffc], bytes[0x1ffd], 0xaa, 0xbb]);
    assert!(matches!(m.write(PhysAddr(0x1fff), &[1, 2]), Err(PhysError::NotRam { .. })));
    drop(m);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn shared_writes_reach_the_file() {
    let dir = TempDir::new();
    let bytes = pattern(4096);
    let path = dir.file("ram.raw", &bytes);
    let opts = OpenOptions { write: WriteMode::Shared, ..ro() };
    let mut m = open_file(&path, &opts).unwrap();
    m.write(PhysAddr(0x10), b"dmastub").unwrap();
    let mut b = [0u8; 7];
    m.read(PhysAddr(0x10), &mut b).unwrap();
    assert_eq!(&b, b"dmastub");
    drop(m);
    let mut expect = bytes;
    expect[0x10..0x17].copy_from_slice(b"dmastub");
    assert_eq!(std::fs::read(&path).unwrap(), expect);
}

#[test]
fn forced_raw_reads_any_size() {
    let dir = TempDir::new();
    let path = dir.file("odd.bin", &[0xaa; 5000]);
    let opts = OpenOptions { format: Some(Format::Raw), ..ro() };
    let m = open_file(&path, &opts).unwrap();
    assert_eq!(m.ram_bytes(), 5000);
}

#[test]
fn refuses_what_it_cannot_read() {
    let dir = TempDir::new();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("empty", vec![], "empty file"),
        (
            "odd",
            vec![0xaa; 5000],
            "size 5000 is not a multiple of 4 KiB: not a raw RAM image; pass --image-format raw",
        ),
        (
            "z",
            [&[0x28, 0xb5, 0x2f, 0xfd][..], &[0; 4092]].concat(),
            "zstd-compressed: unpack it first with `zstd -d`",
        ),
        ("gz", [&[0x1f, 0x8b, 8, 0][..], &[0; 4092]].concat(), "gzip-compressed"),
        ("xz", [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &[0; 4090]].concat(), "xz-compressed"),
        ("bz", [&b"BZh9"[..], &[0; 4092]].concat(), "bzip2-compressed"),
        (
            "kdump",
            [&b"KDUMP   "[..], &[0; 4088]].concat(),
            "kdump-compressed: header_version 0x0 at offset 0x8 is not a kdump header version",
        ),
        (
            "disk",
            [&b"DISKDUMP"[..], &[0; 100]].concat(),
            "disk_dump_header at offset 0x0 (0x1d0 bytes) runs past",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = dir.file(name, &bytes);
        let msg = open_err(&path, &ro());
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
    let msg = open_err(dir.path(), &ro());
    assert!(msg.contains("a directory"), "{msg}");
    let msg = open_err(&dir.path().join("missing"), &ro());
    assert!(msg.contains("cannot open"), "{msg}");
}

/// A file truncated under an open source: reads past the new end fail with a message that
/// says the file shrank (a mapped file killed the process with SIGBUS here), reads below it
/// still work, and nothing is made up.
#[test]
fn a_file_that_shrinks_is_an_error_not_a_crash() {
    let dir = TempDir::new();
    let bytes = pattern(64 * 4096);
    let path = dir.file("guest.ram", &bytes);
    for (opts, what) in [
        (OpenOptions { live: true, ..ro() }, "live RAM file's"),
        (ro(), "file's"),
        (OpenOptions { write: WriteMode::CopyOnWrite, ..ro() }, "file's"),
        (OpenOptions { live: true, write: WriteMode::Shared, ..ro() }, "live RAM file's"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let mut m = open_file(&path, &opts).unwrap();
        let mut b = vec![0u8; 8192];
        m.read(PhysAddr(60 * 4096), &mut b).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(16 * 4096).unwrap();
        b.fill(0xee);
        m.read(PhysAddr(15 * 4096), &mut b[..4096]).unwrap();
        assert_eq!(&b[..4096], &bytes[15 * 4096..16 * 4096]);
        let e = m.read(PhysAddr(15 * 4096 + 8), &mut b).unwrap_err();
        assert!(matches!(e, PhysError::Device { addr: PhysAddr(0x10000), .. }), "{e:?}");
        let msg = e.to_string();
        let want = format!(
            "reading phys 0x10000 from guest.ram failed: physical 0x10000 is beyond the {what} current end \
             at offset 0x10000 (now 64 KiB, 256 KiB when opened: it shrank)"
        );
        assert_eq!(msg, want);
        if opts.write != WriteMode::ReadOnly {
            let e = m.write(PhysAddr(40 * 4096), &[1, 2, 3]).unwrap_err();
            assert!(e.to_string().contains("it shrank"), "{e}");
            // Nothing grew the file back.
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * 4096);
        }
        // Gone altogether: the open file still reads what is left.
        std::fs::remove_file(&path).unwrap();
        m.read(PhysAddr(0), &mut b[..64]).unwrap();
        assert_eq!(&b[..64], &bytes[..64]);
    }
}

/// A FIFO would block the open (and every read) forever waiting for a writer: refused at
/// once, for --image and --live alike. So are sockets and character devices; block devices
/// are read (a raw partition can hold an image).
#[test]
fn refuses_fifos_and_character_devices_at_once() {
    let dir = TempDir::new();
    let fifo = dir.path().join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for opts in [ro(), OpenOptions { live: true, ..ro() }, OpenOptions { write: WriteMode::Shared, ..ro() }] {
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_err(&f, &opts));
        });
        let msg = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("opening a FIFO hung");
        assert!(msg.starts_with(&fifo.display().to_string()), "{msg}");
        assert!(msg.contains("a FIFO (named pipe)"), "{msg}");
        assert!(msg.contains("save the stream to a file first"), "{msg}");
    }
    let msg = open_err(Path::new("/dev/null"), &ro());
    assert!(msg.contains("/dev/null: a character device"), "{msg}");
}

/// The byte the test images hold at physical address `a`.
fn at(a: u64) -> u8 {
    (a ^ (a >> 8) ^ 0x5a) as u8
}

fn fill(v: &mut [u8], file_offset: usize, phys: u64, len: usize) {
    for (i, b) in v[file_offset..file_offset + len].iter_mut().enumerate() {
        *b = at(phys + i as u64);
    }
}

/// An ELF core with RAM at [0, 0x2000) and [0x10000, 0x14000): the second range is two
/// adjacent PT_LOADs, the first of which stores only 0x1000 of its 0x3000 bytes (the rest
/// reads as zeros). One PT_NOTE holds a CORE and a VMCOREINFO note.
fn elf_image() -> Vec<u8> {
    use crate::phys::elf::build::{Seg, core, load, note};
    let notes = [note("CORE", 1, &[9; 12]), note("VMCOREINFO", 0, b"OSRELEASE=6.1.0-test\n")].concat();
    let segs = [
        Seg { p_type: 4, offset: 0x200, paddr: 0, filesz: notes.len() as u64, memsz: 0 },
        load(0x1000, 0, 0x2000, 0x2000),
        load(0x3000, 0x10000, 0x1000, 0x3000),
        load(0x4000, 0x13000, 0x1000, 0x1000),
    ];
    let mut v = core(62, &segs, 0x5000);
    v[0x200..0x200 + notes.len()].copy_from_slice(&notes);
    fill(&mut v, 0x1000, 0, 0x2000);
    fill(&mut v, 0x3000, 0x10000, 0x1000);
    fill(&mut v, 0x4000, 0x13000, 0x1000);
    v
}

/// What `elf_image` reads as at `[a, a + n)`.
fn elf_expect(a: u64, n: u64) -> Vec<u8> {
    (a..a + n).map(|p| if (0x11000..0x13000).contains(&p) { 0 } else { at(p) }).collect()
}

fn is_not_ram(m: &mut Box<dyn PhysMem>, a: u64, n: usize) -> bool {
    matches!(m.read(PhysAddr(a), &mut vec![0; n]), Err(PhysError::NotRam { .. }))
}

#[test]
fn elf_core_reads_ranges_holes_and_zero_tails() {
    let dir = TempDir::new();
    let path = dir.file("vmcore", &elf_image());
    let mut m = open_file(&path, &ro()).unwrap();
    assert_eq!(m.kind(), SourceKind::ElfCore);
    assert_eq!(
        m.ram(),
        &[
            RamRange { start: PhysAddr(0), len: 0x2000 },
            RamRange { start: PhysAddr(0x10000), len: 0x3000 },
            RamRange { start: PhysAddr(0x13000), len: 0x1000 },
        ]
    );
    assert_eq!(m.describe(), "ELF core, 24 KiB RAM in 3 ranges");
    let notes = m.core_notes();
    assert_eq!(notes.len(), 2);
    assert_eq!((notes[0].name.as_str(), notes[0].n_type, &notes[0].desc[..]), ("CORE", 1, &[9u8; 12][..]));
    assert_eq!(notes[1].name, "VMCOREINFO");
    assert_eq!(notes[1].desc, b"OSRELEASE=6.1.0-test\n");
    // Inside, at both edges of each range, across the stored/zero boundary, and across the
    // two adjacent PT_LOADs.
    for (a, n) in [
        (0, 16),
        (0x1ff0, 16),
        (0x1000, 0x1000),
        (0x10000, 8),
        (0x10ff8, 16),
        (0x12ff0, 0x20),
        (0x10000, 0x4000),
        (0x13ff8, 8),
    ] {
        let mut b = vec![0xee; n as usize];
        m.read(PhysAddr(a), &mut b).unwrap();
        assert_eq!(b, elf_expect(a, n), "read {a:#x}+{n:#x}");
    }
    let mut empty = [0u8; 0];
    m.read(PhysAddr(0x10), &mut empty).unwrap();
    // Holes, ranges running into holes, and past the end.
    assert!(is_not_ram(&mut m, 0x2000, 1));
    assert!(is_not_ram(&mut m, 0x1fff, 2));
    assert!(is_not_ram(&mut m, 0x8000, 16));
    assert!(is_not_ram(&mut m, 0xfff8, 16));
    assert!(is_not_ram(&mut m, 0x13ff8, 16));
    assert!(is_not_ram(&mut m, 0x14000, 1));
    assert!(is_not_ram(&mut m, 0x1000, 0x10000));
    assert!(is_not_ram(&mut m, u64::MAX, 2));
    let e = m.read(PhysAddr(0x2000), &mut [0; 4]).unwrap_err();
    assert_eq!(e.to_string(), "phys 0x2000 (+0x4 bytes) is not RAM in vmcore");
}

#[test]
fn elf_core_writes() {
    let dir = TempDir::new();
    let image = elf_image();
    let path = dir.file("vmcore", &image);
    let mut m = open_file(&path, &ro()).unwrap();
    assert!(matches!(m.write(PhysAddr(0), &[1]), Err(PhysError::ReadOnly { .. })));

    let opts = OpenOptions { write: WriteMode::CopyOnWrite, ..ro() };
    let mut m = open_file(&path, &opts).unwrap();
    m.write(PhysAddr(0x1ffe), &[1, 2]).unwrap();
    // Spans the two adjacent PT_LOADs... but starts in the zero tail, which the file does
    // not store: refused, and nothing changes.
    assert!(matches!(m.write(PhysAddr(0x12fff), &[3, 4]), Err(PhysError::Device { .. })));
    let mut b = [0u8; 2];
    m.read(PhysAddr(0x12fff), &mut b).unwrap();
    assert_eq!(b, [0, at(0x13000)]);
    m.read(PhysAddr(0x1ffe), &mut b).unwrap();
    assert_eq!(b, [1, 2]);
    drop(m);
    assert_eq!(std::fs::read(&path).unwrap(), image);

    let opts = OpenOptions { write: WriteMode::Shared, ..ro() };
    let mut m = open_file(&path, &opts).unwrap();
    m.write(PhysAddr(0x10ffe), &[5, 6]).unwrap();
    drop(m);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(&after[0x3ffe..0x4000], &[5, 6]);
    assert_eq!(&after[..0x3ffe], &image[..0x3ffe]);
}

#[test]
fn detects_elf_and_refuses_bad_cores() {
    use crate::phys::elf::build::{core, load};
    let dir = TempDir::new();
    let bad: [(&str, Vec<u8>, &str); 4] = [
        ("trunc", elf_image()[..40].to_vec(), "ELF core: truncated ELF header"),
        (
            "phdrs",
            core(62, &[load(0x1000, 0, 0x100, 0x100)], 0x1000)[..0x60].to_vec(),
            "program header table",
        ),
        ("past", core(62, &[load(0x1000, 0, 0x2000, 0x2000)], 0x2000), "PT_LOAD 0 runs past end of file"),
        ("arm", core(183, &[load(0x1000, 0, 0x1000, 0x1000)], 0x2000), "e_machine 183 is not x86-64"),
    ];
    for (name, bytes, want) in bad {
        let path = dir.file(name, &bytes);
        let msg = open_err(&path, &ro());
        assert!(msg.starts_with(&format!("{}: ELF core: ", path.display())), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
    // A forced format is parsed as that format, whatever the bytes.
    let path = dir.file("raw", &[0u8; 4096]);
    let msg = open_err(&path, &OpenOptions { format: Some(Format::Elf), ..ro() });
    assert!(msg.contains("not an ELF file"), "{msg}");
}

#[test]
fn lime_dump_reads() {
    let dir = TempDir::new();
    let chunk = |phys: u64, n: usize| (phys, (phys..phys + n as u64).map(at).collect::<Vec<u8>>());
    let parts = [chunk(0x100000, 0x1000), chunk(0, 0x2000), chunk(0x2000, 0x1000)];
    let refs: Vec<(u64, &[u8])> = parts.iter().map(|(p, v)| (*p, &v[..])).collect();
    let path = dir.file("mem.lime", &crate::phys::lime::build(&refs));
    let mut m = open_file(&path, &ro()).unwrap();
    assert_eq!(m.kind(), SourceKind::Lime);
    assert_eq!(m.describe(), "LiME dump, 16 KiB RAM in 3 ranges");
    for (a, n) in [(0, 8u64), (0x1ff8, 0x10), (0, 0x3000), (0x100ff0, 0x10)] {
        let mut b = vec![0; n as usize];
        m.read(PhysAddr(a), &mut b).unwrap();
        assert_eq!(b, (a..a + n).map(at).collect::<Vec<u8>>(), "read {a:#x}+{n:#x}");
    }
    assert!(is_not_ram(&mut m, 0x2ff8, 0x10));
    assert!(is_not_ram(&mut m, 0xffff8, 0x10));
    assert!(is_not_ram(&mut m, 0x101000, 1));
}

#[test]
fn refuses_bad_lime_dumps() {
    let dir = TempDir::new();
    let good = crate::phys::lime::build(&[(0, &[1; 0x100]), (0x1000, &[2; 0x100])]);
    let mut v2 = good.clone();
    v2[4] = 2;
    let overlap = crate::phys::lime::build(&[(0, &[1; 0x100]), (0x80, &[2; 0x100])]);
    let bad: [(&str, Vec<u8>, &str); 4] = [
        ("version", v2, "header at offset 0x0: version 2"),
        ("past", good[..good.len() - 1].to_vec(), "header at offset 0x120: range [0x1000, 0x10ff]"),
        ("overlap", overlap, "range at offset 0x120 [0x80, 0x180) overlaps range at offset 0x0"),
        ("garbage", [&good[..], &[0xaa; 64]].concat(), "bytes at offset 0x240 after the last range"),
    ];
    for (name, bytes, want) in bad {
        let path = dir.file(name, &bytes);
        let msg = open_err(&path, &ro());
        assert!(msg.starts_with(&format!("{}: LiME: ", path.display())), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
}
