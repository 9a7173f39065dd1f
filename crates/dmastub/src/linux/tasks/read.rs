//! Reading tasks: every task's fields in one read, and all the tasks of a list together
//! (over DMA a few round trips in all instead of a few per task).

use super::{COMM_LEN, Task, TaskLayout, clean_comm, state_letter};
use crate::linux::readahead::ReadAhead;
use crate::linux::{Memory, View};
use crate::mmu::MemError;

/// Why a task could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// Its `task_struct` could not be read: the device failed.
    #[error("task {addr:#x}: {source}")]
    Unreadable {
        /// The `task_struct`'s address.
        addr: u64,
        /// Why.
        #[source]
        source: MemError,
    },
    /// A field it must have could not be read.
    #[error("task {addr:#x}: reading {field}: {source}")]
    Field {
        /// The `task_struct`'s address.
        addr: u64,
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: MemError,
    },
    /// It was not read: the operation's budget was spent.
    #[error("task {addr:#x}: not read")]
    NotRead {
        /// The `task_struct`'s address.
        addr: u64,
    },
}

impl TaskError {
    /// Whether the device failed.
    pub fn is_device_failure(&self) -> bool {
        match self {
            TaskError::Unreadable { source, .. } | TaskError::Field { source, .. } => {
                source.is_device_failure()
            }
            TaskError::NotRead { .. } => false,
        }
    }
}

/// Reads one task. The kernel CR3 view is used for `task_struct` and `mm`.
pub fn read_task(view: &mut View, l: &TaskLayout, addr: u64) -> Result<Task, TaskError> {
    read_tasks(view, l, &[addr]).pop().unwrap_or(Err(TaskError::NotRead { addr }))
}

/// Reads tasks in three batches, however many there are: every task's fields, then every
/// parent's tgid and mm's pgd, then (cached) translations. Over DMA that is a few round trips
/// in all instead of a few per task.
/// Stops early, with fewer results than `addrs`, once the operation's budget is spent.
pub fn read_tasks(view: &mut View, l: &TaskLayout, addrs: &[u64]) -> Vec<Result<Task, TaskError>> {
    // Batches of a bounded size: a long list must not hold every task's bytes at once.
    let mut out = Vec::with_capacity(addrs.len());
    for batch in addrs.chunks(256) {
        if view.check_budget("reading of tasks").is_err() {
            break;
        }
        out.extend(read_batch(view, l, batch));
    }
    out
}

fn read_batch(view: &mut View, l: &TaskLayout, addrs: &[u64]) -> Vec<Result<Task, TaskError>> {
    // One read per task for all its fields (a DMA round trip each would cost more than the
    // bytes), all of them asked for together.
    let (lo, hi) = l.span();
    let mut spans: Vec<Vec<u8>> = addrs.iter().map(|_| vec![0u8; (hi - lo) as usize]).collect();
    let mut reads: Vec<(u64, &mut [u8])> =
        addrs.iter().zip(spans.iter_mut()).map(|(a, b)| (a.wrapping_add(lo), &mut b[..])).collect();
    let results = view.read_together(&mut reads);
    let mut pending: Vec<Result<Pending, TaskError>> = Vec::with_capacity(addrs.len());
    for ((&addr, mut bytes), r) in addrs.iter().zip(spans).zip(results) {
        match r {
            Ok(()) => {}
            // The device failing: field by field would only wait out its timeout again.
            Err(e) if e.is_device_failure() => {
                pending.push(Err(TaskError::Unreadable { addr, source: e }));
                continue;
            }
            Err(_) => bytes.clear(), // Read field by field, to say which one fails.
        }
        let mut mem = ReadAhead::<View>::new(view);
        if !bytes.is_empty() {
            mem.insert(addr.wrapping_add(lo), bytes);
        }
        pending.push(read_fields(&mut mem, l, addr));
    }
    // The parents' tgids and the mms' pgds, all known now: one more batch.
    let mut words = vec![[0u8; 8]; pending.len() * 2];
    let mut reads: Vec<(u64, &mut [u8])> = Vec::new();
    let mut slots: Vec<(usize, bool)> = Vec::new();
    for (i, (p, w)) in pending.iter().zip(words.chunks_exact_mut(2)).enumerate() {
        let Ok(p) = p else { continue };
        let (tgid_word, pgd_word) = w.split_at_mut(1);
        if let Some(at) = p.parent_tgid_at {
            reads.push((at, &mut tgid_word[0][..4]));
            slots.push((i, false));
        }
        if let Some(at) = p.pgd_at {
            reads.push((at, &mut pgd_word[0][..]));
            slots.push((i, true));
        }
    }
    let results = view.read_together(&mut reads);
    let mut got = vec![(false, false); pending.len()];
    for (&(i, is_pgd), r) in slots.iter().zip(&results) {
        if r.is_ok() {
            if is_pgd {
                got[i].1 = true;
            } else {
                got[i].0 = true;
            }
        }
    }
    pending
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = p?.task;
            let (w_tgid, w_pgd) = (words[2 * i], words[2 * i + 1]);
            if got[i].0 {
                t.ppid = Some(i32::from_le_bytes([w_tgid[0], w_tgid[1], w_tgid[2], w_tgid[3]]));
            }
            if got[i].1 {
                t.cr3 = view.translate(u64::from_le_bytes(w_pgd)).ok();
            }
            Ok(t)
        })
        .collect()
}

/// A task read from its own bytes, with where its parent's tgid and its pgd are.
struct Pending {
    task: Task,
    parent_tgid_at: Option<u64>,
    pgd_at: Option<u64>,
}

fn read_fields(mem: &mut dyn Memory, l: &TaskLayout, addr: u64) -> Result<Pending, TaskError> {
    let what = |field: &'static str, source: MemError| TaskError::Field { addr, field, source };
    let pid = mem.read_u32(addr.wrapping_add(l.pid)).map_err(|e| what("pid", e))? as i32;
    let tgid = match l.tgid {
        Some(o) => mem.read_u32(addr.wrapping_add(o)).map_err(|e| what("tgid", e))? as i32,
        None => pid,
    };
    let mut comm = [0u8; COMM_LEN];
    mem.read(addr.wrapping_add(l.comm), &mut comm).map_err(|e| what("comm", e))?;
    let state = match l.state {
        Some((o, size)) => {
            let s = mem.read_uint(addr.wrapping_add(o), size).unwrap_or(u64::MAX);
            let x = l.exit_state.and_then(|o| mem.read_u32(addr.wrapping_add(o)).ok()).unwrap_or(0) as u64;
            if s == u64::MAX { '?' } else { state_letter(s, x) }
        }
        None => '?',
    };
    let flags = l.flags.and_then(|o| mem.read_u32(addr.wrapping_add(o)).ok());
    let parent = l.real_parent.and_then(|o| mem.read_u64(addr.wrapping_add(o)).ok());
    let mm = match l.mm {
        Some(o) => Some(mem.read_u64(addr.wrapping_add(o)).map_err(|e| what("mm", e))?),
        None => None,
    };
    let parent_tgid_at = parent.and_then(|p| p.checked_add(l.tgid.unwrap_or(l.pid)));
    let pgd_at = match (mm, l.mm_pgd) {
        (Some(mm), Some(off)) if mm != 0 => mm.checked_add(off),
        _ => None,
    };
    let task = Task { addr, pid, tgid, ppid: None, comm: clean_comm(&comm), state, flags, mm, cr3: None };
    Ok(Pending { task, parent_tgid_at, pgd_at })
}
