//! The emulator against the client, the wire format and corrupt datagrams.

use super::faults::split;
use super::tx::{CPLD_HEADER, MAX_QUEUED, cpld_header};
use super::*;
use dmastub::phys::BufferMem;
use dmastub::phys::nettlp::wire::{Completion, CplStatus, RequesterId};
use std::net::UdpSocket as StdUdp;

const REQUESTER: RequesterId = RequesterId(0x1b00);

/// Bytes no two offsets of which repeat within a page: a misplaced byte shows.
fn image(len: usize) -> Vec<u8> {
    let mut rng = FaultRng::new(42);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Each test has its own `127.77.<net>.x` addresses so tests run in parallel.
fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, net, host)
}

fn spawn(mem: BufferMem, config: EmulatorConfig) -> EmulatorHandle {
    EmulatorHandle::spawn(Box::new(mem), config).expect("emulator binds")
}

/// A libtlp-like requester: one socket on `local:0x3000+tag`, talking to the adapter's port
/// of the same tag.
struct Host {
    sock: StdUdp,
    adapter: SocketAddrV4,
    tag: u8,
}

impl Host {
    fn new(local: Ipv4Addr, adapter: Ipv4Addr, tag: u8) -> Host {
        let port = port_for_tag(tag & 0xf);
        let sock = StdUdp::bind(SocketAddrV4::new(local, port)).expect("host binds");
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Host { sock, adapter: SocketAddrV4::new(adapter, port), tag }
    }

    fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.adapter).unwrap();
    }

    fn request(&self, addr: u64, len: u32) {
        let mut out = Vec::new();
        wire::encode_read(&MemRequest { requester: REQUESTER, tag: self.tag, addr, len }, &mut out);
        self.send(&out);
    }

    fn write(&self, addr: u64, data: &[u8]) {
        let mut out = Vec::new();
        let req = MemRequest { requester: REQUESTER, tag: self.tag, addr, len: data.len() as u32 };
        wire::encode_write(&req, data, &mut out);
        self.send(&out);
    }

    /// Every datagram that arrives until none has for `quiet`.
    fn collect(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut last = Instant::now();
        let mut buf = vec![0u8; RX_BUFFER];
        while last.elapsed() < quiet {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.push(buf[..n].to_vec());
                last = Instant::now();
            }
        }
        got
    }

    /// The completions of one read, up to the one that ends it (or an error completion).
    fn read(&self, addr: u64, len: u32) -> Vec<Vec<u8>> {
        self.request(addr, len);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = vec![0u8; RX_BUFFER];
        let mut bytes = 0usize;
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else { continue };
            let pkt = buf[..n].to_vec();
            let Ok(Tlp::Completion(c)) = wire::parse(&pkt) else { panic!("not a completion: {pkt:x?}") };
            let last = c.status != CplStatus::Success || usize::from(c.byte_count) <= c.data().len();
            bytes += c.data().len();
            got.push(pkt);
            if last {
                assert!(bytes <= len as usize);
                return got;
            }
        }
        panic!("read of {len} bytes at {addr:#x}: no last completion within 5 s ({} packets)", got.len())
    }
}

fn completion(pkt: &[u8]) -> Completion<'_> {
    match wire::parse(pkt) {
        Ok(Tlp::Completion(c)) => c,
        other => panic!("not a completion: {other:?}"),
    }
}

