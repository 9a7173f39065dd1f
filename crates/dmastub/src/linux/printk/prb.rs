//! The printk ring buffer (Linux 5.10+), `kernel/printk/printk_ringbuffer.h`.

use super::read::*;
use super::*;

/// `state_var`: the descriptor state in the top 2 bits of an `unsigned long`, the id below.
pub(super) const DESC_FLAGS_SHIFT: u32 = 62;
pub(super) const DESC_ID_MASK: u64 = (1 << DESC_FLAGS_SHIFT) - 1;
pub(super) const DESC_RESERVED: u64 = 0;
pub(super) const DESC_COMMITTED: u64 = 1;
pub(super) const DESC_FINALIZED: u64 = 2;
/// Data-less records: both lpos odd. `NO_LPOS` is a record with no text, anything else odd
/// (`FAILED_LPOS`) a record whose text could not be stored.
pub(super) const NO_LPOS: u64 = 0x3;
/// Data blocks start with the `unsigned long` id of their descriptor.
pub(super) const ID_SIZE: u64 = 8;

struct PrbLayout {
    desc_ring: u64,
    text_ring: u64,
    count_bits: u64,
    descs: u64,
    infos: u64,
    head_id: u64,
    tail_id: u64,
    desc_size: u64,
    state_var: u64,
    lpos_begin: u64,
    lpos_next: u64,
    info_size: u64,
    seq: u64,
    ts_nsec: u64,
    text_len: u64,
    level: LevelField,
    size_bits: u64,
    data: u64,
    head_lpos: u64,
    tail_lpos: u64,
    /// How many bytes of `struct printk_ringbuffer` to read to have every field above.
    rb_span: u64,
}

impl PrbLayout {
    fn new(types: &dyn TypeInfo, notes: &mut Vec<String>) -> Result<Self, PrintkError> {
        let o = |ty, f| offset(types, ty, f);
        let blk = o("prb_desc", "text_blk_lpos")?;
        let text_len = o("printk_info", "text_len")?;
        let l = Self {
            desc_ring: o("printk_ringbuffer", "desc_ring")?,
            text_ring: o("printk_ringbuffer", "text_data_ring")?,
            count_bits: o("prb_desc_ring", "count_bits")?,
            descs: o("prb_desc_ring", "descs")?,
            infos: o("prb_desc_ring", "infos")?,
            head_id: o("prb_desc_ring", "head_id")?,
            tail_id: o("prb_desc_ring", "tail_id")?,
            desc_size: size(types, "prb_desc")?,
            state_var: o("prb_desc", "state_var")?,
            lpos_begin: blk.saturating_add(o("prb_data_blk_lpos", "begin")?),
            lpos_next: blk.saturating_add(o("prb_data_blk_lpos", "next")?),
            info_size: size(types, "printk_info")?,
            seq: o("printk_info", "seq")?,
            ts_nsec: o("printk_info", "ts_nsec")?,
            text_len,
            level: LevelField::find(types, "printk_info", text_len.saturating_add(3), notes),
            size_bits: o("prb_data_ring", "size_bits")?,
            data: o("prb_data_ring", "data")?,
            head_lpos: o("prb_data_ring", "head_lpos")?,
            tail_lpos: o("prb_data_ring", "tail_lpos")?,
            rb_span: 0,
        };
        fits(
            types,
            "prb_desc",
            l.desc_size,
            &[
                ("state_var", l.state_var, 8),
                ("text_blk_lpos.begin", l.lpos_begin, 8),
                ("text_blk_lpos.next", l.lpos_next, 8),
            ],
        )?;
        fits(
            types,
            "printk_info",
            l.info_size,
            &[
                ("seq", l.seq, 8),
                ("ts_nsec", l.ts_nsec, 8),
                ("text_len", l.text_len, 2),
                ("level", l.level.offset, l.level.bytes),
            ],
        )?;
        let ring_fields = [
            l.desc_ring.saturating_add(l.count_bits.max(l.descs).max(l.infos).max(l.head_id).max(l.tail_id)),
            l.text_ring.saturating_add(l.size_bits.max(l.data).max(l.head_lpos).max(l.tail_lpos)),
        ];
        let rb_span = ring_fields[0].max(ring_fields[1]).saturating_add(8);
        if rb_span > MAX_STRUCT {
            return Err(PrintkError::BadLayout {
                origin: types.source(),
                why: format!("struct printk_ringbuffer fields reach offset {rb_span}"),
            });
        }
        Ok(Self { rb_span, ..l })
    }
}

