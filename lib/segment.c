/* Segments: creation (memfd or POSIX shm), sizing, sealing, huge pages,
 * population, and validated attachment. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "array.h"
#include "error.h"
#include "numa.h"
#include "segment.h"

#define PAGE       4096ull
#define HUGE_PAGE  (2ull << 20)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

int ndc__geometry(struct ndc__geometry *g, uint32_t nslots, uint64_t slot_bytes, uint32_t flags)
{
    if (nslots < 1 || nslots > NDC_MAX_SLOTS)
        return ndc__fail(-EINVAL, "slots %u outside 1..%u", nslots, NDC_MAX_SLOTS);
    if (slot_bytes > NDC_MAX_SLOT_BYTES)
        return ndc__fail(-EINVAL, "slot_bytes %llu above %llu", (unsigned long long)slot_bytes,
                         (unsigned long long)NDC_MAX_SLOT_BYTES);
    struct ndc__geometry v = {.nslots = nslots, .max_peers = NDC_MAX_PEERS, .flags = flags,
                              .slot_bytes = slot_bytes};
    v.align = (flags & NDC_HUGEPAGES) ? HUGE_PAGE : PAGE;
    /* A zero-byte slot still gets a page so every slot has its own address:
     * a loan is recognised by its data pointer. */
    v.slot_stride = round_up(slot_bytes ? slot_bytes : 1, v.align);
    v.peers_off = NDC__CELLS_OFF + (uint64_t)nslots * sizeof(struct ndc__cell);
    v.table_off = v.peers_off + (uint64_t)v.max_peers * sizeof(struct ndc__peer);
    v.payload_off = round_up(v.table_off + (uint64_t)nslots * sizeof(struct ndc__slot), v.align);
    v.total_size = v.payload_off + (uint64_t)nslots * v.slot_stride;   /* < 2^53: no overflow */
    *g = v;
    return 0;
}

int ndc__ctrl_validate(const struct ndc__ctrl *c, uint64_t file_size, struct ndc__geometry *out)
{
    if (atomic_load_explicit(&c->magic, memory_order_relaxed) != NDC__MAGIC)
        return ndc__fail(-EPROTO, "segment magic mismatch: not an ndchan channel");
    if (c->layout != NDC__LAYOUT)
        return ndc__fail(-EPROTO, "segment layout version %u, this library reads %u", c->layout,
                         NDC__LAYOUT);
    if (c->flags & ~(uint32_t)(NDC_POPULATE | NDC_HUGEPAGES | NDC_BROADCAST))
        return ndc__fail(-EBADMSG, "segment flags 0x%x unknown", c->flags);
    struct ndc__geometry g;
    if (ndc__geometry(&g, c->nslots, c->slot_bytes, c->flags))
        return ndc__fail(-EBADMSG, "segment geometry out of range (slots %u, slot_bytes %llu)",
                         c->nslots, (unsigned long long)c->slot_bytes);
    if (c->max_peers != g.max_peers || c->slot_stride != g.slot_stride ||
        c->peers_off != g.peers_off || c->table_off != g.table_off ||
        c->payload_off != g.payload_off || c->total_size != g.total_size)
        return ndc__fail(-EBADMSG, "segment offsets disagree with its slot count and size");
    if (c->numa_policy > NDC_NUMA_NEAR_RECEIVER)
        return ndc__fail(-EBADMSG, "segment NUMA policy %u unknown", c->numa_policy);
    g.numa_policy = c->numa_policy;
    if ((c->flags & NDC_BROADCAST) ? c->history >= c->nslots || c->slow_policy > NDC_SLOW_LATEST
                                   : c->history || c->slow_policy)
        return ndc__fail(-EBADMSG, "segment broadcast settings out of range (history %u, policy %u)",
                         c->history, c->slow_policy);
    g.history = c->history;
    g.slow_policy = c->slow_policy;
    if (g.total_size > file_size)
        return ndc__fail(-EBADMSG, "segment claims %llu bytes, the file has %llu",
                         (unsigned long long)g.total_size, (unsigned long long)file_size);
    *out = g;
    return 0;
}

int ndc__slot_validate(const struct ndc__slot *s, const struct ndc__geometry *g)
{
    size_t item = ndc_dtype_size((enum ndc_dtype)s->dtype);
    if (!item)
        return ndc__fail(-EBADMSG, "slot header: unknown dtype %u", s->dtype);
    if (s->ndim < 0 || s->ndim > NDC_MAX_DIMS)
        return ndc__fail(-EBADMSG, "slot header: ndim %d", s->ndim);
    uint64_t n;
    int r = ndc__shape_bytes(item, s->ndim, s->shape, 0, &n);
    if (r)
        return ndc__fail(-EBADMSG, "slot header: %s", r == -EOVERFLOW ? "shape larger than the slot"
                                                                      : "negative extent");
    if (n != s->nbytes || n > g->slot_bytes)
        return ndc__fail(-EBADMSG, "slot header: nbytes %llu, shape says %llu, slot holds %llu",
                         (unsigned long long)s->nbytes, (unsigned long long)n,
                         (unsigned long long)g->slot_bytes);
    return 0;
}

