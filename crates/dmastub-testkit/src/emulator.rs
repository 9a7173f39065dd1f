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

use dmastub::PhysAddr;
use dmastub::phys::nettlp::mmsg::{self, RecvBatch};
use dmastub::phys::nettlp::wire::{
    self, Completion, CplStatus, MAX_DATAGRAM, MAX_TAGS, MemRequest, PORT_BASE, RequesterId, Tlp,
    port_for_tag,
};
use dmastub::phys::{PhysMem, find_range};
use log::{debug, info, warn};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Socket buffers large enough that a burst on all 16 tags (16 × 4 KiB reads, or a flood from
/// a benchmark) is not dropped by the kernel before the loop drains it.
const SOCKET_BUFFER: usize = 4 << 20;
/// Most completions waiting to go out (delayed, reordered or blocked): beyond this they are
/// dropped, so a flood against a long `--delay-us` cannot take unbounded memory.
const MAX_QUEUED: usize = 64 * 1024;
/// Spare packet buffers kept for reuse.
const POOL_KEEP: usize = 1024;
/// Datagrams read from one socket before the others get their turn.
const DRAIN_BUDGET: usize = 64;
/// Longest poll wait: how soon a stop request is seen.
const TICK: Duration = Duration::from_millis(50);
/// How often the counters are logged (at info level) while they change.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// A receive buffer that holds any UDP datagram, so an oversized one is seen whole and refused
/// rather than silently truncated into something that parses.
const RX_BUFFER: usize = 64 * 1024;
/// Datagrams one receive call takes.
const RX_BATCH: usize = 16;
/// Bytes before a CplD's payload: the NetTLP header and the 3-DW completion header.
const CPLD_HEADER: usize = wire::NETTLP_HEADER_LEN + 12;
/// Most completions the direct path sends for one read: 4096 bytes at the smallest MPS (128)
/// make 33 at most; a read that needs more takes the queued path.
const MAX_PIECES: usize = 48;
/// Most datagrams the kernel cuts one UDP GSO message into (`UDP_MAX_SEGMENTS` before Linux
/// 6.9; later kernels take 128).
const MAX_SEGMENTS: usize = 64;
/// The zero padding after unaligned data.
const ZEROS: [u8; 4] = [0; 4];

/// How the emulated adapter and root complex behave. [`Default`] gives the CLI's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatorConfig {
    /// Address the 16 UDP sockets listen on (the adapter's IP).
    pub listen: Ipv4Addr,
    /// The source's RAM appears at physical `address + base`, so tests can place RAM above
    /// 4 GiB (where requests take the 4-DW header).
    pub base: u64,
    /// Max payload size: no completion carries more bytes (a power of two, 128 to 4096).
    pub mps: u32,
    /// Read completion boundary: every completion but a request's last ends at a multiple of
    /// it (64 or 128).
    pub rcb: u32,
    /// The completer ID written into completions.
    pub completer: RequesterId,
    /// Probability that a completion is not sent.
    pub drop_rate: f64,
    /// How late each completion is sent.
    pub delay: Duration,
    /// Send the completions of a request, and of the requests that arrive together, in a
    /// shuffled order.
    pub reorder: bool,
    /// Probability that a completion is sent twice.
    pub duplicate_rate: f64,
    /// Seed of the fault injector's random numbers: a run is repeatable.
    pub seed: u64,
    /// Apply memory writes to the source (otherwise they are dropped with a warning).
    pub allow_write: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: Ipv4Addr::new(127, 0, 0, 2),
            base: 0,
            mps: 256,
            rcb: 64,
            completer: RequesterId(0),
            drop_rate: 0.0,
            delay: Duration::ZERO,
            reorder: false,
            duplicate_rate: 0.0,
            seed: 1,
            allow_write: false,
        }
    }
}

