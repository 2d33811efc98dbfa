/* .npy format and streaming: being written (issue 6). */
#include <errno.h>
#include "ndchan.h"
int ndc_npy_read(ndc_chan *ch, const char *path, uint64_t tag, int64_t t) { (void)ch; (void)path; (void)tag; (void)t; return -ENOSYS; }
int ndc_npy_write(const struct ndc_array *a, const char *path) { (void)a; (void)path; return -ENOSYS; }
int ndc_npy_load(ndc_chan *ch, const char *const *p, size_t n, const struct ndc_npy_opts *o) { (void)ch; (void)p; (void)n; (void)o; return -ENOSYS; }
int ndc_npy_drain(ndc_chan *ch, const char *dir, const struct ndc_npy_opts *o) { (void)ch; (void)dir; (void)o; return -ENOSYS; }
