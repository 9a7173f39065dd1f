//! The maple tree (`lib/maple_tree.c`, Linux 6.1 on): where an `mm_struct` keeps its VMAs.
//!
//! A tree entry is an *encoded* node pointer (`mt_mk_node`): the node is 256-byte aligned,
//! bits 3..6 hold its type and bit 2 is a hint ("a NULL below"). Only the root pointer has bit
//! 1 too (`MAPLE_ROOT_NODE`, so that `xa_is_node` tells a root node from a single value at
//! index 0); child pointers in internal nodes have bits 0 and 1 clear. Internal nodes (`maple_range_64`,
//! `maple_arange_64`) hold child pointers, leaves (`maple_leaf_64`) the values (here VMA
//! pointers); slot `i` covers `pivot[i-1]+1 ..= pivot[i]`, the last used slot up to the node's
//! max. The walk reads the tree a level at a time, all nodes of a level in one batch (over DMA
//! one round trip per level), and trusts nothing: node types, pivot order, depth and node
//! count are checked, a node seen twice is a cycle, and every error names the node's address.

use crate::mmu::MemError;
use std::collections::HashSet;

/// `MAPLE_NODE_MASK`: a node is 256-byte aligned; the low byte of an encoded pointer is metadata.
const NODE_MASK: u64 = 0xff;
/// Bytes of a `struct maple_node`.
pub(crate) const NODE_SIZE: usize = 256;
/// `MAPLE_HEIGHT_MAX`: no real tree is deeper.
pub(crate) const MAX_HEIGHT: usize = 31;

/// `enum maple_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeType {
    /// `maple_leaf_64`: values and pivots.
    Leaf64,
    /// `maple_range_64`: children and pivots.
    Range64,
    /// `maple_arange_64`: children, pivots and gaps (allocation trees, such as `mm_mt`).
    Arange64,
}

/// Where a node's arrays are (from BTF when the kernel has it, else the 6.1 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapleLayout {
    /// `maple_range_64.pivot` offset and count (15).
    pub range_pivots: (usize, usize),
    /// `maple_range_64.slot` offset and count (16).
    pub range_slots: (usize, usize),
    /// `maple_arange_64.pivot` offset and count (9).
    pub arange_pivots: (usize, usize),
    /// `maple_arange_64.slot` offset and count (10).
    pub arange_slots: (usize, usize),
}

impl Default for MapleLayout {
    /// `include/linux/maple_tree.h` on 64-bit: `MAPLE_RANGE64_SLOTS` 16, `MAPLE_ARANGE64_SLOTS` 10.
    fn default() -> Self {
        Self { range_pivots: (8, 15), range_slots: (128, 16), arange_pivots: (8, 9), arange_slots: (80, 10) }
    }
}

impl MapleLayout {
    /// The layout as the kernel's struct layout gives it, checked to fit in a node.
    pub fn from_types(t: &dyn crate::linux::TypeInfo) -> Self {
        let arr = |ty: &str, m: &str, dflt: (usize, usize)| {
            let Some(mem) = t.member(ty, m) else { return dflt };
            let (off, n) = (mem.offset as usize, (mem.size / 8) as usize);
            if n == 0 || off.saturating_add(n * 8) > NODE_SIZE { dflt } else { (off, n) }
        };
        let d = Self::default();
        let l = Self {
            range_pivots: arr("maple_range_64", "pivot", d.range_pivots),
            range_slots: arr("maple_range_64", "slot", d.range_slots),
            arange_pivots: arr("maple_arange_64", "pivot", d.arange_pivots),
            arange_slots: arr("maple_arange_64", "slot", d.arange_slots),
        };
        // A node has one more slot than pivots; anything else is not a layout we understand.
        if l.range_slots.1 != l.range_pivots.1 + 1 || l.arange_slots.1 != l.arange_pivots.1 + 1 {
            d
        } else {
            l
        }
    }
}

