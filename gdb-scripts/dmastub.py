"""dmastub's gdb helpers that need Python: load it with `source gdb-scripts/dmastub.py`.

dmastub-symbols VMLINUX
    Asks the stub for the kernel's KASLR slide (`monitor kernel`) and loads VMLINUX with every
    section where the running kernel has it: text, rodata, data and bss moved by the slide, the
    per-CPU section left at its link address (KASLR does not move it).
"""
import re

import gdb


class DmastubSymbols(gdb.Command):
    """dmastub-symbols VMLINUX: load vmlinux at the running kernel's addresses (KASLR)."""

    def __init__(self):
        super().__init__("dmastub-symbols", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) != 1:
            raise gdb.GdbError("usage: dmastub-symbols VMLINUX")
        report = gdb.execute("monitor kernel", to_string=True)
        m = re.search(r"^kaslr slide\s+(0x[0-9a-fA-F]+)", report, re.M)
        if not m:
            raise gdb.GdbError("the stub reported no KASLR slide; is it serving a Linux kernel?\n" + report)
        slide = m.group(1)
        vmlinux = args[0]
        gdb.execute("symbol-file", to_string=True)
        gdb.execute(f"add-symbol-file {vmlinux} -o {slide} -s .data..percpu 0", to_string=True)
        gdb.write(f"dmastub: loaded {vmlinux} with KASLR slide {slide} (per-CPU section at its link address)\n")


DmastubSymbols()
