/* Pinning to one CPU: needs no hwloc, so one copy serves both NUMA builds. */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "error.h"
#include "ndchan.h"

int ndc_pin_cpu(int cpu)
{
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return ndc__fail(-EINVAL, "cpu %d out of range", cpu);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        return ndc__fail(-errno, "sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
    return 0;
}
