//! The NetTLP client against the adapter emulator, on loopback: every byte equal to the image,
//! split and reordered completions, lost, late and doubled packets, Unsupported Requests, and
//! completions that must not be trusted; then real gdb over `serve --nettlp`.
//!
//! Each test uses its own pair of loopback addresses (127.0.N.1 for the client, 127.0.N.2 for
//! the adapter), so tests run in parallel without sharing ports.

mod common;

use common::*;
use dmastub::PhysAddr;
use dmastub::phys::nettlp::wire::{self, Completion, CplStatus, RequesterId, Tlp};
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use dmastub::phys::{self, OpenOptions, PhysError, PhysMem, RamRange, Segment, WriteMode};
use dmastub_testkit::emulator::{EmulatorConfig, EmulatorHandle};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GIB4: u64 = 1 << 32;

fn addrs(n: u8) -> (Ipv4Addr, Ipv4Addr) {
    (Ipv4Addr::new(127, 0, n, 2), Ipv4Addr::new(127, 0, n, 1))
}

fn client(n: u8, f: impl FnOnce(&mut NetTlpConfig)) -> NetTlpMem {
    let (adapter, local) = addrs(n);
    let mut config = NetTlpConfig { adapter, local, ..NetTlpConfig::default() };
    f(&mut config);
    NetTlpMem::connect(config).expect("open the client's sockets")
}

/// A real memory image: the full 6.1 raw dump when the fixtures are here, else the trimmed
/// 5-level image the repository carries.
fn image() -> PathBuf {
    if let Some(dir) = fixture_dir("linux-6.1-kaslr") {
        return unpacked(&dir, "post-panic.raw.zst");
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux-6.1-la57-trimmed");
    unpacked(&dir, "post-panic.lime.zst")
}

fn open(path: &Path) -> Box<dyn PhysMem> {
    phys::open_file(path, &OpenOptions::default()).expect("open the image")
}

/// A deterministic spread of numbers for picking places.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Reads of every size from 1 to 4100 bytes and a spread of sizes up to 64 KiB, at page-aligned,
/// DW-unaligned and page-end starts, compared byte for byte with the image.
fn check_every_size(mem: &mut NetTlpMem, image: &mut dyn PhysMem, base: u64, ranges: &[RamRange]) -> usize {
    let mut sizes: Vec<usize> = (1..=4100).collect();
    sizes.extend((4101..=65536).step_by(61));
    sizes.extend([8191, 8192, 8193, 65535, 65536]);
    let starts = [0u64, 1, 2, 3, 0x41, 0xffd, 0xfff, 0x7fe];
    let mut rng = Lcg(7);
    let mut checked = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let fits: Vec<&RamRange> = ranges.iter().filter(|r| r.len >= size as u64 + 0x3000).collect();
        if fits.is_empty() {
            continue;
        }
        let r = fits[rng.next() as usize % fits.len()];
        let page = r.start.0 + (rng.next() % ((r.len - size as u64 - 0x2000) / 4096)) * 4096;
        let at = page + starts[i % starts.len()];
        let mut want = vec![0u8; size];
        image.read(PhysAddr(at), &mut want).expect("read the image");
        let mut got = vec![0xa5u8; size];
        mem.read(PhysAddr(at + base), &mut got)
            .unwrap_or_else(|e| panic!("NetTLP read of {size} bytes at {:#x}: {e}", at + base));
        assert!(got == want, "{size} bytes at {:#x} differ from the image", at + base);
        checked += 1;
    }
    checked
}

