/* The library's version: the header's numbers, as this build saw them
 * (tests/version_check.c holds them to meson's project version). */
#include "ndchan.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define VERSION STR(NDC_VERSION_MAJOR) "." STR(NDC_VERSION_MINOR) "." STR(NDC_VERSION_PATCH)


const char *ndc_version(void)
{
    return VERSION;
}

uint32_t ndc_version_number(void)
{
    return NDC_VERSION_NUMBER;
}
