//! The live part: a mixed load against `serve --live` on a guest or a rewritten image.

use super::*;

/// The live part's source: a booted guest's RAM file, or a rewritten copy of the fixture.
pub(super) enum LiveSource {
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

pub(super) fn boot_guest() -> Result<dmastub_testkit::vm::LiveVm, String> {
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

pub(super) fn live_source(dir: &Path) -> LiveSource {
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
        let mut rng = Rng::new(0x1234_5678);
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
pub(super) fn live(a: &Args, dir: &Path) {
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
    let mut rng = Rng::new(a.seed ^ 0xabcdef);
    let start = Instant::now();
    let duration = Duration::from_secs_f64(a.minutes * 60.0);
    println!("start        {}", show(rss(pid)));
    let (mut tally, mut sessions) = (Tally::default(), 0u64);
    let mut next_report = Duration::from_secs(60);
    let mut first_minute = None;
    let mut last_lost = String::new();
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
            let outcome = rsp.request(&body);
            tally.count(kind, &outcome);
            if let Outcome::Lost(why) = outcome {
                last_lost = format!("{kind}: {why}");
                continue 'outer;
            }
            if start.elapsed() >= next_report {
                let r = rss(pid);
                first_minute.get_or_insert(r);
                println!(
                    "{:>4.0} min     {}  requests {} ok, {} refused, {} lost, {sessions} sessions",
                    next_report.as_secs_f64() / 60.0,
                    show(r),
                    tally.ok,
                    tally.refused,
                    tally.lost
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
        "{} requests in {:.1} min ({sessions} sessions): {} answered, {} refused (error reply: \
         memory that does not translate or changed under us), {} without a reply",
        tally.total(),
        start.elapsed().as_secs_f64() / 60.0,
        tally.ok,
        tally.refused,
        tally.lost
    );
    for (k, [o, r, _]) in &tally.by_kind {
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
