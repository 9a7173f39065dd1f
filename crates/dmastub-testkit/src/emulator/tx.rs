//! Sending completions: built in place from the source's bytes, faults injected, delayed or
//! reordered ones queued, and UDP GSO when the kernel takes it.

use super::config::{Counters, EmulatorConfig, bump};
use super::faults::{FaultRng, RateLimit, split};
use dmastub::phys::nettlp::mmsg;
use dmastub::phys::nettlp::wire::{self, Completion, CplStatus, MemRequest, PORT_BASE};
use log::{debug, warn};
use mio::net::UdpSocket;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most completions waiting to go out (delayed, reordered or blocked): beyond this they are
/// dropped, so a flood against a long `--delay-us` cannot take unbounded memory.
pub(super) const MAX_QUEUED: usize = 64 * 1024;
/// Spare packet buffers kept for reuse.
pub(super) const POOL_KEEP: usize = 1024;
/// Longest poll wait: how soon a stop request is seen.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// Bytes before a CplD's payload: the NetTLP header and the 3-DW completion header.
pub(super) const CPLD_HEADER: usize = wire::NETTLP_HEADER_LEN + 12;
/// Most completions the direct path sends for one read: 4096 bytes at the smallest MPS (128)
/// make 33 at most; a read that needs more takes the queued path.
pub(super) const MAX_PIECES: usize = 48;
/// Most datagrams the kernel cuts one UDP GSO message into (`UDP_MAX_SEGMENTS` before Linux
/// 6.9; later kernels take 128).
pub(super) const MAX_SEGMENTS: usize = 64;
/// The zero padding after unaligned data.
pub(super) const ZEROS: [u8; 4] = [0; 4];

/// A completion waiting to go out.
pub(super) struct Outgoing {
    pub(super) bytes: Vec<u8>,
    pub(super) sock: usize,
    pub(super) to: SocketAddrV4,
}

/// What became of a send.
pub(super) enum Sent {
    Done,
    /// The socket buffer is full: try again soon.
    Blocked,
    Failed,
}

/// Everything that sends completions: the sockets, the fault injector and the queues. Kept
/// apart from the memory source so a completion's payload can borrow the source's bytes in
/// place while the packet is built.
pub(super) struct Tx {
    pub(super) sockets: Vec<UdpSocket>,
    pub(super) counters: Arc<Counters>,
    pub(super) rng: FaultRng,
    /// When this round of the loop started: the clock for delays.
    pub(super) now: Instant,
    /// The packet being sent on the direct path.
    pub(super) packet: Vec<u8>,
    /// A payload with zero padding around unaligned data.
    pub(super) scratch: Vec<u8>,
    /// This round's completions, shuffled before they go (with `reorder`).
    pub(super) batch: Vec<Outgoing>,
    /// Completions and when they are due (with a delay); due times only grow.
    pub(super) delayed: VecDeque<(Instant, Outgoing)>,
    /// Completions to send as soon as the sockets take them, in order.
    pub(super) ready: VecDeque<Outgoing>,
    pub(super) pool: Vec<Vec<u8>>,
    /// Let the kernel cut a read's equal-sized completions out of one send (UDP GSO); cleared
    /// for good when the kernel or the route refuses it.
    pub(super) gso: bool,
    pub(super) send_warnings: RateLimit,
    pub(super) overflow_warnings: RateLimit,
}

impl Tx {
    pub(super) fn queued(&self) -> usize {
        self.batch.len() + self.delayed.len() + self.ready.len()
    }

    /// Sends (or queues) one completion, after the fault injector has had its say.
    pub(super) fn emit(&mut self, cfg: &EmulatorConfig, c: &Completion<'_>, sock: usize, to: SocketAddrV4) {
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
    pub(super) fn spare_buffer(&mut self, to: SocketAddrV4) -> Option<Vec<u8>> {
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
    pub(super) fn complete(
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
    pub(super) fn direct(&self, cfg: &EmulatorConfig) -> bool {
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
    pub(super) fn complete_direct(
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
    pub(super) fn unsupported(
        &mut self,
        cfg: &EmulatorConfig,
        req: &MemRequest,
        sock: usize,
        to: SocketAddrV4,
    ) {
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
    pub(super) fn flush(&mut self, cfg: &EmulatorConfig) {
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
    pub(super) fn wait(&self) -> Duration {
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
pub(super) fn cpld_header(
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
pub(super) fn send(
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
