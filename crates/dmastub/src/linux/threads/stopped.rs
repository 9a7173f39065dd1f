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

use super::cpus::{Cpus, stacks_of_cpus};
use super::panic::{call_targets, read_stacks};
use super::*;

/// Functions a stopped CPU halts in for good.
const STOP_FUNCTIONS: &[&str] = &["stop_this_cpu", "crash_nmi_callback"];
/// Bytes at the top of a stack read first: where a stop handler's frames are.
const TOP_WINDOW: u64 = 2048;
/// Possible return addresses checked per CPU in one batch of reads.
const CANDIDATES_PER_BATCH: usize = 8;

/// A part of a stack to search.
struct Window {
    base: u64,
    len: u64,
    what: &'static str,
    /// The whole stack's base, on the window that completes it.
    stack: Option<u64>,
}

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
        // Code that ends inside the prologue says nothing about the frame.
        if code.len() < at + 8 {
            return None;
        }
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
    Some((at, frame))
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

/// Where each stopped CPU is: its registers and how they were found, or why not. `which`
/// holds each CPU and the kernel stack of the task it ran. The stacks it may have run the stop
/// handler on are searched in turn (its hardirq stack, its exception stacks, its task's
/// stack), every CPU's at once, each stack's top first: the handler's frames are there, so a
/// few DMA round trips find every CPU.
pub(super) fn reconstruct_stopped(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    which: &[(u32, Option<u64>)],
) -> Vec<Result<(Regs, String), String>> {
    let stops = StopFunction::read_all(view, kernel);
    if stops.is_empty() {
        let why = format!(
            "none of the functions a stopped CPU halts in ({}) was found and understood",
            STOP_FUNCTIONS.join(", ")
        );
        return which.iter().map(|_| Err(why.clone())).collect();
    }
    let cpu_list: Vec<u32> = which.iter().map(|&(c, _)| c).collect();
    let mut stacks = stacks_of_cpus(view, kernel, l, cpus, &cpu_list);
    for (list, &(_, task_stack)) in stacks.iter_mut().zip(which) {
        list.extend(task_stack.map(|s| (s, THREAD_SIZE, "its kernel stack")));
    }
    // Each stack as two windows, its top first; the second says where the whole stack is.
    let windows: Vec<Vec<Window>> = stacks
        .iter()
        .map(|list| {
            list.iter()
                .flat_map(|&(base, len, what)| {
                    let top = len.min(TOP_WINDOW);
                    let top_base = base.wrapping_add(len - top);
                    [
                        Window { base: top_base, len: top, what, stack: None },
                        Window { base, len: len - top, what, stack: Some(base) },
                    ]
                })
                .filter(|w| w.len > 0 || w.stack.is_some())
                .collect()
        })
        .collect();
    let text = kernel.text.value;
    let in_text = |v: u64| v >= text && v < text.wrapping_add(1 << 30);
    let mut found: Vec<Option<(Regs, String)>> = vec![None; which.len()];
    let mut looked: Vec<Vec<String>> = vec![Vec::new(); which.len()];
    let rounds = windows.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        let todo: Vec<(usize, &Window)> = (0..which.len())
            .filter(|&i| found[i].is_none())
            .filter_map(|i| Some((i, windows[i].get(round)?)))
            .collect();
        let words = read_stacks(view, &todo.iter().map(|(_, w)| (w.base, w.len)).collect::<Vec<_>>());
        // The words that could be return addresses, from each window's top down: the live
        // frames are at the top, and what lies below them is left over from deeper calls.
        let mut candidates: Vec<Vec<(u64, u64)>> = todo
            .iter()
            .zip(&words)
            .map(|((_, w), words)| {
                let slots = words.iter().enumerate().map(|(i, &v)| (w.base + i as u64 * 8, v));
                slots.filter(|&(_, v)| in_text(v)).rev().collect()
            })
            .collect();
        // A few from each CPU's window per batch, until each is found or runs out.
        loop {
            let mut batch: Vec<(usize, u64, u64)> = Vec::new();
            for (k, list) in candidates.iter_mut().enumerate() {
                if found[todo[k].0].is_none() {
                    let take = list.len().min(CANDIDATES_PER_BATCH);
                    batch.extend(list.drain(..take).map(|(slot, v)| (k, slot, v)));
                }
            }
            if batch.is_empty() {
                break;
            }
            let targets = call_targets(view, &batch.iter().map(|&(_, _, v)| v).collect::<Vec<_>>());
            for ((k, slot, value), target) in batch.into_iter().zip(targets) {
                let (cpu_index, w) = todo[k];
                if found[cpu_index].is_some() {
                    continue; // The topmost call was found first.
                }
                let Some(stop) = target.and_then(|t| stops.iter().find(|s| s.start == t)) else { continue };
                found[cpu_index] = Some(stopped_regs(kernel, stop, value, slot, w.what));
            }
        }
        for (k, &(cpu_index, w)) in todo.iter().enumerate() {
            if let (None, Some(base)) = (&found[cpu_index], w.stack) {
                let unreadable = if words[k].iter().all(|w| *w == 0) { " (unreadable)" } else { "" };
                looked[cpu_index].push(format!("{} at {base:#x}{unreadable}", w.what));
            }
        }
    }
    let names = stops.iter().map(|s| s.name).collect::<Vec<_>>().join(" or ");
    found
        .into_iter()
        .zip(looked)
        .map(|(f, looked)| match f {
            Some(f) => Ok(f),
            None if looked.is_empty() => Err("none of its stacks is known".to_string()),
            None => Err(format!("no call into {names} on {}", looked.join(", "))),
        })
        .collect()
}

