/* ndchan._ndchan: the C library as a CPython extension (limited API 3.11).
 *
 * Two types. _Channel owns one ndc_chan handle. _Loan is one slot lent to
 * Python (reserved for writing or acquired for reading); it exports the
 * slot through the buffer protocol, so numpy views it without a copy.
 *
 * Lifetime, the rule everything here keeps: a slot is handed back to the
 * library (ndc_release, or ndc_cancel for a reservation never committed)
 * only in _Loan's deallocator, that is when nothing in Python refers to the
 * loan any more. Every view of a slot refers to its loan: a memoryview holds
 * it in its Py_buffer, an ndarray holds that memoryview (or the loan itself,
 * np.frombuffer) as its base, and views of views keep their base. So no
 * Python code can read a slot after it was given back, however long a view
 * lives (lists, slices, other threads, cycles the collector breaks later).
 * Each loan holds its channel, and a channel counts its live loans and the
 * calls blocked in it: detach() frees the handle (ndc_free unmaps the
 * segment) only when both are zero, deferring otherwise.
 *
 * Waiting: every blocking call waits in slices of SLICE_NS with the GIL
 * released, and between slices runs Python's signal handlers, so Ctrl-C
 * raises KeyboardInterrupt within a slice (at once when the signal
 * interrupts the kernel wait: the library returns -EINTR). A wait the
 * library timed out has no effect, so the next slice simply retries.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

#define SLICE_NS 50000000LL                /* 50 ms: Ctrl-C well within 100 ms */
#define NOGIL_COPY_BYTES (64 * 1024)       /* copies at least this big release the GIL */

static PyObject *EndOfStream, *ChannelClosed, *PeerDead, *TooManyLoans;
static PyTypeObject *ChanType, *LoanType;

/* ---- errors --------------------------------------------------------------- */

/* Raise the exception for ndc return value r (negative errno). `sending`
 * picks ChannelClosed over EndOfStream for -EPIPE. The library's detail text
 * is read here, before any other ndc_ call on this thread replaces it. */
