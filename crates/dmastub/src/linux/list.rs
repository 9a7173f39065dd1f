//! The one `list_head` walker: a kernel list followed from its head, bounded by a set of
//! visited entries, a most-believed length and the operation's budget.

use super::{Memory, View};
use std::collections::{HashMap, HashSet};

/// What the head of a walked list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// An element, listed first (init_task.tasks).
    Element,
    /// Not listed: a bare list head (a children list), or an element already counted (a thread
    /// group walked from its leader's thread_group).
    Bare,
    /// A bare list head (signal->thread_head) whose list holds this element, already counted
    /// (the group's leader): left out.
    BareWithout(u64),
}

/// Follows a `list_head` ring from `head` (the address of the list_head inside the first
/// element, or of a standalone head), returning the element addresses (`entry - field`). Each element is counted against the view's budget; the walk
/// stops quietly when that is spent (the list it belongs to is then marked truncated).
pub(crate) fn walk_list(
    mem: &mut View,
    head: u64,
    field: u64,
    kind: Head,
    max: usize,
    what: &str,
    problems: &mut Vec<String>,
) -> Vec<u64> {
    walk_list_along(mem, head, field, kind, max, what, problems, None)
}

/// Reads a walk does for each element on its way, in the batches that read the next pointers:
/// over DMA each of those batches holds a single request, so what rides along costs no round
/// trip (a task's saved stack pointer, then its switch frame, for `info threads`).
#[derive(Debug, Default)]
pub(crate) struct Along {
    /// Offsets of 64-bit fields read in each element.
    pub(crate) words: Vec<u64>,
    /// Then `len` bytes at the value of `words[index]` (a pointer), read in the next step's batch.
    pub(crate) follow: Option<(usize, usize)>,
    /// What was read, by element address; an element missing here, or a field or follow-up
    /// read that is `None`, was not read and must be read the usual way.
    pub(crate) got: HashMap<u64, AlongRead>,
}

/// What a walk read along the way for one element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AlongRead {
    /// Each of [`Along::words`], when read.
    pub(crate) words: Vec<Option<u64>>,
    /// The follow-up read, when done and read.
    pub(crate) follow: Option<Vec<u8>>,
}

/// Most bytes an [`Along`] follow-up read may ask for per element.
const MAX_FOLLOW: usize = 4096;

impl Along {
    /// The reads for `element` in this step: its words.
    fn word_addrs(&self, element: u64) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().map(move |&off| element.wrapping_add(off))
    }

    /// The follow-up read of `element`, once its words are in.
    fn follow_of(&self, element: u64) -> Option<(u64, usize)> {
        let (index, len) = self.follow?;
        let at = (*self.got.get(&element)?.words.get(index)?)?;
        Some((at, len.min(MAX_FOLLOW)))
    }
}

/// [`walk_list`], reading `along` for each element as it goes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk_list_along(
    mem: &mut View,
    head: u64,
    field: u64,
    kind: Head,
    max: usize,
    what: &str,
    problems: &mut Vec<String>,
    mut along: Option<&mut Along>,
) -> Vec<u64> {
    let mut out = Vec::new();
    if kind == Head::Element {
        if mem.spend_task(what).is_err() {
            return out;
        }
        out.push(head.wrapping_sub(field));
    }
    let mut seen = HashSet::new();
    seen.insert(head);
    let mut at = head;
    // The element whose next pointer is read in this step (none for a bare head), and the one
    // before it, whose follow-up read goes in this step.
    let mut current = (kind == Head::Element).then(|| head.wrapping_sub(field));
    let mut previous: Option<u64> = None;
    loop {
        let step = match along.as_deref_mut() {
            Some(a) => read_step(mem, at, a, current, previous),
            None => mem.read_u64(at),
        };
        previous = current;
        let next = match step {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!(
                    "{what}: stopped after {} entries: reading the next pointer at {at:#x}: {e}",
                    out.len()
                ));
                break;
            }
        };
        if next == head {
            break;
        }
        if next < field || !seen.insert(next) {
            problems.push(format!(
                "{what}: stopped after {} entries: the list loops back to {next:#x} instead of its head {head:#x}",
                out.len()
            ));
            break;
        }
        if out.len() >= max {
            problems.push(format!("{what}: stopped after {max} entries (the most believed)"));
            break;
        }
        if kind == Head::BareWithout(next - field) {
            at = next;
            current = None;
            continue;
        }
        if mem.spend_task(what).is_err() {
            break;
        }
        out.push(next - field);
        current = Some(next - field);
        at = next;
    }
    out
}

/// One step of [`walk_list_along`]: the next pointer at `at`, `current`'s words and
/// `previous`'s follow-up read, in one batch.
fn read_step(
    mem: &mut View,
    at: u64,
    along: &mut Along,
    current: Option<u64>,
    previous: Option<u64>,
) -> Result<u64, crate::mmu::MemError> {
    let words: Vec<u64> = current.map(|e| along.word_addrs(e).collect()).unwrap_or_default();
    let follow = previous.and_then(|e| Some((e, along.follow_of(e)?)));
    let mut next = [0u8; 8];
    let mut word_bytes = vec![[0u8; 8]; words.len()];
    let mut follow_bytes = vec![0u8; follow.map_or(0, |(_, (_, len))| len)];
    let mut reads: Vec<(u64, &mut [u8])> = vec![(at, &mut next[..])];
    reads.extend(words.iter().zip(word_bytes.iter_mut()).map(|(&a, b)| (a, &mut b[..])));
    if let Some((_, (addr, _))) = follow {
        reads.push((addr, &mut follow_bytes[..]));
    }
    let mut results = mem.read_together(&mut reads).into_iter();
    drop(reads);
    let next_result = results.next().unwrap_or(Ok(()));
    if let Some(e) = current {
        let got =
            word_bytes.iter().map(|w| results.next().and_then(|r| r.ok()).map(|()| u64::from_le_bytes(*w)));
        along.got.entry(e).or_default().words = got.collect();
    }
    if let Some((e, _)) = follow
        && results.next().is_some_and(|r| r.is_ok())
    {
        along.got.entry(e).or_default().follow = Some(follow_bytes);
    }
    next_result.map(|()| u64::from_le_bytes(next))
}
