//! gdb's `dump binary memory` of 64 MiB: dmastub against gdbserver (and a live RAM file).

use super::*;

/// One gdb server the dump comparison runs gdb against: where, and which 64 MiB to dump.
pub(super) struct DumpServer {
    name: String,
    port: u16,
    start: u64,
    /// gdb commands before the dump (QEMU's gdbstub: its physical-memory mode).
    setup: Vec<String>,
}

/// The medians of one server's dumps.
pub(super) struct DumpStats {
    /// Seconds the `dump binary memory` command took inside gdb (connection excluded).
    dump: f64,
    /// The whole gdb process: wall time and peak RSS.
    wall: Duration,
    gdb_rss_kib: i64,
}

impl DumpStats {
    fn mb_per_s(&self) -> f64 {
        DUMP as f64 / 1e6 / self.dump
    }
}

/// gdb's `dump binary memory` of DUMP bytes from each server, `rounds` times, the servers in a
/// different order each round; the same gdb and the same commands for all (only the port and
/// the address differ). Each dump's size is checked; returns the medians and the files of the
/// last round (for the caller to check their bytes), or an error saying what went wrong.
pub(super) fn dump_rounds(
    servers: &[DumpServer],
    rounds: usize,
    out: &Path,
) -> Result<Vec<DumpStats>, String> {
    let mut samples: Vec<Vec<(f64, Duration, i64)>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let s = &servers[i];
            let file = out.join(format!("dump-{i}.bin"));
            let _ = std::fs::remove_file(&file);
            let dump = format!("dump binary memory {} {:#x} {:#x}", file.display(), s.start, s.start + DUMP);
            let timed = format!(
                "python import time; t0 = time.perf_counter(); gdb.execute({dump:?}); \
                 print('DUMP-SECONDS %.6f' % (time.perf_counter() - t0))"
            );
            let mut commands: Vec<&str> = s.setup.iter().map(String::as_str).collect();
            commands.extend([timed.as_str(), "disconnect"]);
            let m = measure(&mut gdb_command(s.port, None, &commands), "");
            let secs = m
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("DUMP-SECONDS ")?.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("gdb's dump from {} failed: {}{}", s.name, m.stdout, m.stderr))?;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if len != DUMP {
                return Err(format!("gdb's dump from {} wrote {len} bytes, not {DUMP}", s.name));
            }
            samples[i].push((secs, m.wall, m.peak_rss_kib));
        }
    }
    Ok(samples
        .iter()
        .map(|v| DumpStats {
            dump: median(&v.iter().map(|s| s.0).collect::<Vec<_>>()),
            wall: median(&v.iter().map(|s| s.1).collect::<Vec<_>>()),
            gdb_rss_kib: median(&v.iter().map(|s| s.2).collect::<Vec<_>>()),
        })
        .collect())
}

/// Whether two files hold the same bytes (read a MiB at a time, so this process stays small: a
/// child's peak RSS starts from ours, see [`common::measure`]).
pub(super) fn files_equal(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else { return false };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let (na, nb) = (read_full(&mut fa, &mut ba), read_full(&mut fb, &mut bb));
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// Fills `buf` from `r` as far as the file goes; the bytes read.
pub(super) fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// The environment variable that turns this benchmark's binary into the memory holder; its value
/// is `OFFSET:FILE`, the bytes to hold.
pub(super) const HOLD_ENV: &str = "DMASTUB_COMPARE_HOLD";

/// The holder process for gdbserver: reads DUMP bytes of FILE at OFFSET into memory of its own
/// (every page touched), prints their address and waits for stdin to close. The bytes are the
/// ones dmastub serves, so both servers send the same packets (gdbserver run-length encodes its
/// replies, so memory of zeros would flatter it).
pub(super) fn hold_memory() {
    let spec = std::env::var(HOLD_ENV).unwrap_or_default();
    let (offset, file) = spec.split_once(':').unwrap_or(("0", ""));
    let mut buf = vec![0u8; DUMP as usize];
    let read = std::fs::File::open(file).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut buf, offset.parse().unwrap_or(0))
    });
    if let Err(e) = read {
        println!("cannot read {DUMP} bytes at {offset} of {file}: {e}");
        return;
    }
    println!("{:#x}", buf.as_ptr() as u64);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    std::hint::black_box(&buf);
}