static PyObject *raise_ndc(int r, int sending)
{
    const char *detail = ndc_last_error();
    PyObject *msg = detail && detail[0]
        ? PyUnicode_FromFormat("%s: %s", ndc_strerror(r), detail)
        : PyUnicode_FromString(ndc_strerror(r));
    if (!msg)
        return NULL;
    PyObject *type = PyExc_OSError;
    if (r == -EPIPE)
        type = sending ? ChannelClosed : EndOfStream;
    else if (r == -EOWNERDEAD)
        type = PeerDead;
    else if (r == -ENOBUFS)
        type = TooManyLoans;
    PyObject *exc = type == EndOfStream ? PyObject_CallFunctionObjArgs(type, msg, NULL)
                                        : PyObject_CallFunction(type, "iO", -r, msg);
    Py_DECREF(msg);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* Python seconds (None = forever) -> nanoseconds; -2 with an exception set. */
static int64_t timeout_ns(PyObject *t)
{
    if (!t || t == Py_None)
        return NDC_FOREVER;
    double s = PyFloat_AsDouble(t);
    if (s == -1.0 && PyErr_Occurred())
        return -2;
    if (!(s >= 0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be None or a number >= 0");
        return -2;
    }
    if (s > 9.2e9)                 /* beyond int64 ns: as good as forever */
        return NDC_FOREVER;
    return (int64_t)(s * 1e9);
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* ---- the channel object ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    ndc_chan *ch;        /* NULL once freed */
    PyObject *name;      /* str, or None for an anonymous channel */
    uint32_t  flags;     /* NDC_RDONLY or 0 */
    int       busy;      /* calls using ch with the GIL released */
    int       nloans;    /* live _Loan objects */
    int       detaching; /* detach() asked; free when busy and nloans reach 0 */
} ChanObject;

static void chan_maybe_free(ChanObject *self)
{
    if (self->detaching && self->ch && !self->busy && !self->nloans) {
        ndc_chan *ch = self->ch;
        self->ch = NULL;
        ndc_free(ch);
    }
}

/* The handle for a new call, or NULL with ValueError set. */
static ndc_chan *chan_get(ChanObject *self)
{
    if (!self->ch || self->detaching) {
        PyErr_SetString(PyExc_ValueError, "the channel is detached");
        return NULL;
    }
    return self->ch;
}

#define WAIT_PYERR INT_MIN   /* wait_sliced: a Python exception is set */

typedef int (*wait_fn)(void *ctx, int64_t slice_ns);

/* A call that uses the handle with the GIL released, or after such a wait,
 * brackets that use with busy_enter/busy_leave, so detach() cannot free the
 * handle under it. busy_leave comes last: after the exception for a failure
 * is made (ndc_free would replace this thread's ndc_last_error). */
static void busy_enter(ChanObject *self) { self->busy++; }
static void busy_leave(ChanObject *self)
{
    self->busy--;
    chan_maybe_free(self);
}

/* Run fn with the GIL released in slices until it returns something other
 * than a timeout, the caller's timeout passes, or a signal handler raises.
 * Returns fn's result (-ETIMEDOUT / -EAGAIN when the time is up) or
 * WAIT_PYERR. `self` (NULL: no channel yet) must be busy_enter'ed. */
static int wait_sliced(ChanObject *self, wait_fn fn, void *ctx, int64_t timeout)
{
    int64_t deadline = timeout > 0 ? now_ns() + timeout : 0;
    int r;
    for (;;) {
        int64_t slice = timeout;
        if (timeout < 0)
            slice = SLICE_NS;
        else if (timeout > 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                r = -ETIMEDOUT;
                break;
            }
            slice = left < SLICE_NS ? left : SLICE_NS;
        }
        Py_BEGIN_ALLOW_THREADS
        r = fn(ctx, slice);
        Py_END_ALLOW_THREADS
        if (timeout == 0 || (r != -ETIMEDOUT && r != -EINTR && r != -EAGAIN))
            break;
        if (PyErr_CheckSignals()) {
            r = WAIT_PYERR;
            break;
        }
        if (self && self->detaching) {
            PyErr_SetString(PyExc_ValueError, "the channel was detached while waiting");
            r = WAIT_PYERR;
            break;
        }
    }
    return r;
}

/* ---- dtypes and buffers ------------------------------------------------------ */

/* Buffer-protocol format of each dtype as exported (native order). bfloat16
 * has no PEP 3118 code: its slots are exported as uint16 and the Python layer
 * views them as ml_dtypes.bfloat16. */
static const char *dtype_format(enum ndc_dtype t)
{
    switch (t) {
    case NDC_BOOL: return "?";
    case NDC_I8: return "b";
    case NDC_I16: return "h";
    case NDC_I32: return "i";
    case NDC_I64: return sizeof(long) == 8 ? "l" : "q";
    case NDC_U8: return "B";
    case NDC_U16: return "H";
    case NDC_U32: return "I";
    case NDC_U64: return sizeof(long) == 8 ? "L" : "Q";
    case NDC_F16: return "e";
    case NDC_BF16: return "H";
    case NDC_F32: return "f";
    case NDC_F64: return "d";
    case NDC_C64: return "Zf";
    case NDC_C128: return "Zd";
    }
    return NULL;
}

/* The dtype of a buffer format string, or 0 with TypeError set. */
static enum ndc_dtype format_dtype(const char *f, Py_ssize_t itemsize)
{
    const char *f0 = f;
    if (!f)
        return NDC_U8;                    /* no format means unsigned bytes */
    int native = 1;
    if (*f == '@' || *f == '=')
        f++;
    else if (*f == '<' || *f == '>' || *f == '!') {
        const union { uint16_t u; uint8_t b[2]; } probe = { .u = 1 };
        native = (*f == '<') == (probe.b[0] == 1);
        f++;
    }
    int cplx = 0;
    if (*f == 'Z')
        cplx = 1, f++;
    enum ndc_dtype t = 0;
    if (f[0] && !f[1]) {
        switch (f[0]) {
        case '?': t = NDC_BOOL; break;
        case 'b': case 'h': case 'i': case 'l': case 'q': case 'n':
            t = itemsize == 1 ? NDC_I8 : itemsize == 2 ? NDC_I16 : itemsize == 4 ? NDC_I32
              : itemsize == 8 ? NDC_I64 : 0;
            break;
        case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N':
            t = itemsize == 1 ? NDC_U8 : itemsize == 2 ? NDC_U16 : itemsize == 4 ? NDC_U32
              : itemsize == 8 ? NDC_U64 : 0;
            break;
        case 'e': t = NDC_F16; break;
        case 'f': t = NDC_F32; break;
        case 'd': t = NDC_F64; break;
        }
        if (cplx)
            t = t == NDC_F32 ? NDC_C64 : t == NDC_F64 ? NDC_C128 : 0;
    }
    if (!t || ndc_dtype_size(t) != (size_t)itemsize) {
        PyErr_Format(PyExc_TypeError, "buffer format '%s' is not an ndchan dtype "
                     "(bool, int/uint 8-64, float16/32/64, bfloat16, complex64/128)", f0);
        return 0;
    }
    if (!native && itemsize > 1) {
        PyErr_Format(PyExc_TypeError, "buffer format '%s' is not in this machine's byte order", f0);
        return 0;
    }
    return t;
}

/* Fill `a` from an exported buffer (any strides). 0, or -1 with an exception. */
static int array_from_buffer(struct ndc_array *a, const Py_buffer *v, int dtype, uint64_t tag)
{
    memset(a, 0, sizeof *a);
    if (v->ndim > NDC_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%d dimensions: ndchan takes at most %d", v->ndim, NDC_MAX_DIMS);
        return -1;
    }
    if (dtype > 0) {
        if (dtype > NDC_DTYPE_LAST || ndc_dtype_size(dtype) != (size_t)v->itemsize) {
            PyErr_SetString(PyExc_TypeError, "dtype does not match the buffer's item size");
            return -1;
        }
        a->dtype = dtype;
    } else if (!(a->dtype = format_dtype(v->format, v->itemsize)))
        return -1;
    a->data = v->buf;
    a->ndim = v->ndim;
    a->tag = tag;
    if (v->ndim == 0)
        return 0;
    if (!v->shape) {                      /* a flat run of bytes */
        a->ndim = 1;
        a->shape[0] = v->len / v->itemsize;
        a->strides[0] = v->itemsize;
        return 0;
    }
    int64_t st = v->itemsize;
    for (int i = v->ndim - 1; i >= 0; i--) {
        a->shape[i] = v->shape[i];
        a->strides[i] = v->strides ? v->strides[i] : st;
        st *= v->shape[i];
    }
    return 0;
}

static PyObject *shape_tuple(const struct ndc_array *a)
{
    PyObject *t = PyTuple_New(a->ndim);
    for (int i = 0; t && i < a->ndim; i++) {
        PyObject *n = PyLong_FromLongLong(a->shape[i]);
        if (!n || PyTuple_SetItem(t, i, n)) {
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/* ---- loans ----------------------------------------------------------------------- */

enum { LOAN_HELD, LOAN_COMMITTED };

typedef struct {
    PyObject_HEAD
    ChanObject *chan;
    struct ndc_array a;
    int       writable;   /* a reservation (else an acquired array) */
    int       state;
    int       exports;    /* buffers exported now (informational: lifetime is the refcount) */
    pid_t     pid;        /* a loan seen in a forked child is the parent's: never touched */
    Py_ssize_t shape[NDC_MAX_DIMS], strides[NDC_MAX_DIMS];
} LoanObject;

static PyObject *loan_new(ChanObject *chan, const struct ndc_array *a, int writable)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot(LoanType, Py_tp_alloc);
    LoanObject *l = (LoanObject *)alloc(LoanType, 0);
    if (!l)
        return NULL;
    Py_INCREF((PyObject *)chan);
    l->chan = chan;
    l->a = *a;
    l->writable = writable;
    l->state = LOAN_HELD;
    l->pid = getpid();
    for (int i = 0; i < a->ndim; i++) {
        l->shape[i] = (Py_ssize_t)a->shape[i];
        l->strides[i] = (Py_ssize_t)a->strides[i];
    }
    chan->nloans++;
    return (PyObject *)l;
}

/* The slot goes back here and only here: nothing refers to the loan any more. */
static void loan_dealloc(LoanObject *self)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)self);
    ChanObject *chan = self->chan;
    if (chan) {
        if (self->state == LOAN_HELD && self->pid == getpid() && chan->ch) {
            /* Neither waits for a peer. An
             * error here (the process forked after the loan) leaves nothing to do. */
            if (self->writable)
                ndc_cancel(chan->ch, &self->a);
            else
                ndc_release(chan->ch, &self->a);
        }
        chan->nloans--;
        chan_maybe_free(chan);
        Py_DECREF(chan);
    }
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

static int loan_getbuffer(LoanObject *self, Py_buffer *v, int flags)
{
    if (self->state != LOAN_HELD) {
        PyErr_SetString(PyExc_BufferError, "the array was committed: it belongs to the receivers now");
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && !self->writable) {
        PyErr_SetString(PyExc_BufferError, "an acquired array is read-only");
        return -1;
    }
    size_t nbytes = ndc_array_nbytes(&self->a);
    int ndim = self->a.ndim;
    if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS) {
        int big = 0;
        for (int i = 0; i < ndim; i++)
            big += self->a.shape[i] > 1;
        if (big > 1) {
            PyErr_SetString(PyExc_BufferError, "a slot is C-ordered, not Fortran-ordered");
            return -1;
        }
    }
    v->obj = Py_NewRef((PyObject *)self);
    v->buf = self->a.data;
    v->len = (Py_ssize_t)nbytes;
    v->readonly = !self->writable;
    v->itemsize = (Py_ssize_t)ndc_dtype_size(self->a.dtype);
    v->format = (flags & PyBUF_FORMAT) ? (char *)dtype_format(self->a.dtype) : NULL;
    v->ndim = ndim;
    v->shape = (flags & PyBUF_ND) == PyBUF_ND ? self->shape : NULL;
    v->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? self->strides : NULL;
    v->suboffsets = NULL;
    v->internal = NULL;
    self->exports++;
    return 0;
}

