"""ndchan: zero-copy channels of numpy arrays between processes.

    import numpy as np, ndchan

    ch = ndchan.Channel.create(slots=8, slot_bytes=16 << 20)   # anonymous (memfd)
    ch.send(np.arange(10.0))                 # one copy in, any strides
    a = ch.recv()                            # one copy out: a new array
    with ch.reserve((480, 640), np.float32) as a:   # write in place ...
        a[:] = 1                             # ... committed on exit
    with ch.acquire() as a:                  # read in place (read-only view)
        print(a.sum())
    ch.close()                               # end of stream
    for a in ch: ...                         # arrays until end of stream

    q = ndchan.Queue(maxsize=8)              # for multiprocessing.Queue(maxsize=8)

A slot lent to Python (reserve / acquire) goes back to the channel when the
last view of it is gone, never before: a view kept after its `with` block
(in a list, a slice of it, another thread) keeps the slot out of circulation
until it is dropped. Leaving the block drops the loan's own claim; in CPython
the array bound by `as` is the last view, released when that name is rebound
or deleted. A loop of `with ch.acquire() as a:` therefore holds two slots for
a moment (the previous `a` until the next one is bound): give such a channel
at least two slots, or `del a` at the end of the block.

A reservation is committed when its block ends normally (given back when an
exception leaves it, or the last view of it is gone). After the commit the
array belongs to the receivers: the array the block bound is made read-only,
and views of it must not be used any more.

Broadcast (publish/subscribe): every subscriber gets every array, zero copy.

    pub = ndchan.Channel.create("frames", slots=8, slot_bytes=1 << 20,
                                broadcast=True, history=2, slow_policy="block")
    sub = ndchan.Channel.open("frames", subscribe=True)   # or sub.subscribe()
    pub.wait_subscribers(2, timeout=10)      # before publishing, if none may miss the start
    pub.send(frame)                          # every subscriber gets it
    for a in sub: ...                        # in commit order, until end of stream
    pub.subscribers()                        # [Subscriber(pid, loans, position, lag, received, dropped)]

    v = ndchan.LatestValue((3,), np.float64)  # multiprocessing.Value/Array's counterpart
    v.set([1.0, 2.0, 3.0])                   # never waits for readers
    v.get()                                  # the newest value (a new array)

The C library's own calls are in ndchan._ndchan; errors are EndOfStream
(an EOFError), ChannelClosed (sending after close: an EndOfStream and a
BrokenPipeError), PeerDead (OSError EOWNERDEAD: every peer on the other side
is gone), TooManyLoans (OSError ENOBUFS: a broadcast subscriber holds
MAX_SUB_LOANS loans already) and OSError with the errno and the library's
detail text (TimeoutError for a timeout, BlockingIOError for timeout=0 and
nothing to do).

Event loops: Channel.notify_fd(what) is a pollable fd, readable when an
acquire ("acquire") or a send/reserve ("reserve") would not wait; see its
docstring for the loop. ndchan.wait_any waits on many channels at once, and
recv_async / recv_msg_async / acquire_async / send_async await a channel in
asyncio without a thread:

    async def consume(ch):
        while True:
            try:
                a = await ch.recv_async()
            except ndchan.EndOfStream:
                return
"""
import asyncio
import collections
import errno as _errno
import operator
import os
import pickle
import queue as _queue
import sys
import time

from . import _ndchan
from ._ndchan import ChannelClosed, EndOfStream, PeerDead, TooManyLoans, unlink, strerror
from ._ndchan import npy_write as _npy_write
from ._ndchan import pin_cpu, suggest_cpus

__all__ = ["Channel", "Queue", "LatestValue", "EndOfStream", "ChannelClosed", "PeerDead",
           "TooManyLoans", "Stat", "wait_any", "Subscriber", "Message", "unlink", "strerror", "npy_write",
           "pin_cpu", "suggest_cpus", "RDONLY", "POPULATE", "HUGEPAGES", "SUBSCRIBE",
           "SLOW_BLOCK", "SLOW_LATEST", "MAX_SUB_LOANS", "WAIT_ACQUIRE", "WAIT_RESERVE"]

