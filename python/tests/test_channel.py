"""The Channel API: create/open, copies, loans, iteration, state, errors."""
import errno
import os
import stat as st
import threading
import time

import numpy as np
import pytest

import ndchan


def test_send_recv_keeps_values_tag_and_seq(chan):
    for i in range(3):
        chan.send(np.arange(12, dtype=np.int16).reshape(3, 4) * i, tag=100 + i)
    for i in range(3):
        m = chan.recv_msg()
        assert m.tag == 100 + i and m.seq == i
        assert m.array.dtype == np.int16 and m.array.shape == (3, 4)
        np.testing.assert_array_equal(m.array, np.arange(12).reshape(3, 4) * i)
        assert m.array.flags.writeable and m.array.flags.c_contiguous


def test_recv_into_preallocated(chan):
    src = np.random.default_rng(1).random((5, 7))
    chan.send(src[:, ::-1], tag=9)
    out = np.empty((5, 7))
    info = chan.recv_into(out)
    assert info.shape == (5, 7) and info.dtype == np.float64 and info.tag == 9
    np.testing.assert_array_equal(out, src[:, ::-1])


def test_recv_into_too_small_keeps_the_array(chan):
    chan.send(np.arange(100.0))
    with pytest.raises(OSError) as e:
        chan.recv_into(np.empty(10))
    assert e.value.errno == errno.EMSGSIZE
    np.testing.assert_array_equal(chan.recv(), np.arange(100.0))


def test_broadcast_and_zero_dim_and_empty(chan):
    chan.send(np.broadcast_to(np.float32(2.5), (3, 4)))
    a = chan.recv()
    assert a.shape == (3, 4) and (a == 2.5).all()
    chan.send(np.array(7, dtype=np.uint8))
    a = chan.recv()
    assert a.shape == () and a == 7
    chan.send(np.zeros((0, 3)))
    assert chan.recv().shape == (0, 3)


def test_reserve_commit_and_acquire_in_place(chan):
    with chan.reserve((4, 5), np.float32, tag=3) as a:
        assert a.flags.writeable and a.shape == (4, 5) and a.dtype == np.float32
        a[:] = np.arange(20).reshape(4, 5)
    assert not a.flags.writeable                 # committed: no more writes through it
    ln = chan.acquire()
    with ln as b:
        assert not b.flags.writeable
        np.testing.assert_array_equal(b, np.arange(20).reshape(4, 5))
        with pytest.raises(ValueError):
            b[0, 0] = 1
    assert ln.tag == 3 and ln.seq == 0 and ln.shape == (4, 5)


def test_reserve_cancelled_by_an_exception(chan):
    with pytest.raises(RuntimeError):
        with chan.reserve(10, np.int64) as a:
            a[:] = 1
            raise RuntimeError("could not produce it")
    del a
    s = chan.stat()
    assert s.free == s.slots and s.sent == 0
    with pytest.raises(BlockingIOError):
        chan.recv(timeout=0)


def test_iteration_until_end_of_stream(chan):
    t = threading.Thread(target=lambda: [chan.send(np.full(3, i)) for i in range(10)] and chan.close())
    t.start()
    got = [int(a[0]) for a in chan]
    t.join()
    assert got == list(range(10))


def test_views_iteration(chan):
    for i in range(3):
        chan.send(np.full(2, i))
    chan.close()
    assert [int(v[1]) for v in chan.views()] == [0, 1, 2]


def test_end_of_stream_and_closed_errors(chan):
    chan.send(np.ones(2))
    chan.close()
    with pytest.raises(ndchan.ChannelClosed) as e:
        chan.send(np.ones(2))
    assert isinstance(e.value, BrokenPipeError) and isinstance(e.value, EOFError)
    assert e.value.errno == errno.EPIPE
    chan.recv()                                   # drained first ...
    with pytest.raises(ndchan.EndOfStream) as e:  # ... then end of stream
        chan.recv()
    assert isinstance(e.value, EOFError)
    assert chan.stat().closed


