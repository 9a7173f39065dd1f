//! Every client, every packet: real gdb (normal and extended-remote), real lldb and a raw
//! protocol client against the real binary. Each session must go on after every packet; a read
//! returns exactly the readable bytes or an error; each new client starts fresh; one client at a
//! time, and a refused one is told why.
//!
//! The synthetic machine needs no fixtures; the tests on the Linux images skip (with a message)
//! when the fixtures are absent, and the lldb tests when lldb is (unless
//! `DMASTUB_CLIENTS_REQUIRED=1`, which CI sets: then a missing lldb fails).

mod common;

use common::*;
use dmastub::testing::synthetic_machine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A minimal remote-protocol client: packets out, replies (console output skipped) in.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stub");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        RawClient { stream }
    }

    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        self.stream.write_all(format!("${body}#{sum:02x}").as_bytes()).expect("send a packet");
    }

    fn byte(&mut self) -> u8 {
        let mut b = [0u8];
        self.stream.read_exact(&mut b).expect("the stub closed the connection or timed out");
        b[0]
    }

    /// The next reply that is not console output, run-length decoded.
    fn reply(&mut self) -> String {
        loop {
            while self.byte() != b'$' {}
            let mut raw = Vec::new();
            loop {
                match self.byte() {
                    b'#' => break,
                    b => raw.push(b),
                }
            }
            self.byte();
            self.byte();
            self.stream.write_all(b"+").unwrap();
            let mut body = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'*' && i + 1 < raw.len() {
                    let last = *body.last().expect("run-length without a byte");
                    body.extend(std::iter::repeat_n(last, (raw[i + 1] - 29) as usize));
                    i += 2;
                } else if raw[i] == b'}' && i + 1 < raw.len() {
                    body.push(raw[i + 1] ^ 0x20);
                    i += 2;
                } else {
                    body.push(raw[i]);
                    i += 1;
                }
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            if text.starts_with('O') && text != "OK" {
                continue;
            }
            return text;
        }
    }

    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.reply()
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex reply")).collect()
}

/// The synthetic machine served from a raw image through its CR3; the image's bytes.
fn synthetic(dir: &Scratch, extra: &[&str]) -> (Stub, Vec<u8>, dmastub::testing::SyntheticFacts) {
    let (bytes, facts) = synthetic_machine().expect("build the synthetic machine");
    let raw = dir.0.join("m.raw");
    std::fs::write(&raw, &bytes).unwrap();
    let cr3 = format!("{:#x}", facts.cr3);
    let mut args = vec!["--image", raw.to_str().unwrap(), "--cr3", &cr3];
    args.extend_from_slice(extra);
    (Stub::start(&args), bytes, facts)
}

/// The post-panic raw image of the 6.1 fixture and its truth, or `None` (skipped).
fn post_panic() -> Option<(PathBuf, serde_json::Value)> {
    let dir = fixture_dir("linux-6.1-kaslr")?;
    Some((unpacked(&dir, "post-panic.raw.zst"), truth(&dir, "post-panic")))
}

const CLOSED: &[&str] = &[
    "Remote connection closed",
    "Remote communication error",
    "Connection reset",
    "Ignoring packet error",
    "The program is not being run",
];

fn assert_alive(what: &str, out: &str) {
    for c in CLOSED {
        assert!(!out.contains(c), "{what}: the session ended ({c}):\n{out}");
    }
}