impl EmulatorConfig {
    /// Checks the values a real root complex could have; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if !self.mps.is_power_of_two() || !(128..=4096).contains(&self.mps) {
            return Err(format!(
                "max payload size (--mps) {} must be a power of two from 128 to 4096",
                self.mps
            ));
        }
        if self.rcb != 64 && self.rcb != 128 {
            return Err(format!("read completion boundary (--rcb) {} must be 64 or 128", self.rcb));
        }
        for (what, p) in [
            ("drop rate (--drop-rate)", self.drop_rate),
            ("duplicate rate (--duplicate)", self.duplicate_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{what} {p} must be a probability from 0 to 1"));
            }
        }
        Ok(())
    }

    /// The faults injected, for the banner: empty when there are none.
    fn faults(&self) -> String {
        let mut f = Vec::new();
        if self.drop_rate > 0.0 {
            f.push(format!("drop {}", self.drop_rate));
        }
        if !self.delay.is_zero() {
            f.push(format!("delay {} µs", self.delay.as_micros()));
        }
        if self.reorder {
            f.push("reorder".to_string());
        }
        if self.duplicate_rate > 0.0 {
            f.push(format!("duplicate {}", self.duplicate_rate));
        }
        if f.is_empty() { String::new() } else { format!("; faults: {}, seed {}", f.join(", "), self.seed) }
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// What the emulator has done so far.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct EmulatorStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The counters behind [`EmulatorStats`], shared with an [`EmulatorHandle`] so a test
        /// can read them while the loop runs in its thread.
        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> EmulatorStats {
                EmulatorStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Memory read requests received.
    requests,
    /// Completions handed to the kernel (duplicates included, drops not).
    completions,
    /// Reads answered with Unsupported Request (outside RAM, or the source failed).
    unsupported,
    /// Bytes of memory served by successful reads.
    bytes_served,
    /// Completions dropped on purpose (`drop_rate`).
    dropped,
    /// Completions sent twice on purpose (`duplicate_rate`).
    duplicated,
    /// Datagrams dropped because they were not a request we can serve.
    malformed,
    /// Memory write requests received.
    writes,
    /// Memory writes applied to the source.
    writes_applied,
    /// Completions the kernel refused to send.
    send_errors,
    /// Completions dropped because too many were queued.
    overflowed,
}

impl fmt::Display for EmulatorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reads ({} bytes served), {} completions sent, {} UR, {} dropped, {} duplicated, {} malformed, \
             {} writes ({} applied), {} send errors, {} queue overflows",
            self.requests,
            self.bytes_served,
            self.completions,
            self.unsupported,
            self.dropped,
            self.duplicated,
            self.malformed,
            self.writes,
            self.writes_applied,
            self.send_errors,
            self.overflowed
        )
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Lets the first 20 warnings of a kind through, then every 1000th, so a flood of bad packets
/// cannot fill the log (or a pipe nobody reads).
#[derive(Default)]
struct RateLimit {
    seen: u64,
}

impl RateLimit {
    /// `Some(suffix)` when this occurrence should be logged.
    fn note(&mut self) -> Option<String> {
        self.seen += 1;
        match self.seen {
            1..20 => Some(String::new()),
            20 => Some(" (more of these are logged every 1000th)".to_string()),
            n if n.is_multiple_of(1000) => Some(format!(" ({n} so far)")),
            _ => None,
        }
    }
}

/// xorshift64: the fault injector needs repeatable, cheap randomness, nothing stronger.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that 0 and neighbouring seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with probability `p`; draws nothing when `p` is 0, so a run without faults uses no
    /// randomness at all.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || ((self.next() >> 11) as f64) < p * (1u64 << 53) as f64)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The pieces a root complex answers a read of `len` bytes at `addr` with, as (address of the
/// first byte, bytes): each as long as the max payload size allows, and each but the last
/// ending at a read-completion boundary. `end` must not wrap (the caller checked).
fn split(addr: u64, end: u64, mps: u32, rcb: u32) -> impl Iterator<Item = (u64, u32)> {
    let mut pos = addr;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        // The payload starts at the DW holding `pos` and may reach `cap`.
        let cap = (pos & !3) + u64::from(mps);
        // With mps >= rcb, a boundary always lies in (pos, cap]: the pieces make progress.
        let piece_end = if end <= cap { end } else { cap & !(u64::from(rcb) - 1) };
        let piece = (pos, (piece_end - pos) as u32);
        pos = piece_end;
        Some(piece)
    })
}

