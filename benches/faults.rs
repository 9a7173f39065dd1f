//! The NetTLP client on a lossy link: `dmastub ps`, `dmastub dmesg`, a 1 MiB `dmastub read` and
//! a 1 MiB gdb `dump binary memory` through `serve --nettlp`, with the emulator dropping 1%,
//! 10% and 30% of its completions. Each cell: the wall time and whether the answer was right
//! (the same bytes as on `--image`), a clear error, or a hang (no answer within the limit).
//!
//! `cargo bench --bench faults`. Loopback, not a real link: the figures show how the client's
//! timeouts and retries behave, not what a real adapter gives.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE_S: u64 = 60;
const LIMIT: Duration = Duration::from_secs(90);
const READ_AT: u64 = 0x100_0000;
const READ_LEN: u64 = 1 << 20;

enum Verdict {
    Right,
    Wrong,
    Error(String),
    Hang,
}

/// Runs `cmd` with `input` on its stdin; `None` when it had to be killed.
fn bounded(mut cmd: Command) -> Option<(bool, Vec<u8>, String)> {
    let out = std::env::temp_dir().join(format!("dmastub-faults-bench-out-{}", std::process::id()));
    let err = std::env::temp_dir().join(format!("dmastub-faults-bench-err-{}", std::process::id()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("temp file"))
        .stderr(std::fs::File::create(&err).expect("temp file"))
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if t0.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let o = std::fs::read(&out).unwrap_or_default();
    let e = String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    status.map(|st| (st.success(), o, e))
}

fn last_line(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(90).collect()
}

fn main() {
    let Some(dir) = fixture_dir("linux-6.1-kaslr") else {
        println!(
            "faults: the 6.1 fixture is not here ($DMASTUB_FIXTURES or ../shared/fixtures): nothing measured"
        );
        return;
    };
    let img: PathBuf = unpacked(&dir, "post-panic.raw.zst");
    let img_s = img.to_str().expect("utf-8 path").to_string();
    let read_args = |src: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["read", "--phys", "--binary"].map(String::from).to_vec();
        a.extend(src.iter().map(|s| s.to_string()));
        a.extend([format!("{READ_AT:#x}"), format!("{READ_LEN:#x}")]);
        a
    };
    let cli = |sub: &str, src: &[&str]| -> Vec<String> {
        let mut a = vec![sub.to_string()];
        a.extend(src.iter().map(|s| s.to_string()));
        a
    };
    let image_src = ["--image", img_s.as_str()];
    let want_ps = bounded(cmd(&cli("ps", &image_src))).expect("ps on the image").1;
    let want_dmesg = bounded(cmd(&cli("dmesg", &image_src))).expect("dmesg on the image").1;
    let want_read = bounded(cmd(&read_args(&image_src))).expect("read on the image").1;
    assert_eq!(want_read.len() as u64, READ_LEN);
    println!(
        "NetTLP client with the emulator dropping completions (loopback; --deadline {DEADLINE_S}, hang = no answer in {LIMIT:?})\n"
    );
    println!("{:>5}  {:<22} {:<22} {:<22} {:<22}", "drop", "ps", "dmesg", "read 1 MiB", "gdb dump 1 MiB");
    let mut notes = Vec::new();
    for (i, rate) in ["0.01", "0.1", "0.3"].iter().enumerate() {
        let net = 70 + i as u8;
        let adapter = format!("127.0.{net}.2");
        let local = format!("127.0.{net}.1");
        let _emu = Emulator::start_with(&img_s, &adapter, &["--drop-rate", rate, "--seed", "7"]);
        let deadline = DEADLINE_S.to_string();
        let src =
            ["--nettlp", adapter.as_str(), "--nettlp-local", local.as_str(), "--deadline", deadline.as_str()];
        let mut cells = Vec::new();
        for (args, want) in
            [(cli("ps", &src), &want_ps), (cli("dmesg", &src), &want_dmesg), (read_args(&src), &want_read)]
        {
            let t0 = Instant::now();
            let v = match bounded(cmd(&args)) {
                None => Verdict::Hang,
                Some((true, out, _)) if out == *want => Verdict::Right,
                Some((true, _, _)) => Verdict::Wrong,
                Some((false, _, err)) => Verdict::Error(last_line(&err)),
            };
            cells.push((t0.elapsed(), v));
        }
        // gdb: a 1 MiB dump of physical memory through serve --nettlp, compared with the image.
        let stub = Stub::start(&src[..4]);
        let file = std::env::temp_dir().join(format!("dmastub-faults-bench-dump-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let dump = format!("dump binary memory {} {READ_AT:#x} {:#x}", file.display(), READ_AT + READ_LEN);
        let t0 = Instant::now();
        let v = match bounded(gdb_command(stub.port, None, &["monitor phys", &dump])) {
            None => Verdict::Hang,
            Some((_, out, err)) => match std::fs::read(&file) {
                Ok(bytes) if bytes == want_read => Verdict::Right,
                Ok(bytes) if bytes.len() as u64 == READ_LEN => Verdict::Wrong,
                _ => Verdict::Error(last_line(&format!("{}{err}", String::from_utf8_lossy(&out)))),
            },
        };
        cells.push((t0.elapsed(), v));
        let _ = std::fs::remove_file(&file);
        drop(stub);
        let cell = |(t, v): &(Duration, Verdict)| match v {
            Verdict::Right => format!("{:>7.2} s right", t.as_secs_f64()),
            Verdict::Wrong => format!("{:>7.2} s WRONG", t.as_secs_f64()),
            Verdict::Error(_) => format!("{:>7.2} s error", t.as_secs_f64()),
            Verdict::Hang => format!("{:>7.2} s HANG", t.as_secs_f64()),
        };
        let pct = rate.parse::<f64>().unwrap_or(0.0) * 100.0;
        println!(
            "{:>4.0}%  {:<22} {:<22} {:<22} {:<22}",
            pct,
            cell(&cells[0]),
            cell(&cells[1]),
            cell(&cells[2]),
            cell(&cells[3])
        );
        for (what, (_, v)) in ["ps", "dmesg", "read", "gdb dump"].iter().zip(&cells) {
            if let Verdict::Error(e) = v {
                notes.push(format!("{pct:.0}% {what}: {e}"));
            }
        }
    }
    for n in notes {
        println!("  {n}");
    }
}

fn cmd(args: &[String]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}
