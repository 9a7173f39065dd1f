"""dmastub's gdb helpers that need Python: load it with `source gdb-scripts/dmastub.py`.

It talks to the stub only through `monitor` commands and ordinary packets.

dmastub-symbols VMLINUX
    Asks the stub for the kernel's KASLR slide (`monitor kernel`) and loads VMLINUX with every
    section where the running kernel has it: text, rodata, data and bss moved by the slide, the
    per-CPU section left at its link address (KASLR does not move it).
dmastub-ps
    The task list (`monitor ps -t`) with each task's gdb thread number: `thread N` selects it.
dmastub-task PID
    Selects the thread of task PID (for pid 0, the idle task of CPU 0): its registers, its
    backtrace, and its process's memory.
dmastub-bt [PID]
    The kernel backtrace of task PID, or of the selected thread (`monitor bt`): unwound by the
    stub with the kernel's own ORC tables, no vmlinux needed.
$task(PID)
    The task's `struct task_struct *` (needs a vmlinux with debug info for the type).

An unwinder takes gdb's backtraces through interrupt and exception entries and the switches to
the IRQ stack (`thread apply all bt` of CPUs stopped by the panic's IPI or NMI: stop_this_cpu,
sysvec_reboot, asm_sysvec_reboot, then the code the interrupt stopped), which DWARF does not
describe, and through every kernel frame when gdb has no debug info for it (a vmlinux with
symbols only, or none): at those frames it asks the stub for the caller (`monitor unwind`),
which unwinds with the kernel's own ORC tables; gdb's DWARF unwinder does every other frame.

With Linux's own gdb scripts (scripts/gdb, `source .../vmlinux-gdb.py`, before or after this
file), it teaches them the current CPU: the CPU of the selected thread's task (the one it runs
on, or last ran on), which `$lx_current()` and `$lx_per_cpu("VAR")` use when given no CPU.
dmastub is neither QEMU (whose thread N is CPU N-1) nor kgdb, so they cannot tell it alone.
"""
import importlib.abc
import re
import sys

import gdb
import gdb.unwinder

# The stub's thread ids: pid + 1 for a task; the idle task of CPU N > 0 is IDLE_TID_BASE + N.
IDLE_TID_BASE = 1 << 22


def _monitor(command):
    return gdb.execute(f"monitor {command}", to_string=True)


def _parse_int(arg, what):
    try:
        return int(arg, 0)
    except ValueError:
        raise gdb.GdbError(f"'{arg}' is not a {what}")


def _tasks():
    """Rows of `monitor ps -t`: (pid, ppid, state, comm, task address, cr3 text)."""
    text = _monitor("ps -t")
    rows = []
    for line in text.splitlines():
        t = line.split()
        if len(t) >= 6 and t[0].isdigit() and t[1].isdigit() and t[-2].startswith("0x"):
            rows.append((int(t[0]), int(t[1]), t[2], " ".join(t[3:-2]), int(t[-2], 16), t[-1]))
    if not rows:
        raise gdb.GdbError("the stub listed no tasks:\n" + text)
    return rows


def _threads_by_tid():
    """gdb's threads by the stub's thread id (the ptid's lwp: pid + 1 for a task)."""
    inferior = gdb.selected_inferior()
    return {t.ptid[1]: t for t in inferior.threads()}


def _thread_of(pid):
    thread = _threads_by_tid().get(pid + 1)
    if thread is None:
        raise gdb.GdbError(f"no thread for pid {pid}: 'info threads' lists the tasks")
    return thread


class DmastubSymbols(gdb.Command):
    """dmastub-symbols VMLINUX: load vmlinux at the running kernel's addresses (KASLR)."""

    def __init__(self):
        super().__init__("dmastub-symbols", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) != 1:
            raise gdb.GdbError("usage: dmastub-symbols VMLINUX")
        report = _monitor("kernel")
        m = re.search(r"^kaslr slide\s+(0x[0-9a-fA-F]+)", report, re.M)
        if not m:
            raise gdb.GdbError("the stub reported no KASLR slide; is it serving a Linux kernel?\n" + report)
        slide = m.group(1)
        vmlinux = args[0]
        gdb.execute("symbol-file", to_string=True)
        gdb.execute(f"add-symbol-file {vmlinux} -o {slide} -s .data..percpu 0", to_string=True)
        gdb.write(f"dmastub: loaded {vmlinux} with KASLR slide {slide} (per-CPU section at its link address)\n")


