//! File sources under real gdb: a live RAM file that shrinks or vanishes while it is served (the
//! server lived through it once it stopped mapping files: a mapped file past its new end was
//! SIGBUS), FIFOs refused at once, and proof that serving a file never changes it.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FIXTURE: &str = "linux-6.1-kaslr";

/// The state letter of process `pid` from /proc (`Z` once it died and is not yet reaped), or
/// `None` once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

fn start_serve(args: &[&str]) -> DmastubChild {
    let mut full: Vec<String> = vec!["serve".into()];
    full.extend(args.iter().map(|a| a.to_string()));
    full.extend(["--listen".into(), "127.0.0.1:0".into()]);
    DmastubChild::start(Path::new(BIN), &full, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"))
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open to truncate")
        .set_len(len)
        .expect("truncate");
}

/// `serve --live F`, then F shrinks to 1 MiB while gdb reads: reads of what is gone are errors
/// with the reason, the server stays up for this and the next session, and once F is deleted
/// what the open file still holds keeps reading.
#[test]
fn a_live_file_that_shrinks_or_vanishes_keeps_the_server_up() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let scratch = Scratch::new("shrink");
    let live = scratch.copy(&unpacked(&dir, "post-panic.raw.zst"), "guest.ram");
    let bytes = std::fs::read(&live).expect("read the copy");
    let server = start_serve(&["--live", live.to_str().unwrap()]);
    let port = server.port.expect("port");
    let out = gdb(port, &["monitor phys", "x/2gx 0x2000000", "monitor ps"]);
    assert!(out.contains("timekeeper"), "before the truncation\n{out}");

    truncate(&live, 1 << 20);
    let out = gdb(port, &["monitor phys", "x/2gx 0x2000000", "x/2gx 0x1000", "monitor kernel", "monitor ps"]);
    assert_eq!(proc_state(server.pid()).map(|s| s != 'Z'), Some(true), "the server died\n{out}");
    assert!(out.contains("Cannot access memory at address 0x2000000"), "{out}");
    let at_1000 = u64::from_le_bytes(bytes[0x1000..0x1008].try_into().unwrap());
    assert_eq!(x_gx(&out, 0x1000), Some(at_1000), "below the new end still reads\n{out}");

    // The reason reaches the user: `dmastub read` opens the file as it is now, so ask the
    // server, whose monitor prints the read error.
    let out = gdb(port, &["monitor vtop 0xffffffff81000000"]);
    assert!(out.contains("is beyond the live RAM file's current end"), "{out}");
    assert!(out.contains("(now 1 MiB, 256 MiB when opened: it shrank)"), "{out}");

    std::fs::remove_file(&live).expect("delete the live file");
    let out = gdb(port, &["monitor phys", "x/2gx 0x1000", "x/gx 0x3000000"]);
    assert_eq!(x_gx(&out, 0x1000), Some(at_1000), "after deletion\n{out}");
    assert!(out.contains("Cannot access memory at address 0x3000000"), "{out}");
    assert_eq!(proc_state(server.pid()).map(|s| s != 'Z'), Some(true), "the server died\n{out}");
}

/// `ps`, `dmesg` and `kernel --live F` with F truncated while they run: each ends by itself
/// with a status (success, or an error that says what), never killed by a signal.
#[test]
fn one_shot_commands_on_a_live_file_truncated_mid_run_exit_cleanly() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let scratch = Scratch::new("midrun");
    let src = unpacked(&dir, "post-panic.raw.zst");
    let mut signalled = Vec::new();
    let mut errors = 0;
    for (i, cmd) in ["ps", "dmesg", "kernel", "ps", "kernel", "dmesg"].iter().enumerate() {
        let live = scratch.copy(&src, "guest.ram");
        let mut child = Command::new(BIN)
            .args([cmd, "--live", live.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run dmastub");
        // Spread the cut over discovery: 0 to 50 ms in.
        std::thread::sleep(Duration::from_millis(10 * i as u64));
        truncate(&live, 1 << 20);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "dmastub {cmd} --live hung after the truncation");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        if status.code().is_none() {
            signalled.push(format!("{cmd}: {status}\n{err}"));
        } else if !status.success() {
            errors += 1;
            assert!(err.contains("dmastub"), "{cmd} failed with nothing said\n{err}");
        }
    }
    assert!(signalled.is_empty(), "killed by a signal:\n{}", signalled.join("\n"));
    eprintln!("{errors} of 6 runs ended with an error (the rest finished before the cut)");
}

