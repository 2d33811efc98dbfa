/* Helpers shared by the fault tests (test_kill, test_detect, test_lock,
 * test_scribble, test_access, test_signals): the segment as a test maps it
 * to scribble on, arrays derived from their tag, and small tools for forked
 * children.
 *
 * Children never call cr_assert: they print what went wrong on stderr and
 * exit with a nonzero code (or record it in shared memory), and the test
 * process asserts on that. Every test that waits has a .timeout.
 */
#ifndef NDC_TEST_FAULTS_HELPERS_H
#define NDC_TEST_FAULTS_HELPERS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ndchan.h"
#include "segment.h"
#include "chan.h"

/* The soak variants (soak_* programs, meson test --suite soak) build a test
 * file with -DFAULTS_SOAK=1: ten times the rounds and the timeouts. */
#ifndef FAULTS_SOAK
#define FAULTS_SOAK 0
#endif
/* Round counts: the default run stays well under a minute on 2 vCPUs. */
#define ROUNDS(n) ((n) * (FAULTS_SOAK ? 10 : 1))
#define TMO(s)    ((s) * (FAULTS_SOAK ? 10 : 1))

/* The next of a splitmix64 sequence seeded by *s. */
uint64_t rnd(uint64_t *s);
/* /proc state letter of pid ('S' asleep, 'R', 'Z', ...), '?' if unknown. */
char proc_state(pid_t pid);

/* The segment as this test maps it, to scribble on it. */
struct seg {
    unsigned char *base;
    size_t len;
    struct ndc__geometry g;
    struct ndc__ctrl *c;
    struct ndc__peer *peers;
    struct ndc__slot *slots;
    struct ndc__cell *cells;     /* the ready ring */
};

/* Map ch's segment read-write (asserts); seg_unmap undoes it. */
void seg_map(struct seg *s, const ndc_chan *ch);
void seg_unmap(struct seg *s);

/* Every array's dtype, shape and payload are functions of its tag, so a
 * receiver can tell a torn or mislabelled array from a good one. */
void tag_array(uint64_t tag, uint64_t slot_bytes, struct ndc_array *a, void *data);
/* 0 if `a` is the array of its tag, complete; else a message in err. */
int tag_check(const struct ndc_array *a, uint64_t slot_bytes, char *err, size_t cap);
/* Send the array of `tag` (at most 64 bytes); its result in *rc. */
void send_tag(ndc_chan *ch, uint64_t tag, int64_t tmo, int *rc);
/* Send the array of `tag` and take it back, asserting it is whole. */
void roundtrip(ndc_chan *ch, uint64_t tag, const char *what);

/* A child must not outlive a test that failed (it would hold the log pipe). */
void die_with_parent(void);
#endif