static void loan_releasebuffer(LoanObject *self, Py_buffer *v)
{
    self->exports--;
}

static PyObject *loan_commit(LoanObject *self, PyObject *unused)
{
    if (!self->writable) {
        PyErr_SetString(PyExc_TypeError, "only a reservation is committed");
        return NULL;
    }
    if (self->state != LOAN_HELD) {
        PyErr_SetString(PyExc_ValueError, "already committed");
        return NULL;
    }
    ndc_chan *ch = self->chan->ch;
    if (!ch) {
        PyErr_SetString(PyExc_ValueError, "the channel is detached");
        return NULL;
    }
    int r = ndc_commit(ch, &self->a);
    if (r == -EPIPE)
        self->state = LOAN_COMMITTED;    /* the library discarded the slot */
    if (r)
        return raise_ndc(r, 1);
    self->state = LOAN_COMMITTED;
    Py_RETURN_NONE;
}

static PyObject *loan_get_dtype(LoanObject *self, void *c) { return PyLong_FromLong(self->a.dtype); }
static PyObject *loan_get_shape(LoanObject *self, void *c) { return shape_tuple(&self->a); }
static PyObject *loan_get_tag(LoanObject *self, void *c) { return PyLong_FromUnsignedLongLong(self->a.tag); }
static PyObject *loan_get_seq(LoanObject *self, void *c) { return PyLong_FromUnsignedLongLong(self->a.seq); }
static PyObject *loan_get_exports(LoanObject *self, void *c) { return PyLong_FromLong(self->exports); }
static PyObject *loan_get_writable(LoanObject *self, void *c) { return PyBool_FromLong(self->writable); }
static PyObject *loan_get_committed(LoanObject *self, void *c)
{
    return PyBool_FromLong(self->state == LOAN_COMMITTED);
}

static PyGetSetDef loan_getset[] = {
    {"dtype", (getter)loan_get_dtype, NULL, "ndchan dtype code", NULL},
    {"shape", (getter)loan_get_shape, NULL, "shape tuple", NULL},
    {"tag", (getter)loan_get_tag, NULL, "the sender's tag", NULL},
    {"seq", (getter)loan_get_seq, NULL, "send order (acquired arrays)", NULL},
    {"exports", (getter)loan_get_exports, NULL, "buffers exported now", NULL},
    {"writable", (getter)loan_get_writable, NULL, "a reservation", NULL},
    {"committed", (getter)loan_get_committed, NULL, "committed (reservations)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef loan_methods[] = {
    {"commit", (PyCFunction)loan_commit, METH_NOARGS,
     "Publish the reserved array (views of it must no longer be used)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot loan_slots[] = {
    {Py_tp_dealloc, loan_dealloc},
    {Py_tp_getset, loan_getset},
    {Py_tp_methods, loan_methods},
    {Py_bf_getbuffer, loan_getbuffer},
    {Py_bf_releasebuffer, loan_releasebuffer},
    {Py_tp_doc, "One slot lent to Python. It exports the slot as a buffer; the slot goes "
                "back to the channel when the last reference to the loan (every view) is gone."},
    {0, NULL},
};

static PyType_Spec loan_spec = {
    "ndchan._ndchan._Loan", sizeof(LoanObject), 0, Py_TPFLAGS_DEFAULT, loan_slots,
};

/* ---- channel: construction ------------------------------------------------------ */

static PyObject *chan_wrap(PyTypeObject *cls, ndc_chan *ch, PyObject *name, uint32_t flags)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot(cls, Py_tp_alloc);
    ChanObject *self = (ChanObject *)alloc(cls, 0);
    if (!self) {
        ndc_free(ch);
        return NULL;
    }
    self->ch = ch;
    self->name = Py_NewRef(name ? name : Py_None);
    self->flags = flags;
    return (PyObject *)self;
}

static PyObject *chan_create(PyObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"name", "slots", "slot_bytes", "flags", "spin_ns", "mode",
                          "numa_policy", "numa_node", "numa_nodeset", "history", "slow_policy", NULL};
    PyObject *name = Py_None;
    unsigned int slots = 0, flags = 0, mode = 0, numa_policy = 0, history = 0, slow_policy = 0;
    unsigned long long slot_bytes = 0, nodeset = 0;
    long long spin = 0;
    int node = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OIKILIIiKII", kwl, &name, &slots, &slot_bytes, &flags,
                                     &spin, &mode, &numa_policy, &node, &nodeset, &history, &slow_policy))
        return NULL;
    const char *cname = NULL;
    if (name != Py_None && !(cname = PyUnicode_AsUTF8AndSize(name, NULL)))
        return NULL;
    struct ndc_chan_opts o = {.slots = slots, .slot_bytes = slot_bytes, .flags = flags, .spin_ns = spin,
                              .mode = mode, .numa_policy = numa_policy, .numa_node = node,
                              .numa_nodeset = nodeset, .history = history,
                              .slow_policy = slow_policy};
    ndc_chan *ch = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ndc_create(&ch, cname, &o);
    Py_END_ALLOW_THREADS
    if (r)
        return raise_ndc(r, 0);
    return chan_wrap((PyTypeObject *)cls, ch, name == Py_None ? NULL : name, 0);
}

struct open_ctx { ndc_chan *ch; const char *name; uint32_t flags; };
static int open_fn(void *c, int64_t t)
{
    struct open_ctx *o = c;
    return ndc_open_wait(&o->ch, o->name, o->flags, t);
}

static PyObject *chan_open(PyObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"name", "flags", "timeout", NULL};
    PyObject *name, *tmo = NULL;
    unsigned int flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|IO", kwl, &name, &flags, &tmo))
        return NULL;
    int64_t t = tmo ? timeout_ns(tmo) : 0;
    if (t == -2)
        return NULL;
    struct open_ctx o = {.name = PyUnicode_AsUTF8AndSize(name, NULL), .flags = flags};
    if (!o.name)
        return NULL;
    int r = wait_sliced(NULL, open_fn, &o, t);
    if (r == WAIT_PYERR)
        return NULL;
    if (r)
        return raise_ndc(r, 0);
    return chan_wrap((PyTypeObject *)cls, o.ch, name, flags);
}

