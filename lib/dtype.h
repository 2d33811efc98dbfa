/* The dtype table's internal face (dtype.c holds the one table). */
#ifndef NDC_DTYPE_H
#define NDC_DTYPE_H
#include "ndchan.h"

/* numpy's kind letter for a dtype: 'b' bool, 'i' signed, 'u' unsigned,
 * 'f' float, 'c' complex; 0 for bfloat16 (numpy has no kind of its own for
 * it) and for a value that is not a dtype. */
char ndc__dtype_kind(enum ndc_dtype t);

#endif
