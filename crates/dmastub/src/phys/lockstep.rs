//! Readers in lockstep: several threads reading one device source, whose batches go out
//! together.
//!
//! Over DMA a batch costs a round trip however few requests it holds (up to the adapter's
//! tags), and a walk of a linked list sends batches of one request each. Two independent
//! walks run in turn cost the sum of their round trips; run in lockstep, each round trip
//! carries a step of both, and they cost the longer one's. Each reader gets a
//! [`LockstepReader`]: a [`PhysMem`] whose reads wait until every other reader still running
//! has asked for its next batch too (or finished), then one merged batch is sent for all.
//! Bytes and errors are each reader's own, exactly as the source gives them.

use super::{CoreNote, PhysError, PhysMem, RamRange, Segment, SegmentError, SourceKind};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What a source says of itself, kept by each reader.
#[derive(Clone)]
struct Description {
    name: String,
    kind: SourceKind,
    ram: Vec<RamRange>,
    volatile: bool,
    notes: Vec<CoreNote>,
}

/// One reader's waiting batch: where, how many bytes.
struct Request {
    reader: usize,
    segments: Vec<(super::PhysAddr, usize)>,
}

/// What a reader's batch got: each segment's bytes, and the first one not filled.
type Answer = (Vec<Vec<u8>>, Option<SegmentError>);

struct Round {
    source: Box<dyn PhysMem>,
    /// Readers not finished yet.
    running: usize,
    waiting: Vec<Request>,
    answers: Vec<(usize, Answer)>,
    /// Whole pages read so far (what page-table walks read), by address: the readers walk the
    /// same tables, and what one read serves the other, for this one operation as each
    /// reader's own table cache would.
    pages: HashMap<u64, Vec<u8>>,
}

/// Bytes of a page kept in [`Round::pages`]; and how many are kept at most.
const PAGE: usize = 4096;
const MAX_PAGES: usize = 512;

/// Where one segment of a request comes from.
enum From {
    /// The page at this address in [`Round::pages`].
    Kept(u64),
    Batch(usize),
}

impl Round {
    /// Sends every waiting batch as one, once every running reader waits.
    fn go_if_all_wait(&mut self) {
        if self.waiting.is_empty() || self.waiting.len() < self.running {
            return;
        }
        let mut requests = std::mem::take(&mut self.waiting);
        // A failure leaves the segments after it unread: those readers' batches go again,
        // unless the device failed (it would only wait out its timeout again).
        while !requests.is_empty() {
            // Each distinct segment once: readers walking the same tables ask for the same
            // pages in the same round.
            let mut wanted: Vec<(super::PhysAddr, usize)> = Vec::new();
            let mut slot_of: HashMap<(u64, usize), usize> = HashMap::new();
            let plans: Vec<Vec<From>> = requests
                .iter()
                .map(|r| {
                    r.segments
                        .iter()
                        .map(|&(addr, len)| {
                            if len == PAGE && self.pages.contains_key(&addr.0) {
                                From::Kept(addr.0)
                            } else {
                                From::Batch(*slot_of.entry((addr.0, len)).or_insert_with(|| {
                                    wanted.push((addr, len));
                                    wanted.len() - 1
                                }))
                            }
                        })
                        .collect()
                })
                .collect();
            let mut bytes: Vec<Vec<u8>> = wanted.iter().map(|&(_, len)| vec![0u8; len]).collect();
            let mut segments: Vec<Segment<'_>> = wanted
                .iter()
                .zip(bytes.iter_mut())
                .map(|(&(addr, _), buf)| Segment { addr, buf: &mut buf[..] })
                .collect();
            let failed = self.source.read_segments(&mut segments).err();
            drop(segments);
            let read = failed.as_ref().map_or(wanted.len(), |e| e.index);
            for (&(addr, len), b) in wanted.iter().zip(&bytes).take(read) {
                if len == PAGE && addr.0 % PAGE as u64 == 0 && self.pages.len() < MAX_PAGES {
                    self.pages.insert(addr.0, b.clone());
                }
            }
            let mut unread = Vec::new();
            for (request, plan) in requests.into_iter().zip(plans) {
                // The first of its segments the batch did not fill, if any.
                let short = plan.iter().enumerate().find_map(|(i, f)| match f {
                    From::Batch(k) if *k >= read => Some((i, *k)),
                    _ => None,
                });
                // (A kept page stays kept while the lockstep lives: the lookup always finds it.)
                let pages = &self.pages;
                let filled = |upto: usize| -> Vec<Vec<u8>> {
                    plan.iter()
                        .take(upto)
                        .map(|f| match f {
                            From::Kept(at) => pages.get(at).cloned().unwrap_or_default(),
                            From::Batch(k) => bytes[*k].clone(),
                        })
                        .collect()
                };
                let error = match (short, &failed) {
                    (None, _) => {
                        self.answers.push((request.reader, (filled(plan.len()), None)));
                        continue;
                    }
                    (Some((i, k)), Some(e)) if k == e.index => {
                        SegmentError { index: i, error: e.error.clone() }
                    }
                    (Some((i, _)), Some(e)) if e.error.is_device_failure() => SegmentError {
                        index: i,
                        error: e
                            .error
                            .not_sent_after(request.segments[i].0, "another reader's read in the batch"),
                    },
                    (Some(_), _) => {
                        unread.push(request);
                        continue;
                    }
                };
                self.answers.push((request.reader, (filled(error.index), Some(error))));
            }
            requests = unread;
        }
    }
}

