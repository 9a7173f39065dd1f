//! The NetTLP client: physical memory read by DMA, every tag kept busy.
//!
//! libtlp sends one Memory Read and waits for its completions before sending the next, so each
//! read costs a full network round trip. Here a read (or a batch of scattered reads, see
//! [`PhysMem::read_segments`]) is cut into requests that fit the max read request size and
//! never cross 4 KiB, and all of them are put on the wire as fast as tags free up, from one
//! thread: one UDP socket per tag (the port is the tag, as the adapter wants), non-blocking,
//! waited on with epoll.
//!
//! The adapter routes completions by the low 4 bits of the tag, so the high 4 bits are free:
//! each new request on a slot carries the next of 16 generations there. A completion that
//! arrives after its request is done (a duplicate, or the answer to a try that was given up
//! on) then does not match the slot's next request, whose bytes it would otherwise overwrite
//! whenever the two addresses share their low 7 bits. PCIe completers must echo 8-bit tags
//! whatever the requester's Extended Tag setting. Completions are placed by their Byte Count and Lower Address, so
//! they may arrive split, duplicated or in any order; a completion that does not match a
//! request in flight (another requester, an idle tag, an address that does not fit) is counted
//! and dropped, never trusted.

use super::mmsg::{MAX_BATCH, RecvBatch};
use super::wire::{self, CplStatus, MAX_DATAGRAM, MAX_TAGS, MemRequest, RequesterId, Tlp};
use crate::addr::PhysAddr;
use crate::phys::{
    IoError, NetTlpSetting, PhysError, PhysMem, RamRange, Remedy, Segment, SegmentError, SourceKind,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Physical addresses a NetTLP source accepts: the adapter cannot tell RAM from holes, the
/// root complex does (an Unsupported Request), so the whole 52-bit space is offered.
const PHYS_LIMIT: u64 = 1 << 52;
/// Posted writes are cut at this size: every PCIe link takes 128-byte payloads.
const WRITE_CHUNK: u64 = 128;
/// How long a read polls for completions before it sleeps.
const SPIN: Duration = Duration::from_micros(50);
/// Socket buffers large enough for every tag's completions of a 4 KiB request many times over.
const SOCKET_BUFFER: usize = 4 << 20;
/// Shortest wait for a try: below this, a busy machine's scheduling alone looks like loss.
const MIN_RTO: Duration = Duration::from_millis(5);
/// Longest wait for one try however the backoff grows (or `--timeout`, when longer).
const MAX_TRY: Duration = Duration::from_secs(4);
/// Shortest quiet period of a request given up on: its late answers must not meet a request
/// they could be taken for.
const LATE_QUIET: Duration = Duration::from_secs(1);
/// Shortest quiet period after a request is whole, for its duplicates: with plain tags, and
/// with generations (where 16 of them on a tag can be used up within it on a fast link).
const DONE_QUIET_PLAIN: Duration = Duration::from_millis(1);
const DONE_QUIET_GENERATIONS: Duration = Duration::from_micros(50);
/// Most identities kept hot per tag; past it the whole tag waits (see [`NetTlpMem::heat`]).
const HOT_CAP: usize = 256;
/// How often a read that takes long says how far it got (at warn level).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often a lossy link is reported (at warn level).
const LOSSY_EVERY: Duration = Duration::from_secs(10);
/// A round trip this long makes gdb's default remote timeout (2 s) too short for long commands.
const SLOW_RTT: Duration = Duration::from_millis(100);
/// The first read on each tag (see [`NetTlpMem::fence`]): one byte at phys 2, a read that ends
/// at an odd address, as few others do.
const FENCE_ADDR: u64 = 2;

/// How to reach the adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct NetTlpConfig {
    /// The adapter's address.
    pub adapter: Ipv4Addr,
    /// Our address on the link to the adapter: the one it sends completions to.
    pub local: Ipv4Addr,
    /// The PCIe ID requests carry (the adapter's bus:devfn on the target).
    pub requester: RequesterId,
    /// Requests in flight at once, 1 to 16.
    pub tags: u8,
    /// Max read request size in bytes: a power of two, 128 to 4096.
    pub mrrs: u32,
    /// How long a request waits for its completions before it is sent again, until round
    /// trips have been measured; then the wait adapts (a few round trips, at least 5 ms), and
    /// doubles with each try of a request.
    pub timeout: Duration,
    /// How many times a request is sent again before the read fails.
    pub retries: u32,
    /// Whether [`PhysMem::write`] sends Memory Writes; refused otherwise.
    pub allow_write: bool,
    /// Whether each new request on a tag carries a generation in the tag's high nibble (see the
    /// module notes). Off, tags are 0 to 15 as libtlp sends them; requests that a completion
    /// could not tell apart then never share a tag within a quiet period, which costs speed.
    pub tag_generations: bool,
    /// Every read fails once this long has passed since the client was opened (for one-shot
    /// commands: an overall deadline); `None`, no limit beyond each request's tries.
    pub deadline: Option<Duration>,
}

impl Default for NetTlpConfig {
    fn default() -> Self {
        NetTlpConfig {
            adapter: Ipv4Addr::new(127, 0, 0, 2),
            local: Ipv4Addr::new(127, 0, 0, 1),
            requester: RequesterId(0x1b00),
            tags: MAX_TAGS,
            mrrs: 512,
            timeout: Duration::from_millis(500),
            retries: 6,
            allow_write: false,
            tag_generations: true,
            deadline: None,
        }
    }
}