/// The registers of a CPU halted in `stop`, whose call into it returns to `ret` from `slot`.
fn stopped_regs(kernel: &Kernel, stop: &StopFunction, ret: u64, slot: u64, what: &str) -> (Regs, String) {
    let mut regs = Regs::default();
    regs[reg::RIP] = Some(stop.resume);
    regs[reg::RSP] = Some(slot.wrapping_sub(stop.frame));
    regs[reg::CS] = Some(KERNEL_CS);
    regs[reg::SS] = Some(KERNEL_DS);
    let caller = kernel
        .symbols
        .lookup(ret)
        .map(|(n, off)| format!("{n}+{off:#x}"))
        .unwrap_or_else(|| format!("{ret:#x}"));
    let place = if stop.halt_loop { "halt loop" } else { "body" };
    let how = format!(
        "stopped in {}'s {place}, called from {caller} (return address at {what} slot {slot:#x})",
        stop.name
    );
    (regs, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 6.1's `stop_this_cpu`: ftrace's call, `push %rbp`, a `mov $imm32,%rbp` between the
    /// pushes, `push %rbx`, `sub $0x18,%rsp`, then the stack protector's load.
    const STOP_THIS_CPU: &[u8] = &[
        0xe8, 0x1b, 0x6a, 0x03, 0x00, 0x55, 0x48, 0xc7, 0xc5, 0xc0, 0x98, 0x01, 0x00, 0x53, 0x48, 0x83, 0xec,
        0x18, 0x65, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00,
    ];

    /// Code followed by the int3 padding between functions.
    fn padded(code: &[u8]) -> Vec<u8> {
        [code, &[0xcc; 16]].concat()
    }

    #[test]
    fn the_prologue_gives_the_frame_below_the_return_address() {
        assert_eq!(prologue(STOP_THIS_CPU), Some((18, 0x28)));
        // endbr64 and a nop5 for ftrace, r12..r15 pushes, a 32-bit reservation.
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x41, 0x57, 0x41, 0x56, 0x49, 0x89, 0xfe,
            0x48, 0x81, 0xec, 0x00, 0x01, 0x00, 0x00, 0xcc,
        ];
        assert_eq!(prologue(&padded(&code)), Some((23, 16 + 0x100)));
        // Code cut short inside the prologue: no frame is believed.
        assert_eq!(prologue(&STOP_THIS_CPU[..16]), None);
    }

    #[test]
    fn a_prologue_that_writes_rsp_another_way_is_not_followed() {
        // push %rbp; mov %rbp,%rsp (48 89 ec): rsp from a register.
        assert_eq!(prologue(&padded(&[0x55, 0x48, 0x89, 0xec])), None);
        // push %rbp; mov $imm32,%rsp (48 c7 c4 …).
        assert_eq!(prologue(&padded(&[0x55, 0x48, 0xc7, 0xc4, 0, 0, 0, 0])), None);
        // mov %rbp,%r12 (49 89 ec) writes r12, not rsp: followed.
        assert_eq!(prologue(&padded(&[0x55, 0x49, 0x89, 0xec])), Some((4, 8)));
    }

    #[test]
    fn the_halt_loop_is_a_hlt_with_a_jump_back() {
        // …; verw; hlt; jmp back to the verw: rip after the hlt.
        let code = [0x90, 0xeb, 0x07, 0x0f, 0x00, 0x2d, 0xd6, 0x2e, 0xfc, 0x00, 0xf4, 0xeb, 0xf4, 0x31, 0xc0];
        assert_eq!(halt_loop(&code, 0), Some(11));
        // A 0xf4 byte followed by a forward jump is no loop; nor a jump before the search start.
        assert_eq!(halt_loop(&[0xf4, 0xeb, 0x02, 0x90, 0x90, 0x90], 0), None);
        assert_eq!(halt_loop(&[0x90, 0xf4, 0xeb, 0xfc], 1), None);
        assert_eq!(halt_loop(&[], 0), None);
    }
}
