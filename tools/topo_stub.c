/* ndchan-topo without hwloc: there is no machine to describe. */
#include <errno.h>

#include "topo.h"

int topo_describe(const char *topology, struct topo_desc **out)
{
    (void)topology; (void)out;
    return -ENOTSUP;
}

void topo_desc_free(struct topo_desc *d)
{
    (void)d;
}