int ndc__segment_name(char *out, size_t cap, const char *name)
{
    if (!name)
        return ndc__fail(-EINVAL, "NULL channel name");
    const char *n = name[0] == '/' ? name + 1 : name;
    size_t len = strnlen(n, NDC_NAME_MAX);
    if (len == 0 || len + 1 > NDC_NAME_MAX || len + 2 > cap || strchr(n, '/') ||
        !strcmp(n, ".") || !strcmp(n, ".."))
        return ndc__fail(-EINVAL, "bad channel name \"%.*s\": want 1..%d characters, no '/'",
                         NDC_NAME_MAX, name, NDC_NAME_MAX - 1);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)n[i] < 0x20 || n[i] == 0x7f)
            return ndc__fail(-EINVAL, "bad channel name: control character 0x%02x at %zu",
                             (unsigned char)n[i], i);
    out[0] = '/';
    memcpy(out + 1, n, len + 1);
    return 0;
}

/* The first word of a sysfs/procfs file, or "" */
static void read_setting(const char *path, char *buf, size_t cap)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(buf, (int)cap, f))
        buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\n")] = 0;
}

/* Whether shmem may use transparent huge pages when asked (madvise). */
static int shmem_thp_allowed(char *why, size_t cap)
{
    char v[128];
    read_setting("/sys/kernel/mm/transparent_hugepage/shmem_enabled", v, sizeof v);
    snprintf(why, cap, "%s", v[0] ? v : "(missing)");
    return v[0] && !strstr(v, "[never]") && !strstr(v, "[deny]");
}

/* NDC_HUGEPAGES: an fd whose payload pages will be huge, or a clear error.
 * Anonymous channels try a hugetlb memfd first (needs reserved pages), then
 * shmem with transparent huge pages; named ones only the latter (hugetlb
 * needs a hugetlbfs mount, which /dev/shm is not). */
