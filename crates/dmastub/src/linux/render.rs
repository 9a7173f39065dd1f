//! The text of the Linux commands (`monitor kernel`, `ps`, `threads`, `bt`, `dmesg`, and the
//! command line's), from the data the [`Linux`](super::Linux) facade returns. Hints are named
//! by the caller's [`HintNames`].

use super::discover::Kernel;
use super::error::LinuxError;
use super::origin::{Hint, HintNames, render_remedies};
use super::printk::KernelLog;
use super::tasks::TaskList;
use super::threads::{Reg, Regs, Thread, ThreadList, reg};
use super::unwind::Backtrace;
use std::fmt::Write as _;

/// One line for the server's banner.
pub fn kernel_summary(k: &Kernel, names: HintNames) -> String {
    let release = k.release.as_ref().map_or("unknown release", |r| r.value.as_str());
    let layout = k.types.as_ref().map_or_else(
        || format!("no struct layout ({})", render_remedies(&[&[Hint::Btf], &[Hint::Profile]], names)),
        |t| format!("layout from {}", t.source()),
    );
    format!(
        "Linux {release}, KASLR slide {:#x}, {} paging, kernel CR3 {:#x}, {} symbols, {layout}; discovery read {} KiB",
        k.slide.value,
        k.paging.value,
        k.cr3.value,
        k.symbols.len(),
        k.bytes_read.div_ceil(1024)
    )
}

/// What was found and where each value came from, for `monitor kernel` and `dmastub kernel`.
pub fn kernel_report(k: &Kernel, names: HintNames) -> String {
    let mut s = String::new();
    let mut line = |key: &str, v: String, src: &str| s.push_str(&format!("{key:<17} {v:<22} ({src})\n"));
    match &k.release {
        Some(r) => line("release", r.value.clone(), &r.origin.render(names)),
        None => line("release", "unknown".into(), "no linux_banner symbol and no VMCOREINFO"),
    }
    line("kaslr slide", format!("{:#x}", k.slide.value), &k.slide.origin.render(names));
    line("_text", format!("{:#x}", k.text.value), &k.text.origin.render(names));
    match &k.phys_base {
        Some(p) => line("phys_base", format!("{:#x}", p.value), &p.origin.render(names)),
        None => line("phys_base", "unknown".into(), "not found"),
    }
    line("kernel cr3", format!("{:#x}", k.cr3.value), &k.cr3.origin.render(names));
    line("paging", k.paging.value.to_string(), &k.paging.origin.render(names));
    line(
        "page_offset_base",
        format!("{:#x}", k.page_offset_base.value),
        &k.page_offset_base.origin.render(names),
    );
    match &k.init_task {
        Some(t) => line("init_task", format!("{:#x}", t.value), &t.origin.render(names)),
        None => line(
            "init_task",
            "unknown".into(),
            &format!("no symbol: {}", render_remedies(&[&[Hint::SystemMap], &[Hint::Vmlinux]], names)),
        ),
    }
    line("symbols", format!("{}", k.symbols.len()), &k.symbols_source);
    match &k.types {
        Some(t) => line("struct layout", "found".into(), &t.source()),
        None => {
            line("struct layout", "none".into(), &render_remedies(&[&[Hint::Btf], &[Hint::Profile]], names))
        }
    }
    if let Some(v) = &k.vmcoreinfo {
        line("vmcoreinfo", format!("{} entries", v.value.entries.len()), &v.origin.render(names));
    }
    s.push_str(&format!("discovery read {} bytes of target memory\n", k.bytes_read));
    for n in &k.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s.push_str(&format!(
        "gdb: `target remote` relocates vmlinux by its segments (qOffsets), all but the per-CPU section.\n\
         every section in place, per-CPU at its link address as KASLR leaves it:\n  \
         symbol-file\n  add-symbol-file VMLINUX -o {:#x} -s .data..percpu 0\n\
         (or `dmastub-symbols VMLINUX` from gdb-scripts/dmastub.py; `{}` moves per-CPU too)\n",
        k.slide.value,
        k.symbol_file_command("VMLINUX")
    ));
    s
}

/// The table `monitor ps` and `dmastub ps` print: aligned, one task a line, then one line per
/// problem.
pub fn ps(list: &TaskList) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:>7} {:>7}  ST  {:<16} {:<18}  CR3", "PID", "PPID", "COMM", "TASK");
    for t in &list.tasks {
        let ppid = t.ppid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        let cr3 = t.cr3.map(|c| format!("{c:#x}")).unwrap_or_else(|| "-".into());
        let comm = if t.comm.is_empty() { "?" } else { &t.comm };
        let _ = writeln!(s, "{:>7} {:>7}  {}   {:<16} {:#018x}  {}", t.pid, ppid, t.state, comm, t.addr, cr3);
    }
    for p in &list.problems {
        let _ = writeln!(s, "ps: {p}");
    }
    s
}