def test_timeouts(chan):
    with pytest.raises(BlockingIOError):
        chan.recv(timeout=0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        chan.acquire(timeout=0.12)
    assert 0.1 <= time.monotonic() - t0 < 1
    assert e.value.errno == errno.ETIMEDOUT
    with pytest.raises(ValueError):
        chan.recv(timeout=-1)


def test_too_big_is_oserror_with_detail(chan):
    with pytest.raises(OSError) as e:
        chan.send(np.zeros(1 << 20))               # 8 MiB > 1 MiB slots
    assert e.value.errno == errno.E2BIG
    assert "slot" in str(e.value)


def test_refused_dtypes(chan):
    for bad in (np.array(["a", "b"]), np.array([object(), 1], dtype=object),
                np.zeros(3, dtype=[("x", "f8"), ("y", "i4")]), np.zeros(2, dtype="M8[s]"),
                np.zeros(2, dtype=np.longdouble)):
        with pytest.raises(TypeError):
            chan.send(bad)
    for dt in (object, "U3", [("x", "f8")]):
        with pytest.raises(TypeError):
            chan.reserve(3, dt)


def test_bfloat16_without_ml_dtypes_is_a_clear_error(chan):
    try:
        import ml_dtypes  # noqa: F401
        pytest.skip("ml_dtypes is installed")
    except ImportError:
        pass
    with pytest.raises(TypeError, match="ml_dtypes"):
        chan.reserve(3, "bfloat16")
    ch = chan
    ch._send(np.zeros(3, np.uint16), ndchan._ndchan.BF16, 0, None)   # a C peer's bfloat16
    with pytest.raises(TypeError, match="ml_dtypes"):
        ch.recv()


def test_non_native_byte_order_is_converted(chan):
    be = np.arange(6, dtype=">i4").reshape(2, 3)
    chan.send(be)
    a = chan.recv()
    assert a.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(a, be)
    with chan.reserve(2, ">f8") as w:                 # reservations are native
        assert w.dtype == np.dtype("=f8")


def test_named_open_wait_mode_and_unlink(shm_name):
    got = {}

    def late_open():
        got["ch"] = ndchan.Channel.open(shm_name, timeout=5)

    t = threading.Thread(target=late_open)
    t.start()
    time.sleep(0.1)
    ch = ndchan.Channel.create(shm_name, slots=2, slot_bytes=4096, mode=0o640)
    t.join()
    peer = got["ch"]
    assert peer.name == shm_name and ch.stat().attached == 2    # a handle each
    assert st.S_IMODE(os.stat("/dev/shm/" + shm_name).st_mode) == 0o640
    ch.send(np.arange(3))
    np.testing.assert_array_equal(peer.recv(), np.arange(3))
    ro = ndchan.Channel.open(shm_name, readonly=True)
    with pytest.raises(PermissionError):
        ro.send(np.arange(3))
    ch.unlink()
    with pytest.raises(FileNotFoundError):
        ndchan.Channel.open(shm_name)
    with pytest.raises(TimeoutError):
        ndchan.Channel.open(shm_name, timeout=0.1)
    for c in (ro, peer, ch):
        c.detach()


def test_create_errors(shm_name):
    ch = ndchan.Channel.create(shm_name)
    with pytest.raises(FileExistsError):
        ndchan.Channel.create(shm_name)
    with pytest.raises(OSError) as e:
        ndchan.Channel.create(slots=ndchan._ndchan.MAX_SLOTS + 1)
    assert e.value.errno == errno.EINVAL
    ch.detach()


def test_threads_share_a_channel():
    ch = ndchan.Channel.create(slots=2, slot_bytes=4096)
    n, got = 200, []

    def consume():
        for a in ch:
            got.append(int(a[0]))

    cons = [threading.Thread(target=consume) for _ in range(2)]
    prods = [threading.Thread(target=lambda k=k: [ch.send(np.array([k * n + i])) for i in range(n)])
             for k in range(2)]
    for t in cons + prods:
        t.start()
    for t in prods:
        t.join()
    ch.close()
    for t in cons:
        t.join()
    assert sorted(got) == list(range(2 * n))


def test_detach_makes_calls_fail(chan):
    ch = ndchan.Channel.create()
    ch.detach()
    assert ch.detached
    with pytest.raises(ValueError):
        ch.send(np.ones(1))
    with ndchan.Channel.create() as c2:
        c2.send(np.ones(1))
    assert c2.detached


def test_npy_write_and_read(chan, tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    ndchan.npy_write(a, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    chan.npy_read(tmp_path / "a.npy", tag=4)
    m = chan.recv_msg()
    assert m.tag == 4
    np.testing.assert_array_equal(m.array, a)


def test_wait_drained(chan):
    chan.wait_drained(timeout=0)
    chan.send(np.ones(3))
    with pytest.raises(BlockingIOError):
        chan.wait_drained(timeout=0)
    t = threading.Timer(0.05, chan.recv)
    t.start()
    chan.wait_drained(timeout=5)
    t.join()
    assert ndchan.__version__.count(".") == 2


@pytest.mark.parametrize("call", ["reserve", "send", "acquire", "open"])
def test_ctrl_c_in_this_process(call, shm_name):
    import signal
    ch = ndchan.Channel.create(slots=1, slot_bytes=4096)
    if call in ("reserve", "send"):
        ch.send(np.ones(2))                          # full: the next one waits
    calls = {"reserve": lambda: ch.reserve(2, np.float64), "send": lambda: ch.send(np.ones(2)),
             "acquire": lambda: ch.acquire(), "open": lambda: ndchan.Channel.open(shm_name, timeout=None)}
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent = []
    timer = threading.Timer(0.2, lambda: (sent.append(time.monotonic()),
                                          signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            calls[call]()
        took = time.monotonic() - sent[0]
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert took < 0.1, "KeyboardInterrupt %.0f ms after SIGINT" % (took * 1e3)
    s = ch.stat()                                    # consistent: nothing half-done
    assert s.loaned == 0 and s.ready == (1 if call in ("reserve", "send") else 0)
    ch.detach()
