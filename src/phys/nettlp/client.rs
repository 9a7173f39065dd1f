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
use crate::phys::{PhysError, PhysMem, RamRange, Segment, SegmentError, SourceKind};
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
    /// How long a request may wait for its completions before it is sent again.
    pub timeout: Duration,
    /// How many times a request is sent again before the read fails.
    pub retries: u32,
    /// Whether [`PhysMem::write`] sends Memory Writes; refused otherwise.
    pub allow_write: bool,
    /// Whether each new request on a tag carries the next generation in the tag's high nibble
    /// (see the module notes). Off, tags are 0 to 15 as libtlp sends them, and a completion
    /// that arrives after its request is done can be taken for the next one on its tag.
    pub tag_generations: bool,
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
            retries: 2,
            allow_write: false,
            tag_generations: true,
        }
    }
}

impl NetTlpConfig {
    /// Checks the settings against what PCIe and the adapter allow.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_TAGS).contains(&self.tags) {
            return Err(format!(
                "--tags {}: the adapter tells requests apart by the low 4 bits of the tag, so 1 to {MAX_TAGS}",
                self.tags
            ));
        }
        if !self.mrrs.is_power_of_two() || !(128..=4096).contains(&self.mrrs) {
            return Err(format!(
                "--mrrs {}: PCIe max read request size is a power of two from 128 to 4096",
                self.mrrs
            ));
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be at least 1 ms".into());
        }
        Ok(())
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
}

/// One request of a batch: `len` bytes at `addr`, for `segment` at `offset`.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    segment: usize,
    offset: usize,
    addr: u64,
    len: u32,
}

/// A tag's request on the wire, and which of its bytes have come back.
struct InFlight {
    chunk: usize,
    /// The full 8-bit tag: the slot in the low nibble (the adapter routes by it), a
    /// generation in the high one.
    tag: u8,
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
    /// Per slot, the generation its next request carries in the tag's high nibble.
    generations: Vec<u8>,
    stats: NetTlpStats,
}