static int huge_fd(const char *name, uint64_t size, int placed, int *fd, int *is_thp)
{
    char nr[64], thp[128];
    read_setting("/proc/sys/vm/nr_hugepages", nr, sizeof nr);
    /* hugetlbfs keeps no shared memory policy: a NUMA placement would bind
     * only the creator's own mapping. With one, huge pages come from THP. */
    if (!name && !placed) {
        int f = memfd_create("ndchan", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
        if (f >= 0) {
            /* hugetlb reserves at mmap time; probe it now to fail early. */
            if (ftruncate(f, (off_t)size) == 0) {
                void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
                if (p != MAP_FAILED) {
                    munmap(p, size);
                    *fd = f;
                    *is_thp = 0;
                    return 0;
                }
            }
            close(f);
        }
    }
    if (shmem_thp_allowed(thp, sizeof thp)) {
        *is_thp = 1;
        return 1;   /* use an ordinary shmem fd and madvise */
    }
    if (placed)
        return ndc__fail(-ENOTSUP,
                         "NDC_HUGEPAGES with a NUMA policy needs shmem transparent huge pages "
                         "(hugetlb keeps no shared policy), and they are off: "
                         "/sys/kernel/mm/transparent_hugepage/shmem_enabled is \"%s\" "
                         "(write advise or always)", thp);
    return ndc__fail(-ENOMEM,
                     "NDC_HUGEPAGES: no huge pages to give: %svm.nr_hugepages is %s (need %llu "
                     "free 2 MiB pages: sysctl vm.nr_hugepages=N) and shmem transparent huge "
                     "pages are off (/sys/kernel/mm/transparent_hugepage/shmem_enabled is "
                     "\"%s\": write advise or always)",
                     name ? "named channels cannot use hugetlb; " : "", nr[0] ? nr : "unknown",
                     (unsigned long long)(size / HUGE_PAGE), thp);
}

static void init_ctrl(unsigned char *base, const struct ndc__geometry *g, const struct ndc_chan_opts *o)
{
    struct ndc__ctrl *c = (struct ndc__ctrl *)base;
    c->layout = NDC__LAYOUT;
    c->flags = o->flags;
    c->nslots = g->nslots;
    c->max_peers = g->max_peers;
    c->slot_bytes = g->slot_bytes;
    c->slot_stride = g->slot_stride;
    c->peers_off = g->peers_off;
    c->table_off = g->table_off;
    c->payload_off = g->payload_off;
    c->total_size = g->total_size;
    c->spin_ns = o->spin_ns;
    c->numa_policy = o->numa_policy;
    c->numa_node = o->numa_node;
    c->numa_nodeset = o->numa_nodeset;
    c->history = o->history;
    c->slow_policy = o->slow_policy;
    /* Every slot free, the ring empty: cell i waits for the commit at
     * position i. */
    struct ndc__slot *slots = (struct ndc__slot *)(base + g->table_off);
    struct ndc__cell *cells = (struct ndc__cell *)(base + NDC__CELLS_OFF);
    for (uint32_t i = 0; i < g->nslots; i++) {
        atomic_init(&slots[i].state, NDC__WORD(NDC__FREE, 0));
        atomic_init(&cells[i].seq, i);
    }
    /* Published last: an attacher that sees the magic sees all of the above
     * (pairs with the acquire load in segment_attach). */
    atomic_store_explicit(&c->magic, NDC__MAGIC, memory_order_release);
}

int ndc__segment_claim(const struct ndc__segment *s, uint64_t off, uint64_t len, const char *what)
{
    if (len == 0 || fallocate(s->fd, 0, (off_t)off, (off_t)len) == 0)
        return 0;
    int e = errno;
    if (e == EOPNOTSUPP)
        return 0;   /* a filesystem that cannot say: pages come at first touch, as before */
    struct statfs fs;
    char room[96] = "";
    if (fstatfs(s->fd, &fs) == 0)
        snprintf(room, sizeof room, " (%.1f MiB free of %.1f MiB)",
                 (double)fs.f_bavail * (double)fs.f_bsize / (1 << 20),
                 (double)fs.f_blocks * (double)fs.f_bsize / (1 << 20));
    int err = e == ENOSPC || e == ENOMEM || e == EDQUOT || e == EFBIG ? (e == ENOMEM ? -ENOMEM : -ENOSPC) : -e;
    return ndc__fail(err, "no memory for %s (%llu bytes) in %s%s: %s", what, (unsigned long long)len,
                     s->path[0] ? NDC__SHM_DIR : "an anonymous channel (shared memory)", room,
                     strerror(e));
}

/* NDC_POPULATE: the pages exist (claim), and are mapped here too. */
static int populate(const struct ndc__segment *s, unsigned char *base, uint64_t len)
{
    int r = ndc__segment_claim(s, 0, len, "NDC_POPULATE");
    if (r)
        return r;
    if (madvise(base, len, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL)
        return ndc__fail(errno == EFAULT ? -ENOMEM : -errno, "NDC_POPULATE: %s", strerror(errno));
    for (uint64_t off = 0; off < len; off += PAGE)   /* kernels before 5.14 */
        ((volatile unsigned char *)base)[off] = 0;
    return 0;
}

/* An unnamed file in the shm directory, to be linked to its name once
 * complete (publish). O_TMPFILE where the kernel has it; else a hidden
 * temporary name, removed at publish. */
static int unnamed_file(char *tmp, size_t cap)
{
    tmp[0] = 0;
    int fd = open(NDC__SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    for (int i = 0; i < 100; i++) {
        snprintf(tmp, cap, NDC__SHM_DIR "/.ndchan-new-%d-%d", (int)getpid(), i);
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

/* Give the complete file its name; fails with -EEXIST rather than replace. */
static int publish(int fd, const char *tmp, const char *path)
{
    int r;
    if (tmp[0]) {
        r = link(tmp, path);
        unlink(tmp);
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        r = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
        if (r != 0 && errno == ENOENT)   /* no /proc: needs CAP_DAC_READ_SEARCH */
            r = linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH);
    }
    if (r == 0)
        return 0;
    if (errno == EEXIST)
        return ndc__fail(-EEXIST, "channel \"%s\" exists (%s)", path + sizeof NDC__SHM_DIR,
                         path);
    return ndc__fail(-errno, "naming the channel %s: %s", path, strerror(errno));
}

int ndc__segment_create(struct ndc__segment *s, const char *name, const struct ndc_chan_opts *o)
{
    struct ndc__geometry g;
    int r = ndc__geometry(&g, o->slots, o->slot_bytes, o->flags);
    if (r)
        return r;
    g.numa_policy = o->numa_policy;
    g.history = o->history;
    g.slow_policy = o->slow_policy;
    int fd = -1, thp = 0, huge = 0;
    if (o->flags & NDC_HUGEPAGES) {
        r = huge_fd(name, g.total_size, o->numa_policy != NDC_NUMA_FIRST_TOUCH, &fd, &thp);
        if (r < 0)
            return r;
        huge = r == 0;
    }
    char path[sizeof s->path] = "", tmp[sizeof s->path + 32] = "";
    if (name) {
        snprintf(path, sizeof path, NDC__SHM_DIR "%s", name);
        /* early and cheap; the link at the end is what decides */
        if (access(path, F_OK) == 0)
            return ndc__fail(-EEXIST, "channel \"%s\" exists (%s)", name + 1, path);
    }
    if (!huge) {
        fd = name ? unnamed_file(tmp, sizeof tmp)
                  : memfd_create("ndchan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
            return ndc__fail(-errno, "%s: %s", name ? "creating a file in " NDC__SHM_DIR : "memfd_create",
                             strerror(errno));
        /* exactly the mode asked for: umask plays no part */
        if (name && fchmod(fd, o->mode ? o->mode : 0600) != 0) {
            r = ndc__fail(-errno, "fchmod 0%o: %s", o->mode ? o->mode : 0600, strerror(errno));
            goto fail;
        }
        if (ftruncate(fd, (off_t)g.total_size) != 0) {
            r = ndc__fail(-errno, "ftruncate to %llu bytes: %s",
                          (unsigned long long)g.total_size, strerror(errno));
            goto fail;
        }
    }
    /* Sealed, no peer can shrink the file under another's mapping (which
     * would turn its next access into SIGBUS) or grow it. */
    if (!name && fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
        r = ndc__fail(-errno, "sealing the memfd: %s", strerror(errno));
        goto fail;
    }
    s->fd = fd;
    s->g = g;
    memcpy(s->path, path, sizeof path);
    /* the control area is written below: its pages must exist first */
    if ((r = ndc__segment_claim(s, 0, g.payload_off, "the control block")))
        goto fail;
    unsigned char *base = mmap(NULL, g.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        r = ndc__fail(-errno, "mmap of %llu bytes: %s", (unsigned long long)g.total_size,
                      strerror(errno));
        goto fail;
    }
    unsigned char *payload = base + g.payload_off;
    uint64_t payload_len = g.total_size - g.payload_off;
    if (thp && madvise(payload, payload_len, MADV_HUGEPAGE) != 0) {
        r = ndc__fail(-errno, "NDC_HUGEPAGES: madvise(MADV_HUGEPAGE): %s", strerror(errno));
        goto unmap;
    }
    r = ndc__numa_place(payload, payload_len, o);
    if (r)
        goto unmap;
    if ((o->flags & NDC_POPULATE) && (r = populate(s, base, g.total_size)))
        goto unmap;
    init_ctrl(base, &g, o);
    if (name && (r = publish(fd, tmp, path)))
        goto unmap;
    s->base = base;
    return 0;
unmap:
    munmap(base, g.total_size);
fail:
    if (tmp[0])
        unlink(tmp);
    close(fd);
    s->fd = -1;
    return r;
}

int ndc__segment_attach(struct ndc__segment *s, int fd, uint32_t flags)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return ndc__fail(-errno, "fstat: %s", strerror(errno));
    if ((uint64_t)st.st_size < sizeof(struct ndc__ctrl))
        return ndc__fail(-EPROTO, "segment of %lld bytes is too small to be a channel",
                         (long long)st.st_size);
    /* Copy the control block out and validate the copy: a peer may change
     * the segment at any moment, so only the copy's values are used. */
    void *head = mmap(NULL, sizeof(struct ndc__ctrl), PROT_READ, MAP_SHARED, fd, 0);
    if (head == MAP_FAILED)
        return ndc__fail(-errno, "mmap: %s", strerror(errno));
    struct ndc__ctrl copy;
    /* pairs with the release store of magic in init_ctrl */
    uint64_t magic = atomic_load_explicit(&((struct ndc__ctrl *)head)->magic, memory_order_acquire);
    memcpy(&copy, head, sizeof copy);
    atomic_store_explicit(&copy.magic, magic, memory_order_relaxed);
    munmap(head, sizeof(struct ndc__ctrl));
    struct ndc__geometry g;
    int r = ndc__ctrl_validate(&copy, (uint64_t)st.st_size, &g);
    if (r)
        return r;
    /* A receive-only attachment maps the payloads read-only: one mapping,
     * read-only, with the control part made writable again. */
    int prot = (flags & NDC_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
    unsigned char *base = mmap(NULL, g.total_size, prot, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return ndc__fail(-errno, "mmap of %llu bytes: %s", (unsigned long long)g.total_size,
                         strerror(errno));
    if ((flags & NDC_RDONLY) && mprotect(base, g.payload_off, PROT_READ | PROT_WRITE) != 0) {
        r = ndc__fail(-errno, "mprotect: %s", strerror(errno));
        munmap(base, g.total_size);
        return r;
    }
    s->fd = fd;
    s->base = base;
    s->g = g;
    return 0;
}

void ndc__segment_unmap(struct ndc__segment *s)
{
    if (s->base)
        munmap(s->base, s->g.total_size);
    s->base = NULL;
}
