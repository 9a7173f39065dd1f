//! What the per-CPU data and the dump's notes say: each CPU's current and idle task, who
//! panicked, the CPUs' registers and their interrupt stacks.

use super::*;

/// What the per-CPU data says: each CPU's per-CPU base, current and idle task, and who panicked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Cpus {
    pub(super) offsets: Vec<u64>,
    pub(super) curr: Vec<Option<u64>>,
    pub(super) idle: Vec<Option<u64>>,
    pub(super) panic_cpu: Option<u32>,
}

/// Fails only when the device fails: nothing more can be read then.
/// CPUs whose `__per_cpu_offset` entries are read with `nr_cpu_ids`, before it is known.
const OFFSETS_READ_FIRST: usize = 64;

pub(super) fn read_cpus(
    view: &mut View,
    kernel: &Kernel,
    problems: &mut Vec<String>,
) -> Result<Cpus, String> {
    let sym = |n: &str| kernel.symbols.address(n);
    let mut cpus = Cpus::default();
    // nr_cpu_ids, panic_cpu and the first CPUs' offsets in one batch: a round trip over DMA
    // (and one page-table walk) instead of three. More CPUs than that are read after.
    let mut count_bytes = [0u8; 4];
    let mut panic_bytes = [0u8; 4];
    let mut first_offsets = vec![0u8; OFFSETS_READ_FIRST * 8];
    let (count_at, panic_at, offsets_at) = (sym("nr_cpu_ids"), sym("panic_cpu"), sym("__per_cpu_offset"));
    let mut reads: Vec<(u64, &mut [u8])> = Vec::new();
    let mut slots = [None; 3];
    for (slot, (at, buf)) in [(count_at, &mut count_bytes[..]), (panic_at, &mut panic_bytes[..])]
        .into_iter()
        .chain([(offsets_at, &mut first_offsets[..])])
        .enumerate()
    {
        if let Some(at) = at {
            slots[slot] = Some(reads.len());
            reads.push((at, buf));
        }
    }
    let results = view.read_together(&mut reads);
    drop(reads);
    let result = |slot: usize| slots[slot].map(|i| results[i].clone());
    let count = match count_at.zip(result(0)) {
        Some((_, Ok(()))) => match u32::from_le_bytes(count_bytes) {
            n if (1..=MAX_CPUS).contains(&n) => n,
            n => {
                problems.push(format!("nr_cpu_ids reads {n}: not a CPU count; assuming 1 CPU"));
                1
            }
        },
        Some((at, Err(e))) if e.is_device_failure() => return Err(format!("nr_cpu_ids at {at:#x}: {e}")),
        Some((_, Err(e))) => {
            problems.push(format!("nr_cpu_ids: {e}; assuming 1 CPU"));
            1
        }
        None => 1,
    };
    cpus.offsets = match offsets_at {
        Some(at) => {
            let mut raw = vec![0u8; count as usize * 8];
            let first = match result(2) {
                Some(Ok(())) => raw.len().min(first_offsets.len()),
                // The speculative read may have run past the array into a hole: read it exactly.
                _ => 0,
            };
            raw[..first].copy_from_slice(&first_offsets[..first]);
            let rest =
                if first < raw.len() { view.read(at + first as u64, &mut raw[first..]) } else { Ok(()) };
            match rest {
                Ok(()) => raw
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
                Err(e) => {
                    problems
                        .push(format!("__per_cpu_offset at {at:#x}: {e}: which task runs where is unknown"));
                    Vec::new()
                }
            }
        }
        // A kernel built without SMP keeps its one CPU's data in place.
        None => vec![0],
    };
    let n = cpus.offsets.len();
    cpus.curr = vec![None; n];
    cpus.idle = vec![None; n];
    if let Some((at, r)) = panic_at.zip(result(1)) {
        match r.map(|()| u32::from_le_bytes(panic_bytes)) {
            Ok(c) if (c as usize) < n => cpus.panic_cpu = Some(c),
            Ok(_) => {} // PANIC_CPU_INVALID: nobody panicked.
            Err(e) => problems.push(format!("panic_cpu at {at:#x}: {e}")),
        }
    }
    Ok(cpus)
}

/// Each CPU's current and idle task, from its runqueue (CPU 0's idle task is `init_task`
/// when its runqueue does not say).
pub(super) fn read_runqueues(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &mut Cpus,
    problems: &mut Vec<String>,
) {
    let sym = |n: &str| kernel.symbols.address(n);
    match (sym("runqueues"), l.rq_curr, l.rq_idle) {
        (Some(rq), Some(curr), Some(idle)) => {
            // Each CPU's rq->curr then rq->idle, all in one batch.
            let addrs: Vec<u64> = cpus
                .offsets
                .iter()
                .flat_map(|off| [curr, idle].map(|f| rq.wrapping_add(*off).wrapping_add(f)))
                .collect();
            for (i, r) in view.read_u64s(&addrs).into_iter().enumerate() {
                let (cpu, is_idle) = (i / 2, i % 2 == 1);
                match r {
                    Ok(0) => {}
                    Ok(v) if is_idle => cpus.idle[cpu] = Some(v),
                    Ok(v) => cpus.curr[cpu] = Some(v),
                    Err(e) => problems.push(format!(
                        "cpu{cpu}'s runqueue ({}): {e}",
                        if is_idle { "rq->idle" } else { "rq->curr" }
                    )),
                }
            }
        }
        _ => problems.push(
            "no runqueues symbol or struct rq layout: which task runs on which CPU is unknown".to_string(),
        ),
    }
    if cpus.idle.first() == Some(&None) {
        cpus.idle[0] = kernel.init_task.as_ref().map(|f| f.value);
    }
}

