/* A progress line for the load/save tools: arrays, MiB and MiB/s from
 * ndc_stat, redrawn five times a second on stderr while a long call runs,
 * and only when stderr is a terminal (nothing in scripts and logs). */
#ifndef NDC_TOOLS_PROGRESS_H
#define NDC_TOOLS_PROGRESS_H
#include <stddef.h>
#include "ndchan.h"

enum progress_side { PROGRESS_SENDING, PROGRESS_RECEIVING };

struct progress;
/* NULL (no line) when quiet or stderr is not a terminal. total: the arrays
 * expected, or 0 when unknown. */
struct progress *progress_start(ndc_chan *ch, enum progress_side side, size_t total, int quiet);
/* Draw the last line and end it; NULL is a no-op. */
void progress_stop(struct progress *p);

#endif
