//! When reads fail, discovery says that they failed, how many and why, never that the data is
//! absent; and a corrupt VMCOREINFO note does not override intact memory.

mod common;

use common::*;
use dmastub::linux::Linux;
use dmastub::linux::Symbols;
use dmastub::linux::{Hint, render};
use dmastub::linux::{Hints, discover};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions, PhysError, PhysMem, RamRange, SourceKind};
use dmastub::{PhysAddr, VirtAddr};
use std::collections::HashSet;
use std::path::Path;

const FIXTURE: &str = "linux-6.1-kaslr";

/// The fixture's memory, with reads of some pages failing as a device that does not answer.
struct Failing {
    inner: Box<dyn PhysMem>,
    /// Page numbers that fail; `None`: every page.
    pages: Option<HashSet<u64>>,
}

impl PhysMem for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn kind(&self) -> SourceKind {
        SourceKind::NetTlp
    }
    fn ram(&self) -> &[RamRange] {
        self.inner.ram()
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let (first, last) = (addr.0 >> 12, (addr.0 + buf.len().max(1) as u64 - 1) >> 12);
        let fails = match &self.pages {
            None => true,
            Some(p) => (first..=last).any(|n| p.contains(&n)),
        };
        if fails {
            return Err(PhysError::device(addr, "failing", "NetTLP read timed out after 3 tries"));
        }
        self.inner.read(addr, buf)
    }
}

fn raw() -> Option<std::path::PathBuf> {
    Some(unpacked(&fixture_dir(FIXTURE)?, "post-panic.raw.zst"))
}

fn open(path: &Path, pages: Option<HashSet<u64>>) -> AddressSpace {
    let inner = phys::open_file(path, &OpenOptions::default()).expect("open the image");
    AddressSpace::new(Box::new(Failing { inner, pages }), MmuConfig::new(Paging::Level4))
}

#[test]
fn every_read_failing_says_how_many_failed_and_why() {
    let Some(raw) = raw() else { return };
    let mut space = open(&raw, None);
    let e = discover(&mut space, Hints::default()).expect_err("nothing can be read").to_string();
    assert!(e.contains("cannot be read"), "{e}");
    // "255 of 255 reads below 1 MiB failed: … timed out after 3 tries (device)"
    let (n, rest) = e.split_once(" of ").unwrap_or_else(|| panic!("{e}"));
    let n = n.rsplit(' ').next().unwrap();
    assert!(rest.starts_with(&format!("{n} reads below 1 MiB failed: ")), "{e}");
    assert!(e.contains("timed out after 3 tries") && e.ends_with("(device)"), "{e}");
}

#[test]
fn unreadable_btf_is_not_called_absent() {
    let Some(raw) = raw() else { return };
    // Where the BTF is, from an intact read.
    let mut intact = AddressSpace::new(
        phys::open_file(&raw, &OpenOptions::default()).unwrap(),
        MmuConfig::new(Paging::Level4),
    );
    let k = discover(&mut intact, Hints::default()).unwrap();
    let (start, stop) = (k.symbols.address("__start_BTF").unwrap(), k.symbols.address("__stop_BTF").unwrap());
    let mut pages = HashSet::new();
    for v in (start & !0xfff..stop).step_by(4096) {
        pages.insert(intact.translate_in(k.cr3.value, VirtAddr(v)).unwrap().phys.0 >> 12);
    }
    let failing = pages.len();
    let mut space = open(&raw, Some(pages));
    let kernel = discover(&mut space, Hints::default()).expect("the kernel is found without its BTF");
    let report = render::kernel_report(&kernel, Hint::describe);
    let linux = Linux::new(kernel);
    let e = linux.tasks(&mut space, false).expect_err("no layout").to_string();
    assert!(!e.contains("has no BTF"), "{e}");
    assert!(e.contains(&format!("{failing} of {failing} reads of the BTF")), "{e}");
    assert!(e.contains("timed out after 3 tries (device)"), "{e}");
    assert!(report.contains("reads of the BTF") && report.contains("(device)"), "{report}");
}

/// The post-panic ELF core with one digit of its VMCOREINFO note's `NUMBER(phys_base)=`
/// changed (same length), beside the unpacked fixture.
fn corrupt_phys_base() -> Option<std::path::PathBuf> {
    let elf = unpacked(&fixture_dir(FIXTURE)?, "post-panic.elf.zst");
    let mut bytes = std::fs::read(&elf).expect("read the ELF core");
    let key = b"NUMBER(phys_base)=";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("a phys_base line") + key.len();
    let digit = at + bytes[at..].iter().position(u8::is_ascii_digit).expect("digits");
    bytes[digit] = if bytes[digit] == b'5' { b'6' } else { b'5' };
    let out = elf.with_file_name(format!("post-panic.bad-phys-base.{}.elf", std::process::id()));
    std::fs::write(&out, bytes).expect("write the patched core");
    Some(out)
}

#[test]
fn a_corrupt_vmcoreinfo_note_does_not_override_memory() {
    let Some(bad) = corrupt_phys_base() else { return };
    let dir = fixture_dir(FIXTURE).unwrap();
    let truth = truth(&dir, "post-panic");
    let (ok, out, err) = run(&["kernel", "--image", bad.to_str().unwrap()]);
    let (ps_ok, ps, ps_err) = run(&["ps", "--image", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert!(ok, "{err}");
    assert!(
        out.contains("note: the core's VMCOREINFO note is not believed: its NUMBER(phys_base)="),
        "{out}"
    );
    assert!(out.contains("found from memory instead"), "{out}");
    // What memory says, as the truth recorded it.
    for (line, key) in [("kaslr slide", "offset"), ("phys_base", "phys_base")] {
        let want = format!("{:#x}", hex(&truth["kaslr"][key]));
        assert!(out.lines().any(|l| l.starts_with(line) && l.contains(&want)), "{line} {want}:\n{out}");
    }
    assert!(ps_ok && ps.lines().any(|l| l.contains(" timekeeper ")), "{ps_err}\n{ps}");
}