impl NetTlpConfig {
    /// Checks the settings against what PCIe and the adapter allow.
    pub fn validate(&self) -> Result<(), NetTlpError> {
        if !(1..=MAX_TAGS).contains(&self.tags) {
            return Err(NetTlpError::Tags(self.tags));
        }
        if !self.mrrs.is_power_of_two() || !(128..=4096).contains(&self.mrrs) {
            return Err(NetTlpError::Mrrs(self.mrrs));
        }
        if self.timeout.is_zero() {
            return Err(NetTlpError::Timeout);
        }
        if self.retries > MAX_RETRIES {
            return Err(NetTlpError::Retries(self.retries));
        }
        Ok(())
    }
}

/// Why a NetTLP client could not be set up. Reads that fail later are [`PhysError`]s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetTlpError {
    /// [`NetTlpConfig::tags`] out of range.
    #[error("{0} tags: the adapter tells requests apart by the low 4 bits of the tag, so 1 to {MAX_TAGS}")]
    Tags(u8),
    /// [`NetTlpConfig::mrrs`] not a PCIe max read request size.
    #[error("max read request size {0}: PCIe max read request size is a power of two from 128 to 4096")]
    Mrrs(u32),
    /// [`NetTlpConfig::timeout`] zero.
    #[error("the timeout must be at least 1 ms")]
    Timeout,
    /// [`NetTlpConfig::retries`] too many.
    #[error("{0} retries: at most {MAX_RETRIES}")]
    Retries(u32),
    /// epoll could not be set up.
    #[error("epoll: {0}")]
    Poll(#[source] io::Error),
    /// A tag's socket could not be opened, bound, connected or registered.
    #[error("NetTLP tag {tag}: socket {local} -> {remote}: {source}{}", socket_hint(source))]
    Socket {
        /// The tag (and port `0x3000 + tag`).
        tag: u8,
        /// Our end.
        local: SocketAddrV4,
        /// The adapter's end.
        remote: SocketAddrV4,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// The most retries [`NetTlpConfig::validate`] accepts.
const MAX_RETRIES: u32 = 30;

fn socket_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::AddrInUse => " (another NetTLP client, or libtlp, uses this address)",
        ErrorKind::AddrNotAvailable => " (the local address must be an address of this machine)",
        _ => "",
    }
}

impl NetTlpError {
    /// The setting to change, when one is wrong.
    pub fn setting(&self) -> Option<NetTlpSetting> {
        match self {
            NetTlpError::Tags(_) => Some(NetTlpSetting::Tags),
            NetTlpError::Mrrs(_) => Some(NetTlpSetting::Mrrs),
            NetTlpError::Timeout => Some(NetTlpSetting::Timeout),
            NetTlpError::Retries(_) => Some(NetTlpSetting::Retries),
            NetTlpError::Socket { source, .. } if source.kind() == ErrorKind::AddrNotAvailable => {
                Some(NetTlpSetting::Local)
            }
            _ => None,
        }
    }

    /// What the user can change, if anything: [`NetTlpError::setting`] as a [`Remedy`].
    pub fn remedy(&self) -> Option<Remedy> {
        self.setting().map(Remedy::NetTlp)
    }
}

/// What the client has carried since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetTlpStats {
    /// Reads asked of the source (a [`PhysMem::read`] or one [`PhysMem::read_segments`]).
    pub batches: u64,
    /// Network round trips those cost: per batch, its requests divided by the tags in flight,
    /// rounded up (requests in one wave overlap, so a wave costs about one round trip).
    pub round_trips: u64,
    /// Memory Read requests sent, first tries.
    pub requests: u64,
    /// Requests sent again after a timeout.
    pub retransmits: u64,
    /// Completions that delivered bytes.
    pub completions: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Completions with nothing new (a duplicate or an answer to a retried request).
    pub duplicates: u64,
    /// Datagrams dropped: not a completion, another requester, an idle tag, or an address or
    /// count that does not fit the request on that tag.
    pub ignored: u64,
    /// Unsupported Request completions (no memory there).
    pub unsupported: u64,
    /// Requests that ran out of retries.
    pub timeouts: u64,
    /// Memory Write requests sent.
    pub writes: u64,
    /// Times a request waited because every tag free for it was in a quiet period.
    pub quiet_waits: u64,
    /// The smoothed round trip, in microseconds (0 before the first is measured).
    pub rtt_us: u64,
}

/// One request of a batch: `len` bytes at `addr`, for `segment` at `offset`.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    segment: usize,
    offset: usize,
    addr: u64,
    len: u32,
}

impl Chunk {
    /// What every completion of this request carries in Lower Address + Byte Count (mod 128):
    /// the low 7 bits of its end. Two requests on one tag whose ends differ here can never be
    /// confused; two whose ends agree can.
    fn class(&self) -> u8 {
        ((self.addr + u64::from(self.len)) & 0x7f) as u8
    }
}

/// A tag's request on the wire, and which of its bytes have come back.
struct InFlight {
    chunk: usize,
    /// The full 8-bit tag: the slot in the low nibble (the adapter routes by it), a
    /// generation in the high one.
    tag: u8,
    /// When the first try went out (for the round-trip estimate).
    sent: Instant,
    deadline: Instant,
    tries: u32,
    received: u32,
    /// One bit per byte of the request (at most 4096).
    have: [u64; 64],
}

impl InFlight {
    /// Marks `[start, end)` as received; returns how many of those bytes are new.
    fn mark(&mut self, start: usize, end: usize) -> u32 {
        let mut new = 0;
        let mut i = start;
        while i < end {
            let word = i / 64;
            let lo = i % 64;
            let hi = (end - word * 64).min(64);
            let mask = if hi - lo == 64 { u64::MAX } else { ((1u64 << (hi - lo)) - 1) << lo };
            new += (mask & !self.have[word]).count_ones();
            self.have[word] |= mask;
            i = word * 64 + hi;
        }
        new
    }
}

