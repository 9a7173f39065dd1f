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

use common::*;
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

/// xorshift64*: a seeded, reproducible stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
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

fn frame(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let mut v = Vec::with_capacity(body.len() + 4);
    v.push(b'$');
    v.extend_from_slice(body);
    v.extend_from_slice(format!("#{sum:02x}").as_bytes());
    v
}

/// How one request ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A reply that is not an error.
    Ok,
    /// An error reply (`E..`) or an empty one (not supported).
    Refused,
    /// No reply within the deadline, or the connection closed.
    Lost(String),
}

/// A remote-protocol client over TCP.
struct Rsp {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Rsp {
    fn connect(port: u16) -> std::io::Result<Rsp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Rsp { s, buf: Vec::new() })
    }

    /// One reply packet's body (acks skipped, the reply acked).
    fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == b'$')
                && let Some(hash) = self.buf[start..].iter().position(|&b| b == b'#').map(|h| h + start)
                && self.buf.len() >= hash + 3
            {
                let body = self.buf[start + 1..hash].to_vec();
                self.buf.drain(..hash + 3);
                self.s.write_all(b"+")?;
                return Ok(body);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("no reply in 30 s"));
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `body` and reads its reply; console output (`O` packets, as `qRcmd` sends) is
    /// collected until the final reply.
    fn request(&mut self, body: &[u8]) -> Outcome {
        if let Err(e) = self.s.write_all(&frame(body)) {
            return Outcome::Lost(format!("send: {e}"));
        }
        loop {
            match self.reply() {
                Ok(r)
                    if r.len() > 1
                        && r[0] == b'O'
                        && r != b"OK"
                        && r[1..].iter().all(u8::is_ascii_hexdigit) =>
                {
                    continue;
                }
                Ok(r) if r.is_empty() || (r[0] == b'E' && r.len() == 3) => return Outcome::Refused,
                Ok(_) => return Outcome::Ok,
                Err(e) => return Outcome::Lost(e.to_string()),
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn monitor(cmd: &str) -> Vec<u8> {
    format!("qRcmd,{}", hex(cmd.as_bytes())).into_bytes()
}

/// Escapes binary data for `X` packets.
fn escape(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len());
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            v.extend_from_slice(&[b'}', b ^ 0x20]);
        } else {
            v.push(b);
        }
    }
    v
}

