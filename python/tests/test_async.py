"""Readiness: notify fds and their arm loop, wait_any over several channels,
asyncio awaitables, with producers in other processes."""
import asyncio
import errno
import multiprocessing as mp
import os
import select
import signal
import time

import numpy as np
import pytest

import ndchan
import mp_children as kids

CTX = mp.get_context("fork")


def readable(fd, timeout=0):
    return bool(select.select([fd], [], [], timeout)[0])


def start(target, *args):
    p = CTX.Process(target=target, args=args)
    p.start()
    return p


def test_notify_fd_arm_loop():
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096)
    fd = ch.notify_fd("acquire")
    assert fd == ch.notify_fd() and fd >= 0
    assert not readable(fd)
    assert ch.arm() is False
    go = CTX.Event()
    p = start(kids.produce, ch, 7, 3, go)
    go.set()
    assert readable(fd, 10)
    got = []
    while len(got) < 3:                          # take until nothing, arm, poll
        try:
            got.append(ch.recv(timeout=0)[1])
            continue
        except BlockingIOError:
            pass
        if not ch.arm():
            assert readable(fd, 10)
    p.join(10)
    assert got == [0, 1, 2] and p.exitcode == 0
    # closed and drained: readable, and arm says what the take would
    assert readable(fd, 10)
    with pytest.raises(ndchan.EndOfStream):
        ch.arm()
    ch.detach()


def test_notify_fd_reserve_side():
    ch = ndchan.Channel.create(slots=1, slot_bytes=4096)
    fd = ch.notify_fd("reserve")
    assert readable(fd)                          # a free slot
    ch.send(np.zeros(2))
    with pytest.raises(BlockingIOError):
        ch.send(np.zeros(2), timeout=0)
    assert ch.arm("reserve") is False
    assert not readable(fd)
    p = start(kids.double_back, ch)              # takes the array (and sends one back)
    assert readable(fd, 10)
    p.join(10)
    ch.close()
    with pytest.raises(ndchan.ChannelClosed):
        ch.arm("reserve")
    with pytest.raises(ValueError):
        ch.notify_fd("sideways")
    ch.detach()


def test_wait_any_processes():
    chans = [ndchan.Channel.create(slots=4, slot_bytes=4096) for _ in range(3)]
    with pytest.raises(BlockingIOError):
        ndchan.wait_any(chans, timeout=0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ndchan.wait_any(chans, timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    p = start(kids.produce, chans[1], 1, 2)
    assert ndchan.wait_any(chans, timeout=10) == [1]
    assert chans[1].recv(timeout=0).tolist() == [1, 0]
    p.join(10)
    # channel 1: one array left, then its stream ended; 2 can reserve
    assert ndchan.wait_any([chans[0], (chans[1], "acquire"), (chans[2], "reserve")], 0) == [1, 2]
    chans[1].recv(timeout=0)
    assert ndchan.wait_any(chans, timeout=0) == [1]     # end of stream is ready
    with pytest.raises(ndchan.EndOfStream):
        chans[1].recv(timeout=0)
    # a sender killed: PeerDead names the entry
    ready = CTX.Event()
    q = start(kids.produce_then_hang, chans[2], 1, ready)
    assert ready.wait(20)
    assert ndchan.wait_any([chans[0], chans[2]], timeout=10) == [1]
    chans[2].recv(timeout=0)
    os.kill(q.pid, signal.SIGKILL)
    q.join(10)
    with pytest.raises(ndchan.PeerDead) as e:
        ndchan.wait_any([chans[0], chans[2]], timeout=10)
    assert e.value.index == 1 and e.value.errno == errno.EOWNERDEAD
    with pytest.raises(TypeError):
        ndchan.wait_any([object()], timeout=0)
    for ch in chans:
        ch.detach()


N = 200


async def consume(ch):
    out = []
    while True:
        try:
            m = await ch.recv_msg_async()
        except ndchan.EndOfStream:
            return out
        out.append((int(m.array[0]), int(m.array[1]), m.tag))


def test_asyncio_three_producers():
    chans = [ndchan.Channel.create(slots=4, slot_bytes=4096) for _ in range(3)]
    go = CTX.Event()
    procs = [start(kids.produce, ch, k, N, go) for k, ch in enumerate(chans)]

    async def main():
        tasks = [asyncio.create_task(consume(ch)) for ch in chans]
        await asyncio.sleep(0.05)                # every task awaits its fd
        go.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(main())
    for k, (res, p) in enumerate(zip(results, procs)):
        assert res == [(k, i, i) for i in range(N)]
        p.join(10)
        assert p.exitcode == 0
    for ch in chans:
        assert ch.stat().received == N
        ch.detach()


def test_asyncio_killed_producer_is_peer_dead():
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096)
    ready = CTX.Event()
    p = start(kids.produce_then_hang, ch, 3, ready)
    assert ready.wait(20)

    async def main():
        got = [int((await ch.recv_async())[0]) for _ in range(3)]
        asyncio.get_running_loop().call_later(0.1, os.kill, p.pid, signal.SIGKILL)
        with pytest.raises(ndchan.PeerDead):
            await asyncio.wait_for(ch.recv_async(), 10)
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    p.join(10)
    ch.detach()


def test_asyncio_send_and_acquire_async():
    a, b = (ndchan.Channel.create(slots=2, slot_bytes=4096) for _ in range(2))
    p = start(kids.double_back, a)               # receives from a, sends to a doubled

    async def main():
        await a.send_async(np.arange(4.0))
        await asyncio.sleep(0.2)
        ln = await a.acquire_async()
        with ln as arr:
            r = arr.tolist()
        # a full channel: send_async waits for a free slot without blocking the loop
        await b.send_async(np.zeros(1))
        await b.send_async(np.zeros(1))
        pending = asyncio.create_task(b.send_async(np.ones(1)))
        await asyncio.sleep(0.1)
        assert not pending.done()
        assert b.recv(timeout=0).tolist() == [0.0]
        await asyncio.wait_for(pending, 10)
        return r

    assert asyncio.run(main()) == [0.0, 2.0, 4.0, 6.0]
    p.join(10)
    a.detach()
    b.detach()


def test_stat_history_and_slow_policy():
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096, broadcast=True, history=2,
                               slow_policy="latest")
    st = ch.stat()
    assert (st.history, st.slow_policy) == (2, ndchan.SLOW_LATEST)
    ch.detach()
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096, broadcast=True, history=1)
    assert (ch.stat().history, ch.stat().slow_policy) == (1, ndchan.SLOW_BLOCK)
    ch.detach()


def test_asyncio_waits_without_polling():
    """While nothing comes, an awaiting receive sleeps on its fd: one try
    before it sleeps, one when the array comes, none in between."""
    ch = ndchan.Channel.create(slots=4, slot_bytes=4096)
    tries = []
    take = ch.recv_msg
    ch.recv_msg = lambda timeout=None: (tries.append(timeout), take(timeout))[1]
    go = CTX.Event()
    p = start(kids.produce, ch, 5, 1, go)

    async def main():
        t = asyncio.create_task(ch.recv_async())
        await asyncio.sleep(0.3)
        assert tries == [0] and not t.done()
        go.set()
        return await asyncio.wait_for(t, 10)

    assert asyncio.run(main()).tolist() == [5, 0]
    assert tries == [0, 0]
    p.join(10)
    ch.detach()