/// A completion waiting to go out.
struct Outgoing {
    bytes: Vec<u8>,
    sock: usize,
    to: SocketAddrV4,
}

/// What became of a send.
enum Sent {
    Done,
    /// The socket buffer is full: try again soon.
    Blocked,
    Failed,
}

/// Everything that sends completions: the sockets, the fault injector and the queues. Kept
/// apart from the memory source so a completion's payload can borrow the source's bytes in
/// place while the packet is built.
struct Tx {
    sockets: Vec<UdpSocket>,
    counters: Arc<Counters>,
    rng: XorShift,
    /// When this round of the loop started: the clock for delays.
    now: Instant,
    /// The packet being sent on the direct path.
    packet: Vec<u8>,
    /// A payload with zero padding around unaligned data.
    scratch: Vec<u8>,
    /// This round's completions, shuffled before they go (with `reorder`).
    batch: Vec<Outgoing>,
    /// Completions and when they are due (with a delay); due times only grow.
    delayed: VecDeque<(Instant, Outgoing)>,
    /// Completions to send as soon as the sockets take them, in order.
    ready: VecDeque<Outgoing>,
    pool: Vec<Vec<u8>>,
    /// Let the kernel cut a read's equal-sized completions out of one send (UDP GSO); cleared
    /// for good when the kernel or the route refuses it.
    gso: bool,
    send_warnings: RateLimit,
    overflow_warnings: RateLimit,
}

impl Tx {
    fn queued(&self) -> usize {
        self.batch.len() + self.delayed.len() + self.ready.len()
    }

    /// Sends (or queues) one completion, after the fault injector has had its say.
    fn emit(&mut self, cfg: &EmulatorConfig, c: &Completion<'_>, sock: usize, to: SocketAddrV4) {
        if self.rng.chance(cfg.drop_rate) {
            bump(&self.counters.dropped, 1);
            return;
        }
        let copies = if self.rng.chance(cfg.duplicate_rate) {
            bump(&self.counters.duplicated, 1);
            2
        } else {
            1
        };
        if !cfg.reorder && cfg.delay.is_zero() && self.ready.is_empty() {
            // The common case: encode into one reused buffer and send at once.
            self.packet.clear();
            wire::encode_completion(c, &mut self.packet);
            for _ in 0..copies {
                let sent =
                    send(&self.sockets, &self.counters, &mut self.send_warnings, sock, to, &self.packet);
                if let Sent::Blocked = sent
                    && let Some(mut bytes) = self.spare_buffer(to)
                {
                    bytes.extend_from_slice(&self.packet);
                    self.ready.push_back(Outgoing { bytes, sock, to });
                }
            }
            return;
        }
        for _ in 0..copies {
            let Some(mut bytes) = self.spare_buffer(to) else { continue };
            wire::encode_completion(c, &mut bytes);
            let out = Outgoing { bytes, sock, to };
            if cfg.reorder {
                self.batch.push(out);
            } else if !cfg.delay.is_zero() {
                self.delayed.push_back((self.now + cfg.delay, out));
            } else {
                self.ready.push_back(out);
            }
        }
    }

    /// An empty buffer for one more queued completion, or `None` (counted and logged) when
    /// [`MAX_QUEUED`] are already waiting.
    fn spare_buffer(&mut self, to: SocketAddrV4) -> Option<Vec<u8>> {
        if self.queued() >= MAX_QUEUED {
            bump(&self.counters.overflowed, 1);
            if let Some(more) = self.overflow_warnings.note() {
                warn!("nettlp-emulator: {MAX_QUEUED} completions already queued: dropped one for {to}{more}");
            }
            return None;
        }
        let mut bytes = self.pool.pop().unwrap_or_default();
        bytes.clear();
        Some(bytes)
    }

