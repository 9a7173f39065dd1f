//! Every task a gdb thread, checked with real gdb against the post-panic images (raw and ELF):
//! the thread list against the ground truth, thread contexts, registers against drgn's
//! unwinder, and — with the kernel's DWARF vmlinux — backtraces against drgn's stack traces.
//!
//! drgn's view comes from running `tests/tools/drgn_stacks.py` when drgn and the DWARF vmlinux
//! are here (`DMASTUB_DWARF_VMLINUX`, see `tools/setup-full-tests.sh`), else from its recorded
//! output for the public image (`tests/reference/`), checked to be of the same image.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const FIXTURE: &str = "linux-6.1-kaslr";
const IMAGES: &[&str] = &["post-panic.raw.zst", "post-panic.elf.zst"];

/// One row of `info threads`.
#[derive(Debug, Clone)]
struct Row {
    /// gdb's thread number.
    num: u32,
    tid: u64,
    pid: i32,
    comm: String,
    state: char,
    marks: String,
    frame: String,
}

/// Rows like `* 1    Thread 1.122 (pid 121 crasher R [cpu0, panicking]) 0xffff… in panic (…)`.
fn parse_threads(out: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for line in out.lines() {
        let l = line.trim_start_matches('*').trim_start();
        let Some((num, rest)) = l.split_once(char::is_whitespace) else { continue };
        let Ok(num) = num.parse() else { continue };
        let Some(rest) = rest.trim_start().strip_prefix("Thread ") else { continue };
        let Some((id, rest)) = rest.split_once(" (pid ") else { continue };
        let tid = id.rsplit('.').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let Some((pid, rest)) = rest.split_once(' ') else { continue };
        // The extra info ends with "STATE)" or "STATE [marks])".
        let (info, frame) = match rest.find("]) ") {
            Some(i) => (&rest[..i + 1], &rest[i + 3..]),
            None => match rest.find(") ") {
                Some(i) => (&rest[..i], &rest[i + 2..]),
                None => continue,
            },
        };
        let (head, marks) = match info.split_once(" [") {
            Some((h, m)) => (h, m.trim_end_matches(']')),
            None => (info, ""),
        };
        let Some((comm, state)) = head.rsplit_once(' ') else { continue };
        rows.push(Row {
            num,
            tid,
            pid: pid.parse().unwrap_or(-1),
            comm: comm.to_string(),
            state: state.chars().next().unwrap_or('?'),
            marks: marks.to_string(),
            frame: frame.trim().to_string(),
        });
    }
    rows
}

fn start(dir: &std::path::Path, file: &str) -> Stub {
    let image = unpacked(dir, file);
    Stub::start(&["--image", image.to_str().unwrap()])
}

