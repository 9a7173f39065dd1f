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
}

impl Round {
    /// Sends every waiting batch as one, once every running reader waits.
    fn go_if_all_wait(&mut self) {
        if self.waiting.is_empty() || self.waiting.len() < self.running {
            return;
        }
        let mut requests = std::mem::take(&mut self.waiting);
        // A failure leaves the segments after it unread: those readers' batches go again.
        while !requests.is_empty() {
            let mut bytes: Vec<Vec<u8>> =
                requests.iter().flat_map(|r| r.segments.iter().map(|&(_, len)| vec![0u8; len])).collect();
            let addrs = requests.iter().flat_map(|r| r.segments.iter().map(|&(a, _)| a));
            let mut segments: Vec<Segment<'_>> =
                addrs.zip(bytes.iter_mut()).map(|(addr, buf)| Segment { addr, buf: &mut buf[..] }).collect();
            let failed = self.source.read_segments(&mut segments).err();
            drop(segments);
            let mut bytes = bytes.into_iter();
            let mut first = 0usize;
            let mut unread = Vec::new();
            for request in requests {
                let n = request.segments.len();
                let mine: Vec<Vec<u8>> = bytes.by_ref().take(n).collect();
                match &failed {
                    Some(e) if e.index < first => unread.push(request),
                    Some(e) if e.index < first + n => {
                        let error = SegmentError { index: e.index - first, error: e.error.clone() };
                        self.answers.push((request.reader, (mine, Some(error))));
                    }
                    _ => self.answers.push((request.reader, (mine, None))),
                }
                first += n;
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
        let round = Round { source, running: 0, waiting: Vec::new(), answers: Vec::new() };
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

    /// A buffer that counts the batches it is asked for.
    struct Counting {
        inner: BufferMem,
        batches: Arc<AtomicUsize>,
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
            self.inner.read_segments(segments)
        }
    }

    fn source(batches: &Arc<AtomicUsize>) -> Box<dyn PhysMem> {
        let bytes: Vec<u8> = (0..0x4000u32).map(|i| (i * 7 % 251) as u8).collect();
        Box::new(Counting { inner: BufferMem::new("counting", bytes), batches: Arc::clone(batches) })
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
}