/// Why (part of) a maple tree could not be read. Each names the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapleError {
    /// The node could not be read.
    #[error("maple node {node:#x}: {source}")]
    Unreadable {
        /// The node's address.
        node: u64,
        /// Why.
        #[source]
        source: MemError,
    },
    /// The encoded pointer's type is not one a VMA tree has.
    #[error("maple node {node:#x} (entry {entry:#x}): node type {ty} is not leaf_64, range_64 or arange_64")]
    BadType {
        /// The node's address.
        node: u64,
        /// The encoded pointer.
        entry: u64,
        /// The type bits.
        ty: u64,
    },
    /// The node was reached twice: the tree loops.
    #[error("maple node {node:#x} reached twice: the tree has a cycle; not walked again")]
    Cycle {
        /// The node's address.
        node: u64,
    },
    /// The tree is deeper than any maple tree can be.
    #[error("maple node {node:#x} at depth {depth}: deeper than MAPLE_HEIGHT_MAX ({MAX_HEIGHT}); not walked")]
    TooDeep {
        /// The node's address.
        node: u64,
        /// Its depth.
        depth: usize,
    },
    /// A pivot is below the previous one or above the node's maximum.
    #[error(
        "maple node {node:#x}: pivot {index} ({pivot:#x}) is outside {min:#x}..={max:#x}; rest of the node skipped"
    )]
    BadPivot {
        /// The node's address.
        node: u64,
        /// Which pivot.
        index: usize,
        /// Its value.
        pivot: u64,
        /// The lowest it could be.
        min: u64,
        /// The highest it could be.
        max: u64,
    },
    /// A leaf holds something that is not a plain pointer.
    #[error("maple leaf {node:#x}: slot {index} holds {entry:#x}, not an object pointer; skipped")]
    BadEntry {
        /// The leaf's address.
        node: u64,
        /// Which slot.
        index: usize,
        /// The value.
        entry: u64,
    },
    /// An internal node holds something that is not a child node's pointer.
    #[error(
        "maple node {node:#x}: the child for {min:#x}..={max:#x} is {entry:#x}, not a node pointer; that range skipped"
    )]
    BadChild {
        /// The internal node's address.
        node: u64,
        /// The first index the child covers.
        min: u64,
        /// The last index the child covers.
        max: u64,
        /// The value.
        entry: u64,
    },
    /// The walk stopped at its bound on entries or nodes.
    #[error("maple tree: stopped after {0} entries/nodes (the most believed)")]
    TooMany(usize),
}

impl MapleError {
    /// Whether the device failed (not the data).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, MapleError::Unreadable { source, .. } if source.is_device_failure())
    }
}

/// One value stored in the tree, with the index range it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapleEntry {
    /// First index.
    pub min: u64,
    /// Last index (inclusive).
    pub max: u64,
    /// The value (a pointer).
    pub value: u64,
}

/// `xa_is_node`: an internal entry of kind "node" (what a root that is a node looks like).
pub(crate) fn is_node(entry: u64) -> bool {
    entry & 3 == 2 && entry > 4096
}

/// Whether an internal node's slot holds a child: an encoded node pointer without the root's
/// bit (bits 0 and 1 clear) and with a node address.
fn is_child(entry: u64) -> bool {
    entry & 3 == 0 && entry & !NODE_MASK >= 4096
}

fn node_type(entry: u64) -> Result<NodeType, u64> {
    match (entry >> 3) & 0xf {
        1 => Ok(NodeType::Leaf64),
        2 => Ok(NodeType::Range64),
        3 => Ok(NodeType::Arange64),
        t => Err(t),
    }
}

fn word(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
}