static PyObject *chan_open_fd(PyObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"fd", "flags", NULL};
    int fd;
    unsigned int flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|I", kwl, &fd, &flags))
        return NULL;
    ndc_chan *ch = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ndc_open_fd(&ch, fd, flags);
    Py_END_ALLOW_THREADS
    if (r)
        return raise_ndc(r, 0);
    return chan_wrap((PyTypeObject *)cls, ch, NULL, flags);
}

static void chan_dealloc(ChanObject *self)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)self);
    /* loans and calls hold references: none is left */
    if (self->ch)
        ndc_free(self->ch);
    self->ch = NULL;
    Py_CLEAR(self->name);
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

/* ---- channel: copies ------------------------------------------------------------------ */

struct send_ctx { ndc_chan *ch; struct ndc_array a; };
static int send_fn(void *c, int64_t t)
{
    struct send_ctx *s = c;
    /* strides come from a real buffer: all-zero ones are a deliberate broadcast */
    return ndc_send_flags(s->ch, &s->a, t, NDC_SEND_BROADCAST);
}

static PyObject *chan_send(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"array", "dtype", "tag", "timeout", NULL};
    PyObject *obj, *tmo = NULL;
    int dtype = 0;
    unsigned long long tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|iKO", kwl, &obj, &dtype, &tag, &tmo))
        return NULL;
    int64_t t = timeout_ns(tmo);
    if (t == -2)
        return NULL;
    struct send_ctx s;
    if (!(s.ch = chan_get(self)))
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_RECORDS_RO))
        return NULL;
    busy_enter(self);
    int r = array_from_buffer(&s.a, &v, dtype, tag) ? WAIT_PYERR : wait_sliced(self, send_fn, &s, t);
    PyBuffer_Release(&v);
    PyObject *ret = r == WAIT_PYERR ? NULL : r ? raise_ndc(r, 1) : Py_NewRef(Py_None);
    busy_leave(self);
    return ret;
}

struct take_ctx { ndc_chan *ch; struct ndc_array a; size_t cap; };
static int acquire_fn(void *c, int64_t t)
{
    struct take_ctx *k = c;
    return ndc_acquire(k->ch, &k->a, t);
}
static int recv_fn(void *c, int64_t t)
{
    struct take_ctx *k = c;
    return ndc_recv(k->ch, &k->a, k->cap, t);
}

/* The start of a call whose only argument is `timeout`: its value in ns
 * and the channel, marked busy (busy_leave ends it). \return 0, or -1
 * with a Python error set. */
static int begin_timed(ChanObject *self, PyObject *args, PyObject *kw, int64_t *t, ndc_chan **ch)
{
    static char *kwl[] = {"timeout", NULL};
    PyObject *tmo = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwl, &tmo))
        return -1;
    if ((*t = timeout_ns(tmo)) == -2 || !(*ch = chan_get(self)))
        return -1;
    busy_enter(self);
    return 0;
}

/* recv -> (bytearray, dtype, shape, tag, seq): the array copied out of its
 * slot into a new buffer that the Python layer views as an ndarray. */
static PyObject *chan_recv(ChanObject *self, PyObject *args, PyObject *kw)
{
    int64_t t;
    struct take_ctx k;
    if (begin_timed(self, args, kw, &t, &k.ch))
        return NULL;
    int r = wait_sliced(self, acquire_fn, &k, t);
    if (r) {
        PyObject *ret = r == WAIT_PYERR ? NULL : raise_ndc(r, 0);
        busy_leave(self);
        return ret;
    }
    size_t n = ndc_array_nbytes(&k.a);
    PyObject *buf = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (buf) {
        char *dst = PyByteArray_AsString(buf);
        if (n >= NOGIL_COPY_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            memcpy(dst, k.a.data, n);
            Py_END_ALLOW_THREADS
        } else if (n)
            memcpy(dst, k.a.data, n);
    }
    ndc_release(k.ch, &k.a);
    busy_leave(self);
    if (!buf)
        return NULL;
    PyObject *shape = shape_tuple(&k.a);
    if (!shape) {
        Py_DECREF(buf);
        return NULL;
    }
    return Py_BuildValue("(NiNKK)", buf, (int)k.a.dtype, shape, (unsigned long long)k.a.tag,
                         (unsigned long long)k.a.seq);
}

/* recv_into(buffer) -> (dtype, shape, tag, seq): ndc_recv into a writable
 * C-contiguous buffer. Too small: OSError(EMSGSIZE), and the array waits for
 * this handle's next receive. */
static PyObject *chan_recv_into(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"buffer", "timeout", NULL};
    PyObject *obj, *tmo = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", kwl, &obj, &tmo))
        return NULL;
    int64_t t = timeout_ns(tmo);
    if (t == -2)
        return NULL;
    struct take_ctx k;
    if (!(k.ch = chan_get(self)))
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_CONTIG))
        return NULL;
    memset(&k.a, 0, sizeof k.a);
    k.a.data = v.buf;
    k.cap = (size_t)v.len;
    busy_enter(self);
    int r = wait_sliced(self, recv_fn, &k, t);
    PyBuffer_Release(&v);
    if (r && r != -EMSGSIZE) {
        PyObject *ret = r == WAIT_PYERR ? NULL : raise_ndc(r, 0);
        busy_leave(self);
        return ret;
    }
    busy_leave(self);
    if (r == -EMSGSIZE) {
        PyObject *e = PyObject_CallFunction(PyExc_OSError, "iN", EMSGSIZE, PyUnicode_FromFormat(
            "the array needs %zu bytes, the buffer has %zd (it waits for the next receive)",
            ndc_array_nbytes(&k.a), v.len));
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return NULL;
    }
    PyObject *shape = shape_tuple(&k.a);
    if (!shape)
        return NULL;
    return Py_BuildValue("(iNKK)", (int)k.a.dtype, shape, (unsigned long long)k.a.tag,
                         (unsigned long long)k.a.seq);
}

/* ---- channel: loans ------------------------------------------------------------------ */

struct reserve_ctx { ndc_chan *ch; struct ndc_array a; };
static int reserve_fn(void *c, int64_t t)
{
    struct reserve_ctx *s = c;
    return ndc_reserve(s->ch, &s->a, t);
}