#[test]
fn info_threads_lists_every_task_and_idle_task_and_marks_the_panic() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let crashed = t["crashed_thread"]["tid"].as_i64().unwrap() as i32;
    for file in IMAGES {
        let stub = start(&dir, file);
        let out = gdb(stub.port, &["info threads"]);
        let rows = parse_threads(&out);
        // Exactly the ground truth's tasks, plus one idle task per CPU.
        let mut want: BTreeSet<(i32, String)> = t["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["pid"].as_i64().unwrap() as i32, p["comm"].as_str().unwrap().to_string()))
            .collect();
        let cpus = t["vcpus"].as_array().unwrap().len();
        for c in 0..cpus {
            want.insert((0, format!("swapper/{c}")));
        }
        let got: BTreeSet<(i32, String)> = rows.iter().map(|r| (r.pid, r.comm.clone())).collect();
        assert_eq!(got, want, "{file}: info threads\n{out}");
        assert_eq!(rows.len(), want.len(), "{file}: a task listed twice\n{out}");
        // States as the guest's own ps saw them, and stable ids: pid + 1.
        for p in t["processes"].as_array().unwrap() {
            let pid = p["pid"].as_i64().unwrap() as i32;
            let r = rows.iter().find(|r| r.pid == pid).unwrap();
            assert_eq!(r.tid, pid as u64 + 1, "{file}: pid {pid}'s thread id");
            if pid != crashed {
                assert_eq!(
                    Some(r.state.to_string().as_str()),
                    p["state"].as_str(),
                    "{file}: pid {pid} state"
                );
            }
        }
        let idle: Vec<&Row> = rows.iter().filter(|r| r.pid == 0).collect();
        assert!(idle.iter().all(|r| r.marks.contains(&format!("cpu{} idle", &r.comm["swapper/".len()..]))));
        // The panicking task: marked, on the CPU the ground truth says, and gdb's first thread.
        let p = rows.iter().find(|r| r.pid == crashed).unwrap();
        let cpu = t["vcpus"].as_array().unwrap().iter().find(|v| v["current_pid"] == crashed).unwrap()["cpu"]
            .as_u64()
            .unwrap();
        assert!(p.marks.contains(&format!("cpu{cpu}")) && p.marks.contains("panicking"), "{file}: {p:?}");
        assert_eq!(p.num, 1, "{file}: the panicking task is the thread gdb stops in");
        assert!(p.frame.starts_with("0xffffffff"), "{file}: the panicking task's pc is kernel text: {p:?}");
        let sleeping = rows.iter().filter(|r| r.state == 'S' || r.state == 'I');
        assert!(
            sleeping.clone().all(|r| r.frame.starts_with("0xffffffff")),
            "{file}: a sleeping task without pc\n{out}"
        );
        assert!(out.lines().any(|l| l.starts_with("* 1 ")), "{file}: thread 1 selected\n{out}");
        if file.contains(".raw") {
            // No CPU registers in a raw image: rebuilt from the panic path and, for the CPUs
            // the panic stopped, from the stop path on their stacks (tests/cpus.rs compares
            // them with QEMU's), and said so.
            assert!(p.marks.contains("registers reconstructed"), "{file}: {p:?}");
            let other: Vec<&&Row> = idle.iter().filter(|r| r.marks.contains("running")).collect();
            assert!(!other.is_empty(), "{file}: no other CPU's running task\n{out}");
            assert!(
                other.iter().all(|r| r.marks.contains("registers reconstructed") && r.frame.starts_with("0xffffffff")),
                "{file}: {other:?}"
            );
        } else {
            assert!(
                !out.contains("registers reconstructed") && !out.contains("unavailable"),
                "{file}\n{out}"
            );
        }
        // No other task is marked.
        assert_eq!(rows.iter().filter(|r| r.marks.contains("panicking")).count(), 1, "{file}\n{out}");
    }
}

#[test]
fn a_thread_is_its_process_context_and_agrees_with_monitor_switch() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let tk = &t["timekeeper"];
    let (pid, global) = (tk["pid"].as_i64().unwrap(), hex(&tk["global_virt"]));
    let init_task = hex(&t["init_task"]["virt"]);
    for file in IMAGES {
        let stub = start(&dir, file);
        let rows = parse_threads(&gdb(stub.port, &["info threads"]));
        let num = |pid: i64| rows.iter().find(|r| r.pid as i64 == pid).unwrap().num;
        let out = gdb(
            stub.port,
            &[
                &format!("thread {}", num(pid)),
                &format!("x/gx {global:#x}"),
                "p/x $cr3",
                "monitor cr3",
                // A kernel thread has no user memory; kernel addresses map in every context.
                &format!("thread {}", num(2)),
                &format!("x/gx {global:#x}"),
                &format!("x/gx {init_task:#x}"),
                // monitor switch and the thread agree, until gdb selects another thread.
                &format!("monitor switch {pid}"),
                &format!("x/gx {global:#x}"),
                &format!("thread {}", num(1)),
                "monitor cr3",
            ],
        );
        let want = tk["global_value_in_memory"].as_u64();
        let cr3 = hex(&tk["cr3"]);
        let hits: Vec<_> = out.lines().filter(|l| l.starts_with(&format!("{global:#x}:"))).collect();
        assert_eq!(hits.len(), 3, "{file}\n{out}");
        assert_eq!(x_gx(hits[0], global), want, "{file}: timekeeper's thread reads its global\n{out}");
        assert!(hits[1].contains("Cannot access memory"), "{file}: kthreadd has no user memory\n{out}");
        assert_eq!(x_gx(hits[2], global), want, "{file}: after monitor switch\n{out}");
        assert!(x_gx(&out, init_task).is_some(), "{file}: init_task from a kernel thread\n{out}");
        assert!(out.contains(&format!("$1 = {cr3:#x}")), "{file}: $cr3 of timekeeper's thread\n{out}");
        assert!(
            out.contains(&format!("CR3 {cr3:#x} (thread {} (pid {pid} timekeeper))", pid + 1)),
            "{file}\n{out}"
        );
        assert!(out.contains(&format!("Thread {} in 'info threads'", pid + 1)), "{file}\n{out}");
        let init_cr3 =
            t["processes"].as_array().unwrap().iter().find(|p| p["pid"] == 1).unwrap()["cr3"].clone();
        assert!(out.contains(&format!("CR3 {:#x} (thread 2 (pid 1 init))", hex(&init_cr3))), "{file}\n{out}");
    }
}