/// `monitor threads`: one row per thread, with where its registers came from.
pub fn threads(list: &ThreadList) -> String {
    let mut s = format!("{:>8}  {:>7}  {:<16} {:<18} {:<18} REGISTERS\n", "TID", "PID", "COMM", "RIP", "RSP");
    for t in &list.threads {
        let hex = |v: Option<u64>| v.map(|v| format!("{v:#x}")).unwrap_or_else(|| "-".to_string());
        let marks = match t.marks() {
            m if m.is_empty() => m,
            m => format!("[{m}] "),
        };
        s.push_str(&format!(
            "{:>8}  {:>7}  {:<16} {:<18} {:<18} {}{}\n",
            t.tid,
            t.task.pid,
            t.task.comm,
            hex(t.regs.pc()),
            hex(t.regs.get(reg::RSP)),
            marks,
            t.origin_text()
        ));
    }
    for p in &list.problems {
        s.push_str(&format!("note: {p}\n"));
    }
    s
}

/// `monitor bt` for one thread: the thread and where its registers came from, then its frames;
/// one line when there are none.
/// An error's remedy is named with `names` (the application's flags, or [`Hint::describe`]).
pub fn backtrace(thread: &Thread, bt: Result<Backtrace, LinuxError>, names: HintNames) -> String {
    let head = format!("thread {}: {}", thread.tid, thread.describe());
    match bt {
        Ok(bt) => format!("{head}; registers: {}\n{}", thread.origin_text(), bt.render()),
        Err(why) => match render_remedies(why.remedies(), names) {
            r if r.is_empty() => format!("{head}; no backtrace: {why}\n"),
            r => format!("{head}; no backtrace: {why}; {r}\n"),
        },
    }
}

/// `bt -a`: the backtrace of the task each CPU was running ([`backtrace`], as `render_one`
/// gives it), CPU by CPU; a CPU whose running task is unknown says so.
pub fn backtraces_of_cpus(list: &ThreadList, mut render_one: impl FnMut(&Thread) -> String) -> String {
    let mut s = String::new();
    if let Some(why) = &list.truncated {
        s.push_str(&format!("bt -a: the task list was {why}\n"));
    }
    for cpu in 0..list.cpus {
        s.push_str(&format!("CPU {cpu}:\n"));
        match list.threads.iter().find(|t| t.running_on == Some(cpu)) {
            Some(t) => s.push_str(&render_one(t)),
            None => s.push_str("  no task known to run on it: its runqueue could not be read\n"),
        }
    }
    if list.cpus == 0 {
        s.push_str("bt -a: the CPUs are unknown (no per-CPU data was read)\n");
    }
    s
}

/// `dmastub bt`: [`backtrace`] of the thread [`Linux::pick_thread`](super::Linux::pick_thread)
/// chose from `list`; when it chose (no pid asked for) from a list the budget cut, says so.
pub fn bt(
    list: &ThreadList,
    thread: &Thread,
    bt: Result<Backtrace, LinuxError>,
    pid: Option<u64>,
    names: HintNames,
) -> String {
    let text = backtrace(thread, bt, names);
    // A thread chosen from a list the budget cut may not be the one asked for: say so.
    match &list.truncated {
        Some(why) if pid.is_none() => format!("bt: the task list was {why}\n{text}"),
        _ => text,
    }
}

/// `dmesg`: the kernel log, its last `lines` lines (all with `None`).
pub fn dmesg(log: &KernelLog, lines: Option<usize>) -> String {
    log.render(lines)
}

/// `monitor unwind`'s answer: one line, `caller` (or `caller entry` when entry code saved the
/// registers: the code it interrupted), then `name=0x…` for each register known, by gdb's
/// names.
pub fn unwound(regs: &Regs, entry: bool) -> String {
    let mut line = String::from(if entry { "caller entry" } else { "caller" });
    for (r, v) in regs.iter() {
        let Some(v) = v else { continue };
        let name = match r {
            Reg::FsBase => "fs_base".to_string(),
            Reg::GsBase => "gs_base".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        line.push_str(&format!(" {name}={v:#x}"));
    }
    line.push('\n');
    line
}
