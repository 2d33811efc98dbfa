"""Channels in child processes: every start method, every way multiprocessing
passes an object; a child killed mid-loan; Ctrl-C while blocked."""
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

import ndchan
import mp_children as kids

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


def check_doubled(ch, procs):
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    m = ch.recv_msg(timeout=5)
    np.testing.assert_array_equal(m.array, np.arange(6.0).reshape(2, 3) * 2)
    assert m.tag != os.getpid()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("named", [False, True])
def test_process_argument(method, named, shm_name):
    ctx = mp.get_context(method)
    ch = ndchan.Channel.create(shm_name if named else None, slots=2, slot_bytes=4096)
    ch.send(np.arange(6.0).reshape(2, 3))
    p = ctx.Process(target=kids.double_back, args=(ch,))
    p.start()
    check_doubled(ch, [p])
    ch.detach()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("via", ["queue", "pipe"])
def test_through_queue_or_pipe(method, via):
    ctx = mp.get_context(method)
    ch = ndchan.Channel.create(slots=2, slot_bytes=4096)
    ch.send(np.arange(6.0).reshape(2, 3))
    if via == "queue":
        conn = ctx.Queue()
    else:
        conn, tx = ctx.Pipe()
    p = ctx.Process(target=kids.double_back_from, args=(conn,))
    p.start()
    # sent after the start: a fork while the queue's feeder thread pickles
    # is multiprocessing's own hazard, not the channel's
    if via == "queue":
        conn.put(ch)
    else:
        tx.send(ch)
    check_doubled(ch, [p])
    ch.detach()


@pytest.mark.parametrize("method", METHODS)
def test_pool_initializer(method):
    ctx = mp.get_context(method)
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096)
    for i in range(4):
        ch.send(np.full(3, float(i)))
    with ctx.Pool(2, initializer=kids.pool_init, initargs=(ch,)) as pool:
        got = sorted(pool.map(kids.pool_work, [1, 1, 1, 1], chunksize=1))
    assert got == [0.0, 3.0, 6.0, 9.0]
    assert ch.stat().loaned == 0
    ch.detach()


def test_nothing_registered_with_resource_tracker(monkeypatch):
    from multiprocessing import resource_tracker
    calls = []
    monkeypatch.setattr(resource_tracker, "register", lambda *a: calls.append(a))
    ctx = mp.get_context("spawn")
    ch = ndchan.Channel.create(slots=2, slot_bytes=4096)
    ch.send(np.arange(6.0).reshape(2, 3))
    p = ctx.Process(target=kids.double_back, args=(ch,))
    p.start()
    check_doubled(ch, [p])
    assert calls == []


@pytest.mark.parametrize("reserve", [False, True])
def test_child_killed_mid_loan(reserve):
    ctx = mp.get_context("fork")
    ch = ndchan.Channel.create(slots=1, slot_bytes=4096)
    if not reserve:
        ch.send(np.ones(4))
    ready = ctx.Event()
    p = ctx.Process(target=kids.hold_loan, args=(ch, ready, reserve))
    p.start()
    assert ready.wait(20)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    if reserve:
        # the only sender died holding its reservation: nothing published,
        # a receiver learns that every sender is gone
        t0 = time.monotonic()
        with pytest.raises(ndchan.PeerDead) as e:
            ch.recv(timeout=5)
        assert time.monotonic() - t0 < 1 and e.value.errno == 130
    else:
        # the dead receiver's slot comes back: a producer can send again
        ch.send(np.full(4, 2.0), timeout=5)
        np.testing.assert_array_equal(ch.recv(timeout=5), np.full(4, 2.0))
    assert ch.stat().loaned == 0
    ch.detach()


def test_ctrl_c_while_blocked_in_get():
    ctx = mp.get_context("fork")
    q = ndchan.Queue(2, slot_bytes=4096)
    ready = ctx.Event()
    report, tx = ctx.Pipe(duplex=False)
    p = ctx.Process(target=kids.blocked_get, args=(q, ready, tx))
    p.start()
    assert ready.wait(20)
    time.sleep(0.3)                                # asleep in the kernel by now
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    assert report.poll(5)
    what, t1, loaned, empty = report.recv()
    assert what == "interrupted"
    assert t1 - t0 < 0.1, "KeyboardInterrupt after %.0f ms" % ((t1 - t0) * 1e3)
    assert loaned == 0 and empty                   # the channel is as it was
    q.put(np.arange(5.0))
    assert report.recv() == ("after", 10.0)
    p.join(10)
    assert p.exitcode == 0
