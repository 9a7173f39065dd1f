//! The `log_buf` of Linux 3.5-5.9: `struct printk_log` headers each followed by their text,
//! in one byte ring.

use super::read::*;
use super::*;

/// `struct printk_log` as it has been since 3.5 (x86-64, without `CONFIG_PRINTK_CALLER`):
/// `u64 ts_nsec; u16 len; u16 text_len; u16 dict_len; u8 facility; u8 flags:5, level:3;`.
pub(super) const PRINTK_LOG_DEFAULTS: [(&str, u64); 4] =
    [("ts_nsec", 0), ("len", 8), ("text_len", 10), ("dict_len", 12)];
pub(super) const PRINTK_LOG_SIZE: u64 = 16;
/// Kernels cap `log_buf_len` at 2 GiB; anything larger is garbage.
pub(super) const MAX_LOG_BUF_LEN: u64 = 1 << 31;

pub(super) fn read_log_buf(
    rd: &mut Reader,
    log_buf_sym: u64,
    syms: &dyn Symbols,
    types: &dyn TypeInfo,
) -> Result<KernelLog, PrintkError> {
    let mut notes = Vec::new();
    let mut defaulted = Vec::new();
    let mut field = |name: &str, default: u64| match types.member("printk_log", name) {
        Some(m) => m.offset,
        None => {
            defaulted.push(name.to_string());
            default
        }
    };
    let [ts_off, len_off, text_len_off, dict_len_off] = PRINTK_LOG_DEFAULTS.map(|(n, d)| field(n, d));
    let hdr = match types.size_of("printk_log") {
        Some(s) if s > 0 && s <= MAX_STRUCT => s,
        _ => {
            defaulted.push("size".to_string());
            PRINTK_LOG_SIZE
        }
    };
    if !defaulted.is_empty() {
        notes.push(format!(
            "struct printk_log {} not in the layout: using the 3.5-5.9 defaults",
            defaulted.join(", ")
        ));
    }
    let level = LevelField::find(types, "printk_log", 15, &mut notes);
    fits(
        types,
        "printk_log",
        hdr,
        &[
            ("ts_nsec", ts_off, 8),
            ("len", len_off, 2),
            ("text_len", text_len_off, 2),
            ("dict_len", dict_len_off, 2),
            ("level", level.offset, level.bytes),
        ],
    )?;

    let need = |name: &str| {
        syms.address(name).ok_or_else(|| PrintkError::Corrupt {
            what: "symbol table".into(),
            addr: log_buf_sym,
            why: format!("`log_buf` is there but `{name}` is not"),
        })
    };
    let buf = rd.uint(log_buf_sym, 8, "the `log_buf` pointer")?;
    let buf_len = rd.uint(need("log_buf_len")?, 4, "log_buf_len")?;
    let first = rd.uint(need("log_first_idx")?, 4, "log_first_idx")?;
    let next = rd.uint(need("log_next_idx")?, 4, "log_next_idx")?;
    let mut problems = Vec::new();
    let first_seq = match syms.address("log_first_seq") {
        Some(a) => rd.uint(a, 8, "log_first_seq")?,
        None => {
            problems.push("no `log_first_seq` symbol: sequence numbers count from 0".to_string());
            0
        }
    };
    let corrupt = |why: String| PrintkError::Corrupt { what: "log_buf".into(), addr: buf, why };
    if buf_len < hdr || buf_len > MAX_LOG_BUF_LEN {
        return Err(corrupt(format!("log_buf_len is {buf_len}")));
    }
    if first >= buf_len || next >= buf_len {
        return Err(corrupt(format!(
            "log_first_idx {first:#x} or log_next_idx {next:#x} is outside the {buf_len}-byte buffer"
        )));
    }

    let mut region = Region::new(buf, buf_len);
    let mut records = Vec::new();
    let mut skipped_dict = false;
    let mut idx = first;
    let mut wrapped = false;
    // Every record takes at least a header, so more steps than this is a loop.
    let max_steps = buf_len / hdr + 2;
    let mut steps = 0;
    while idx != next {
        steps += 1;
        let at = buf.wrapping_add(idx);
        let stop = |why: String| format!("stopped at {at:#x} (log_buf offset {idx:#x}): {why}");
        if steps > max_steps {
            problems.push(stop(format!("still no log_next_idx {next:#x} after {max_steps} records")));
            break;
        }
        if idx + hdr > buf_len {
            problems.push(stop("a record header would run past the end of the buffer".into()));
            break;
        }
        let h = match region.get(rd, idx, hdr) {
            Ok(h) => h,
            Err(f) => {
                problems.push(f.stopped("log_buf", None));
                break;
            }
        };
        let len = h.uint_at(len_off as usize, 2).unwrap_or(0);
        if len == 0 {
            // The end-of-buffer marker: the next record is at the start.
            if wrapped {
                problems.push(stop("a second end-of-buffer marker (len 0)".into()));
                break;
            }
            wrapped = true;
            idx = 0;
            continue;
        }
        let text_len = h.uint_at(text_len_off as usize, 2).unwrap_or(0);
        let dict_len = h.uint_at(dict_len_off as usize, 2).unwrap_or(0);
        if len < hdr || idx + len > buf_len || hdr + text_len + dict_len > len {
            problems.push(stop(format!(
                "record length {len} (text {text_len}, dict {dict_len}) does not fit the header or the buffer"
            )));
            break;
        }
        let text = match region.get(rd, idx + hdr, text_len) {
            Ok(t) => t,
            Err(f) => {
                problems.push(f.stopped("log_buf", None));
                break;
            }
        };
        skipped_dict |= dict_len > 0;
        records.push(LogRecord {
            seq: first_seq.wrapping_add(records.len() as u64),
            ts_nsec: h.u64_at(ts_off as usize).unwrap_or(0),
            level: Some(level.get(&h)),
            text: clean_text(&text),
        });
        // The kernel always leaves room for an end marker, so a record ending exactly at the
        // end of the buffer is a corrupt one: the walk stops at the header check above.
        idx += len;
    }
    if skipped_dict {
        notes.push("dictionaries (SUBSYSTEM=, DEVICE=) not shown".into());
    }
    Ok(KernelLog { records, format: "log_buf", layout: describe_layout(types, &notes), problems })
}