impl NetTlpMem {
    /// Opens one socket per tag: bound to `local:0x3000+T`, connected to `adapter:0x3000+T`.
    /// Nothing is sent yet.
    pub fn connect(config: NetTlpConfig) -> Result<Self, String> {
        config.validate()?;
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let mut sockets = Vec::with_capacity(usize::from(config.tags));
        for tag in 0..config.tags {
            let port = wire::port_for_tag(tag);
            let local = SocketAddrV4::new(config.local, port);
            let remote = SocketAddrV4::new(config.adapter, port);
            let mut socket = open_socket(local, remote).map_err(|e| {
                let hint = if e.kind() == ErrorKind::AddrInUse {
                    " (another NetTLP client, or libtlp, uses this address)"
                } else if e.kind() == ErrorKind::AddrNotAvailable {
                    " (--nettlp-local must be an address of this machine)"
                } else {
                    ""
                };
                format!("NetTLP tag {tag}: socket {local} -> {remote}: {e}{hint}")
            })?;
            poll.registry()
                .register(&mut socket, Token(usize::from(tag)), Interest::READABLE)
                .map_err(|e| format!("epoll: registering {local}: {e}"))?;
            sockets.push(socket);
        }
        let name = format!("NetTLP adapter {} (requester {})", config.adapter, config.requester);
        Ok(NetTlpMem {
            name,
            ram: [RamRange { start: PhysAddr(0), len: PHYS_LIMIT }],
            slots: (0..config.tags).map(|_| None).collect(),
            sockets,
            poll,
            events: Events::with_capacity(64),
            tx: Vec::with_capacity(MAX_DATAGRAM),
            ready: Vec::with_capacity(64),
            batch: RecvBatch::new(MAX_BATCH, MAX_DATAGRAM + 64),
            generations: vec![0; usize::from(config.tags)],
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

    /// Reads every chunk, as many in flight as there are tags. Returns the lowest failing
    /// segment; all segments before it are filled.
    fn transfer(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        let chunks = self.chunks(segments)?;
        if chunks.is_empty() {
            return Ok(());
        }
        self.stats.batches += 1;
        self.stats.round_trips += (chunks.len() as u64).div_ceil(u64::from(self.config.tags));
        let mut next = 0usize;
        let mut failed: Option<SegmentError> = None;
        let mut in_flight = 0usize;
        // A tag whose request gave up may still get its late completions: not reused here.
        let mut retired = vec![false; self.slots.len()];
        loop {
            // Fill every free tag while nothing has failed.
            while failed.is_none() && next < chunks.len() {
                let Some(tag) = (0..self.slots.len()).find(|&t| self.slots[t].is_none() && !retired[t])
                else {
                    break;
                };
                let c = chunks[next];
                let generation = self.generations[tag];
                if self.config.tag_generations {
                    self.generations[tag] = (generation + 1) & 0xf;
                }
                let full_tag = generation << 4 | tag as u8;
                self.slots[tag] = Some(InFlight {
                    chunk: next,
                    tag: full_tag,
                    deadline: Instant::now() + self.config.timeout,
                    tries: 1,
                    received: 0,
                    have: [0; 64],
                });
                self.stats.requests += 1;
                in_flight += 1;
                next += 1;
                if let Err(e) = self.send_read(tag, full_tag, &c) {
                    self.slots[tag] = None;
                    in_flight -= 1;
                    fail(&mut failed, c.segment, e);
                }
            }
            if in_flight == 0 {
                if failed.is_none() && next < chunks.len() {
                    // Every tag retired: nothing can be sent.
                    let c = chunks[next];
                    let why = "every tag timed out in this read".to_string();
                    fail(&mut failed, c.segment, self.device_error(c.addr, why));
                }
                break;
            }
            let now = Instant::now();
            let wait = self
                .slots
                .iter()
                .flatten()
                .map(|f| f.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or_default();
            if let Err(e) = self.wait_for_completions(wait)
                && e.kind() != ErrorKind::Interrupted
            {
                // Everything in flight is abandoned: blame the lowest segment still waiting.
                let waiting = self.slots.iter().flatten().map(|f| chunks[f.chunk]).min_by_key(|c| c.segment);
                let c = waiting.unwrap_or(chunks[next.saturating_sub(1)]);
                fail(&mut failed, c.segment, self.device_error(c.addr, format!("epoll: {e}")));
                break;
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.extend(self.events.iter().map(|e| e.token().0));
            for &tag in &ready {
                in_flight -= self.receive(tag, &chunks, segments, &mut failed);
            }
            self.ready = ready;
            in_flight -= self.expire(&chunks, &mut failed, &mut retired);
        }
        // Requests still out after a failure are abandoned: their late answers fit no request
        // (the tag generation moves on) and are dropped when they come.
        self.slots.iter_mut().for_each(|s| *s = None);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
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
            Err(e) => Err(self.device_error(c.addr, self.socket_error(tag, &e))),
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
        PhysError::Device { addr: PhysAddr(addr), source_name: self.name.clone(), why }
    }

    /// Takes every datagram queued on `tag`'s socket. Returns how many requests ended.
    fn receive(
        &mut self,
        tag: usize,
        chunks: &[Chunk],
        segments: &mut [Segment<'_>],
        failed: &mut Option<SegmentError>,
    ) -> usize {
        let mut ended = 0;
        if tag >= self.sockets.len() {
            return 0;
        }
        // Bounded: a flood cannot keep us here; the rest waits for the next poll round,
        // which epoll reports again because the socket is re-armed below.
        let mut batch = std::mem::replace(&mut self.batch, RecvBatch::empty());
        for _ in 0..64 {
            let n = match batch.recv(&self.sockets[tag]) {
                Ok(0) => {
                    self.batch = batch;
                    return ended;
                }
                Ok(n) => n,
                Err(e) => {
                    if let Some(f) = self.slots[tag].take() {
                        let c = chunks[f.chunk];
                        ended += 1;
                        let err = self.device_error(c.addr, self.socket_error(tag, &e));
                        fail(failed, c.segment, err);
                    }
                    continue;
                }
            };
            for i in 0..n {
                match self.complete(tag, batch.get(i), chunks, segments) {
                    Ok(false) => {}
                    Ok(true) => {
                        self.slots[tag] = None;
                        ended += 1;
                    }
                    Err((segment, e)) => {
                        self.slots[tag] = None;
                        ended += 1;
                        fail(failed, segment, e);
                    }
                }
            }
            if n < batch.capacity() {
                self.batch = batch;
                return ended;
            }
        }
        self.batch = batch;
        // Still readable: ask epoll to report it again.
        let _ = self.poll.registry().reregister(&mut self.sockets[tag], Token(tag), Interest::READABLE);
        ended
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
        let Some(flight) = self.slots[tag].as_mut() else {
            self.stats.ignored += 1;
            return Ok(false);
        };
        let chunk = chunks[flight.chunk];
        // Our completion: our requester ID, this tag, and a place inside the request.
        let fits = c.requester == self.config.requester
            && c.tag == flight.tag
            && u32::from(c.byte_count) <= chunk.len
            && u64::from(c.lower_addr)
                == (chunk.addr + u64::from(chunk.len - u32::from(c.byte_count))) & 0x7f;
        if !fits {
            self.stats.ignored += 1;
            log::debug!(
                "NetTLP tag {tag}: dropped a completion (requester {}, tag {}, byte count {}, lower address {:#x}) that fits no request",
                c.requester,
                c.tag,
                c.byte_count,
                c.lower_addr
            );
            return Ok(false);
        }
        match c.status {
            CplStatus::Success => {}
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
                let why = format!("{other} for a read of {} bytes on tag {tag}", chunk.len);
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
    fn expire(&mut self, chunks: &[Chunk], failed: &mut Option<SegmentError>, retired: &mut [bool]) -> usize {
        let now = Instant::now();
        let mut ended = 0;
        for tag in 0..self.slots.len() {
            let Some(f) = self.slots[tag].as_mut() else { continue };
            if f.deadline > now {
                continue;
            }
            let c = chunks[f.chunk];
            // After a failure elsewhere the read is lost anyway: no more tries.
            if f.tries <= self.config.retries && failed.is_none() {
                f.tries += 1;
                f.deadline = now + self.config.timeout;
                self.stats.retransmits += 1;
                // The same tag: a late answer to the first try is as good as one to this.
                let full_tag = f.tag;
                if let Err(e) = self.send_read(tag, full_tag, &c) {
                    self.slots[tag] = None;
                    ended += 1;
                    fail(failed, c.segment, e);
                }
                continue;
            }
            let tries = f.tries;
            self.slots[tag] = None;
            if let Some(r) = retired.get_mut(tag) {
                *r = true;
            }
            ended += 1;
            self.stats.timeouts += 1;
            let why = format!(
                "no completion for a read of {} bytes on tag {tag} after {tries} tries of {} ms (is the adapter at {} and does it send to {}?)",
                c.len,
                self.config.timeout.as_millis(),
                self.config.adapter,
                self.config.local
            );
            fail(failed, c.segment, self.device_error(c.addr, why));
        }
        ended
    }
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
                    Err(e) => {
                        return Err(
                            self.device_error(a, format!("Memory Write: {}", self.socket_error(0, &e)))
                        );
                    }
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
            "from {}, {} tags, MRRS {}, timeout {} ms x {} tries; RAM map unknown: holes answer Unsupported Request",
            self.config.local,
            self.config.tags,
            self.config.mrrs,
            self.config.timeout.as_millis(),
            self.config.retries + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marking_counts_only_new_bytes() {
        let mut f =
            InFlight { chunk: 0, tag: 0, deadline: Instant::now(), tries: 1, received: 0, have: [0; 64] };
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
