/* ndchan-stat: the state of a live named channel.
 *
 *   ndchan-stat NAME [--watch SECONDS] [--json]
 *
 * Attaches receive-only (it never sends, and its mapping of the payloads is
 * read-only), reads ndc_stat, and says in words whether the consumer is idle
 * or the producer is held back. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ndchan.h"

static void print_text(const char *name, const struct ndc_stat *s)
{
    printf("%s: %u slots of %.1f MiB: %u free, %u ready, %u on loan; %u processes attached%s\n",
           name, s->slots, s->slot_bytes / 1048576.0, s->free, s->ready, s->loaned, s->attached,
           s->closed ? "; CLOSED (end of stream)" : "");
    printf("  sent %llu arrays (%.1f MiB), received %llu\n", (unsigned long long)s->sent,
           s->bytes_sent / 1048576.0, (unsigned long long)s->received);
    if (s->receivers_waiting)
        printf("  %u receiver(s) asleep on an empty channel: the consumer is idle\n", s->receivers_waiting);
    if (s->senders_waiting)
        printf("  %u sender(s) asleep on a full channel: backpressure, the consumer is behind\n",
               s->senders_waiting);
}

static void print_json(const char *name, const struct ndc_stat *s)
{
    printf("{\"name\":\"%s\",\"slots\":%u,\"free\":%u,\"ready\":%u,\"loaned\":%u,\"attached\":%u,"
           "\"receivers_waiting\":%u,\"senders_waiting\":%u,\"closed\":%u,\"sent\":%llu,"
           "\"received\":%llu,\"bytes_sent\":%llu,\"slot_bytes\":%llu}\n",
           name, s->slots, s->free, s->ready, s->loaned, s->attached, s->receivers_waiting,
           s->senders_waiting, s->closed, (unsigned long long)s->sent,
           (unsigned long long)s->received, (unsigned long long)s->bytes_sent,
           (unsigned long long)s->slot_bytes);
}

int main(int argc, char **argv)
{
    double watch = 0;
    int json = 0, o;
    static const struct option opts[] = {{"watch", required_argument, 0, 'w'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    while ((o = getopt_long(argc, argv, "w:jh", opts, NULL)) != -1) {
        if (o == 'w')
            watch = atof(optarg);
        else if (o == 'j')
            json = 1;
        else
            goto usage;
    }
    if (optind != argc - 1)
        goto usage;
    const char *name = argv[optind];
    ndc_chan *ch;
    int r = ndc_open(&ch, name, NDC_RDONLY);
    if (r) {
        fprintf(stderr, "ndchan-stat: %s: %s (%s)\n", name, ndc_strerror(r), ndc_last_error());
        return 1;
    }
    do {
        struct ndc_stat s;
        if ((r = ndc_stat(ch, &s))) {
            fprintf(stderr, "ndchan-stat: %s: %s\n", name, ndc_strerror(r));
            break;
        }
        s.attached -= s.attached > 0;   /* not counting ourselves */
        json ? print_json(name, &s) : print_text(name, &s);
        fflush(stdout);
        if (watch > 0)
            usleep((useconds_t)(watch * 1e6));
    } while (watch > 0);
    ndc_free(ch);
    return r ? 1 : 0;
usage:
    fputs("usage: ndchan-stat NAME [--watch SECONDS] [--json]\n", stderr);
    return 2;
}