__version__ = _ndchan.library_version
RDONLY = _ndchan.RDONLY
POPULATE = _ndchan.POPULATE
HUGEPAGES = _ndchan.HUGEPAGES
SUBSCRIBE = _ndchan.SUBSCRIBE
SLOW_BLOCK = _ndchan.SLOW_BLOCK
SLOW_LATEST = _ndchan.SLOW_LATEST
MAX_SUB_LOANS = _ndchan.MAX_SUB_LOANS
WAIT_ACQUIRE = _ndchan.WAIT_ACQUIRE
WAIT_RESERVE = _ndchan.WAIT_RESERVE
_WHATS = {"acquire": WAIT_ACQUIRE, "recv": WAIT_ACQUIRE, "reserve": WAIT_RESERVE,
          "send": WAIT_RESERVE, WAIT_ACQUIRE: WAIT_ACQUIRE, WAIT_RESERVE: WAIT_RESERVE}
DEFAULT_SLOT_BYTES = 64 << 20
_POLICIES = {"block": SLOW_BLOCK, "latest": SLOW_LATEST, SLOW_BLOCK: SLOW_BLOCK, SLOW_LATEST: SLOW_LATEST}

# broadcast, subscribers, dropped, history and slow_policy: broadcast channels
# (subscribers attached now; received and dropped sum theirs; history and
# slow_policy the channel's options, slow_policy SLOW_BLOCK or SLOW_LATEST)
Stat = collections.namedtuple("Stat", "slots free ready loaned attached receivers_waiting senders_waiting "
                                      "closed stale sent received bytes_sent slot_bytes "
                                      "broadcast subscribers dropped history slow_policy")
# one subscriber of a broadcast channel (Channel.subscribers): position is the
# seq of the next array it takes, lag the arrays committed it has not taken
Subscriber = collections.namedtuple("Subscriber", "pid loans position lag received dropped")
Message = collections.namedtuple("Message", "array tag seq")
RecvInfo = collections.namedtuple("RecvInfo", "shape dtype tag seq")

# ---- dtypes --------------------------------------------------------------------------

_np = None
_CODE = {}      # numpy dtype -> ndchan code
_DTYPE = {}     # ndchan code -> numpy dtype
_BF16 = None    # ml_dtypes.bfloat16, when installed


def _numpy():
    global _np, _BF16
    if _np is None:
        import numpy
        for code, name in ((_ndchan.BOOL, "bool"), (_ndchan.I8, "int8"), (_ndchan.I16, "int16"),
                           (_ndchan.I32, "int32"), (_ndchan.I64, "int64"), (_ndchan.U8, "uint8"),
                           (_ndchan.U16, "uint16"), (_ndchan.U32, "uint32"), (_ndchan.U64, "uint64"),
                           (_ndchan.F16, "float16"), (_ndchan.F32, "float32"), (_ndchan.F64, "float64"),
                           (_ndchan.C64, "complex64"), (_ndchan.C128, "complex128")):
            dt = numpy.dtype(name)
            _CODE[dt] = code
            _DTYPE[code] = dt
        try:
            import ml_dtypes
            _BF16 = numpy.dtype(ml_dtypes.bfloat16)
            _CODE[_BF16] = _ndchan.BF16
            _DTYPE[_ndchan.BF16] = _BF16
        except ImportError:
            pass
        _np = numpy
    return _np


def _code(dtype):
    """ndchan code of a numpy dtype (native byte order assumed), or TypeError."""
    np = _numpy()
    if isinstance(dtype, str) and dtype == "bfloat16" and _BF16 is None:
        _dtype(_ndchan.BF16)             # the error that names ml_dtypes
    dt = np.dtype(dtype)
    code = _CODE.get(dt)
    if code is not None:
        return code
    if dt.byteorder not in "=|" and dt.newbyteorder("=") in _CODE:
        return _CODE[dt.newbyteorder("=")]
    if dt.name == "bfloat16":
        return _ndchan.BF16
    raise TypeError("dtype %s is not an ndchan dtype (bool, int8..64, uint8..64, float16/32/64, "
                    "bfloat16 with ml_dtypes, complex64/128); object, structured, string and "
                    "datetime arrays are refused" % dt)


def _dtype(code):
    _numpy()
    dt = _DTYPE.get(code)
    if dt is None:
        if code == _ndchan.BF16:
            raise TypeError("a bfloat16 array: install ml_dtypes (python3 -m pip install ml_dtypes) "
                            "to receive it as numpy's ml_dtypes.bfloat16")
        raise TypeError("unknown ndchan dtype code %r" % code)
    return dt


