//! Linux awareness against the real 6.1 images, with no hints: discovery, `ps`, `switch`,
//! `dmesg`, `kernel` and vmlinux symbols, through real gdb and the one-shot commands.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FIXTURE: &str = "linux-6.1-kaslr";

/// The value `monitor kernel` / `dmastub kernel` shows for `key`.
fn report_value(report: &str, key: &str) -> Option<String> {
    report
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next().map(String::from))
}

fn check_discovery(report: &str, t: &serde_json::Value, image: &str) {
    let want = [
        ("release", t["kernel"]["release"].as_str().unwrap().to_string()),
        ("kaslr slide", format!("{:#x}", hex(&t["kaslr"]["offset"]))),
        ("kernel cr3", format!("{:#x}", hex(&t["paging"]["kernel_cr3"]))),
        ("init_task", format!("{:#x}", hex(&t["init_task"]["virt"]))),
        ("page_offset_base", format!("{:#x}", hex(&t["kaslr"]["page_offset_base"]))),
        ("phys_base", format!("{:#x}", hex(&t["kaslr"]["phys_base"]))),
        ("_text", format!("{:#x}", hex(&t["kaslr"]["text_virt"]))),
        ("paging", format!("{}-level", t["paging"]["levels"])),
    ];
    for (key, value) in want {
        assert_eq!(report_value(report, key).as_deref(), Some(value.as_str()), "{image}: {key} in\n{report}");
    }
    let read: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("discovery read ")?.split(' ').next()?.parse().ok())
        .expect("bytes read line");
    assert!(read < 16 << 20, "{image}: discovery read {read} bytes");
    assert!(report.contains("symbols") && report.contains("kallsyms in memory"), "{report}");
    assert!(report.contains("in-memory BTF"), "{report}");
}

/// Discovery, `ps`, `switch` and `dmesg` on one image, one-shot and through gdb.
/// Returns the server, still serving, for more checks.
fn check_memory(img: &str, t: &serde_json::Value, tag: &str, snapshot: &str) -> Stub {
    let (ok, report, err) = run(&["kernel", "--image", img]);
    assert!(ok, "{tag}: dmastub kernel failed: {err}");
    check_discovery(&report, t, tag);

    let (ok, ps, err) = run(&["ps", "--image", img]);
    assert!(ok, "{tag}: dmastub ps failed: {err}");
    let probs = ps_differences(&parse_ps(&ps), t);
    assert!(probs.is_empty(), "{tag}: dmastub ps: {probs:?}\n{ps}");
    assert!(!ps.contains("ps: "), "{tag}: problems in a healthy list:\n{ps}");

    let stub = Stub::start(&["--image", img]);
    assert!(
        stub.banner.contains(&format!("Linux {}", t["kernel"]["release"].as_str().unwrap())),
        "{}",
        stub.banner
    );
    let tk = &t["timekeeper"];
    let global = hex(&tk["global_virt"]);
    let out = gdb(
        stub.port,
        &[
            "monitor ps",
            &format!("monitor switch {}", tk["pid"]),
            &format!("x/gx {global:#x}"),
            "monitor kernel",
            "monitor dmesg 30",
            "monitor switch kernel",
            &format!("x/gx {global:#x}"),
            "monitor switch 2",
            "monitor switch 99999",
        ],
    );
    let probs = ps_differences(&parse_ps(&out), t);
    assert!(probs.is_empty(), "{tag}: monitor ps: {probs:?}\n{out}");
    assert_eq!(x_gx(&out, global), tk["global_value_in_memory"].as_u64(), "{tag}:\n{out}");
    assert!(out.contains(&format!("active CR3 = {:#x}", hex(&tk["cr3"]))), "{out}");
    assert!(out.contains("Cannot access memory"), "{tag}: the kernel's tables map the user global?\n{out}");
    assert!(out.contains("is a kernel thread"), "{out}");
    assert!(out.contains("no task with pid 99999"), "{out}");
    check_discovery(&out, t, tag);
    let dmesg_lines = out.lines().filter(|l| l.starts_with('[')).count();
    assert!(dmesg_lines >= 30, "{tag}: monitor dmesg 30 printed {dmesg_lines} lines\n{out}");
    if snapshot == "post-panic" {
        assert!(out.contains("Kernel panic - not syncing: sysrq triggered crash"), "{tag}:\n{out}");
    }
    stub
}

