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

mod flight;
mod transfer;

use super::config::{NetTlpConfig, NetTlpError, NetTlpStats};
use super::mmsg::{MAX_BATCH, RecvBatch};
use super::wire::{self, MAX_DATAGRAM, MemRequest};
use crate::addr::PhysAddr;
use crate::phys::{IoError, PhysError, PhysMem, RamRange, Segment, SegmentError, SourceKind};
use flight::{Chunk, Hot, InFlight, Rtt};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind};
use std::net::SocketAddrV4;
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

    /// The settings it was opened with.
    pub fn config(&self) -> &NetTlpConfig {
        &self.config
    }

    /// What it has carried since it was opened (or since [`PhysMem::reset_traffic`]).
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