class DmastubPs(gdb.Command):
    """dmastub-ps: every task with its gdb thread number ('thread N' selects it)."""

    def __init__(self):
        super().__init__("dmastub-ps", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise gdb.GdbError("usage: dmastub-ps")
        threads = _threads_by_tid()
        current = gdb.selected_thread()
        gdb.write(f"  {'THREAD':>6}  {'PID':>7}  {'PPID':>7}  ST  {'COMM':<16} {'TASK':<18}  CR3\n")
        for pid, ppid, state, comm, task, cr3 in _tasks():
            thread = threads.get(pid + 1)
            num = str(thread.num) if thread else "-"
            mark = "*" if thread is not None and thread == current else " "
            gdb.write(f"{mark} {num:>6}  {pid:>7}  {ppid:>7}  {state:<2}  {comm:<16} {task:#018x}  {cr3}\n")


class DmastubTask(gdb.Command):
    """dmastub-task PID: select the thread of task PID (its registers and its process's memory)."""

    def __init__(self):
        super().__init__("dmastub-task", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) != 1:
            raise gdb.GdbError("usage: dmastub-task PID")
        thread = _thread_of(_parse_int(args[0], "PID"))
        gdb.execute(f"thread {thread.num}", from_tty)


class DmastubBt(gdb.Command):
    """dmastub-bt [PID]: the kernel backtrace of task PID, or of the selected thread (monitor bt)."""

    def __init__(self):
        super().__init__("dmastub-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) > 1:
            raise gdb.GdbError("usage: dmastub-bt [PID]")
        if args:
            gdb.write(_monitor(f"bt {_parse_int(args[0], 'PID')}"))
            return
        if gdb.selected_thread() is None:
            raise gdb.GdbError("no thread selected")
        # A monitor command does not say which thread gdb has selected; the stub takes the one
        # gdb last read. Reading the selected thread's registers afresh makes it that one.
        gdb.execute("maintenance flush register-cache", to_string=True)
        try:
            gdb.selected_frame().read_register("rip")
        except gdb.error:
            pass  # no pc: the stub says why there is no backtrace
        gdb.write(_monitor("bt"))


class TaskFunction(gdb.Function):
    """$task(PID): the task's struct task_struct * (from the stub's task list)."""

    def __init__(self):
        super().__init__("task")

    def invoke(self, pid):
        return _task_value(int(pid))


def _task_value(pid):
    """The task_struct of PID as a gdb value."""
    for row_pid, _, _, _, task, _ in _tasks():
        if row_pid == pid:
            try:
                pointer = gdb.lookup_type("struct task_struct").pointer()
            except gdb.error:
                raise gdb.GdbError(
                    "struct task_struct is unknown: load a vmlinux with debug info (dmastub-symbols VMLINUX)"
                )
            return gdb.Value(task).cast(pointer)
    raise gdb.GdbError(f"no task with pid {pid} in the stub's task list")


def selected_cpu():
    """The CPU of the selected thread's task: where it runs, or last ran."""
    thread = gdb.selected_thread()
    if thread is None:
        raise gdb.GdbError("no thread selected")
    tid = thread.ptid[1]
    if tid == 1:
        return 0  # the idle task of CPU 0
    if tid > IDLE_TID_BASE:
        return tid - IDLE_TID_BASE
    from linux import tasks  # Linux's scripts, loaded: only they call this

    return int(tasks.get_thread_info(_task_value(tid - 1).dereference())["cpu"])


def _teach_linux_cpus(module):
    module.get_current_cpu = selected_cpu


class _LinuxCpusHook(importlib.abc.MetaPathFinder):
    """Patches linux.cpus (Linux's gdb scripts) when it is imported after this file."""

    def find_spec(self, name, path, target=None):
        if name != "linux.cpus":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _teach_linux_cpus(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


# Functions whose frames DWARF cannot unwind: entry code (no CFI; the interrupted context is in
# pt_regs) and the C entry points that switch to the IRQ stack in inline assembly.
_ENTRY_PREFIXES = ("asm_", "entry_", "sysvec_", "common_interrupt", "spurious_interrupt",
                   "ret_from_fork", "do_softirq", "__do_softirq", "irq_exit_rcu", "__irq_exit_rcu",
                   "handle_softirqs", "native_irq_return")
_CALLER = re.compile(r"^caller( entry)?((?: \w+=0x[0-9a-f]+)*)\s*$", re.M)


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


def _function_of(pc):
    """Whether the debug info describes pc's function, its name, and its start (from the
    minimal symbols when there is no debug info; None when nothing names it)."""
    try:
        block = gdb.current_progspace().block_for_pc(pc)
    except RuntimeError:
        block = None
    while block is not None and block.function is None:
        block = block.superblock
    if block is not None:
        # The outermost function: an inlined one sits inside the real frame's.
        while block.superblock is not None and block.superblock.function is not None:
            block = block.superblock
        return True, block.function.name, block.start
    try:
        text = gdb.execute(f"info symbol {pc:#x}", to_string=True)
    except gdb.error:
        return False, "", None
    m = re.match(r"^(\S+)(?: \+ (\d+))? in section", text)
    if not m:
        return False, "", None
    return False, m.group(1), pc - int(m.group(2) or 0)


class EntryUnwinder(gdb.unwinder.Unwinder):
    """Frames in entry code and IRQ-stack switches, unwound by the stub's ORC unwinder."""

    def __init__(self):
        super().__init__("dmastub-entry")
        self.disabled = False

    def __call__(self, pending_frame):
        if self.disabled:
            return None
        pc = int(pending_frame.read_register("rip"))
        if pc >> 63 == 0:
            return None  # user space: not the kernel's tables
        dwarf, name, start = _function_of(pc)
        if dwarf and not name.startswith(_ENTRY_PREFIXES):
            return None
        try:
            sp = int(pending_frame.read_register("rsp"))
        except gdb.error:
            return None
        try:
            bp = f"{int(pending_frame.read_register('rbp')):#x}"
        except gdb.error:
            bp = ""  # ORC says whether it needs it
        exact = "exact" if pending_frame.level() == 0 else ""
        try:
            text = _monitor(f"unwind {pc:#x} {sp:#x} {bp} {exact}")
        except gdb.error:
            return None
        if "unknown command" in text:
            self.disabled = True  # not dmastub
            return None
        m = _CALLER.search(text)
        if not m:
            return None  # "no caller: why": DWARF, or the end of the stack
        regs = dict((k, int(v, 16)) for k, v in re.findall(r"(\w+)=(0x[0-9a-f]+)", m.group(2)))
        if "rip" not in regs or "rsp" not in regs:
            return None
        ulong = gdb.lookup_type("unsigned long")
        # The frame's id is its CFA, as gdb's own unwinders make it: the caller's stack pointer.
        info = pending_frame.create_unwind_info(
            _FrameId(gdb.Value(regs["rsp"]).cast(ulong), gdb.Value(start or pc).cast(ulong)))
        for name, value in regs.items():
            try:
                info.add_saved_register(name, gdb.Value(value).cast(ulong))
            except (ValueError, gdb.error):
                pass  # a register this architecture description lacks
        return info


def _register_unwinder():
    gdb.unwinder.register_unwinder(None, EntryUnwinder(), replace=True)


if "linux.cpus" in sys.modules:
    _teach_linux_cpus(sys.modules["linux.cpus"])
elif not any(isinstance(f, _LinuxCpusHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _LinuxCpusHook())

_register_unwinder()
DmastubSymbols()
DmastubPs()
DmastubTask()
DmastubBt()
TaskFunction()