/// The CPU registers the source carries (NT_PRSTATUS notes), by CPU number. A CPU in the kernel
/// has its per-CPU base in gs_base, which names it; otherwise QEMU writes the notes in CPU
/// order, and kdump names the task that ran (`pr_pid`).
pub(super) fn note_registers(
    notes: &[CoreNote],
    cpus: &Cpus,
    pid_of_cpu: &dyn Fn(u32) -> Option<i32>,
) -> HashMap<u32, Regs> {
    let qemu = notes.iter().any(|n| n.name == "QEMU");
    let mut out = HashMap::new();
    let prstatus =
        notes.iter().filter(|n| n.name == "CORE" && n.n_type == 1).filter_map(|n| parse_prstatus(&n.desc));
    for (index, (pid, regs)) in prstatus.enumerate() {
        let by_base = regs
            .get(reg::GS_BASE)
            .and_then(|gs| cpus.offsets.iter().position(|&o| o == gs && o != 0))
            .map(|c| c as u32);
        let by_pid = (0..cpus.offsets.len() as u32).find(|&c| pid_of_cpu(c) == Some(pid));
        let cpu = by_base.or(if qemu { Some(index as u32) } else { by_pid });
        if let Some(cpu) = cpu.filter(|&c| (c as usize) < cpus.offsets.len()) {
            out.entry(cpu).or_insert(regs);
        }
    }
    out
}

/// The kernel's own crash notes (`crash_notes`, per CPU), filled when it panicked into a loaded
/// crash kernel; zeros otherwise.
pub(super) fn crash_note_registers(
    view: &mut View,
    crash_notes: Option<u64>,
    cpus: &Cpus,
) -> HashMap<u32, Regs> {
    const HEADER: usize = 12 + 8; // Elf64_Nhdr, then "CORE\0" padded to 8.
    const DESC: usize = PRSTATUS_SIZE;
    let mut out = HashMap::new();
    let Some(at) = crash_notes else { return out };
    let Ok(percpu) = view.read_u64(at) else { return out };
    if percpu == 0 {
        return out;
    }
    // Every CPU's note in one batch.
    let mut notes = vec![[0u8; HEADER + DESC]; cpus.offsets.len()];
    let mut reads: Vec<(u64, &mut [u8])> = cpus
        .offsets
        .iter()
        .zip(notes.iter_mut())
        .map(|(off, n)| (percpu.wrapping_add(*off), &mut n[..]))
        .collect();
    let results = view.read_together(&mut reads);
    for (cpu, (note, r)) in notes.iter().zip(results).enumerate() {
        if r.is_err() {
            continue;
        }
        let word = |i: usize| u32::from_le_bytes([note[i], note[i + 1], note[i + 2], note[i + 3]]);
        let is_prstatus =
            word(0) == 5 && word(4) as usize >= DESC && word(8) == 1 && &note[12..17] == b"CORE\0";
        if let Some((_, regs)) = is_prstatus.then(|| parse_prstatus(&note[HEADER..])).flatten() {
            out.insert(cpu as u32, regs);
        }
    }
    out
}

/// A CPU's hardirq and exception stacks (base, length, what), as far as memory tells them.
pub(super) fn cpu_stacks(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    cpu: u32,
) -> Vec<(u64, u64, &'static str)> {
    stacks_of_cpus(view, kernel, l, cpus, &[cpu]).pop().unwrap_or_default()
}

/// [`cpu_stacks`] of several CPUs, their pointers read in one batch.
pub(super) fn stacks_of_cpus(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    which: &[u32],
) -> Vec<Vec<(u64, u64, &'static str)>> {
    let sym = |n: &str| kernel.symbols.address(n);
    // Per CPU, the per-CPU variables holding the hardirq stack's top and the exception stacks.
    let hardirq = match (sym("hardirq_stack_ptr"), sym("pcpu_hot"), l.pcpu_hot_hardirq) {
        (Some(var), _, _) => Some(var),
        (None, Some(hot), Some(off)) => Some(hot.wrapping_add(off)),
        _ => None,
    };
    let exceptions = sym("cea_exception_stacks");
    let vars = [hardirq, exceptions];
    let mut addrs = Vec::new();
    for &cpu in which {
        let Some(&per_cpu) = cpus.offsets.get(cpu as usize) else { continue };
        addrs.extend(vars.iter().flatten().map(|v| per_cpu.wrapping_add(*v)));
    }
    let mut words = view.read_u64s(&addrs).into_iter();
    let mut out = Vec::new();
    for &cpu in which {
        let mut stacks = Vec::new();
        if cpus.offsets.get(cpu as usize).is_none() {
            out.push(stacks);
            continue;
        }
        let mut next = |var: Option<u64>| var.and_then(|_| words.next()?.ok()).filter(|p| *p >= 1 << 63);
        // The pointer is to the top word of the 16 KiB stack.
        if let Some(top) = next(hardirq) {
            stacks.push((
                top.wrapping_add(8).wrapping_sub(IRQ_STACK_SIZE),
                IRQ_STACK_SIZE,
                "its cpu's hardirq stack",
            ));
        }
        if let Some(base) = next(exceptions) {
            let len = l.exception_stacks_size.unwrap_or(EXCEPTION_STACKS_SIZE);
            stacks.push((base, len, "its cpu's exception stacks"));
        }
        out.push(stacks);
    }
    out
}

/// IRQ_STACK_SIZE on x86-64 (16 KiB since 5.x without KASAN).
pub(super) const IRQ_STACK_SIZE: u64 = 16 << 10;
/// `struct cea_exception_stacks` without KASAN when BTF does not say: 5 stacks and 5 guard
/// pages of 4 KiB.
pub(super) const EXCEPTION_STACKS_SIZE: u64 = 40 << 10;