static PyObject *chan_reserve(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"dtype", "shape", "tag", "timeout", NULL};
    int dtype;
    PyObject *shape, *tmo = NULL;
    unsigned long long tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|KO", kwl, &dtype, &shape, &tag, &tmo))
        return NULL;
    int64_t t = timeout_ns(tmo);
    if (t == -2)
        return NULL;
    struct reserve_ctx s;
    memset(&s, 0, sizeof s);
    if (!(s.ch = chan_get(self)))
        return NULL;
    PyObject *seq = PySequence_Tuple(shape);
    if (!seq)
        return NULL;
    Py_ssize_t nd = PyTuple_Size(seq);
    if (nd > NDC_MAX_DIMS) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "%zd dimensions: ndchan takes at most %d", nd, NDC_MAX_DIMS);
    }
    for (Py_ssize_t i = 0; i < nd; i++) {
        long long e = PyLong_AsLongLong(PyTuple_GetItem(seq, i));
        if (e == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        if (e < 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "negative dimensions are not allowed");
            return NULL;
        }
        s.a.shape[i] = e;
    }
    Py_DECREF(seq);
    s.a.dtype = dtype;
    s.a.ndim = (int)nd;
    s.a.tag = tag;
    busy_enter(self);
    int r = wait_sliced(self, reserve_fn, &s, t);
    PyObject *l = r == WAIT_PYERR ? NULL : r ? raise_ndc(r, 1) : loan_new(self, &s.a, 1);
    if (!r && !l)
        ndc_cancel(s.ch, &s.a);
    busy_leave(self);
    return l;
}

static PyObject *chan_acquire(ChanObject *self, PyObject *args, PyObject *kw)
{
    int64_t t;
    struct take_ctx k;
    if (begin_timed(self, args, kw, &t, &k.ch))
        return NULL;
    int r = wait_sliced(self, acquire_fn, &k, t);
    PyObject *l = r == WAIT_PYERR ? NULL : r ? raise_ndc(r, 0) : loan_new(self, &k.a, 0);
    if (!r && !l)
        ndc_release(k.ch, &k.a);
    busy_leave(self);
    return l;
}

/* ---- channel: state --------------------------------------------------------------- */

struct drain_ctx { ndc_chan *ch; uint32_t flags; };
static int drain_fn(void *c, int64_t t)
{
    struct drain_ctx *d = c;
    return ndc_wait_drained(d->ch, d->flags, t);
}

static PyObject *chan_wait_drained(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"timeout", "closed", NULL};
    PyObject *tmo = NULL;
    int closed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op", kwl, &tmo, &closed))
        return NULL;
    int64_t t = timeout_ns(tmo);
    if (t == -2)
        return NULL;
    struct drain_ctx d = {.flags = closed ? NDC_DRAIN_CLOSED : 0};
    if (!(d.ch = chan_get(self)))
        return NULL;
    busy_enter(self);
    int r = wait_sliced(self, drain_fn, &d, t);
    PyObject *ret = r == WAIT_PYERR ? NULL : r ? raise_ndc(r, 0) : Py_NewRef(Py_None);
    busy_leave(self);
    return ret;
}

static PyObject *chan_close(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    int r = ndc_close(ch);
    if (r)
        return raise_ndc(r, 0);
    Py_RETURN_NONE;
}

static PyObject *chan_detach(ChanObject *self, PyObject *unused)
{
    self->detaching = 1;
    chan_maybe_free(self);
    Py_RETURN_NONE;
}

static PyObject *chan_stat(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    struct ndc_stat s;
    int r = ndc_stat(ch, &s);
    if (r)
        return raise_ndc(r, 0);
    return Py_BuildValue("{sIsIsIsIsIsIsIsNsNsKsKsKsKsNsIsKsIsI}", "slots", s.slots, "free", s.free,
                         "ready", s.ready, "loaned", s.loaned, "attached", s.attached, "receivers_waiting",
                         s.receivers_waiting, "senders_waiting", s.senders_waiting, "closed",
                         PyBool_FromLong(s.closed), "stale", PyBool_FromLong(s.stale), "sent",
                         (unsigned long long)s.sent, "received", (unsigned long long)s.received,
                         "bytes_sent", (unsigned long long)s.bytes_sent, "slot_bytes",
                         (unsigned long long)s.slot_bytes, "broadcast", PyBool_FromLong(s.broadcast),
                         "subscribers", s.subscribers, "dropped", (unsigned long long)s.dropped,
                         "history", s.history, "slow_policy", s.slow_policy);
}

/* ---- channel: readiness ------------------------------------------------------------ */

/* notify_fd(what) -> the handle's pollable fd for what (NDC_WAIT_ACQUIRE or
 * NDC_WAIT_RESERVE); the handle owns it. */