#[test]
fn a_long_m_returns_exactly_the_readable_prefix() {
    // The synthetic machine's 1 GiB page maps physical 0.. and only its first 32 MiB are RAM:
    // a read that runs over that edge must return exactly the bytes before it.
    let dir = Scratch::new("long-m");
    let (stub, bytes, f) = synthetic(&dir, &[]);
    let edge = f.gib_page_virt + bytes.len() as u64;
    let mut c = RawClient::connect(stub.port);
    for (start, len) in [(edge - 0x1100, 0x200f6u64), (edge - 0x1fff6 - 0x100, 0x40000), (edge - 0x10, 0x20)]
    {
        let reply = c.ask(&format!("m{start:x},{len:x}"));
        assert!(
            !reply.contains('E'),
            "m {start:#x},{len:#x}: a reply with data has no error in it: {reply:.80}"
        );
        let got = unhex(&reply);
        let phys = (start - f.gib_page_virt) as usize;
        assert!(!got.is_empty() && got.len() as u64 <= len, "m {start:#x},{len:#x}: {} bytes", got.len());
        assert_eq!(got, bytes[phys..phys + got.len()], "m {start:#x},{len:#x}: bytes differ from the image");
        if got.len() as u64 == len {
            continue;
        }
        // A short reply ends where reading stops: at the edge, or at one reply's worth.
        assert!(
            phys + got.len() == bytes.len() || got.len() as u64 == dmastub::gdb::session::MAX_READ,
            "m {start:#x},{len:#x}: {:#x} bytes, neither up to the edge nor one full reply",
            got.len()
        );
    }
    // Nothing readable at all: an error, not an empty or zero-filled reply.
    let reply = c.ask(&format!("m{edge:x},200f6"));
    assert!(reply.starts_with('E'), "m past the edge: {reply:.80}");
    // A request for all of memory is answered with one reply's worth, promptly, and the session
    // goes on.
    let reply = c.ask("m0,ffffffffffffffff");
    assert!(reply.starts_with('E') || reply.len() as u64 <= 2 * dmastub::gdb::session::MAX_READ);
    assert_eq!(c.ask("qC").get(..2), Some("QC"), "the session goes on");
}

#[test]
fn the_issue_s_long_m_on_the_kernel_stack_region() {
    let Some((raw, _)) = post_panic() else { return };
    let stub = Stub::start(&["--image", raw.to_str().unwrap()]);
    let mut c = RawClient::connect(stub.port);
    let long = unhex(&c.ask("mffffce4dc040b000,200f6"));
    assert!(!long.is_empty() && long.len() < 0x200f6, "{} bytes", long.len());
    // The prefix must be what short reads of the same range return.
    let mut at = 0usize;
    while at < long.len() {
        let n = (long.len() - at).min(0x800);
        let piece = unhex(&c.ask(&format!("m{:x},{n:x}", 0xffffce4dc040b000u64 + at as u64)));
        assert_eq!(piece, long[at..at + n], "bytes at +{at:#x} differ from a short read of the same address");
        at += n;
    }
    let next = 0xffffce4dc040b000u64 + long.len() as u64;
    assert!(c.ask(&format!("m{next:x},1")).starts_with('E'), "the byte after the prefix is unreadable");
}

#[test]
fn every_resume_packet_keeps_the_session() {
    let dir = Scratch::new("resume");
    let (stub, _, f) = synthetic(&dir, &[]);
    let counter = format!("x/gx {:#x}", f.counter_virt);
    for cmds in [
        &["set scheduler-locking on", "stepi", "continue", "set scheduler-locking step", "stepi", "next"][..],
        &["continue", "continue", "stepi", "stepi"],
    ] {
        let mut all = cmds.to_vec();
        all.push(&counter);
        let out = gdb(stub.port, &all);
        assert_alive(&format!("{cmds:?}"), &out);
        assert!(out.contains("memory only"), "a resume says why it stops at once:\n{out}");
        assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "{out}");
    }
}

#[test]
fn kill_is_answered_and_the_next_client_is_served() {
    let dir = Scratch::new("kill");
    let (stub, _, f) = synthetic(&dir, &[]);
    let out = gdb(stub.port, &["kill"]);
    assert!(out.contains("killed]"), "gdb's kill gets its answer:\n{out}");
    assert!(!out.contains("Remote connection closed"), "{out}");
    // The raw packets: vKill is answered OK (no process of the machine is touched), k closes.
    let mut c = RawClient::connect(stub.port);
    assert_eq!(c.ask("vKill;1"), "OK");
    drop(c);
    let out = gdb(stub.port, &[&format!("x/gx {:#x}", f.counter_virt)]);
    assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "the next client is served:\n{out}");
}

