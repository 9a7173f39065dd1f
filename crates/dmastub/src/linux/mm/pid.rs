//! A task by pid the way the kernel finds it (`find_task_by_pid_ns`): `init_pid_ns.idr` (an
//! xarray) → `struct pid` → `tasks[PIDTYPE_PID]` → the task. A read per xarray level and two
//! more, where walking the task list costs one per task (over DMA, a round trip each).

use super::batch::uint;
use crate::linux::tasks::{Task, TaskLayout, read_task};
use crate::linux::{Memory, Symbols, TypeInfo, View};

/// `XA_CHUNK_SHIFT`: 64 slots per node.
const CHUNK_SHIFT: u64 = 6;
/// Most xarray levels: 64-bit indexes in 6-bit chunks.
const MAX_LEVELS: usize = 11;

/// The task with global pid `pid`, `Ok(None)` when there is none, or why the lookup could not
/// be made (the caller then walks the task list).
pub(crate) fn find_task(
    view: &mut View,
    types: &dyn TypeInfo,
    syms: &dyn Symbols,
    tl: &TaskLayout,
    pid: i32,
    direct_map: u64,
) -> Result<Option<Task>, String> {
    let ns = syms.address("init_pid_ns").ok_or("no init_pid_ns symbol")?;
    let off = |ty: &str, m: &str| types.member(ty, m).map(|m| m.offset).ok_or(format!("no {ty}.{m}"));
    let idr = ns.wrapping_add(off("pid_namespace", "idr")?);
    let head = off("idr", "idr_rt")? + off("xarray", "xa_head")?;
    let base = off("idr", "idr_base")?;
    let (shift_off, slots_off) = (off("xa_node", "shift")?, off("xa_node", "slots")?);
    let pid_tasks = off("pid", "tasks")?;
    let pid_links = off("task_struct", "pid_links")?;
    let Ok(index) = u64::try_from(pid) else { return Ok(None) };
    // The idr's head and base in one read (they sit a few bytes apart).
    let (lo, hi) = (head.min(base), head.max(base) + 8);
    if hi - lo > 64 {
        return Err("idr.idr_rt and idr.idr_base are far apart".into());
    }
    let mut w = vec![0u8; (hi - lo) as usize];
    // With it, a word of the direct map, where every object after this lives: the page
    // tables of both are walked together (a cold walk costs a round trip per level).
    let mut warm = [0u8; 8];
    let r = view.read_together(&mut [(idr.wrapping_add(lo), &mut w[..]), (direct_map, &mut warm[..])]);
    if let Some(Err(e)) = r.into_iter().next() {
        return Err(format!("init_pid_ns.idr at {idr:#x}: {e}"));
    }
    let mut entry = uint(&w, head - lo, 8).unwrap_or(0);
    let Some(index) = index.checked_sub(uint(&w, base - lo, 4).unwrap_or(0)) else { return Ok(None) };
    // Down the xarray: each node's shift says which 6 bits of the index pick the slot. The
    // node is read whole (shift and slots together): one read per level.
    let node_len = slots_off + (8 << CHUNK_SHIFT);
    let mut levels = 0;
    let mut top = true;
    while entry & 3 == 2 && entry > 4096 {
        levels += 1;
        if levels > MAX_LEVELS {
            return Err(format!("init_pid_ns.idr: deeper than {MAX_LEVELS} levels at {entry:#x}"));
        }
        let node = entry - 2;
        let mut n = vec![0u8; node_len as usize];
        view.read(node, &mut n).map_err(|e| format!("xa_node {node:#x}: {e}"))?;
        let shift = uint(&n, shift_off, 1).unwrap_or(u64::MAX);
        if shift >= 64 || (top && shift + CHUNK_SHIFT < 64 && index >> (shift + CHUNK_SHIFT) != 0) {
            return Ok(None);
        }
        top = false;
        let slot = (index >> shift) & ((1 << CHUNK_SHIFT) - 1);
        entry = uint(&n, slots_off + 8 * slot, 8).unwrap_or(0);
        if shift == 0 {
            break;
        }
    }
    if levels == 0 && index != 0 {
        return Ok(None);
    }
    // A value, retry or zero entry: not a struct pid.
    if entry == 0 || entry & 3 != 0 {
        return Ok(None);
    }
    let first =
        view.read_u64(entry.wrapping_add(pid_tasks)).map_err(|e| format!("struct pid {entry:#x}: {e}"))?;
    if first == 0 {
        return Ok(None);
    }
    let addr = first.wrapping_sub(pid_links);
    let task = read_task(view, tl, addr).map_err(|e| e.to_string())?;
    // A stale or damaged entry must not stand for another task.
    Ok((task.pid == pid).then_some(task))
}