def _native(arr):
    """arr with an ndchan dtype in native byte order: non-native arrays are
    converted (one extra copy), other dtypes refused with TypeError."""
    dt = arr.dtype
    if dt.byteorder == ">" or (dt.byteorder == "<" and sys.byteorder == "big"):
        _code(dt)
        return arr.astype(dt.newbyteorder("="))
    return arr


def _view(loan):
    """The ndarray view of a loan (read-only for acquired arrays)."""
    np = _numpy()
    if loan.dtype == _ndchan.BF16:
        dt = _dtype(_ndchan.BF16)        # TypeError without ml_dtypes
        return np.asarray(loan).view(dt)
    return np.asarray(loan)


# ---- loans -------------------------------------------------------------------------------

class Loan:
    """An acquired array: `with ch.acquire() as a:` binds a read-only ndarray
    view of the slot. tag, seq, shape and dtype stay readable after the block."""
    __slots__ = ("_loan", "_array", "tag", "seq", "shape", "dtype")

    def __init__(self, loan):
        self._loan = loan
        self._array = None
        self.tag, self.seq, self.shape = loan.tag, loan.seq, loan.shape
        self.dtype = _DTYPE.get(loan.dtype)

    @property
    def array(self):
        """The ndarray view (the same object each time)."""
        if self._array is None:
            if self._loan is None:
                raise ValueError("the loan has ended")
            self._array = _view(self._loan)
        return self._array

    def __enter__(self):
        return self.array

    def __exit__(self, et, ev, tb):
        self.release()
        return False

    def release(self):
        """End this object's claim: the slot returns once no view of it is left."""
        self._loan = self._array = None

    def __repr__(self):
        return "<ndchan.Loan seq=%d tag=%d shape=%r%s>" % (
            self.seq, self.tag, self.shape, "" if self._loan is not None else " ended")


class Reservation(Loan):
    """A reserved slot: `with ch.reserve(shape, dtype) as a:` binds a writable
    ndarray view; a normal exit commits it, an exception gives it back."""
    __slots__ = ()

    def __exit__(self, et, ev, tb):
        if et is None:
            self.commit()
        else:
            self.cancel()
        return False

    def commit(self):
        """Publish the array. Views of it must not be used afterwards; the
        array this object handed out becomes read-only."""
        loan, arr = self._loan, self._array
        if loan is None:
            raise ValueError("the reservation has ended")
        self._loan = self._array = None
        if arr is not None:
            arr.flags.writeable = False
        del arr
        loan.commit()

    def cancel(self):
        """Give the slot back unpublished (once no view of it is left)."""
        self._loan = self._array = None

    release = cancel


# ---- channels -----------------------------------------------------------------------------

def _what(what):
    w = _WHATS.get(what)
    if w is None:
        raise ValueError("what must be 'acquire' or 'reserve', not %r" % (what,))
    return w


def wait_any(entries, timeout=None):
    """Wait until any of several channels would not make a call wait, and
    return the indices (ascending) of the entries that would not. entries:
    channels (acquire) or (channel, what) pairs, what "acquire" (an
    acquire/recv would not wait) or "reserve" (a reserve/send would not).

    Nothing is taken or reserved: take from each returned entry with
    timeout=0 (another process may have been first: BlockingIOError, wait
    again). An entry whose stream has ended is returned as ready (its take
    raises EndOfStream, or ChannelClosed for "reserve"). An entry with
    nothing there whose every peer on the other side is gone raises PeerDead,
    with .index (the first such entry) set: a take with timeout=0 could not
    tell it (BlockingIOError), so leave that entry out to go on with the
    others. TimeoutError when `timeout` seconds pass first, BlockingIOError
    for timeout=0 and nothing ready."""
    chans, whats = [], []
    for e in entries:
        if isinstance(e, _ndchan._Channel):
            chans.append(e)
            whats.append(WAIT_ACQUIRE)
        else:
            ch, what = e
            chans.append(ch)
            whats.append(_what(what))
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    ready = _ndchan.wait_any(chans, whats, timeout)
    for i, r in enumerate(ready):
        if r == -_errno.EOWNERDEAD:
            e = PeerDead(_errno.EOWNERDEAD, "%s: entry %d: every peer on the other side is gone"
                         % (strerror(r), i))
            e.index = i
            raise e
        if r < 0 and r != -_errno.EPIPE:
            raise OSError(-r, "%s: entry %d" % (strerror(r), i))
    return [i for i, r in enumerate(ready) if r]