/// An identity (full tag, end class) on a slot that a completion may still arrive for: a
/// request just completed (its duplicates), one given up on (its late answers), or a completion
/// seen that fit nothing (another client's, or an earlier process's). No request with that
/// identity goes out on the slot until `until`.
#[derive(Clone, Copy, Debug)]
struct Hot {
    tag: u8,
    class: u8,
    until: Instant,
}

/// The smoothed round trip and its variation (RFC 6298), from requests answered at the first
/// try.
#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The longest recent round trip: the largest sample, shrinking by 1/64 with each sample
    /// after it.
    max: Duration,
}

impl Rtt {
    fn sample(&mut self, s: Duration) {
        self.max = s.max(self.max - self.max / 64);
        match self.srtt {
            None => {
                self.srtt = Some(s);
                self.rttvar = s / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(s);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + s / 8);
            }
        }
    }

    /// srtt + 4 rttvar: how long an answer may take, `None` before any was measured.
    fn spread(&self) -> Option<Duration> {
        self.srtt.map(|s| s + self.rttvar * 4)
    }
}

/// How a batch ended for the error message: how many reads failed and why.
#[derive(Default)]
struct Outcome {
    failed: u32,
    abandoned: u32,
}

/// Physical memory of a machine behind a NetTLP adapter.
pub struct NetTlpMem {
    config: NetTlpConfig,
    name: String,
    ram: [RamRange; 1],
    sockets: Vec<UdpSocket>,
    poll: Poll,
    events: Events,
    slots: Vec<Option<InFlight>>,
    tx: Vec<u8>,
    /// Room for the datagrams one `recvmmsg` takes.
    batch: RecvBatch,
    /// Tags with events from the last poll (kept to reuse its allocation).
    ready: Vec<usize>,
    /// Per slot, the generation its next request carries in the tag's high nibble; starts at
    /// a random value, so a new process does not begin where the last one did.
    generations: Vec<u8>,
    /// Per slot, the identities in a quiet period.
    hot: Vec<Vec<Hot>>,
    /// Per slot, when every identity on it is quiet until (the list overflowed).
    all_hot: Vec<Option<Instant>>,
    rtt: Rtt,
    /// Whether the first read on every tag has been answered (see [`NetTlpMem::fence`]).
    fenced: bool,
    /// While the fence runs: requests go to the slot of their index, and an Unsupported
    /// Request answers them.
    fencing: bool,
    /// When every read fails (the configured deadline).
    give_up_at: Option<Instant>,
    /// The last lossy-link warning, and the counters then.
    lossy_warned: Option<(Instant, u64, u64)>,
    slow_warned: bool,
    /// The last warning that reads failed.
    failure_warned: Option<Instant>,
    stats: NetTlpStats,
}

impl NetTlpMem {
    /// Opens one socket per tag: bound to `local:0x3000+T`, connected to `adapter:0x3000+T`.
    /// Nothing is sent yet.
    pub fn connect(config: NetTlpConfig) -> Result<Self, NetTlpError> {
        config.validate()?;
        let poll = Poll::new().map_err(NetTlpError::Poll)?;
        let mut sockets = Vec::with_capacity(usize::from(config.tags));
        for tag in 0..config.tags {
            let port = wire::port_for_tag(tag);
            let local = SocketAddrV4::new(config.local, port);
            let remote = SocketAddrV4::new(config.adapter, port);
            let socket_error = |source| NetTlpError::Socket { tag, local, remote, source };
            let mut socket = open_socket(local, remote).map_err(socket_error)?;
            poll.registry()
                .register(&mut socket, Token(usize::from(tag)), Interest::READABLE)
                .map_err(socket_error)?;
            sockets.push(socket);
        }
        let name = format!("NetTLP adapter {} (requester {})", config.adapter, config.requester);
        let tags = usize::from(config.tags);
        let seed = random_seed();
        Ok(NetTlpMem {
            name,
            ram: [RamRange { start: PhysAddr(0), len: PHYS_LIMIT }],
            slots: (0..tags).map(|_| None).collect(),
            sockets,
            poll,
            events: Events::with_capacity(64),
            tx: Vec::with_capacity(MAX_DATAGRAM),
            ready: Vec::with_capacity(64),
            batch: RecvBatch::new(MAX_BATCH, MAX_DATAGRAM + 64),
            generations: (0..tags).map(|t| (seed >> (4 * (t % 16))) as u8 & 0xf).collect(),
            hot: vec![Vec::new(); tags],
            all_hot: vec![None; tags],
            rtt: Rtt::default(),
            fenced: false,
            fencing: false,
            give_up_at: config.deadline.map(|d| Instant::now() + d),
            lossy_warned: None,
            slow_warned: false,
            failure_warned: None,
            stats: NetTlpStats::default(),
            config,
        })
    }

    pub fn config(&self) -> &NetTlpConfig {
        &self.config
    }

    pub fn stats(&self) -> NetTlpStats {
        self.stats
    }

    /// How long a request's try number `tries` (1 for the first) waits: the measured spread of
    /// round trips (at least [`MIN_RTO`]), or `--timeout` before any was measured, doubled for
    /// each try before it, at most [`MAX_TRY`] (or `--timeout` when that is longer).
    fn try_timeout(&self, tries: u32) -> Duration {
        let base = self.rtt.spread().map_or(self.config.timeout, |s| s.max(MIN_RTO));
        let cap = MAX_TRY.max(self.config.timeout);
        base.saturating_mul(1u32 << tries.saturating_sub(1).min(20)).min(cap)
    }

    /// The quiet period of a request given up on after `tries`.
    fn late_quiet(&self, tries: u32) -> Duration {
        (self.try_timeout(tries + 1) * 2).max(LATE_QUIET)
    }