/// Everything the issue asks of one image, with no hints.
fn check_image(fixture: &str, snapshot: &str, kind: &str) {
    let Some(dir) = fixture_dir(fixture) else { return };
    let t = truth(&dir, snapshot);
    let image = unpacked(&dir, &format!("{snapshot}.{kind}.zst"));
    let img = image.to_str().unwrap();
    let tag = format!("{fixture}/{snapshot}.{kind}");
    let percpu_var = std::fs::read_to_string(dir.join("System.map"))
        .expect("System.map")
        .lines()
        .find(|l| l.ends_with(" runqueues"))
        .map(|l| format!("{:#x}", u64::from_str_radix(l.split(' ').next().unwrap(), 16).unwrap()))
        .expect("runqueues in System.map");

    let stub = check_memory(img, &t, &tag, snapshot);

    // vmlinux symbols: the stock path (qOffsets) and the fully right one.
    let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb-scripts/dmastub.py");
    let out = gdb_with(
        stub.port,
        Some(&vmlinux),
        &[
            "p/x &init_task",
            "x/s (char *)&linux_banner",
            &format!("source {}", scripts.display()),
            &format!("dmastub-symbols {}", vmlinux.display()),
            "p/x &init_task",
            "x/s (char *)&linux_banner",
            "p/x &runqueues",
        ],
        Duration::from_secs(120),
    );
    let values: Vec<&str> = out.lines().filter_map(|l| l.split(" = ").nth(1)).collect();
    let init = format!("{:#x}", hex(&t["init_task"]["virt"]));
    assert_eq!(values.first(), Some(&init.as_str()), "{tag}: stock path:\n{out}");
    assert_eq!(values.get(1), Some(&init.as_str()), "{tag}: dmastub-symbols:\n{out}");
    // Per-CPU variables stay at their link address.
    assert_eq!(values.get(2), Some(&percpu_var.as_str()), "{tag}: per-CPU section moved:\n{out}");
    let banner = format!("Linux version {}", t["kernel"]["release"].as_str().unwrap());
    assert_eq!(out.matches(&banner).count(), 2, "{tag}: linux_banner, stock and loaded:\n{out}");
}

#[test]
fn pre_panic_raw() {
    check_image(FIXTURE, "pre-panic", "raw");
}

#[test]
fn post_panic_raw() {
    check_image(FIXTURE, "post-panic", "raw");
}

#[test]
fn post_panic_elf() {
    check_image(FIXTURE, "post-panic", "elf");
}

// Images made with ../shared/fixtures/tools (build-fixture.sh --la57, FIXTURE_APPEND=pti=on):
// put them beside linux-6.1-kaslr in $DMASTUB_FIXTURES. Each skips with a message when absent.

/// 5-level paging (LA57), Debian's 6.1 kernel.
#[test]
fn la57_6_1() {
    check_image("linux-6.1-la57", "post-panic", "raw");
    check_image("linux-6.1-la57", "pre-panic", "elf");
}

/// 5-level paging on 6.12: kallsyms in the 6.4+ table order.
#[test]
fn la57_6_12() {
    check_image("linux-6.12.117-la57", "post-panic", "elf");
    check_image("linux-6.12.117-la57", "pre-panic", "raw");
}

/// Page-table isolation: the kernel CR3 and the user CR3 of each process differ.
#[test]
fn pti_6_1() {
    check_image("linux-6.1-pti", "post-panic", "raw");
}

#[test]
fn dmesg_one_shot_shows_the_panic() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let image = unpacked(&dir, "post-panic.raw.zst");
    let (ok, out, err) = run(&["dmesg", "--image", image.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().starts_with("[    0.000000] Linux version 6.1.0-56-amd64"), "{out}");
    assert!(
        out.lines().last().unwrap().contains("end Kernel panic - not syncing: sysrq triggered crash"),
        "{out}"
    );
    let (ok, tail, _) = run(&["dmesg", "--image", image.to_str().unwrap(), "-n", "3"]);
    assert!(ok);
    assert_eq!(tail.lines().count(), 3, "{tail}");
}

#[test]
fn hints_override_discovery() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "pre-panic");
    let image = unpacked(&dir, "pre-panic.raw.zst");
    let img = image.to_str().unwrap();
    let map = dir.join("System.map");
    let btf = unpacked(&dir, "vmlinux.btf.zst");
    let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
    let cr3 = format!("{:#x}", hex(&t["paging"]["kernel_cr3"]));
    for extra in [
        vec!["--system-map", map.to_str().unwrap()],
        vec!["--vmlinux", vmlinux.to_str().unwrap(), "--btf", btf.to_str().unwrap()],
        vec!["--cr3", cr3.as_str()],
    ] {
        let mut args = vec!["ps", "--image", img];
        args.extend(&extra);
        let (ok, ps, err) = run(&args);
        assert!(ok, "{extra:?}: {err}");
        let probs = ps_differences(&parse_ps(&ps), &t);
        assert!(probs.is_empty(), "{extra:?}: {probs:?}");
        args[0] = "kernel";
        let (_, report, _) = run(&args);
        assert_eq!(
            report_value(&report, "kaslr slide"),
            Some(format!("{:#x}", hex(&t["kaslr"]["offset"]))),
            "{report}"
        );
    }
    let (_, report, _) = run(&["kernel", "--image", img, "--system-map", map.to_str().unwrap()]);
    assert!(report.contains(&format!("System.map {}", map.display())), "{report}");
    // A wrong slide is believed, and says where it came from.
    let (_, report, _) = run(&["kernel", "--image", img, "--kaslr", "0x1000000"]);
    assert!(report.contains("(--kaslr)"), "{report}");
}