/// Checks every rule a root complex's completions of a read follow, and returns the bytes
/// they deliver.
fn check_completions(pkts: &[Vec<u8>], addr: u64, len: u32, cfg: &EmulatorConfig, tag: u8) -> Vec<u8> {
    let end = addr + u64::from(len);
    let mut pos = addr;
    let mut got = Vec::new();
    for (i, pkt) in pkts.iter().enumerate() {
        let c = completion(pkt);
        let what = format!("packet {i} of read {len:#x} at {addr:#x} (MPS {}, RCB {})", cfg.mps, cfg.rcb);
        assert_eq!(pkt[6], 0x4a, "{what}: CplD");
        assert_eq!(c.status, CplStatus::Success, "{what}");
        assert_eq!((c.tag, c.requester, c.completer), (tag, REQUESTER, cfg.completer), "{what}");
        assert_eq!(u64::from(c.byte_count), end - pos, "{what}: byte count");
        assert_eq!(u64::from(c.lower_addr), pos & 0x7f, "{what}: lower address");
        assert!(c.payload.len() <= cfg.mps as usize && c.payload.len().is_multiple_of(4), "{what}");
        let piece_end = pos + c.data().len() as u64;
        assert_eq!(c.payload.len() as u64, piece_end.next_multiple_of(4) - (pos & !3), "{what}: payload DWs");
        let head = (pos & 3) as usize;
        assert!(c.payload[..head].iter().all(|&b| b == 0), "{what}: head padding");
        assert!(c.payload[head + c.data().len()..].iter().all(|&b| b == 0), "{what}: tail padding");
        // libtlp tells the last completion by its length alone.
        let libtlp_last = c.payload.len() / 4 == (head + usize::from(c.byte_count)).div_ceil(4);
        if i + 1 < pkts.len() {
            assert_eq!(piece_end % u64::from(cfg.rcb), 0, "{what}: ends at an RCB boundary");
            assert!(
                piece_end + u64::from(cfg.rcb) > (pos & !3) + u64::from(cfg.mps),
                "{what}: as long as MPS allows"
            );
            assert!(!libtlp_last, "{what}: libtlp would stop here");
        } else {
            assert_eq!(piece_end, end, "{what}: the last one ends the request");
            assert!(libtlp_last, "{what}: libtlp would wait for more");
        }
        got.extend_from_slice(c.data());
        pos = piece_end;
    }
    got
}

#[test]
fn split_follows_rcb_and_mps_for_every_start() {
    for (mps, rcb) in [(128, 64), (128, 128), (256, 64), (512, 128), (4096, 64)] {
        for addr in (0x1000u64..0x1100).chain([0x1ffc, 0x1fff, 0xffff_ffff_ffff_e000]) {
            for len in [1u32, 2, 3, 4, 5, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4096] {
                let end = addr + u64::from(len);
                if addr / 4096 != (end - 1) / 4096 {
                    continue;
                }
                let mut pos = addr;
                let pieces: Vec<_> = split(addr, end, mps, rcb).collect();
                for (i, &(start, n)) in pieces.iter().enumerate() {
                    assert_eq!(start, pos);
                    assert!(n > 0);
                    let stop = start + u64::from(n);
                    assert!(stop.next_multiple_of(4) - (start & !3) <= u64::from(mps));
                    if i + 1 < pieces.len() {
                        assert_eq!(stop % u64::from(rcb), 0, "{addr:#x}+{len} MPS {mps} RCB {rcb}");
                    }
                    pos = stop;
                }
                assert_eq!(pos, end);
            }
        }
    }
}

#[test]
fn the_direct_path_header_is_the_encoders() {
    let cfg = EmulatorConfig { completer: RequesterId(0x0123), ..Default::default() };
    for (addr, byte_count, payload_len) in [(0x1000u64, 4096u16, 256usize), (0x10ff, 1, 4), (0x7f, 3000, 128)]
    {
        let req = MemRequest { requester: REQUESTER, tag: 0x1a, addr, len: u32::from(byte_count) };
        let payload = vec![0u8; payload_len];
        let mut want = Vec::new();
        wire::encode_completion(
            &Completion {
                completer: cfg.completer,
                status: CplStatus::Success,
                byte_count,
                requester: REQUESTER,
                tag: 0x1a,
                lower_addr: (addr & 0x7f) as u8,
                payload: &payload,
            },
            &mut want,
        );
        assert_eq!(cpld_header(&cfg, &req, byte_count, addr, payload_len), want[..CPLD_HEADER]);
    }
}

#[test]
fn reads_are_split_at_rcb_and_mps_aligned_or_not() {
    let bytes = image(0x4000);
    for (k, (mps, rcb)) in [(256, 64), (128, 128), (512, 128), (128, 64)].into_iter().enumerate() {
        let cfg = EmulatorConfig {
            listen: ip(1, 10 + k as u8),
            mps,
            rcb,
            completer: RequesterId(0x0100),
            ..Default::default()
        };
        let _emu = spawn(BufferMem::new("pattern", bytes.clone()), cfg.clone());
        let host = Host::new(ip(1, 1), cfg.listen, 3);
        for (addr, len) in [
            (0x1000u64, 4096u32),
            (0x1001, 4095),
            (0x1003, 130),
            (0x10fe, 1),
            (0x2ffc, 4),
            (0x2042, 700),
            (0x3f01, 254),
            (0, 8),
            (0x3ffd, 3),
        ] {
            let pkts = host.read(addr, len);
            let got = check_completions(&pkts, addr, len, &cfg, 3);
            assert_eq!(got, bytes[addr as usize..][..len as usize], "read {len:#x} at {addr:#x}");
        }
    }
}

