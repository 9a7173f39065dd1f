//! How to reach a NetTLP adapter ([`NetTlpConfig`]), what can be wrong with it ([`NetTlpError`]),
//! and what the client counts ([`NetTlpStats`]).

use super::wire::{MAX_TAGS, RequesterId};
use crate::phys::{NetTlpSetting, Remedy};
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

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
    /// Whether [`PhysMem::write`](crate::phys::PhysMem::write) sends Memory Writes; refused otherwise.
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

/// Why a NetTLP client could not be set up. Reads that fail later are [`PhysError`](crate::phys::PhysError)s.
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
    /// Reads asked of the source (a [`PhysMem::read`](crate::phys::PhysMem::read) or one [`PhysMem::read_segments`](crate::phys::PhysMem::read_segments)).
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

#[cfg(test)]
mod tests {
    use super::*;

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
