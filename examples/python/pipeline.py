#!/usr/bin/python3
"""The pipeline multiprocessing tutorials teach: a producer process makes
arrays, a consumer that is sometimes busy processes them; arrays wait in the
queue while it is busy, come out in the producer's order, and a sentinel ends
the stream. Run three ways and timed:

  multiprocessing.Queue   the tutorial as written
  ndchan.Queue            the same code, one line changed
  ndchan loans            written for ndchan: the producer fills each array
                          in place, the consumer reads it in place, and
                          close() is the end of stream

    PYTHONPATH=build/python /usr/bin/python3 examples/python/pipeline.py
"""
import argparse
import multiprocessing as mp
import time

import numpy as np

import ndchan

SHAPE = (512, 1024)          # 4 MiB of float64


def make(i, out):
    out[...] = i             # stands in for real work: reading a camera, a file ...
    out[0, :4] = (i, i + 1, i + 2, i + 3)


# ---- the tutorial, with a queue ------------------------------------------------------

def producer(q, n):
    buf = np.empty(SHAPE)
    for i in range(n):
        make(i, buf)
        q.put(buf.copy())    # multiprocessing pickles later: hand it its own array
    q.put(None)


def consumer(q, busy_every, results):
    total, order = 0.0, []
    while True:
        a = q.get()
        if a is None:
            break
        order.append(int(a[0, 0]))
        total += float(a[1, 1])
        if busy_every and len(order) % busy_every == 0:
            time.sleep(0.02)         # busy: the queue buffers meanwhile
    results.put((order, total))


def run_queue(make_queue, n, busy_every):
    q = make_queue(8)
    results = mp.Queue()
    t0 = time.perf_counter()
    c = mp.Process(target=consumer, args=(q, busy_every, results))
    c.start()
    producer(q, n)
    order, total = results.get()
    c.join()
    return time.perf_counter() - t0, order, total


# ---- written for ndchan: in place both sides, close() ends the stream ----------------

def consumer_loans(ch, busy_every, results):
    total, order = 0.0, []
    while True:
        try:
            ln = ch.acquire()
        except ndchan.EndOfStream:
            break
        with ln as a:                  # read-only view of the slot: no copy
            order.append(int(a[0, 0]))
            total += float(a[1, 1])
        del a                          # the slot goes back now
        if busy_every and len(order) % busy_every == 0:
            time.sleep(0.02)
    results.put((order, total))


def run_loans(n, busy_every):
    ch = ndchan.Channel.create(slots=8, slot_bytes=8 * SHAPE[0] * SHAPE[1])
    results = mp.Queue()
    t0 = time.perf_counter()
    c = mp.Process(target=consumer_loans, args=(ch, busy_every, results))
    c.start()
    for i in range(n):
        with ch.reserve(SHAPE, np.float64, tag=i) as a:
            make(i, a)                 # written straight into the slot
    ch.close()                         # end of stream: the consumer drains, then stops
    order, total = results.get()
    c.join()
    return time.perf_counter() - t0, order, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=64, help="arrays to send (4 MiB each)")
    ap.add_argument("--busy-every", type=int, default=8, help="the consumer naps every k arrays")
    o = ap.parse_args()
    mp.set_start_method("fork")
    want = list(range(o.n))
    rows = [("multiprocessing.Queue", lambda: run_queue(mp.Queue, o.n, o.busy_every)),
            ("ndchan.Queue", lambda: run_queue(lambda k: ndchan.Queue(k), o.n, o.busy_every)),
            ("ndchan loans", lambda: run_loans(o.n, o.busy_every))]
    naps = (o.n // o.busy_every) * 0.02 if o.busy_every else 0
    print("%d arrays of %s float64 (%.0f MiB each), consumer busy %.2f s in all"
          % (o.n, SHAPE, SHAPE[0] * SHAPE[1] * 8 / 2**20, naps))
    for name, run in rows:
        dt, order, total = run()
        assert order == want, "%s: arrays out of order" % name
        assert total == sum(want), "%s: wrong contents" % name
        print("  %-22s %7.3f s  (%.3f s beyond the consumer's naps)" % (name, dt, max(0, dt - naps)))


if __name__ == "__main__":
    main()
