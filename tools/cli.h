/* The command line of every ndchan tool, one way: numbers parsed strictly
 * (a word, a trailing letter or an out-of-range value is an error, never 0),
 * --help on stdout with exit status 0, and every usage error one line on
 * stderr with exit status 2. Failures at run time exit 1. */
#ifndef NDC_TOOLS_CLI_H
#define NDC_TOOLS_CLI_H
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

/* Name the program and its help text (the first line is the usage line).
 * Call first. */
void cli_init(const char *prog, const char *help);
const char *cli_prog(void);

/* getopt_long with the errors handled: an unknown option or a missing
 * argument is a usage error, 'h' (and --help, which every tool maps to 'h')
 * prints the help and exits 0. Returns the option as getopt_long does. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* One line on stderr, "PROG: <message> (try --help)", then exit(2). */
_Noreturn void cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The positional arguments left after the options: fewer than min or more
 * than max (max < 0: no limit) is a usage error. Returns how many there are. */
int cli_positional(int argc, char **argv, int min, int max);

/* Strict numbers for option `opt`: the whole of arg, within [min, max],
 * or a usage error. */
long long cli_int(const char *opt, const char *arg, long long min, long long max);
double cli_double(const char *opt, const char *arg, double min, double max);

/* "PROG: what: <ndc_strerror(err)> (<ndc_last_error()>)" on stderr; returns 1,
 * the exit status of a failure. */
int cli_fail(int err, const char *what);

/* A size in words: "512 B", "1.5 KiB", "64 MiB" (into buf, returned). */
const char *cli_bytes(uint64_t b, char *buf, size_t n);
/* str as a JSON string on stdout; bytes that are not UTF-8 (names in the
 * shm directory may hold any) become U+FFFD so the output always parses. */
void cli_json_str(const char *str);

#endif
