//! The one `list_head` walker: a kernel list followed from its head, bounded by a set of
//! visited entries, a most-believed length and the operation's budget.

use super::{Memory, View};
use std::collections::HashSet;

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
    loop {
        let next = match mem.read_u64(at) {
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
            continue;
        }
        if mem.spend_task(what).is_err() {
            break;
        }
        out.push(next - field);
        at = next;
    }
    out
}
