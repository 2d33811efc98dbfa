/* Error text: ndc_strerror() for codes, ndc_last_error() for details. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ndchan.h"

static __thread char last_error[512];

int ndc__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return err;
}

const char *ndc_last_error(void)
{
    return last_error;
}

const char *ndc_strerror(int err)
{
    /* The codes whose meaning is ndchan's own say so; the rest are errno's. */
    switch (err) {
    case 0:            return "success";
    case -EAGAIN:      return "would block (timeout 0): no slot or array is ready";
    case -ETIMEDOUT:   return "timed out waiting for the peer";
    case -EINTR:       return "interrupted by a signal while waiting";
    case -E2BIG:       return "array larger than the channel's slot_bytes";
    case -EMSGSIZE:    return "receive buffer too small: the array is kept for the next receive";
    case -EPIPE:       return "end of stream: the channel is closed";
    case -EOWNERDEAD:  return "every peer on the other side of the channel is gone";
    case -EBADMSG:     return "malformed data: a header or index (in shared memory or a file) failed validation";
    case -EPROTO:      return "not an ndchan segment of this layout version";
    case -EPERM:       return "not permitted: the handle is receive-only";
    case -EUSERS:      return "too many processes attached to the channel";
    }
    if (err < 0) {
        const char *s = strerrordesc_np(-err);
        if (s)
            return s;
    }
    return "unknown error";
}