/// gdbserver attached to a process holding DUMP bytes of `file` at `offset`; both stopped when
/// dropped.
pub(super) struct GdbServer {
    holder: Child,
    server: Child,
    port: u16,
    buffer: u64,
}

impl GdbServer {
    fn start(file: &Path, offset: u64) -> Result<GdbServer, String> {
        let exe = std::env::current_exe().map_err(|e| format!("where is this benchmark? {e}"))?;
        let mut holder = Command::new(exe)
            .env(HOLD_ENV, format!("{offset}:{}", file.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the memory holder: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut line);
        let Ok(buffer) = u64::from_str_radix(line.trim().trim_start_matches("0x"), 16) else {
            let _ = holder.kill();
            return Err(format!("the memory holder printed {line:?}, not its address"));
        };
        let mut server = match Command::new("gdbserver")
            .args(["--attach", "127.0.0.1:0", &holder.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(s) => s,
            Err(e) => {
                let _ = holder.kill();
                return Err(format!("start gdbserver: {e}"));
            }
        };
        let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
        let mut said = String::new();
        let port = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(p) = l.strip_prefix("Listening on port ") {
                        break p.trim().parse::<u16>().ok();
                    }
                    said.push_str(&l);
                    said.push('\n');
                }
                _ => break None,
            }
        };
        // Keep draining: gdbserver logs every connection.
        std::thread::spawn(move || for _ in lines {});
        let mut g = GdbServer { holder, server, port: 0, buffer };
        match port {
            Some(p) => g.port = p,
            None => return Err(format!("gdbserver --attach did not listen; it said:\n{said}")),
        }
        Ok(g)
    }
}