/// The children (internal node) or values (leaf) of one node, as `lib/maple_tree.c`'s own
/// `mt_dump` reads them: a pivot of 0 after the first, or one equal to the node's max, ends the
/// node; the last slot reaches the max.
pub(crate) fn decode_node(
    l: &MapleLayout,
    node: u64,
    ty: NodeType,
    bytes: &[u8],
    min: u64,
    max: u64,
    errors: &mut Vec<MapleError>,
) -> Vec<MapleEntry> {
    let ((poff, npiv), (soff, nslots)) = match ty {
        NodeType::Leaf64 | NodeType::Range64 => (l.range_pivots, l.range_slots),
        NodeType::Arange64 => (l.arange_pivots, l.arange_slots),
    };
    let leaf = ty == NodeType::Leaf64;
    let mut out = Vec::new();
    let mut first = min;
    for i in 0..nslots {
        let slot = word(bytes, soff + 8 * i);
        let last = if i < npiv {
            word(bytes, poff + 8 * i)
        } else if slot == 0 {
            break;
        } else {
            max
        };
        if last == 0 && i > 0 {
            break;
        }
        if last < first || last > max {
            errors.push(MapleError::BadPivot { node, index: i, pivot: last, min: first, max });
            break;
        }
        if slot != 0 {
            if leaf && slot & 3 != 0 {
                errors.push(MapleError::BadEntry { node, index: i, entry: slot });
            } else {
                out.push(MapleEntry { min: first, max: last, value: slot });
            }
        }
        if last == max {
            break;
        }
        first = last + 1;
    }
    out
}

/// Reads a batch of nodes together: each node's bytes, or why not.
pub(crate) type ReadNodes<'r> = dyn FnMut(&[u64]) -> Vec<Result<Vec<u8>, MemError>> + 'r;