struct Shared {
    round: Mutex<Round>,
    answered: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Round> {
        // A reader that panicked left the state consistent: every change is made whole.
        self.round.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The readers of one source in lockstep; gives the source back when they are done.
pub struct Lockstep {
    shared: Arc<Shared>,
    description: Description,
    readers: usize,
}

impl Lockstep {
    /// Puts `source` behind readers in lockstep.
    pub fn new(source: Box<dyn PhysMem>) -> Self {
        let description = Description {
            name: source.name().to_string(),
            kind: source.kind(),
            ram: source.ram().to_vec(),
            volatile: source.is_volatile(),
            notes: source.core_notes().to_vec(),
        };
        let round =
            Round { source, running: 0, waiting: Vec::new(), answers: Vec::new(), pages: HashMap::new() };
        Self {
            shared: Arc::new(Shared { round: Mutex::new(round), answered: Condvar::new() }),
            description,
            readers: 0,
        }
    }

    /// A new reader. Every reader must be dropped (or read) for the others to go on: make
    /// them all before any reads, and drop each when its reading is done.
    pub fn reader(&mut self) -> LockstepReader {
        self.shared.lock().running += 1;
        self.readers += 1;
        LockstepReader {
            shared: Arc::clone(&self.shared),
            id: self.readers,
            description: self.description.clone(),
        }
    }

    /// The source back, once every reader is dropped; `Err(self)` while one is not.
    pub fn into_source(self) -> Result<Box<dyn PhysMem>, Self> {
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared.round.into_inner().unwrap_or_else(|p| p.into_inner()).source),
            Err(shared) => Err(Self { shared, ..self }),
        }
    }
}

/// One reader of a [`Lockstep`]: a [`PhysMem`] for its own thread.
pub struct LockstepReader {
    shared: Arc<Shared>,
    id: usize,
    description: Description,
}

impl Drop for LockstepReader {
    fn drop(&mut self) {
        let mut round = self.shared.lock();
        round.running = round.running.saturating_sub(1);
        round.go_if_all_wait();
        drop(round);
        self.shared.answered.notify_all();
    }
}

impl PhysMem for LockstepReader {
    fn name(&self) -> &str {
        &self.description.name
    }

    fn kind(&self) -> SourceKind {
        self.description.kind
    }

    fn ram(&self) -> &[RamRange] {
        &self.description.ram
    }

    fn is_volatile(&self) -> bool {
        self.description.volatile
    }

    fn core_notes(&self) -> &[CoreNote] {
        &self.description.notes
    }

    fn read(&mut self, addr: super::PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        self.read_segments(&mut [Segment { addr, buf }]).map_err(|e| e.error)
    }

    fn read_segments(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        if segments.is_empty() {
            return Ok(());
        }
        let request =
            Request { reader: self.id, segments: segments.iter().map(|s| (s.addr, s.buf.len())).collect() };
        let mut round = self.shared.lock();
        round.waiting.push(request);
        round.go_if_all_wait();
        self.shared.answered.notify_all();
        let (bytes, failed) = loop {
            if let Some(i) = round.answers.iter().position(|(reader, _)| *reader == self.id) {
                break round.answers.swap_remove(i).1;
            }
            round = self.shared.answered.wait(round).unwrap_or_else(|p| p.into_inner());
        };
        drop(round);
        let filled = failed.as_ref().map_or(segments.len(), |e| e.index);
        for (s, b) in segments.iter_mut().zip(bytes).take(filled) {
            s.buf.copy_from_slice(&b);
        }
        failed.map_or(Ok(()), Err)
    }