    /// Answers a read with the data `data` (exactly the requested bytes): CplDs split at the
    /// RCB and MPS, with zeros in the padding DWs.
    fn complete(
        &mut self,
        cfg: &EmulatorConfig,
        req: &MemRequest,
        end: u64,
        data: &[u8],
        sock: usize,
        to: SocketAddrV4,
    ) {
        if self.direct(cfg) && self.complete_direct(cfg, req, end, data, sock, to) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut off = 0usize;
        for (pos, n) in split(req.addr, end, cfg.mps, cfg.rcb) {
            let n = n as usize;
            let Some(chunk) = data.get(off..off + n) else { break };
            let head = (pos & 3) as usize;
            let padded = (head + n).next_multiple_of(4);
            let payload: &[u8] = if head == 0 && padded == n {
                chunk
            } else {
                scratch.clear();
                scratch.resize(head, 0);
                scratch.extend_from_slice(chunk);
                scratch.resize(padded, 0);
                &scratch
            };
            let c = Completion {
                completer: cfg.completer,
                status: CplStatus::Success,
                // At most 4096: the request's length.
                byte_count: (data.len() - off) as u16,
                requester: req.requester,
                tag: req.tag,
                lower_addr: (pos & 0x7f) as u8,
                payload,
            };
            self.emit(cfg, &c, sock, to);
            off += n;
        }
        self.scratch = scratch;
    }

    /// Whether completions can go straight out: no fault to inject and nothing queued that
    /// they would overtake.
    fn direct(&self, cfg: &EmulatorConfig) -> bool {
        cfg.drop_rate <= 0.0
            && cfg.duplicate_rate <= 0.0
            && !cfg.reorder
            && cfg.delay.is_zero()
            && self.ready.is_empty()
    }

