//! `dmastub gcore` and `monitor regs user` on the real images (raw and ELF): gdb opens the
//! core with the timekeeper's binary and reads its global and stack variables as the truth
//! records them, unwinds from the sleep call to `main`, and sees the process's threads and
//! file mappings; the stub's own user-mode view through `serve` agrees with the core.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const IMAGES: &[&str] = &["post-panic.raw.zst", "post-panic.elf.zst"];

/// gdb in batch mode on `binary` and `core`, with `commands`; stdout and stderr together.
fn gdb_core(binary: &Path, core: &Path, commands: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "gdb", "-q", "-nx", "-batch", "-ex", "set pagination off"]);
    cmd.arg(binary).arg(core);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = cmd.output().expect("run gdb (install the gdb package)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Timekeeper {
    pid: u64,
    global: u64,
    stack: u64,
    global_value: u64,
    stack_value: u64,
}

fn timekeeper(t: &Value) -> Timekeeper {
    let tk = &t["timekeeper"];
    Timekeeper {
        pid: tk["pid"].as_u64().unwrap(),
        global: hex(&tk["global_virt"]),
        stack: hex(&tk["stack_virt"]),
        global_value: tk["global_value_in_memory"].as_u64().unwrap(),
        stack_value: tk["stack_value_in_memory"].as_u64().unwrap(),
    }
}

fn core_path(dir: &Path, image: &str) -> PathBuf {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::env::temp_dir().join(format!("dmastub-gcore-test-{}-{name}-{image}.core", std::process::id()))
}

/// Tasks of `ps -t` on `cr3`: the threads of the process whose page tables those are.
fn threads_on(image: &str, cr3: u64) -> usize {
    let (ok, out, err) = run(&["ps", "-t", "--image", image]);
    assert!(ok, "dmastub ps -t: {err}");
    let want = format!("{cr3:#x}");
    out.lines().filter(|l| l.split_whitespace().last() == Some(want.as_str())).count()
}

