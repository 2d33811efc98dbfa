#!/usr/bin/python3
"""A worker pool that returns results in input order, like Pool.imap, with
the arrays moved through two ndchan channels: tasks, each read in place by
whichever worker is free, and results, tagged with their task's index and
put back in order by the caller. Closing the task channel is the workers'
end of stream.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/pool_imap.py
"""
import argparse
import multiprocessing as mp
import threading

import numpy as np

import ndchan


def work(a):
    return np.sqrt(a) * 2              # stands in for real work


def worker(tasks, results):
    while True:
        try:
            ln = tasks.acquire()
        except ndchan.EndOfStream:
            return
        with ln as a:                  # a read-only view of the slot
            r = work(a)
        del a                          # the task's slot goes back
        results.send(r, tag=ln.tag)    # tagged with the input's index


def imap(inputs, processes=2, slots=8):
    """Yield work(x) for each array x of inputs, in input order."""
    inputs = list(inputs)
    biggest = max(a.nbytes for a in inputs)
    tasks = ndchan.Channel.create(slots=slots, slot_bytes=biggest)
    results = ndchan.Channel.create(slots=slots, slot_bytes=biggest)
    procs = [mp.Process(target=worker, args=(tasks, results)) for _ in range(processes)]
    for p in procs:
        p.start()

    def feed():                        # blocks while every worker is busy
        for i, a in enumerate(inputs):
            tasks.send(a, tag=i)
        tasks.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    pending, nxt = {}, 0
    while nxt < len(inputs):
        m = results.recv_msg()
        pending[m.tag] = m.array
        while nxt in pending:          # out-of-order results wait here
            yield pending.pop(nxt)
            nxt += 1
    feeder.join()
    for p in procs:
        p.join()
    tasks.detach()
    results.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--processes", type=int, default=2)
    o = ap.parse_args()
    rng = np.random.default_rng(0)
    inputs = [rng.random(int(rng.integers(1000, 100000))) for _ in range(o.n)]
    got = list(imap(inputs, o.processes))
    assert len(got) == len(inputs)
    for x, y in zip(inputs, got):
        np.testing.assert_array_equal(y, work(x))
    print("%d results in input order from %d worker processes" % (len(got), o.processes))


if __name__ == "__main__":
    main()
