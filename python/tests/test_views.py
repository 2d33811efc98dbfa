"""Views that outlive their loans: the slot stays lent until the last view of
it is gone, and the channel stays mapped until its last loan is gone."""
import gc
import threading
import time

import numpy as np
import pytest

import ndchan


def one_slot():
    return ndchan.Channel.create(slots=1, slot_bytes=4096)


def slot_is_free(ch):
    """Whether a producer can get the one slot now (it is given back at once)."""
    try:
        with ch.reserve(1, np.uint8, timeout=0):
            raise KeyError
    except BlockingIOError:
        return False
    except KeyError:
        return True


def send_and_keep(ch, keep):
    ch.send(np.arange(8.0))
    with ch.acquire() as a:
        keep(a)


@pytest.mark.parametrize("how", ["list", "slice", "memoryview", "frombuffer", "reshape", "dict"])
def test_view_kept_after_the_block_keeps_the_slot(how):
    ch = one_slot()
    kept = []
    keepers = {
        "list": lambda a: kept.append(a),
        "slice": lambda a: kept.append(a[2:5]),
        "memoryview": lambda a: kept.append(memoryview(a)),
        "frombuffer": lambda a: kept.append(np.frombuffer(a.base if a.base is not None else a)),
        "reshape": lambda a: kept.append(a.reshape(2, 4).T),
        "dict": lambda a: kept.append({"x": [a[::2]]}),
    }
    send_and_keep(ch, keepers[how])
    gc.collect()
    assert ch.stat().loaned == 1 and ch.loans == 1
    assert not slot_is_free(ch)                    # nobody can overwrite what we see
    assert bytes(np.asarray(kept[0]["x"][0] if how == "dict" else kept[0]).tobytes())
    kept.clear()
    assert ch.stat().loaned == 0 and slot_is_free(ch)
    ch.detach()


def test_the_as_name_is_the_last_view():
    ch = ndchan.Channel.create(slots=2, slot_bytes=4096)
    ch.send(np.ones(4))
    with ch.acquire() as a:
        pass
    assert ch.stat().loaned == 1                   # `a` still names the slot
    assert a.sum() == 4                            # and reads it, safely
    del a
    assert ch.stat().loaned == 0


def test_view_in_a_reference_cycle_waits_for_the_collector():
    ch = one_slot()
    ch.send(np.arange(3))
    with ch.acquire() as a:
        cyc = [a[1:]]
        cyc.append(cyc)
    del a, cyc
    assert ch.stat().loaned == 1                   # the cycle is not collected yet
    gc.collect()
    assert ch.stat().loaned == 0
    ch.detach()


def test_view_in_another_thread():
    ch = one_slot()
    ch.send(np.arange(500, dtype=np.int64))
    box, go, done = [], threading.Event(), threading.Event()

    def reader():
        go.wait()
        v = box.pop()
        s = 0
        for _ in range(50):
            s = int(v.sum())
            time.sleep(0.002)
        box.append(s)
        del v
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    with ch.acquire() as a:
        box.append(a[::3])
    del a
    go.set()
    time.sleep(0.02)
    assert ch.stat().loaned == 1                   # the thread still reads it
    done.wait(5)
    t.join()
    assert box == [int(np.arange(500)[::3].sum())]
    assert ch.stat().loaned == 0
    ch.detach()


def test_reservation_view_kept_after_an_exception_is_given_back_only_when_dropped():
    ch = one_slot()
    kept = []
    with pytest.raises(ZeroDivisionError):
        with ch.reserve(4, np.float32) as w:
            kept.append(w[1:])
            1 / 0
    del w
    assert not slot_is_free(ch)                   # still ours: kept[0] may write to it
    kept[0][:] = 5                                # harmless: never published
    kept.clear()
    assert slot_is_free(ch) and ch.stat().sent == 0
    ch.detach()


def test_committed_array_takes_no_new_views():
    ch = one_slot()
    r = ch.reserve(2, np.int32)
    loan = r._loan
    with r as w:
        w[:] = 1
    assert not w.flags.writeable
    with pytest.raises(BufferError):
        memoryview(loan)
    with pytest.raises(ValueError):
        r.commit()
    del w, loan
    np.testing.assert_array_equal(ch.recv(), [1, 1])
    ch.detach()


def test_channel_outlives_detach_and_del_while_views_exist():
    ch = ndchan.Channel.create(slots=2, slot_bytes=1 << 16)
    ch.send(np.arange(4096, dtype=np.float64))
    with ch.acquire() as a:
        pass
    ch.detach()                                    # deferred: a loan is alive
    assert ch.detached and ch.loans == 1
    with pytest.raises(ValueError):
        ch.recv(timeout=0)
    del ch
    gc.collect()
    assert a[4095] == 4095.0                       # the mapping is still there
    del a                                          # now the handle is freed


def test_many_loans_and_views_then_gc():
    ch = ndchan.Channel.create(slots=8, slot_bytes=4096)
    views = []
    for i in range(8):
        ch.send(np.full(16, i, dtype=np.uint16))
    for i in range(8):
        ln = ch.acquire()
        views.append(ln.array[i % 4:])
        ln.release()
    del ln
    assert ch.stat().loaned == 8
    assert [int(v[0]) for v in views] == list(range(8))
    views = views[4:]
    assert ch.stat().loaned == 4
    del views
    gc.collect()
    assert ch.stat().loaned == 0
    ch.detach()


def test_detach_while_another_thread_waits():
    for rnd in range(20):
        ch = ndchan.Channel.create(slots=2, slot_bytes=4096)
        out = []

        def waiter():
            try:
                with ch.acquire(timeout=5) as a:
                    out.append(float(a.sum()))
            except ValueError as e:          # detached while it waited
                out.append(str(e))

        t = threading.Thread(target=waiter)
        t.start()
        if rnd % 2:
            ch.send(np.ones(4))              # the waiter may get it first, or not
        time.sleep(0.001 * (rnd % 5))
        ch.detach()
        t.join(5)
        assert not t.is_alive() and len(out) == 1
        assert out[0] == 4.0 or "detached" in out[0]
        del ch
        gc.collect()
