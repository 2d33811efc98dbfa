/* The header's NDC_VERSION_* macros, the library's ndc_version() and
 * meson's project version (argv[1]) say the same. */
#include <stdio.h>
#include <string.h>

#include "ndchan.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", NDC_VERSION_MAJOR, NDC_VERSION_MINOR, NDC_VERSION_PATCH);
    int ok = strcmp(ndc_version(), argv[1]) == 0 && strcmp(want, argv[1]) == 0 &&
             ndc_version_number() == NDC_VERSION_NUMBER;
    printf("ndc_version() %s, header %s, meson %s, number 0x%06x: %s\n", ndc_version(), want,
           argv[1], (unsigned)ndc_version_number(), ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}