impl Drop for GdbServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub(super) fn compare_dump(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("gdb dump binary memory, 64 MiB");
    println!("\n== 1. {} ==", c.title);
    if version("gdb", &["--version"]).is_none() {
        c.skip("gdb is not installed (apt-get install gdb)".into());
        return c;
    }
    let raw = fx.raw.to_str().expect("UTF-8 path");
    // Physical mode: no kernel, plain memory; virtual mode: the kernel found with no hints, its
    // page tables. gdb sends the same commands to both.
    let phys = Stub::start(&["--image", raw, "--no-linux"]);
    let virt = Stub::start(&["--image", raw]);
    let mut servers = vec![
        DumpServer { name: "dmastub, phys mode".into(), port: phys.port, start: DUMP_PHYS, setup: vec![] },
        DumpServer {
            name: "dmastub, virt mode".into(),
            port: virt.port,
            start: fx.page_offset_base + DUMP_PHYS,
            setup: vec![],
        },
    ];
    let gdbserver = match version("gdbserver", &["--version"]) {
        None => {
            c.skip("gdbserver is not installed (apt-get install gdbserver)".into());
            None
        }
        Some(_) => match GdbServer::start(&fx.raw, DUMP_PHYS) {
            Ok(g) => {
                servers.push(DumpServer {
                    name: "gdbserver".into(),
                    port: g.port,
                    start: g.buffer,
                    setup: vec![],
                });
                Some(g)
            }
            Err(e) => {
                c.skip(format!("gdbserver: {e}"));
                None
            }
        },
    };
    let out = std::env::temp_dir().join(format!("dmastub-compare-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&out);
    println!(
        "  phys {DUMP_PHYS:#x}, virt {:#x} (direct map: the same bytes){}; median of {DUMP_ROUNDS} rounds",
        fx.page_offset_base + DUMP_PHYS,
        gdbserver.as_ref().map_or(String::new(), |g| format!(", gdbserver's process at {:#x}", g.buffer))
    );
    let stats = match dump_rounds(&servers, DUMP_ROUNDS, &out) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out);
            c.skip(e);
            return c;
        }
    };
    // The last round's files hold the same bytes: phys, virt (the direct map) and the holder's copy.
    let same = |i: usize, j: usize| {
        files_equal(&out.join(format!("dump-{i}.bin")), &out.join(format!("dump-{j}.bin")))
    };
    let (virt_ok, holder_ok) = (same(0, 1), gdbserver.is_none() || same(0, 2));
    let _ = std::fs::remove_dir_all(&out);
    if !virt_ok || !holder_ok {
        c.skip(format!("the dumps differ (phys == virt: {virt_ok}, phys == gdbserver's: {holder_ok})"));
        return c;
    }
    let mut data = serde_json::Map::new();
    for (s, st) in servers.iter().zip(&stats) {
        println!(
            "  {:<20} dump {:>7.1} ms  {:>6.1} MB/s   whole gdb run {:>9}, gdb peak {}",
            s.name,
            st.dump * 1e3,
            st.mb_per_s(),
            ms(st.wall),
            mib(st.gdb_rss_kib)
        );
        data.insert(
            s.name.clone(),
            json!({"dump_seconds": st.dump, "mb_per_s": st.mb_per_s(), "gdb_wall_seconds": st.wall.as_secs_f64(),
                   "gdb_peak_rss_kib": st.gdb_rss_kib, "start": format!("{:#x}", s.start)}),
        );
    }
    c.data = Value::Object(data);
    if let Some(peer) = stats.get(2) {
        println!(
            "  (a whole gdb run with gdbserver also loads the symbols of the process it debugs, this \
             benchmark's binary; the ratios are of the dump command alone)"
        );
        for (mode, ours) in [("phys", &stats[0]), ("virt", &stats[1])] {
            c.figures.push(Figure {
                label: format!("{mode} mode vs gdbserver: MB/s"),
                ratio: ours.mb_per_s() / peer.mb_per_s(),
                sense: "more MB/s",
                peer: "gdbserver".into(),
                ours: format!("{:.1} MB/s", ours.mb_per_s()),
                theirs: format!("{:.1} MB/s", peer.mb_per_s()),
                target: Some((1.0 / 1.1, "dump within 10% of gdbserver")),
            });
        }
        c.caption = Some(format!(
            "the same 64 MiB of the image through each server to gdb 13.1; time of the dump command in gdb, \
             median of {DUMP_ROUNDS}"
        ));
    }
    drop(gdbserver);
    c
}

/// A free TCP port on loopback (bound and released: QEMU's -gdb takes a port, not port 0).
pub(super) fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()
}

