/* The live guest's dynamically linked program (tests/live_maps.rs): its memory map holds the
 * dynamic linker and libc, more VMAs than one maple-tree node keeps. It keeps its own pid and a
 * known word in globals, for a debugger to read back. */
#include <stdio.h>
#include <unistd.h>

volatile long dyn_pid;
volatile unsigned long dyn_magic = 0x64796e7469636b72UL; /* "dyntickr" */
volatile long dyn_ticks;

int main(void)
{
    dyn_pid = getpid();
    printf("DYNTICKER pid=%ld\n", (long)dyn_pid);
    fflush(stdout);
    for (;;) {
        dyn_ticks++;
        sleep(1);
    }
}