#[test]
fn ram_can_sit_above_4_gib() {
    let bytes = image(0x3000);
    let base = 0x1_2345_6000;
    let cfg = EmulatorConfig { listen: ip(2, 2), base, ..Default::default() };
    let emu = spawn(BufferMem::new("high", bytes.clone()), cfg.clone());
    let host = Host::new(ip(2, 1), cfg.listen, 0);
    for (off, len) in [(0u64, 4096u32), (0x1802, 333), (0x2ff0, 16)] {
        let pkts = host.read(base + off, len);
        assert_eq!(check_completions(&pkts, base + off, len, &cfg, 0), bytes[off as usize..][..len as usize]);
    }
    // The same offsets below the base are not RAM.
    let pkts = host.read(0x1000, 16);
    assert_eq!(completion(&pkts[0]).status, CplStatus::UnsupportedRequest);
    assert_eq!(emu.stats().unsupported, 1);
}

#[test]
fn reads_outside_ram_get_unsupported_request() {
    let mut mem = BufferMem::new("two ranges", image(0x2000));
    mem.add_range(PhysAddr(0x10000), image(0x1800));
    let cfg = EmulatorConfig { listen: ip(3, 2), ..Default::default() };
    let emu = spawn(mem, cfg.clone());
    let host = Host::new(ip(3, 1), cfg.listen, 7);
    for (addr, len) in [
        (0x2000u64, 4u32),
        (0x8123, 77),
        (0x117fe, 4),
        (0x11700, 0x200),
        (0xffff_ffff_0000, 4096),
        (0xffff_ffff_ffff_e000, 4096),
    ] {
        let pkts = host.read(addr, len);
        assert_eq!(pkts.len(), 1, "one completion for {addr:#x}");
        assert_eq!(pkts[0][6], 0x0a, "without data");
        let c = completion(&pkts[0]);
        assert_eq!(c.status, CplStatus::UnsupportedRequest);
        assert_eq!((u32::from(c.byte_count), u64::from(c.lower_addr)), (len, addr & 0x7f));
        assert_eq!((c.tag, c.requester), (7, REQUESTER));
        assert!(c.payload.is_empty());
    }
    // RAM on either side still reads.
    assert_eq!(host.read(0x10000, 256).len(), 1);
    assert_eq!(host.read(0x1f00, 256).len(), 1);
    assert_eq!(host.read(0x117fc, 4).len(), 1);
    let s = emu.stats();
    assert_eq!((s.requests, s.unsupported, s.bytes_served), (9, 6, 516));
}

#[test]
fn malformed_datagrams_are_dropped_and_the_next_request_served() {
    let bytes = image(0x2000);
    let cfg = EmulatorConfig { listen: ip(4, 2), ..Default::default() };
    let emu = spawn(BufferMem::new("m", bytes.clone()), cfg.clone());
    let host = Host::new(ip(4, 1), cfg.listen, 1);
    let mut good = Vec::new();
    wire::encode_read(&MemRequest { requester: REQUESTER, tag: 1, addr: 0x100, len: 64 }, &mut good);
    let mut cpl = Vec::new();
    wire::encode_completion(
        &Completion {
            completer: RequesterId(0),
            status: CplStatus::Success,
            byte_count: 4,
            requester: REQUESTER,
            tag: 1,
            lower_addr: 0,
            payload: &[1, 2, 3, 4],
        },
        &mut cpl,
    );
    let mut config_read = good.clone();
    config_read[6] = 0x04;
    let mut holes = good.clone();
    holes[13] = 0xf5;
    let mut huge = good.clone();
    huge.resize(MAX_DATAGRAM + 1, 0);
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 5],
        good[..good.len() - 1].to_vec(),
        cpl,
        config_read,
        holes,
        huge,
        vec![0xff; 64],
    ];
    for b in &bad {
        host.send(b);
    }
    assert!(host.collect(Duration::from_millis(200)).is_empty(), "no reply to a malformed datagram");
    let pkts = host.read(0x100, 64);
    assert_eq!(check_completions(&pkts, 0x100, 64, &cfg, 1), bytes[0x100..0x140]);
    let s = emu.stats();
    assert_eq!((s.malformed, s.requests), (bad.len() as u64, 1));
}

