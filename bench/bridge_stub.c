/* ndchan-bench without UCX: the bridge part says why it is absent. */
#include <stdio.h>
#include "bench.h"

int bench_bridge(void)
{
    printf("\nBridge: skipped: this ndchan-bench was built without UCX (libucx-dev)\n");
    return 0;
}
