//! The registers of CPUs another CPU stopped, rebuilt from their stacks.
//!
//! When a CPU panics, `smp_send_stop` stops the others: a `REBOOT_VECTOR` IPI whose handler
//! (`__sysvec_reboot`, on the CPU's hardirq stack) calls `stop_this_cpu`, or, for a CPU that
//! does not answer, an NMI whose handler does the same on the NMI stack (kdump's shootdown
//! ends in `crash_nmi_callback`). Neither returns: the CPU halts in a loop at the end of that
//! function, and its registers stay in the CPU. What memory keeps is the call: the return
//! address into the handler sits on the stack, and the stop function's frame lies just below
//! it. So the CPU's `rip` is the stop function's halt loop and its `rsp` is that return
//! address's slot less the frame the function's prologue built; from there the kernel's
//! unwind tables lead through the handler and the interrupt frame into what the CPU was doing.

use super::panic::{MAX_SCANNED_STACK, call_targets, read_stack_words};
use super::*;

/// Functions a stopped CPU halts in for good.
const STOP_FUNCTIONS: &[&str] = &["stop_this_cpu", "crash_nmi_callback"];
/// Most code bytes read of one stop function (they are a few hundred bytes long).
const MAX_STOP_CODE: u64 = 4096;

/// A function a stopped CPU halts in: where it starts, where its halt loop resumes, and how
/// many bytes its prologue puts below its return address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StopFunction {
    pub(super) name: &'static str,
    pub(super) start: u64,
    /// The instruction after the `hlt` of its endless loop (where a halted CPU's `rip`
    /// points), or the end of its prologue when no such loop was found.
    pub(super) resume: u64,
    /// Whether `resume` is the halt loop.
    pub(super) halt_loop: bool,
    /// Bytes pushed and reserved by the prologue: `rsp` in the body is the return address's
    /// slot less this.
    pub(super) frame: u64,
}

impl StopFunction {
    /// Reads the stop functions' code (one batch) and finds their halt loops and frames. A
    /// function whose prologue cannot be followed is left out: a wrong frame size would give
    /// a wrong `rsp`, and every frame above it would be wrong.
    pub(super) fn read_all(view: &mut View, kernel: &Kernel) -> Vec<StopFunction> {
        let found: Vec<(&'static str, u64, u64)> = STOP_FUNCTIONS
            .iter()
            .filter_map(|&name| {
                let start = kernel.symbols.address(name)?;
                let (_, _, size) = kernel.symbols.lookup_sized(start)?;
                Some((name, start, size.unwrap_or(MAX_STOP_CODE).min(MAX_STOP_CODE)))
            })
            .collect();
        let mut code: Vec<Vec<u8>> = found.iter().map(|&(_, _, len)| vec![0u8; len as usize]).collect();
        let mut reads: Vec<(u64, &mut [u8])> =
            found.iter().zip(code.iter_mut()).map(|(&(_, start, _), c)| (start, &mut c[..])).collect();
        let results = view.read_together(&mut reads);
        found
            .iter()
            .zip(code)
            .zip(results)
            .filter_map(|((&(name, start, _), code), r)| {
                r.ok()?;
                let (prologue_end, frame) = prologue(&code)?;
                let halt = halt_loop(&code, prologue_end);
                Some(StopFunction {
                    name,
                    start,
                    resume: start + halt.unwrap_or(prologue_end) as u64,
                    halt_loop: halt.is_some(),
                    frame,
                })
            })
            .collect()
    }
}

/// The prologue of a compiled kernel function: where it ends and how many bytes it pushed and
/// reserved. Follows only instructions that cannot move `rsp` other than the way it counts
/// (pushes, `sub $n,%rsp`) and stops at the first other one; `None` when something writes
/// `rsp` another way.
pub(super) fn prologue(code: &[u8]) -> Option<(usize, u64)> {
    let mut at = 0usize;
    let mut frame = 0u64;
    // A function's first bytes: IBT's endbr64, then ftrace's call (or its nop).
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        at += 4;
    }
    if code.get(at) == Some(&0xe8) || code.get(at..at + 5) == Some(&[0x0f, 0x1f, 0x44, 0x00, 0x00]) {
        at += 5;
    }
    for _ in 0..32 {
        let b = |i: usize| code.get(at + i).copied();
        let (len, pushed) = match (b(0)?, b(1), b(2)) {
            (0x50..=0x57, ..) => (1, 8),
            (0x41, Some(0x50..=0x57), _) => (2, 8),
            (0x48, Some(0x83), Some(0xec)) => (4, u64::from(b(3)?)),
            (0x48, Some(0x81), Some(0xec)) => {
                let imm = u32::from_le_bytes([b(3)?, b(4)?, b(5)?, b(6)?]);
                (7, u64::from(imm))
            }
            // mov between registers (64- or 32-bit, either direction): not to rsp.
            (0x48 | 0x49 | 0x4c | 0x4d, Some(0x89), Some(m)) if m >> 6 == 3 => {
                if m & 7 == 4 && b(0)? & 1 == 0 {
                    return None;
                }
                (3, 0)
            }
            (0x48 | 0x49 | 0x4c | 0x4d, Some(0x8b), Some(m)) if m >> 6 == 3 => {
                if (m >> 3) & 7 == 4 && b(0)? & 4 == 0 {
                    return None;
                }
                (3, 0)
            }
            (0x89 | 0x31, Some(m), _) if m >> 6 == 3 => (2, 0),
            (0x41 | 0x44 | 0x45, Some(0x89 | 0x31), Some(m)) if m >> 6 == 3 => (3, 0),
            // mov $imm32, reg.
            (0xb8..=0xbf, ..) => (5, 0),
            (0x41, Some(0xb8..=0xbf), _) => (6, 0),
            (0x48 | 0x49, Some(0xc7), Some(m)) if m >> 3 == 0x18 => {
                if m & 7 == 4 && b(0)? == 0x48 {
                    return None;
                }
                (7, 0)
            }
            // Nops.
            (0x90, ..) => (1, 0),
            (0x66, Some(0x90), _) => (2, 0),
            _ => break,
        };
        at += len;
        frame = frame.checked_add(pushed)?;
    }
    (at <= code.len()).then_some((at, frame))
}

