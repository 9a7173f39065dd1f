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
    let mut looked = Vec::new();
    for &(base, len, what) in stacks {
        let words = read_stack_words(view, base, len);
        if words.iter().all(|w| *w == 0) {
            looked.push(format!("{what} at {base:#x} (unreadable)"));
            continue;
        }
        if let Some(found) = panic_frame_in(view, kernel, base, &words, what) {
            return Ok(found);
        }
        looked.push(format!("{what} at {base:#x}"));
    }
    Err(format!("no return address into panic on {}", looked.join(", ")))
}

/// The words of a stack; an unreadable page (a guard page between exception stacks) reads as
/// zeros.
pub(super) fn read_stack_words(view: &mut View, base: u64, len: u64) -> Vec<u64> {
    read_stacks(view, &[(base, len)]).pop().unwrap_or_default()
}

/// [`read_stack_words`] of several stacks, every page of them in one batch (one DMA round
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

pub(super) fn panic_frame_in(
    view: &mut View,
    kernel: &Kernel,
    stack: u64,
    words: &[u64],
    what: &str,
) -> Option<(Regs, String)> {
    let text = kernel.text.value;
    // Kernel text is in the top 2 GiB, from _text on.
    let in_text = |v: u64| v >= text && v < text.wrapping_add(1 << 30);
    for (i, &value) in words.iter().enumerate() {
        if !in_text(value) {
            continue;
        }
        let Some((name, offset)) = kernel.symbols.lookup(value - 1) else { continue };
        let Some(anchor) = PANIC_ANCHORS.iter().find(|a| **a == name) else { continue };
        if call_target(view, value).is_none() {
            continue;
        }
        let start = value - 1 - offset;
        let slot = stack + (i as u64) * 8;
        let mut regs = Regs::default();
        regs[reg::RIP] = Some(value);
        regs[reg::RSP] = Some(slot + 8);
        regs[reg::CS] = Some(KERNEL_CS);
        regs[reg::SS] = Some(KERNEL_DS);
        let mut how = format!("return address into {anchor} at {what} slot {slot:#x}");
        if keeps_frame_pointer(view, start) {
            // The call into the anchor: the first return address above whose call targets it.
            let caller = words
                .iter()
                .enumerate()
                .skip(i + 1)
                .take(256)
                .find(|&(_, &w)| in_text(w) && call_target(view, w) == Some(start));
            if let Some((j, _)) = caller {
                let rbp = stack + (j as u64) * 8 - 8;
                regs[reg::RBP] = Some(rbp);
                how.push_str(&format!(", rbp {rbp:#x} below the return address of the call into {anchor}"));
            }
        }
        return Some((regs, how));
    }
    None
}

/// The target of the `call rel32` (`e8`, direct calls and retpolined indirect ones) that
/// `ret` returns from, if that is what precedes it.
pub(super) fn call_target(view: &mut View, ret: u64) -> Option<u64> {
    let mut call = [0u8; 5];
    view.read(ret.checked_sub(5)?, &mut call).ok()?;
    let rel = i32::from_le_bytes([call[1], call[2], call[3], call[4]]);
    (call[0] == 0xe8).then(|| ret.wrapping_add_signed(i64::from(rel)))
}

/// [`call_target`] of many return addresses, read in one batch.
pub(super) fn call_targets(view: &mut View, rets: &[u64]) -> Vec<Option<u64>> {
    let mut calls = vec![[0u8; 5]; rets.len()];
    let mut reads: Vec<(u64, &mut [u8])> =
        rets.iter().zip(calls.iter_mut()).map(|(r, c)| (r.wrapping_sub(5), &mut c[..])).collect();
    let results = view.read_together(&mut reads);
    rets.iter()
        .zip(calls)
        .zip(results)
        .map(|((ret, call), r)| {
            let rel = i32::from_le_bytes([call[1], call[2], call[3], call[4]]);
            (r.is_ok() && *ret >= 5 && call[0] == 0xe8).then(|| ret.wrapping_add_signed(i64::from(rel)))
        })
        .collect()
}

/// Whether the function at `start` opens with `push %rbp; mov %rsp,%rbp` (after its ftrace and
/// IBT padding of up to 9 bytes).
pub(super) fn keeps_frame_pointer(view: &mut View, start: u64) -> bool {
    let mut code = [0u8; 13];
    view.read(start, &mut code).is_ok() && code.windows(4).any(|w| w == [0x55, 0x48, 0x89, 0xe5])
}