#[test]
fn breakpoints_and_watchpoints_say_why_they_never_trigger() {
    let dir = Scratch::new("break");
    let (stub, _, f) = synthetic(&dir, &[]);
    let out = gdb(
        stub.port,
        &[
            &format!("break *{:#x}", f.banner_virt),
            &format!("watch *(long *){:#x}", f.counter_virt),
            "continue",
            "continue",
            &format!("x/gx {:#x}", f.counter_virt),
        ],
    );
    assert_alive("breakpoints, then continue", &out);
    assert!(!out.contains("Cannot access memory"), "{out}");
    assert!(!out.contains("Cannot insert"), "{out}");
    assert!(out.contains("cannot insert breakpoints or watchpoints"), "the reason, in gdb's output:\n{out}");
    assert!(out.contains(&format!("breakpoint at {:#x}", f.banner_virt)), "{out}");
    assert!(out.contains(&format!("watchpoint at {:#x}", f.counter_virt)), "{out}");
    assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "{out}");
}

/// `attach PID` and gdb's file: with kernel registers the file is vmlinux, still moved by KASLR
/// (`qOffsets`, asked again after the attach); with user registers it is the process's binary,
/// moved by its load bias (0 for the fixed-address timekeeper), so its symbols read its memory.
#[test]
fn attach_moves_gdbs_file_as_the_register_set_says() {
    let Some((raw, tr)) = post_panic() else { return };
    let Some(dir) = fixture_dir("linux-6.1-kaslr") else { return };
    let stub = Stub::start(&["--image", raw.to_str().unwrap()]);
    let ext = |file: &Path, cmds: &[&str]| {
        let mut args = vec!["-q".to_string(), "-nx".into(), "-batch".into(), file.display().to_string()];
        args.extend(["-ex".into(), format!("target extended-remote 127.0.0.1:{}", stub.port)]);
        for cmd in cmds {
            args.extend(["-ex".into(), cmd.to_string()]);
        }
        let out = Command::new("gdb").args(&args).output().expect("run gdb");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let tk = tr["timekeeper"]["pid"].as_u64().unwrap();
    let attach = format!("attach {tk}");
    let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
    let out = ext(&vmlinux, &[&attach, "p/x &init_task"]);
    let init_task = tr["init_task"]["virt"].as_str().unwrap();
    assert!(out.contains(&format!("= {init_task}")), "vmlinux is still moved by KASLR after attach:\n{out}");
    // The timekeeper has symbols, no types: its value sits 16 bytes into tk_global.
    let read = "x/gx (char *)&tk_global + 16";
    let out = ext(&dir.join("timekeeper"), &["monitor regs user", &attach, read]);
    let global = hex(&tr["timekeeper"]["global_virt"]);
    let value = tr["timekeeper"]["global_value_in_memory"].as_u64();
    assert_eq!(
        x_gx(&out, global),
        value,
        "the timekeeper's symbols read its memory, unmoved by KASLR:\n{out}"
    );
}

#[test]
fn extended_remote_keeps_the_connection() {
    let Some((raw, tr)) = post_panic() else { return };
    let stub = Stub::start(&["--image", raw.to_str().unwrap()]);
    let ext = |cmds: &[&str]| {
        let mut c = gdb_command(stub.port, None, &[]);
        let mut args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        // gdb_command puts `target remote` last before the commands: make it extended.
        let i = args.iter().position(|a| a.starts_with("target remote")).unwrap();
        args[i] = args[i].replace("target remote", "target extended-remote");
        c = Command::new("gdb");
        c.args(&args);
        for cmd in cmds {
            c.args(["-ex", cmd]);
        }
        let out = c.output().expect("run gdb");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let tk = tr["timekeeper"]["pid"].as_u64().unwrap();
    let ps_ok = |out: &str| {
        out.lines().any(|l| l.contains(" timekeeper ") && l.trim_start().starts_with(&tk.to_string()))
    };

    let out = ext(&["info os processes"]);
    let pids: Vec<u64> = out.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    for p in tr["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        assert!(pids.contains(&pid), "info os processes lacks pid {pid} ({}):\n{out}", p["comm"]);
    }

    let out = ext(&["detach", "monitor ps"]);
    assert_alive("detach", &out);
    assert!(ps_ok(&out), "monitor ps after detach:\n{out}");

    let out = ext(&[
        &format!("attach {tk}"),
        &format!("x/gx {}", tr["timekeeper"]["global_virt"].as_str().unwrap()),
        "monitor ps",
    ]);
    assert!(!out.contains("ptrace") && !out.contains("Don't know how to attach"), "{out}");
    assert_alive("attach", &out);
    let global = hex(&tr["timekeeper"]["global_virt"]);
    assert_eq!(
        x_gx(&out, global),
        tr["timekeeper"]["global_value_in_memory"].as_u64(),
        "attach PID reads memory in that task's address space:\n{out}"
    );
    assert!(ps_ok(&out), "{out}");

    let out = ext(&["run", "monitor ps"]);
    assert!(!out.contains("Starting program: /") && !out.contains("Don't know how to run"), "{out}");
    assert_alive("run", &out);
    assert!(ps_ok(&out), "{out}");

    let out = ext(&["kill", "monitor ps"]);
    assert_alive("kill in extended mode", &out);
    assert!(ps_ok(&out), "{out}");
}

#[test]
fn each_client_starts_from_the_server_s_initial_state() {
    let Some((raw, tr)) = post_panic() else { return };
    let stub = Stub::start(&["--image", raw.to_str().unwrap()]);
    let tk = &tr["timekeeper"];
    let global = hex(&tk["global_virt"]);
    let global_phys = hex(&tk["global_phys"]);
    let look = [
        "monitor cr3".to_string(),
        format!("x/gx {global:#x}"),
        format!("x/gx {global_phys:#x}"),
        "info breakpoints".to_string(),
    ];
    let look: Vec<&str> = look.iter().map(String::as_str).collect();
    let fresh = gdb(stub.port, &look);
    assert!(fresh.contains("virt mode"), "{fresh}");
    // A session that changes everything it can, then detaches.
    let changed = gdb(
        stub.port,
        &[
            &format!("monitor switch {}", tk["pid"]),
            &format!("x/gx {global:#x}"),
            "monitor phys",
            "break *0x1000",
            "detach",
        ],
    );
    assert_eq!(x_gx(&changed, global), tk["global_value_in_memory"].as_u64(), "{changed}");
    // The next client sees what the first one saw.
    let after = gdb(stub.port, &look);
    assert_eq!(after, fresh, "a new session inherits nothing from the previous one");
    assert_eq!(x_gx(&after, global_phys), None, "physical mode did not leak:\n{after}");
}

#[test]
fn one_client_at_a_time_and_the_refused_one_is_told_why() {
    let dir = Scratch::new("busy");
    let (stub, _, f) = synthetic(&dir, &["--takeover-after", "3"]);
    let read = format!("x/gx {:#x}", f.counter_virt);

    // A connection that never sends anything does not lock gdb out.
    let silent = TcpStream::connect(("127.0.0.1", stub.port)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let out = gdb(stub.port, &[&read]);
    assert_eq!(
        x_gx(&out, f.counter_virt),
        Some(f.counter_value),
        "a silent connection is taken over:\n{out}"
    );
    drop(silent);

    // An active client keeps the server; a second one is told why it cannot attach.
    let mut active = RawClient::connect(stub.port);
    assert_eq!(active.ask("qC").get(..2), Some("QC"));
    let out = gdb(stub.port, &[&read]);
    assert!(out.contains("another client") && out.contains("is attached"), "the refusal says why:\n{out}");
    assert_eq!(active.ask("qC").get(..2), Some("QC"), "the first client is still served");

    // Once it has been idle for --takeover-after, a new client takes over.
    std::thread::sleep(Duration::from_millis(3500));
    let out = gdb(stub.port, &[&read]);
    assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "an idle client is taken over:\n{out}");
    let mut b = [0u8; 1];
    active.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(active.stream.read(&mut b), Ok(0) | Err(_)), "the idle client was disconnected");
}

#[test]
fn listening_beyond_loopback_warns() {
    let dir = Scratch::new("expose");
    let (bytes, _) = synthetic_machine().unwrap();
    let raw = dir.0.join("m.raw");
    std::fs::write(&raw, &bytes).unwrap();
    let args: Vec<String> = ["serve", "--image", raw.to_str().unwrap(), "--listen", "0.0.0.0:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let child = DmastubChild::start(Path::new(BIN), &args, Duration::from_secs(60)).unwrap();
    assert!(
        child.banner.contains("WARNING") && child.banner.contains("no authentication"),
        "{}",
        child.banner
    );
    assert!(child.banner.contains("ssh"), "it shows the tunnel: {}", child.banner);
    let local = Stub::start(&["--image", raw.to_str().unwrap()]);
    assert!(!local.banner.contains("WARNING"), "{}", local.banner);
}

#[test]
fn kernel_text_on_a_live_source_is_never_stale() {
    let Some((raw, tr)) = post_panic() else { return };
    let dir = Scratch::new("live-text");
    let live = dir.copy(&raw, "ram");
    let stub = Stub::start(&["--live", live.to_str().unwrap()]);
    // A word inside kernel text, and where it is in the file.
    let text = hex(&tr["kaslr"]["text_virt"]) + 0x1000;
    let phys = hex(&tr["kaslr"]["text_phys"]) + 0x1000;
    let poke = format!(
        "shell python3 -c \"f=open('{}','r+b'); f.seek({phys}); f.write(bytes(range(0x41,0x49))); f.close()\"",
        live.display()
    );
    // Read it (kept for the burst), change the file, pause past a burst, read again: in one
    // stop, with no monitor command between.
    let out =
        gdb(stub.port, &[&format!("x/gx {text:#x}"), &poke, "shell sleep 0.3", &format!("x/gx {text:#x}")]);
    let values: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("{text:#x}"))).collect();
    assert_eq!(values.len(), 2, "{out}");
    assert!(values[1].ends_with("0x4847464544434241"), "the second read sees the file's new bytes:\n{out}");
}