    /// [`Tx::complete`] without a copy: each completion is gathered by the kernel from its
    /// header and the requested bytes in place, and all of a read's go out in one
    /// `sendmmsg(2)`, its equal-sized ones as one UDP GSO message the kernel cuts up (one trip
    /// through the stack instead of one per datagram). What the socket cannot take now is
    /// queued, in order. Returns false, having sent nothing, when the read needs more than
    /// [`MAX_PIECES`] completions.
    fn complete_direct(
        &mut self,
        cfg: &EmulatorConfig,
        req: &MemRequest,
        end: u64,
        data: &[u8],
        sock: usize,
        to: SocketAddrV4,
    ) -> bool {
        // Header (with the zeros before unaligned data), data, zeros after it.
        let mut heads = [[0u8; CPLD_HEADER + 3]; MAX_PIECES];
        let mut layout = [(0usize, 0usize, 0usize, 0usize); MAX_PIECES];
        let mut count = 0;
        let mut off = 0usize;
        for (pos, n) in split(req.addr, end, cfg.mps, cfg.rcb) {
            let n = n as usize;
            if data.get(off..off + n).is_none() {
                break;
            }
            let Some(head) = heads.get_mut(count) else { return false };
            let lead = (pos & 3) as usize;
            let padded = (lead + n).next_multiple_of(4);
            // At most 4096: the request's length.
            let byte_count = (data.len() - off) as u16;
            head[..CPLD_HEADER].copy_from_slice(&cpld_header(cfg, req, byte_count, pos, padded));
            layout[count] = (CPLD_HEADER + lead, off, n, padded - lead - n);
            off += n;
            count += 1;
        }
        let mut parts: [&[u8]; 3 * MAX_PIECES] = [&[]; 3 * MAX_PIECES];
        let mut sizes = [0usize; MAX_PIECES];
        for (i, (&(head_len, off, n, tail), head)) in layout.iter().zip(&heads).take(count).enumerate() {
            parts[3 * i] = &head[..head_len];
            parts[3 * i + 1] = &data[off..off + n];
            parts[3 * i + 2] = &ZEROS[..tail];
            sizes[i] = head_len + n + tail;
        }
        let (parts, sizes) = (&parts[..3 * count], &sizes[..count]);
        let Some(socket) = self.sockets.get(sock) else {
            bump(&self.counters.send_errors, count as u64);
            return true;
        };
        let mut next = 0;
        while next < count {
            // The messages of one call: runs of equal sizes (and a shorter last) with GSO.
            let mut groups = [(0usize, 0usize); mmsg::MAX_MESSAGES];
            let mut msgs: [mmsg::Message<'_>; mmsg::MAX_MESSAGES] =
                std::array::from_fn(|_| mmsg::Message { parts: &[], segment: None });
            let mut n_msgs = 0;
            let mut at = next;
            while at < count && n_msgs < mmsg::MAX_MESSAGES {
                let seg = sizes[at];
                let mut stop = at + 1;
                if self.gso {
                    while stop < count && sizes[stop] == seg && stop - at < MAX_SEGMENTS {
                        stop += 1;
                    }
                    if stop < count && sizes[stop] < seg && stop - at < MAX_SEGMENTS {
                        stop += 1;
                    }
                }
                groups[n_msgs] = (at, stop);
                msgs[n_msgs] = mmsg::Message {
                    parts: &parts[3 * at..3 * stop],
                    segment: if stop - at > 1 { Some(seg as u16) } else { None },
                };
                n_msgs += 1;
                at = stop;
            }
            match mmsg::send(socket, to, &msgs[..n_msgs]) {
                Ok(k) => {
                    let k = k.clamp(1, n_msgs);
                    next = groups[k - 1].1;
                    bump(&self.counters.completions, (groups[k - 1].1 - groups[0].0) as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if msgs[0].segment.is_some()
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT)) =>
                {
                    // Not the datagrams' fault: send them one by one from now on.
                    debug!("nettlp-emulator: UDP GSO refused ({e}): sending each completion on its own");
                    self.gso = false;
                }
                Err(e) => {
                    bump(&self.counters.send_errors, 1);
                    if let Some(more) = self.send_warnings.note() {
                        warn!(
                            "nettlp-emulator: sending a completion from port {:#x} to {to} failed: {e}{more}",
                            PORT_BASE as usize + sock
                        );
                    }
                    next += 1;
                }
            }
        }
        // The socket buffer is full: the rest wait their turn in the queue.
        for i in next..count {
            let Some(mut bytes) = self.spare_buffer(to) else { continue };
            for part in &parts[3 * i..3 * i + 3] {
                bytes.extend_from_slice(part);
            }
            self.ready.push_back(Outgoing { bytes, sock, to });
        }
        true
    }

    /// Answers a read with one completion without data: Unsupported Request.
    fn unsupported(&mut self, cfg: &EmulatorConfig, req: &MemRequest, sock: usize, to: SocketAddrV4) {
        bump(&self.counters.unsupported, 1);
        let c = Completion {
            completer: cfg.completer,
            status: CplStatus::UnsupportedRequest,
            byte_count: req.len as u16,
            requester: req.requester,
            tag: req.tag,
            lower_addr: (req.addr & 0x7f) as u8,
            payload: &[],
        };
        self.emit(cfg, &c, sock, to);
    }

    /// Ends a round: shuffles its batch, then sends whatever is due.
    fn flush(&mut self, cfg: &EmulatorConfig) {
        if !self.batch.is_empty() {
            for i in (1..self.batch.len()).rev() {
                let j = self.rng.below(i + 1);
                self.batch.swap(i, j);
            }
            for out in self.batch.drain(..) {
                if cfg.delay.is_zero() {
                    self.ready.push_back(out);
                } else {
                    self.delayed.push_back((self.now + cfg.delay, out));
                }
            }
        }
        while self.delayed.front().is_some_and(|(due, _)| *due <= self.now) {
            if let Some((_, out)) = self.delayed.pop_front() {
                self.ready.push_back(out);
            }
        }
        while let Some(out) = self.ready.front() {
            match send(&self.sockets, &self.counters, &mut self.send_warnings, out.sock, out.to, &out.bytes) {
                Sent::Blocked => break,
                Sent::Done | Sent::Failed => {
                    if let Some(out) = self.ready.pop_front()
                        && self.pool.len() < POOL_KEEP
                    {
                        self.pool.push(out.bytes);
                    }
                }
            }
        }
    }

    /// How long the loop may wait for packets before it has something of its own to send.
    fn wait(&self) -> Duration {
        if !self.ready.is_empty() {
            // A socket buffer was full: look again soon.
            return Duration::from_millis(1);
        }
        match self.delayed.front() {
            // epoll counts in whole milliseconds (rounded up): the last part of a delay is
            // waited for by polling without blocking, so short delays stay accurate.
            Some((due, _)) => {
                let left = due.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(1) { Duration::ZERO } else { left.min(TICK) }
            }
            None => TICK,
        }
    }
}

/// The header of a successful completion with data (what [`wire::encode_completion`] puts
/// before the payload) for the piece at `pos` of `req`, whose payload is `payload_len` bytes.
fn cpld_header(
    cfg: &EmulatorConfig,
    req: &MemRequest,
    byte_count: u16,
    pos: u64,
    payload_len: usize,
) -> [u8; CPLD_HEADER] {
    let mut h = [0u8; CPLD_HEADER];
    let t = &mut h[wire::NETTLP_HEADER_LEN..];
    t[0] = 0x4a; // CplD: 3 DW with data
    t[2..4].copy_from_slice(&(((payload_len / 4) & 0x3ff) as u16).to_be_bytes());
    t[4..6].copy_from_slice(&cfg.completer.0.to_be_bytes());
    // Status Successful Completion (0); 4096 is sent as 0.
    t[6..8].copy_from_slice(&(byte_count & 0xfff).to_be_bytes());
    t[8..10].copy_from_slice(&req.requester.0.to_be_bytes());
    t[10] = req.tag;
    t[11] = (pos & 0x7f) as u8;
    h
}

/// Sends one datagram from socket `sock`.
fn send(
    sockets: &[UdpSocket],
    counters: &Counters,
    warnings: &mut RateLimit,
    sock: usize,
    to: SocketAddrV4,
    bytes: &[u8],
) -> Sent {
    let Some(socket) = sockets.get(sock) else { return Sent::Failed };
    loop {
        match socket.send_to(bytes, SocketAddr::V4(to)) {
            Ok(_) => {
                bump(&counters.completions, 1);
                return Sent::Done;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
            Err(e) => {
                bump(&counters.send_errors, 1);
                if let Some(more) = warnings.note() {
                    warn!(
                        "nettlp-emulator: sending a completion from port {:#x} to {to} failed: {e}{more}",
                        PORT_BASE as usize + sock
                    );
                }
                return Sent::Failed;
            }
        }
    }
}

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
            rng: XorShift::new(config.seed),
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
mod tests {
    use super::*;
    use dmastub::phys::buffer::BufferMem;
    use std::net::UdpSocket as StdUdp;

    const REQUESTER: RequesterId = RequesterId(0x1b00);

    /// Bytes no two offsets of which repeat within a page: a misplaced byte shows.
    fn image(len: usize) -> Vec<u8> {
        let mut rng = XorShift::new(42);
        (0..len).map(|_| rng.next() as u8).collect()
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
            assert_eq!(
                c.payload.len() as u64,
                piece_end.next_multiple_of(4) - (pos & !3),
                "{what}: payload DWs"
            );
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
        for (addr, byte_count, payload_len) in
            [(0x1000u64, 4096u16, 256usize), (0x10ff, 1, 4), (0x7f, 3000, 128)]
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
            assert_eq!(
                check_completions(&pkts, base + off, len, &cfg, 0),
                bytes[off as usize..][..len as usize]
            );
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
            let cfg = EmulatorConfig {
                listen: ip(5, 2 + k as u8),
                allow_write,
                base: 0x1000,
                ..Default::default()
            };
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
            let err =
                Emulator::bind(Box::new(BufferMem::new("c", image(0x1000))), cfg).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(option), "{err}");
        }
        assert!(EmulatorConfig::default().validate().is_ok());
    }

    #[test]
    fn a_taken_port_is_named() {
        let cfg = EmulatorConfig { listen: ip(12, 2), ..Default::default() };
        let _first = spawn(BufferMem::new("a", image(0x1000)), cfg.clone());
        let err =
            Emulator::bind(Box::new(BufferMem::new("b", image(0x1000))), cfg).err().expect("port taken");
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
        let mut rng = XorShift::new(3);
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
                (0..rng.below(64)).map(|_| rng.next() as u8).collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..rng.below(4) {
                if !pkt.is_empty() {
                    let at = rng.below(pkt.len());
                    pkt[at] = rng.next() as u8;
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
}
