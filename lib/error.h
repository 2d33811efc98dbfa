/* Error details: every failing call may leave a sentence for ndc_last_error(). */
#ifndef NDC_ERROR_H
#define NDC_ERROR_H

/* Record a detail message for this thread and return err (a negative errno),
 * so a failure reads: return ndc__fail(-EINVAL, "slots %u > %u", n, max); */
int ndc__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