/// lldb 14 when installed; `None` skips, unless CI requires it.
fn lldb() -> Option<()> {
    let ok = Command::new("lldb").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("DMASTUB_CLIENTS_REQUIRED").is_none(),
            "lldb is not installed (apt-get install lldb) and DMASTUB_CLIENTS_REQUIRED is set"
        );
        eprintln!("SKIP: lldb is not installed (apt-get install lldb)");
        return None;
    }
    Some(())
}

fn lldb_session(file: &Path, port: u16, commands: &[&str]) -> String {
    let mut c = Command::new("lldb");
    c.arg("-b").arg(file).args(["-o", &format!("gdb-remote 127.0.0.1:{port}")]);
    for cmd in commands {
        c.args(["-o", cmd]);
    }
    let start = Instant::now();
    let out = c.output().expect("run lldb");
    assert!(start.elapsed() < Duration::from_secs(120), "lldb took {:?}", start.elapsed());
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn lldb_gets_the_session_a_gdb_user_gets() {
    let Some(()) = lldb() else { return };
    let Some((raw, tr)) = post_panic() else { return };
    let dir = fixture_dir("linux-6.1-kaslr").unwrap();
    let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
    let stub = Stub::start(&["--image", raw.to_str().unwrap()]);
    let init = hex(&tr["init_task"]["virt"]);
    let g = gdb(stub.port, &[&format!("x/2gx {init:#x}")]);
    let want = x_gx(&g, init).expect("gdb reads init_task");

    let out = lldb_session(
        &vmlinux,
        stub.port,
        &[
            "memory read -f x -s 8 -c 1 &init_task",
            "register read -a",
            "process continue",
            "thread step-inst",
            "process plugin packet monitor ps",
        ],
    );
    // Symbols slid by KASLR with no extra step.
    let mem = out.split("memory read").nth(1).unwrap_or_default();
    assert!(mem.contains(&format!("{init:#x}: {want:#018x}")), "lldb's &init_task:\n{out}");
    assert!(!out.contains("0xcccccccccccccccc"), "unavailable registers are not shown as 0xcc…:\n{out}");
    assert!(out.contains("memory only"), "continue and step say why they stop at once:\n{out}");
    let after = out.split("process continue").nth(1).unwrap_or_default();
    assert!(after.contains("timekeeper"), "the session survives continue and step:\n{out}");
    assert!(!after.contains("lost connection") && !after.contains("exited"), "{out}");

    // The memory of the thread the user selects: the timekeeper's global in its thread.
    let tk = tr["timekeeper"]["pid"].as_u64().unwrap();
    let list = lldb_session(&vmlinux, stub.port, &["thread list"]);
    let index = list
        .lines()
        .find(|l| l.contains(&format!("tid = {:#06x}", tk + 1)))
        .and_then(|l| l.split('#').nth(1)?.split(':').next()?.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the timekeeper's thread in lldb's list:\n{list}"));
    let global = hex(&tr["timekeeper"]["global_virt"]);
    let out = lldb_session(
        &vmlinux,
        stub.port,
        // lldb never says which thread the user selects: a step of the selected thread stops in
        // it, and memory is read in the thread of the last stop.
        &[
            &format!("thread select {index}"),
            "thread step-inst",
            &format!("memory read -f x -s 8 -c 1 {global:#x}"),
            "process kill",
        ],
    );
    let value = tr["timekeeper"]["global_value_in_memory"].as_u64().unwrap();
    assert!(out.contains(&format!("{value:#018x}")), "the selected thread's memory:\n{out}");
    assert!(out.contains("exited with status"), "process kill is answered:\n{out}");
    // And the server serves the next client.
    let g = gdb(stub.port, &[&format!("x/2gx {init:#x}")]);
    assert_eq!(x_gx(&g, init), Some(want), "{g}");
}

#[test]
fn gdb_stays_attached_over_a_slow_link() {
    // 300 ms between a request and its completions: a 64 KiB read takes longer than gdb's
    // 2 s reply timeout, so the stub answers with what it has after 1 s and gdb asks for the
    // rest. gdb's dump must come out whole and right, with the default remote timeout.
    let dir = Scratch::new("slow-link");
    let (bytes, _) = synthetic_machine().unwrap();
    let raw = dir.0.join("m.raw");
    std::fs::write(&raw, &bytes).unwrap();
    let _emulator = Emulator::start_with(raw.to_str().unwrap(), "127.0.81.2", &["--delay-us", "300000"]);
    let stub = Stub::start(&["--nettlp", "127.0.81.2", "--nettlp-local", "127.0.81.1", "--no-linux"]);
    let out_file = dir.0.join("dump.bin");
    let (from, len) = (0x20000u64, 0x20000u64);
    let out = gdb_with(
        stub.port,
        None,
        &[&format!("dump binary memory {} {from:#x} {:#x}", out_file.display(), from + len), "monitor cr3"],
        Duration::from_secs(120),
    );
    assert_alive("a dump over a slow link", &out);
    assert!(!out.contains("Cannot access memory"), "{out}");
    let got = std::fs::read(&out_file).unwrap_or_default();
    assert_eq!(got.len() as u64, len, "the whole range was dumped:\n{out}");
    assert!(got == bytes[from as usize..(from + len) as usize], "the dump holds the image's bytes");
}