#[test]
fn no_kernel_says_which_hint_to_give() {
    let dir = tempdir_with_zeros();
    let (ok, _, err) = run(&["ps", "--image", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("--cr3"), "{err}");
    // The server still serves plain memory.
    let stub = Stub::start(&["--image", dir.to_str().unwrap()]);
    assert!(stub.banner.contains("no Linux kernel found"), "{}", stub.banner);
    let out = gdb(stub.port, &["monitor ps", "x/2bx 0x1000"]);
    assert!(out.contains("no Linux kernel was found"), "{out}");
    assert!(out.contains("0x1000:\t0x00\t0x00"), "{out}");
}

/// A 4 MiB raw image of zeros: memory with no kernel in it.
fn tempdir_with_zeros() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("dmastub-zeros-{}.raw", std::process::id()));
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    path
}

#[test]
fn profile_written_from_btf_reads_the_fixture() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let btf = unpacked(&dir, "vmlinux.btf.zst");
    let out = std::env::temp_dir().join(format!("dmastub-profile-{}.toml", std::process::id()));
    let (ok, _, err) = run(&[
        "profile",
        "--btf",
        btf.to_str().unwrap(),
        "--name",
        "debian-6.1.0-56-amd64",
        "--release",
        "6.1.0-56-amd64",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("[offsets.task_struct]") && text.contains("pid = { offset = 2416, size = 4 }"),
        "{text}"
    );
    let image = unpacked(&dir, "post-panic.elf.zst");
    let (ok, ps, err) = run(&["ps", "--image", image.to_str().unwrap(), "--profile", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let probs = ps_differences(&parse_ps(&ps), &t);
    assert!(probs.is_empty(), "{probs:?}");
    let (_, report, _) =
        run(&["kernel", "--image", image.to_str().unwrap(), "--profile", out.to_str().unwrap()]);
    assert!(report.contains("profile debian-6.1.0-56-amd64"), "{report}");
    let _ = std::fs::remove_file(out);
}

#[test]
fn live_ram_file_is_read_the_same_way() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "pre-panic");
    let image = unpacked(&dir, "pre-panic.raw.zst");
    // A live source lends nothing in place (it may change): everything goes through copies.
    let (ok, ps, err) = run(&["ps", "--live", image.to_str().unwrap()]);
    assert!(ok, "{err}");
    let probs = ps_differences(&parse_ps(&ps), &t);
    assert!(probs.is_empty(), "{probs:?}");
    let (ok, report, err) = run(&["kernel", "--live", image.to_str().unwrap()]);
    assert!(ok, "{err}");
    check_discovery(&report, &t, "pre-panic.raw as --live");
}

/// The images in tests/fixtures: real memory trimmed to the pages dmastub reads (made by
/// `examples/trim_fixture.rs` from images built with ../shared/fixtures/tools), so that CI
/// checks 5-level paging and the 6.4+ kallsyms layout on real kernels.
#[test]
fn trimmed_real_images_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).expect("tests/fixtures") {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let t = truth(&dir, "post-panic");
        let image = unpacked(&dir, "post-panic.lime.zst");
        let tag = format!("{}/post-panic.lime", dir.file_name().unwrap().to_string_lossy());
        check_memory(image.to_str().unwrap(), &t, &tag, "post-panic");
        seen += 1;
    }
    assert!(seen >= 2, "tests/fixtures holds {seen} trimmed images");
}

#[test]
fn random_memory_is_refused_without_panic() {
    // 8 MiB of pseudo-random bytes (xorshift): page tables, headers and tables all garbage.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = std::env::temp_dir().join(format!("dmastub-random-{}.raw", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    for cmd in ["kernel", "ps", "dmesg", "bt"] {
        let out = Command::new(BIN).args([cmd, "--image", path.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("dmastub: error:"), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    let _ = std::fs::remove_file(path);
}
