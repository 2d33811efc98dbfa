/* ndchan-bridge: what the far (listening) bridge keeps so that a restarted
 * far bridge knows the last array its channel committed.
 *
 * A small shared-memory file, "/<channel>.bridge" beside the channel's own
 * shm object, holding the near channel's name (the stream it belongs to)
 * and, around each commit:
 *
 *   before ndc_commit: sent_before = ndc_stat().sent, pending = seq
 *   after  ndc_commit: last = seq
 *
 * Stores into a shared file mapping outlive a SIGKILL (they are in the page
 * cache). A bridge killed between the two finds pending != last and asks
 * the channel: if its `sent` counter moved past sent_before, the commit
 * happened (last = pending), else it did not. That is exact as long as the
 * bridge is the far channel's only sender, which is how it is meant to be
 * used. The file is removed when the stream ends (end of stream or a dead
 * peer reported): a later stream starts afresh.
 */
#ifndef NDC_TOOLS_BRIDGE_STATE_H
#define NDC_TOOLS_BRIDGE_STATE_H
#include <stdint.h>
#include "ndchan.h"

struct bs_state;

/* Open (or create) the record of far channel `chan`. fresh: the channel was
 * just created, so any old record is stale and is cleared. 0 or -errno. */
int  bs_open(struct bs_state **out, const char *chan, int fresh);
/* The last near seq the far channel committed for the stream of near
 * channel `near`: 1 and *last set, or 0 when there is none (another
 * stream's record is cleared and taken over). */
int  bs_last(struct bs_state *s, ndc_chan *far, const char *near, uint64_t *last);
void bs_begin(struct bs_state *s, uint64_t sent_before, uint64_t seq);
void bs_end(struct bs_state *s, uint64_t seq);
/* The stream is over: remove the record. */
void bs_remove(struct bs_state *s);
void bs_close(struct bs_state *s);
#endif
