use super::prb::*;
use super::*;
use crate::bytes::LeBytes;
use crate::linux::TypeMap;
use crate::testing::FakeMemory;
use std::collections::{HashMap, VecDeque};

const BASE: u64 = 0xffff_8880_0100_0000;
const PRB_VAR: u64 = BASE;
const RB: u64 = BASE + 0x100;
const DESCS: u64 = BASE + 0x1000;
const INFOS: u64 = BASE + 0x10000;
const DATA: u64 = BASE + 0x40000;
const LOG_VARS: u64 = BASE + 0x200;
const LOG_BUF: u64 = BASE + 0x60000;

/// Kernel memory: one buffer at [`BASE`].
fn test_mem() -> FakeMemory {
    FakeMemory::new().with_region(BASE, vec![0; 0x80000])
}

struct Syms(HashMap<&'static str, u64>);

impl Symbols for Syms {
    fn address(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }
}

/// Linux 6.1 x86-64, as its VMCOREINFO gives it.
fn prb_types() -> TypeMap {
    let mut t = TypeMap::new("test VMCOREINFO");
    for (ty, f, o) in [
        ("printk_ringbuffer", "desc_ring", 0),
        ("printk_ringbuffer", "text_data_ring", 48),
        ("prb_desc_ring", "count_bits", 0),
        ("prb_desc_ring", "descs", 8),
        ("prb_desc_ring", "infos", 16),
        ("prb_desc_ring", "head_id", 24),
        ("prb_desc_ring", "tail_id", 32),
        ("prb_desc", "state_var", 0),
        ("prb_desc", "text_blk_lpos", 8),
        ("prb_data_blk_lpos", "begin", 0),
        ("prb_data_blk_lpos", "next", 8),
        ("printk_info", "seq", 0),
        ("printk_info", "ts_nsec", 8),
        ("printk_info", "text_len", 16),
        ("printk_info", "caller_id", 20),
        ("prb_data_ring", "size_bits", 0),
        ("prb_data_ring", "data", 8),
        ("prb_data_ring", "head_lpos", 16),
        ("prb_data_ring", "tail_lpos", 24),
    ] {
        t.insert_member(ty, f, o, 0);
    }
    t.insert_size("prb_desc", 24);
    t.insert_size("printk_info", 88);
    t
}

/// A printk ring buffer written the way the kernel writes it (bootstrap descriptor, ids
/// and seqs advancing by whole wraps, wrapping data blocks stored at the ring start).
struct PrbSim {
    mem: FakeMemory,
    count_bits: u32,
    size_bits: u32,
    head_id: u64,
    tail_id: u64,
    head_lpos: u64,
    tail_lpos: u64,
    live: VecDeque<(u64, u64, u64)>,
    wrapping_blocks: u32,
}

impl PrbSim {
    fn new(count_bits: u32, size_bits: u32) -> Self {
        let count = 1u64 << count_bits;
        let desc0 = 0u64.wrapping_sub(count + 1) & DESC_ID_MASK;
        let blk0 = 0u64.wrapping_sub(1 << size_bits);
        let mut s = Self {
            mem: test_mem(),
            count_bits,
            size_bits,
            head_id: desc0,
            tail_id: desc0,
            head_lpos: blk0,
            tail_lpos: blk0,
            live: VecDeque::new(),
            wrapping_blocks: 0,
        };
        s.mem.put_u64(PRB_VAR, RB);
        s.write_desc(desc0, 3 << DESC_FLAGS_SHIFT | desc0, 1, 1);
        s.mem.put_u64(INFOS, 0u64.wrapping_sub(count));
        s.sync();
        s
    }
    fn count(&self) -> u64 {
        1 << self.count_bits
    }
    fn desc_addr(&self, id: u64) -> u64 {
        DESCS + (id & (self.count() - 1)) * 24
    }
    fn info_addr(&self, id: u64) -> u64 {
        INFOS + (id & (self.count() - 1)) * 88
    }
    fn write_desc(&mut self, id: u64, sv: u64, begin: u64, next: u64) {
        let a = self.desc_addr(id);
        self.mem.put_u64(a, sv);
        self.mem.put_u64(a + 8, begin);
        self.mem.put_u64(a + 16, next);
    }
    fn sync(&mut self) {
        let m = &mut self.mem;
        m.put(RB, &self.count_bits.to_le_bytes());
        m.put_u64(RB + 8, DESCS);
        m.put_u64(RB + 16, INFOS);
        m.put_u64(RB + 24, self.head_id);
        m.put_u64(RB + 32, self.tail_id);
        m.put(RB + 48, &self.size_bits.to_le_bytes());
        m.put_u64(RB + 56, DATA);
        m.put_u64(RB + 64, self.head_lpos);
        m.put_u64(RB + 72, self.tail_lpos);
    }
    fn evict(&mut self) {
        match self.live.front() {
            Some(&(id, _, next)) if id == self.tail_id => {
                self.live.pop_front();
                let a = self.desc_addr(id);
                self.mem.put_u64(a, 3 << DESC_FLAGS_SHIFT | id);
                if next & 1 == 0 {
                    self.tail_lpos = next;
                }
            }
            _ => {}
        }
        self.tail_id = (self.tail_id + 1) & DESC_ID_MASK;
    }
    /// Writes a record in `state` (2 finalized, 0 reserved); returns its id.
    fn add(&mut self, text: &str, ts: u64, level: u8, state: u64) -> u64 {
        let count = self.count();
        let size = 1u64 << self.size_bits;
        let id = (self.head_id + 1) & DESC_ID_MASK;
        while id.wrapping_sub(self.tail_id) & DESC_ID_MASK >= count {
            self.evict();
        }
        let (begin, next) = if text.is_empty() {
            (NO_LPOS, NO_LPOS)
        } else {
            let blk = (8 + text.len() as u64).next_multiple_of(8);
            let begin = self.head_lpos;
            let mut next = begin.wrapping_add(blk);
            if begin >> self.size_bits != next >> self.size_bits {
                next = (next >> self.size_bits << self.size_bits).wrapping_add(blk);
            }
            while next.wrapping_sub(self.tail_lpos) > size && !self.live.is_empty() {
                self.evict();
            }
            if begin >> self.size_bits != next >> self.size_bits {
                self.wrapping_blocks += 1;
                self.mem.put_u64(DATA + (begin & (size - 1)), id);
                self.mem.put_u64(DATA, id);
                self.mem.put(DATA + 8, text.as_bytes());
            } else {
                self.mem.put_u64(DATA + (begin & (size - 1)), id);
                self.mem.put(DATA + (begin & (size - 1)) + 8, text.as_bytes());
            }
            self.head_lpos = next;
            (begin, next)
        };
        let ia = self.info_addr(id);
        let idx = id & (count - 1);
        let old = self.mem.get(ia, 8).u64_at(0).unwrap_or_default();
        let seq = if old == 0 && idx != 0 { idx } else { old.wrapping_add(count) };
        self.mem.put(ia, &[0; 88]);
        self.mem.put_u64(ia, seq);
        self.mem.put_u64(ia + 8, ts);
        self.mem.put(ia + 16, &(text.len() as u16).to_le_bytes());
        self.mem.put(ia + 19, &[level << 5]);
        self.write_desc(id, state << DESC_FLAGS_SHIFT | id, begin, next);
        self.head_id = id;
        self.live.push_back((id, begin, next));
        self.sync();
        id
    }
    fn push(&mut self, text: &str, ts: u64) -> u64 {
        self.add(text, ts, 6, DESC_FINALIZED)
    }
    fn syms(&self) -> Syms {
        Syms(HashMap::from([("prb", PRB_VAR), ("log_buf", LOG_VARS)]))
    }
    fn read(&mut self) -> Result<KernelLog, PrintkError> {
        let syms = self.syms();
        read_log(&mut self.mem, &syms, &prb_types())
    }
}

fn texts(log: &KernelLog) -> Vec<&str> {
    log.records.iter().map(|r| r.text.as_str()).collect()
}

#[test]
fn normal_records_in_few_reads() {
    let mut sim = PrbSim::new(4, 10);
    sim.push("Linux version 6.1.0", 0);
    sim.add("second\x1b[31m red", 1_234_567_000, 3, DESC_FINALIZED);
    sim.push("", 2_000_000_000);
    sim.add("last, committed only", 3_000_000_000, 4, DESC_COMMITTED);
    let log = sim.read().unwrap();
    assert_eq!(log.format, "printk ring buffer");
    assert_eq!(texts(&log), ["Linux version 6.1.0", "second\\x1b[31m red", "", "last, committed only"]);
    assert_eq!(log.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(log.records[1].level, Some(3));
    assert_eq!(log.records[1].ts_nsec, 1_234_567_000);
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    assert!(log.layout.contains("printk_info.level assumed"), "{}", log.layout);
    // The pointer, the header, then one read per array.
    assert!(sim.mem.reads() <= 5, "{} reads", sim.mem.reads());
    assert_eq!(
        log.render(None),
        "[    0.000000] Linux version 6.1.0\n[    1.234567] second\\x1b[31m red\n[    2.000000]\n\
         [    3.000000] last, committed only\n"
    );
}

#[test]
fn wrapped_data_blocks_and_a_wrapped_descriptor_ring() {
    let mut sim = PrbSim::new(4, 8);
    let all: Vec<String> = (0..40).map(|i| format!("message number {i} {}", "x".repeat(i % 13))).collect();
    for (i, t) in all.iter().enumerate() {
        sim.push(t, i as u64 * 1000);
    }
    assert!(sim.wrapping_blocks > 0, "the test must produce a wrapping block");
    let log = sim.read().unwrap();
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    let got = texts(&log);
    assert!(got.len() >= 3, "{got:?}");
    let want: Vec<&str> = all[all.len() - got.len()..].iter().map(String::as_str).collect();
    assert_eq!(got, want);
    let seqs: Vec<u64> = log.records.iter().map(|r| r.seq).collect();
    assert_eq!(*seqs.last().unwrap(), 39);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn a_half_written_record_after_a_crash_is_skipped() {
    let mut sim = PrbSim::new(4, 10);
    sim.push("one", 1);
    sim.push("two", 2);
    let id = sim.add("thr", 3, 0, DESC_RESERVED);
    // The writer died before filling in the text length.
    sim.mem.put(sim.info_addr(id) + 16, &[0, 0]);
    let log = sim.read().unwrap();
    assert_eq!(texts(&log), ["one", "two"]);
    assert_eq!(log.problems.len(), 1, "{:?}", log.problems);
    assert!(log.problems[0].starts_with("skipped 1 record not yet committed"), "{:?}", log.problems);
    let text = log.render(None);
    assert!(
        text.ends_with(
            "dmesg: skipped 1 record not yet committed (a writer had reserved it) \
             (e.g. id 0x3ffffffffffffff2 at 0xffff888001001030)\n"
        ),
        "{text}"
    );
}

#[test]
fn descriptors_and_seqs_that_do_not_match_are_skipped() {
    let mut sim = PrbSim::new(4, 10);
    let ids: Vec<u64> = (0..5).map(|i| sim.push(&format!("r{i}"), i)).collect();
    // Record 1's descriptor was reused for a later id; record 3's info is from another wrap.
    let a = sim.desc_addr(ids[1]);
    sim.mem.put_u64(a, DESC_FINALIZED << DESC_FLAGS_SHIFT | (ids[1] + 16));
    sim.mem.put_u64(sim.info_addr(ids[3]), 3 + 5);
    let log = sim.read().unwrap();
    assert_eq!(texts(&log), ["r0", "r2", "r4"]);
    let p = log.problems.join("\n");
    assert!(p.contains("skipped 1 descriptor whose id does not match"), "{p}");
    assert!(p.contains("skipped 1 record whose sequence number does not match"), "{p}");
}

#[test]
fn overwritten_text_and_bad_positions_are_skipped() {
    let mut sim = PrbSim::new(4, 10);
    let ids: Vec<u64> = (0..4).map(|i| sim.push(&format!("rec{i}"), i)).collect();
    // Record 1's block claims another id; record 2's positions are in unrelated wraps.
    let begin = sim.live[1].1;
    sim.mem.put_u64(DATA + (begin & 1023), 0x77);
    let a = sim.desc_addr(ids[2]);
    sim.mem.put_u64(a + 8, 0x10_0000);
    sim.mem.put_u64(a + 16, 0x8);
    let log = sim.read().unwrap();
    assert_eq!(texts(&log), ["rec0", "rec3"]);
    let p = log.problems.join("\n");
    assert!(p.contains("skipped 1 record whose text was overwritten"), "{p}");
    assert!(p.contains("skipped 1 record with an invalid data block position"), "{p}");
}

#[test]
fn garbage_ring_sizes_are_refused() {
    let mut sim = PrbSim::new(4, 10);
    sim.push("x", 0);
    sim.mem.put(RB, &60u32.to_le_bytes());
    let e = sim.read().unwrap_err().to_string();
    assert!(e.contains("count_bits is 60"), "{e}");
    sim.mem.put(RB, &4u32.to_le_bytes());
    sim.mem.put(RB + 48, &31u32.to_le_bytes());
    let e = sim.read().unwrap_err().to_string();
    assert!(e.contains("size_bits is 31"), "{e}");
}

#[test]
fn corrupt_head_and_tail_ids_are_bounded_by_the_ring() {
    let mut sim = PrbSim::new(4, 10);
    for i in 0..3 {
        sim.push(&format!("m{i}"), i);
    }
    // tail just after head: 2^62 - 1 descriptors apart.
    sim.mem.put_u64(RB + 32, sim.head_id + 1);
    let log = sim.read().unwrap();
    assert_eq!(texts(&log), ["m0", "m1", "m2"]);
    let p = log.problems.join("\n");
    assert!(p.contains("span more than the 16 descriptors"), "{p}");
    // Garbage everywhere: still bounded, no panic.
    let mut junk = PrbSim::new(4, 10);
    let garbage: Vec<u8> = (0..0x4f000usize).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    junk.mem.put(BASE + 0x1000, &garbage);
    let log = junk.read().unwrap();
    assert!(log.records.len() <= 16);
}

#[test]
fn unreadable_memory_is_named() {
    let mut sim = PrbSim::new(4, 10);
    sim.push("a", 0);
    sim.push("b", 1);
    sim.mem.add_hole(DATA, DATA + 0x1000);
    let log = sim.read().unwrap();
    assert!(log.records.is_empty());
    let p = log.problems.join("\n");
    assert!(
        p.contains("skipped 2 records whose text is unreadable (e.g. seq 1 at 0xffff888001040010"),
        "{p}"
    );
    sim.mem.add_hole(DESCS, DESCS + 0x1000);
    let log = sim.read().unwrap();
    assert!(log.problems[0].ends_with("3 descriptors not read (this one and older)"), "{:?}", log.problems);
    assert!(
        log.problems[0]
            .starts_with("stopped at 0xffff888001001018 reading descriptor 0x3ffffffffffffff1: phys"),
        "{:?}",
        log.problems
    );
    sim.mem.put_u64(PRB_VAR, 0x1234);
    let e = sim.read().unwrap_err().to_string();
    assert!(e.starts_with("cannot read struct printk_ringbuffer (*prb) at 0x1234"), "{e}");
}

#[test]
fn missing_symbols_and_offsets_are_named() {
    let mut mem = test_mem();
    let e = read_log(&mut mem, &Syms(HashMap::new()), &prb_types()).unwrap_err().to_string();
    assert!(e.contains("`prb`") && e.contains("`log_buf`"), "{e}");
    let mut t = prb_types();
    t.members.remove(&("prb_desc".to_string(), "state_var".to_string()));
    let e = read_log(&mut mem, &Syms(HashMap::from([("prb", PRB_VAR)])), &t).unwrap_err().to_string();
    assert!(e.contains("prb_desc.state_var") && e.contains("test VMCOREINFO"), "{e}");
}

/// `log_buf` written as Linux 3.5-5.9's `log_store` writes it.
struct LogBufSim {
    mem: FakeMemory,
    len: u64,
    first: u64,
    next: u64,
    first_seq: u64,
    next_seq: u64,
    wraps: u32,
}

impl LogBufSim {
    fn new(len: u64) -> Self {
        let mut s = Self { mem: test_mem(), len, first: 0, next: 0, first_seq: 0, next_seq: 0, wraps: 0 };
        s.mem.put_u64(LOG_VARS, LOG_BUF);
        s.sync();
        s
    }
    fn rec_len(&mut self, idx: u64) -> u64 {
        u64::from(self.mem.get(LOG_BUF + idx + 8, 2).u16_at(0).unwrap_or_default())
    }
    fn has_space(&self, size: u64) -> bool {
        let free = if self.next > self.first || self.first_seq == self.next_seq {
            (self.len - self.next).max(self.first)
        } else {
            self.first - self.next
        };
        free >= size + 16
    }
    fn push(&mut self, text: &str, ts: u64, level: u8) {
        let size = (16 + text.len() as u64).next_multiple_of(8);
        while self.first_seq < self.next_seq && !self.has_space(size) {
            let l = self.rec_len(self.first);
            self.first = if l == 0 { self.rec_len(0) } else { self.first + l };
            self.first_seq += 1;
        }
        if self.next + size + 16 > self.len {
            self.mem.put(LOG_BUF + self.next, &[0; 16]);
            self.next = 0;
            self.wraps += 1;
        }
        let at = LOG_BUF + self.next;
        self.mem.put_u64(at, ts);
        self.mem.put(at + 8, &(size as u16).to_le_bytes());
        self.mem.put(at + 10, &(text.len() as u16).to_le_bytes());
        self.mem.put(at + 12, &[0, 0, 0, level << 5]);
        self.mem.put(at + 16, text.as_bytes());
        self.next += size;
        self.next_seq += 1;
        self.sync();
    }
    fn sync(&mut self) {
        let m = &mut self.mem;
        m.put(LOG_VARS + 8, &(self.len as u32).to_le_bytes());
        m.put(LOG_VARS + 16, &(self.first as u32).to_le_bytes());
        m.put(LOG_VARS + 24, &(self.next as u32).to_le_bytes());
        m.put_u64(LOG_VARS + 32, self.first_seq);
    }
    fn read(&mut self) -> Result<KernelLog, PrintkError> {
        let syms = Syms(HashMap::from([
            ("log_buf", LOG_VARS),
            ("log_buf_len", LOG_VARS + 8),
            ("log_first_idx", LOG_VARS + 16),
            ("log_next_idx", LOG_VARS + 24),
            ("log_first_seq", LOG_VARS + 32),
        ]));
        read_log(&mut self.mem, &syms, &TypeMap::new("empty test layout"))
    }
}

#[test]
fn log_buf_with_a_wrap() {
    let mut sim = LogBufSim::new(256);
    let all: Vec<String> = (0..20).map(|i| format!("old-style {i}{}", "y".repeat(i % 7))).collect();
    for (i, t) in all.iter().enumerate() {
        sim.push(t, i as u64 * 1_000_000, (i % 8) as u8);
    }
    assert!(sim.wraps > 0);
    let log = sim.read().unwrap();
    assert_eq!(log.format, "log_buf");
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    assert!(log.layout.contains("using the 3.5-5.9 defaults"), "{}", log.layout);
    let got = texts(&log);
    assert!(got.len() >= 3, "{got:?}");
    let want: Vec<&str> = all[all.len() - got.len()..].iter().map(String::as_str).collect();
    assert_eq!(got, want);
    let last = log.records.last().unwrap();
    assert_eq!((last.seq, last.level, last.ts_nsec), (19, Some(3), 19_000_000));
}

#[test]
fn corrupt_log_buf_stops_with_a_reason() {
    let mut sim = LogBufSim::new(256);
    for i in 0..4 {
        sim.push(&format!("line {i}"), i, 6);
    }
    // The second record claims to run past the end of the buffer.
    let second = sim.rec_len(0);
    sim.mem.put(LOG_BUF + second + 8, &600u16.to_le_bytes());
    let log = sim.read().unwrap();
    assert_eq!(texts(&log), ["line 0"]);
    assert!(
        log.problems[0].starts_with("stopped at 0xffff888001060018 (log_buf offset 0x18): record length 600"),
        "{:?}",
        log.problems
    );
    // A loop of end markers: the first record wraps to itself.
    sim.mem.put(LOG_BUF + 8, &[0, 0]);
    let log = sim.read().unwrap();
    assert!(log.records.is_empty());
    assert!(log.problems[0].contains("a second end-of-buffer marker"), "{:?}", log.problems);
    sim.mem.put(LOG_VARS + 8, &u32::MAX.to_le_bytes());
    let e = sim.read().unwrap_err().to_string();
    assert!(e.contains("log_buf_len is 4294967295"), "{e}");
}

#[test]
fn render_last_lines_prefixes_every_line() {
    let log = KernelLog {
        records: vec![
            LogRecord { seq: 0, ts_nsec: 5, level: Some(6), text: "first".into() },
            LogRecord { seq: 1, ts_nsec: 12_345_678_901, level: Some(4), text: "a\nb\tc\nlast\n".into() },
        ],
        format: "printk ring buffer",
        layout: String::new(),
        problems: vec!["skipped 3 records not yet committed".into()],
    };
    assert_eq!(
        log.render(Some(2)),
        "[   12.345678] b\tc\n[   12.345678] last\ndmesg: skipped 3 records not yet committed\n"
    );
    assert_eq!(log.render(Some(100)).lines().count(), 5);
    assert_eq!(log.render(Some(0)), "dmesg: skipped 3 records not yet committed\n");
}
