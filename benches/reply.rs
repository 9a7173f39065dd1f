//! The reply path benchmark: CPU time of gdb and of dmastub, side by side, during gdb's
//! `dump binary memory` of 64 MiB in physical mode.
//!
//! `dmastub serve` runs as its own process (the release binary), so its CPU time is read from
//! `/proc/PID/stat` before and after each dump; gdb runs in batch mode and its CPU time comes
//! from the rusage of the reaped child. Every dump is checked against the source bytes.
//!
//! Run: `cargo bench --bench reply` (needs gdb). Cases: 64 MiB of random bytes (every reply
//! is full-length hex: the worst case for the reply writer), and, when the fixtures are there,
//! 64 MiB of a real Linux image (zero pages and kernel data: run-length encoding pays).
//! Prints numbers; asserts nothing about time.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

// The integration tests' helpers: the binary, fixtures and child processes live in one place.
#[path = "../tests/common/mod.rs"]
mod common;
use common::DmastubChild;

const MIB: u64 = 1 << 20;
const DUMP: u64 = 64 * MIB;
/// Dumps per case; each is printed, and the median summarises.
const RUNS: usize = 3;

fn main() {
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("gdb is not installed: nothing to measure (apt-get install gdb)");
        return;
    }
    println!("dmastub reply benchmark: gdb `dump binary memory` of 64 MiB, CPU time (user + system)");
    let dir = std::env::temp_dir().join(format!("dmastub-bench-reply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let random = dir.join("random.raw");
    let mut bytes = vec![0u8; DUMP as usize];
    dmastub::testing::XorShift::new(0x5eed).fill(&mut bytes);
    std::fs::write(&random, &bytes).expect("write the random image");
    drop(bytes);
    case("random bytes (raw image, physical 0..64 MiB)", &random, 0);

    match common::fixture_dir("linux-6.1-kaslr") {
        Some(fixture) => {
            let image = common::unpacked(&fixture, "post-panic.raw.zst");
            case("linux-6.1-kaslr post-panic.raw (physical 16..80 MiB)", &image, 16 * MIB);
        }
        None => println!("\n(fixtures not found: set DMASTUB_FIXTURES for the real-image case)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serves `image` with the release binary and dumps 64 MiB from `start` with gdb, `RUNS` times.
fn case(title: &str, image: &Path, start: u64) {
    println!("\n{title}:");
    let args: Vec<String> = ["serve", "--image"]
        .into_iter()
        .map(String::from)
        .chain([image.display().to_string()])
        .chain(["--image-format", "raw", "--no-linux", "--listen", "127.0.0.1:0"].map(String::from))
        .collect();
    let server = DmastubChild::start(Path::new(common::BIN), &args, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = server.port.expect("the banner names the port");
    let want = read_range(image, start, DUMP);
    let out = image.with_extension("dump");
    let mut ratios = Vec::new();
    for run in 1..=RUNS {
        let _ = std::fs::remove_file(&out);
        let before = proc_cpu(server.pid());
        let gdb = gdb_dump(port, &out, start);
        // The server has sent everything once gdb has it; give its detach a moment.
        std::thread::sleep(Duration::from_millis(100));
        let after = proc_cpu(server.pid());
        let got = std::fs::read(&out).unwrap_or_default();
        if got != want {
            println!(
                "  run {run}: the dump differs from the source ({} of {} bytes); gdb printed:\n{}",
                got.len(),
                want.len(),
                gdb.output
            );
            return;
        }
        let stub = (after.0 - before.0, after.1 - before.1);
        let (g, s) = (gdb.user + gdb.system, stub.0 + stub.1);
        let ratio = s / g;
        ratios.push((ratio, g, s));
        println!(
            "  run {run}: gdb {g:.2} s ({:.2} user + {:.2} sys), dmastub {s:.2} s ({:.2} user + {:.2} sys) \
             ({ratio:.2}x), wall {:.2} s",
            gdb.user, gdb.system, stub.0, stub.1, gdb.wall
        );
    }
    let (ratio, g, s) = common::median(&ratios);
    println!("  median: gdb {g:.2} s, dmastub {s:.2} s ({ratio:.2}x of gdb's CPU time)");
    let _ = std::fs::remove_file(&out);
}

/// `len` bytes of `path` from `start`.
fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).expect("open the image");
    f.seek(SeekFrom::Start(start)).expect("seek the image");
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf).expect("read the image");
    buf
}

/// One gdb run: its CPU time (seconds) and output.
struct GdbRun {
    user: f64,
    system: f64,
    wall: f64,
    output: String,
}

/// gdb in batch mode: connect, dump `[start, start + DUMP)` to `out`, detach.
fn gdb_dump(port: u16, out: &Path, start: u64) -> GdbRun {
    let before = children_cpu();
    let mut cmd = Command::new("gdb");
    cmd.args(["-q", "-nx", "-batch"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")])
        .args(["-ex", &format!("dump binary memory {} {start:#x} {:#x}", out.display(), start + DUMP)])
        .args(["-ex", "detach"]);
    let m = common::measure(&mut cmd, "");
    let after = children_cpu();
    GdbRun {
        user: after.0 - before.0,
        system: after.1 - before.1,
        wall: m.wall.as_secs_f64(),
        output: format!("{}{}", m.stdout, m.stderr),
    }
}

/// User and system CPU seconds of the reaped children of this process.
fn children_cpu() -> (f64, f64) {
    // SAFETY: a plain struct the kernel fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes only `usage`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// User and system CPU seconds of process `pid` so far, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server runs");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / ticks;
    (field(14), field(15))
}
