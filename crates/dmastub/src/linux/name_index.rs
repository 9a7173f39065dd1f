//! The one name index of the Linux layer, for kallsyms' symbols and BTF's types: a kernel has
//! 100k+ of each, and a map of owned strings costs more than parsing them. Names stay where
//! their owner keeps them (one string for all); the index holds only ids, in an open-addressing
//! table at most two thirds full, so that every probe ends at an empty slot.

/// A free slot.
const EMPTY: u32 = u32::MAX;

/// Ids by name; see the module docs. The names are the owner's, passed to every call.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameIndex {
    slots: Vec<u32>,
}

impl NameIndex {
    /// Indexes ids `0..count` by `name(id)`, leaving out ids without one. Of ids with the same
    /// name the first is kept, unless `better(id, kept)` says a later one is better.
    pub(crate) fn build<'n>(
        count: usize,
        name: impl Fn(u32) -> Option<&'n str>,
        better: impl Fn(u32, u32) -> bool,
    ) -> Self {
        let count = count.min(EMPTY as usize - 1);
        let len = (count * 3 / 2 + 16).max(16);
        let mut slots = vec![EMPTY; len];
        for id in 0..count as u32 {
            let Some(n) = name(id) else { continue };
            let mut at = slot_of(n, len);
            loop {
                let kept = slots[at];
                if kept == EMPTY {
                    slots[at] = id;
                    break;
                }
                if name(kept) == Some(n) {
                    if better(id, kept) {
                        slots[at] = id;
                    }
                    break;
                }
                at = (at + 1) % len;
            }
        }
        Self { slots }
    }

    /// The id indexed under `want`, if any.
    pub(crate) fn get<'n>(&self, want: &str, name: impl Fn(u32) -> Option<&'n str>) -> Option<u32> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let mut at = slot_of(want, len);
        loop {
            let id = self.slots[at];
            if id == EMPTY {
                return None;
            }
            if name(id) == Some(want) {
                return Some(id);
            }
            at = (at + 1) % len;
        }
    }
}

fn slot_of(name: &str, len: usize) -> usize {
    (hash(name.as_bytes()) % len as u64) as usize
}

/// A multiply-rotate hash eight bytes at a time: names are short, and not adversarial to
/// tables only this process sees.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in chunks.by_ref() {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::NameIndex;

    #[test]
    fn first_or_better_wins_and_absent_names_are_none() {
        let names = ["a", "b", "a", "", "c", "a"];
        let name = |id: u32| names.get(id as usize).copied().filter(|n| !n.is_empty());
        let first = NameIndex::build(names.len(), name, |_, _| false);
        assert_eq!(first.get("a", name), Some(0));
        assert_eq!(first.get("c", name), Some(4));
        assert_eq!(first.get("", name), None);
        assert_eq!(first.get("d", name), None);
        let last = NameIndex::build(names.len(), name, |_, _| true);
        assert_eq!(last.get("a", name), Some(5));
        assert_eq!(NameIndex::default().get("a", name), None);
    }
}
