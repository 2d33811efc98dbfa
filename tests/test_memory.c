/*
 * Memory (suite memory): untouched capacity costs nothing, NDC_POPULATE
 * faults the segment in, and NDC_HUGEPAGES works or fails clearly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

/* ---- memory: untouched capacity is free ----------------------------------- */

Test(memory, huge_channel_is_cheap, .timeout = 20)
{
    long rss0 = th_proc_kb("/proc/self/status", "VmRSS");
    cr_assert_gt(rss0, 0, "cannot read VmRSS");
    ndc_chan *ch = th_chan(8, 1ull << 30);
    long rss1 = th_proc_kb("/proc/self/status", "VmRSS");
    struct stat sb;
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_geq((uint64_t)sb.st_size, 8ull << 30, "segment of %lld bytes cannot hold 8 GiB",
                  (long long)sb.st_size);
    long long backed = (long long)sb.st_blocks * 512;
    cr_assert_lt(backed, 32ll << 20, "an untouched 8 x 1 GiB channel allocated %lld bytes",
                 backed);
    cr_assert_lt(rss1 - rss0, 32 * 1024, "RSS grew by %ld KiB at create", rss1 - rss0);
    /* Using one small array in it costs a page or so, not a slot. */
    int64_t s[] = { 1000 };
    send_filled(ch, NDC_F64, 1, s, 1, 1);
    expect_filled(ch, NDC_F64, 1, s, 1, 1, 0);
    long rss2 = th_proc_kb("/proc/self/status", "VmRSS");
    cr_assert_lt(rss2 - rss0, 48 * 1024, "RSS grew by %ld KiB after one small array",
                 rss2 - rss0);
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_lt((long long)sb.st_blocks * 512, 48ll << 20);
    ndc_free(ch);
}

Test(memory, populate_faults_in, .timeout = 20)
{
    struct ndc_chan_opts o = { .slots = 2, .slot_bytes = 1 << 20, .flags = NDC_POPULATE };
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, NULL, &o));
    struct stat sb;
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_geq((long long)sb.st_blocks * 512, 2ll << 20,
                  "NDC_POPULATE left the payload unallocated (%lld bytes backed)",
                  (long long)sb.st_blocks * 512);
    int64_t s[] = { 1 << 17 };
    send_filled(ch, NDC_F64, 1, s, 1, 1);
    expect_filled(ch, NDC_F64, 1, s, 1, 1, 0);
    ndc_free(ch);
}

Test(memory, hugepages_work_or_fail_clearly, .timeout = 20)
{
    struct ndc_chan_opts o = { .slots = 2, .slot_bytes = 2 << 20, .flags = NDC_HUGEPAGES };
    ndc_chan *ch = NULL;
    int r = ndc_create(&ch, NULL, &o);
    if (r == -ENOMEM) {
        cr_assert_gt(strlen(ndc_last_error()), 0, "-ENOMEM for huge pages without a detail");
        cr_skip_test("no huge pages: %s", ndc_last_error());
    }
    th_ok(r);
    int64_t s[] = { 2 << 20 };
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    expect_filled(ch, NDC_U8, 1, s, 1, 1, 0);
    ndc_free(ch);
}
