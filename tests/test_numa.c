#include <criterion/criterion.h>
#include "ndchan.h"
#include "helpers.h"
