//! `monitor bt` and `dmastub bt`: kernel backtraces the stub unwinds itself, with the kernel's
//! own ORC tables from memory and no vmlinux, checked with real gdb against drgn's stack traces
//! (DWARF, recorded in `tests/reference/`) and against the kernel's own unwinder: the Call Trace
//! the panic printed, read from the kernel log in the same image.
//!
//! The 6.1 image is in the shared fixtures; the others (5-level paging, PTI, 6.12 with the newer
//! ORC entry layout) are checked when they sit beside it in `$DMASTUB_FIXTURES`.

mod common;

use common::*;
use dmastub::linux::Linux;
use dmastub::linux::TypeInfo;
use dmastub::linux::{Hints, discover};
use dmastub::linux::{Memory, Symbols, View};
use dmastub::linux::{Orc, Start, unwind};
use dmastub::linux::{Regs, reg};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const FIXTURE: &str = "linux-6.1-kaslr";
const IMAGES: &[&str] = &["post-panic.raw.zst", "post-panic.elf.zst"];
/// Every fixture whose images these tests read, when present.
const ALL_FIXTURES: &[&str] =
    &["linux-6.1-kaslr", "linux-6.1-la57", "linux-6.1-pti", "linux-6.12.117-la57", "linux-6.1-extra300"];

/// The function names of a backtrace's frames (`#N  0x… name+off/size`).
fn frames(bt: &str) -> Vec<String> {
    bt.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|f| f.split('+').next().unwrap_or(f).to_string())
        .collect()
}

/// Whether a kallsyms name stands for drgn's DWARF function name: the same once the
/// compiler's suffixes are dropped (`__handle_sysrq.cold`), or an assembly label inside it
/// (`entry_SYSCALL_64_after_hwframe` in `entry_SYSCALL_64`).
fn same_function(kallsyms: &str, dwarf: &str) -> bool {
    let base = kallsyms.split('.').next().unwrap_or(kallsyms);
    base == dwarf || base.strip_prefix(dwarf).is_some_and(|rest| rest.starts_with('_'))
}

/// drgn's frames of a task that are real calls (not inlined), up to and with the system-call
/// entry or ret_from_fork; and whether drgn's recording was cut short before that.
fn drgn_frames(d: &Value) -> (Vec<String>, bool) {
    let mut names = Vec::new();
    for f in d["frames"].as_array().unwrap() {
        if f["inline"].as_bool() == Some(true) {
            continue;
        }
        let name = f["name"].as_str().unwrap_or("??").to_string();
        let end = name.starts_with("entry_SYSCALL_64") || name == "ret_from_fork";
        names.push(name);
        if end {
            return (names, false);
        }
    }
    let cut = d["nframes_total"].as_u64().unwrap_or(0) > d["frames"].as_array().unwrap().len() as u64;
    (names, cut)
}

/// `monitor bt` answers of one gdb run, by the key echoed before each: from the answer's
/// first line (`thread …`, or an error) on, without what gdb printed when selecting a thread.
fn blocks(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut key: Option<String> = None;
    let mut started = false;
    for line in out.lines() {
        if let Some(k) = line.strip_prefix("BT ") {
            (key, started) = (Some(k.trim().to_string()), false);
            continue;
        }
        started |= line.starts_with("thread ") || line.starts_with("no task");
        if let (Some(k), true) = (&key, started) {
            let text: &mut String = map.entry(k.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    map
}

/// gdb's thread number for each stub thread id, from `info threads`.
fn thread_numbers(out: &str) -> BTreeMap<u64, u32> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches('*').trim_start();
            let (num, rest) = l.split_once(char::is_whitespace)?;
            let id = rest.trim_start().strip_prefix("Thread 1.")?.split_whitespace().next()?;
            Some((id.parse().ok()?, num.parse().ok()?))
        })
        .collect()
}