/// A random well-framed packet body: the kinds gdb sends, with random (often absurd) fields.
fn random_packet(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let addr = |rng: &mut Rng| match rng.below(4) {
        0 => rng.below(256 * MIB),
        1 => 0xffff_8880_0000_0000 + rng.below(256 * MIB),
        2 => 0xffff_ffff_8000_0000 + rng.below(1 << 31),
        _ => rng.next(),
    };
    let len = |rng: &mut Rng| match rng.below(4) {
        0 => rng.below(64),
        1 => rng.below(0x20000),
        2 => rng.below(1 << 32),
        _ => rng.next(),
    };
    match rng.below(18) {
        0 | 1 => ("m", format!("m{:x},{:x}", addr(rng), len(rng)).into_bytes()),
        2 => ("x", format!("x{:x},{:x}", addr(rng), len(rng)).into_bytes()),
        3 => {
            let n = rng.below(0x8000) as usize;
            let claimed = if rng.below(2) == 0 { n as u64 } else { len(rng) };
            ("M", format!("M{:x},{claimed:x}:{}", addr(rng), hex(&rng.bytes(n))).into_bytes())
        }
        4 => {
            let data = rng.bytes_upto(0xf000);
            let mut v = format!("X{:x},{:x}:", addr(rng), data.len()).into_bytes();
            v.extend_from_slice(&escape(&data));
            ("X", v)
        }
        5 => {
            let z = if rng.below(2) == 0 { 'Z' } else { 'z' };
            ("Z", format!("{z}{},{:x},{}", rng.below(5), addr(rng), rng.below(16)).into_bytes())
        }
        6 => {
            let annex = *rng.pick(&[
                "features:read:target.xml",
                "features:read:64bit-core.xml",
                "features:read:nonexistent.xml",
                "threads:read:",
                "exec-file:read:",
                "libraries:read:",
                "memory-map:read:",
                "auxv:read:",
            ]);
            ("qXfer", format!("qXfer:{annex}:{:x},{:x}", len(rng), len(rng)).into_bytes())
        }
        7 => {
            let op = match rng.below(5) {
                0 => format!("vFile:open:{},0,0", hex(&rng.bytes_upto(300))),
                1 => format!("vFile:pread:{:x},{:x},{:x}", rng.below(8), len(rng), len(rng)),
                2 => format!("vFile:close:{:x}", rng.below(8)),
                3 => format!("vFile:setfs:{}", rng.below(100)),
                _ => format!("vFile:readlink:{}", hex(b"/proc/self/exe")),
            };
            ("vFile", op.into_bytes())
        }
        8 | 9 => {
            let cmd = match rng.below(8) {
                0 => "ps".to_string(),
                1 => format!("dmesg {}", rng.below(2000)),
                2 => format!("vtop {:#x}", addr(rng)),
                3 => format!("set-cr3 {:#x}", addr(rng)),
                4 => format!("switch {}", rng.below(200)),
                5 => rng.pick(&["kernel", "cr3", "help", "phys", "virt", "stats", "flush"]).to_string(),
                6 => String::from_utf8_lossy(&rng.bytes_upto(200)).into_owned(),
                _ => format!("dmesg {}", rng.next()),
            };
            ("qRcmd", monitor(&cmd))
        }
        10 => {
            // Very long: up to beyond the 128 KiB packet buffer.
            let n = rng.below(0x30000) as usize;
            ("long", format!("m{:x},{:x};{}", addr(rng), len(rng), "a".repeat(n)).into_bytes())
        }
        11 => ("G", format!("G{}", hex(&rng.bytes_upto(2000))).into_bytes()),
        12 => ("P", format!("P{:x}={}", rng.below(200), hex(&rng.bytes_upto(20))).into_bytes()),
        13 => {
            let t = rng.below(300);
            let p = *rng.pick(&["Hg", "Hc", "T", "qThreadExtraInfo,"]);
            ("H/T", format!("{p}{t:x}").into_bytes())
        }
        14 => {
            let p = *rng.pick(&[
                "qfThreadInfo",
                "qsThreadInfo",
                "qC",
                "qOffsets",
                "?",
                "g",
                "qAttached",
                "qSymbol::",
                "vCont?",
                "vMustReplyEmpty",
                "qTStatus",
                "qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;xmlRegisters=i386",
            ]);
            ("query", p.as_bytes().to_vec())
        }
        15 => ("p", format!("p{:x}", rng.below(300)).into_bytes()),
        16 => ("garbage", {
            let mut v = rng.bytes_upto(4000);
            v.retain(|b| !matches!(b, b'#' | b'$'));
            v
        }),
        _ => {
            let p = *rng.pick(&["vCont;c", "vCont;s:1", "c", "s", "D", "k", "vKill;1", "R00", "!"]);
            ("resume/detach", p.as_bytes().to_vec())
        }
    }
}

/// Random packets against `serve --image` on the fixture's raw image.
fn packets(a: &Args, dir: &Path) {
    let image = unpacked(dir, "post-panic.raw.zst");
    println!();
    println!("== random packets: {} well-framed packets to serve --image {}", a.packets, image.display());
    let server = serve(&a.bin, &["--image", image.to_str().unwrap()]);
    let port = server.port.expect("port");
    let pid = server.pid();
    let mut rng = Rng(a.seed);
    let start = Instant::now();
    println!("start        {}", show(rss(pid)));
    let mut rsp = Rsp::connect(port).expect("connect");
    let (mut ok, mut refused, mut lost, mut reconnects) = (0u64, 0u64, 0u64, 0u64);
    let mut by_kind: std::collections::BTreeMap<&str, (u64, u64, u64)> = Default::default();
    let mut last_lost = String::new();
    // The slowest requests, and those after which the server's peak RSS rose by 8 MiB or more.
    let mut slow: Vec<(Duration, String)> = Vec::new();
    let mut jumps: Vec<String> = Vec::new();
    let mut hwm = rss(pid).map_or(0, |r| r.hwm);
    let shorten = |body: &[u8]| {
        let text = String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned();
        format!("{text}{} ({} bytes)", if body.len() > 100 { "…" } else { "" }, body.len())
    };
    for i in 1..=a.packets {
        let (kind, body) = random_packet(&mut rng);
        let t0 = Instant::now();
        let out = rsp.request(&body);
        let took = t0.elapsed();
        if slow.len() < 5 || took > slow[slow.len() - 1].0 {
            slow.push((took, format!("{kind}: {}", shorten(&body))));
            slow.sort_by_key(|s| std::cmp::Reverse(s.0));
            slow.truncate(5);
        }
        if let Some(r) = rss(pid) {
            if r.hwm >= hwm + 8192 {
                jumps.push(format!(
                    "peak {:.1} -> {:.1} MiB after {kind}: {}",
                    hwm as f64 / 1024.0,
                    r.hwm as f64 / 1024.0,
                    shorten(&body)
                ));
            }
            hwm = r.hwm;
        }
        let e = by_kind.entry(kind).or_default();
        match out {
            Outcome::Ok => {
                ok += 1;
                e.0 += 1;
            }
            Outcome::Refused => {
                refused += 1;
                e.1 += 1;
            }
            Outcome::Lost(why) => {
                lost += 1;
                e.2 += 1;
                if !matches!(kind, "resume/detach") {
                    last_lost = format!("{kind} ({} bytes): {why}", body.len());
                }
                reconnects += 1;
                match Rsp::connect(port) {
                    Ok(r) => rsp = r,
                    Err(e) => {
                        println!("after packet {i}: cannot reconnect: {e}; the server: {}", show(rss(pid)));
                        break;
                    }
                }
            }
        }
        if i % 1000 == 0 {
            println!("{i:>6} pkts  {}  ({:.0} s)", show(rss(pid)), start.elapsed().as_secs_f64());
        }
    }
    drop(rsp);
    println!("end          {}", show(rss(pid)));
    println!(
        "{} packets in {:.1} s: {ok} answered, {refused} refused (error or empty reply), {lost} without a \
         reply (connection closed or timed out; {reconnects} reconnects)",
        ok + refused + lost,
        start.elapsed().as_secs_f64()
    );
    for (k, (o, r, l)) in &by_kind {
        println!("  {k:<14} answered {o:>6}  refused {r:>6}  no reply {l:>5}");
    }
    if !last_lost.is_empty() {
        println!("  last lost reply other than resume/detach: {last_lost}");
    }
    println!("slowest requests:");
    for (took, what) in &slow {
        println!("  {:8.3} s  {what}", took.as_secs_f64());
    }
    println!("requests after which the server's peak RSS rose by 8 MiB or more: {}", jumps.len());
    for j in &jumps {
        println!("  {j}");
    }
    let alive = rss(pid).is_some()
        && Rsp::connect(port).is_ok_and(|mut r| r.request(b"?") != Outcome::Lost(String::new()));
    println!("server alive at the end: {alive}");
}