    /// The quiet period after a completion that fits nothing we sent: its sender's other
    /// answers may follow for a few round trips (each one seen extends it).
    fn stray_quiet(&self) -> Duration {
        let spread = self.rtt.spread().unwrap_or(self.config.timeout);
        (spread * 4).max(LATE_QUIET)
    }

    /// The quiet period of a request that is whole but was sent more than once: its other
    /// tries' answers may still come, as late as the longest recent round trip and more.
    fn retried_quiet(&self) -> Duration {
        let longest = self.rtt.max.max(self.rtt.spread().unwrap_or(self.config.timeout));
        (longest * 4).max(MIN_RTO)
    }

    /// The quiet period of a request answered at its first try (or of its duplicate), times
    /// `tries`.
    fn done_quiet(&self, tries: u32) -> Duration {
        let floor = if self.config.tag_generations { DONE_QUIET_GENERATIONS } else { DONE_QUIET_PLAIN };
        let spread = self.rtt.spread().unwrap_or(self.config.timeout);
        spread.max(floor).saturating_mul(tries.max(1))
    }

    fn rtt_text(&self) -> String {
        match self.rtt.srtt {
            Some(s) => format!("round trip ~{:.1} ms", s.as_secs_f64() * 1e3),
            None => "no round trip measured yet".to_string(),
        }
    }

    /// Puts (`tag`, `class`) on `slot` in a quiet period until `until`.
    fn heat(&mut self, slot: usize, tag: u8, class: u8, until: Instant) {
        let Some(list) = self.hot.get_mut(slot) else { return };
        if let Some(h) = list.iter_mut().find(|h| h.tag == tag && h.class == class) {
            h.until = h.until.max(until);
            return;
        }
        if list.len() >= HOT_CAP {
            let now = Instant::now();
            list.retain(|h| h.until > now);
        }
        if list.len() < HOT_CAP {
            list.push(Hot { tag, class, until });
        } else if let Some(all) = self.all_hot.get_mut(slot) {
            // A flood of strays: the whole tag waits rather than forget one.
            *all = Some(all.map_or(until, |a| a.max(until)));
        }
    }

    /// A free slot and a full tag for a request of `class` that no completion still expected
    /// could be taken for; `None` when every free slot must wait.
    fn pick(&mut self, chunk_index: usize, class: u8, now: Instant) -> Option<(usize, u8)> {
        let slots = if self.fencing { chunk_index..chunk_index + 1 } else { 0..self.slots.len() };
        for t in slots {
            if self.slots.get(t).is_none_or(|s| s.is_some()) {
                continue;
            }
            if self.all_hot[t].is_some_and(|a| a > now) {
                continue;
            }
            self.all_hot[t] = None;
            let list = &mut self.hot[t];
            list.retain(|h| h.until > now);
            let free = |tag: u8| !list.iter().any(|h| h.tag == tag && h.class == class);
            if !self.config.tag_generations {
                if free(t as u8) {
                    return Some((t, t as u8));
                }
                continue;
            }
            for k in 0..16u8 {
                let generation = (self.generations[t] + k) & 0xf;
                let tag = generation << 4 | t as u8;
                if free(tag) {
                    self.generations[t] = (generation + 1) & 0xf;
                    return Some((t, tag));
                }
            }
        }
        None
    }

    /// When the next quiet period ends.
    fn next_cooling(&self, now: Instant) -> Option<Instant> {
        let lists = self.hot.iter().flatten().map(|h| h.until);
        lists.chain(self.all_hot.iter().flatten().copied()).filter(|&u| u > now).min()
    }

