#!/usr/bin/python3
"""One asyncio event loop receiving from several producer processes at once:
a task per channel awaits ch.recv_msg_async(), which sleeps on the channel's
notify fd (loop.add_reader) instead of blocking the loop or using a thread.
Each producer sends -n arrays and closes its channel; each task ends at its
end of stream. The script checks every array arrived once, in order.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/asyncio_consumer.py
"""
import argparse
import asyncio
import multiprocessing as mp
import time

import numpy as np

import ndchan


def producer(ch, k, n):
    for i in range(n):
        ch.send(np.full((64, 64), k * 1_000_000 + i, dtype=np.int64), tag=i)
        if i % 10 == 0:
            time.sleep(0.001)            # an uneven pace: the tasks interleave
    ch.close()                           # end of stream


async def consume(k, ch):
    seen = 0
    while True:
        try:
            m = await ch.recv_msg_async()
        except ndchan.EndOfStream:
            return k, seen
        assert m.tag == seen and m.array[0, 0] == k * 1_000_000 + seen, (k, seen, m.tag)
        seen += 1


async def main(chans, n):
    ticks = 0

    async def ticker():                  # the loop stays free while the tasks wait
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    done = await asyncio.gather(*(consume(k, ch) for k, ch in enumerate(chans)))
    t.cancel()
    return done, ticks


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500, help="arrays per producer")
    ap.add_argument("-p", type=int, default=3, help="producer processes")
    args = ap.parse_args()
    chans = [ndchan.Channel.create(slots=4, slot_bytes=64 * 64 * 8) for _ in range(args.p)]
    procs = [mp.Process(target=producer, args=(ch, k, args.n)) for k, ch in enumerate(chans)]
    for p in procs:
        p.start()
    t0 = time.monotonic()
    done, ticks = asyncio.run(main(chans, args.n))
    dt = time.monotonic() - t0
    for p in procs:
        p.join()
        assert p.exitcode == 0
    for k, seen in done:
        assert seen == args.n, (k, seen)
        print("channel %d: %d arrays, in order" % (k, seen))
    print("%d arrays in %.3f s; the loop ran its ticker %d times meanwhile"
          % (args.n * args.p, dt, ticks))
