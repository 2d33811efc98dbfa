#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"

static const char *prog_name = "ndchan";
static const char *help_text = "";

void cli_init(const char *prog, const char *help)
{
    prog_name = prog;
    help_text = help;
}

const char *cli_prog(void)
{
    return prog_name;
}

_Noreturn void cli_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try --help)\n", stderr);
    exit(2);
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    char spec[128];
    /* a leading ':' makes getopt tell a missing argument from an unknown
     * option, and opterr = 0 keeps its own messages quiet: ours are one line */
    snprintf(spec, sizeof spec, ":%s", shortopts);
    opterr = 0;
    int c = getopt_long(argc, argv, spec, longopts, NULL);
    const char *arg = argv[optind - 1];
    switch (c) {
    case 'h':
        fputs(help_text, stdout);
        exit(0);
    }
    /* a short option is named by optopt; a long one (whose value may be any
     * number) by the argument as typed */
    int is_short = optopt > 0 && optopt < 128 && arg[0] == '-' && arg[1] != '-';
    if (c == ':') {
        if (is_short)
            cli_usage("option -%c needs an argument", optopt);
        cli_usage("option %s needs an argument", arg);
    }
    if (c == '?') {
        if (is_short)
            cli_usage("unknown option -%c", optopt);
        cli_usage("unknown option %s", arg);
    }
    return c;
}

int cli_positional(int argc, char **argv, int min, int max)
{
    int n = argc - optind;
    if (n < min)
        cli_usage(n ? "too few arguments" : "missing arguments");
    if (max >= 0 && n > max)
        cli_usage("unexpected argument '%s'", argv[optind + max]);
    return n;
}

long long cli_int(const char *opt, const char *arg, long long min, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 0);
    if (end == arg || *end || errno == ERANGE)
        cli_usage("%s: '%s' is not a whole number", opt, arg);
    if (v < min || v > max)
        cli_usage("%s: %s is outside %lld..%lld", opt, arg, min, max);
    return v;
}

double cli_double(const char *opt, const char *arg, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end || errno == ERANGE || isnan(v))
        cli_usage("%s: '%s' is not a number", opt, arg);
    if (v < min || v > max)
        cli_usage("%s: %s is outside %g..%g", opt, arg, min, max);
    return v;
}

int cli_fail(int err, const char *what)
{
    const char *detail = ndc_last_error();
    fprintf(stderr, "%s: %s: %s%s%s%s\n", prog_name, what, ndc_strerror(err),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

const char *cli_bytes(uint64_t b, char *buf, size_t n)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%" PRIu64 " B", b);
    else
        snprintf(buf, n, v >= 100 || v == (double)(uint64_t)v ? "%.0f %s" : "%.1f %s", v, unit[u]);
    return buf;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static int utf8_len(const unsigned char *s)
{
    int n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3
          : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 2 && s[0] < 0xc2)
        return 0;   /* overlong */
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* A JSON string: names and paths come from the system and may hold bytes
 * that are not UTF-8; those become U+FFFD so the output always parses. */
void cli_json_str(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    putchar('"');
    while (*s) {
        int n = utf8_len(s);
        if (n == 0) {
            fputs("\\ufffd", stdout);
            s++;
        } else if (*s == '"' || *s == '\\') {
            printf("\\%c", *s++);
        } else if (*s < 0x20) {
            printf("\\u%04x", *s++);
        } else {
            fwrite(s, 1, (size_t)n, stdout);
            s += n;
        }
    }
    putchar('"');
}
