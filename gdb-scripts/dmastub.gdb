# dmastub session setup: source it before or after `target remote`.
#   gdb -q -x gdb-scripts/dmastub.gdb -ex 'target remote :1234'
#   gdb -q vmlinux -x gdb-scripts/dmastub.gdb -ex 'dmastub-attach localhost:1234'
#
# The target is a machine whose CPUs dmastub cannot run: only memory and a few registers
# (the active CR3) are real. These settings keep gdb from asking for what cannot exist.

set pagination off
set confirm off
set height 0
set print pretty on
set architecture i386:x86-64
# gdb must not try to insert breakpoints into a machine it cannot run.
set breakpoint pending off
# Every read goes to the machine (a live one changes between two commands).
set stack-cache off
set code-cache off

define dmastub-attach
  if $argc == 0
    target remote 127.0.0.1:1234
  else
    target remote $arg0
  end
  monitor cr3
end
document dmastub-attach
Connect to a dmastub server: dmastub-attach [HOST:PORT] (default 127.0.0.1:1234).
end

define phys
  monitor phys
end
document phys
Memory reads and writes address physical memory from now on.
end

define virt
  monitor virt
end
document virt
Memory reads and writes address virtual memory through the active CR3 from now on.
end

define vtop
  if $argc != 1
    echo usage: vtop EXPRESSION (a virtual address; e.g. vtop &init_task)\n
  else
    eval "monitor vtop %#lx", (unsigned long)($arg0)
  end
end
document vtop
Walk the page tables for a virtual address given as a gdb expression without spaces:
vtop &some_symbol, vtop $rsp+0x100.
end

define set-cr3
  if $argc != 1
    echo usage: set-cr3 EXPRESSION (a page-table root)\n
  else
    eval "monitor set-cr3 %#lx", (unsigned long)($arg0)
    maint flush register-cache
  end
end
document set-cr3
Make a page-table root (any gdb expression) the active CR3, like `set $cr3 = ...`.
end

define xphys
  if $argc != 1
    echo usage: xphys EXPRESSION (a physical address; prints the 8 bytes there)\n
  else
    monitor phys
    eval "x/gx %#lx", (unsigned long)($arg0)
    monitor virt
  end
end
document xphys
Print the 8-byte value at a physical address, then return to virtual mode.
end