def _seconds(block, timeout):
    if not block:
        return 0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout


class Channel(_ndchan._Channel):
    """A channel handle. Make one with Channel.create, Channel.open or
    Channel.from_fd. Every method may be called from several threads at once;
    blocking calls release the GIL and react to Ctrl-C within 50 ms.
    Timeouts are in seconds: None waits forever, 0 tries once."""

    @classmethod
    def create(cls, name=None, *, slots=4, slot_bytes=DEFAULT_SLOT_BYTES, mode=0o600, populate=False,
               hugepages=False, spin_ns=0, numa_policy=0, numa_node=0, numa_nodeset=0,
               broadcast=False, history=0, slow_policy="block"):
        """A new channel: anonymous (name None: a memfd, shared with children
        by fork or by pickling, which passes the fd) or named (a POSIX shm
        object that other processes open by name; remove it with unlink()).
        mode: the shm file's permission bits (named channels).

        broadcast=True: publish/subscribe, every subscriber gets every array
        (a work queue otherwise: each array goes to one receiver). history:
        the last arrays a late subscriber gets first, 0..slots-1.
        slow_policy: "block" (lossless: the slowest subscriber sets the
        pace) or "latest" (the publisher never waits; a slow subscriber gets
        the newest array it has not had, the ones it skipped are counted in
        its `dropped`)."""
        policy = _POLICIES.get(slow_policy)
        if policy is None:
            raise ValueError("slow_policy must be 'block' or 'latest', not %r" % (slow_policy,))
        if not broadcast and (history or policy != SLOW_BLOCK):
            raise ValueError("history and slow_policy are options of broadcast channels "
                             "(broadcast=True)")
        flags = (POPULATE if populate else 0) | (HUGEPAGES if hugepages else 0) | \
            (_ndchan.BROADCAST if broadcast else 0)
        return cls._create(name, slots, slot_bytes, flags, spin_ns, mode, numa_policy, numa_node,
                           numa_nodeset, history, policy)

    @classmethod
    def open(cls, name, *, readonly=False, subscribe=False, timeout=0):
        """Attach to a named channel, waiting up to `timeout` seconds (None:
        forever) for it to be created. readonly: receive only. subscribe: a
        subscriber of a broadcast channel from now on (OSError EINVAL on a
        work queue)."""
        return cls._open(name, _open_flags(readonly, subscribe), timeout)

    @classmethod
    def from_fd(cls, fd, *, readonly=False, subscribe=False):
        """Attach to the channel whose segment fd this is (the fd is duplicated)."""
        return cls._open_fd(fd, _open_flags(readonly, subscribe))

    @property
    def readonly(self):
        return bool(self.flags & RDONLY)

    # -- broadcast

    def subscribers(self):
        """Broadcast channels: each attached subscriber now, as a list of
        Subscriber(pid, loans, position, lag, received, dropped) (use
        ._asdict() for a dict). OSError EINVAL on a work queue."""
        return [Subscriber(**d) for d in self._subscribers()]

    def wait_subscribers(self, n, timeout=None):
        """Wait until at least n subscribers are attached (a publisher that
        must not start before its subscribers: arrays committed before a
        subscriber subscribed, beyond the history, are not for it).
        TimeoutError when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.stat().subscribers < n:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("%d of %d subscribers attached after %g s"
                                   % (self.stat().subscribers, n, timeout))
            time.sleep(0.001)

    # -- copies

    def send(self, array, tag=0, timeout=None):
        """Copy an array (any strides, broadcasts included) into a slot and
        publish it. Non-native byte order is converted first (one more copy)."""
        np = _numpy()
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        dt = array.dtype
        code = _CODE.get(dt)
        if code is None:
            code = _code(dt)
            array = _native(array)
        if code == _ndchan.BF16:
            array = array.view(np.uint16)
        self._send(array, code, tag, timeout)

    def recv(self, timeout=None):
        """The next array, copied into a new (writable) ndarray."""
        return self.recv_msg(timeout).array

    def recv_msg(self, timeout=None):
        """The next array with its tag and seq: Message(array, tag, seq)."""
        np = _numpy()
        buf, code, shape, tag, seq = self._recv(timeout)
        dt = _DTYPE.get(code) or _dtype(code)
        return Message(np.frombuffer(buf, dt).reshape(shape), tag, seq)

    def recv_into(self, out, timeout=None):
        """Receive into a preallocated C-contiguous writable buffer (an ndarray
        of the right size). Returns RecvInfo(shape, dtype, tag, seq) of the
        array received, whose bytes fill `out` in C order. Too small:
        OSError EMSGSIZE, and the array waits for the next receive."""
        code, shape, tag, seq = self._recv_into(out, timeout)
        return RecvInfo(shape, _DTYPE.get(code) or _dtype(code), tag, seq)

    # -- loans

    def reserve(self, shape, dtype, tag=0, timeout=None):
        """A slot for an array of this shape and dtype, to fill in place:
        `with ch.reserve(shape, dtype) as a: a[...] = ...` commits on exit."""
        if isinstance(shape, int):
            shape = (shape,)
        return Reservation(self._reserve(_code(dtype), shape, tag, timeout))

    def acquire(self, timeout=None):
        """The next array, lent in place: `with ch.acquire() as a:` (read-only)."""
        _numpy()
        return Loan(self._acquire(timeout))

    def __iter__(self):
        """Arrays (copies) until end of stream."""
        while True:
            try:
                yield self.recv()
            except EndOfStream:
                return

    def views(self):
        """Loans until end of stream, each a read-only view in place (see the
        module's note on views: hold two slots or more)."""
        while True:
            try:
                ln = self.acquire()
            except EndOfStream:
                return
            yield ln.array
            del ln

    # -- readiness: poll, select, epoll, asyncio

    def notify_fd(self, what="acquire"):
        """A file descriptor readable while an acquire (what="acquire") or a
        send/reserve (what="reserve") on this handle would not wait, or the
        stream has ended, or every peer on the other side is gone. The
        handle owns it (closed by detach: unregister it first); do not
        close, read or write it. The same fd each call, per what and process.

        It is armed when made; after it turns readable, the loop is:

            fd readable -> take with timeout=0 until BlockingIOError -> arm(what):
                False: armed, poll again
                True:  something came meanwhile: take again (still readable)
                EndOfStream / ChannelClosed / PeerDead raised: stop polling

        The fd may be readable and a take still give BlockingIOError (another
        process was first): arm and poll again. Level-triggered as of the
        last arming; edge-triggered polling works with the same loop (keep
        taking until arm returns False). A forked child gets its own fd from
        its first notify_fd, never the parent's number."""
        return self._notify_fd(_what(what))

    def arm(self, what="acquire"):
        """Re-arm notify_fd(what) once a take gave BlockingIOError: False if
        armed (nothing to take; the fd turns readable when something comes),
        True if something is there now (take again). Raises what the take
        would: EndOfStream (ChannelClosed for "reserve") at end of stream,
        PeerDead when nothing is there and every peer on the other side is
        gone (where a take with timeout=0 only says BlockingIOError).
        OSError EINVAL before notify_fd(what) made the fd in this process."""
        return self._arm(_what(what))

    async def _ready(self, what):
        """One wait for notify_fd(what) in the running asyncio loop. Several
        tasks may wait on the same channel: one reader per fd wakes them all."""
        loop = asyncio.get_running_loop()
        fd = self._notify_fd(what)
        try:
            waiters = self._async_waiters
        except AttributeError:
            waiters = self._async_waiters = {}
        key = (id(loop), what)
        futs = waiters.get(key)
        if futs is None:
            futs = waiters[key] = set()

            def wake():
                for f in futs:
                    if not f.done():
                        f.set_result(None)
            loop.add_reader(fd, wake)
        fut = loop.create_future()
        futs.add(fut)
        try:
            await fut
        finally:
            futs.discard(fut)
            if not futs:
                del waiters[key]
                loop.remove_reader(fd)

    async def _async(self, what, take):
        """take() with timeout=0 until it gives something, awaiting the
        notify fd between tries (the arm loop of notify_fd)."""
        w = _what(what)
        self._notify_fd(w)                     # made (armed) on first use; arm needs it
        while True:
            try:
                return take()
            except BlockingIOError:
                pass
            if not self._arm(w):
                await self._ready(w)

    async def recv_async(self):
        """recv() for asyncio: awaits the next array (a copy) without blocking
        the event loop or using a thread (notify_fd with loop.add_reader).
        EndOfStream at end of stream, PeerDead when every sender is gone."""
        return (await self.recv_msg_async()).array

    async def recv_msg_async(self):
        """recv_msg() for asyncio: Message(array, tag, seq)."""
        return await self._async(WAIT_ACQUIRE, lambda: self.recv_msg(0))

    async def acquire_async(self):
        """acquire() for asyncio: a Loan (`with await ch.acquire_async() as a:`)."""
        return await self._async(WAIT_ACQUIRE, lambda: self.acquire(0))

    async def send_async(self, array, tag=0):
        """send() for asyncio: awaits a free slot. ChannelClosed after close,
        PeerDead when every receiver is gone and no slot is free."""
        return await self._async(WAIT_RESERVE, lambda: self.send(array, tag, 0))

    async def reserve_async(self, shape, dtype, tag=0):
        """reserve() for asyncio: a Reservation, committed by its `with` block."""
        return await self._async(WAIT_RESERVE, lambda: self.reserve(shape, dtype, tag, 0))

    # -- state

    def stat(self):
        """Stat: slot states now, attached processes, waiters, counters."""
        d = self._stat()
        return Stat(**d)

    def unlink(self):
        """Remove this named channel's name (attached processes keep working)."""
        if self.name is None:
            raise ValueError("an anonymous channel has no name")
        unlink(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False

    def __repr__(self):
        what = "anonymous" if self.name is None else repr(self.name)
        return "<ndchan.Channel %s%s%s>" % (what, " readonly" if self.readonly else "",
                                             " detached" if self.detached else "")

    # -- multiprocessing: named channels by name, anonymous ones by their fd
    # (multiprocessing.reduction.DupFd, as multiprocessing.heap passes its arenas).

    def __reduce__(self):
        if self.name is not None:
            return _open_named, (self.name, self.readonly)
        from multiprocessing import reduction
        return _open_dupfd, (reduction.DupFd(self.fd), self.readonly)


def _open_flags(readonly, subscribe):
    return (RDONLY if readonly else 0) | (SUBSCRIBE if subscribe else 0)


# A subscription belongs to the process that made it (as loans do): a handle
# passed to another process arrives unsubscribed there (its first acquire or
# subscribe() subscribes it), so a child that only publishes never holds a
# block-policy publisher back.
def _open_named(name, readonly):
    return Channel.open(name, readonly=readonly)


def _open_dupfd(dupfd, readonly):
    fd = dupfd.detach()
    try:
        return Channel.from_fd(fd, readonly=readonly)
    finally:
        os.close(fd)


def npy_write(array, path):
    """Write one array (any strides) to a .npy file."""
    np = _numpy()
    array = _native(np.asarray(array))
    code = _code(array.dtype)
    if code == _ndchan.BF16:
        array = array.view(np.uint16)
    _npy_write(array, os.fspath(path), code)


# ---- latest value: multiprocessing.Value / Array's counterpart ------------------------

class LatestValue:
    """One array of a fixed shape and dtype that a writer replaces whenever
    it likes and readers read the newest of: multiprocessing.Value and
    Array's counterpart, on a broadcast channel with history 1 and the
    "latest" policy (see ndc_subscribe(3)).

        v = ndchan.LatestValue((3,), np.float64)          # anonymous, 0 at first
        v = ndchan.LatestValue((3,), "float64", "pose")   # named: LatestValue.open("pose")
        v.set(x)            # a copy in; never waits for readers; x broadcast to the shape
        v.get()             # the newest value, a new array (the same value again if
                            # nothing newer was set since this handle's last get)
        v.wait(timeout)     # a value newer than this handle's last one (TimeoutError)

    It pickles to child processes as Channel does (every start method).
    Values are copies: readers never hold a slot, so the writer never waits.
    seq is the channel's commit count of the value last returned (the
    initial value is 0)."""

    def __init__(self, shape, dtype, name=None, *, initial=0, slots=4, mode=0o600, _channel=None):
        np = _numpy()
        try:
            self.shape = (operator.index(shape),)     # an int, numpy's included
        except TypeError:
            self.shape = tuple(operator.index(n) for n in shape)
        self.dtype = np.dtype(dtype)
        _code(self.dtype)
        self._last = None
        self.seq = None
        if _channel is not None:
            self._ch = _channel
            return
        nbytes = self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        self._ch = Channel.create(name, slots=slots, slot_bytes=max(nbytes, 1), mode=mode,
                                  broadcast=True, history=1, slow_policy="latest")
        self.set(initial)

    @classmethod
    def open(cls, name, shape, dtype, *, timeout=0):
        """Attach to a named latest value created elsewhere (waiting up to
        `timeout` seconds for it to exist)."""
        return cls(shape, dtype, _channel=Channel.open(name, timeout=timeout))

    @property
    def channel(self):
        return self._ch

    def set(self, value):
        """Publish a new value (anything numpy broadcasts to the shape). Never waits for readers."""
        np = _numpy()
        a = np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape)
        self._ch.send(a)

    def _take(self, timeout):
        m = self._ch.recv_msg(timeout)
        if m.array.shape != self.shape or m.array.dtype != self.dtype:
            raise TypeError("the channel holds a %s %s array, not %s %s" % (
                m.array.shape, m.array.dtype, self.shape, self.dtype))
        self._last, self.seq = m.array, m.seq
        return m.array.copy()

    def get(self, timeout=None):
        """The newest value, as a new array. Waits (up to `timeout` seconds)
        only when there has never been one."""
        try:
            return self._take(0)
        except BlockingIOError:
            if self._last is None:
                return self._take(timeout)
            return self._last.copy()

    def wait(self, timeout=None):
        """The next value newer than the last one this handle returned."""
        return self._take(timeout)

    def detach(self):
        self._ch.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False

    def __reduce__(self):
        return _latest_value, (self._ch, self.shape, self.dtype.str)

    def __repr__(self):
        return "<ndchan.LatestValue %s %s%s>" % (self.shape, self.dtype,
                                                 "" if self._ch.name is None else " %r" % self._ch.name)


def _latest_value(ch, shape, dtype):
    return LatestValue(shape, dtype, _channel=ch)


# ---- the drop-in for multiprocessing.Queue ---------------------------------------------

_TAG_ARRAY, _TAG_PICKLE = 0, 1


class Queue:
    """multiprocessing.Queue's interface over an anonymous channel: put/get
    with block and timeout (queue.Full / queue.Empty), put_nowait,
    get_nowait, qsize, empty, full, close, join_thread, cancel_join_thread.

    numpy arrays of an ndchan dtype travel as arrays (one copy each side,
    no pickling); anything else (None sentinels, tuples, other objects) is
    pickled into a slot, so code written for multiprocessing.Queue runs
    unchanged. It pickles to child processes under fork, spawn and
    forkserver. maxsize=0 means 16 slots (a channel is bounded); an array or
    pickle larger than slot_bytes raises OSError E2BIG.

    close() means what it means for multiprocessing.Queue: this process
    will use the queue no more. End of stream for everyone is
    q.channel.close()."""

    def __init__(self, maxsize=0, *, slot_bytes=DEFAULT_SLOT_BYTES, ctx=None, channel=None):
        self._ch = channel if channel is not None else Channel.create(
            slots=maxsize if maxsize > 0 else 16, slot_bytes=slot_bytes)
        self._maxsize = maxsize
        self._closed = False

    @property
    def channel(self):
        return self._ch

    def __getstate__(self):
        return (self._ch, self._maxsize)

    def __setstate__(self, st):
        self._ch, self._maxsize = st
        self._closed = False

    def _check(self):
        if self._closed:
            raise ValueError("Queue %r is closed" % self)

    def put(self, obj, block=True, timeout=None):
        self._check()
        t = _seconds(block, timeout)
        np = _numpy()
        try:
            if type(obj) is np.ndarray and obj.dtype in _CODE:
                self._ch.send(obj, _TAG_ARRAY, t)
            else:
                data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
                self._ch._send(data, _ndchan.U8, _TAG_PICKLE, t)
        except (TimeoutError, BlockingIOError):
            raise _queue.Full from None

    def get(self, block=True, timeout=None):
        self._check()
        t = _seconds(block, timeout)
        try:
            m = self._ch.recv_msg(t)
        except (TimeoutError, BlockingIOError):
            raise _queue.Empty from None
        if m.tag == _TAG_PICKLE:
            return pickle.loads(m.array)
        return m.array

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def qsize(self):
        return self._ch.stat().ready

    def empty(self):
        return self.qsize() == 0

    def full(self):
        return self._ch.stat().free == 0

    def close(self):
        self._closed = True

    def join_thread(self):
        pass

    def cancel_join_thread(self):
        pass

    def __repr__(self):
        return "<ndchan.Queue maxsize=%d>" % self._maxsize