/// The live part's source: a booted guest's RAM file, or a rewritten copy of the fixture.
enum LiveSource {
    Guest(Box<dmastub_testkit::vm::LiveVm>),
    Rewritten { path: PathBuf, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>, _dir: PathBuf },
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        if let LiveSource::Rewritten { stop, path, .. } = self {
            stop.store(true, Ordering::Relaxed);
            let _ = std::fs::remove_file(&*path);
        }
    }
}

fn boot_guest() -> Result<dmastub_testkit::vm::LiveVm, String> {
    use dmastub_testkit::vm::{self, GuestOptions, LiveVm, VmConfig};
    let missing = vm::missing_packages();
    if !missing.is_empty() {
        return Err(format!("missing packages {missing:?}"));
    }
    let opts = GuestOptions { cache: vm::guest::default_cache_dir(), ..Default::default() };
    let mut progress = |line: &str| println!("  guest: {line}");
    let files = vm::guest::prepare(&opts, &mut progress).map_err(|e| e.to_string())?;
    LiveVm::boot(&files, &VmConfig::default(), &mut progress).map_err(|e| e.to_string())
}

fn live_source(dir: &Path) -> LiveSource {
    if std::env::var_os("SOAK_NO_GUEST").is_none() {
        match boot_guest() {
            Ok(vm) => return LiveSource::Guest(Box::new(vm)),
            Err(e) => println!("no live guest ({e}): --live on a fixture copy rewritten by a thread instead"),
        }
    }
    let post = std::fs::read(unpacked(dir, "post-panic.raw.zst")).expect("read post-panic");
    let pre = std::fs::read(unpacked(dir, "pre-panic.raw.zst")).expect("read pre-panic");
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let tmp = base.join(format!("dmastub-soak-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("scratch dir");
    let path = tmp.join("guest.ram");
    std::fs::write(&path, &post).expect("write the live copy");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let (p, s, w) = (path.clone(), stop.clone(), writes.clone());
    std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) else { return };
        let mut rng = Rng(0x1234_5678);
        let pages = (post.len().min(pre.len()) / 4096) as u64;
        // About 2000 pages a second, each from one image or the other.
        while !s.load(Ordering::Relaxed) {
            for _ in 0..200 {
                let pg = rng.below(pages) as usize * 4096;
                let from = if rng.below(2) == 0 { &pre } else { &post };
                let _ = f.write_all_at(&from[pg..pg + 4096], pg as u64);
                w.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    LiveSource::Rewritten { path, stop, writes, _dir: tmp }
}

/// Random reads and monitor commands against `serve --live` for `--minutes`.
fn live(a: &Args, dir: &Path) {
    println!();
    println!("== live: random reads and monitor commands for {} minutes", a.minutes);
    let source = live_source(dir);
    let ram_path = match &source {
        LiveSource::Guest(vm) => {
            println!(
                "source: the demo's guest {} ({}), RAM file {}",
                vm.report.release,
                vm.accel,
                vm.ram_path().display()
            );
            vm.ram_path().to_path_buf()
        }
        LiveSource::Rewritten { path, .. } => {
            println!("source: {} (a copy of the 6.1 fixture, pages rewritten ~2000/s)", path.display());
            path.clone()
        }
    };
    let ram_size = std::fs::metadata(&ram_path).map(|m| m.len()).unwrap_or(256 * MIB);
    let server = serve(&a.bin, &["--live", ram_path.to_str().unwrap()]);
    let port = server.port.expect("port");
    let pid = server.pid();
    let mut rng = Rng(a.seed ^ 0xabcdef);
    let start = Instant::now();
    let duration = Duration::from_secs_f64(a.minutes * 60.0);
    println!("start        {}", show(rss(pid)));
    let (mut ok, mut refused, mut lost, mut sessions) = (0u64, 0u64, 0u64, 0u64);
    let mut next_report = Duration::from_secs(60);
    let mut first_minute = None;
    let mut last_lost = String::new();
    let mut kinds: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    'outer: while start.elapsed() < duration {
        let Ok(mut rsp) = Rsp::connect(port) else {
            println!("cannot connect after {:.0} s: {}", start.elapsed().as_secs_f64(), show(rss(pid)));
            break;
        };
        sessions += 1;
        let _ = rsp.request(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386");
        for _ in 0..200 {
            let (kind, body): (&str, Vec<u8>) = match rng.below(12) {
                0..=3 => ("m phys", {
                    let _ = rsp.request(&monitor("phys"));
                    format!("m{:x},{:x}", rng.below(ram_size), 1 + rng.below(0x10000)).into_bytes()
                }),
                4..=6 => ("m virt", {
                    let _ = rsp.request(&monitor("virt"));
                    let base = if rng.below(2) == 0 { 0xffff_8880_0000_0000 } else { 0xffff_ffff_8000_0000 };
                    format!("m{:x},{:x}", base + rng.below(ram_size), 1 + rng.below(0x10000)).into_bytes()
                }),
                7 => ("monitor ps", monitor("ps")),
                8 => ("monitor dmesg", monitor(&format!("dmesg {}", rng.below(50)))),
                9 => ("monitor kernel/cr3/vtop", {
                    let c = match rng.below(3) {
                        0 => "kernel".to_string(),
                        1 => "cr3".to_string(),
                        _ => format!("vtop {:#x}", 0xffff_ffff_8000_0000u64 + rng.below(1 << 30)),
                    };
                    monitor(&c)
                }),
                10 => ("threads", b"qfThreadInfo".to_vec()),
                _ => ("g", b"g".to_vec()),
            };
            let e = kinds.entry(kind).or_default();
            match rsp.request(&body) {
                Outcome::Ok => {
                    ok += 1;
                    e.0 += 1;
                }
                Outcome::Refused => {
                    refused += 1;
                    e.1 += 1;
                }
                Outcome::Lost(why) => {
                    lost += 1;
                    last_lost = format!("{kind}: {why}");
                    continue 'outer;
                }
            }
            if start.elapsed() >= next_report {
                let r = rss(pid);
                first_minute.get_or_insert(r);
                println!(
                    "{:>4.0} min     {}  requests {ok} ok, {refused} refused, {lost} lost, {sessions} sessions",
                    next_report.as_secs_f64() / 60.0,
                    show(r)
                );
                next_report += Duration::from_secs(60);
            }
            if start.elapsed() >= duration {
                break 'outer;
            }
        }
    }
    let end = rss(pid);
    println!("end          {}", show(end));
    println!(
        "{} requests in {:.1} min ({sessions} sessions): {ok} answered, {refused} refused (error reply: \
         memory that does not translate or changed under us), {lost} without a reply",
        ok + refused + lost,
        start.elapsed().as_secs_f64() / 60.0
    );
    for (k, (o, r)) in &kinds {
        println!("  {k:<24} answered {o:>7}  refused {r:>6}");
    }
    if let LiveSource::Rewritten { writes, .. } = &source {
        println!("  pages rewritten under the server: {}", writes.load(Ordering::Relaxed));
    }
    if !last_lost.is_empty() {
        println!("  last lost reply: {last_lost}");
    }
    if let (Some(Some(first)), Some(end)) = (first_minute, end) {
        println!(
            "RSS from the first minute to the end: {:+.1} MiB (anon {:+.1} MiB)",
            (end.rss as f64 - first.rss as f64) / 1024.0,
            (end.anon as f64 - first.anon as f64) / 1024.0
        );
    }
}
