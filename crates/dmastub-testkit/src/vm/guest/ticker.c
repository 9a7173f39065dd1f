/* ticker: the demo guest's own program. It keeps a counter in a global that changes ten
 * times a second, so that a reader from outside can see the machine's memory change while
 * it runs, and stop changing when the kernel panics.  Every second it says where the
 * counter is and what it holds, on the console, for the host to compare with what it read:
 *   TICKER pid=<pid> addr=0x<address of ticks> ticks=<value>
 * Built static and non-PIE by the host (gcc -static -no-pie), so the global's address is
 * the same in every run and gdb finds it with the binary's own symbols. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ticker {
    char magic[16];            /* "DMASTUB-TICKER\0", to find it by scanning memory */
    volatile uint64_t ticks;   /* +1 every 100 ms */
    volatile uint64_t seconds; /* the guest's UNIX time at the last tick */
};

struct ticker ticker = { "DMASTUB-TICKER", 0, 0 };

int main(void)
{
    const struct timespec tenth = { 0, 100 * 1000 * 1000 };
    char line[128];

    for (;;) {
        ticker.ticks++;
        ticker.seconds = (uint64_t)time(NULL);
        if (ticker.ticks % 10 == 0) {
            int n = snprintf(line, sizeof line, "TICKER pid=%d addr=%p ticks=%llu\n", (int)getpid(),
                             (void *)&ticker.ticks, (unsigned long long)ticker.ticks);
            if (n > 0 && write(1, line, (size_t)n) < 0) {
                /* nobody to tell */
            }
        }
        nanosleep(&tenth, NULL);
    }
}
