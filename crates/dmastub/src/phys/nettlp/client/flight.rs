//! The bookkeeping of requests on the wire: what each tag carries, which identities must stay
//! quiet, and the round-trip estimate.

use std::time::{Duration, Instant};

/// One request of a batch: `len` bytes at `addr`, for `segment` at `offset`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunk {
    pub(super) segment: usize,
    pub(super) offset: usize,
    pub(super) addr: u64,
    pub(super) len: u32,
}

impl Chunk {
    /// What every completion of this request carries in Lower Address + Byte Count (mod 128):
    /// the low 7 bits of its end. Two requests on one tag whose ends differ here can never be
    /// confused; two whose ends agree can.
    pub(super) fn class(&self) -> u8 {
        ((self.addr + u64::from(self.len)) & 0x7f) as u8
    }
}

/// A tag's request on the wire, and which of its bytes have come back.
pub(super) struct InFlight {
    pub(super) chunk: usize,
    /// The full 8-bit tag: the slot in the low nibble (the adapter routes by it), a
    /// generation in the high one.
    pub(super) tag: u8,
    /// When the first try went out (for the round-trip estimate).
    pub(super) sent: Instant,
    pub(super) deadline: Instant,
    pub(super) tries: u32,
    pub(super) received: u32,
    /// One bit per byte of the request (at most 4096).
    pub(super) have: [u64; 64],
}

impl InFlight {
    /// Marks `[start, end)` as received; returns how many of those bytes are new.
    pub(super) fn mark(&mut self, start: usize, end: usize) -> u32 {
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
pub(super) struct Hot {
    pub(super) tag: u8,
    pub(super) class: u8,
    pub(super) until: Instant,
}

/// The smoothed round trip and its variation (RFC 6298), from requests answered at the first
/// try.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rtt {
    pub(super) srtt: Option<Duration>,
    pub(super) rttvar: Duration,
    /// The longest recent round trip: the largest sample, shrinking by 1/64 with each sample
    /// after it.
    pub(super) max: Duration,
}

impl Rtt {
    pub(super) fn sample(&mut self, s: Duration) {
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
    pub(super) fn spread(&self) -> Option<Duration> {
        self.srtt.map(|s| s + self.rttvar * 4)
    }
}

/// How a batch ended for the error message: how many reads failed and why.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) failed: u32,
    pub(super) abandoned: u32,
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
}