pub(super) fn read_prb(
    rd: &mut Reader,
    prb_sym: u64,
    types: &dyn TypeInfo,
) -> Result<KernelLog, PrintkError> {
    let mut notes = Vec::new();
    let l = PrbLayout::new(types, &mut notes)?;
    let rb = rd.uint(prb_sym, 8, "the `prb` pointer")?;
    let h = rd.bytes(rb, l.rb_span, "struct printk_ringbuffer (*prb)")?;
    let dr = |f: u64| h.u64_at((l.desc_ring + f) as usize).unwrap_or(0);
    let tr = |f: u64| h.u64_at((l.text_ring + f) as usize).unwrap_or(0);
    let count_bits = dr(l.count_bits) as u32;
    let size_bits = tr(l.size_bits) as u32;
    let corrupt =
        |why: String| PrintkError::Corrupt { what: "struct printk_ringbuffer (*prb)".into(), addr: rb, why };
    if count_bits > MAX_COUNT_BITS {
        return Err(corrupt(format!("desc_ring.count_bits is {count_bits}, above {MAX_COUNT_BITS}")));
    }
    if !(3..=MAX_SIZE_BITS).contains(&size_bits) {
        return Err(corrupt(format!("text_data_ring.size_bits is {size_bits}, not in 3..={MAX_SIZE_BITS}")));
    }
    let count = 1u64 << count_bits;
    let ring_size = 1u64 << size_bits;
    let (descs_at, infos_at, data_at) = (dr(l.descs), dr(l.infos), tr(l.data));
    let head = dr(l.head_id) & DESC_ID_MASK;
    let tail = dr(l.tail_id) & DESC_ID_MASK;

    let mut problems = Vec::new();
    // Live descriptors are tail..=head; more than the ring holds means one of them is garbage,
    // and the newest `count` are the ones worth trying.
    let span = (head.wrapping_sub(tail) & DESC_ID_MASK) + 1;
    let mut n = span;
    if span > count {
        problems.push(format!(
            "head_id {head:#x} and tail_id {tail:#x} span more than the {count} descriptors of the ring; \
             reading the newest {count}"
        ));
        n = count;
    }
    // Keep half of the read budget for the text: with a huge ring, the newest records matter.
    let per_desc = l.desc_size + l.info_size;
    let fit = (MAX_READ_BYTES / 2) / per_desc;
    if n > fit {
        problems.push(format!(
            "{n} descriptors exceed the {} MiB read limit; reading the newest {fit}",
            MAX_READ_BYTES >> 20
        ));
        n = fit;
    }

    let mut descs = Region::new(descs_at, count * l.desc_size);
    let mut infos = Region::new(infos_at, count * l.info_size);
    let mut data = Region::new(data_at, ring_size);
    let mut tally = Tally::default();
    let mut truncated = 0u64;
    let mut records = Vec::new();
    let mask = count - 1;
    // Newest first, so that if a read fails or the budget runs out, what we have is the end
    // of the log, which is what one reads after a crash.
    for k in 0..n {
        let id = head.wrapping_sub(k) & DESC_ID_MASK;
        let idx = id & mask;
        let desc_addr = descs_at.wrapping_add(idx * l.desc_size);
        let d = match descs.get(rd, idx * l.desc_size, l.desc_size) {
            Ok(d) => d,
            Err(f) => {
                problems.push(f.stopped(&format!("descriptor {id:#x}"), Some(n - k)));
                break;
            }
        };
        let sv = d.u64_at(l.state_var as usize).unwrap_or(0);
        if sv & DESC_ID_MASK != id {
            tally.add(
                "descriptor whose id does not match (reused or overwritten)",
                "descriptors whose id does not match (reused or overwritten)",
                || format!("id {id:#x} at {desc_addr:#x} holds id {:#x}", sv & DESC_ID_MASK),
            );
            continue;
        }
        match sv >> DESC_FLAGS_SHIFT {
            DESC_COMMITTED | DESC_FINALIZED => {}
            DESC_RESERVED => {
                tally.add(
                    "record not yet committed (a writer had reserved it)",
                    "records not yet committed (a writer had reserved them)",
                    || format!("id {id:#x} at {desc_addr:#x}"),
                );
                continue;
            }
            _ if id == tail => {
                // The tail may be a freed descriptor the next writer will push past; in a
                // young ring it is the bootstrap descriptor. Nothing is lost.
                continue;
            }
            _ => {
                tally.add("reusable (freed) descriptor", "reusable (freed) descriptors", || {
                    format!("id {id:#x} at {desc_addr:#x}")
                });
                continue;
            }
        }
        let info = match infos.get(rd, idx * l.info_size, l.info_size) {
            Ok(i) => i,
            Err(f) => {
                problems.push(f.stopped(&format!("the printk_info of id {id:#x}"), Some(n - k)));
                break;
            }
        };
        let seq = info.u64_at(l.seq as usize).unwrap_or(0);
        if seq & mask != idx {
            tally.add(
                "record whose sequence number does not match its id",
                "records whose sequence number does not match their id",
                || format!("id {id:#x} has seq {seq}"),
            );
            continue;
        }
        let text_len = info.uint_at(l.text_len as usize, 2).unwrap_or(0);
        let (begin, next) =
            (d.u64_at(l.lpos_begin as usize).unwrap_or(0), d.u64_at(l.lpos_next as usize).unwrap_or(0));
        let bytes = if begin & 1 == 1 && next & 1 == 1 {
            if begin != NO_LPOS || next != NO_LPOS {
                tally.add(
                    "record lost (the kernel could not store its text)",
                    "records lost (the kernel could not store their text)",
                    || format!("seq {seq}"),
                );
                continue;
            }
            Vec::new()
        } else {
            // A block lies within one wrap of the ring, or ends in the next one, in which case
            // its data was written at the start of the ring.
            let wraps = |lpos: u64| lpos >> size_bits;
            let (at, size) = if wraps(begin) == wraps(next) && begin < next {
                (begin & (ring_size - 1), next - begin)
            } else if wraps(begin.wrapping_add(ring_size)) == wraps(next) {
                (0, next & (ring_size - 1))
            } else {
                (0, 0)
            };
            if begin % ID_SIZE != 0 || next % ID_SIZE != 0 || size < ID_SIZE {
                tally.add(
                    "record with an invalid data block position",
                    "records with invalid data block positions",
                    || format!("seq {seq}: begin {begin:#x}, next {next:#x}"),
                );
                continue;
            }
            let want = text_len.min(size - ID_SIZE);
            if want < text_len {
                truncated += 1;
            }
            match data.get(rd, at, ID_SIZE + want) {
                Ok(b) if b.u64_at(0).unwrap_or(0) == id => b[ID_SIZE as usize..].to_vec(),
                Ok(b) => {
                    tally.add(
                        "record whose text was overwritten",
                        "records whose text was overwritten",
                        || {
                            format!(
                                "seq {seq}: block at {:#x} belongs to id {:#x}",
                                data_at + at,
                                b.u64_at(0).unwrap_or(0)
                            )
                        },
                    );
                    continue;
                }
                Err(Fetch::Unreadable { addr, why }) => {
                    tally.add("record whose text is unreadable", "records whose text is unreadable", || {
                        format!("seq {seq} at {addr:#x}: {why}")
                    });
                    continue;
                }
                Err(f) => {
                    problems.push(f.stopped(&format!("the text of seq {seq}"), Some(n - k)));
                    break;
                }
            }
        };
        records.push(LogRecord {
            seq,
            ts_nsec: info.u64_at(l.ts_nsec as usize).unwrap_or(0),
            level: Some(l.level.get(&info)),
            text: clean_text(&bytes),
        });
    }
    records.reverse();
    if truncated > 0 {
        problems.push(format!("{truncated} records have less text in their data block than text_len says"));
    }
    tally.into_problems(&mut problems);
    Ok(KernelLog { records, format: "printk ring buffer", layout: describe_layout(types, &notes), problems })
}