    fn traffic(&self) -> Option<String> {
        self.shared.lock().source.traffic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::{BufferMem, PhysAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A buffer that counts the batches it is asked for; a batch that holds `dead` fails from
    /// its first segment on, as a device gone silent.
    struct Counting {
        inner: BufferMem,
        batches: Arc<AtomicUsize>,
        bytes: Arc<AtomicUsize>,
        dead: Option<u64>,
    }

    impl PhysMem for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn kind(&self) -> SourceKind {
            SourceKind::Buffer
        }
        fn ram(&self) -> &[RamRange] {
            self.inner.ram()
        }
        fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
            self.inner.read(addr, buf)
        }
        fn read_segments(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            self.bytes.fetch_add(segments.iter().map(|s| s.buf.len()).sum(), Ordering::SeqCst);
            if segments.iter().any(|s| Some(s.addr.0) == self.dead) {
                let error = PhysError::device(segments[0].addr, "counting", "no completion");
                return Err(SegmentError { index: 0, error });
            }
            self.inner.read_segments(segments)
        }
    }

    fn source(batches: &Arc<AtomicUsize>) -> Box<dyn PhysMem> {
        counting(batches, &Arc::new(AtomicUsize::new(0)))
    }

    fn counting(batches: &Arc<AtomicUsize>, bytes_read: &Arc<AtomicUsize>) -> Box<dyn PhysMem> {
        let bytes: Vec<u8> = (0..0x4000u32).map(|i| (i * 7 % 251) as u8).collect();
        Box::new(Counting {
            inner: BufferMem::new("counting", bytes),
            batches: Arc::clone(batches),
            bytes: Arc::clone(bytes_read),
            dead: None,
        })
    }

    fn expected(addr: u64, len: usize) -> Vec<u8> {
        (addr..addr + len as u64).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn two_walks_share_their_batches_and_each_gets_its_own_bytes() {
        let batches = Arc::new(AtomicUsize::new(0));
        let mut lockstep = Lockstep::new(source(&batches));
        let (mut a, mut b) = (lockstep.reader(), lockstep.reader());
        std::thread::scope(|s| {
            s.spawn(move || {
                for step in 0..10u64 {
                    let mut buf = [0u8; 8];
                    a.read(PhysAddr(step * 16), &mut buf).unwrap();
                    assert_eq!(buf.to_vec(), expected(step * 16, 8));
                }
            });
            s.spawn(move || {
                // A shorter walk: once it is done, the other goes on alone.
                for step in 0..4u64 {
                    let mut buf = [0u8; 32];
                    b.read(PhysAddr(0x1000 + step * 64), &mut buf).unwrap();
                    assert_eq!(buf.to_vec(), expected(0x1000 + step * 64, 32));
                }
            });
        });
        assert_eq!(batches.load(Ordering::SeqCst), 10, "the 4 steps rode along with the 10");
        assert!(lockstep.into_source().is_ok());
    }

    #[test]
    fn a_failure_is_the_failing_readers_and_the_others_are_read_again() {
        let batches = Arc::new(AtomicUsize::new(0));
        let mut lockstep = Lockstep::new(source(&batches));
        let (mut a, mut b) = (lockstep.reader(), lockstep.reader());
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(move || {
                let (mut x, mut outside) = ([0u8; 4], [0u8; 4]);
                let mut segs = [
                    Segment { addr: PhysAddr(8), buf: &mut x },
                    Segment { addr: PhysAddr(0x10_0000), buf: &mut outside },
                ];
                (a.read_segments(&mut segs).map_err(|e| e.index), x)
            });
            let hb = s.spawn(move || {
                let mut y = [0u8; 4];
                (b.read(PhysAddr(0x20), &mut y).is_ok(), y)
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(ra.0, Err(1), "the segment outside RAM is the one that failed");
        assert_eq!(ra.1.to_vec(), expected(8, 4), "the one before it is filled");
        assert!(rb.0, "the other reader's read succeeds");
        assert_eq!(rb.1.to_vec(), expected(0x20, 4));
    }

    #[test]
    fn a_page_one_reader_read_serves_the_other() {
        let (batches, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut lockstep = Lockstep::new(counting(&batches, &bytes));
        let (mut a, mut b) = (lockstep.reader(), lockstep.reader());
        // Two rounds: each reader reads the page at 0x1000 once, in a different round.
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut page = vec![0u8; 4096];
                a.read(PhysAddr(0x1000), &mut page).unwrap();
                assert_eq!(page, expected(0x1000, 4096));
                let mut word = [0u8; 8];
                a.read(PhysAddr(0x10), &mut word).unwrap();
            });
            s.spawn(move || {
                let mut word = [0u8; 8];
                b.read(PhysAddr(0), &mut word).unwrap();
                let mut page = vec![0u8; 4096];
                b.read(PhysAddr(0x1000), &mut page).unwrap();
                assert_eq!(page, expected(0x1000, 4096));
            });
        });
        let source = lockstep.into_source().ok().expect("every reader dropped");
        assert_eq!(batches.load(Ordering::SeqCst), 2);
        assert_eq!(bytes.load(Ordering::SeqCst), 4096 + 8 + 8, "the page was read once");
        drop(source);
    }

