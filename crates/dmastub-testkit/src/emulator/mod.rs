//! A NetTLP adapter and the root complex behind it, played over any memory source.
//!
//! Tests and demos need a machine to DMA from without the hardware: this answers the memory
//! reads that libtlp (or dmastub's own client) sends to an adapter, from a [`PhysMem`], with
//! the completions a real root complex would send back: split at the read-completion boundary
//! and the max payload size, Unsupported Request outside RAM. Faults (drops, delays, reordering,
//! duplicates) can be injected to exercise a client's recovery.
//!
//! The adapter firmware routes completions by `tag & 0xF`, so there are 16 UDP sockets, one per
//! port `0x3000 + tag`; a request's completions go to the requester's IP at the port of its tag,
//! from the socket of that port. One thread runs everything (edge-triggered `mio` polling), so
//! there is no locking and requests on all 16 tags are served as they come.

mod config;
mod faults;
mod tx;

pub use config::{EmulatorConfig, EmulatorConfigError, EmulatorStats};

use config::{Counters, bump};
use dmastub::PhysAddr;
use dmastub::phys::nettlp::mmsg::RecvBatch;
use dmastub::phys::nettlp::wire::{self, MAX_DATAGRAM, MAX_TAGS, MemRequest, Tlp, port_for_tag};
use dmastub::phys::{PhysMem, find_range};
use faults::{FaultRng, RateLimit};
use log::{debug, info, warn};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tx::Tx;

/// Socket buffers large enough that a burst on all 16 tags (16 × 4 KiB reads, or a flood from
/// a benchmark) is not dropped by the kernel before the loop drains it.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read from one socket before the others get their turn.
const DRAIN_BUDGET: usize = 64;
/// How often the counters are logged (at info level) while they change.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// A receive buffer that holds any UDP datagram, so an oversized one is seen whole and refused
/// rather than silently truncated into something that parses.
const RX_BUFFER: usize = 64 * 1024;
/// Datagrams one receive call takes.
const RX_BATCH: usize = 16;

/// The part of the emulator that handles one datagram.
struct Core {
    mem: Box<dyn PhysMem>,
    cfg: EmulatorConfig,
    /// Where reads from sources that cannot lend their bytes in place land.
    read_buf: Vec<u8>,
    tx: Tx,
    malformed_warnings: RateLimit,
    write_warnings: RateLimit,
}

impl Core {
    fn handle(&mut self, from: SocketAddr, datagram: &[u8]) {
        let SocketAddr::V4(from) = from else {
            return self.malformed(from, "not an IPv4 sender");
        };
        if datagram.len() > MAX_DATAGRAM {
            let why = format!("{} bytes is longer than any NetTLP datagram ({MAX_DATAGRAM})", datagram.len());
            return self.malformed(SocketAddr::V4(from), &why);
        }
        match wire::parse(datagram) {
            Ok(Tlp::MemRead(req)) => self.serve_read(*from.ip(), &req),
            Ok(Tlp::MemWrite(req, data)) => self.apply_write(from, &req, data),
            Ok(Tlp::Completion(c)) => {
                let why = format!("a completion (tag {}) sent to the root complex", c.tag);
                self.malformed(SocketAddr::V4(from), &why)
            }
            Err(e) => self.malformed(SocketAddr::V4(from), &e.to_string()),
        }
    }

    fn malformed(&mut self, from: SocketAddr, why: &str) {
        bump(&self.tx.counters.malformed, 1);
        if let Some(more) = self.malformed_warnings.note() {
            warn!("nettlp-emulator: dropped a datagram from {from}: {why}{more}");
        }
    }

