/* fd_pass: hand an anonymous channel to an unrelated process over a Unix
 * socket. An anonymous channel has no name in /dev/shm (nothing to clean up
 * if a process dies, nothing another user can open): the only way in is
 * its file descriptor, sent with SCM_RIGHTS and attached with ndc_open_fd.
 *
 *   ./fd_pass serve /tmp/ndchan.sock     # creates the channel, sends 10 arrays
 *   ./fd_pass receive /tmp/ndchan.sock   # another shell: gets the fd, receives
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

static int serve(const char *path)
{
    ndc_chan *ch;
    struct ndc_chan_opts o = { .slots = 4, .slot_bytes = 1 << 20 };
    int r = ndc_create(&ch, NULL, &o);
    if (r) {
        fprintf(stderr, "serve: %s\n", ndc_strerror(r));
        return 1;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1)) {
        perror(path);
        return 1;
    }
    int s = accept(ls, NULL, NULL);
    unlink(path);
    /* the descriptor travels as ancillary data beside one ordinary byte */
    char byte = 'c', ctl[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { &byte, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int fd = ndc_fd(ch);
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (s < 0 || sendmsg(s, &m, 0) != 1) {
        perror("sendmsg");
        return 1;
    }
    close(s);
    close(ls);
    for (int i = 0; i < 10 && r == 0; i++) {
        int64_t n = 1000;
        int32_t v[1000];
        for (int k = 0; k < 1000; k++)
            v[k] = i * 1000 + k;
        struct ndc_array a;
        ndc_array_init(&a, NDC_I32, 1, &n, v);
        r = ndc_send(ch, &a, NDC_FOREVER);
    }
    ndc_close(ch);
    ndc_free(ch);
    printf("serve: sent 10 arrays%s\n", r ? " (failed)" : "");
    return r ? 1 : 0;
}

static int receive(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    for (int tries = 0; connect(s, (struct sockaddr *)&sa, sizeof sa) != 0; tries++) {
        if ((errno != ENOENT && errno != ECONNREFUSED) || tries == 100) {
            perror(path);
            return 1;
        }
        nanosleep(&(struct timespec){ 0, 50 * 1000000 }, NULL);   /* the server is starting */
    }
    char byte, ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl };
    struct cmsghdr *c;
    int fd = -1;
    if (recvmsg(s, &m, MSG_CMSG_CLOEXEC) == 1 && (c = CMSG_FIRSTHDR(&m)) &&
        c->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
    close(s);
    ndc_chan *ch;
    int r = fd < 0 ? -EBADF : ndc_open_fd(&ch, fd, NDC_RDONLY);
    if (fd >= 0)
        close(fd);                                 /* ndc_open_fd keeps a duplicate */
    if (r) {
        fprintf(stderr, "receive: %s\n", ndc_strerror(r));
        return 1;
    }
    int n = 0;
    struct ndc_array a;
    while ((r = ndc_acquire(ch, &a, 5 * 1000000000ll)) == 0) {
        const int32_t *v = a.data;
        if (v[0] != n * 1000 || v[999] != n * 1000 + 999)
            r = -EBADMSG;
        ndc_release(ch, &a);
        if (r)
            break;
        n++;
    }
    ndc_free(ch);
    printf("receive: %d arrays through a descriptor passed over %s\n", n, path);
    return r == -EPIPE && n == 10 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "serve") && strcmp(argv[1], "receive"))) {
        fprintf(stderr, "usage: fd_pass serve|receive SOCKET_PATH\n");
        return 2;
    }
    return argv[1][0] == 's' ? serve(argv[2]) : receive(argv[2]);
}
