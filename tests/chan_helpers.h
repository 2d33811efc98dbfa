/* Helpers shared by the single-process channel tests (test_open, test_loan,
 * test_copy, test_wait, test_memory, test_threads, test_access): arrays
 * sent from a seeded fill and checked on arrival. */
#ifndef NDC_TEST_CHAN_HELPERS_H
#define NDC_TEST_CHAN_HELPERS_H
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

/* Fill *a with a byte pattern no call writes; is_poisoned checks for it. */
void poison(struct ndc_array *a);
int is_poisoned(const struct ndc_array *a);
/* An array header of the given dtype and shape (asserts ndc_array_init). */
struct ndc_array mkarr(enum ndc_dtype t, int ndim, const int64_t *shape, void *data, uint64_t tag);
/* Send a C-order array whose bytes are th_fill(seed); returns nbytes. */
size_t send_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape, uint64_t tag,
                   uint64_t seed);
/* cr_assert that a's strides are C order. */
void assert_c_strides(const struct ndc_array *a);
/* Acquire one array and check its header and bytes against what
 * send_filled() sent. */
void expect_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape, uint64_t tag,
                   uint64_t seed, uint64_t seq);
/* Nanoseconds since th_now_ns() returned t0. */
int64_t elapsed_since(int64_t t0);
#endif
