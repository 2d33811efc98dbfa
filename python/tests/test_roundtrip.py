"""Every ndchan dtype x shapes x strides through send/recv, recv_into and loans."""
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from hypothesis.extra import numpy as hnp

import ndchan

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]

CH = None


def chan():
    global CH
    if CH is None:
        CH = ndchan.Channel.create(slots=2, slot_bytes=1 << 20)
    return CH


@st.composite
def strided_arrays(draw):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
    base = draw(hnp.arrays(dt, shape, elements=hnp.from_dtype(dt, allow_nan=False)
                           if dt.kind in "fc" else None))
    # a view with any strides: reversed, stepped, transposed, broadcast
    view = base
    if view.ndim:
        steps = tuple(draw(st.sampled_from([1, -1, 2, -2])) for _ in range(view.ndim))
        view = view[tuple(slice(None, None, s) for s in steps)]
        if draw(st.booleans()):
            view = view.transpose(draw(st.permutations(range(view.ndim))))
    if draw(st.booleans()) and view.ndim < 5:
        view = np.broadcast_to(view, (draw(st.integers(1, 3)),) + view.shape)
    return view


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(strided_arrays(), st.integers(0, 2**64 - 1))
def test_send_recv_roundtrip(a, tag):
    ch = chan()
    ch.send(a, tag=tag)
    m = ch.recv_msg()
    assert m.tag == tag and m.array.dtype == a.dtype and m.array.shape == a.shape
    np.testing.assert_array_equal(m.array, a)
    ch.send(a)
    out = np.empty(a.shape, a.dtype)
    info = ch.recv_into(out)
    assert info.shape == a.shape and info.dtype == a.dtype
    np.testing.assert_array_equal(out, a)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(strided_arrays())
def test_loan_roundtrip(a):
    ch = chan()
    with ch.reserve(a.shape, a.dtype, tag=7) as w:
        w[...] = a
    ln = ch.acquire()
    with ln as r:
        assert r.dtype == a.dtype and r.shape == a.shape and not r.flags.writeable
        np.testing.assert_array_equal(r, a)
    assert ln.tag == 7
    del r
    assert ch.stat().loaned == 0


@pytest.mark.parametrize("dt", DTYPES)
def test_queue_keeps_every_dtype(dt):
    q = ndchan.Queue(2, slot_bytes=4096)
    a = (np.arange(24) % 2).astype(dt).reshape(2, 3, 4)[:, ::-1]
    q.put(a)
    b = q.get()
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)