#[test]
fn monitor_bt_matches_drgns_stacks_for_every_task_with_registers() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/drgn-linux-6.1-kaslr-post-panic.json");
    let drgn: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t = truth(&dir, "post-panic");
    let same_build = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| drgn["tasks"].as_array().unwrap().iter().any(|d| d["task"] == p["task_struct"]));
    if !same_build {
        eprintln!("SKIP: drgn's recording is of another build of {FIXTURE} (task addresses differ)");
        return;
    }
    for file in IMAGES {
        let image = unpacked(&dir, file);
        let stub = Stub::start(&["--image", image.to_str().unwrap()]);
        let numbers = thread_numbers(&gdb(stub.port, &["info threads"]));
        // Tasks by pid; the idle tasks of other CPUs (pid 0 too) by selecting their thread.
        let mut cmds = Vec::new();
        for d in drgn["tasks"].as_array().unwrap() {
            let key = format!("{} {}", d["pid"], d["comm"].as_str().unwrap());
            cmds.push(format!("echo BT {key}\\n"));
            match d["idle_cpu"].as_u64() {
                Some(cpu) if cpu > 0 => {
                    cmds.push(format!("thread {}", numbers[&((1 << 22) + cpu)]));
                    cmds.push("monitor bt".to_string());
                }
                _ => cmds.push(format!("monitor bt {}", d["pid"])),
            }
        }
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        let out = gdb_with(stub.port, None, &refs, Duration::from_secs(120));
        let got = blocks(&out);
        let mut compared = 0;
        for d in drgn["tasks"].as_array().unwrap() {
            let comm = d["comm"].as_str().unwrap();
            let key = format!("{} {comm}", d["pid"]);
            let bt = got.get(&key).unwrap_or_else(|| panic!("{file}: no monitor bt for {key}\n{out}"));
            let first = bt.lines().find(|l| l.starts_with("thread ")).unwrap_or_default();
            assert!(first.contains(&format!(" {comm} ")), "{file}: {key}: the bt of another thread\n{bt}");
            if first.contains("registers unavailable") {
                // Only a running task in the raw image, which kept no CPU registers.
                assert!(file.contains(".raw") && d["on_cpu"] == true, "{file}: {key}\n{bt}");
                assert_eq!(bt.lines().count(), 1, "{file}: {key}: one line\n{bt}");
                continue;
            }
            assert!(!bt.contains("stopped:"), "{file}: {key}\n{bt}");
            let ours = frames(bt);
            let (mut want, cut) = drgn_frames(d);
            if comm == "crasher" && file.contains(".raw") {
                // Registers rebuilt from the return into panic: the frames below it are gone.
                let at = want.iter().position(|f| f == "panic").expect("drgn's crasher trace has panic");
                want.drain(..at);
            }
            let n = if cut { want.len() } else { ours.len().max(want.len()) };
            let matches = n <= ours.len()
                && n <= want.len()
                && ours.iter().zip(&want).take(n).all(|(o, w)| same_function(o, w));
            assert!(
                matches,
                "{file}: {key}: ours {ours:?}, drgn {want:?}{}\n{bt}",
                if cut { " (cut)" } else { "" }
            );
            if !d["frames"].as_array().unwrap().iter().any(|f| f["name"] == "ret_from_fork")
                && d["pid"] != 0
                && !cut
            {
                assert!(bt.contains("entry from user mode: user rip"), "{file}: {key}\n{bt}");
            }
            compared += 1;
        }
        eprintln!("{file}: {compared} backtraces match drgn's");
        assert!(compared >= 60, "{file}: only {compared} compared");
    }
}

#[test]
fn without_a_pid_the_selected_threads_backtrace() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let tk = truth(&dir, "post-panic")["timekeeper"]["pid"].as_i64().unwrap();
    let image = unpacked(&dir, "post-panic.elf.zst");
    let stub = Stub::start(&["--image", image.to_str().unwrap()]);
    let kthreadd = thread_numbers(&gdb(stub.port, &["info threads"]))[&3];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gdb-scripts/dmastub.py");
    let cmds = [
        format!("source {script}"),
        format!("thread {kthreadd}"),
        "echo BT selected\\n".to_string(),
        "monitor bt".to_string(),
        // info threads reads every thread; dmastub-bt makes gdb read the selected one again.
        "info threads".to_string(),
        "echo BT after info threads\\n".to_string(),
        "dmastub-bt".to_string(),
        "echo BT by pid\\n".to_string(),
        format!("dmastub-bt {tk}"),
    ];
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(stub.port, &refs);
    let got = blocks(&out);
    for key in ["selected", "after info threads"] {
        assert!(got[key].starts_with("thread 3: pid 2 kthreadd S;"), "{key}: {out}");
        assert_eq!(frames(&got[key]).last().map(String::as_str), Some("ret_from_fork"), "{out}");
    }
    assert!(got["by pid"].starts_with(&format!("thread {}: pid {tk} timekeeper S;", tk + 1)), "{out}");
}