#[test]
fn every_size_and_start_below_and_above_4g() {
    let path = image();
    let mut file = open(&path);
    let ranges = file.ram().to_vec();
    // Below 4 GiB as the image is; then moved so that its largest RAM range straddles the
    // 4 GiB line (3- and 4-DW requests, and reads across the line).
    let largest = ranges.iter().max_by_key(|r| r.len).expect("the image has RAM");
    let straddle = (GIB4 - (largest.start.0 + largest.len / 2)) & !0xfff;
    for (n, base) in [(10u8, 0u64), (11, straddle)] {
        let (listen, _) = addrs(n);
        let emu =
            EmulatorHandle::spawn(open(&path), EmulatorConfig { listen, base, ..EmulatorConfig::default() })
                .expect("start the emulator");
        let mut mem = client(n, |_| {});
        let checked = check_every_size(&mut mem, file.as_mut(), base, &ranges);
        assert!(checked > 4000, "only {checked} reads fit the image's RAM ranges");
        if base > 0 {
            // Across the 4 GiB line and wholly above it.
            let mut seen = 0;
            for phys in [GIB4 - 0x1003, GIB4 - 1, GIB4, GIB4 + 0x1_0001] {
                let at = phys - base;
                if phys::find_range(&ranges, PhysAddr(at), 0x3000).is_none() {
                    continue;
                }
                let mut want = vec![0u8; 0x3000];
                file.read(PhysAddr(at), &mut want).unwrap();
                let mut got = vec![0u8; 0x3000];
                mem.read(PhysAddr(phys), &mut got).unwrap_or_else(|e| panic!("at {phys:#x}: {e}"));
                assert!(got == want, "12 KiB at {phys:#x} differ from the image");
                seen += 1;
            }
            assert_eq!(seen, 4, "the image's RAM does not cover the 4 GiB line with base {base:#x}");
        }
        // A loaded machine may delay an answer past the adaptive timeout (a try sent again,
        // its answer then a duplicate), never past every try.
        let s = mem.stats();
        assert_eq!((s.timeouts, s.unsupported), (0, 0), "{s:?}");
        drop(emu);
    }
}

#[test]
fn split_reordered_duplicated_and_late_completions() {
    let path = image();
    let mut file = open(&path);
    let ranges = file.ram().to_vec();
    let (listen, _) = addrs(12);
    let config = EmulatorConfig {
        listen,
        mps: 128,
        rcb: 64,
        reorder: true,
        duplicate_rate: 0.3,
        delay: Duration::from_micros(300),
        ..EmulatorConfig::default()
    };
    let _emu = EmulatorHandle::spawn(open(&path), config).expect("start the emulator");
    let mut mem = client(12, |c| c.mrrs = 4096);
    let big = ranges.iter().find(|r| r.len >= 1 << 20).or(ranges.iter().max_by_key(|r| r.len)).unwrap();
    let len = big.len.min(1 << 20) as usize;
    let mut want = vec![0u8; len - 3];
    file.read(PhysAddr(big.start.0 + 3), &mut want).unwrap();
    let mut got = vec![0u8; len - 3];
    mem.read(PhysAddr(big.start.0 + 3), &mut got).expect("read through a reordering link");
    assert!(got == want, "bytes differ after reordering");
    let s = mem.stats();
    assert!(s.duplicates > 0, "the emulator doubled packets but none was seen: {s:?}");
    assert_eq!(s.timeouts, 0, "{s:?}");
}

/// Few tags, the smallest MRRS, and a root complex with a 128-byte RCB and 512-byte MPS.
#[test]
fn other_link_settings_read_the_same_bytes() {
    let path = image();
    let mut file = open(&path);
    let ranges = file.ram().to_vec();
    let (listen, _) = addrs(22);
    let config = EmulatorConfig { listen, rcb: 128, mps: 512, ..EmulatorConfig::default() };
    let _emu = EmulatorHandle::spawn(open(&path), config).expect("start the emulator");
    for (tags, mrrs, generations) in [(1u8, 128u32, true), (3, 128, true), (16, 4096, true), (16, 512, false)]
    {
        let mut mem = client(22, |c| {
            c.tags = tags;
            c.mrrs = mrrs;
            c.tag_generations = generations;
        });
        let r = ranges.iter().max_by_key(|r| r.len).unwrap();
        let len = r.len.min(96 << 10) as usize - 5;
        let mut want = vec![0u8; len];
        file.read(PhysAddr(r.start.0 + 5), &mut want).unwrap();
        let mut got = vec![0u8; len];
        mem.read(PhysAddr(r.start.0 + 5), &mut got).expect("read");
        assert!(got == want, "{tags} tags, MRRS {mrrs}: bytes differ");
        let s = mem.stats();
        // And the first read on each tag, a probe.
        assert_eq!(s.requests, (len as u64 + 5).div_ceil(u64::from(mrrs)) + u64::from(tags), "{s:?}");
    }
}

