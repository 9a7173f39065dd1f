#!/usr/bin/env python3
"""Reference per-task stack traces from drgn, for checking dmastub's
"every task a gdb thread" registers and unwinds.

Usage:
    python3 tests/tools/drgn_stacks.py --core CORE --vmlinux VMLINUX [--frames N]

Prints one JSON object {"tasks": [...]} on stdout. For every task from
for_each_task() plus each possible CPU's idle task it gives pid, tgid,
comm, task (address), cpu (task_cpu), on_cpu (task == cpu_curr(cpu)),
"registers" (the registers drgn's unwinder starts from, i.e.
prog.stack_trace(task)[0].registers()) and "frames" (first N frames:
function name, pc, and whether drgn marks it inline / interrupted).
Per-task failures go in an "error" field. "task_on_cpu" is the raw
task->on_cpu, which is what drgn itself tests.

How drgn (0.3.0, libdrgn/stack_trace.c + arch_x86_64.c) gets the initial
registers on x86-64:
  * task not running (task->on_cpu == 0):
        f   = (struct inactive_task_frame *)task->thread.sp
        rip = f->ret_addr, r15..r12 = f->r15..r12, rbx = f->bx, rbp = f->bp,
        rsp = task->thread.sp + sizeof(struct inactive_task_frame)  (56)
    (no other registers are known; rip is __schedule+0x34d, the return
    address into __schedule after switch_to/__switch_to_asm).
  * "running" means task->on_cpu != 0 (linux_helper_task_on_cpu; only a
    !SMP kernel falls back to task == cpu_curr(0)); cpu = task_cpu(task)
    (task->thread_info.cpu).
  * task running on a CPU of a core dump: the NT_PRSTATUS note for that
    CPU. Without CRASHTIME in VMCOREINFO (QEMU dump-guest-memory) the note
    whose pr_pid == cpu + 1 is used (QEMU writes cpu_index + 1 there);
    with CRASHTIME (kdump) drgn reads per_cpu(crash_notes, cpu) instead.

Requires the drgn Python package (pip install drgn).
"""

import argparse
import json
import sys
import time

import drgn
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import cpu_curr, idle_task, task_cpu


def load_program(core, vmlinux):
    prog = drgn.Program()
    prog.set_core_dump(core)
    # Equivalent of `drgn -c CORE -s VMLINUX --no-default-symbols`:
    # only the given file, no search for vmlinux/modules elsewhere.
    prog.load_debug_info([vmlinux], default=False, main=True)
    return prog


def frame_name(prog, frame):
    """DWARF function name, else symbol name, else None.

    (drgn >= 0.0.2x's StackFrame.name falls back to hex(pc) / "???"; use
    function_name when it exists so "unknown" stays null.)
    """
    try:
        name = getattr(frame, "function_name", None)
        if name is None and not hasattr(frame, "function_name"):
            name = frame.name
    except Exception:
        name = None
    if name:
        return name
    try:
        return frame.symbol().name
    except Exception:
        return None


def task_record(prog, task, nframes, curr_by_cpu, idle_cpu=None):
    rec = {}
    try:
        rec["pid"] = task.pid.value_()
        rec["tgid"] = task.tgid.value_()
        rec["comm"] = task.comm.string_().decode(errors="replace")
        rec["task"] = hex(task.value_())
        cpu = task_cpu(task)
        rec["cpu"] = cpu
        rec["on_cpu"] = curr_by_cpu.get(cpu) == task.value_()
        # drgn itself decides "running" from task->on_cpu (SMP kernels),
        # not from cpu_curr(); record it so the two can be compared.
        try:
            rec["task_on_cpu"] = task.on_cpu.value_()
        except Exception:
            rec["task_on_cpu"] = None
        if idle_cpu is not None:
            rec["idle_cpu"] = idle_cpu
    except Exception as e:  # pragma: no cover - defensive
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec
    try:
        trace = prog.stack_trace(task)
        regs = trace[0].registers()
        rec["registers"] = {k: hex(v) for k, v in regs.items()}
        frames = []
        for i, frame in enumerate(trace):
            if i >= nframes:
                break
            try:
                pc = hex(frame.pc)
            except Exception:
                pc = None
            frames.append({"name": frame_name(prog, frame), "pc": pc,
                           "inline": bool(getattr(frame, "is_inline", False)),
                           "interrupted": bool(getattr(frame, "interrupted", False))})
        rec["frames"] = frames
        rec["nframes_total"] = len(trace)
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core", required=True)
    ap.add_argument("--vmlinux", required=True)
    ap.add_argument("--frames", type=int, default=12)
    args = ap.parse_args()

    t0 = time.monotonic()
    prog = load_program(args.core, args.vmlinux)

    curr_by_cpu = {}
    idle_by_cpu = {}
    cpus = list(for_each_possible_cpu(prog))
    for cpu in cpus:
        try:
            curr_by_cpu[cpu] = cpu_curr(prog, cpu).value_()
        except Exception:
            pass
        try:
            idle_by_cpu[cpu] = idle_task(prog, cpu)
        except Exception:
            pass

    tasks = []
    seen = set()
    # Idle tasks first (pid 0, not on the task list; swapper/0 is init_task).
    for cpu in cpus:
        t = idle_by_cpu.get(cpu)
        if t is None:
            tasks.append({"pid": 0, "cpu": cpu, "idle_cpu": cpu,
                          "error": "idle_task lookup failed"})
            continue
        seen.add(t.value_())
        tasks.append(task_record(prog, t, args.frames, curr_by_cpu, idle_cpu=cpu))
    try:
        for t in for_each_task(prog):
            if t.value_() in seen:
                continue
            seen.add(t.value_())
            tasks.append(task_record(prog, t, args.frames, curr_by_cpu))
    except Exception as e:
        tasks.append({"error": f"for_each_task: {type(e).__name__}: {e}"})

    out = {
        "drgn_version": drgn.__version__,
        "cpus": {str(c): hex(a) for c, a in curr_by_cpu.items()},
        "tasks": tasks,
        "elapsed_s": round(time.monotonic() - t0, 3),
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
