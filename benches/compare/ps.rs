//! The process list: `dmastub ps` against drgn and crash.

use super::*;

/// How crash is asked for the process list: `ps`, or (when its `ps` cannot read this kernel's
/// task table) a walk of init_task's task list.
pub(super) const CRASH_PS: &str = "ps\nexit\n";
pub(super) const CRASH_LIST: &str = "list task_struct.tasks -S task_struct.pid,comm -h init_task\nexit\n";

pub(super) fn compare_ps(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("process list");
    println!("\n== 2. {} ==", c.title);
    let ours_cmd = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["ps", "--image"]).arg(&fx.elf);
        cmd
    };
    let first = measure(&mut ours_cmd(), "");
    let want = pids(&first.stdout);
    if !first.success || want.is_empty() {
        c.skip(format!("dmastub ps --image {} failed: {}", fx.elf.display(), first.stderr.trim()));
        return c;
    }
    println!("  dmastub ps --image {}: {} tasks", fx.elf.display(), want.len());
    let vmlinux = dwarf_vmlinux();
    let setup = "eval \"$(tools/setup-full-tests.sh)\" installs drgn 0.3.0 in a venv, fetches Debian's \
                 DWARF vmlinux and sets PATH and DMASTUB_DWARF_VMLINUX";
    let vm = match &vmlinux {
        Some(v) => v.clone(),
        None => {
            c.skip(format!(
                "drgn and crash need the kernel's DWARF vmlinux: DMASTUB_DWARF_VMLINUX is unset ({setup})"
            ));
            return c;
        }
    };
    // Each peer: its command, its stdin, and whether its listing has dmastub's PIDs.
    let drgn = if !have_drgn() {
        c.skip(format!("drgn is not on PATH ({setup})"));
        None
    } else {
        let m = measure(&mut drgn_command(&fx.elf, &vm, DRGN_PS), "");
        let got = pids(&m.stdout);
        if same_tasks(&want, &got) {
            println!(
                "  drgn for_each_task: {} tasks, the same PIDs (it does not visit PID 0, the idle task)",
                got.len()
            );
            Some(m)
        } else {
            c.skip(format!("drgn's list has other PIDs than dmastub's: {}", set_diff(&want, &got)));
            None
        }
    };
    let crash_cmd = || {
        let mut cmd = Command::new("crash");
        cmd.arg("-s").arg(&vm).arg(&fx.elf);
        cmd
    };
    let mut crash: Option<(Measured, &str, &str)> = None;
    if version("crash", &["--version"]).is_none() {
        c.skip("crash is not installed (apt-get install crash)".into());
    } else {
        let m = measure(&mut crash_cmd(), CRASH_PS);
        let got = pids(&m.stdout);
        if same_tasks(&want, &got) {
            println!("  crash ps: {} tasks, the same PIDs", got.len());
            crash = Some((m, CRASH_PS, "ps"));
        } else {
            let why = if format!("{}{}", m.stdout, m.stderr).contains("not found in PID hash") {
                " (crash before 8.0.4 reads no task table from a kernel whose struct pid ends in a flexible \
                 numbers[], as this 6.1 stable kernel's does; crash commit 8858006)"
            } else {
                ""
            };
            let note = format!(
                "crash's ps listed {} of dmastub's {} PIDs{why}; timing crash's walk of init_task's task list \
                 instead (list task_struct.tasks -S task_struct.pid,comm -h init_task)",
                got.len(),
                want.len()
            );
            println!("  note: {note}");
            c.data["crash_note"] = json!(note);
            c.data["crash_ps_listed"] = json!(got.len());
            let m = measure(&mut crash_cmd(), CRASH_LIST);
            let got = pids(&m.stdout);
            if same_tasks(&want, &got) {
                println!("  crash list: {} tasks, the same PIDs", got.len());
                crash = Some((m, CRASH_LIST, "list -S pid,comm"));
            } else {
                c.skip(format!("crash's task list has other PIDs than dmastub's: {}", set_diff(&want, &got)));
            }
        }
    }
    // The runs that checked the PIDs are the first samples; then the rest, interleaved.
    let mut ours = vec![first];
    let mut theirs_drgn: Vec<Measured> = drgn.into_iter().collect();
    let (crash, crash_input, crash_how) = match crash {
        Some((m, input, how)) => (vec![m], input, how),
        None => (Vec::new(), "", ""),
    };
    let mut theirs_crash = crash;
    for round in 1..PS_ROUNDS {
        ours.push(measure(&mut ours_cmd(), ""));
        if !theirs_drgn.is_empty() {
            theirs_drgn.push(measure(&mut drgn_command(&fx.elf, &vm, DRGN_PS), ""));
        }
        if !theirs_crash.is_empty() && round < CRASH_ROUNDS {
            theirs_crash.push(measure(&mut crash_cmd(), crash_input));
        }
    }
    let ours = stats(&ours);
    ours.print("dmastub ps, no hints");
    c.data["dmastub"] = ours.json();
    c.data["dmastub"]["tasks"] = json!(want.len());
    let crash_name = if crash_input == CRASH_LIST { "crash (task-list walk)" } else { "crash" };
    for (peer, name, runs, how) in [
        ("drgn", "drgn", &theirs_drgn, "drgn for_each_task, DWARF vmlinux".to_string()),
        ("crash", crash_name, &theirs_crash, format!("crash {crash_how}, DWARF vmlinux")),
    ] {
        if runs.is_empty() {
            continue;
        }
        let theirs = stats(runs);
        theirs.print(&how);
        // drgn indexes DWARF on every CPU, so its wall time depends on whether the machine is idle.
        println!(
            "    CPU time {:.1}x dmastub's, wall time {:.1}x",
            theirs.cpu.as_secs_f64() / ours.cpu.as_secs_f64(),
            theirs.wall.as_secs_f64() / ours.wall.as_secs_f64()
        );
        c.data[peer] = theirs.json();
        c.data[peer]["how"] = json!(how);
        c.figures.extend(ours.against(
            &theirs,
            "ps",
            name,
            [Some((10.0, "ps at least 10x faster")), Some((10.0, "ps with a tenth of the peak memory"))],
        ));
    }
    c.caption = Some(match c.data.get("crash_ps_listed") {
        Some(n) => format!(
            "the same ELF core, whole processes, {} tasks; {}'s ps lists {n} of them on this kernel, so crash \
             walks init_task's list",
            want.len(),
            version("crash", &["--version"]).unwrap_or_default()
        ),
        None => format!(
            "the same ELF core, whole processes, {} tasks; drgn and crash with the DWARF vmlinux",
            want.len()
        ),
    });
    c
}

/// Whether a peer listed dmastub's tasks. PID 0 aside: drgn's for_each_task starts after
/// init_task (the idle task of CPU 0), which dmastub and crash list.
pub(super) fn same_tasks(want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> bool {
    want.iter().filter(|&&p| p != 0).eq(got.iter().filter(|&&p| p != 0))
}

pub(super) fn set_diff(want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> String {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    format!("{} PIDs, missing {missing:?}, extra {extra:?}", got.len())
}