/// The offset of the instruction after the `hlt` of an endless halt loop (`hlt` then a short
/// jump back to or before it, within the function), searched from `from`.
fn halt_loop(code: &[u8], from: usize) -> Option<usize> {
    (from..code.len().saturating_sub(2))
        .find(|&i| {
            let jump = i as i64 + 3 + i64::from(code[i + 2] as i8);
            code[i] == 0xf4 && code[i + 1] == 0xeb && jump >= from as i64 && jump <= i as i64
        })
        .map(|i| i + 1)
}

/// Where a stopped CPU is: its registers and how they were found, from the stacks it may have
/// run the stop handler on (its hardirq stack, its exception stacks, its task's stack).
pub(super) fn reconstruct_stopped(
    view: &mut View,
    kernel: &Kernel,
    stops: &[StopFunction],
    stacks: &[(u64, u64, &str)],
) -> Result<(Regs, String), String> {
    if stops.is_empty() {
        return Err(format!(
            "none of the functions a stopped CPU halts in ({}) was found and understood",
            STOP_FUNCTIONS.join(", ")
        ));
    }
    let text = kernel.text.value;
    let in_text = |v: u64| v >= text && v < text.wrapping_add(1 << 30);
    let mut looked = Vec::new();
    for &(base, len, what) in stacks {
        let words = read_stack_words(view, base, len.min(MAX_SCANNED_STACK));
        if words.iter().all(|w| *w == 0) {
            looked.push(format!("{what} at {base:#x} (unreadable)"));
            continue;
        }
        // Every word that could be a return address, checked in one batch; the deepest call
        // into a stop function (the slot nearest the stack's bottom) wins.
        let candidates: Vec<(usize, u64)> =
            words.iter().copied().enumerate().filter(|&(_, v)| in_text(v)).collect();
        let targets = call_targets(view, &candidates.iter().map(|&(_, v)| v).collect::<Vec<_>>());
        for (&(i, value), target) in candidates.iter().zip(targets) {
            let Some(stop) = target.and_then(|t| stops.iter().find(|s| s.start == t)) else { continue };
            let slot = base + (i as u64) * 8;
            let mut regs = Regs::default();
            regs[reg::RIP] = Some(stop.resume);
            regs[reg::RSP] = Some(slot.wrapping_sub(stop.frame));
            regs[reg::CS] = Some(KERNEL_CS);
            regs[reg::SS] = Some(KERNEL_DS);
            let caller = kernel
                .symbols
                .lookup(value)
                .map(|(n, off)| format!("{n}+{off:#x}"))
                .unwrap_or_else(|| format!("{value:#x}"));
            let place = if stop.halt_loop { "halt loop" } else { "body" };
            return Ok((
                regs,
                format!(
                    "stopped in {}'s {place}, called from {caller} (return address at {what} slot {slot:#x})",
                    stop.name
                ),
            ));
        }
        looked.push(format!("{what} at {base:#x}"));
    }
    Err(format!(
        "no call into {} on {}",
        stops.iter().map(|s| s.name).collect::<Vec<_>>().join(" or "),
        looked.join(", ")
    ))
}