/// The file-backed lines of the guest's own `/proc/PID/maps` of the timekeeper
/// (`truth-serial.log`): start, end, offset, path.
fn guest_file_maps(dir: &Path) -> Vec<(u64, u64, u64, String)> {
    let log = std::fs::read_to_string(dir.join("truth-serial.log")).unwrap_or_default();
    let mut on = false;
    let mut v = Vec::new();
    for line in log.lines() {
        if line.starts_with("--- ") {
            on = line.starts_with("--- timekeeper-maps");
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if on && w.len() == 6 && w[5].starts_with('/') {
            let (a, b) = w[0].split_once('-').unwrap();
            let h = |s: &str| u64::from_str_radix(s, 16).unwrap();
            v.push((h(a), h(b), h(w[2]), w[5].to_string()));
        }
    }
    v
}

#[test]
fn gdb_opens_the_core_with_the_binary_and_reads_the_truth() {
    for dir in fixture_dirs() {
        let t = truth(&dir, "post-panic");
        let tk = timekeeper(&t);
        let binary = dir.join("timekeeper");
        if !binary.exists() {
            eprintln!("SKIP {}: no timekeeper binary", dir.display());
            continue;
        }
        for image in IMAGES {
            if !dir.join(image).exists() {
                continue;
            }
            let img = unpacked(&dir, image);
            let core = core_path(&dir, image);
            let _ = std::fs::remove_file(&core);
            let pid = tk.pid.to_string();
            let (ok, _, err) =
                run(&["gcore", "--image", img.to_str().unwrap(), &pid, "-o", core.to_str().unwrap()]);
            assert!(ok, "{image}: dmastub gcore {pid}: {err}");
            assert!(err.contains("wrote"), "{image}: no report on stderr: {err}");
            let out = gdb_core(
                &binary,
                &core,
                &[
                    &format!("x/gx {:#x}", tk.global),
                    &format!("x/gx {:#x}", tk.stack),
                    "bt",
                    "info threads",
                    "info registers rip rsp cs ss",
                    "info proc mappings",
                    "info registers mxcsr fctrl",
                ],
            );
            // NT_PRFPREG from the task's saved FPU state: a C program that never touches the
            // control registers has their reset values (garbage would not).
            assert!(
                out.lines().any(|l| l.starts_with("mxcsr") && l.contains("0x1f80")),
                "{image}: mxcsr:\n{out}"
            );
            assert!(
                out.lines().any(|l| l.starts_with("fctrl") && l.contains("0x37f")),
                "{image}: fctrl:\n{out}"
            );
            assert_eq!(x_gx(&out, tk.global), Some(tk.global_value), "{image}: the global:\n{out}");
            assert_eq!(x_gx(&out, tk.stack), Some(tk.stack_value), "{image}: the stack variable:\n{out}");
            let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
            assert!(
                frames.first().is_some_and(|f| f.contains("sleep")),
                "{image}: bt does not start in the sleep call:\n{out}"
            );
            assert!(frames.iter().any(|f| f.contains(" main ")), "{image}: bt does not reach main:\n{out}");
            // `info threads` rows: `* 1    LWP 93  0x… in clock_nanosleep ()`.
            let threads = out
                .lines()
                .filter(|l| {
                    let w: Vec<&str> = l.trim_start_matches('*').split_whitespace().collect();
                    w.len() > 2 && w[0].parse::<u32>().is_ok() && w[1] == "LWP"
                })
                .count();
            assert_eq!(
                threads,
                threads_on(img.to_str().unwrap(), hex(&t["timekeeper"]["cr3"])),
                "{image}: info threads:\n{out}"
            );
            assert!(out.contains(&format!("LWP {}", tk.pid)), "{image}: the leader's thread:\n{out}");

            // The notes as readelf sees them: NT_FILE names the binary as the guest mapped it.
            let re = Command::new("readelf").args(["-n", "-l"]).arg(&core).output().expect("run readelf");
            let re = String::from_utf8_lossy(&re.stdout);
            for note in ["NT_PRSTATUS", "NT_FPREGSET", "NT_PRPSINFO", "NT_AUXV", "NT_FILE"] {
                assert!(re.contains(note), "{image}: readelf -n lacks {note}:\n{re}");
            }
            // NT_FILE as gdb reads it (`info proc mappings`) = the guest's own /proc/PID/maps,
            // file-backed lines.
            let want = guest_file_maps(&dir);
            assert!(!want.is_empty(), "no timekeeper-maps in truth-serial.log");
            let got: Vec<(u64, u64, u64, String)> = out
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let n = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
                    match w[..] {
                        [a, b, _, o, path] if path.starts_with('/') => {
                            Some((n(a)?, n(b)?, n(o)?, path.to_string()))
                        }
                        _ => None,
                    }
                })
                .collect();
            assert_eq!(got, want, "{image}: NT_FILE (gdb's info proc mappings) vs the guest's maps:\n{out}");
            assert!(re.contains("LOAD"), "{image}: no PT_LOAD:\n{re}");

            // The same thread through the stub: monitor switch + monitor regs user.
            let tid = tk.pid + 1; // dmastub's thread ids: pid + 1
            let stub = Stub::start(&["--image", img.to_str().unwrap()]);
            // The binary is loaded after connecting: gdb applies the stub's qOffsets (the kernel's
            // KASLR slide) to a file it was started with.
            let file = format!("file {}", binary.display());
            let live = gdb_with(
                stub.port,
                None,
                &[
                    &format!("monitor switch {}", tk.pid),
                    "monitor regs user",
                    &format!("thread find pid {} ", tk.pid),
                ],
                Duration::from_secs(120),
            );
            let num = live
                .lines()
                .find_map(|l| l.strip_prefix("Thread ")?.split_whitespace().next()?.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{image}: thread find gave no thread for tid {tid}:\n{live}"));
            let live = gdb_with(
                stub.port,
                None,
                &[
                    &format!("monitor switch {}", tk.pid),
                    "monitor regs user",
                    &file,
                    &format!("thread {num}"),
                    "info registers rip rsp cs ss",
                    "bt",
                    &format!("x/gx {:#x}", tk.global),
                    &format!("x/gx {:#x}", tk.stack),
                ],
                Duration::from_secs(120),
            );
            let regs = |o: &str| -> Vec<String> {
                o.lines()
                    .filter(|l| ["rip ", "rsp ", "cs ", "ss "].iter().any(|r| l.starts_with(r)))
                    .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                    .collect()
            };
            assert_eq!(regs(&live).len(), 4, "{image}: registers through the stub:\n{live}");
            assert_eq!(
                regs(&live),
                regs(&out),
                "{image}: the core and the stub disagree:\n{live}\n---\n{out}"
            );
            assert_eq!(x_gx(&live, tk.global), Some(tk.global_value), "{image}: stub global:\n{live}");
            assert_eq!(x_gx(&live, tk.stack), Some(tk.stack_value), "{image}: stub stack:\n{live}");
            assert!(
                live.lines().any(|l| l.starts_with('#') && l.contains(" main ")),
                "{image}: stub bt:\n{live}"
            );
            let _ = std::fs::remove_file(&core);
        }
    }
}

