#include <stdio.h>
#include "ndchan.h"
int main(void) { fputs("not built yet\n", stderr); return 1; }