/// The same dump from a live VM: QEMU's own gdbstub (physical mode, `Qqemu.PhyMemMode:1`)
/// against dmastub serving the VM's RAM file (`serve --live`), phys and virt, on the demo's
/// guest. The guest is panicked and paused first, so that every server dumps the same bytes.
pub(super) fn compare_live_dump(_fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("gdb dump binary memory, 64 MiB, live VM");
    println!("\n== 1b. {} ==", c.title);
    let missing = dmastub_testkit::vm::missing_packages();
    if !missing.is_empty() {
        c.skip(format!("the live VM needs {} (apt-get install {})", missing.join(", "), missing.join(" ")));
        return c;
    }
    let opts = dmastub_testkit::vm::GuestOptions {
        cache: dmastub_testkit::vm::guest::default_cache_dir(),
        ..Default::default()
    };
    let mut progress = |line: &str| println!("  .. {line}");
    let files = match dmastub_testkit::vm::guest::prepare(&opts, &mut progress) {
        Ok(f) => f,
        Err(e) => {
            c.skip(format!("cannot prepare the guest: {e}"));
            return c;
        }
    };
    let Some(qemu_port) = free_port() else {
        c.skip("no free port for QEMU's gdbstub".into());
        return c;
    };
    let cfg = dmastub_testkit::vm::VmConfig { qemu_gdb_port: Some(qemu_port), ..Default::default() };
    let mut vm = match dmastub_testkit::vm::LiveVm::boot(&files, &cfg, &mut progress) {
        Ok(vm) => vm,
        Err(e) => {
            c.skip(format!("the guest did not boot: {e}"));
            return c;
        }
    };
    if let Err(e) = vm.panic(Duration::from_secs(120)).and_then(|_| vm.set_running(false)) {
        c.skip(format!("could not panic and pause the guest: {e}"));
        return c;
    }
    let ram = vm.ram_path().to_str().expect("UTF-8 path").to_string();
    let kernel = Command::new(BIN).args(["kernel", "--live", &ram]).output();
    let page_offset_base = kernel.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
            let v = l.strip_prefix("page_offset_base")?.split_whitespace().next()?;
            u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
        })
    });
    let Some(page_offset_base) = page_offset_base else {
        c.skip("dmastub kernel --live found no page_offset_base".into());
        return c;
    };
    println!(
        "  guest: {} under QEMU ({}), {} MiB RAM file; panicked and paused; QEMU's gdbstub on port {qemu_port}",
        vm.report.release, vm.accel, cfg.mem_mib
    );
    let phys = Stub::start(&["--live", &ram, "--no-linux"]);
    let virt = Stub::start(&["--live", &ram]);
    let servers = vec![
        DumpServer {
            name: "QEMU gdbstub, phys".into(),
            port: qemu_port,
            start: DUMP_PHYS,
            setup: vec!["maint packet Qqemu.PhyMemMode:1".into()],
        },
        DumpServer { name: "dmastub live, phys".into(), port: phys.port, start: DUMP_PHYS, setup: vec![] },
        DumpServer {
            name: "dmastub live, virt".into(),
            port: virt.port,
            start: page_offset_base + DUMP_PHYS,
            setup: vec![],
        },
    ];
    let out = std::env::temp_dir().join(format!("dmastub-compare-live-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&out);
    let stats = dump_rounds(&servers, DUMP_ROUNDS, &out);
    let read = |i: usize| std::fs::read(out.join(format!("dump-{i}.bin"))).unwrap_or_default();
    let (qemu_bytes, phys_bytes, virt_bytes) = (read(0), read(1), read(2));
    let _ = std::fs::remove_dir_all(&out);
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            c.skip(e);
            return c;
        }
    };
    let pages_equal = qemu_bytes.chunks(4096).zip(phys_bytes.chunks(4096)).filter(|(a, b)| a == b).count();
    let pages = (DUMP / 4096) as usize;
    println!(
        "  same bytes: dmastub phys == virt: {}; QEMU == dmastub in {pages_equal} of {pages} pages",
        phys_bytes == virt_bytes
    );
    if phys_bytes != virt_bytes || pages_equal * 100 < pages * 99 {
        c.skip(format!(
            "the dumps differ (dmastub phys == virt: {}, QEMU and dmastub agree on {pages_equal} of {pages} pages)",
            phys_bytes == virt_bytes
        ));
        return c;
    }
    let mut data = serde_json::Map::new();
    for (s, st) in servers.iter().zip(&stats) {
        println!(
            "  {:<20} dump {:>7.1} ms  {:>6.1} MB/s   whole gdb run {:>9}",
            s.name,
            st.dump * 1e3,
            st.mb_per_s(),
            ms(st.wall)
        );
        data.insert(s.name.clone(), json!({"dump_seconds": st.dump, "mb_per_s": st.mb_per_s(), "gdb_wall_seconds": st.wall.as_secs_f64()}));
    }
    data.insert("accel".into(), json!(vm.accel));
    c.data = Value::Object(data);
    c.caption = Some(format!(
        "the demo's guest ({}, {}), panicked and paused; QEMU's gdbstub in physical mode vs dmastub on its RAM file",
        vm.report.release, vm.accel
    ));
    for (mode, ours) in [("phys", &stats[1]), ("virt", &stats[2])] {
        c.figures.push(Figure {
            label: format!("live {mode} vs QEMU gdbstub: dump throughput"),
            ratio: ours.mb_per_s() / stats[0].mb_per_s(),
            sense: "more MB/s",
            peer: "QEMU gdbstub".into(),
            ours: format!("{:.1} MB/s", ours.mb_per_s()),
            theirs: format!("{:.1} MB/s", stats[0].mb_per_s()),
            target: Some((1.0, "dump at least as fast as QEMU's gdbstub")),
        });
    }
    c
}
