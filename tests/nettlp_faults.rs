//! The NetTLP fault matrix: `dmastub read`, `ps` and `dmesg` through the adapter emulator with
//! 10% of its completions dropped, doubled, reordered, or delayed by 10 ms or 300 ms, with tag
//! generations and with `--plain-tags`. Every command must print exactly what the same command
//! prints on `--image`, or fail with an error that says the device failed, within its
//! `--deadline`: zero wrong bytes, zero hangs.
//!
//! The ten links run side by side (each its own emulator and loopback addresses 127.0.4N.x),
//! so the whole matrix takes about as long as its slowest cell.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The overall limit given to each command (`--deadline`), and how much longer the test waits
/// before it calls the command hung.
const DEADLINE_S: u64 = 45;
const HANG_GRACE: Duration = Duration::from_secs(30);

/// A real memory image: the 6.1 raw dump when the fixtures are here, else the trimmed one.
fn image() -> PathBuf {
    if let Some(dir) = fixture_dir("linux-6.1-kaslr") {
        return unpacked(&dir, "post-panic.raw.zst");
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux-6.1-la57-trimmed");
    unpacked(&dir, "post-panic.lime.zst")
}

/// The commands of every cell: their arguments after the subcommand's source.
fn commands(read_at: u64) -> Vec<Vec<String>> {
    let read =
        vec!["read".into(), "--phys".into(), "--binary".into(), format!("{read_at:#x}"), "0x10000".into()];
    vec![read, vec!["ps".into()], vec!["dmesg".into()]]
}

/// Runs `dmastub ARGS`; `None` when it had to be killed (a hang).
fn run_bounded(args: &[String], limit: Duration) -> Option<(bool, Vec<u8>, String, Duration)> {
    let t0 = Instant::now();
    let out = tempfile(&format!("out-{}", std::process::id()), args);
    let err = tempfile(&format!("err-{}", std::process::id()), args);
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create a temp file"))
        .stderr(std::fs::File::create(&err).expect("create a temp file"))
        .spawn()
        .expect("run dmastub");
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for dmastub") {
            break Some(st);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read(&out).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    status.map(|st| (st.success(), stdout, stderr, t0.elapsed()))
}

/// A temp file name unique to these arguments.
fn tempfile(kind: &str, args: &[String]) -> PathBuf {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    args.hash(&mut h);
    std::env::temp_dir().join(format!("dmastub-faults-{kind}-{:x}", h.finish()))
}

#[test]
fn every_command_is_right_or_a_clear_error_on_every_faulty_link() {
    let img = image();
    let img_s = img.to_str().expect("utf-8 path").to_string();
    let read_at = if fixture_dir("linux-6.1-kaslr").is_some() { 0x100_0123 } else { 0x10_0123 };
    // What the image itself gives.
    let want: Vec<(Vec<String>, Vec<u8>)> = commands(read_at)
        .into_iter()
        .map(|c| {
            let mut args = c.clone();
            args.extend(["--image".to_string(), img_s.clone()]);
            let (ok, out, err, _) = run_bounded(&args, Duration::from_secs(120)).expect("the image answers");
            assert!(ok && !out.is_empty(), "{c:?} on the image: {err}");
            (c, out)
        })
        .collect();
    let faults: [(&str, &[&str]); 5] = [
        ("drop 10%", &["--drop-rate", "0.1"]),
        ("duplicate 10%", &["--duplicate", "0.1"]),
        ("reorder", &["--reorder"]),
        ("delay 10 ms", &["--delay-us", "10000"]),
        ("delay 300 ms", &["--delay-us", "300000"]),
    ];
    let t0 = Instant::now();
    let cells: Vec<_> = faults
        .iter()
        .enumerate()
        .flat_map(|(i, f)| [(i, *f, false), (i, *f, true)])
        .map(|(i, (name, extra), plain)| {
            let net = 40 + 2 * i as u8 + u8::from(plain);
            let (img_s, want) = (img_s.clone(), want.clone());
            std::thread::spawn(move || {
                let adapter = format!("127.0.{net}.2");
                let mut emu_args = extra.to_vec();
                let seed = format!("{}", net);
                emu_args.extend(["--seed", &seed]);
                let _emu = Emulator::start_with(&img_s, &adapter, &emu_args);
                let mut rows = Vec::new();
                for (cmd, want) in &want {
                    let mut args = cmd.clone();
                    args.extend(
                        ["--nettlp", &adapter, "--nettlp-local", &format!("127.0.{net}.1")].map(String::from),
                    );
                    args.extend(["--deadline".to_string(), DEADLINE_S.to_string()]);
                    if plain {
                        args.push("--plain-tags".into());
                    }
                    let limit = Duration::from_secs(DEADLINE_S) + HANG_GRACE;
                    let tags = if plain { "plain tags" } else { "generations" };
                    let cell = format!("{name}, {tags}, {}", cmd[0]);
                    let verdict = match run_bounded(&args, limit) {
                        None => Err(format!("{cell}: no answer within {limit:?} (a hang)")),
                        Some((true, out, _, took)) if out == *want => {
                            Ok(format!("{cell}: right in {took:.1?}"))
                        }
                        Some((true, out, err, _)) => Err(format!(
                            "{cell}: exit 0 with WRONG output ({} bytes, the image gives {}): {err}",
                            out.len(),
                            want.len()
                        )),
                        Some((false, _, err, took)) => {
                            // An error must say the device failed: the NetTLP reads, and why.
                            let clear =
                                err.contains("NetTLP") && (err.contains("deadline") || err.contains("tries"));
                            if clear {
                                Ok(format!("{cell}: clear error in {took:.1?}"))
                            } else {
                                Err(format!("{cell}: an error that does not say the DMA reads failed: {err}"))
                            }
                        }
                    };
                    rows.push(verdict);
                }
                rows
            })
        })
        .collect();
    let mut bad = Vec::new();
    for cell in cells {
        for row in cell.join().expect("a cell's thread") {
            match row {
                Ok(line) => eprintln!("{line}"),
                Err(line) => {
                    eprintln!("{line}");
                    bad.push(line);
                }
            }
        }
    }
    eprintln!("fault matrix: {:.1?}", t0.elapsed());
    assert!(bad.is_empty(), "{} cells failed:\n{}", bad.len(), bad.join("\n"));
}

/// Read-only over NetTLP: gdb sessions (with attempts to write memory), `monitor ps` and
/// `monitor dmesg` through `serve --nettlp` without --allow-write, and the one-shot `ps` and
/// `dmesg`: the emulator receives not one Memory Write TLP. With --allow-write the same
/// attempt does reach it (the counter counts).
#[test]
fn nothing_is_written_over_nettlp_without_allow_write() {
    use dmastub::phys::{self, OpenOptions, WriteMode};
    use dmastub_testkit::emulator::{EmulatorConfig, EmulatorHandle};
    let img = image();
    let listen = std::net::Ipv4Addr::new(127, 0, 60, 2);
    let cow = OpenOptions { write: WriteMode::CopyOnWrite, ..OpenOptions::default() };
    let emu = EmulatorHandle::spawn(
        phys::open_file(&img, &cow).expect("open the image"),
        EmulatorConfig { listen, allow_write: true, ..EmulatorConfig::default() },
    )
    .expect("start the emulator");
    let net = ["--nettlp", "127.0.60.2", "--nettlp-local", "127.0.60.1"];
    let writes = [
        "monitor phys",
        "set {long}0x100000 = 1",
        "set {char}0x100001 = 2",
        "monitor virt",
        "set {long}0xffffffff81000000 = 1",
        "monitor ps",
        "monitor dmesg 5",
    ];
    let stub = Stub::start(&net);
    let out = gdb_with(stub.port, None, &writes, Duration::from_secs(120));
    assert!(out.contains("PID"), "monitor ps did not answer: {out}");
    // gdb says the write was refused.
    assert!(out.contains("Cannot access memory at address 0x100000"), "{out}");
    drop(stub);
    for cmd in ["ps", "dmesg"] {
        let (ok, _, err) = run(&[&[cmd][..], &net[..]].concat());
        assert!(ok, "{cmd} over NetTLP: {err}");
    }
    let s = emu.stats();
    assert!(s.requests > 1000, "the emulator served too little to prove anything: {s}");
    assert_eq!(s.writes, 0, "Memory Write TLPs reached the adapter without --allow-write: {s}");
    // The control: a client that may write does reach the emulator, and is counted. (Through
    // `serve --allow-write` the tests' banner parser takes the port from the banner's last
    // colon, which a writable NetTLP banner ends with: "requester 1b:00)".)
    use dmastub::phys::PhysMem;
    use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
    let mut rw = NetTlpMem::connect(NetTlpConfig {
        adapter: listen,
        local: std::net::Ipv4Addr::new(127, 0, 60, 1),
        allow_write: true,
        ..NetTlpConfig::default()
    })
    .expect("open a client");
    rw.write(dmastub::PhysAddr(0x100000), &[1, 0, 0, 0, 0, 0, 0, 0]).expect("a posted write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.stats().writes == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(emu.stats().writes, 1, "{}", emu.stats());
}
