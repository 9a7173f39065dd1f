//! Counters of the address space's work.

use std::fmt;

/// Counters of the work done, to check that caching works and to print in benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuStats {
    /// Backend reads of page-table data (whole pages, or single entries for `vtop`).
    pub table_reads: u64,
    /// Walk steps answered by the table cache.
    pub table_cache_hits: u64,
    /// Backend reads of data.
    pub data_reads: u64,
    /// Bytes of data read from the backend.
    pub data_bytes: u64,
    /// Translations answered by the translation cache.
    pub translation_hits: u64,
    /// Translations that needed a walk.
    pub translation_misses: u64,
    /// Page walks (cached translations and `vtop` included).
    pub walks: u64,
    /// Times the caches were dropped (by `flush`, an idle gap, a write or a setting change).
    pub flushes: u64,
}

impl MmuStats {
    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &MmuStats) {
        self.table_reads += other.table_reads;
        self.table_cache_hits += other.table_cache_hits;
        self.data_reads += other.data_reads;
        self.data_bytes += other.data_bytes;
        self.translation_hits += other.translation_hits;
        self.translation_misses += other.translation_misses;
        self.walks += other.walks;
        self.flushes += other.flushes;
    }

    /// All backend reads, tables and data.
    pub fn backend_reads(&self) -> u64 {
        self.table_reads + self.data_reads
    }
}

impl fmt::Display for MmuStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend reads: {} table, {} data ({} bytes); translations: {} cached, {} walked; \
             table-cache hits: {}; walks: {}; flushes: {}",
            self.table_reads,
            self.data_reads,
            self.data_bytes,
            self.translation_hits,
            self.translation_misses,
            self.table_cache_hits,
            self.walks,
            self.flushes
        )
    }
}