static PyObject *chan_notify_fd(ChanObject *self, PyObject *arg)
{
    unsigned long what = PyLong_AsUnsignedLong(arg);
    if (what == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    int r = ndc_notify_fd(ch, (uint32_t)what);
    if (r < 0)
        return raise_ndc(r, what == NDC_WAIT_RESERVE);
    return PyLong_FromLong(r);
}

/* arm(what) -> False (armed, nothing to take) or True (something to take
 * now); end of stream and dead peers raise as the take itself would. */
static PyObject *chan_arm(ChanObject *self, PyObject *arg)
{
    unsigned long what = PyLong_AsUnsignedLong(arg);
    if (what == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    int r = ndc_notify_arm(ch, (uint32_t)what);
    if (r < 0)
        return raise_ndc(r, what == NDC_WAIT_RESERVE);
    return PyBool_FromLong(r);
}

/* ---- channel: broadcast ------------------------------------------------------------ */

static PyObject *chan_subscribe(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    int r = ndc_subscribe(ch);
    if (r)
        return raise_ndc(r, 0);
    self->flags |= NDC_SUBSCRIBE;
    Py_RETURN_NONE;
}

/* subscribers() -> [dict(pid, loans, position, lag, received, dropped), ...] */
static PyObject *chan_subscribers(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    struct ndc_sub_stat subs[64], *out = subs;
    uint32_t cap = 64;
    int n;
    for (;;) {   /* subscribers may come between two looks: grow until they fit */
        n = ndc_subscribers(ch, out, cap);
        if (n < 0 || (uint32_t)n <= cap)
            break;
        if (out != subs)
            PyMem_Free(out);
        cap = (uint32_t)n + 16;
        if (!(out = PyMem_Calloc(cap, sizeof *out)))
            return PyErr_NoMemory();
    }
    PyObject *l = n < 0 ? raise_ndc(n, 0) : PyList_New(0);
    for (int i = 0; l && i < n; i++) {
        PyObject *d = Py_BuildValue("{sisIsKsKsKsK}", "pid", (int)out[i].pid, "loans", out[i].loans,
                                    "position", (unsigned long long)out[i].position, "lag",
                                    (unsigned long long)out[i].lag, "received",
                                    (unsigned long long)out[i].received, "dropped",
                                    (unsigned long long)out[i].dropped);
        if (!d || PyList_Append(l, d))
            Py_CLEAR(l);
        Py_XDECREF(d);
    }
    if (out != subs)
        PyMem_Free(out);
    return l;
}

static PyObject *chan_set_spin(ChanObject *self, PyObject *arg)
{
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    ndc_set_spin(ch, ns);
    Py_RETURN_NONE;
}

static PyObject *chan_get_fd(ChanObject *self, void *c)
{
    ndc_chan *ch = chan_get(self);
    return ch ? PyLong_FromLong(ndc_fd(ch)) : NULL;
}
static PyObject *chan_get_name(ChanObject *self, void *c) { return Py_NewRef(self->name); }
static PyObject *chan_get_flags(ChanObject *self, void *c) { return PyLong_FromUnsignedLong(self->flags); }
static PyObject *chan_get_detached(ChanObject *self, void *c)
{
    return PyBool_FromLong(self->detaching || !self->ch);
}
static PyObject *chan_get_loans(ChanObject *self, void *c) { return PyLong_FromLong(self->nloans); }

/* ---- .npy and NUMA on a channel ------------------------------------------------------ */

static PyObject *chan_npy_read(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"path", "tag", "timeout", NULL};
    PyObject *path, *tmo = NULL;
    unsigned long long tag = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|KO", kwl, PyUnicode_FSConverter, &path, &tag, &tmo))
        return NULL;
    int64_t t = timeout_ns(tmo);
    ndc_chan *ch = t == -2 ? NULL : chan_get(self);
    if (!ch) {
        Py_DECREF(path);
        return NULL;
    }
    int r;
    const char *p = PyBytes_AsString(path);
    busy_enter(self);
    Py_BEGIN_ALLOW_THREADS
    r = ndc_npy_read(ch, p, tag, t);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    PyObject *ret = r ? raise_ndc(r, 1) : Py_NewRef(Py_None);
    busy_leave(self);
    return ret;
}

static PyObject *chan_npy_load(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"paths", "queue_depth", "direct", NULL};
    PyObject *paths;
    unsigned int depth = 0;
    int direct = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Ip", kwl, &paths, &depth, &direct))
        return NULL;
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    PyObject *seq = PySequence_Tuple(paths);
    if (!seq)
        return NULL;
    Py_ssize_t n = PyTuple_Size(seq);
    PyObject *enc = PyTuple_New(n);
    const char **cp = PyMem_Calloc((size_t)n + 1, sizeof *cp);
    int r = 0;
    for (Py_ssize_t i = 0; enc && cp && i < n; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PyTuple_GetItem(seq, i), &b)) {
            r = -1;
            break;
        }
        PyTuple_SetItem(enc, i, b);
        cp[i] = PyBytes_AsString(b);
    }
    PyObject *ret = NULL;
    if (!enc || !cp)
        PyErr_NoMemory();
    else if (!r) {
        struct ndc_npy_opts o = {.queue_depth = depth, .flags = direct ? NDC_NPY_DIRECT : 0};
        busy_enter(self);
        Py_BEGIN_ALLOW_THREADS
        r = ndc_npy_load(ch, cp, (size_t)n, &o);
        Py_END_ALLOW_THREADS
        ret = r < 0 ? raise_ndc(r, 1) : PyLong_FromLong(r);
        busy_leave(self);
    }
    PyMem_Free(cp);
    Py_XDECREF(enc);
    Py_DECREF(seq);
    return ret;
}

static PyObject *chan_npy_drain(ChanObject *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"dir", "queue_depth", "direct", NULL};
    PyObject *dir;
    unsigned int depth = 0;
    int direct = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|Ip", kwl, PyUnicode_FSConverter, &dir, &depth, &direct))
        return NULL;
    ndc_chan *ch = chan_get(self);
    if (!ch) {
        Py_DECREF(dir);
        return NULL;
    }
    struct ndc_npy_opts o = {.queue_depth = depth, .flags = direct ? NDC_NPY_DIRECT : 0};
    const char *d = PyBytes_AsString(dir);
    int r;
    busy_enter(self);
    Py_BEGIN_ALLOW_THREADS
    r = ndc_npy_drain(ch, d, &o);
    Py_END_ALLOW_THREADS
    Py_DECREF(dir);
    PyObject *ret = r < 0 ? raise_ndc(r, 0) : PyLong_FromLong(r);
    busy_leave(self);
    return ret;
}

static PyObject *chan_numa_where(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    uint64_t counts[256];
    int r = ndc_numa_where(ch, counts, 256);
    if (r < 0)
        return raise_ndc(r, 0);
    PyObject *l = PyList_New(0);
    for (int i = 0; l && i < r && i < 256; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (!v || PyList_Append(l, v)) {
            Py_XDECREF(v);
            Py_CLEAR(l);
        } else
            Py_DECREF(v);
    }
    return l;
}

static PyObject *chan_numa_pin_near(ChanObject *self, PyObject *unused)
{
    ndc_chan *ch = chan_get(self);
    if (!ch)
        return NULL;
    int r = ndc_numa_pin_near(ch);
    return r < 0 ? raise_ndc(r, 0) : PyLong_FromLong(r);
}

