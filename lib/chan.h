/* Channel internals shared with the optional parts (numa, npy/io). */
#ifndef NDC_CHAN_H
#define NDC_CHAN_H
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

/* The payload region as mapped in this process: nslots slots of
 * slot_stride bytes each (page aligned, huge-page aligned under
 * NDC_HUGEPAGES) from base. Slot i's payload is base + i * slot_stride. */
struct ndc__payload {
    void    *base;
    size_t   len;
    uint64_t slot_stride;
    uint64_t slot_bytes;
    uint32_t nslots;
    int      writable;
};
void ndc__chan_payload(const ndc_chan *ch, struct ndc__payload *p);

#endif