/// The Call Trace the panic printed, from the kernel log in the image: `name+off/size` of each
/// reliable frame (`?` lines are guesses), and the user-mode RIP and RSP.
fn kernel_call_trace(dmesg: &str) -> (Vec<String>, Option<(u64, u64)>) {
    let mut frames = Vec::new();
    let mut user = (None, None);
    let mut inside = false;
    for line in dmesg.lines() {
        let text = line.split_once("] ").map(|(_, t)| t).unwrap_or(line).trim();
        if text.starts_with("Call Trace:") {
            (inside, frames) = (true, Vec::new());
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(rip) = text.strip_prefix("RIP: 0033:") {
            user.0 = u64::from_str_radix(rip.trim_start_matches("0x"), 16).ok();
        } else if let Some(rsp) = text.strip_prefix("RSP: 002b:") {
            user.1 = rsp.split_whitespace().next().and_then(|v| u64::from_str_radix(v, 16).ok());
        } else if text.starts_with("</TASK>") {
            inside = false;
        } else if text.contains('+') && text.contains('/') && !text.starts_with('?') && !text.contains(' ') {
            frames.push(text.to_string());
        }
    }
    (frames, user.0.zip(user.1))
}

#[test]
fn the_panic_backtrace_is_the_one_the_kernel_printed() {
    let mut checked = 0;
    for fixture in ALL_FIXTURES {
        let Some(dir) = fixture_dir(fixture) else { continue };
        for file in IMAGES {
            if !dir.join(file).exists() {
                continue;
            }
            let image = unpacked(&dir, file);
            let image = image.to_str().unwrap();
            let (ok, dmesg, err) = run(&["dmesg", "--image", image]);
            assert!(ok, "{fixture}/{file}: {err}");
            let (kernel, user) = kernel_call_trace(&dmesg);
            let (ok, bt, err) = run(&["bt", "--image", image]);
            assert!(ok, "{fixture}/{file}: {err}");
            assert!(bt.lines().next().unwrap_or_default().contains("panicking"), "{fixture}/{file}\n{bt}");
            // The panic's own frames differ (it printed from one call in panic, stopped in
            // another); from the sysrq handler up to the system call they are the same.
            let from = |frames: &[String]| {
                frames.iter().position(|f| f.starts_with("sysrq_handle_crash+")).map(|i| frames[i..].to_vec())
            };
            let ours: Vec<String> = bt
                .lines()
                .filter(|l| l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().nth(2))
                .map(String::from)
                .collect();
            let (ours, theirs) = (from(&ours), from(&kernel));
            assert!(
                theirs.as_ref().is_some_and(|t| t.len() >= 6),
                "{fixture}/{file}: the kernel log's trace: {kernel:?}"
            );
            assert_eq!(ours, theirs, "{fixture}/{file}\nours:\n{bt}\nthe kernel's: {kernel:?}");
            let (rip, rsp) = user.expect("the kernel printed the user registers");
            assert!(
                bt.contains(&format!("user rip {rip:#x}, rsp {rsp:#x}")),
                "{fixture}/{file}: user rip {rip:#x} rsp {rsp:#x}\n{bt}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 || fixture_dir(FIXTURE).is_none(), "only {checked} images checked");
}

#[test]
fn every_task_unwinds_to_its_first_frame() {
    for fixture in ALL_FIXTURES {
        let Some(dir) = fixture_dir(fixture) else { continue };
        let file = if dir.join("post-panic.elf.zst").exists() { "post-panic.elf.zst" } else { continue };
        let image = unpacked(&dir, file);
        let image = image.to_str().unwrap();
        let (ok, ps, err) = run(&["ps", "--image", image, "-t"]);
        assert!(ok, "{err}");
        let pids: Vec<&str> = ps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| p.parse::<u32>().is_ok())
            .collect();
        let stub = Stub::start(&["--image", image]);
        let cmds: Vec<String> =
            pids.iter().flat_map(|p| [format!("echo BT {p}\\n"), format!("monitor bt {p}")]).collect();
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        let out = gdb_with(stub.port, None, &refs, Duration::from_secs(300));
        let got = blocks(&out);
        assert_eq!(got.len(), pids.len(), "{fixture}: {out}");
        for (pid, bt) in &got {
            assert!(!bt.contains("stopped:") && !bt.contains("no backtrace"), "{fixture}: pid {pid}\n{bt}");
            let names = frames(bt);
            let last = names.last().map(String::as_str).unwrap_or_default();
            // A kernel thread's stack ends where it was forked, an idle task's where its CPU
            // started; a process's in the entry from user mode.
            let end = bt.contains("entry from user mode: user rip")
                || last.starts_with("ret_from_fork")
                || last.contains("startup_64");
            assert!(end, "{fixture}: pid {pid} ends at {last}\n{bt}");
        }
        eprintln!("{fixture}/{file}: {} backtraces end where they should", got.len());
    }
}

#[test]
fn dmastub_bt_from_the_command_line() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let image = unpacked(&dir, "post-panic.raw.zst");
    let image = image.to_str().unwrap();
    let tk = t["timekeeper"]["pid"].as_i64().unwrap().to_string();
    let (ok, bt, err) = run(&["bt", "--image", image, &tk]);
    assert!(ok, "{err}");
    assert!(
        bt.starts_with(&format!(
            "thread {}: pid {tk} timekeeper S; registers: saved switch frame\n",
            tk.parse::<u64>().unwrap() + 1
        )),
        "{bt}"
    );
    let names = frames(&bt);
    for f in ["__schedule", "schedule", "do_nanosleep", "hrtimer_nanosleep", "do_syscall_64"] {
        assert!(names.iter().any(|n| n == f), "{f} missing\n{bt}");
    }
    assert!(
        bt.lines().last().unwrap().starts_with("--- interrupt/syscall entry from user mode: user rip 0x"),
        "{bt}"
    );
    // No PID: the panicking task.
    let (ok, bt, _) = run(&["bt", "--image", image]);
    assert!(
        ok && bt.contains(" crasher ") && frames(&bt).first().map(String::as_str) == Some("panic"),
        "{bt}"
    );
    // A PID that is not there: one line, and a failure.
    let (ok, out, err) = run(&["bt", "--image", image, "99999"]);
    assert!(!ok && out.is_empty() && err.contains("no task with pid 99999"), "{out}{err}");
}

/// Module code: its own ORC table and symbols, read from `struct module` (before 6.4 its
/// `core_layout`, from 6.4 `mem[MOD_TEXT]`), on the real images' one module (qemu_fw_cfg).
#[test]
fn module_code_is_named_and_unwound_with_the_modules_tables() {
    let mut checked = 0;
    for fixture in ["linux-6.1-kaslr", "linux-6.12.117-la57"] {
        let Some(dir) = fixture_dir(fixture) else { continue };
        let image = unpacked(&dir, "post-panic.elf.zst");
        let mem = phys::open_file(&image, &OpenOptions::default()).expect("open the image");
        let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
        let linux = Linux::new(discover(&mut space, Hints::default()).expect("discover"));
        let k = &linux.kernel;
        let types = k.types.as_deref().map(|t| t as &dyn TypeInfo);
        let mut view = View::new(&mut space, k.cr3.value);
        let orc = Orc::load(&mut view, &k.symbols, types).expect("ORC tables");
        // The first module on the list, and the start of its text.
        let t = types.unwrap();
        let off = |ty: &str, path: &str| t.member(ty, path).map(|m| m.offset);
        let base = off("module", "core_layout.base")
            .or_else(|| Some(off("module", "mem")? + off("module_memory", "base")?))
            .expect("module text layout");
        let head = k.symbols.address("modules").expect("modules symbol");
        let module = view.read_u64(head).unwrap() - off("module", "list").unwrap();
        let text = view.read_u64(module + base).unwrap();
        // Start in its first function, as if interrupted there, on init_task's stack.
        let mut regs = Regs::default();
        regs[reg::RIP] = Some(text + 4);
        regs[reg::RSP] = Some(k.symbols.address("init_stack").unwrap() + 0x3000);
        regs[reg::CS] = Some(0x10);
        let bt = unwind(&mut view, &k.symbols, &orc, &Start { regs, signal: true, full: false, stack: None });
        let text = bt.render();
        let first = text.lines().next().unwrap_or_default();
        assert!(first.contains(" [qemu_fw_cfg]") && !first.contains(" [qemu_fw_cfg]+"), "{fixture}: {text}");
        assert!(
            !bt.stopped.as_ref().map(ToString::to_string).unwrap_or_default().contains("module"),
            "{fixture}: {text}"
        );
        eprintln!("{fixture}: {first}");
        checked += 1;
    }
    assert!(checked >= 1 || fixture_dir(FIXTURE).is_none());
}
