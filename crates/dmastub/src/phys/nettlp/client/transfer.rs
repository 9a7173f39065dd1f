//! Reading a batch: cutting it into requests, keeping every tag busy, placing completions,
//! sending again what times out, and saying why a read failed.

use super::flight::{Chunk, InFlight, Outcome};
use super::{FENCE_ADDR, LOSSY_EVERY, NetTlpMem, PROGRESS_EVERY, SLOW_RTT, SPIN, fail};
use crate::addr::PhysAddr;
use crate::phys::nettlp::mmsg::RecvBatch;
use crate::phys::nettlp::wire::{self, CplStatus, MemRequest, Tlp};
use crate::phys::{PhysError, Segment, SegmentError};
use mio::{Interest, Token};
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

impl NetTlpMem {
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
    pub(super) fn transfer(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
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