    #[test]
    fn a_reader_never_used_holds_nobody_up_once_dropped() {
        let batches = Arc::new(AtomicUsize::new(0));
        let mut lockstep = Lockstep::new(source(&batches));
        let (mut a, idle) = (lockstep.reader(), lockstep.reader());
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut buf = [0u8; 8];
                a.read(PhysAddr(0), &mut buf).unwrap();
            });
            s.spawn(move || drop(idle));
        });
        assert_eq!(batches.load(Ordering::SeqCst), 1);
        assert!(lockstep.into_source().is_ok());
    }

    #[test]
    fn a_segment_both_readers_ask_for_in_one_round_is_read_once() {
        let (batches, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut lockstep = Lockstep::new(counting(&batches, &bytes));
        let readers = [lockstep.reader(), lockstep.reader()];
        std::thread::scope(|s| {
            for mut r in readers {
                s.spawn(move || {
                    let mut page = vec![0u8; 4096];
                    r.read(PhysAddr(0x2000), &mut page).unwrap();
                    assert_eq!(page, expected(0x2000, 4096));
                });
            }
        });
        assert!(lockstep.into_source().is_ok());
        assert_eq!(batches.load(Ordering::SeqCst), 1);
        assert_eq!(bytes.load(Ordering::SeqCst), 4096, "one read served both");
    }

    /// A device that fails fails every reader's batch in the round at once: sending the
    /// others again would only wait out its timeout again.
    #[test]
    fn a_device_failure_answers_every_reader_of_the_round_without_sending_again() {
        let (batches, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let source: Box<dyn PhysMem> = Box::new(Counting {
            inner: BufferMem::new("counting", (0..0x4000u32).map(|i| (i * 7 % 251) as u8).collect()),
            batches: Arc::clone(&batches),
            bytes: Arc::clone(&bytes),
            dead: Some(0x100),
        });
        let mut lockstep = Lockstep::new(source);
        let (mut a, mut b) = (lockstep.reader(), lockstep.reader());
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(move || {
                let mut x = [0u8; 8];
                a.read(PhysAddr(0x100), &mut x)
            });
            let hb = s.spawn(move || {
                let (mut y, mut z) = ([0u8; 8], [0u8; 8]);
                let mut segs = [
                    Segment { addr: PhysAddr(0x200), buf: &mut y },
                    Segment { addr: PhysAddr(0x300), buf: &mut z },
                ];
                b.read_segments(&mut segs)
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert!(lockstep.into_source().is_ok());
        let ea = ra.expect_err("the dead address fails");
        assert!(ea.is_device_failure() && ea.to_string().contains("0x100"), "its own address: {ea}");
        let eb = rb.expect_err("the other reader's batch fails too");
        assert_eq!(eb.index, 0);
        let text = eb.error.to_string();
        assert!(eb.error.is_device_failure() && text.contains("0x200"), "its own address: {text}");
        assert!(text.contains("no completion"), "and why: {text}");
        assert_eq!(batches.load(Ordering::SeqCst), 1, "nothing was sent again");
    }
}