static PyGetSetDef chan_getset[] = {
    {"fd", (getter)chan_get_fd, NULL, "the segment's file descriptor (owned by the channel)", NULL},
    {"name", (getter)chan_get_name, NULL, "the channel's name, or None if anonymous", NULL},
    {"flags", (getter)chan_get_flags, NULL, "open flags (RDONLY, SUBSCRIBE)", NULL},
    {"detached", (getter)chan_get_detached, NULL, "detach() was called", NULL},
    {"loans", (getter)chan_get_loans, NULL, "live loans of this handle", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef chan_methods[] = {
    {"_create", (PyCFunction)(void (*)(void))chan_create, METH_VARARGS | METH_KEYWORDS | METH_CLASS, NULL},
    {"_open", (PyCFunction)(void (*)(void))chan_open, METH_VARARGS | METH_KEYWORDS | METH_CLASS, NULL},
    {"_open_fd", (PyCFunction)(void (*)(void))chan_open_fd, METH_VARARGS | METH_KEYWORDS | METH_CLASS, NULL},
    {"_send", (PyCFunction)(void (*)(void))chan_send, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_recv", (PyCFunction)(void (*)(void))chan_recv, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_recv_into", (PyCFunction)(void (*)(void))chan_recv_into, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_reserve", (PyCFunction)(void (*)(void))chan_reserve, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_acquire", (PyCFunction)(void (*)(void))chan_acquire, METH_VARARGS | METH_KEYWORDS, NULL},
    {"close", (PyCFunction)chan_close, METH_NOARGS,
     "End of stream: senders get ChannelClosed, receivers drain then get EndOfStream."},
    {"detach", (PyCFunction)chan_detach, METH_NOARGS,
     "Detach this process (ndc_free) once no loan, view or blocked call uses the handle."},
    {"_stat", (PyCFunction)chan_stat, METH_NOARGS, NULL},
    {"subscribe", (PyCFunction)chan_subscribe, METH_NOARGS,
     "Broadcast channels: make this handle a subscriber now (it gets the history, then every "
     "array committed from now on). A second call does nothing."},
    {"_subscribers", (PyCFunction)chan_subscribers, METH_NOARGS, NULL},
    {"_notify_fd", (PyCFunction)chan_notify_fd, METH_O, NULL},
    {"_arm", (PyCFunction)chan_arm, METH_O, NULL},
    {"wait_drained", (PyCFunction)(void (*)(void))chan_wait_drained, METH_VARARGS | METH_KEYWORDS,
     "wait_drained(timeout=None, closed=False): until every array committed so far was released "
     "by its receiver (JoinableQueue.join); closed=True: and the channel is closed and empty."},
    {"set_spin", (PyCFunction)chan_set_spin, METH_O, "Spin budget of this handle in ns (< 0: never)."},
    {"npy_read", (PyCFunction)(void (*)(void))chan_npy_read, METH_VARARGS | METH_KEYWORDS,
     "npy_read(path, tag=0, timeout=None): one .npy file into a slot."},
    {"npy_load", (PyCFunction)(void (*)(void))chan_npy_load, METH_VARARGS | METH_KEYWORDS,
     "npy_load(paths, queue_depth=0, direct=False) -> files sent (tag i = i)."},
    {"npy_drain", (PyCFunction)(void (*)(void))chan_npy_drain, METH_VARARGS | METH_KEYWORDS,
     "npy_drain(dir, queue_depth=0, direct=False) -> arrays written as dir/<seq>.npy."},
    {"numa_where", (PyCFunction)chan_numa_where, METH_NOARGS, "Payload pages per NUMA node."},
    {"numa_pin_near", (PyCFunction)chan_numa_pin_near, METH_NOARGS,
     "Bind this thread near the payload's node; returns the node."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot chan_slots[] = {
    {Py_tp_dealloc, chan_dealloc},
    {Py_tp_getset, chan_getset},
    {Py_tp_methods, chan_methods},
    {Py_tp_doc, "An ndchan channel handle (use ndchan.Channel)."},
    {0, NULL},
};

static PyType_Spec chan_spec = {
    "ndchan._ndchan._Channel", sizeof(ChanObject), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, chan_slots,
};

/* ---- module functions ---------------------------------------------------------------- */

static PyObject *mod_unlink(PyObject *m, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8AndSize(arg, NULL);
    if (!name)
        return NULL;
    int r = ndc_unlink(name);
    if (r)
        return raise_ndc(r, 0);
    Py_RETURN_NONE;
}

static PyObject *mod_strerror(PyObject *m, PyObject *arg)
{
    long e = PyLong_AsLong(arg);
    if (e == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(ndc_strerror((int)(e > 0 ? -e : e)));
}

static PyObject *mod_dtype_name(PyObject *m, PyObject *arg)
{
    long t = PyLong_AsLong(arg);
    if (t == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(ndc_dtype_name((enum ndc_dtype)t));
}

static PyObject *mod_npy_write(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"array", "path", "dtype", NULL};
    PyObject *obj, *path;
    int dtype = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&|i", kwl, &obj, PyUnicode_FSConverter, &path, &dtype))
        return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_RECORDS_RO)) {
        Py_DECREF(path);
        return NULL;
    }
    struct ndc_array a;
    int r = array_from_buffer(&a, &v, dtype, 0) ? WAIT_PYERR : 0;
    if (!r) {
        const char *p = PyBytes_AsString(path);
        Py_BEGIN_ALLOW_THREADS
        r = ndc_npy_write(&a, p);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&v);
    Py_DECREF(path);
    if (r == WAIT_PYERR)
        return NULL;
    if (r)
        return raise_ndc(r, 0);
    Py_RETURN_NONE;
}

static PyObject *mod_pin_cpu(PyObject *m, PyObject *arg)
{
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    int r = ndc_pin_cpu((int)c);
    if (r)
        return raise_ndc(r, 0);
    Py_RETURN_NONE;
}

static PyObject *mod_suggest_cpus(PyObject *m, PyObject *unused)
{
    int p, c;
    int r = ndc_suggest_cpus(&p, &c);
    if (r)
        return raise_ndc(r, 0);
    return Py_BuildValue("(ii)", p, c);
}

/* wait_any(channels, whats, timeout) -> [status, ...]: ndc_wait_any over
 * parallel sequences; status 1 ready, 0 not, else a negative errno
 * (-EPIPE, -EOWNERDEAD, -EPERM) for the Python layer to map. */
struct wany_ctx { ndc_chan **chans; uint32_t *what; uint32_t n; int32_t *ready; };
static int wany_fn(void *c, int64_t t)
{
    struct wany_ctx *w = c;
    return ndc_wait_any(w->chans, w->what, w->n, w->ready, t);
}

static PyObject *mod_wait_any(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"channels", "whats", "timeout", NULL};
    PyObject *chs, *whs, *tmo = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwl, &chs, &whs, &tmo))
        return NULL;
    int64_t t = timeout_ns(tmo);
    if (t == -2)
        return NULL;
    PyObject *cl = PySequence_List(chs), *wl = cl ? PySequence_List(whs) : NULL, *ret = NULL;
    if (!wl)
        goto out_lists;
    Py_ssize_t n = PyList_Size(cl);
    if (n != PyList_Size(wl) || n > NDC_WAIT_MAX) {
        PyErr_SetString(PyExc_ValueError, "wait_any: as many whats as channels, at most 65536");
        goto out_lists;
    }
    struct wany_ctx w = {.n = (uint32_t)n};
    w.chans = PyMem_Calloc(n ? n : 1, sizeof *w.chans);
    w.what = PyMem_Calloc(n ? n : 1, sizeof *w.what);
    w.ready = PyMem_Calloc(n ? n : 1, sizeof *w.ready);
    ChanObject **objs = PyMem_Calloc(n ? n : 1, sizeof *objs);
    Py_ssize_t nbusy = 0;
    if (!w.chans || !w.what || !w.ready || !objs) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GetItem(cl, i);
        int is = PyObject_IsInstance(c, (PyObject *)ChanType);
        if (is <= 0) {
            if (!is)
                PyErr_SetString(PyExc_TypeError, "wait_any: channels must be ndchan channels");
            goto out;
        }
        unsigned long wv = PyLong_AsUnsignedLong(PyList_GetItem(wl, i));
        if (wv == (unsigned long)-1 && PyErr_Occurred())
            goto out;
        objs[i] = (ChanObject *)c;
        if (!(w.chans[i] = chan_get(objs[i])))
            goto out;
        w.what[i] = (uint32_t)wv;
    }
    for (; nbusy < n; nbusy++)
        busy_enter(objs[nbusy]);
    int r = wait_sliced(NULL, wany_fn, &w, t);
    if (r == WAIT_PYERR)
        goto out;
    if (r < 0) {
        raise_ndc(r, 0);
        goto out;
    }
    if (!(ret = PyList_New(n)))
        goto out;
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SetItem(ret, i, PyLong_FromLong(w.ready[i]));
out:
    for (Py_ssize_t i = 0; i < nbusy; i++)
        busy_leave(objs[i]);
    PyMem_Free(w.chans);
    PyMem_Free(w.what);
    PyMem_Free(w.ready);
    PyMem_Free(objs);