#[test]
fn writes_apply_only_with_allow_write() {
    let bytes = image(0x2000);
    for (k, allow_write) in [false, true].into_iter().enumerate() {
        let cfg =
            EmulatorConfig { listen: ip(5, 2 + k as u8), allow_write, base: 0x1000, ..Default::default() };
        let emu = spawn(BufferMem::new("w", bytes.clone()).writable(), cfg.clone());
        let host = Host::new(ip(5, 1), cfg.listen, 2);
        host.write(0x1803, b"hello, world");
        host.write(0x10, b"below the base");
        assert!(host.collect(Duration::from_millis(100)).is_empty(), "writes are posted: no completion");
        let pkts = host.read(0x1800, 16);
        let got = check_completions(&pkts, 0x1800, 16, &cfg, 2);
        let mut want = bytes[0x800..0x810].to_vec();
        if allow_write {
            want[3..15].copy_from_slice(b"hello, world");
        }
        assert_eq!(got, want, "allow_write {allow_write}");
        let s = emu.stats();
        assert_eq!((s.writes, s.writes_applied), (2, u64::from(allow_write)));
    }
}

#[test]
fn writes_to_a_file_never_reach_it() {
    let path = std::env::temp_dir().join(format!("dmastub-emulator-cow-{}.raw", std::process::id()));
    let bytes = image(0x2000);
    std::fs::write(&path, &bytes).unwrap();
    let opts =
        dmastub::phys::OpenOptions { write: dmastub::phys::WriteMode::CopyOnWrite, ..Default::default() };
    let mem = dmastub::phys::open_file(&path, &opts).unwrap();
    let cfg = EmulatorConfig { listen: ip(5, 10), allow_write: true, ..Default::default() };
    let _emu = EmulatorHandle::spawn(mem, cfg.clone()).unwrap();
    let host = Host::new(ip(5, 9), cfg.listen, 0);
    host.write(0x40, &[0xee; 8]);
    let pkts = host.read(0x40, 8);
    assert_eq!(check_completions(&pkts, 0x40, 8, &cfg, 0), [0xee; 8]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn completions_go_to_the_port_of_tag_and_15() {
    let bytes = image(0x1000);
    let cfg = EmulatorConfig { listen: ip(6, 2), ..Default::default() };
    let _emu = spawn(BufferMem::new("t", bytes.clone()), cfg.clone());
    let hosts: Vec<Host> = (0..16).map(|t| Host::new(ip(6, 1), cfg.listen, t | 0x10)).collect();
    // All 16 tags in flight at once, as dmastub's client keeps them.
    for (i, h) in hosts.iter().enumerate() {
        h.request(i as u64 * 256, 256);
    }
    for (i, h) in hosts.iter().enumerate() {
        let pkts = h.collect(Duration::from_millis(100));
        let got = check_completions(&pkts, i as u64 * 256, 256, &cfg, h.tag);
        assert_eq!(got, bytes[i * 256..][..256]);
    }
}

#[test]
fn drop_rate_one_sends_nothing() {
    let cfg = EmulatorConfig { listen: ip(7, 2), drop_rate: 1.0, ..Default::default() };
    let emu = spawn(BufferMem::new("d", image(0x2000)), cfg.clone());
    let host = Host::new(ip(7, 1), cfg.listen, 0);
    host.request(0x1000, 4096);
    host.request(0x8000, 4);
    assert!(host.collect(Duration::from_millis(200)).is_empty());
    let s = emu.stats();
    assert_eq!((s.requests, s.dropped, s.completions, s.unsupported), (2, 16 + 1, 0, 1));
    emu.stop().expect("the loop ends cleanly");
}

#[test]
fn duplicate_rate_one_sends_each_twice() {
    let bytes = image(0x2000);
    let cfg = EmulatorConfig { listen: ip(8, 2), duplicate_rate: 1.0, ..Default::default() };
    let emu = spawn(BufferMem::new("d", bytes.clone()), cfg.clone());
    let host = Host::new(ip(8, 1), cfg.listen, 0);
    host.request(0x1001, 1000);
    let pkts = host.collect(Duration::from_millis(200));
    let once: Vec<Vec<u8>> = pkts
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair.len(), 2);
            assert_eq!(pair[0], pair[1]);
            pair[0].clone()
        })
        .collect();
    assert_eq!(check_completions(&once, 0x1001, 1000, &cfg, 0), bytes[0x1001..][..1000]);
    let s = emu.stats();
    assert_eq!((s.duplicated, s.completions), (once.len() as u64, pkts.len() as u64));
}