/// drgn's view of the post-panic image: its JSON, by task address.
fn drgn_reference(dir: &std::path::Path) -> Option<(BTreeMap<u64, Value>, &'static str)> {
    let t = truth(dir, "post-panic");
    let dwarf = std::env::var_os("DMASTUB_DWARF_VMLINUX").map(PathBuf::from).filter(|p| p.is_file());
    let live = dwarf.and_then(|vmlinux| {
        let core = unpacked(dir, "post-panic.elf.zst");
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/drgn_stacks.py"))
            .args(["--core", core.to_str()?, "--vmlinux", vmlinux.to_str()?, "--frames", "12"])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "NOTE: drgn did not run ({}); using its recorded output",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout).ok()
    });
    let (json, origin) = match live {
        Some(j) => (j, "drgn, run now"),
        None => {
            let path =
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/drgn-linux-6.1-kaslr-post-panic.json");
            let j: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            (j, "drgn's recorded output")
        }
    };
    let by_addr: BTreeMap<u64, Value> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task"].is_string())
        .map(|e| (hex(&e["task"]), e.clone()))
        .collect();
    // The recording is of one build of the image: the same tasks at the same addresses.
    let same =
        t["processes"].as_array().unwrap().iter().all(|p| by_addr.contains_key(&hex(&p["task_struct"])));
    if !same {
        eprintln!("SKIP: {origin} is of another build of {FIXTURE} (task addresses differ)");
        return None;
    }
    Some((by_addr, origin))
}

/// `p/x $rip` etc. for every thread, in one gdb run: (tid → register → value).
fn thread_registers(port: u16, rows: &[Row], regs: &[&str]) -> BTreeMap<u64, BTreeMap<String, Option<u64>>> {
    let mut cmds = Vec::new();
    for r in rows {
        cmds.push(format!("thread {}", r.num));
        for reg in regs {
            cmds.push(format!("echo REG {} {reg} \n", r.tid));
            cmds.push(format!("p/x ${reg}"));
        }
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb_with(port, None, &refs, Duration::from_secs(120));
    let mut got: BTreeMap<u64, BTreeMap<String, Option<u64>>> = BTreeMap::new();
    let mut lines = out.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("REG ") else { continue };
        let mut w = rest.split_whitespace();
        let (Some(tid), Some(reg)) = (w.next().and_then(|t| t.parse().ok()), w.next()) else { continue };
        let value = lines
            .next()
            .and_then(|v| v.split(" = ").nth(1))
            .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok());
        got.entry(tid).or_default().insert(reg.to_string(), value);
    }
    got
}