    fn serve_read(&mut self, from: Ipv4Addr, req: &MemRequest) {
        bump(&self.tx.counters.requests, 1);
        let sock = usize::from(req.tag & 0xf);
        let to = SocketAddrV4::new(from, port_for_tag(req.tag & 0xf));
        let len = u64::from(req.len);
        let (Some(end), Some(src)) = (req.addr.checked_add(len), req.addr.checked_sub(self.cfg.base)) else {
            return self.tx.unsupported(&self.cfg, req, sock, to);
        };
        let src = PhysAddr(src);
        if find_range(self.mem.ram(), src, len).is_none() {
            return self.tx.unsupported(&self.cfg, req, sock, to);
        }
        let n = req.len as usize;
        let in_place = self.mem.bytes_at(src, len).is_some_and(|b| b.len() == n);
        if !in_place {
            let read = match self.read_buf.get_mut(..n) {
                Some(buf) => self.mem.read(src, buf).map_err(|e| e.to_string()),
                None => Err(format!("{n} bytes is more than a request can ask for")),
            };
            if let Err(why) = read {
                debug!("nettlp-emulator: read of {n} bytes at {:#x} for {from}: {why}", req.addr);
                return self.tx.unsupported(&self.cfg, req, sock, to);
            }
        }
        let data = if in_place { self.mem.bytes_at(src, len) } else { self.read_buf.get(..n) };
        match data {
            Some(data) if data.len() == n => {
                bump(&self.tx.counters.bytes_served, len);
                self.tx.complete(&self.cfg, req, end, data, sock, to);
            }
            _ => self.tx.unsupported(&self.cfg, req, sock, to),
        }
    }

    fn apply_write(&mut self, from: SocketAddrV4, req: &MemRequest, data: &[u8]) {
        bump(&self.tx.counters.writes, 1);
        let result = if !self.cfg.allow_write {
            Err("the emulator was started without --allow-write".to_string())
        } else {
            match req.addr.checked_sub(self.cfg.base) {
                Some(src) => self.mem.write(PhysAddr(src), data).map_err(|e| e.to_string()),
                None => Err(format!("below the RAM base {:#x}", self.cfg.base)),
            }
        };
        match result {
            Ok(()) => bump(&self.tx.counters.writes_applied, 1),
            Err(why) => {
                if let Some(more) = self.write_warnings.note() {
                    warn!(
                        "nettlp-emulator: dropped a write of {} bytes at {:#x} from {from}: {why}{more}",
                        data.len(),
                        req.addr
                    );
                }
            }
        }
    }
}

/// The emulated adapter: 16 bound UDP sockets and the loop that serves them.
pub struct Emulator {
    poll: Poll,
    events: Events,
    /// Sockets that may still hold datagrams (edge-triggered: only a drain to `WouldBlock`
    /// clears this).
    readable: [bool; MAX_TAGS as usize],
    rx: RecvBatch,
    core: Core,
}