#[test]
fn lost_packets_are_asked_for_again() {
    let path = image();
    let mut file = open(&path);
    let ranges = file.ram().to_vec();
    let (listen, _) = addrs(13);
    let config = EmulatorConfig { listen, drop_rate: 0.1, seed: 3, ..EmulatorConfig::default() };
    let _emu = EmulatorHandle::spawn(open(&path), config).expect("start the emulator");
    let mut mem = client(13, |c| {
        c.timeout = Duration::from_millis(20);
        c.retries = 8;
    });
    let r = ranges.iter().max_by_key(|r| r.len).unwrap();
    let len = r.len.min(256 << 10) as usize;
    let mut want = vec![0u8; len];
    file.read(r.start, &mut want).unwrap();
    let mut got = vec![0u8; len];
    mem.read(r.start, &mut got).expect("read through a lossy link");
    assert!(got == want);
    let s = mem.stats();
    assert!(s.retransmits > 0, "10% loss but nothing was sent again: {s:?}");
}

#[test]
fn a_dead_link_fails_within_the_timeout_budget_naming_address_and_tag() {
    let path = image();
    let (listen, _) = addrs(14);
    let config = EmulatorConfig { listen, drop_rate: 1.0, ..EmulatorConfig::default() };
    let _emu = EmulatorHandle::spawn(open(&path), config).expect("start the emulator");
    let mut mem = client(14, |c| {
        c.timeout = Duration::from_millis(50);
        c.retries = 2;
    });
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let err = mem.read(PhysAddr(0x1000), &mut buf).expect_err("nothing answers");
    let took = t0.elapsed();
    let text = err.to_string();
    assert!(text.contains("0x1000") && text.contains("tag 0") && text.contains("3 tries"), "{text}");
    // 3 tries of 50, 100 and 200 ms, with slack for a loaded machine; never a hang.
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The next read starts clean.
    let err2 = mem.read(PhysAddr(0x2000), &mut buf).expect_err("still nothing answers");
    assert!(err2.to_string().contains("0x2000"), "{err2}");
}

