//! The packets part: well-framed packets with random payloads against `serve --image`.

use super::*;

/// A random well-framed packet body: the kinds gdb sends, with random (often absurd) fields.
pub(super) fn random_packet(rng: &mut Rng) -> (&'static str, Vec<u8>) {
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
pub(super) fn packets(a: &Args, dir: &Path) {
    let image = unpacked(dir, "post-panic.raw.zst");
    println!();
    println!("== random packets: {} well-framed packets to serve --image {}", a.packets, image.display());
    let server = serve(&a.bin, &["--image", image.to_str().unwrap()]);
    let port = server.port.expect("port");
    let pid = server.pid();
    let mut rng = Rng::new(a.seed);
    let start = Instant::now();
    println!("start        {}", show(rss(pid)));
    let mut rsp = Rsp::connect(port).expect("connect");
    let (mut tally, mut reconnects) = (Tally::default(), 0u64);
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
        tally.count(kind, &out);
        match out {
            Outcome::Ok | Outcome::Refused => {}
            Outcome::Lost(why) => {
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
        "{} packets in {:.1} s: {} answered, {} refused (error or empty reply), {} without a \
         reply (connection closed or timed out; {reconnects} reconnects)",
        tally.total(),
        start.elapsed().as_secs_f64(),
        tally.ok,
        tally.refused,
        tally.lost
    );
    for (k, [o, r, l]) in &tally.by_kind {
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
