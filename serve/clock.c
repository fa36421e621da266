/* clock.c: the server's two clocks. The monotonic clock times requests,
 * deadlines and drift windows; the wall clock stamps audit records and uptime. */
#include "serve/internal.h"
#include <time.h>

uint64_t srv_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

uint64_t srv_wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}
