//! Reading the pages a dump keeps: runs of pfns gathered into batches of up to
//! [`BATCH_PAGES`](super::BATCH_PAGES) pages, each batch one `read_segments` call, so that a DMA
//! source puts a whole batch on the wire at once and a file source reads contiguous runs with
//! one `pread` each.

use super::{BATCH_PAGES, DumpError, PAGE};
use crate::addr::PhysAddr;
use crate::phys::{PhysError, PhysMem, Segment};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why reading stopped before the last run.
pub(super) enum Stop {
    /// The caller's stop flag was set.
    Asked,
    /// The source failed as a device (it stopped answering): nothing more can be read.
    Device(PhysError),
}

impl Stop {
    pub(super) fn reason(&self) -> String {
        match self {
            Stop::Asked => "stopped by the user".to_string(),
            Stop::Device(e) => format!("the source stopped answering: {e}"),
        }
    }
}

/// One page as read: its bytes, or why the source could not give them.
pub(super) type PageRead<'a> = Result<&'a [u8], &'a PhysError>;

/// What [`read_runs`] tells its caller.
pub(super) enum Event<'a> {
    /// The page at this pfn.
    Page(u64, PageRead<'a>),
    /// A batch is done; bytes read from the source so far.
    Batch(u64),
}

/// One batch as read: its runs, their bytes back to back, and the pages that failed.
struct Batch {
    runs: Vec<(u64, u64)>,
    bytes: Vec<u8>,
    failures: Vec<(u64, PhysError)>,
}

/// Batches read ahead of the one being written: reading overlaps compressing and writing.
const READ_AHEAD: usize = 2;

/// Reads every page of `runs` (`(first pfn, pages)`, ascending) from `mem` and hands each to
/// `on` in pfn order, then the end of each batch. Returns why it stopped early, if it did.
///
/// A thread reads while the caller's thread writes, [`READ_AHEAD`] batches apart; setting
/// `stop` ends the reading after the batch in hand.
pub(super) fn read_runs(
    mem: &mut dyn PhysMem,
    runs: impl Iterator<Item = (u64, u64)> + Send,
    stop: &AtomicBool,
    mut on: impl FnMut(Event<'_>) -> Result<(), DumpError>,
) -> Result<Option<Stop>, DumpError> {
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(READ_AHEAD);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        // Whether it read every run.
        let reader = scope.spawn(move || -> bool {
            let mut runs = runs.peekable();
            loop {
                let mut batch: Vec<(u64, u64)> = Vec::new();
                let mut pages = 0u64;
                // Fill the batch, splitting a run that does not fit.
                while pages < BATCH_PAGES as u64 {
                    let Some(&(first, count)) = runs.peek() else { break };
                    let take = count.min(BATCH_PAGES as u64 - pages);
                    batch.push((first, take));
                    pages += take;
                    if take == count {
                        runs.next();
                    } else if let Some(r) = runs.peek_mut() {
                        *r = (first + take, count - take);
                    }
                }
                if batch.is_empty() {
                    return true;
                }
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let mut bytes =
                    empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; BATCH_PAGES * PAGE as usize]);
                bytes.resize((pages * PAGE) as usize, 0);
                let failures = read_batch(mem, &batch, &mut bytes);
                if full_tx.send(Batch { runs: batch, bytes, failures }).is_err() {
                    return false; // the writer has stopped
                }
            }
        });
        let mut bytes_read = 0u64;
        let result = (|| {
            for batch in full_rx.iter() {
                if stop.load(Ordering::Relaxed) {
                    return Ok(Some(Stop::Asked));
                }
                let mut at = 0usize;
                for &(first, count) in &batch.runs {
                    for pfn in first..first + count {
                        let page = &batch.bytes[at..at + PAGE as usize];
                        at += PAGE as usize;
                        match batch.failures.iter().find(|(p, _)| *p == pfn) {
                            Some((_, e)) if e.is_device_failure() => {
                                return Ok(Some(Stop::Device(e.clone())));
                            }
                            Some((_, e)) => on(Event::Page(pfn, Err(e)))?,
                            None => {
                                bytes_read += PAGE;
                                on(Event::Page(pfn, Ok(page)))?;
                            }
                        }
                    }
                }
                on(Event::Batch(bytes_read))?;
                let _ = empty_tx.send(batch.bytes);
            }
            Ok(None)
        })();
        // Whatever ended the writing ends the reading: the reader sees the flag before its next
        // batch, or a closed channel.
        stop.store(true, Ordering::Relaxed);
        drop(full_rx);
        let read_all = reader.join().unwrap_or(false);
        match result {
            Ok(None) if !read_all => Ok(Some(Stop::Asked)),
            other => other,
        }
    })
}

/// Reads `batch` into `bytes` with one `read_segments` call. When that fails, reads each run on
/// its own and a failing run page by page, so that one bad page costs only itself; returns the
/// pages that failed. A device failure ends the fallback at once (every further read would wait
/// out the same timeout).
fn read_batch(mem: &mut dyn PhysMem, batch: &[(u64, u64)], bytes: &mut [u8]) -> Vec<(u64, PhysError)> {
    let mut segments = Vec::with_capacity(batch.len());
    let mut rest = &mut *bytes;
    for &(first, count) in batch {
        let (piece, tail) = rest.split_at_mut((count * PAGE) as usize);
        segments.push(Segment { addr: PhysAddr(first * PAGE), buf: piece });
        rest = tail;
    }
    if mem.read_segments(&mut segments).is_ok() {
        return Vec::new();
    }
    let mut failures = Vec::new();
    for s in segments.iter_mut() {
        if mem.read(s.addr, s.buf).is_ok() {
            continue;
        }
        for (i, page) in s.buf.chunks_mut(PAGE as usize).enumerate() {
            let addr = PhysAddr(s.addr.0 + i as u64 * PAGE);
            if let Err(e) = mem.read(addr, page) {
                let device = e.is_device_failure();
                failures.push((addr.0 / PAGE, e));
                if device {
                    return failures;
                }
            }
        }
    }
    failures
}

/// `runs` (`[start, end)` pfns, ascending, as [`PageSet::kept_runs`](crate::linux::PageSet::kept_runs)
/// gives them) as `(first pfn, pages)`, merging runs separated by gaps of at most `fill` pages
/// (the gap's pages are then read and written too).
pub(super) fn merged(runs: impl Iterator<Item = (u64, u64)>, fill: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut runs = runs.peekable();
    std::iter::from_fn(move || {
        let (start, mut end) = runs.next()?;
        while let Some(&(next_start, next_end)) = runs.peek() {
            if next_start.saturating_sub(end) > fill {
                break;
            }
            end = next_end;
            runs.next();
        }
        Some((start, end - start))
    })
}
