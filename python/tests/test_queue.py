"""ndchan.Queue as a drop-in for multiprocessing.Queue."""
import multiprocessing as mp
import queue
import time

import numpy as np
import pytest

import ndchan
import mp_children as kids


def test_empty_and_full():
    q = ndchan.Queue(2, slot_bytes=4096)
    assert q.empty() and not q.full() and q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    q.put(np.ones(3))
    q.put_nowait(np.ones(3))
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(np.ones(3), block=False)
    with pytest.raises(queue.Full):
        q.put(np.ones(3), timeout=0.05)
    with pytest.raises(ValueError):
        q.put(np.ones(3), timeout=-1)


def test_any_object_goes_through():
    q = ndchan.Queue(16, slot_bytes=1 << 16)
    objs = [None, 3, "text", (1, np.arange(3)), {"a": [1.5]}, np.array(["s"]),
            np.zeros(2, dtype=[("x", "f4")]), np.ma.masked_array([1, 2], [0, 1]), np.float32(2)]
    for o in objs:
        q.put(o)
    for o in objs:
        got = q.get()
        assert type(got) is type(o)
        if isinstance(o, np.ndarray):
            np.testing.assert_array_equal(got, o)
        elif isinstance(o, tuple):
            assert got[0] == o[0] and (got[1] == o[1]).all()
        else:
            assert got == o
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_tutorial_worker_with_sentinels(method):
    ctx = mp.get_context(method)
    qin, qout = ndchan.Queue(4, slot_bytes=1 << 16), ndchan.Queue(4, slot_bytes=1 << 16)
    p = ctx.Process(target=kids.queue_echo, args=(qin, qout))
    p.start()
    sent = [np.full((3, 3), i, dtype=np.float32) for i in range(20)]
    got = []
    for a in sent:
        qin.put(a)
        got.append(qout.get(timeout=20))
    qin.put(None)
    assert qout.get(timeout=20) is None
    p.join(20)
    assert p.exitcode == 0
    for a, b in zip(sent, got):
        np.testing.assert_array_equal(a, b)
