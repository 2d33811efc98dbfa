/* The long variant of the fault tests (meson test --suite soak; CI does not
 * run it by default): every test of test_faults.c with ten times the rounds
 * (kill rounds: ~5700; scribble rounds: ~3000) and ten times the timeouts. */
#define FAULTS_SOAK 1
#include "test_faults.c"