#[test]
fn registers_are_where_drgns_unwinder_starts() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let Some((drgn, origin)) = drgn_reference(&dir) else { return };
    eprintln!("comparing with {origin}");
    let t = truth(&dir, "post-panic");
    let addr_of: BTreeMap<i32, u64> = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pid"].as_i64().unwrap() as i32, hex(&p["task_struct"])))
        .collect();
    for file in IMAGES {
        let stub = start(&dir, file);
        let rows = parse_threads(&gdb(stub.port, &["info threads"]));
        let regs = thread_registers(stub.port, &rows, &["rip", "rsp", "rbp"]);
        let mut sleeping = 0;
        for r in &rows {
            let d = match r.pid {
                0 => drgn
                    .values()
                    .find(|d| d["idle_cpu"].as_u64().map(|c| format!("swapper/{c}")) == Some(r.comm.clone())),
                pid => drgn.get(&addr_of[&pid]),
            };
            let d = d.unwrap_or_else(|| panic!("{file}: drgn has no task for {r:?}"));
            let running = r.marks.contains("running") || r.marks.contains("panicking");
            if running && file.contains(".raw") {
                continue; // The raw image has no CPU registers: checked by the backtrace test.
            }
            for reg in ["rip", "rsp", "rbp"] {
                let want = d["registers"][reg].as_str().map(|v| u64::from_str_radix(&v[2..], 16).unwrap());
                assert_eq!(regs[&r.tid][reg], want, "{file}: {} (pid {}) {reg}, {origin}", r.comm, r.pid);
            }
            sleeping += usize::from(!running);
        }
        assert!(sleeping >= 60, "{file}: only {sleeping} sleeping tasks compared");
    }
}

/// Function names of a `bt`, frame by frame (inlined frames included, as gdb prints them).
/// `thread N` prints frame #0 too: the last `#0` starts the backtrace.
fn bt_functions(out: &str) -> Vec<String> {
    let mut names = Vec::new();
    for l in out.lines().filter(|l| l.starts_with('#')) {
        if l.starts_with("#0 ") {
            names.clear();
        }
        let Some((_, rest)) = l.split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        let rest = rest.split_once(" in ").map(|(_, f)| f).unwrap_or(rest);
        names.extend(rest.split([' ', '(']).next().map(str::to_string));
    }
    names
}

/// The kernel frames of a drgn trace, up to and with the system-call or kthread entry.
fn drgn_functions(d: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for f in d["frames"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap_or("??").to_string();
        let end = name.starts_with("entry_SYSCALL_64") || name == "ret_from_fork";
        names.push(name);
        if end {
            break;
        }
    }
    names
}

#[test]
fn backtraces_match_drgn_frame_by_frame() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let Some(vmlinux) = std::env::var_os("DMASTUB_DWARF_VMLINUX").map(PathBuf::from).filter(|p| p.is_file())
    else {
        eprintln!(
            "SKIP: backtraces need the kernel's DWARF vmlinux: run tools/setup-full-tests.sh and set DMASTUB_DWARF_VMLINUX"
        );
        return;
    };
    let Some((drgn, origin)) = drgn_reference(&dir) else { return };
    let t = truth(&dir, "post-panic");
    let crashed = t["crashed_thread"]["tid"].as_i64().unwrap();
    let tasks: Vec<(i64, u64)> = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pid"].as_i64().unwrap(), hex(&p["task_struct"])))
        .filter(|(pid, _)| [1, 2, t["timekeeper"]["pid"].as_i64().unwrap(), crashed].contains(pid))
        .collect();
    for file in IMAGES {
        let stub = start(&dir, file);
        let rows = parse_threads(&gdb(stub.port, &["info threads"]));
        for (pid, addr) in &tasks {
            let num = rows.iter().find(|r| r.pid as i64 == *pid).unwrap().num;
            let out = gdb_with(
                stub.port,
                Some(&vmlinux),
                &[&format!("thread {num}"), "bt 20"],
                Duration::from_secs(300),
            );
            let got = bt_functions(&out);
            let mut want = drgn_functions(&drgn[addr]);
            if *pid == crashed && file.contains(".raw") {
                // Rebuilt from the panic path: the frames below panic are not in memory.
                let at = want.iter().position(|f| f == "panic").expect("drgn's trace has panic");
                want.drain(..at);
            }
            assert!(want.len() >= 5, "{file}: pid {pid}: drgn's trace is short: {want:?}");
            assert_eq!(got.get(..want.len()), Some(&want[..]), "{file}: pid {pid} bt vs {origin}\n{out}");
        }
    }
}

