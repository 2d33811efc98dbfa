#!/usr/bin/python3
"""Broadcast channels from Python: one camera, two viewers that each get
every frame, and a latest value that a writer updates while readers look.

Part 1, block policy: a publisher sends frames to two subscriber processes,
one fast and one that takes 5 ms per frame; nothing is lost, so the
publisher runs at the slow one's pace.
Part 2, latest policy: the same with slow_policy="latest": the publisher
keeps its own pace, the slow subscriber gets the newest frame each time and
the ones it skipped count as dropped.
Part 3, LatestValue (multiprocessing.Value's counterpart): a writer process
publishes a pose 500 times a second; a reader samples it whenever it likes
and always sees the newest whole pose, never a torn one.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/broadcast.py
"""
import argparse
import multiprocessing as mp
import os
import time

import numpy as np

import ndchan


def viewer(ch, seconds_per_frame, results):
    ch.subscribe()                       # a subscription is this process's own
    seqs = []
    for m in iter(lambda: next_frame(ch), None):
        assert (m.array == m.seq).all()  # frame seq carries the value seq
        seqs.append(m.seq)
        time.sleep(seconds_per_frame)
    me = [s for s in ch.subscribers() if s.pid == os.getpid()][0]
    results.put((seconds_per_frame, len(seqs), me.dropped, seqs[-1] if seqs else None))


def next_frame(ch):
    try:
        return ch.recv_msg()
    except ndchan.EndOfStream:
        return None


def broadcast(policy, n, ctx):
    cam = ndchan.Channel.create(slots=8, slot_bytes=240 * 320, broadcast=True, slow_policy=policy)
    results = ctx.Queue()
    viewers = [ctx.Process(target=viewer, args=(cam, s, results)) for s in (0, 0.005)]
    for p in viewers:
        p.start()
    cam.wait_subscribers(2, timeout=30)  # frames before a subscription are not for it
    t = time.monotonic()
    for i in range(n):
        cam.send(np.full((240, 320), i, np.uint8), tag=i)
        time.sleep(0.001)                # a 1 kHz camera
    took = time.monotonic() - t
    cam.close()
    got = sorted(results.get(timeout=30) for _ in viewers)
    for p in viewers:
        p.join()
    print("%-6s publisher: %d frames in %.2f s" % (policy, n, took))
    for spf, count, dropped, last in got:
        print("       %s viewer: %d frames, %d dropped, last frame %s"
              % ("slow" if spf else "fast", count, dropped, last))
        assert last == n - 1 and count + dropped == n
        if policy == "block":
            assert count == n and dropped == 0
    cam.detach()


def pose_writer(pose, n):
    for i in range(1, n + 1):
        pose.set([i, i, i])              # never waits for readers
        time.sleep(0.002)


def latest_value(n, ctx):
    pose = ndchan.LatestValue(3, np.float64)            # [0, 0, 0] at first
    w = ctx.Process(target=pose_writer, args=(pose, n))
    w.start()
    samples = []
    while not samples or samples[-1] < n:
        p = pose.get()                   # the newest, at once
        assert p[0] == p[1] == p[2], "a torn pose"
        if not samples or p[0] != samples[-1]:
            samples.append(p[0])
        time.sleep(0.01)                 # a reader that looks now and then
    w.join()
    assert samples == sorted(samples)
    print("latest value: the writer set %d poses, the reader saw %d of them, the last %s"
          % (n, len(samples), pose.get().tolist()))
    pose.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="frames per part (default 200)")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    broadcast("block", args.n, ctx)
    broadcast("latest", args.n, ctx)
    latest_value(args.n, ctx)


if __name__ == "__main__":
    main()