#[test]
fn reorder_shuffles_the_same_packets() {
    let bytes = image(0x4000);
    let plain = EmulatorConfig { listen: ip(9, 2), mps: 128, ..Default::default() };
    let shuffled = EmulatorConfig { listen: ip(9, 3), reorder: true, seed: 7, ..plain.clone() };
    let _a = spawn(BufferMem::new("r", bytes.clone()), plain.clone());
    let _b = spawn(BufferMem::new("r", bytes.clone()), shuffled.clone());
    let to_plain = Host::new(ip(9, 1), plain.listen, 4);
    let to_shuffled = Host::new(ip(9, 1), shuffled.listen, 5);
    for (addr, len) in [(0x1000u64, 4096u32), (0x2003, 2000)] {
        to_plain.request(addr, len);
        to_shuffled.request(addr, len);
        let want = to_plain.collect(Duration::from_millis(150));
        let mut got = to_shuffled.collect(Duration::from_millis(150));
        assert_ne!(
            got,
            want.iter()
                .map(|p| {
                    let mut p = p.clone();
                    p[18] = 5;
                    p
                })
                .collect::<Vec<_>>(),
            "shuffled"
        );
        check_completions(&want, addr, len, &plain, 4);
        // The same packets, once put back in address order.
        got.sort_by_key(|p| std::cmp::Reverse(completion(p).byte_count));
        assert_eq!(check_completions(&got, addr, len, &plain, 5), bytes[addr as usize..][..len as usize]);
    }
}

#[test]
fn delay_is_per_completion_and_requests_are_still_pipelined() {
    let delay = Duration::from_millis(150);
    let cfg = EmulatorConfig { listen: ip(10, 2), delay, ..Default::default() };
    let _emu = spawn(BufferMem::new("late", image(0x10000)), cfg.clone());
    let hosts: Vec<Host> = (0..16).map(|t| Host::new(ip(10, 1), cfg.listen, t)).collect();
    let start = Instant::now();
    for (i, h) in hosts.iter().enumerate() {
        h.request(i as u64 * 4096, 4096);
    }
    for (i, h) in hosts.iter().enumerate() {
        let pkts = h.read_pending();
        check_completions(&pkts, i as u64 * 4096, 4096, &cfg, h.tag);
    }
    let took = start.elapsed();
    assert!(took >= delay, "{took:?}");
    assert!(took < delay * 4, "16 delayed requests served together, not one after another: {took:?}");
}

impl Host {
    /// The completions of a request already sent, until its last one.
    fn read_pending(&self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = vec![0u8; RX_BUFFER];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else { continue };
            got.push(buf[..n].to_vec());
            let c = completion(&buf[..n]);
            if usize::from(c.byte_count) <= c.data().len() {
                return got;
            }
        }
        panic!("no last completion within 5 s");
    }
}

#[test]
fn bad_configurations_are_refused_with_the_option_named() {
    let bad = [
        (EmulatorConfig { mps: 300, ..Default::default() }, "--mps"),
        (EmulatorConfig { mps: 64, ..Default::default() }, "--mps"),
        (EmulatorConfig { mps: 8192, ..Default::default() }, "--mps"),
        (EmulatorConfig { rcb: 32, ..Default::default() }, "--rcb"),
        (EmulatorConfig { drop_rate: 1.5, ..Default::default() }, "--drop-rate"),
        (EmulatorConfig { duplicate_rate: f64::NAN, ..Default::default() }, "--duplicate"),
        (EmulatorConfig { listen: ip(11, 2), base: u64::MAX - 0x10, ..Default::default() }, "--base"),
    ];
    for (cfg, option) in bad {
        let err = Emulator::bind(Box::new(BufferMem::new("c", image(0x1000))), cfg).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(option), "{err}");
    }
    assert!(EmulatorConfig::default().validate().is_ok());
}