#[test]
fn monitor_threads_says_where_registers_came_from() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    for (file, crasher_origin) in [
        ("post-panic.raw.zst", "reconstructed: return address into panic"),
        ("post-panic.elf.zst", "cpu0 registers from the core's NT_PRSTATUS note"),
    ] {
        let stub = start(&dir, file);
        let out = gdb(stub.port, &["monitor threads"]);
        let crasher = out.lines().find(|l| l.contains(" crasher ")).unwrap_or_default();
        assert!(crasher.contains(crasher_origin), "{file}: {crasher}\n{out}");
        let tk = out.lines().find(|l| l.contains(" timekeeper ")).unwrap_or_default();
        assert!(tk.contains("saved switch frame"), "{file}: {tk}");
    }
}

fn scripts() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/gdb-scripts/dmastub.py").to_string()
}

#[test]
fn dmastub_py_lists_tasks_with_thread_numbers_and_selects_them() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let tk = &t["timekeeper"];
    let (pid, global) = (tk["pid"].as_i64().unwrap(), hex(&tk["global_virt"]));
    let stub = start(&dir, "post-panic.raw.zst");
    let rows = parse_threads(&gdb(stub.port, &["info threads"]));
    let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
    let out = gdb_with(
        stub.port,
        Some(&vmlinux),
        &[
            &format!("source {}", scripts()),
            "dmastub-ps",
            &format!("dmastub-task {pid}"),
            &format!("x/gx {global:#x}"),
            "dmastub-task 77777",
            &format!("p $task({pid})"),
        ],
        Duration::from_secs(120),
    );
    // Every task of the ground truth, with the gdb thread number `info threads` gave it.
    for p in t["processes"].as_array().unwrap() {
        let ppid = p["pid"].as_i64().unwrap();
        let num = rows.iter().find(|r| r.pid as i64 == ppid).unwrap().num;
        let row = out
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.trim_start_matches('*').split_whitespace().collect();
                w.len() > 2 && w[1] == ppid.to_string()
            })
            .unwrap_or_else(|| panic!("dmastub-ps has no pid {ppid}\n{out}"));
        assert_eq!(
            row.trim_start_matches('*').split_whitespace().next(),
            Some(num.to_string().as_str()),
            "{row}"
        );
        assert!(row.contains(p["comm"].as_str().unwrap()), "{row}");
    }
    assert!(out.lines().any(|l| l.starts_with('*') && l.contains("crasher")), "the selected thread\n{out}");
    assert!(out.contains(&format!("(Thread 1.{})]", pid + 1)), "dmastub-task switched\n{out}");
    assert_eq!(x_gx(&out, global), tk["global_value_in_memory"].as_u64(), "{out}");
    assert!(out.contains("no thread for pid 77777"), "{out}");
    // A vmlinux without debug info has no struct task_struct: said so.
    assert!(out.contains("struct task_struct is unknown"), "{out}");
}