#[test]
fn no_listener_is_reported_at_once() {
    let mut mem = client(15, |c| c.timeout = Duration::from_secs(30));
    let t0 = Instant::now();
    let mut buf = [0u8; 8];
    let err = mem.read(PhysAddr(0x1000), &mut buf).expect_err("no adapter");
    assert!(err.to_string().contains("port unreachable"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn unsupported_request_is_no_memory_not_a_retry() {
    let path = image();
    let file = open(&path);
    let top = file.ram().last().unwrap().end();
    let (listen, _) = addrs(16);
    let _emu =
        EmulatorHandle::spawn(open(&path), EmulatorConfig { listen, ..EmulatorConfig::default() }).unwrap();
    let mut mem = client(16, |_| {});
    let mut buf = vec![0u8; 8192];
    let err = mem.read(PhysAddr(top + 0x10_0000), &mut buf).expect_err("beyond RAM");
    assert!(matches!(err, PhysError::NotRam { .. }), "{err:?}");
    assert!(err.to_string().contains("Unsupported Request"), "{err}");
    let s = mem.stats();
    assert_eq!(s.retransmits, 0, "{s:?}");
    assert!(s.unsupported > 0);
    // Scattered reads say which segment failed first, and fill the ones before it.
    let good = file.ram()[0].start.0 + 0x1000;
    let (mut a, mut b, mut c) = ([0u8; 16], [0u8; 16], [0u8; 16]);
    let mut segs = [
        Segment { addr: PhysAddr(good), buf: &mut a },
        Segment { addr: PhysAddr(top + 0x5000), buf: &mut b },
        Segment { addr: PhysAddr(good + 64), buf: &mut c },
    ];
    let e = mem.read_segments(&mut segs).expect_err("the middle one is a hole");
    assert_eq!(e.index, 1);
}

/// A fake adapter on the tag-0 port that answers a read with junk first: a datagram that is
/// no TLP, a completion for another requester, one for another tag, one whose lower address
/// does not fit, a request instead of a completion; then the right completion.
#[test]
fn completions_that_fit_no_request_are_ignored() {
    let (adapter, _) = addrs(17);
    let sock = UdpSocket::bind((adapter, wire::port_for_tag(0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 9000];
        let mut out = Vec::new();
        // The client's first read on a tag is a probe; no memory there.
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        let Ok(Tlp::MemRead(probe)) = wire::parse(&buf[..n]) else { panic!("not a read") };
        let ur = Completion {
            completer: RequesterId(0),
            status: CplStatus::UnsupportedRequest,
            byte_count: probe.len as u16,
            requester: probe.requester,
            tag: probe.tag,
            lower_addr: (probe.addr & 0x7f) as u8,
            payload: &[],
        };
        wire::encode_completion(&ur, &mut out);
        sock.send_to(&out, from).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        let Ok(Tlp::MemRead(req)) = wire::parse(&buf[..n]) else { panic!("not a read") };
        assert_eq!((req.addr, req.len, req.tag & 0xf), (0x2004, 8, 0));
        let payload = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let good = Completion {
            completer: RequesterId(0),
            status: CplStatus::Success,
            byte_count: 8,
            requester: req.requester,
            tag: req.tag,
            lower_addr: 0x04,
            payload: &payload,
        };
        let mut out = Vec::new();
        let mut send = |c: &Completion| {
            out.clear();
            wire::encode_completion(c, &mut out);
            sock.send_to(&out, from).unwrap();
        };
        sock.send_to(b"not a TLP", from).unwrap();
        send(&Completion { requester: RequesterId(0x0100), payload: &[9; 8], ..good });
        send(&Completion { tag: req.tag.wrapping_add(0x10), payload: &[9; 8], ..good });
        send(&Completion { lower_addr: 0x08, payload: &[9; 8], ..good });
        send(&Completion { byte_count: 12, payload: &[9; 12], ..good });
        let mut req_bytes = Vec::new();
        wire::encode_read(&req, &mut req_bytes);
        sock.send_to(&req_bytes, from).unwrap();
        send(&good);
        send(&good); // and a duplicate after it
    });
    let mut mem = client(17, |c| c.tags = 1);
    let mut got = [0u8; 8];
    mem.read(PhysAddr(0x2004), &mut got).expect("the right completion comes last");
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8]);
    fake.join().unwrap();
    assert!(mem.stats().ignored >= 5, "{:?}", mem.stats());
}

/// Writes go out as posted Memory Writes only with --allow-write, and land in the emulator's
/// copy of the image.
#[test]
fn writes_need_allow_write() {
    let path = image();
    let file = open(&path);
    let at = file.ram()[0].start.0 + 0x3001;
    let (listen, _) = addrs(18);
    let writable =
        phys::open_file(&path, &OpenOptions { write: WriteMode::CopyOnWrite, ..OpenOptions::default() })
            .expect("open the image copy-on-write");
    let _emu = EmulatorHandle::spawn(
        writable,
        EmulatorConfig { listen, allow_write: true, ..EmulatorConfig::default() },
    )
    .unwrap();
    let mut ro = client(18, |_| {});
    assert!(matches!(ro.write(PhysAddr(at), b"x"), Err(PhysError::ReadOnly { .. })));
    drop(ro);
    let mut rw = client(18, |c| c.allow_write = true);
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    rw.write(PhysAddr(at), &data).expect("posted writes");
    let mut back = vec![0u8; 300];
    rw.read(PhysAddr(at), &mut back).unwrap();
    assert_eq!(back, data);
}

/// Real gdb on `serve --nettlp`, the emulator serving the 6.1 image: the same `monitor ps` as
/// the file, and an Unsupported Request becomes gdb's "Cannot access memory".
#[test]
fn gdb_over_nettlp_sees_what_the_file_shows() {
    let (dir, img) = match fixture_dir("linux-6.1-kaslr") {
        Some(d) => {
            let img = unpacked(&d, "post-panic.raw.zst");
            (Some(d), img)
        }
        None => (None, image()),
    };
    let img_s = img.to_str().unwrap();
    let emulator = Emulator::start(img_s, "127.0.19.2");
    let direct = Stub::start(&["--image", img_s]);
    let want = gdb(direct.port, &["monitor ps"]);
    drop(direct);
    let over =
        Stub::start(&["--nettlp", "127.0.19.2", "--nettlp-local", "127.0.19.1", "--requester", "1b:00"]);
    let out = gdb(over.port, &["monitor ps", "monitor phys", "x/gx 0x7fff00000000", "monitor stats"]);
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok()))
            .map(String::from)
            .collect()
    };
    let (a, b) = (rows(&want), rows(&out));
    assert!(a.len() > 10, "file-backed ps: {want}");
    assert_eq!(a, b, "monitor ps over NetTLP differs from the file");
    assert!(out.contains("Cannot access memory at address 0x7fff00000000"), "{out}");
    assert!(out.contains("NetTLP:") && out.contains("Unsupported Request"), "{out}");
    if let Some(dir) = dir {
        let t = truth(&dir, "post-panic");
        let tk = &t["timekeeper"];
        let out = gdb(
            over.port,
            &[
                &format!("monitor switch {}", tk["pid"]),
                &format!("x/gx {}", tk["global_virt"].as_str().unwrap()),
            ],
        );
        assert_eq!(x_gx(&out, hex(&tk["global_virt"])), tk["global_value_in_memory"].as_u64(), "{out}");
    }
    drop(emulator);
}

