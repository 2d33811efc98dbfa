"""Broadcast channels in real processes: every subscriber gets every array
(block policy), the history a late subscriber gets first, the latest policy
with a sleeping subscriber, a latest-value writer and readers; the loan limit
and the options' errors."""
import errno
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

import ndchan
import mp_children as kids

METHODS = [m for m in ("fork", "spawn") if m in mp.get_all_start_methods()]


def frame(i):
    return np.full((1 + i % 5, 7), float(i))


def start(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def joined(*procs):
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


@pytest.mark.parametrize("method", METHODS)
def test_every_subscriber_gets_every_array_in_order(method):
    ctx = mp.get_context(method)
    n, slots, delay = 60, 4, 0.005
    ch = ndchan.Channel.create(slots=slots, slot_bytes=4096, broadcast=True)
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    kids_ = [start(ctx, kids.subscriber, ch, d, tx) for d, (rx, tx) in zip((0, delay), pipes)]
    ch.wait_subscribers(2, timeout=30)
    t = time.monotonic()
    for i in range(n):
        ch.send(frame(i), tag=i)
    took = time.monotonic() - t
    ch.close()
    reports = [rx.recv() for rx, tx in pipes]
    joined(*kids_)
    for got, me in reports:
        assert [g[0] for g in got] == list(range(n))       # seq: every array, in order
        assert [g[1] for g in got] == list(range(n))
        assert all(g[2] for g in got), "a payload arrived wrong"
        assert me[0]["received"] == n and me[0]["dropped"] == 0
    # lossless: the sleeping subscriber held the publisher back
    assert took >= (n - slots - 2) * delay, "the publisher ran ahead of the slow subscriber (%.3f s)" % took
    ch.detach()


def test_late_subscriber_gets_the_history_first(shm_name):
    ctx = mp.get_context("spawn")
    ch = ndchan.Channel.create(shm_name, slots=4, slot_bytes=4096, broadcast=True, history=3)
    for i in range(10):                        # nobody subscribed: slots are reused
        ch.send(frame(i), tag=i, timeout=0)
    st = ch.stat()
    assert (st.broadcast, st.subscribers, st.sent) == (True, 0, 10)
    ready = ctx.Event()
    rx, tx = ctx.Pipe(duplex=False)
    p = start(ctx, kids.late_subscriber, shm_name, ready, tx)
    assert ready.wait(30)
    for i in range(10, 15):
        ch.send(frame(i), tag=i)
    ch.close()
    assert rx.recv() == [7, 8, 9, 10, 11, 12, 13, 14]
    joined(p)
    ch.detach()


def test_latest_policy_never_waits_for_a_sleeping_subscriber():
    ctx = mp.get_context("fork" if "fork" in METHODS else "spawn")
    n = 200
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096, broadcast=True, slow_policy="latest")
    rx, tx = ctx.Pipe(duplex=False)
    done = ctx.Event()
    p = start(ctx, kids.subscriber, ch, 0.02, tx, done)
    ch.wait_subscribers(1, timeout=30)
    t = time.monotonic()
    for i in range(n):
        ch.send(frame(i), tag=i, timeout=0)    # BlockingIOError if it ever had to wait
        time.sleep(0.001)
    took = time.monotonic() - t
    ch.close()
    got, me = rx.recv()
    seqs = [g[0] for g in got]
    assert all(g[2] for g in got)
    assert seqs == sorted(set(seqs)), "out of order or twice: %s" % seqs
    assert seqs[-1] == n - 1, "the subscriber did not end on the newest array: %s" % seqs
    assert len(seqs) < n // 2, "a subscriber sleeping 20 ms per array got %d of %d" % (len(seqs), n)
    assert me[0]["received"] == len(seqs)
    assert me[0]["dropped"] == n - len(seqs)
    st = ch.stat()                              # while it is still attached
    assert st.subscribers == 1 and st.dropped == n - len(seqs)
    assert [s.pid for s in ch.subscribers()] == [p.pid]
    done.set()
    joined(p)
    # what the subscriber would have needed for every array: 4 s
    assert took < 0.02 * n / 2, "the publisher was held back (%.3f s)" % took
    ch.detach()


def test_latest_value_writer_and_readers(shm_name):
    ctx = mp.get_context("spawn")
    n = 150
    v = ndchan.LatestValue((4,), np.float64, shm_name)
    assert v.get(timeout=5).tolist() == [0.0] * 4 and v.seq == 0   # the initial value
    rx, tx = ctx.Pipe(duplex=False)
    reader = start(ctx, kids.value_reader, v, float(n), tx)
    writer = start(ctx, kids.value_writer, v, n, 0.002)
    what = rx.recv()
    joined(writer, reader)
    assert what[0] == "ok", what
    seen, slowest = what[1], what[2]
    assert seen == sorted(seen) and seen[-1] == n, seen
    assert slowest < 0.5, "a get() took %.3f s" % slowest
    # a reader that comes late gets the current value at once
    rx, tx = ctx.Pipe(duplex=False)
    late = start(ctx, kids.value_late_reader, shm_name, tx)
    value, _ = rx.recv()
    joined(late)
    assert value == [float(n)] * 4
    # here: the newest, then the same again, then a newer one by wait()
    assert v.get().tolist() == [float(n)] * 4
    assert v.get().tolist() == [float(n)] * 4
    with pytest.raises(TimeoutError):
        v.wait(timeout=0.05)
    v.set([1, 2, 3, 4])
    assert v.wait(timeout=5).tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        v.set(np.zeros(5))                      # not the value's shape
    v.detach()


def test_a_subscriber_holds_at_most_max_sub_loans():
    pub = ndchan.Channel.create(slots=ndchan.MAX_SUB_LOANS + 4, slot_bytes=4096, broadcast=True)
    sub = ndchan.Channel.from_fd(pub.fd, subscribe=True)
    for i in range(ndchan.MAX_SUB_LOANS + 2):
        pub.send(frame(i), tag=i)
    loans = [sub.acquire(timeout=0) for _ in range(ndchan.MAX_SUB_LOANS)]
    assert sub.subscribers()[0].loans == ndchan.MAX_SUB_LOANS
    with pytest.raises(ndchan.TooManyLoans) as e:
        sub.acquire(timeout=0)
    assert e.value.errno == errno.ENOBUFS and isinstance(e.value, OSError)
    del loans[0]                                # one view fewer: one loan back
    assert sub.acquire(timeout=0).tag == ndchan.MAX_SUB_LOANS
    del loans
    sub.detach()
    pub.detach()


def test_options_and_errors():
    with pytest.raises(ValueError, match="broadcast"):
        ndchan.Channel.create(slots=2, history=1)
    with pytest.raises(ValueError, match="broadcast"):
        ndchan.Channel.create(slots=2, slow_policy="latest")
    with pytest.raises(ValueError, match="slow_policy"):
        ndchan.Channel.create(slots=2, broadcast=True, slow_policy="newest")
    with pytest.raises(OSError) as e:
        ndchan.Channel.create(slots=2, broadcast=True, history=2)   # at most slots - 1
    assert e.value.errno == errno.EINVAL
    q = ndchan.Channel.create(slots=2, slot_bytes=4096)
    st = q.stat()
    assert (st.broadcast, st.subscribers, st.dropped) == (False, 0, 0)
    for call in (q.subscribe, q.subscribers, lambda: ndchan.Channel.from_fd(q.fd, subscribe=True)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL and "not a broadcast channel" in str(e.value)
    with pytest.raises(TimeoutError):
        ndchan.Channel.create(slots=2, slot_bytes=4096, broadcast=True).wait_subscribers(1, timeout=0.01)
    q.detach()
