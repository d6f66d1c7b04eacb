/* Count primes below 10000 by trial division, repeatedly, on one thread, and
 * print events per CPU second. One event is one full count. That is the unit
 * that "sysbench cpu --threads=1" reports with its default limit of 10000, so
 * the rate can be compared with published sysbench figures for Raspberry Pi
 * boards. CPU time is used, not wall time, so that other processes on a
 * shared machine do not lower the rate.
 *
 * Build and run: cc -O2 -o prime_events prime_events.c -lm && ./prime_events
 */
#include <math.h>
#include <stdio.h>
#include <time.h>

static unsigned long count_primes(unsigned long limit)
{
    unsigned long found = 0;
    for (unsigned long candidate = 3; candidate < limit; candidate++) {
        unsigned long root = (unsigned long)sqrt((double)candidate);
        unsigned long divisor;
        for (divisor = 2; divisor <= root; divisor++) {
            if (candidate % divisor == 0)
                break;
        }
        if (divisor > root)
            found++;
    }
    return found;
}

int main(void)
{
    const double seconds = 10.0;
    unsigned long events = 0;
    volatile unsigned long sink = 0;
    clock_t start = clock();
    double elapsed = 0.0;

    while (elapsed < seconds) {
        sink += count_primes(10000);
        events++;
        elapsed = (double)(clock() - start) / CLOCKS_PER_SEC;
    }
    printf("%.1f events per CPU second (%lu events in %.1f s)\n", events / elapsed, events, elapsed);
    return 0;
}