impl Emulator {
    /// Binds `config.listen` ports 0x3000 to 0x300f. Fails on a bad configuration, or naming
    /// the address that could not be bound.
    pub fn bind(mem: Box<dyn PhysMem>, config: EmulatorConfig) -> io::Result<Emulator> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if let Some(last) = mem.ram().last()
            && last.end().checked_add(config.base).is_none()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--base {:#x} puts the end of {}'s RAM ({:#x}) past the top of the 64-bit address space",
                    config.base,
                    mem.name(),
                    last.end()
                ),
            ));
        }
        let poll = Poll::new()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create an epoll instance: {e}")))?;
        let mut sockets = Vec::with_capacity(usize::from(MAX_TAGS));
        for tag in 0..MAX_TAGS {
            let addr = SocketAddrV4::new(config.listen, port_for_tag(tag));
            let mut socket = udp_socket(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind UDP {addr} (port {:#x}): {e}", addr.port()))
            })?;
            poll.registry()
                .register(&mut socket, Token(usize::from(tag)), Interest::READABLE)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot poll UDP socket {addr}: {e}")))?;
            sockets.push(socket);
        }
        let tx = Tx {
            sockets,
            counters: Arc::new(Counters::default()),
            rng: FaultRng::new(config.seed),
            now: Instant::now(),
            packet: Vec::with_capacity(MAX_DATAGRAM),
            scratch: Vec::with_capacity(MAX_DATAGRAM),
            batch: Vec::new(),
            delayed: VecDeque::new(),
            ready: VecDeque::new(),
            pool: Vec::new(),
            gso: true,
            send_warnings: RateLimit::default(),
            overflow_warnings: RateLimit::default(),
        };
        let core = Core {
            mem,
            cfg: config,
            read_buf: vec![0; wire::MAX_TLP_BYTES],
            tx,
            malformed_warnings: RateLimit::default(),
            write_warnings: RateLimit::default(),
        };
        Ok(Emulator {
            poll,
            events: Events::with_capacity(64),
            readable: [false; MAX_TAGS as usize],
            rx: RecvBatch::new(RX_BATCH, RX_BUFFER),
            core,
        })
    }

    /// One line for a startup banner: what is served where, and how.
    pub fn banner(&self) -> String {
        let cfg = &self.core.cfg;
        let base = if cfg.base == 0 { String::new() } else { format!(", RAM at +{:#x}", cfg.base) };
        let write = if cfg.allow_write { ", writes applied (the file is never changed)" } else { "" };
        format!(
            "serving {} at {} ports {:#x}-{:#x} (MPS {}, RCB {}{base}{write}){}",
            self.core.mem.describe(),
            cfg.listen,
            port_for_tag(0),
            port_for_tag(MAX_TAGS - 1),
            cfg.mps,
            cfg.rcb,
            cfg.faults()
        )
    }

    /// The configuration in force.
    pub fn config(&self) -> &EmulatorConfig {
        &self.core.cfg
    }

    /// What it has done so far.
    pub fn stats(&self) -> EmulatorStats {
        self.core.tx.counters.snapshot()
    }

    /// Serves until `stop` is set (seen within 50 ms). Fails only when polling itself fails.
    pub fn run_until(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut last_report = Instant::now();
        let mut reported = EmulatorStats::default();
        while !stop.load(Ordering::Relaxed) {
            let wait = if self.readable.contains(&true) { Duration::ZERO } else { self.core.tx.wait() };
            match self.poll.poll(&mut self.events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("polling the NetTLP sockets failed: {e}")));
                }
            }
            for event in self.events.iter() {
                if let Some(r) = self.readable.get_mut(event.token().0) {
                    *r = true;
                }
            }
            self.core.tx.now = Instant::now();
            self.drain();
            self.core.tx.flush(&self.core.cfg);
            if last_report.elapsed() >= REPORT_EVERY {
                let stats = self.stats();
                if stats != reported {
                    info!("nettlp-emulator: {stats}");
                    reported = stats;
                }
                last_report = Instant::now();
            }
        }
        info!("nettlp-emulator: stopped: {}", self.stats());
        Ok(())
    }

    /// Reads up to [`DRAIN_BUDGET`] datagrams from each readable socket.
    fn drain(&mut self) {
        for (i, readable) in self.readable.iter_mut().enumerate() {
            if !*readable {
                continue;
            }
            // Whole batches (one recvmmsg each) up to the budget of datagrams.
            for _ in 0..DRAIN_BUDGET.div_ceil(self.rx.capacity()) {
                let Some(socket) = self.core.tx.sockets.get(i) else {
                    *readable = false;
                    break;
                };
                match self.rx.recv(socket) {
                    Ok(n) => {
                        for k in 0..n {
                            if let Some(from) = self.rx.sender(k) {
                                self.core.handle(SocketAddr::V4(from), self.rx.get(k));
                            }
                        }
                        if n < self.rx.capacity() {
                            *readable = false;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Epoll says again when there is more; spinning on an error would not.
                        *readable = false;
                        if let Some(more) = self.core.malformed_warnings.note() {
                            warn!(
                                "nettlp-emulator: receiving on {}:{:#x} failed: {e}{more}",
                                self.core.cfg.listen,
                                port_for_tag(i as u8)
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A non-blocking UDP socket bound to `addr` with large buffers.
fn udp_socket(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at net.core.[rw]mem_max; smaller buffers only cost drops under load.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        debug!("nettlp-emulator: {addr}: SO_RCVBUF: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        debug!("nettlp-emulator: {addr}: SO_SNDBUF: {e}");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// An emulator running in its own thread: stopped and joined when dropped.
pub struct EmulatorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    counters: Arc<Counters>,
}

impl EmulatorHandle {
    /// Binds (in the caller's thread, so a bind error comes back here) and starts serving.
    pub fn spawn(mem: Box<dyn PhysMem>, config: EmulatorConfig) -> io::Result<EmulatorHandle> {
        let mut emulator = Emulator::bind(mem, config)?;
        let counters = emulator.core.tx.counters.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nettlp-emulator".to_string())
            .spawn(move || emulator.run_until(&flag))?;
        Ok(EmulatorHandle { stop, thread: Some(thread), counters })
    }

    /// What the emulator has done so far, read while it runs.
    pub fn stats(&self) -> EmulatorStats {
        self.counters.snapshot()
    }

    /// Stops the loop and returns how it ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("the emulator thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            warn!("nettlp-emulator: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
