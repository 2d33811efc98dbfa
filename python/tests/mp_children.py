"""Child-process functions for test_mp (importable by spawn and forkserver children)."""
import os
import signal
import time

import numpy as np

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