    /// Cuts the segments into requests: at MRRS-aligned boundaries, which are also 4 KiB ones.
    fn chunks(&self, segments: &[Segment<'_>]) -> Result<Vec<Chunk>, SegmentError> {
        let mrrs = u64::from(self.config.mrrs);
        let mut out = Vec::new();
        for (segment, s) in segments.iter().enumerate() {
            let len = s.buf.len() as u64;
            if s.addr.0.checked_add(len).is_none_or(|end| end > PHYS_LIMIT) {
                let error = PhysError::NotRam { addr: s.addr, len, source_name: self.name.clone() };
                return Err(SegmentError { index: segment, error });
            }
            let mut offset = 0u64;
            while offset < len {
                let addr = s.addr.0 + offset;
                let n = (mrrs - addr % mrrs).min(len - offset);
                out.push(Chunk { segment, offset: offset as usize, addr, len: n as u32 });
                offset += n;
            }
        }
        Ok(out)
    }

    /// The first read of a client: one small read on every tag, waited for. Completions that
    /// arrive before its answer and fit nothing (a previous client's, still on the link) put
    /// their identities in a quiet period; its answers give the first round-trip measurement.
    /// An Unsupported Request answers it as well as data.
    fn fence(&mut self) -> Result<(), SegmentError> {
        let mut bytes = vec![0u8; self.slots.len()];
        let mut segments: Vec<Segment<'_>> =
            bytes.chunks_mut(1).map(|buf| Segment { addr: PhysAddr(FENCE_ADDR), buf }).collect();
        self.fencing = true;
        let result = self.transfer_batch(&mut segments);
        self.fencing = false;
        result
    }

    /// Reads every chunk, as many in flight as there are tags, after the fence when none has
    /// run yet. Returns the lowest failing segment; all segments before it are filled.
    fn transfer(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        if segments.iter().all(|s| s.buf.is_empty()) {
            return Ok(());
        }
        if !self.fenced {
            if let Err(e) = self.fence() {
                // Named by the read that was asked for; the probe is ours.
                let why = match e.error {
                    PhysError::Device { why, .. } => why,
                    other => other.to_string(),
                };
                let addr = segments[0].addr.0;
                let why = format!(
                    "the first read on each tag (a 1-byte probe at phys {FENCE_ADDR:#x}) failed: {why}"
                );
                return Err(SegmentError { index: 0, error: self.device_error(addr, why) });
            }
            self.fenced = true;
        }
        let result = self.transfer_batch(segments);
        self.warn_if_lossy();
        result
    }

    fn transfer_batch(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        let chunks = self.chunks(segments)?;
        if chunks.is_empty() {
            return Ok(());
        }
        self.stats.batches += 1;
        self.stats.round_trips += (chunks.len() as u64).div_ceil(u64::from(self.config.tags));
        let started = Instant::now();
        let mut progress_at = started + PROGRESS_EVERY;
        let retransmits_before = self.stats.retransmits;
        // What arrived while nothing was in flight fits nothing of this batch: its identities
        // go quiet before any request is sent.
        self.drain_strays(&chunks, segments);
        let mut next = 0usize;
        let mut done = 0usize;
        let mut failed: Option<SegmentError> = None;
        let mut outcome = Outcome::default();
        let mut in_flight = 0usize;
        loop {
            let now = Instant::now();
            // Fill every free tag while nothing has failed.
            let mut blocked = false;
            while failed.is_none() && next < chunks.len() {
                let c = chunks[next];
                let Some((tag, full_tag)) = self.pick(next, c.class(), now) else {
                    blocked = self.slots.iter().any(|s| s.is_none());
                    if blocked && in_flight == 0 {
                        self.stats.quiet_waits += 1;
                    }
                    break;
                };
                self.slots[tag] = Some(InFlight {
                    chunk: next,
                    tag: full_tag,
                    sent: now,
                    deadline: now + self.try_timeout(1),
                    tries: 1,
                    received: 0,
                    have: [0; 64],
                });
                self.stats.requests += 1;
                in_flight += 1;
                next += 1;
                if let Err(e) = self.send_read(tag, full_tag, &c) {
                    self.abandon(tag, &chunks);
                    in_flight -= 1;
                    outcome.failed += 1;
                    fail(&mut failed, c.segment, e);
                }
            }
            if in_flight == 0 && !blocked {
                break;
            }
            if let Some(at) = self.give_up_at
                && now >= at
            {
                let c = self.slots.iter().flatten().map(|f| chunks[f.chunk]).min_by_key(|c| c.segment);
                let c = c.unwrap_or(chunks[next.min(chunks.len() - 1)]);
                let why = format!(
                    "gave up: the deadline of {:.1} s for DMA passed with {done} of {} reads of this batch done \
                     ({}, {} sent again)",
                    self.config.deadline.unwrap_or_default().as_secs_f64(),
                    chunks.len(),
                    self.rtt_text(),
                    self.stats.retransmits - retransmits_before
                );
                outcome.failed += in_flight.max(1) as u32;
                fail(&mut failed, c.segment, self.device_error(c.addr, why));
                break;
            }
            if now >= progress_at {
                progress_at = now + PROGRESS_EVERY;
                let first = &segments[chunks[0].segment];
                log::warn!(
                    "NetTLP: reading {} bytes at phys {:#x}{}: {done} of {} requests done after {:.1} s ({} sent again, {})",
                    chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
                    first.addr.0,
                    if segments.len() > 1 {
                        format!(" and {} more places", segments.len() - 1)
                    } else {
                        String::new()
                    },
                    chunks.len(),
                    started.elapsed().as_secs_f64(),
                    self.stats.retransmits - retransmits_before,
                    self.rtt_text()
                );
            }
            let mut until = self.slots.iter().flatten().map(|f| f.deadline).min();
            if blocked {
                until = until.into_iter().chain(self.next_cooling(now)).min();
            }
            until = until.into_iter().chain(self.give_up_at).chain(Some(progress_at)).min();
            let wait = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
            if let Err(e) = self.wait_for_completions(wait)
                && e.kind() != ErrorKind::Interrupted
            {
                // Everything in flight is abandoned: blame the lowest segment still waiting.
                let waiting = self.slots.iter().flatten().map(|f| chunks[f.chunk]).min_by_key(|c| c.segment);
                let c = waiting.unwrap_or(chunks[next.saturating_sub(1)]);
                outcome.failed += in_flight as u32;
                fail(&mut failed, c.segment, self.device_error(c.addr, format!("epoll: {e}")));
                break;
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.extend(self.events.iter().map(|e| e.token().0));
            for &tag in &ready {
                let (ended, ok) = self.receive(tag, &chunks, segments, &mut failed, &mut outcome);
                in_flight -= ended;
                done += ok;
            }
            self.ready = ready;
            in_flight -= self.expire(&chunks, &mut failed, &mut outcome);
        }
        // Requests still out after a failure are abandoned: their late answers fit no request
        // (their identities stay quiet) and are dropped when they come.
        for tag in 0..self.slots.len() {
            if let Some(f) = &self.slots[tag] {
                // An earlier segment whose read is abandoned is not filled: the error names the
                // lowest segment that is not whole (every one before it is), with the cause.
                let segment = chunks[f.chunk].segment;
                if let Some(e) = failed.as_mut()
                    && segment < e.index
                {
                    e.index = segment;
                }
                outcome.abandoned += 1;
                self.abandon(tag, &chunks);
            }
        }
        match failed {
            Some(mut e) => {
                if let PhysError::Device { why, .. } = &mut e.error {
                    let total = chunks.len();
                    let not_sent = total - next;
                    why.push_str(&format!(
                        "; {} of {total} DMA reads of this batch failed, {} abandoned, {not_sent} not sent",
                        outcome.failed.max(1),
                        outcome.abandoned
                    ));
                    // Said here too: a caller that tries something else on a failed read must
                    // not hide why the device failed.
                    if self.failure_warned.is_none_or(|at| at.elapsed() >= LOSSY_EVERY) {
                        self.failure_warned = Some(Instant::now());
                        log::warn!("NetTLP: DMA reads failed: {}", e.error);
                    }
                }
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Ends the request on `tag` without its answer: its identity goes quiet for long.
    fn abandon(&mut self, tag: usize, chunks: &[Chunk]) {
        if let Some(f) = self.slots[tag].take() {
            let until = Instant::now() + self.late_quiet(f.tries);
            self.heat(tag, f.tag, chunks[f.chunk].class(), until);
        }
    }

    /// Takes whatever waits on any socket while no request is in flight: strays.
    fn drain_strays(&mut self, chunks: &[Chunk], segments: &mut [Segment<'_>]) {
        if self.poll.poll(&mut self.events, Some(Duration::ZERO)).is_err() {
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|e| e.token().0));
        let mut failed = None;
        let mut outcome = Outcome::default();
        for &tag in &ready {
            self.receive(tag, chunks, segments, &mut failed, &mut outcome);
        }
        self.ready = ready;
    }

    /// Says at warn level, every [`LOSSY_EVERY`] at most, that requests had to be sent again;
    /// once, that the round trip is long for gdb.
    fn warn_if_lossy(&mut self) {
        let s = self.stats;
        if !self.slow_warned && self.rtt.srtt.is_some_and(|r| r >= SLOW_RTT) {
            self.slow_warned = true;
            log::warn!(
                "NetTLP: the {} to {} is long: commands that read much take many of them; with gdb, \
                 raise its remote timeout (default 2 s), e.g. `set remotetimeout 60`",
                self.rtt_text(),
                self.config.adapter
            );
        }
        let (at, requests, retransmits) = self.lossy_warned.unwrap_or((Instant::now() - LOSSY_EVERY, 0, 0));
        if s.retransmits > retransmits && at.elapsed() >= LOSSY_EVERY {
            let sent = (s.requests - requests).max(1);
            let again = s.retransmits - retransmits;
            log::warn!(
                "NetTLP: the link to {} loses packets: {again} of {sent} requests sent again ({:.1}%), {} timed out; {}, \
                 a try waits {} ms",
                self.config.adapter,
                again as f64 * 100.0 / sent as f64,
                s.timeouts,
                self.rtt_text(),
                self.try_timeout(1).as_millis()
            );
            self.lossy_warned = Some((Instant::now(), s.requests, s.retransmits));
        }
    }

    /// Waits up to `limit` for any tag's socket to have something. Answers come back within
    /// tens of microseconds, so the first [`SPIN`] is spent asking epoll without sleeping: a
    /// process asleep in epoll must be woken for every datagram, which costs the sender (the
    /// adapter's path) more than the datagram itself.
    fn wait_for_completions(&mut self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        let spin = SPIN.min(limit);
        loop {
            self.poll.poll(&mut self.events, Some(Duration::ZERO))?;
            if !self.events.is_empty() || start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        if self.events.is_empty() {
            self.poll.poll(&mut self.events, Some(limit.saturating_sub(start.elapsed())))?;
        }
        Ok(())
    }

    /// Sends (or sends again) the read for `chunk` on slot `tag`'s socket, as `full_tag`.
    fn send_read(&mut self, tag: usize, full_tag: u8, c: &Chunk) -> Result<(), PhysError> {
        self.tx.clear();
        let req = MemRequest { requester: self.config.requester, tag: full_tag, addr: c.addr, len: c.len };
        wire::encode_read(&req, &mut self.tx);
        match self.sockets[tag].send(&self.tx) {
            Ok(_) => Ok(()),
            // A full socket buffer: the timeout sends it again.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(self.socket_failure(c.addr, tag, "", e)),
        }
    }

    fn socket_error(&self, tag: usize, e: &io::Error) -> String {
        let port = wire::port_for_tag(tag as u8);
        if e.kind() == ErrorKind::ConnectionRefused {
            format!(
                "{}:{port:#x} answered 'port unreachable' on tag {tag}: no NetTLP adapter (or emulator) listens there",
                self.config.adapter
            )
        } else {
            format!("tag {tag} ({}:{port:#x}): {e}", self.config.adapter)
        }
    }

    fn device_error(&self, addr: u64, why: String) -> PhysError {
        PhysError::device(PhysAddr(addr), self.name.clone(), why)
    }

    /// A socket's failure on `tag`, the OS error kept as the source.
    fn socket_failure(&self, addr: u64, tag: usize, what: &str, e: io::Error) -> PhysError {
        let why = format!("{what}{}", self.socket_error(tag, &e));
        let source = Some(IoError::from(e));
        PhysError::Device { addr: PhysAddr(addr), source_name: self.name.clone(), why, source }
    }

    /// Takes every datagram queued on `tag`'s socket. Returns how many requests ended, and
    /// how many of those are whole.
    fn receive(
        &mut self,
        tag: usize,
        chunks: &[Chunk],
        segments: &mut [Segment<'_>],
        failed: &mut Option<SegmentError>,
        outcome: &mut Outcome,
    ) -> (usize, usize) {
        let (mut ended, mut whole) = (0, 0);
        if tag >= self.sockets.len() {
            return (0, 0);
        }
        // Bounded: a flood cannot keep us here; the rest waits for the next poll round,
        // which epoll reports again because the socket is re-armed below.
        let mut batch = std::mem::replace(&mut self.batch, RecvBatch::empty());
        for _ in 0..64 {
            let n = match batch.recv(&self.sockets[tag]) {
                Ok(0) => {
                    self.batch = batch;
                    return (ended, whole);
                }
                Ok(n) => n,
                Err(e) => {
                    let would_block = e.kind() == ErrorKind::WouldBlock;
                    if let Some(f) = self.slots[tag].as_ref() {
                        let c = chunks[f.chunk];
                        self.abandon(tag, chunks);
                        ended += 1;
                        outcome.failed += 1;
                        let err = self.socket_failure(c.addr, tag, "", e);
                        fail(failed, c.segment, err);
                    }
                    if would_block {
                        self.batch = batch;
                        return (ended, whole);
                    }
                    continue;
                }
            };
            for i in 0..n {
                match self.complete(tag, batch.get(i), chunks, segments) {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Some(f) = self.slots[tag].take() {
                            let now = Instant::now();
                            if f.tries == 1 {
                                self.rtt.sample(now.saturating_duration_since(f.sent));
                                self.stats.rtt_us = self.rtt.srtt.unwrap_or_default().as_micros() as u64;
                            }
                            // Sent more than once: the other tries' answers are still on
                            // the link (a timeout says nothing of how late they are).
                            let quiet = if f.tries > 1 { self.retried_quiet() } else { self.done_quiet(1) };
                            let until = now + quiet;
                            self.heat(tag, f.tag, chunks[f.chunk].class(), until);
                        }
                        ended += 1;
                        whole += 1;
                    }
                    Err((segment, e)) => {
                        self.abandon(tag, chunks);
                        ended += 1;
                        outcome.failed += 1;
                        fail(failed, segment, e);
                    }
                }
            }
            if n < batch.capacity() {
                self.batch = batch;
                return (ended, whole);
            }
        }
        self.batch = batch;
        // Still readable: ask epoll to report it again.
        let _ = self.poll.registry().reregister(&mut self.sockets[tag], Token(tag), Interest::READABLE);
        (ended, whole)
    }

    /// Applies one datagram received on `tag`. Ok(true) when its request is whole.
    fn complete(
        &mut self,
        tag: usize,
        datagram: &[u8],
        chunks: &[Chunk],
        segments: &mut [Segment<'_>],
    ) -> Result<bool, (usize, PhysError)> {
        let Ok(Tlp::Completion(c)) = wire::parse(datagram) else {
            self.stats.ignored += 1;
            log::debug!("NetTLP tag {tag}: dropped a datagram that is not a completion");
            return Ok(false);
        };
        // Whatever a completion of ours carries that says which request it answers. Its
        // Byte Count is at most 4096, so the sum does not overflow.
        let class = ((u16::from(c.lower_addr) + c.byte_count) & 0x7f) as u8;
        let flight = self.slots[tag].as_ref().map(|f| (f.tag, chunks[f.chunk]));
        // Our completion: our requester ID, this tag, and a place inside the request.
        let fits = flight.is_some_and(|(full_tag, chunk)| {
            c.requester == self.config.requester
                && c.tag == full_tag
                && c.byte_count != 0
                && u32::from(c.byte_count) <= chunk.len
                && class == chunk.class()
        });
        let Some((_, chunk)) = flight.filter(|_| fits) else {
            self.stats.ignored += 1;
            if c.requester == self.config.requester && usize::from(c.tag & 0xf) == tag {
                // A request with this identity may still be answered: not ours to reuse for a
                // while. One of ours just done (a duplicate, or the answer to a try sent again)
                // stays quiet a little longer; one we know nothing of (a previous process's, or
                // another client's) long.
                let now = Instant::now();
                let known = self.hot[tag].iter().any(|h| h.tag == c.tag && h.class == class && h.until > now);
                let quiet = if known { self.done_quiet(2) } else { self.stray_quiet() };
                self.heat(tag, c.tag, class, now + quiet);
            }
            log::debug!(
                "NetTLP tag {tag}: dropped a completion (requester {}, tag {:#x}, byte count {}, lower address {:#x}) that fits no request",
                c.requester,
                c.tag,
                c.byte_count,
                c.lower_addr
            );
            return Ok(false);
        };
        match c.status {
            CplStatus::Success => {}
            CplStatus::UnsupportedRequest if self.fencing => return Ok(true),
            CplStatus::UnsupportedRequest => {
                self.stats.unsupported += 1;
                let e = PhysError::NotRam {
                    addr: PhysAddr(chunk.addr),
                    len: u64::from(chunk.len),
                    source_name: format!("{} (Unsupported Request)", self.name),
                };
                return Err((chunk.segment, e));
            }
            other => {
                let why = format!(
                    "the target's root complex answered {other} (completion status) for a read of {} bytes on tag {tag}",
                    chunk.len
                );
                return Err((chunk.segment, self.device_error(chunk.addr, why)));
            }
        }
        let data = c.data();
        if data.is_empty() {
            self.stats.ignored += 1;
            return Ok(false);
        }
        let start = (chunk.len - u32::from(c.byte_count)) as usize;
        let end = start + data.len();
        let Some(flight) = self.slots[tag].as_mut() else { return Ok(false) };
        let new = flight.mark(start, end);
        if new == 0 {
            self.stats.duplicates += 1;
            return Ok(false);
        }
        let Some(dst) = segments
            .get_mut(chunk.segment)
            .and_then(|s| s.buf.get_mut(chunk.offset + start..chunk.offset + end))
        else {
            self.stats.ignored += 1;
            return Ok(false);
        };
        dst.copy_from_slice(data);
        flight.received += new;
        self.stats.completions += 1;
        self.stats.bytes += u64::from(new);
        Ok(flight.received >= chunk.len)
    }

    /// Sends again, or gives up on, every request past its deadline. Returns how many ended.
    fn expire(
        &mut self,
        chunks: &[Chunk],
        failed: &mut Option<SegmentError>,
        outcome: &mut Outcome,
    ) -> usize {
        let now = Instant::now();
        let mut ended = 0;
        for tag in 0..self.slots.len() {
            let Some(f) = self.slots[tag].as_ref() else { continue };
            if f.deadline > now {
                continue;
            }
            let (c, tries, full_tag) = (chunks[f.chunk], f.tries, f.tag);
            // After a failure elsewhere the read is lost anyway: no more tries.
            if tries <= self.config.retries && failed.is_none() {
                let wait = self.try_timeout(tries + 1);
                if let Some(f) = self.slots[tag].as_mut() {
                    f.tries += 1;
                    f.deadline = now + wait;
                }
                self.stats.retransmits += 1;
                // The same tag: a late answer to the first try is as good as one to this.
                if let Err(e) = self.send_read(tag, full_tag, &c) {
                    self.abandon(tag, chunks);
                    ended += 1;
                    outcome.failed += 1;
                    fail(failed, c.segment, e);
                }
                continue;
            }
            if let Some(e) = failed.as_mut() {
                // Lost with the read anyway: not worth a try, nor the blame; but its segment is
                // not filled, so the error may not name a later one.
                e.index = e.index.min(c.segment);
                self.abandon(tag, chunks);
                ended += 1;
                outcome.abandoned += 1;
                continue;
            }
            self.abandon(tag, chunks);
            ended += 1;
            outcome.failed += 1;
            self.stats.timeouts += 1;
            let waits: Vec<String> =
                (1..=tries).map(|k| self.try_timeout(k).as_millis().to_string()).collect();
            let why = format!(
                "no completion for a read of {} bytes on tag {tag} after {tries} tries (timeout after {} retries; waited {} ms; {}) \
                 (is the adapter at {} and does it send to {}?)",
                c.len,
                tries - 1,
                waits.join("+"),
                self.rtt_text(),
                self.config.adapter,
                self.config.local
            );
            fail(failed, c.segment, self.device_error(c.addr, why));
        }
        ended
    }
}

/// A number no earlier process started from: the standard library's per-process random hash
/// keys, mixed with the time and the process id.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Keeps the failure of the lowest segment.
fn fail(failed: &mut Option<SegmentError>, index: usize, error: PhysError) {
    if failed.as_ref().is_none_or(|f| index < f.index) {
        *failed = Some(SegmentError { index, error });
    }
}

fn open_socket(local: SocketAddrV4, remote: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers are best effort: the kernel caps them at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&local.into())?;
    s.connect(&remote.into())?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into()))
}

impl PhysMem for NetTlpMem {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::NetTlp
    }

    fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    fn is_volatile(&self) -> bool {
        true
    }

    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut one = [Segment { addr, buf }];
        self.transfer(&mut one).map_err(|e| e.error)
    }

    fn read_segments(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        self.transfer(segments)
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        if !self.config.allow_write {
            return Err(PhysError::ReadOnly { source_name: self.name.clone() });
        }
        let end = addr.0.checked_add(data.len() as u64).filter(|&e| e <= PHYS_LIMIT);
        if end.is_none() {
            return Err(PhysError::NotRam { addr, len: data.len() as u64, source_name: self.name.clone() });
        }
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.0 + done as u64;
            let n = ((WRITE_CHUNK - a % WRITE_CHUNK) as usize).min(data.len() - done);
            let req = MemRequest { requester: self.config.requester, tag: 0, addr: a, len: n as u32 };
            self.tx.clear();
            wire::encode_write(&req, &data[done..done + n], &mut self.tx);
            // Posted: nothing comes back. A full buffer is waited out, briefly.
            let mut tries = 0;
            loop {
                match self.sockets[0].send(&self.tx) {
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(e) => return Err(self.socket_failure(a, 0, "Memory Write: ", e)),
                }
            }
            self.stats.writes += 1;
            done += n;
        }
        Ok(())
    }

    fn traffic(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "NetTLP: {} reads in {} round trips; {} requests, {} sent again, {} timed out; {} completions \
             ({} bytes), {} duplicate, {} ignored, {} Unsupported Request; {} writes",
            s.batches,
            s.round_trips,
            s.requests,
            s.retransmits,
            s.timeouts,
            s.completions,
            s.bytes,
            s.duplicates,
            s.ignored,
            s.unsupported,
            s.writes
        ))
    }

    fn reset_traffic(&mut self) {
        self.stats = NetTlpStats::default();
    }

    fn describe(&self) -> String {
        format!(
            "from {}, {} tags, MRRS {}, {} tries each waiting {} ms at first, then a few round trips, doubling{}; RAM map unknown: holes answer Unsupported Request",
            self.config.local,
            self.config.tags,
            self.config.mrrs,
            self.config.retries + 1,
            self.config.timeout.as_millis(),
            match self.config.deadline {
                Some(d) => format!("; DMA gives up {:.1} s after start", d.as_secs_f64()),
                None => String::new(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marking_counts_only_new_bytes() {
        let now = Instant::now();
        let mut f =
            InFlight { chunk: 0, tag: 0, sent: now, deadline: now, tries: 1, received: 0, have: [0; 64] };
        assert_eq!(f.mark(0, 4096), 4096);
        assert_eq!(f.mark(0, 4096), 0);
        let mut g = InFlight { have: [0; 64], ..f };
        assert_eq!(g.mark(3, 70), 67);
        assert_eq!(g.mark(60, 130), 60);
        assert_eq!(g.mark(0, 1), 1);
        assert_eq!(g.mark(4095, 4096), 1);
    }

    #[test]
    fn settings_are_checked() {
        let ok = NetTlpConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            NetTlpConfig { retries: 31, ..ok.clone() },
            NetTlpConfig { tags: 0, ..ok.clone() },
            NetTlpConfig { tags: 17, ..ok.clone() },
            NetTlpConfig { mrrs: 100, ..ok.clone() },
            NetTlpConfig { mrrs: 8192, ..ok.clone() },
            NetTlpConfig { timeout: Duration::ZERO, ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