#[test]
fn a_taken_port_is_named() {
    let cfg = EmulatorConfig { listen: ip(12, 2), ..Default::default() };
    let _first = spawn(BufferMem::new("a", image(0x1000)), cfg.clone());
    let err = Emulator::bind(Box::new(BufferMem::new("b", image(0x1000))), cfg).err().expect("port taken");
    assert!(err.to_string().contains("127.77.12.2:12288"), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

#[test]
fn the_banner_says_what_is_served_where() {
    let cfg = EmulatorConfig { listen: ip(13, 2), base: 1 << 32, reorder: true, ..Default::default() };
    let emu = Emulator::bind(Box::new(BufferMem::new("b", image(0x1000))), cfg).unwrap();
    assert_eq!(
        emu.banner(),
        "serving in-memory buffer, 4 KiB RAM in 1 range at 127.77.13.2 ports 0x3000-0x300f (MPS 256, RCB 64, \
         RAM at +0x100000000); faults: reorder, seed 1"
    );
}

#[test]
fn the_delay_queue_is_bounded() {
    let cfg = EmulatorConfig { listen: ip(15, 2), delay: Duration::from_secs(60), ..Default::default() };
    let mut emu = Emulator::bind(Box::new(BufferMem::new("q", image(0x10000))), cfg).unwrap();
    let from = SocketAddr::V4(SocketAddrV4::new(ip(15, 1), 9));
    let mut read = Vec::new();
    wire::encode_read(&MemRequest { requester: REQUESTER, tag: 0, addr: 0x1000, len: 4096 }, &mut read);
    // 16 completions a request: one request more than the queue holds.
    for _ in 0..MAX_QUEUED / 16 + 1 {
        emu.core.handle(from, &read);
    }
    assert_eq!(emu.core.tx.queued(), MAX_QUEUED);
    assert_eq!(emu.stats().overflowed, 16);
    emu.core.tx.flush(&emu.core.cfg);
    assert_eq!(emu.stats().completions, 0, "nothing is due for a minute");
}

/// Random and mutated datagrams fed straight to the handler: none may panic (debug builds
/// check overflow too), and none may be answered as if it were good.
#[test]
fn no_datagram_can_panic_the_emulator() {
    let cfg = EmulatorConfig {
        listen: ip(14, 2),
        base: 0x1000,
        allow_write: true,
        duplicate_rate: 0.1,
        drop_rate: 0.1,
        ..Default::default()
    };
    let mut emu = Emulator::bind(Box::new(BufferMem::new("f", image(0x4000)).writable()), cfg).unwrap();
    // Replies go to a port nobody listens on.
    let from = SocketAddr::V4(SocketAddrV4::new(ip(14, 1), 9));
    let mut rng = FaultRng::new(3);
    let mut seeds = Vec::new();
    for (addr, len) in [(0x1000u64, 4096u32), (0x2001, 7), (0xffff_ffff_ffff_fff8, 4), (0xffff_fffc, 4)] {
        let mut read = Vec::new();
        wire::encode_read(&MemRequest { requester: REQUESTER, tag: 0x1f, addr, len }, &mut read);
        seeds.push(read);
        let mut write = Vec::new();
        let data = vec![0xa5; len as usize];
        wire::encode_write(&MemRequest { requester: REQUESTER, tag: 0, addr, len }, &data, &mut write);
        seeds.push(write);
    }
    // The last DW of the 64-bit space, whose end does not fit in a u64 (no encoder makes it).
    for seed in &mut seeds[4..6] {
        seed[21] = 0xfc;
        emu.core.handle(from, seed);
    }
    for i in 0..200_000 {
        let mut pkt = if i % 4 == 0 {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..rng.below(4) {
            if !pkt.is_empty() {
                let at = rng.below(pkt.len());
                pkt[at] = rng.next_u64() as u8;
            }
        }
        if rng.below(8) == 0 {
            pkt.truncate(rng.below(pkt.len() + 1));
        }
        emu.core.handle(from, &pkt);
    }
    let s = emu.stats();
    assert!(s.malformed > 0 && s.requests > 0 && s.writes > 0, "{s}");
}
