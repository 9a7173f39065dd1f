//! `monitor maps` on a running machine: one real Linux guest under QEMU (the live suite's),
//! asked for every process's `/proc/PID/maps` over its control port, then paused and read from
//! its RAM file, through gdb (`serve --live`, `monitor maps PID` for every user process) and
//! the command line (`dmastub maps PID --live`): each must equal what the guest printed.
//!
//! Skips with a message where QEMU is missing, unless `CI` or `DMASTUB_LIVE_REQUIRED` is set.

mod common;

use common::{BIN, gdb_with};
use dmastub_testkit::child::DmastubChild;
use dmastub_testkit::vm::{self, GuestOptions, LiveVm};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn boot() -> Option<LiveVm> {
    let opts = GuestOptions { cache: vm::guest::default_cache_dir(), ..Default::default() };
    common::boot_live_guest("live maps", &opts)
}

/// The guest's answer to `maps`: each pid's lines (empty for kernel threads).
fn parse_guest(lines: &[String]) -> BTreeMap<i64, Vec<String>> {
    let mut map = BTreeMap::new();
    let mut cur: Option<i64> = None;
    for l in lines {
        if let Some(p) = l.strip_prefix("pid ") {
            cur = p.trim().parse().ok();
            if let Some(pid) = cur {
                map.insert(pid, Vec::new());
            }
            continue;
        }
        if let Some(v) = cur.and_then(|p| map.get_mut(&p)) {
            v.push(l.trim_end().to_string());
        }
    }
    map
}

fn trimmed(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

#[test]
fn maps_of_every_user_process_equal_the_guests_proc_maps() {
    let Some(mut vm) = boot() else { return };
    // A request written before the guest's loop has opened its port is lost (a tty drops what
    // arrives while nobody has it open): asked again once after the read timeout.
    let answer = match vm.request("maps") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("live maps: asking again: {e}");
            vm.request("maps").expect("the guest's maps")
        }
    };
    // Paused: what the guest printed stays what its memory holds (the reading `cat`s are gone;
    // the processes that stay do not change their maps while idle).
    vm.set_running(false).expect("pause the guest");
    let guest = parse_guest(&answer);
    let users: Vec<(i64, Vec<String>)> =
        guest.iter().filter(|(_, v)| !v.is_empty()).map(|(p, v)| (*p, v.clone())).collect();
    assert!(users.len() >= 3, "the guest listed only {} user processes:\n{answer:?}", users.len());
    let ram = vm.ram_path().display().to_string();
    let stub = DmastubChild::start(
        Path::new(BIN),
        &["serve".into(), "--live".into(), ram.clone(), "--listen".into(), "127.0.0.1:0".into()],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = stub.port.expect("a port in the banner");
    let mut commands = Vec::new();
    for (pid, _) in &users {
        commands.push(format!("echo <<{pid}\\n"));
        commands.push(format!("monitor maps {pid}"));
        commands.push(format!("echo {pid}>>\\n"));
    }
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    let out = gdb_with(port, None, &refs, Duration::from_secs(600));
    let mut compared = 0;
    let mut differences = Vec::new();
    for (pid, want) in &users {
        let (from, to) = (format!("<<{pid}\n"), format!("{pid}>>"));
        let start = out.find(&from).map(|i| i + from.len()).unwrap_or_else(|| panic!("no {from} in:\n{out}"));
        let end = out[start..].find(&to).map(|i| start + i).unwrap_or_else(|| panic!("no {to} in:\n{out}"));
        let got = trimmed(&out[start..end]);
        // A process that ran the control loop's `cat` may be gone: only those that are not.
        if got.first().is_some_and(|l| l.contains("no task with pid")) {
            eprintln!("pid {pid}: exited before the guest was paused");
            continue;
        }
        if &got != want {
            differences.push(format!(
                "pid {pid}:\n  guest:\n    {}\n  dmastub:\n    {}",
                want.join("\n    "),
                got.join("\n    ")
            ));
        }
        compared += 1;
    }
    assert!(differences.is_empty(), "monitor maps differs from /proc/PID/maps:\n{}", differences.join("\n"));
    assert!(compared >= 3, "only {compared} processes compared");
    // The command line too, for the first and last process; and a kernel thread.
    for (pid, want) in [users.first(), users.last()].into_iter().flatten() {
        let out = std::process::Command::new(BIN)
            .args(["maps", &pid.to_string(), "--live", &ram])
            .output()
            .expect("run dmastub maps");
        assert!(out.status.success(), "dmastub maps {pid}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(&trimmed(&String::from_utf8_lossy(&out.stdout)), want, "dmastub maps {pid}");
    }
    let out = std::process::Command::new(BIN).args(["maps", "2", "--live", &ram]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a kernel thread: it has no memory map"));
    eprintln!("live maps: {compared} processes equal the guest's /proc/PID/maps");
    vm.set_running(true).expect("resume the guest");
}
