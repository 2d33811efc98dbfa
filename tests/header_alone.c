/* The public header compiles alone (no other include before it), under
 * -std=c99 -pedantic: users include it first, in any C dialect. */
#include "ndchan.h"

int main(void)
{
    struct ndc_chan_opts o = {0};
    struct ndc_array a = {0};
    return (int)o.slots + a.ndim;
}
