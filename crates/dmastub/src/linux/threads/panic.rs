//! The panicking task's registers, rebuilt from a return address into `panic` on its stack.

use super::*;
use crate::bytes::LeBytes;

/// Rebuilds the panicking task's rip and rsp: the return address into `panic` on the stack it
/// ran on is where panic's frame resumes, and the slot above it is the stack pointer there.
/// `panic` keeps a frame pointer (it is variadic), which unwinders need: its rbp points just
/// below the return address of the call into `panic`, found further up the same stack.
///
/// The stacks are tried in order: the task's own (a panic in process context), then its CPU's
/// hardirq stack (sysrq from a keyboard interrupt) and exception stacks (an NMI: QEMU's
/// `inject-nmi` or a BMC's NMI button with `unknown_nmi_panic`).
pub(super) fn reconstruct_panic(
    view: &mut View,
    kernel: &Kernel,
    stacks: &[(u64, u64, &str)],
) -> Result<(Regs, String), String> {
    // Every stack in one batch, then every return address into an anchor in another, then the
    // chosen anchor's prologue and its caller's candidates in a third: a few round trips over
    // DMA, however many words the stacks hold.
    let spans: Vec<(u64, u64)> = stacks.iter().map(|&(base, len, _)| (base, len)).collect();
    let words = read_stacks(view, &spans);
    let in_text = kernel_text(kernel);
    let mut candidates: Vec<(usize, usize, &'static str, u64)> = Vec::new();
    for (s, w) in words.iter().enumerate() {
        for (i, &value) in w.iter().enumerate() {
            if !in_text(value) {
                continue;
            }
            let Some((name, offset)) = kernel.symbols.lookup(value - 1) else { continue };
            if let Some(anchor) = PANIC_ANCHORS.iter().find(|a| **a == name) {
                candidates.push((s, i, anchor, value - 1 - offset));
            }
        }
    }
    let rets: Vec<u64> = candidates.iter().map(|&(s, i, _, _)| words[s][i]).collect();
    let targets = call_targets(view, &rets);
    // The first stack in order with a real call site wins; within it, the lowest slot.
    let found = candidates.iter().zip(targets).find_map(|(c, t)| t.map(|_| *c));
    let Some((s, i, anchor, start)) = found else {
        let looked: Vec<String> = stacks
            .iter()
            .zip(&words)
            .map(|(&(base, _, what), w)| {
                if w.iter().all(|v| *v == 0) {
                    format!("{what} at {base:#x} (unreadable)")
                } else {
                    format!("{what} at {base:#x}")
                }
            })
            .collect();
        return Err(format!("no return address into panic on {}", looked.join(", ")));
    };
    let (stack, what) = (stacks[s].0, stacks[s].2);
    let value = words[s][i];
    let slot = stack + (i as u64) * 8;
    let mut regs = Regs::default();
    regs[reg::RIP] = Some(value);
    regs[reg::RSP] = Some(slot + 8);
    regs[reg::CS] = Some(KERNEL_CS);
    regs[reg::SS] = Some(KERNEL_DS);
    let mut how = format!("return address into {anchor} at {what} slot {slot:#x}");
    // The call into the anchor: the first return address above whose call targets it.
    let above: Vec<(usize, u64)> =
        words[s].iter().copied().enumerate().skip(i + 1).take(256).filter(|&(_, w)| in_text(w)).collect();
    // A few candidates per batch, nearest first: the caller is just above, and the words further
    // up (up to 256 of them) are only read when it is not.
    let mut frame_pointer = None;
    let mut caller = None;
    for chunk in above.chunks(CALLERS_PER_BATCH) {
        let rets: Vec<u64> = chunk.iter().map(|&(_, w)| w).collect();
        let (fp, targets) = prologue_and_call_targets(view, frame_pointer.is_none().then_some(start), &rets);
        frame_pointer = frame_pointer.or(fp);
        caller = chunk.iter().zip(targets).find(|(_, t)| *t == Some(start)).map(|(a, _)| a.0);
        if caller.is_some() || frame_pointer == Some(false) {
            break;
        }
    }
    if let (Some(true), Some(j)) = (frame_pointer, caller) {
        let rbp = stack + (j as u64) * 8 - 8;
        regs[reg::RBP] = Some(rbp);
        how.push_str(&format!(", rbp {rbp:#x} below the return address of the call into {anchor}"));
    }
    Ok((regs, how))
}

/// Whether an address is in the kernel's text: the top 2 GiB, from `_text` on.
fn kernel_text(kernel: &Kernel) -> impl Fn(u64) -> bool {
    let text = kernel.text.value;
    move |v: u64| v >= text && v < text.wrapping_add(1 << 30)
}

/// The words of several stacks (an unreadable page, such as a guard page between exception
/// stacks, reads as zeros), every page of them in one batch (one DMA round
/// trip, besides page-table walks), at most [`MAX_SCANNED_STACK`] bytes of each.
pub(super) fn read_stacks(view: &mut View, stacks: &[(u64, u64)]) -> Vec<Vec<u64>> {
    let mut bytes: Vec<Vec<u8>> =
        stacks.iter().map(|&(_, len)| vec![0u8; len.min(MAX_SCANNED_STACK) as usize]).collect();
    // Page by page, so that a guard page fails alone.
    let mut reads: Vec<(u64, &mut [u8])> = Vec::new();
    for (&(base, _), buf) in stacks.iter().zip(bytes.iter_mut()) {
        let mut rest = &mut buf[..];
        let mut addr = base;
        while !rest.is_empty() {
            let n = ((0x1000 - (addr & 0xfff)) as usize).min(rest.len());
            let (page, tail) = rest.split_at_mut(n);
            reads.push((addr, page));
            rest = tail;
            addr = addr.wrapping_add(n as u64);
        }
    }
    let results = view.read_together(&mut reads);
    for ((_, page), r) in reads.iter_mut().zip(results) {
        if r.is_err() {
            page.fill(0);
        }
    }
    drop(reads);
    bytes.iter().map(|b| b.chunks_exact(8).map(|w| w.u64_at(0).unwrap_or(0)).collect()).collect()
}

/// Most bytes scanned on one stack (the exception stacks with their guard pages are 40 KiB).
pub(super) const MAX_SCANNED_STACK: u64 = 64 << 10;

/// The targets of the `call rel32`s (`e8`, direct calls and retpolined indirect ones) that
/// `ret`s return from, where that is what precedes them: read in one batch.
pub(super) fn call_targets(view: &mut View, rets: &[u64]) -> Vec<Option<u64>> {
    let mut calls = vec![[0u8; 5]; rets.len()];
    let mut reads: Vec<(u64, &mut [u8])> =
        rets.iter().zip(calls.iter_mut()).map(|(r, c)| (r.wrapping_sub(5), &mut c[..])).collect();
    let results = view.read_together(&mut reads);
    rets.iter().zip(calls).zip(results).map(|((ret, call), r)| decode_call(*ret, &call, r.is_ok())).collect()
}

/// The target of the `call rel32` in the 5 bytes `call` read before `ret`, if it is one.
fn decode_call(ret: u64, call: &[u8; 5], read: bool) -> Option<u64> {
    let rel = i32::from_le_bytes([call[1], call[2], call[3], call[4]]);
    (read && ret >= 5 && call[0] == 0xe8).then(|| ret.wrapping_add_signed(i64::from(rel)))
}

/// Return addresses above the anchor's checked per batch for the call into it.
const CALLERS_PER_BATCH: usize = 8;

/// Whether the function at `start` (when given) opens with `push %rbp; mov %rsp,%rbp` (after
/// its ftrace and IBT padding of up to 9 bytes), and [`call_targets`] of `rets`: one batch.
fn prologue_and_call_targets(
    view: &mut View,
    start: Option<u64>,
    rets: &[u64],
) -> (Option<bool>, Vec<Option<u64>>) {
    let mut code = [0u8; 13];
    let mut calls = vec![[0u8; 5]; rets.len()];
    let mut reads: Vec<(u64, &mut [u8])> = start.map(|start| (start, &mut code[..])).into_iter().collect();
    reads.extend(rets.iter().zip(calls.iter_mut()).map(|(r, c)| (r.wrapping_sub(5), &mut c[..])));
    let mut results = view.read_together(&mut reads).into_iter();
    drop(reads);
    let frame_pointer = start.map(|_| {
        results.next().is_some_and(|r| r.is_ok()) && code.windows(4).any(|w| w == [0x55, 0x48, 0x89, 0xe5])
    });
    let targets = rets
        .iter()
        .zip(calls)
        .zip(results)
        .map(|((ret, call), r)| decode_call(*ret, &call, r.is_ok()))
        .collect();
    (frame_pointer, targets)
}
