//! What the emulator injects and limits: the seeded fault generator, the warning rate limit,
//! and how a root complex cuts a read into completions.

use dmastub::testing::XorShift;

/// The fault injector's randomness: the project's one seeded generator, started from a
/// splitmix64 of the configured seed so that 0 and neighbouring seeds give unrelated streams.
pub(super) struct FaultRng(XorShift);

impl FaultRng {
    pub(super) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(XorShift::new(z))
    }

    /// The next 64 random bits.
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// True with probability `p`; draws nothing when `p` is 0, so a run without faults uses no
    /// randomness at all.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64)
    }

    /// A number in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
}

/// Lets the first 20 warnings of a kind through, then every 1000th, so a flood of bad packets
/// cannot fill the log (or a pipe nobody reads).
#[derive(Default)]
pub(super) struct RateLimit {
    seen: u64,
}

impl RateLimit {
    /// `Some(suffix)` when this occurrence should be logged.
    pub(super) fn note(&mut self) -> Option<String> {
        self.seen += 1;
        match self.seen {
            1..20 => Some(String::new()),
            20 => Some(" (more of these are logged every 1000th)".to_string()),
            n if n.is_multiple_of(1000) => Some(format!(" ({n} so far)")),
            _ => None,
        }
    }
}

/// The pieces a root complex answers a read of `len` bytes at `addr` with, as (address of the
/// first byte, bytes): each as long as the max payload size allows, and each but the last
/// ending at a read-completion boundary. `end` must not wrap (the caller checked).
pub(super) fn split(addr: u64, end: u64, mps: u32, rcb: u32) -> impl Iterator<Item = (u64, u32)> {
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
