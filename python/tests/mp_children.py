"""Child-process functions for test_mp (importable by spawn and forkserver children)."""
import os
import signal
import time

import numpy as np

import ndchan

CH = None


def double_back(ch):
    """Receive one array, send it back doubled."""
    a = ch.recv(timeout=20)
    ch.send(a * 2, tag=os.getpid())


def double_back_from(conn):
    double_back(conn.recv() if hasattr(conn, "recv") and not hasattr(conn, "reserve") else conn.get())


def pool_init(ch):
    global CH
    CH = ch


def pool_work(k):
    with CH.acquire(timeout=20) as a:
        return float(a.sum()) * k


def hold_loan(ch, ready, reserve):
    if reserve:
        r = ch.reserve(4, np.float64)
        a = r.array
        a[:] = 1
    else:
        ln = ch.acquire(timeout=20)
        a = ln.array
    ready.set()
    time.sleep(60)


def blocked_get(q, ready, report):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import queue
    ready.set()
    try:
        q.get()
        report.send(("got", 0))
        return
    except KeyboardInterrupt:
        t = time.monotonic()
    st = q.channel.stat()
    try:
        q.get_nowait()
        empty = False
    except queue.Empty:
        empty = True
    report.send(("interrupted", t, st.loaned, empty))
    report.send(("after", float(q.get(timeout=20).sum())))


def queue_echo(qin, qout):
    """multiprocessing-style worker: objects until a None sentinel."""
    while True:
        item = qin.get()
        if item is None:
            break
        qout.put(item)
    qout.put(None)


# ---- broadcast (test_broadcast) ------------------------------------------------

def subscriber(ch, delay, report, done=None):
    """Subscribe, then receive until end of stream, sleeping `delay` s after
    each array; report [(seq, tag, intact)], and this subscriber's own
    entry of subscribers() (before it detaches, after `done` is set)."""
    ch.subscribe()
    got = []
    while True:
        try:
            m = ch.recv_msg(timeout=30)
        except ndchan.EndOfStream:
            break
        got.append((m.seq, m.tag, bool((m.array == m.tag).all())))
        if delay:
            time.sleep(delay)
    me = [s._asdict() for s in ch.subscribers() if s.pid == os.getpid()]
    report.send((got, me))
    if done is not None:
        done.wait(30)
    ch.detach()


def late_subscriber(name, ready, report):
    ch = ndchan.Channel.open(name, subscribe=True, readonly=True)
    ready.set()
    report.send([m.seq for m in iter(lambda: _recv_or_none(ch), None)])
    ch.detach()


def _recv_or_none(ch):
    try:
        return ch.recv_msg(timeout=30)
    except ndchan.EndOfStream:
        return None


def value_writer(v, n, pause):
    for i in range(1, n + 1):
        v.set(i)
        time.sleep(pause)


def value_reader(v, last, report):
    """get() until the writer's last value: every value whole (no torn
    array), never going back, no get() blocking."""
    seen, slowest = [], 0.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = time.monotonic()
        a = v.get()
        slowest = max(slowest, time.monotonic() - t)
        if not (a == a[0]).all():
            report.send(("torn", a.tolist()))
            return
        if not seen or seen[-1] != a[0]:
            seen.append(float(a[0]))
        if a[0] == last:
            break
        time.sleep(0.0005)
    report.send(("ok", seen, slowest))


def value_late_reader(name, report):
    t = time.monotonic()
    v = ndchan.LatestValue.open(name, (4,), "float64")
    a = v.get(timeout=5)
    report.send((a.tolist(), time.monotonic() - t))


def produce(ch, k, n, go=None):
    """Send n arrays [k, i] tagged i, then end the stream (after `go`, if given)."""
    if go is not None:
        go.wait(20)
    for i in range(n):
        ch.send(np.array([k, i], dtype=np.int64), tag=i, timeout=20)
    ch.close()


def produce_then_hang(ch, n, ready):
    """Send n arrays, then wait to be killed."""
    for i in range(n):
        ch.send(np.array([i], dtype=np.int64), tag=i, timeout=20)
    ready.set()
    time.sleep(60)
