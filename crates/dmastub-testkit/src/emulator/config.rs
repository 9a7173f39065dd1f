//! How the emulated adapter behaves ([`EmulatorConfig`]) and what it counts ([`EmulatorStats`]).

use dmastub::phys::nettlp::wire::RequesterId;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Checks the values a real root complex could have.
    pub fn validate(&self) -> Result<(), EmulatorConfigError> {
        if !self.mps.is_power_of_two() || !(128..=4096).contains(&self.mps) {
            return Err(EmulatorConfigError::Mps(self.mps));
        }
        if self.rcb != 64 && self.rcb != 128 {
            return Err(EmulatorConfigError::Rcb(self.rcb));
        }
        for (what, p) in [
            ("drop rate (--drop-rate)", self.drop_rate),
            ("duplicate rate (--duplicate)", self.duplicate_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(EmulatorConfigError::Probability { what, p });
            }
        }
        Ok(())
    }

    /// The faults injected, for the banner: empty when there are none.
    pub(super) fn faults(&self) -> String {
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

/// A setting no real root complex has; the message names the command-line option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorConfigError {
    /// [`EmulatorConfig::mps`] not a power of two from 128 to 4096.
    #[error("max payload size (--mps) {0} must be a power of two from 128 to 4096")]
    Mps(u32),
    /// [`EmulatorConfig::rcb`] neither 64 nor 128.
    #[error("read completion boundary (--rcb) {0} must be 64 or 128")]
    Rcb(u32),
    /// A rate that is not a probability.
    #[error("{what} {p} must be a probability from 0 to 1")]
    Probability {
        /// Which rate.
        what: &'static str,
        /// Its value.
        p: f64,
    },
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
        pub(super) struct Counters {
            $(pub(super) $name: AtomicU64,)*
        }

        impl Counters {
            pub(super) fn snapshot(&self) -> EmulatorStats {
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

pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
