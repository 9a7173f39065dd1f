//! Loaded modules on the fixtures: `dmastub lsmod` and `monitor lsmod` against drgn's reading of
//! the same `modules` list (when drgn and the DWARF vmlinux are here), the raw image against the
//! ELF core of the same moment, and the modules as gdb's libraries (`info sharedlibrary`).

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const FIXTURE: &str = "linux-6.1-kaslr";

/// drgn's /proc/modules for 6.1 (`m_show`): name, init+core size, refcount, users, state, base,
/// taint bits.
const DRGN_MODULES: &str = "from drgn.helpers.linux.list import list_for_each_entry\n\
for m in list_for_each_entry('struct module', prog['modules'].address_of_(), 'list'):\n    \
    users = [u.source.name.string_().decode() + ',' for u in list_for_each_entry('struct module_use', m.source_list.address_of_(), 'source_list')]\n    \
    st = {0: 'Live', 1: 'Loading', 2: 'Unloading'}.get(m.state.value_())\n    \
    if st is None: continue\n    \
    print(m.name.string_().decode(), m.init_layout.size.value_() + m.core_layout.size.value_(), m.refcnt.counter.value_() - 1, ''.join(users) or '-', st, '0x%016x' % m.core_layout.base.value_(), 'taints=%#x' % m.taints.value_())";

fn hex_str(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("not hex: {s:?}"))
}

fn lsmod_proc(image: &Path) -> String {
    let (ok, out, err) = run(&["lsmod", "--proc", "--image", &image.display().to_string()]);
    assert!(ok, "dmastub lsmod --proc failed: {err}");
    out
}

/// Every line as `/proc/modules` prints it, and plausible: a base in module space.
fn check_lines(text: &str) {
    assert!(!text.is_empty(), "no modules and no 'no modules loaded'");
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(f.len() == 6 || f.len() == 7, "not a /proc/modules line: {line:?}");
        assert!(f[1].parse::<u64>().is_ok_and(|s| s > 0 && s % 4096 == 0), "size in {line:?}");
        assert!(f[2].parse::<i64>().is_ok(), "refcount in {line:?}");
        assert!(f[3] == "-" || f[3].ends_with(','), "users in {line:?}");
        assert!(["Live", "Loading", "Unloading"].contains(&f[4]), "state in {line:?}");
        let base = hex_str(f[5]);
        assert!((0xffff_ffff_a000_0000..0xffff_ffff_ff00_0000).contains(&base), "base in {line:?}");
    }
}

#[test]
fn lsmod_equals_the_modules_list_as_drgn_reads_it() {
    let Some(dir) = fixture_dir(FIXTURE) else {
        eprintln!("SKIP: fixture {FIXTURE} not found (set DMASTUB_FIXTURES)");
        return;
    };
    let raw = lsmod_proc(&unpacked(&dir, "post-panic.raw.zst"));
    let elf = lsmod_proc(&unpacked(&dir, "post-panic.elf.zst"));
    check_lines(&raw);
    assert_eq!(raw, elf, "the raw image and the ELF core of the same moment disagree");
    let (Some(vmlinux), true) = (dwarf_vmlinux(), have_drgn()) else {
        eprintln!("SKIP (drgn part): no drgn or DWARF vmlinux (tools/setup-full-tests.sh)");
        return;
    };
    let out = drgn_command(&unpacked(&dir, "post-panic.elf.zst"), &vmlinux, DRGN_MODULES)
        .output()
        .expect("run drgn");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drgn failed: {}", String::from_utf8_lossy(&out.stderr));
    let want: String = text
        .lines()
        .map(|l| {
            let (head, taints) = l.rsplit_once(" taints=").expect("drgn line");
            match hex_str(taints) {
                0 => format!("{head}\n"),
                // The fixture's modules are Debian's own, signed and in tree: none is tainted.
                t => panic!("drgn says module {head} has taints {t:#x}: extend this test's letters"),
            }
        })
        .collect();
    assert_eq!(raw, want, "dmastub lsmod --proc differs from drgn's reading");
}

#[test]
fn monitor_lsmod_and_the_library_list_in_gdb() {
    let Some(dir) = fixture_dir(FIXTURE) else {
        eprintln!("SKIP: fixture {FIXTURE} not found (set DMASTUB_FIXTURES)");
        return;
    };
    let image = unpacked(&dir, "post-panic.raw.zst");
    let want = lsmod_proc(&image);
    let stub = Stub::start(&["--image", &image.display().to_string()]);
    let out = gdb_with(
        stub.port,
        None,
        &["monitor lsmod -p", "monitor lsmod", "info sharedlibrary", "monitor lsmod -x"],
        Duration::from_secs(120),
    );
    // monitor lsmod -p prints exactly what the command line does.
    assert!(out.contains(&want), "monitor lsmod -p is not dmastub lsmod --proc:\n{out}\nwant:\n{want}");
    let header = out.lines().find(|l| l.starts_with("Module")).unwrap_or_else(|| panic!("no table:\n{out}"));
    assert!(header.contains("Size") && header.contains("Used by") && header.contains("Base"), "{header}");
    // Every module is one of gdb's libraries, named NAME.ko.
    for line in want.lines() {
        let name = line.split(' ').next().unwrap_or_default();
        assert!(out.contains(&format!("{name}.ko")), "gdb lists no library {name}.ko:\n{out}");
    }
    assert!(out.contains("'lsmod' takes nothing or '-p'"), "{out}");
}

/// The trimmed images keep only the pages discovery reads, not the module list: on them
/// `lsmod` must get past `struct module`'s layout from the kernel's real BTF (6.1's
/// `core_layout`, 6.12's `mem[]`) and fail on the list's memory, saying where.
#[test]
fn the_layout_of_6_1_and_6_12_comes_from_their_btf() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["linux-6.1-la57-trimmed", "linux-6.12.117-la57-trimmed"] {
        let image = unpacked(&root.join(name), "post-panic.lime.zst");
        let (ok, out, err) = run(&["lsmod", "--image", &image.display().to_string()]);
        assert!(!ok, "{name}: the trimmed image has no module list, yet lsmod printed:\n{out}");
        assert!(
            err.contains("lsmod: the modules list head at 0x") && err.contains("is not RAM"),
            "{name}: {err}"
        );
    }
}
