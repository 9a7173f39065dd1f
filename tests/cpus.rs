//! Every CPU at the moment of the panic, checked with real gdb against QEMU's own vCPU state
//! (the fixtures' truth, `vcpus`): on raw images the registers of the CPUs the panic stopped
//! come from their stacks alone; on ELF cores from QEMU's notes. `monitor bt -a` (and
//! `dmastub bt -a`) goes through the stop interrupt into what each CPU was doing.
//!
//! Runs on every fixture folder with a post-panic truth (`--smp 4` images built with the
//! fixtures' `tools/` too).

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const IMAGES: &[&str] = &["post-panic.raw.zst", "post-panic.elf.zst"];
/// How far above QEMU's `rsp` a rebuilt one may be and still be inside the stop path's frames.
const STOP_PATH_BYTES: u64 = 0x400;

/// The CPUs QEMU says were stopped, not the one that panicked (it spins in `panic`; the
/// panicking task's registers are checked in tests/threads.rs).
fn stopped_cpus(truth: &Value) -> Vec<&Value> {
    let crashed = truth["crashed_thread"]["tid"].as_i64();
    truth["vcpus"]
        .as_array()
        .map(|v| v.iter().filter(|c| c["current_pid"].as_i64() != crashed).collect())
        .unwrap_or_default()
}

/// gdb's thread number of the task on `cpu` (pid and comm from the truth), from `info threads`.
fn thread_on_cpu(info_threads: &str, cpu: &Value) -> Option<u32> {
    let (n, pid, comm) = (cpu["cpu"].as_u64()?, cpu["current_pid"].as_i64()?, cpu["current_comm"].as_str()?);
    info_threads.lines().find_map(|line| {
        let l = line.trim_start_matches('*').trim_start();
        let num: u32 = l.split_whitespace().next()?.parse().ok()?;
        let on_cpu = l.contains(&format!("(pid {pid} {comm} "))
            && l.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == format!("cpu{n}"));
        on_cpu.then_some(num)
    })
}

fn registers(port: u16, thread: u32) -> (u64, u64) {
    let out = gdb(port, &[&format!("thread {thread}"), "p/x $rip", "p/x $rsp"]);
    let vals: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split_once(" = 0x").map(|(_, v)| v.trim()))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .collect();
    assert_eq!(vals.len(), 2, "thread {thread} has no rip and rsp:\n{out}");
    (vals[0], vals[1])
}

fn check_image(dir: &Path, image: &str, truth: &Value, names: &NmSymbols) {
    let path = unpacked(dir, image);
    let tag = format!("{}/{image}", dir.display());
    let stub = Stub::start(&["--image", path.to_str().unwrap()]);
    let threads = gdb(stub.port, &["info threads"]);
    let stopped = stopped_cpus(truth);
    assert!(
        !stopped.is_empty() || truth["vcpus"].as_array().is_some_and(|v| v.len() == 1),
        "{tag}: no vCPUs"
    );
    for cpu in &stopped {
        let n = cpu["cpu"].as_u64().unwrap();
        let thread = thread_on_cpu(&threads, cpu)
            .unwrap_or_else(|| panic!("{tag}: no thread shows cpu{n}'s task {cpu}:\n{threads}"));
        let (rip, rsp) = registers(stub.port, thread);
        let (want_rip, want_rsp) = (hex(&cpu["rip"]), hex(&cpu["rsp"]));
        assert_eq!(
            names.name(rip),
            names.name(want_rip),
            "{tag}: cpu{n}: rip {rip:#x} is not in the function QEMU's vCPU was in ({want_rip:#x})"
        );
        if image.contains(".elf") {
            // QEMU's own notes: exact.
            assert_eq!((rip, rsp), (want_rip, want_rsp), "{tag}: cpu{n}'s registers differ from QEMU's note");
        } else {
            assert!(
                rsp >= want_rsp && rsp - want_rsp <= STOP_PATH_BYTES,
                "{tag}: cpu{n}: rsp {rsp:#x} is not QEMU's {want_rsp:#x} nor within the stop path above it"
            );
        }
    }

    // Every CPU through the stop: its function, the interrupt entry, then what it interrupted.
    let all = gdb(stub.port, &["monitor bt -a"]);
    for cpu in &stopped {
        let n = cpu["cpu"].as_u64().unwrap();
        let section = all
            .split(&format!("CPU {n}:\n"))
            .nth(1)
            .map(|s| s.split("\nCPU ").next().unwrap_or(s))
            .unwrap_or_else(|| panic!("{tag}: monitor bt -a has no CPU {n}:\n{all}"));
        let func = names.name(hex(&cpu["rip"])).unwrap();
        assert!(
            section.contains(&format!(" {func}+")),
            "{tag}: cpu{n}'s trace does not start in {func}:\n{section}"
        );
        let after = section
            .split_once("--- interrupt/exception entry")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("{tag}: cpu{n}'s trace has no interrupt entry:\n{section}"));
        let frames: Vec<&str> = after.lines().skip(1).filter(|l| l.starts_with('#')).collect();
        assert!(
            frames.first().is_some_and(|f| f.contains('+')),
            "{tag}: cpu{n}'s trace stops at the interrupt entry:\n{section}"
        );
    }
    // The command line gives the same traces.
    let (ok, cli, err) = run(&["bt", "-a", "--image", path.to_str().unwrap()]);
    assert!(ok, "{tag}: dmastub bt -a failed: {err}");
    for cpu in &stopped {
        let n = cpu["cpu"].as_u64().unwrap();
        // gdb adds its own lines after the monitor's answer.
        let section = |text: &str| {
            text.split(&format!("CPU {n}:\n")).nth(1).map(|s| {
                let s = s.split("\nCPU ").next().unwrap_or(s);
                s.lines().take_while(|l| !l.starts_with("[Inferior")).collect::<Vec<_>>().join("\n")
            })
        };
        assert_eq!(section(&cli), section(&all), "{tag}: dmastub bt -a and monitor bt -a differ on cpu{n}");
    }
}