/// Every value of the tree whose root entry is `root`, in index order, and what could not be
/// read. `read` reads a batch of nodes (256 bytes each) together. At most `max_entries`
/// values and as many nodes are taken.
pub(crate) fn walk(
    l: &MapleLayout,
    root: u64,
    max_entries: usize,
    read: &mut ReadNodes<'_>,
) -> (Vec<MapleEntry>, Vec<MapleError>) {
    let mut errors = Vec::new();
    let mut values = Vec::new();
    if root == 0 {
        return (values, errors);
    }
    if !is_node(root) {
        // A tree of one entry at index 0 keeps it in the root itself.
        values.push(MapleEntry { min: 0, max: 0, value: root });
        return (values, errors);
    }
    let mut seen = HashSet::new();
    let mut nodes = 0usize;
    // (encoded pointer, min, max) of this level's nodes.
    let mut level = vec![(root, 0u64, u64::MAX)];
    let mut depth = 0usize;
    while !level.is_empty() {
        depth += 1;
        let mut todo = Vec::new();
        for (entry, min, max) in level.drain(..) {
            let node = entry & !NODE_MASK;
            let ty = match node_type(entry) {
                Ok(t) => t,
                Err(ty) => {
                    errors.push(MapleError::BadType { node, entry, ty });
                    continue;
                }
            };
            if depth > MAX_HEIGHT {
                errors.push(MapleError::TooDeep { node, depth });
                continue;
            }
            if !seen.insert(node) {
                errors.push(MapleError::Cycle { node });
                continue;
            }
            if nodes >= max_entries {
                errors.push(MapleError::TooMany(max_entries));
                break;
            }
            nodes += 1;
            todo.push((node, ty, min, max));
        }
        if todo.is_empty() {
            break;
        }
        let addrs: Vec<u64> = todo.iter().map(|t| t.0).collect();
        let got = read(&addrs);
        for ((node, ty, min, max), r) in todo.into_iter().zip(got) {
            let bytes = match r {
                Ok(b) => b,
                Err(source) => {
                    errors.push(MapleError::Unreadable { node, source });
                    continue;
                }
            };
            let entries = decode_node(l, node, ty, &bytes, min, max, &mut errors);
            if ty == NodeType::Leaf64 {
                values.extend(entries);
                if values.len() > max_entries {
                    values.truncate(max_entries);
                    errors.push(MapleError::TooMany(max_entries));
                    level.clear();
                    break;
                }
            } else {
                for e in entries {
                    if is_child(e.value) {
                        level.push((e.value, e.min, e.max));
                    } else {
                        errors.push(MapleError::BadChild { node, min: e.min, max: e.max, entry: e.value });
                    }
                }
            }
        }
    }
    // Leaves of a sound tree are all at one depth and come in order; a damaged one need not.
    values.sort_by_key(|e| e.min);
    (values, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // As `mt_mk_node` encodes a node: its type in bits 3..6 and `MAPLE_ENODE_NULL` (bit 2).
    // Only the tree's root also has `MAPLE_ROOT_NODE` (bit 1): `ROOT`.
    const LEAF: u64 = 1 << 3 | 4;
    const RANGE: u64 = 2 << 3 | 4;
    const ARANGE: u64 = 3 << 3 | 4;
    const ROOT: u64 = 2;

    /// A node of `ty` at `addr` with these pivots and slots.
    fn node(l: &MapleLayout, ty: NodeType, pivots: &[u64], slots: &[u64]) -> Vec<u8> {
        let mut b = vec![0u8; NODE_SIZE];
        let (p, s) = match ty {
            NodeType::Arange64 => (l.arange_pivots.0, l.arange_slots.0),
            _ => (l.range_pivots.0, l.range_slots.0),
        };
        for (i, v) in pivots.iter().enumerate() {
            b[p + 8 * i..p + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        for (i, v) in slots.iter().enumerate() {
            b[s + 8 * i..s + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn reader(
        mem: HashMap<u64, Vec<u8>>,
        batches: &mut Vec<usize>,
    ) -> impl FnMut(&[u64]) -> Vec<Result<Vec<u8>, MemError>> + '_ {
        move |addrs: &[u64]| {
            batches.push(addrs.len());
            addrs
                .iter()
                .map(|a| {
                    mem.get(a).cloned().ok_or_else(|| {
                        MemError::Phys(crate::phys::PhysError::NotRam {
                            addr: crate::addr::PhysAddr(*a),
                            len: 256,
                            source_name: "test".into(),
                        })
                    })
                })
                .collect()
        }
    }

    #[test]
    fn two_levels_in_order_one_batch_per_level() {
        let l = MapleLayout::default();
        let mut mem = HashMap::new();
        // Root arange: children 0x1000 covers 0..=0x4fff, 0x1100 covers 0x5000..=MAX.
        mem.insert(0x1000, node(&l, NodeType::Leaf64, &[0x3fff, 0x4fff], &[0, 0xa0]));
        mem.insert(0x1100, node(&l, NodeType::Leaf64, &[0x5fff, 0x6fff, u64::MAX], &[0xb0, 0, 0xc0]));
        // The last used slot's pivot is the node's max (here ULONG_MAX), as the kernel keeps it.
        mem.insert(
            0x2000,
            node(&l, NodeType::Arange64, &[0x4fff, u64::MAX], &[0x1000 | LEAF, 0x1100 | LEAF]),
        );
        let mut batches = Vec::new();
        let (v, e) = walk(&l, 0x2000 | ARANGE | ROOT, 100, &mut reader(mem, &mut batches));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            v,
            vec![
                MapleEntry { min: 0x4000, max: 0x4fff, value: 0xa0 },
                MapleEntry { min: 0x5000, max: 0x5fff, value: 0xb0 },
                MapleEntry { min: 0x7000, max: u64::MAX, value: 0xc0 },
            ]
        );
        assert_eq!(batches, vec![1, 2]);
    }

    #[test]
    fn full_range_node_uses_its_last_slot() {
        let l = MapleLayout::default();
        let pivots: Vec<u64> = (1..=15).map(|i| i * 0x10).collect();
        let slots: Vec<u64> = (1..=16).map(|i| i * 0x100).collect();
        let b = node(&l, NodeType::Leaf64, &pivots, &slots);
        let mut errs = Vec::new();
        let v = decode_node(&l, 0x1000, NodeType::Leaf64, &b, 0, 0x1000, &mut errs);
        assert_eq!(v.len(), 16);
        assert_eq!(v[15], MapleEntry { min: 0xf1, max: 0x1000, value: 0x1000 });
        assert!(errs.is_empty());
    }

    #[test]
    fn cycle_is_an_error_not_a_hang() {
        let l = MapleLayout::default();
        let mut mem = HashMap::new();
        // A range node whose child is itself.
        mem.insert(0x3000, node(&l, NodeType::Range64, &[0x10, u64::MAX], &[0x3000 | RANGE, 0x3000 | RANGE]));
        let mut batches = Vec::new();
        let (v, e) = walk(&l, 0x3000 | RANGE | ROOT, 100, &mut reader(mem, &mut batches));
        assert!(v.is_empty());
        assert!(e.iter().any(|e| matches!(e, MapleError::Cycle { node: 0x3000 })), "{e:?}");
        assert!(e.iter().any(|e| e.to_string().contains("0x3000")));
    }

    #[test]
    fn bad_type_bad_pivot_unreadable_and_bad_entry() {
        let l = MapleLayout::default();
        let mut mem = HashMap::new();
        // Child 0: dense (type 0), child 1: pivots out of order, child 2: unreadable.
        mem.insert(
            0x4000,
            node(&l, NodeType::Range64, &[0x10, 0x20, u64::MAX], &[0x5000 | 4, 0x5100 | LEAF, 0x5200 | LEAF]),
        );
        mem.insert(0x5100, node(&l, NodeType::Leaf64, &[0x18, 0x14], &[0xa0, 0xb0, 0xc0]));
        let mut batches = Vec::new();
        let (v, e) = walk(&l, 0x4000 | RANGE | ROOT, 100, &mut reader(mem, &mut batches));
        assert_eq!(v, vec![MapleEntry { min: 0x11, max: 0x18, value: 0xa0 }]);
        assert!(e.iter().any(|e| matches!(e, MapleError::BadType { node: 0x5000, ty: 0, .. })), "{e:?}");
        assert!(e.iter().any(|e| matches!(e, MapleError::BadPivot { node: 0x5100, index: 1, .. })), "{e:?}");
        assert!(e.iter().any(|e| matches!(e, MapleError::Unreadable { node: 0x5200, .. })), "{e:?}");
        // A child with the root's bit (what the walk took for a child before it followed
        // mt_mk_node's encoding) is not one.
        let mut mem = HashMap::new();
        mem.insert(
            0x7000,
            node(&l, NodeType::Range64, &[0x10, u64::MAX], &[0x7100 | LEAF | ROOT, 0x7200 | LEAF]),
        );
        mem.insert(0x7200, node(&l, NodeType::Leaf64, &[u64::MAX], &[0xd0]));
        let (v, e) = walk(&l, 0x7000 | RANGE | ROOT, 100, &mut reader(mem, &mut batches));
        assert_eq!(v, vec![MapleEntry { min: 0x11, max: u64::MAX, value: 0xd0 }]);
        assert!(
            matches!(e[..], [MapleError::BadChild { node: 0x7000, min: 0, max: 0x10, entry: 0x710e }]),
            "{e:?}"
        );
        // A leaf value that is an internal entry.
        let b = node(&l, NodeType::Leaf64, &[u64::MAX], &[0x6002]);
        let mut errs = Vec::new();
        assert!(decode_node(&l, 0x6000, NodeType::Leaf64, &b, 0, u64::MAX, &mut errs).is_empty());
        assert!(matches!(errs[0], MapleError::BadEntry { node: 0x6000, index: 0, entry: 0x6002 }));
    }

    #[test]
    fn deep_chains_and_entry_bounds_stop() {
        let l = MapleLayout::default();
        let mut mem = HashMap::new();
        // A chain of 40 range nodes, each pointing to the next: deeper than any real tree.
        for i in 0..40u64 {
            let next = 0x10000 + (i + 1) * 0x100;
            mem.insert(0x10000 + i * 0x100, node(&l, NodeType::Range64, &[u64::MAX], &[next | RANGE]));
        }
        let mut batches = Vec::new();
        let (_, e) = walk(&l, 0x10000 | RANGE | ROOT, 1000, &mut reader(mem, &mut batches));
        assert!(e.iter().any(|e| matches!(e, MapleError::TooDeep { .. })), "{e:?}");
        assert!(batches.len() <= MAX_HEIGHT);
        // Direct root value and empty tree.
        let mut batches = Vec::new();
        let (v, e) = walk(&l, 0xffff_8880_0000_1000, 10, &mut reader(HashMap::new(), &mut batches));
        assert_eq!(v.len(), 1);
        assert!(e.is_empty() && batches.is_empty());
        assert_eq!(walk(&l, 0, 10, &mut reader(HashMap::new(), &mut batches)).0.len(), 0);
    }
}