#[test]
fn unknown_pids_and_kernel_threads_are_refused() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let img = unpacked(&dir, IMAGES[0]);
    let core = core_path(&dir, "refused");
    let _ = std::fs::remove_file(&core);
    let (ok, _, err) =
        run(&["gcore", "--image", img.to_str().unwrap(), "99999", "-o", core.to_str().unwrap()]);
    assert!(!ok && err.contains("no task with pid 99999"), "unknown pid: {err}");
    let kthread = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kernel_thread"].as_bool() == Some(true) && p["pid"].as_i64() != Some(0))
        .expect("a kernel thread in the truth");
    let pid = kthread["pid"].as_i64().unwrap().to_string();
    let (ok, _, err) = run(&["gcore", "--image", img.to_str().unwrap(), &pid, "-o", core.to_str().unwrap()]);
    assert!(!ok && err.contains("kernel thread"), "kernel thread {pid}: {err}");
    assert!(!core.exists(), "nothing is written for a refused pid");
    // The limit: refused before anything is written, and how to raise it said.
    let tk = timekeeper(&t).pid.to_string();
    let (ok, _, err) = run(&[
        "gcore",
        "--image",
        img.to_str().unwrap(),
        &tk,
        "-o",
        core.to_str().unwrap(),
        "--max-size",
        "64K",
    ]);
    assert!(!ok && err.contains("--max-size"), "limit: {err}");
    assert!(!core.exists());
}

/// A kdump file at dump level 31 left user pages out: the core has none of them, and gdb says
/// it cannot read the stack rather than showing zeros; the registers are still there.
#[test]
fn pages_the_source_left_out_are_never_zeros_in_the_core() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let img = dir.join("post-panic.kdump-d31-zlib");
    if !img.exists() {
        eprintln!("SKIP: no {}", img.display());
        return;
    }
    let tk = timekeeper(&truth(&dir, "post-panic"));
    let core = core_path(&dir, "kdump");
    let _ = std::fs::remove_file(&core);
    let pid = tk.pid.to_string();
    let (ok, _, err) = run(&["gcore", "--image", img.to_str().unwrap(), &pid, "-o", core.to_str().unwrap()]);
    assert!(ok, "dmastub gcore on the kdump file: {err}");
    assert!(
        err.contains("absent") && err.contains("excluded by the dump"),
        "no report of absent pages: {err}"
    );
    let out =
        gdb_core(&dir.join("timekeeper"), &core, &[&format!("x/gx {:#x}", tk.stack), "info registers rip"]);
    assert!(
        out.contains(&format!("Cannot access memory at address {:#x}", tk.stack)),
        "the stack page was excluded, yet gdb read it:\n{out}"
    );
    // The registers are in the notes: gdb names the frame of the user rip (text from the binary).
    assert!(out.contains("#0  0x") && out.contains("sleep"), "no user rip in the sleep call:\n{out}");
    let _ = std::fs::remove_file(&core);
}

/// By DMA (the NetTLP emulator serving the raw image) the core is the same, byte for byte, as
/// the one written from the image itself.
#[test]
fn by_dma_the_core_is_the_same_as_from_the_image() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let tk = timekeeper(&truth(&dir, "post-panic"));
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let (from_file, by_dma) = (core_path(&dir, "file"), core_path(&dir, "dma"));
    let pid = tk.pid.to_string();
    for c in [&from_file, &by_dma] {
        let _ = std::fs::remove_file(c);
    }
    let (ok, _, err) =
        run(&["gcore", "--image", raw.to_str().unwrap(), &pid, "-o", from_file.to_str().unwrap()]);
    assert!(ok, "from the image: {err}");
    {
        let _emu = Emulator::start(raw.to_str().unwrap(), "127.0.93.2");
        let (ok, _, err) = run(&[
            "gcore",
            "--nettlp",
            "127.0.93.2",
            "--nettlp-local",
            "127.0.93.1",
            &pid,
            "-o",
            by_dma.to_str().unwrap(),
        ]);
        assert!(ok, "by DMA: {err}");
    }
    let (a, b) = (std::fs::read(&from_file).unwrap(), std::fs::read(&by_dma).unwrap());
    assert!(a == b, "the cores differ ({} and {} bytes)", a.len(), b.len());
    for c in [&from_file, &by_dma] {
        let _ = std::fs::remove_file(c);
    }
}
