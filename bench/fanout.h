/* Broadcast fan-out measurements (fanout.c). */
#ifndef NDCHAN_BENCH_FANOUT_H
#define NDCHAN_BENCH_FANOUT_H

#define FANOUT_NS 3   /* 1, 2, 4 subscribers */
#define FANOUT_NB 2   /* 8 B, 16 MiB */

struct fanout_result {
    int ok;
    double cost_us[FANOUT_NB][FANOUT_NS];       /* publisher's median reserve + commit */
    double per_array_us[FANOUT_NB][FANOUT_NS];  /* wall time per array (paced by the slowest) */
    double immediate[FANOUT_NB][FANOUT_NS];     /* share of reserves that found a slot at once */
    double array_mib, segment_mib, private_mib; /* 256 MiB to 4 subscribers */
    double latest_rate[2];                      /* arrays/s: no subscriber, a sleeping one */
};
/* \return 0, or -1 (out->ok 0) when a run failed. */
int bench_fanout(struct fanout_result *out, int quick);

#endif