out_lists:
    Py_XDECREF(cl);
    Py_XDECREF(wl);
    return ret;
}

static PyMethodDef mod_methods[] = {
    {"unlink", mod_unlink, METH_O, "Remove a named channel's name; attached processes keep working."},
    {"strerror", mod_strerror, METH_O, "ndc_strerror for an errno value."},
    {"dtype_name", mod_dtype_name, METH_O, "numpy's name of an ndchan dtype code."},
    {"npy_write", (PyCFunction)(void (*)(void))mod_npy_write, METH_VARARGS | METH_KEYWORDS,
     "npy_write(array, path): one array (any strides) to a .npy file."},
    {"pin_cpu", mod_pin_cpu, METH_O, "Bind the calling thread to one CPU."},
    {"suggest_cpus", mod_suggest_cpus, METH_NOARGS, "(producer_cpu, consumer_cpu) sharing the most."},
    {"wait_any", (PyCFunction)(void (*)(void))mod_wait_any, METH_VARARGS | METH_KEYWORDS,
     "wait_any(channels, whats, timeout): ndc_wait_any; a status per entry (use ndchan.wait_any)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ndchan._ndchan",
    .m_doc = "Zero-copy channels of n-dimensional arrays between processes (the C layer; use ndchan).",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__ndchan(void);
PyMODINIT_FUNC PyInit__ndchan(void)
{
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    PyObject *pipe_bases = NULL;
    if (!(ChanType = (PyTypeObject *)PyType_FromSpec(&chan_spec)) ||
        !(LoanType = (PyTypeObject *)PyType_FromSpec(&loan_spec)) ||
        !(EndOfStream = PyErr_NewExceptionWithDoc("ndchan.EndOfStream",
              "The channel was closed and every array sent before was received.", PyExc_EOFError, NULL)) ||
        !(pipe_bases = PyTuple_Pack(2, PyExc_BrokenPipeError, EndOfStream)) ||
        !(ChannelClosed = PyErr_NewExceptionWithDoc("ndchan.ChannelClosed",
              "Sending on a closed channel (a BrokenPipeError and an EndOfStream).", pipe_bases, NULL)) ||
        !(PeerDead = PyErr_NewExceptionWithDoc("ndchan.PeerDead",
              "Every process on the other side of the channel is gone (EOWNERDEAD).", PyExc_OSError, NULL)) ||
        !(TooManyLoans = PyErr_NewExceptionWithDoc("ndchan.TooManyLoans",
              "A broadcast subscriber already holds MAX_SUB_LOANS (32) loans (ENOBUFS): drop views "
              "of arrays it acquired before taking more.", PyExc_OSError, NULL)))
        goto fail;
    Py_DECREF(pipe_bases);
    pipe_bases = NULL;
    if (PyModule_AddObjectRef(m, "_Channel", (PyObject *)ChanType) ||
        PyModule_AddObjectRef(m, "_Loan", (PyObject *)LoanType) ||
        PyModule_AddObjectRef(m, "EndOfStream", EndOfStream) ||
        PyModule_AddObjectRef(m, "ChannelClosed", ChannelClosed) ||
        PyModule_AddObjectRef(m, "PeerDead", PeerDead) ||
        PyModule_AddObjectRef(m, "TooManyLoans", TooManyLoans))
        goto fail;
    static const struct { const char *n; long v; } k[] = {
        {"FOREVER", NDC_FOREVER}, {"RDONLY", NDC_RDONLY}, {"POPULATE", NDC_POPULATE},
        {"HUGEPAGES", NDC_HUGEPAGES}, {"BROADCAST", NDC_BROADCAST}, {"SUBSCRIBE", NDC_SUBSCRIBE},
        {"SLOW_BLOCK", NDC_SLOW_BLOCK}, {"SLOW_LATEST", NDC_SLOW_LATEST},
        {"MAX_SUB_LOANS", NDC_MAX_SUB_LOANS},
        {"WAIT_ACQUIRE", NDC_WAIT_ACQUIRE}, {"WAIT_RESERVE", NDC_WAIT_RESERVE},
        {"WAIT_MAX", NDC_WAIT_MAX},
        {"MAX_DIMS", NDC_MAX_DIMS}, {"MAX_SLOTS", NDC_MAX_SLOTS},
        {"NAME_MAX", NDC_NAME_MAX}, {"VERSION_MAJOR", NDC_VERSION_MAJOR},
        {"VERSION_MINOR", NDC_VERSION_MINOR},
        {"BOOL", NDC_BOOL}, {"I8", NDC_I8}, {"I16", NDC_I16}, {"I32", NDC_I32}, {"I64", NDC_I64},
        {"U8", NDC_U8}, {"U16", NDC_U16}, {"U32", NDC_U32}, {"U64", NDC_U64}, {"F16", NDC_F16},
        {"BF16", NDC_BF16}, {"F32", NDC_F32}, {"F64", NDC_F64}, {"C64", NDC_C64}, {"C128", NDC_C128},
        {"NUMA_FIRST_TOUCH", NDC_NUMA_FIRST_TOUCH}, {"NUMA_BIND", NDC_NUMA_BIND},
        {"NUMA_PREFERRED", NDC_NUMA_PREFERRED}, {"NUMA_INTERLEAVE", NDC_NUMA_INTERLEAVE},
        {"NUMA_NEAR_RECEIVER", NDC_NUMA_NEAR_RECEIVER},
    };
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (PyModule_AddIntConstant(m, k[i].n, k[i].v))
            goto fail;
    if (PyModule_AddObject(m, "MAX_SLOT_BYTES", PyLong_FromUnsignedLongLong(NDC_MAX_SLOT_BYTES)) ||
        PyModule_AddStringConstant(m, "library_version", ndc_version()))
        goto fail;
    return m;
fail:
    Py_XDECREF(pipe_bases);
    Py_DECREF(m);
    return NULL;
}