/// With no adapter, or one that never answers, a one-shot command says so at once instead of
/// searching memory it cannot read (every page would wait out the same timeout).
#[test]
fn a_missing_or_silent_adapter_is_reported_not_searched() {
    let ps = |n: u8| {
        let t0 = Instant::now();
        let out = std::process::Command::new(BIN)
            .args(["ps", "--nettlp", &format!("127.0.{n}.2"), "--nettlp-local", &format!("127.0.{n}.1")])
            .args(["--timeout", "50", "--retries", "1"])
            .output()
            .expect("run dmastub ps");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), t0.elapsed())
    };
    let (ok, err, took) = ps(20);
    assert!(!ok && err.contains("cannot be read") && err.contains("port unreachable"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let image = image();
    let _silent = Emulator::start_with(image.to_str().unwrap(), "127.0.21.2", &["--drop-rate", "1"]);
    let (ok, err, took) = ps(21);
    assert!(!ok && err.contains("no completion") && err.contains("after 2 tries"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The adapter going away in the middle of a session: `monitor ps` ends at once with the
/// device's error instead of waiting out a timeout for every task, and gdb stays usable.
#[test]
fn an_adapter_lost_mid_session_fails_fast() {
    let img = image();
    let emulator = Emulator::start(img.to_str().unwrap(), "127.0.23.2");
    let stub = Stub::start(&[
        "--nettlp",
        "127.0.23.2",
        "--nettlp-local",
        "127.0.23.1",
        "--timeout",
        "200",
        "--retries",
        "2",
    ]);
    let before = gdb(stub.port, &["monitor ps"]);
    assert!(before.lines().filter(|l| l.trim_start().starts_with("1 ")).count() == 1, "{before}");
    // Gone, then back but silent (a link that drops everything).
    drop(emulator);
    let gone = gdb(stub.port, &["monitor ps"]);
    assert!(gone.contains("port unreachable"), "{gone}");
    let _silent = Emulator::start_with(img.to_str().unwrap(), "127.0.23.2", &["--drop-rate", "1"]);
    let t0 = Instant::now();
    let after = gdb(stub.port, &["monitor ps", "monitor cr3"]);
    let took = t0.elapsed();
    assert!(after.contains("no completion") && after.contains("after 3 tries"), "{after}");
    assert!(after.contains("CR3"), "gdb lost the session: {after}");
    // A few timeout budgets (tries of at most 200 + 400 + 800 ms) and gdb's own start; never one
    // per task.
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The thread list's two sides (the task walk, and the CPUs beside it) fail together: their
    // first batches go out as one, and what a batch could not read for a dead device is not
    // sent again, page tables included. One timeout for that batch, one each for the reads of
    // the walk's one task; it was four when the CPUs were read first, eight when they first
    // rode along with the walk.
    // (`stats reset` prints the stats so far: the last ones are those of `monitor threads`.)
    let threads = gdb(stub.port, &["monitor stats reset", "monitor threads", "monitor stats"]);
    assert!(threads.contains("nr_cpu_ids") && threads.contains("not sent, since"), "{threads}");
    let timed_out = threads
        .lines()
        .filter_map(|l| {
            l.strip_prefix("NetTLP: ")?.split("; ").nth(1)?.split(", ").nth(2)?.strip_suffix(" timed out")
        })
        .next_back()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no timeout count in the stats: {threads}"));
    assert!(timed_out <= 3, "{timed_out} reads waited out the timeout: {threads}");
}

/// Reads spread over the image, compared byte for byte; the first difference is reported.
fn compare_reads(mem: &mut NetTlpMem, file: &mut dyn PhysMem, starts: &[u64], len: usize) {
    for &at in starts {
        let mut want = vec![0u8; len];
        file.read(PhysAddr(at), &mut want).expect("read the image");
        let mut got = vec![0u8; len];
        mem.read(PhysAddr(at), &mut got)
            .unwrap_or_else(|e| panic!("NetTLP read of {len} bytes at {at:#x}: {e}"));
        if let Some(i) = (0..len).find(|&i| got[i] != want[i]) {
            panic!("{len} bytes at {at:#x}: byte {i:#x} is {:#04x}, the image has {:#04x}", got[i], want[i]);
        }
    }
}

/// Defect: with plain tags (as libtlp sends them) a link that doubles completions put a
/// duplicate of a finished request's completion into the next request on its tag whenever
/// the two ended at the same address modulo 128 (every MRRS-aligned request does): wrong bytes
/// with no error. Now requests a completion could not tell apart never share a tag within a
/// quiet period.
#[test]
fn plain_tags_with_duplicated_completions_read_the_right_bytes() {
    let path = image();
    let mut file = open(&path);
    let r = file.ram().iter().max_by_key(|r| r.len).copied().unwrap();
    let (listen, _) = addrs(24);
    for (seed, rate, delay_us) in [(1u64, 0.01, 0), (2, 0.1, 0), (3, 0.1, 200)] {
        let config = EmulatorConfig {
            listen,
            duplicate_rate: rate,
            delay: Duration::from_micros(delay_us),
            seed,
            ..EmulatorConfig::default()
        };
        let emu = EmulatorHandle::spawn(open(&path), config).expect("start the emulator");
        let mut mem = client(24, |c| c.tag_generations = false);
        let len = (r.len / 4).min(1 << 20) as usize;
        let starts: Vec<u64> = (0..3).map(|i| r.start.0 + i as u64 * len as u64).collect();
        compare_reads(&mut mem, file.as_mut(), &starts, len);
        assert!(mem.stats().duplicates + mem.stats().ignored > 0, "nothing was doubled: {:?}", mem.stats());
        drop(mem);
        drop(emu);
    }
}

/// Defect: a client killed while its completions were still on a slow link, then a new one on
/// the same ports: the new one took the old completions for its own (tag generations began at
/// 0 in every process) and returned another address's bytes. Now generations start at a random
/// value, the first read on every tag is a probe whose answer comes after whatever the link
/// still carried, and what fits nothing keeps its identity quiet.
#[test]
fn a_new_client_never_takes_a_killed_clients_late_completions() {
    let path = image();
    let mut file = open(&path);
    let r = file.ram().iter().max_by_key(|r| r.len).copied().unwrap();
    assert!(r.len >= 24 << 20, "the image's largest RAM range is too small: {r:?}");
    let img = path.to_str().unwrap();
    let _emu = Emulator::start_with(img, "127.0.25.2", &["--delay-us", "300000"]);
    let net = ["--nettlp", "127.0.25.2", "--nettlp-local", "127.0.25.1"];
    for plain in [false, true] {
        for round in 0..2u64 {
            // The old client: 8 MiB read, killed with requests in flight on every tag.
            let old_at = r.start.0 + (round << 20);
            let mut old = std::process::Command::new(BIN)
                .args(["read", "--phys", "--binary"])
                .args(net)
                .args(plain.then_some("--plain-tags"))
                .args([&format!("{old_at:#x}"), "0x800000"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("run dmastub read");
            std::thread::sleep(Duration::from_millis(900));
            old.kill().expect("kill the old client");
            old.wait().unwrap();
            // The new one on the same ports, elsewhere, at once.
            let new_at = r.start.0 + (16 << 20) + (round << 16);
            let len = 0x10000usize;
            let out = std::process::Command::new(BIN)
                .args(["read", "--phys", "--binary", "--deadline", "60"])
                .args(net)
                .args(plain.then_some("--plain-tags"))
                .args([&format!("{new_at:#x}"), &format!("{len:#x}")])
                .output()
                .expect("run dmastub read");
            let mut want = vec![0u8; len];
            file.read(PhysAddr(new_at), &mut want).unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "plain tags {plain}, round {round}: {err}");
            if let Some(i) = (0..len).find(|&i| out.stdout.get(i) != want.get(i)) {
                panic!(
                    "plain tags {plain}, round {round}: {len} bytes at {new_at:#x} differ from the image at byte {i:#x} ({} bytes out)",
                    out.stdout.len()
                );
            }
        }
    }
}

/// Failed DMA reads are device failures, and the error says that reads failed, how many, and
/// why (timeouts after N retries; a completion status).
#[test]
fn failed_reads_say_how_many_and_why_and_are_device_failures() {
    use dmastub::mmu::MemError;
    let path = image();
    let (listen, _) = addrs(26);
    let _emu = EmulatorHandle::spawn(
        open(&path),
        EmulatorConfig { listen, drop_rate: 1.0, ..EmulatorConfig::default() },
    )
    .unwrap();
    let mut mem = client(26, |c| {
        c.timeout = Duration::from_millis(20);
        c.retries = 3;
    });
    let mut buf = vec![0u8; 8192];
    let err = mem.read(PhysAddr(0x10_0000), &mut buf).expect_err("nothing answers");
    let text = err.to_string();
    assert!(matches!(err, PhysError::Device { .. }), "{err:?}");
    assert!(MemError::Phys(err.clone()).is_device_failure());
    for want in
        ["no completion", "after 4 tries", "timeout after 3 retries", "DMA reads of this batch failed"]
    {
        assert!(text.contains(want), "'{want}' missing from: {text}");
    }
    // A Completer Abort from a fake adapter: a device failure naming the status.
    let (adapter, _) = addrs(27);
    let sock = UdpSocket::bind((adapter, wire::port_for_tag(0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 9000];
        for _ in 0..2 {
            // The probe, then the read: both answered with a Completer Abort.
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            let Ok(Tlp::MemRead(req)) = wire::parse(&buf[..n]) else { panic!("not a read") };
            let c = Completion {
                completer: RequesterId(0),
                status: if req.addr == 2 { CplStatus::UnsupportedRequest } else { CplStatus::CompleterAbort },
                byte_count: req.len as u16,
                requester: req.requester,
                tag: req.tag,
                lower_addr: (req.addr & 0x7f) as u8,
                payload: &[],
            };
            let mut out = Vec::new();
            wire::encode_completion(&c, &mut out);
            sock.send_to(&out, from).unwrap();
        }
    });
    let mut mem = client(27, |c| c.tags = 1);
    let err = mem.read(PhysAddr(0x4000), &mut [0u8; 64]).expect_err("Completer Abort");
    fake.join().unwrap();
    assert!(MemError::Phys(err.clone()).is_device_failure(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("Completer Abort") && text.contains("1 of 1 DMA reads"), "{text}");
}
