//! Soak: does the server's resident memory stay flat under a long mixed load, and under random
//! packets?
//!
//! Two parts, each against a real `dmastub serve` child, speaking the remote protocol directly
//! (many more requests per second than gdb would send):
//!
//! * **live**: random memory reads (physical and virtual, 1 byte to 64 KiB), monitor commands
//!   (`ps`, `dmesg`, `kernel`, `vtop`, `cr3`, `phys`/`virt`), thread lists and registers, in
//!   sessions of 200 requests, for `--minutes`, against `--live` on the demo's QEMU guest when
//!   it can boot (QEMU installed), else against `--live` on a copy of the 6.1 fixture's raw image
//!   that a thread keeps rewriting with pages of the pre- and post-panic images.
//! * **packets**: well-framed packets with random payloads (`m`, `x`, `M`, `X`, `Z`/`z`,
//!   `qXfer`, `vFile`, `qRcmd`, `G`, `P`, very long ones, garbage) against `serve --image` on the
//!   fixture's raw image.
//!
//! Prints the server's VmRSS (and its anonymous and file-backed parts) at the start, every
//! minute (every 1000 packets) and at the end, with the requests done and how they ended. Asserts
//! nothing about time.
//!
//! ```sh
//! cargo bench --bench soak -- --minutes 10                 # both parts
//! cargo bench --bench soak -- --minutes 1 --only packets --packets 5000
//! cargo bench --bench soak -- --bin /path/to/other/dmastub  # another build, same load
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "soak/live.rs"]
mod live;
#[path = "soak/packets.rs"]
mod packets;
#[path = "soak/rsp.rs"]
mod rsp;

use common::*;
use dmastub::testing::XorShift;
use live::live;
use packets::packets;
use rsp::{Outcome, Rsp, Tally, escape, hex, monitor};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FIXTURE: &str = "linux-6.1-kaslr";
const MIB: u64 = 1 << 20;

struct Args {
    minutes: f64,
    packets: u64,
    only: Option<String>,
    bin: PathBuf,
    seed: u64,
}

fn args() -> Args {
    let mut a =
        Args { minutes: 10.0, packets: 20_000, only: None, bin: PathBuf::from(BIN), seed: 0x5eed_0fd4_a57b };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--minutes" => a.minutes = val("--minutes").parse().expect("--minutes: a number"),
            "--packets" => a.packets = val("--packets").parse().expect("--packets: a count"),
            "--only" => a.only = Some(val("--only")),
            "--bin" => a.bin = PathBuf::from(val("--bin")),
            "--seed" => a.seed = val("--seed").parse().expect("--seed: a number"),
            "--bench" => {}
            other => panic!(
                "unknown argument {other} (--minutes M, --packets N, --only live|packets, --bin PATH, --seed N)"
            ),
        }
    }
    a
}

fn main() {
    let a = args();
    println!("dmastub soak benchmark: server {}", a.bin.display());
    let Some(dir) = fixture_dir(FIXTURE) else {
        println!("fixtures not found: set DMASTUB_FIXTURES");
        return;
    };
    if a.only.as_deref().is_none_or(|o| o == "packets") {
        packets(&a, &dir);
    }
    if a.only.as_deref().is_none_or(|o| o == "live") {
        live(&a, &dir);
    }
}

/// The tests' one seeded generator, with the picks the load needs.
struct Rng(XorShift);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(XorShift::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Random bytes, fewer than `max` of them.
    fn bytes_upto(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
}

/// The memory figures of process `pid` from /proc/PID/status, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    rss: u64,
    anon: u64,
    file: u64,
    hwm: u64,
}

fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Rss {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
        hwm: field("VmHWM:")?,
    })
}

fn show(r: Option<Rss>) -> String {
    match r {
        Some(r) => format!(
            "VmRSS {:7.1} MiB (anon {:6.1}, file {:6.1}), peak {:7.1} MiB",
            r.rss as f64 / 1024.0,
            r.anon as f64 / 1024.0,
            r.file as f64 / 1024.0,
            r.hwm as f64 / 1024.0
        ),
        None => "process gone".to_string(),
    }
}

fn serve(bin: &Path, args: &[&str]) -> DmastubChild {
    let mut full: Vec<String> = vec!["serve".into()];
    full.extend(args.iter().map(|a| a.to_string()));
    full.extend(["--listen".into(), "127.0.0.1:0".into()]);
    DmastubChild::start(bin, &full, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"))
}