/// Linux's own scripts/gdb through dmastub: everything that needs only memory, and the current
/// CPU as dmastub.py teaches it.
#[test]
fn linux_gdb_scripts_work_through_dmastub() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let vmlinux = std::env::var_os("DMASTUB_DWARF_VMLINUX").map(PathBuf::from).filter(|p| p.is_file());
    let lx = std::env::var_os("DMASTUB_LINUX_GDB_SCRIPTS")
        .map(PathBuf::from)
        .filter(|p| p.join("vmlinux-gdb.py").is_file());
    let (Some(vmlinux), Some(lx)) = (vmlinux, lx) else {
        eprintln!(
            "SKIP: Linux's gdb scripts need the DWARF vmlinux and scripts/gdb: run tools/setup-full-tests.sh and \
             set DMASTUB_DWARF_VMLINUX and DMASTUB_LINUX_GDB_SCRIPTS"
        );
        return;
    };
    let t = truth(&dir, "post-panic");
    let tk_pid = t["timekeeper"]["pid"].as_i64().unwrap();
    let drgn = drgn_reference(&dir);
    for file in IMAGES {
        let stub = start(&dir, file);
        let ps = gdb(stub.port, &["monitor ps"]);
        let out = gdb_with(
            stub.port,
            Some(&vmlinux),
            &[
                "monitor info version",
                &format!("source {}", scripts()),
                &format!("dmastub-symbols {}", vmlinux.display()),
                &format!("source {}/vmlinux-gdb.py", lx.display()),
                "echo LX-PS\\n",
                "lx-ps",
                "echo LX-END\\n",
                "lx-dmesg",
                "lx-version",
                "lx-cmdline",
                "lx-lsmod",
                "lx-mounts",
                "lx-iomem",
                "lx-cpus",
                "p $lx_current().pid",
                &format!("dmastub-task {tk_pid}"),
                "p $lx_current().comm",
                &format!("p $lx_task_by_pid({tk_pid}).comm"),
            ],
            Duration::from_secs(300),
        );
        // lx-ps and monitor ps: the same tasks, pid and comm.
        let section = out.split("LX-PS").nth(1).and_then(|s| s.split("LX-END").next()).unwrap_or_default();
        let lx_rows: BTreeSet<(String, String)> = section
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 3 && w[0].starts_with("0x")).then(|| (w[1].to_string(), w[2..].join(" ")))
            })
            .collect();
        let ps_rows: BTreeSet<(String, String)> = ps
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 6 && w[0].parse::<u32>().is_ok())
                    .then(|| (w[0].to_string(), w[3..w.len() - 2].join(" ")))
            })
            .collect();
        assert!(ps_rows.len() >= 60, "{file}: monitor ps\n{ps}");
        assert_eq!(lx_rows, ps_rows, "{file}: lx-ps vs monitor ps\n{out}");
        assert!(out.contains("Kernel panic - not syncing: sysrq triggered crash"), "{file}: lx-dmesg\n{out}");
        let release = t["kernel"]["release"].as_str().unwrap();
        assert!(out.contains(&format!("Linux version {release}")), "{file}: lx-version\n{out}");
        assert!(out.contains(t["kernel"]["cmdline"].as_str().unwrap()), "{file}: lx-cmdline\n{out}");
        assert!(out.contains("qemu_fw_cfg"), "{file}: lx-lsmod\n{out}");
        assert!(out.contains("rootfs / rootfs"), "{file}: lx-mounts\n{out}");
        assert!(out.contains(": System RAM") && out.contains(": Kernel code"), "{file}: lx-iomem\n{out}");
        assert!(out.contains("Possible CPUs : [0, 1]"), "{file}: lx-cpus\n{out}");
        // Not QEMU: `monitor info version` answers nothing, and the current CPU is the selected
        // task's: crasher's CPU at first, then the CPU timekeeper last ran on.
        assert!(!out.contains("unknown command 'info'"), "{file}\n{out}");
        let crashed = t["crashed_thread"]["tid"].as_i64().unwrap();
        assert!(
            out.contains(&format!("$1 = {crashed}")),
            "{file}: $lx_current() on the panicking thread\n{out}"
        );
        if let Some((drgn, _)) = &drgn {
            let tk = drgn.values().find(|d| d["pid"] == tk_pid).unwrap();
            let curr = drgn.values().find(|d| d["on_cpu"] == true && d["cpu"] == tk["cpu"]).unwrap();
            let curr = curr["comm"].as_str().unwrap();
            assert!(
                out.contains(&format!("$2 = \"{curr}\\000")),
                "{file}: $lx_current() on timekeeper's thread: {curr}\n{out}"
            );
        }
        assert!(out.contains("$3 = \"timekeeper"), "{file}\n{out}");
    }
}