/// A FIFO as --image or --live: refused at once, with what to do instead (it used to block
/// forever in open, waiting for a writer).
#[test]
fn a_fifo_is_refused_at_once() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.0.join("memory.pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(st.success());
    for source in ["--image", "--live"] {
        let mut child = Command::new(BIN)
            .args(["read", source, fifo.to_str().unwrap(), "--phys", "0x1000", "16"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run dmastub");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dmastub read {source} FIFO still blocked after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        assert_eq!(status.code(), Some(1), "{source}: {status}\n{err}");
        assert!(err.contains(&format!("{}: a FIFO (named pipe)", fifo.display())), "{source}: {err}");
        assert!(err.contains("save the stream to a file first"), "{source}: {err}");
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// The access mode of every descriptor `pid` holds open on `path` (0 = O_RDONLY), from
/// /proc/PID/fdinfo.
fn open_modes(pid: u32, path: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(path).expect("canonical path");
    let mut modes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list the server's fds").flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(want.as_path()) {
            continue;
        }
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                .expect("read fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .expect("flags in fdinfo");
        modes.push(flags & libc::O_ACCMODE as u32);
    }
    modes
}

/// A LiME dump of the raw image `raw`: its RAM below 640 KiB and from 1 MiB on, as two ranges.
fn lime_from_raw(raw: &Path, dst: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let size = std::fs::metadata(raw).expect("stat raw").len();
    let mut src = std::fs::File::open(raw).expect("open raw");
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).expect("create LiME"));
    for (start, end) in [(0u64, 0xa0000u64), (0x100000, size)] {
        out.write_all(&0x4C69_4D45u32.to_le_bytes()).unwrap();
        out.write_all(&1u32.to_le_bytes()).unwrap();
        out.write_all(&start.to_le_bytes()).unwrap();
        out.write_all(&(end - 1).to_le_bytes()).unwrap();
        out.write_all(&[0; 8]).unwrap();
        src.seek(SeekFrom::Start(start)).unwrap();
        std::io::copy(&mut (&mut src).take(end - start), &mut out).expect("copy a range");
    }
    out.flush().unwrap();
}

/// Every file source kind served to gdb sessions that try to write (`set {long}ADDR = 1` in
/// virtual and physical mode, `restore`) and run monitor commands: the file's SHA-256 is the same
/// afterwards, the writes were refused, and without --allow-write the server holds the file open
/// read-only.
#[test]
fn serving_a_file_never_changes_it() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let scratch = Scratch::new("readonly");
    let raw = scratch.copy(&unpacked(&dir, "post-panic.raw.zst"), "post-panic.raw");
    let elf = scratch.copy(&unpacked(&dir, "post-panic.elf.zst"), "post-panic.elf");
    let lime = scratch.0.join("post-panic.lime");
    lime_from_raw(&raw, &lime);
    let live = scratch.copy(&raw, "guest.ram");
    let t = truth(&dir, "post-panic");
    let global = hex(&t["timekeeper"]["global_virt"]);
    let gp = hex(&t["timekeeper"]["global_phys"]);
    let cr3 = hex(&t["timekeeper"]["cr3"]);
    let patch = scratch.0.join("patch.bin");
    std::fs::write(&patch, [0x55u8; 64]).unwrap();
    for (flag, file) in [("--image", &raw), ("--image", &elf), ("--image", &lime), ("--live", &live)] {
        let before = sha256(file);
        let server = start_serve(&[flag, file.to_str().unwrap()]);
        let port = server.port.expect("port");
        assert_eq!(open_modes(server.pid(), file), vec![0], "{flag} {}: not opened O_RDONLY", file.display());
        let out = gdb(
            port,
            &[
                "monitor kernel",
                "monitor ps",
                "monitor dmesg 3",
                &format!("monitor set-cr3 {cr3:#x}"),
                &format!("monitor vtop {global:#x}"),
                &format!("set {{long}}{global:#x} = 1"),
                &format!("x/gx {global:#x}"),
                "monitor phys",
                &format!("set {{long}}{gp:#x} = 1"),
                &format!("set {{char}}{:#x} = 0x41", gp + 3),
                &format!("restore {} binary {gp:#x}", patch.display()),
                &format!("x/gx {gp:#x}"),
                "monitor help",
                "monitor no-such-command",
            ],
        );
        assert!(out.contains("timekeeper"), "{flag} {}: monitor ps\n{out}", file.display());
        let refused = out.matches("Cannot access memory at address").count();
        assert!(refused >= 3, "{flag} {}: writes not refused\n{out}", file.display());
        let global_value = t["timekeeper"]["global_value_in_memory"].as_u64();
        assert_eq!(x_gx(&out, global), global_value, "{out}");
        assert_eq!(x_gx(&out, gp), global_value, "{out}");
        assert_eq!(open_modes(server.pid(), file), vec![0], "{}", file.display());
        drop(server);
        assert_eq!(sha256(file), before, "{flag} {} changed", file.display());
    }
}