#[test]
fn every_stopped_cpu_has_the_registers_qemu_saw() {
    let dirs = fixture_dirs();
    if dirs.is_empty() {
        return;
    }
    for dir in dirs {
        let truth = truth(&dir, "post-panic");
        if truth["vcpus"].as_array().is_none_or(|v| v.is_empty()) {
            eprintln!("SKIP {}: its truth has no vcpus", dir.display());
            continue;
        }
        let Some(names) = NmSymbols::of_fixture(&dir, &truth) else { continue };
        for image in IMAGES {
            if dir.join(image).is_file() {
                check_image(&dir, image, &truth, &names);
            } else {
                eprintln!("SKIP part: {} has no {image}", dir.display());
            }
        }
    }
}

/// gdb's own `thread apply all bt`, with gdb-scripts/dmastub.py's unwinder asking the stub at
/// the frames DWARF does not describe: with the DWARF vmlinux, every stopped CPU's trace goes
/// from the halt loop through the stop interrupt's entry (`asm_sysvec_reboot` or an NMI's) into
/// the function it interrupted; with symbols only, the panicking task's trace names the same
/// functions as `monitor bt` (every frame from the kernel's ORC tables).
#[test]
fn gdb_unwinds_through_the_stop_interrupt() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gdb-scripts/dmastub.py");
    for dir in fixture_dirs() {
        let truth = truth(&dir, "post-panic");
        let Some(names) = NmSymbols::of_fixture(&dir, &truth) else { continue };
        let release = truth["kernel"]["release"].as_str().unwrap_or_default().to_string();
        for image in IMAGES.iter().filter(|i| dir.join(i).is_file()) {
            let path = unpacked(&dir, image);
            let tag = format!("{}/{image}", dir.display());
            let stub = Stub::start(&["--image", path.to_str().unwrap()]);
            let timeout = std::time::Duration::from_secs(300);
            let source = format!("source {script}");

            // Symbols only: the panicking thread (gdb's first) frame by frame as monitor bt.
            let symbols = unpacked(&dir, "vmlinux-symbols.zst");
            let out =
                gdb_with(stub.port, Some(&symbols), &[&source, "thread 1", "bt", "monitor bt"], timeout);
            let (gdb_bt, ours) = out
                .split_at(monitor_bt_start(&out).unwrap_or_else(|| panic!("{tag}: no monitor bt:\n{out}")));
            let gdb_names: Vec<&str> = gdb_bt
                .lines()
                .filter(|l| l.starts_with('#'))
                .filter_map(|l| l.split(" in ").nth(1)?.split_whitespace().next())
                .collect();
            let our_names: Vec<&str> = ours
                .lines()
                .filter(|l| l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().nth(2)?.split('+').next())
                .collect();
            assert!(our_names.len() >= 5, "{tag}: monitor bt is short:\n{ours}");
            // gdb's frame #0 is printed twice (at the thread switch and in bt).
            let gdb_frames: Vec<&str> = gdb_names.iter().skip(1).copied().take(our_names.len()).collect();
            // gdb names a frame by the symbol at or before it, which may be a label's.
            let same = gdb_frames.len() == our_names.len()
                && gdb_frames.iter().zip(&our_names).all(|(g, o)| o.starts_with(g));
            assert!(
                same,
                "{tag}: gdb's bt with symbols only {gdb_frames:?} differs from monitor bt {our_names:?}:\n{out}"
            );

            let Some(vmlinux) = dwarf_vmlinux().filter(|_| release.ends_with("6.1.0-56-amd64")) else {
                eprintln!("SKIP part: {tag}: no DWARF vmlinux of {release} (DMASTUB_DWARF_VMLINUX)");
                continue;
            };
            let threads = gdb(stub.port, &["info threads"]);
            for cpu in stopped_cpus(&truth) {
                let n = cpu["cpu"].as_u64().unwrap();
                let thread =
                    thread_on_cpu(&threads, cpu).unwrap_or_else(|| panic!("{tag}: no thread on cpu{n}"));
                let out = gdb_with(
                    stub.port,
                    Some(&vmlinux),
                    &[&source, &format!("thread {thread}"), "bt"],
                    timeout,
                );
                let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
                let func = names.name(hex(&cpu["rip"])).unwrap();
                assert!(
                    frames.iter().any(|f| f.contains(&format!(" {func} "))),
                    "{tag}: cpu{n}: not in {func}:\n{out}"
                );
                let entry = frames
                    .iter()
                    .position(|f| f.contains(" in asm_sysvec_") || f.contains(" in asm_exc_nmi"))
                    .unwrap_or_else(|| panic!("{tag}: cpu{n}: gdb's bt has no interrupt entry:\n{out}"));
                let after = frames
                    .get(entry + 1)
                    .unwrap_or_else(|| panic!("{tag}: cpu{n}: bt ends at the entry:\n{out}"));
                assert!(
                    after.split(" in ").nth(1).is_some_and(|f| !f.starts_with("??")),
                    "{tag}: cpu{n}: the frame after the entry has no function:\n{out}"
                );
            }
        }
    }
}

/// Where `monitor bt`'s answer starts in gdb's output: its `thread N: pid …` line.
fn monitor_bt_start(out: &str) -> Option<usize> {
    let mut at = 0;
    for line in out.split_inclusive('\n') {
        if line.starts_with("thread ") && line.contains(": pid ") {
            return Some(at);
        }
        at += line.len();
    }
    None
}
