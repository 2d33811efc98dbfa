#!/usr/bin/python3
"""Python's own ways of moving numpy arrays between processes, measured the
way ndchan-bench measures its C transports, so the rows join its table.

  mp-queue  multiprocessing.Queue: put() pickles the array in a feeder
            thread and pushes the bytes through a pipe; get() unpickles.
  mp-pipe   multiprocessing.Pipe: send() pickles, recv() unpickles.
  shm-sem   the FloatChannel recipe: one shared_memory buffer and two
            semaphores (empty, full); the producer copies in, the consumer
            copies out.
  py-ndchan-loan  ndchan from Python, zero copy: the producer reserves a
            slot and stamps the ndarray view in place, commits; the consumer
            acquires a read-only view, checks it, releases.
  py-ndchan-copy  ndchan from Python, one copy each side: send() from the
            producer's array, recv_into() the consumer's preallocated one.
            (Both need the ndchan package: ndchan-bench puts the build
            tree's python/ on PYTHONPATH; otherwise their rows say why not.)

Every array is a float64 numpy array; the sender stamps a fixed sample of
64 words spread over it (the same words and values as bench/util.c) and the
receiver checks them on the array it received. Throughput: producer and
consumer pinned to the two CPUs, warm-up, then repetitions timed from the
start barrier to the consumer's last checked array. Latency: a ping-pong whose
timed path is send -> receive -> send back -> receive (stamping and checking
happen outside it, as in the C bench).

Output: one JSON object per line on stdout, one per measurement; a first
line {"skip": "..."} when numpy is missing. Run by ndchan-bench; standalone:

    /usr/bin/python3 bench/python/mp_bench.py --cpus 0,1 --tput-sizes 16777216
"""
import argparse
import json
import os
import resource
import sys
import time

try:
    import numpy as np
except ImportError as e:  # the bench prints this and goes on without us
    print(json.dumps({"skip": "numpy not available to %s (%s); install python3-numpy"
                      % (sys.executable, e)}), flush=True)
    sys.exit(0)

import multiprocessing as mp
from multiprocessing import shared_memory

CTX = mp.get_context("fork")
MASK = (1 << 64) - 1
PONG = 1 << 62
SAMPLE_WORDS = 64
MAX_SAMPLES = 200000


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


BASE = np.array([splitmix64(i) for i in range(SAMPLE_WORDS)], dtype=np.uint64)


class Sample:
    """Positions of the sample words in an array of n bytes (as util.c)."""

    def __init__(self, n):
        nelem = n // 8
        k = min(nelem, SAMPLE_WORDS)
        if k <= 1:
            self.pos = np.zeros(k, dtype=np.int64)
        else:
            self.pos = (np.arange(k, dtype=np.int64) * (nelem - 1)) // (k - 1)
        self.base = BASE[:k]

    def stamp(self, arr, seq):
        arr.view(np.uint64)[self.pos] = self.base ^ np.uint64(seq)

    def verify(self, arr, seq):
        got = arr.view(np.uint64)[self.pos]
        if not np.array_equal(got, self.base ^ np.uint64(seq)):
            raise RuntimeError("payload check failed at message %d" % (seq & (PONG - 1)))


# ---- links: one direction each ------------------------------------------------

class QueueLink:
    name = "mp-queue"

    def __init__(self, n, slots):
        self.q = CTX.Queue(maxsize=slots)
        self.n, self.slots = n, slots

    def open(self, tx):
        if tx:
            # put() pickles later, in the feeder thread: an array may be
            # written again only once the consumer has taken it. maxsize
            # bounds the arrays not yet taken, so slots+1 arrays suffice.
            self.ring = [np.zeros(self.n // 8) for _ in range(self.slots + 1)]
            self.k = 0

    def tx_begin(self):
        a = self.ring[self.k]
        self.k = (self.k + 1) % len(self.ring)
        self.cur = a
        return a

    def tx_end(self):
        self.q.put(self.cur)

    def rx_begin(self):
        return self.q.get()

    def rx_end(self):
        pass

    def close(self):
        pass


class PipeLink:
    name = "mp-pipe"

    def __init__(self, n, slots):
        self.r, self.w = CTX.Pipe(duplex=False)
        self.n = n

    def open(self, tx):
        if tx:
            self.buf = np.zeros(self.n // 8)

    def tx_begin(self):
        return self.buf

    def tx_end(self):
        self.w.send(self.buf)

    def rx_begin(self):
        return self.r.recv()

    def rx_end(self):
        pass

    def close(self):
        pass


class ShmLink:
    """FloatChannel: one shared buffer, semaphores empty (1) and full (0)."""
    name = "shm-sem"

    def __init__(self, n, slots):
        self.shm = shared_memory.SharedMemory(create=True, size=max(n, 8))
        self.empty = CTX.Semaphore(1)
        self.full = CTX.Semaphore(0)
        self.n = n

    def open(self, tx):
        self.shared = np.ndarray((self.n // 8,), dtype=np.float64, buffer=self.shm.buf)
        self.buf = np.zeros(self.n // 8)

    def tx_begin(self):
        return self.buf

    def tx_end(self):
        self.empty.acquire()
        np.copyto(self.shared, self.buf)
        self.full.release()

    def rx_begin(self):
        self.full.acquire()
        np.copyto(self.buf, self.shared)
        self.empty.release()
        return self.buf

    def rx_end(self):
        pass

    def close(self):
        del self.shared

    def destroy(self):
        self.shm.close()
        self.shm.unlink()


try:
    import ndchan
    NDCHAN_ERR = ""
except ImportError as e:
    ndchan = None
    NDCHAN_ERR = "ndchan not importable by %s (%s): build with -Dpython=enabled" % (sys.executable, e)


class NdchanLoanLink:
    """Zero copy: views of the slots themselves, given back on release."""
    name = "py-ndchan-loan"

    def __init__(self, n, slots):
        # slots None: the library's default (round trips, as the C rows).
        # Else two slots at least: the worker's last view of an array (its
        # local variable) lives until its step returns, which is when the slot
        # goes back, so one slot would make every hand-off wait on that return
        kw = {} if slots is None else {"slots": max(slots, 2)}
        self.ch = ndchan.Channel.create(slot_bytes=max(n, 8), **kw)
        self.slots = self.ch.stat().slots
        self.shape = (n // 8,)

    def open(self, tx):
        pass

    def tx_begin(self):
        self.res = self.ch.reserve(self.shape, np.float64)
        return self.res.array

    def tx_end(self):
        self.res.commit()
        self.res = None

    def rx_begin(self):
        self.loan = self.ch.acquire()
        return self.loan.array

    def rx_end(self):
        # the caller's reference to the view is the last: the slot goes back
        # when it returns (see ndchan's note on views)
        self.loan.release()
        self.loan = None

    def close(self):
        pass

    def destroy(self):
        self.ch.detach()


class NdchanCopyLink(NdchanLoanLink):
    """One copy each side: ndc_send from our array, ndc_recv into our buffer."""
    name = "py-ndchan-copy"

    def open(self, tx):
        self.buf = np.zeros(self.shape)

    def tx_begin(self):
        return self.buf

    def tx_end(self):
        self.ch.send(self.buf)

    def rx_begin(self):
        self.ch.recv_into(self.buf)
        return self.buf

    def rx_end(self):
        pass


LINKS = {c.name: c for c in (QueueLink, PipeLink, ShmLink, NdchanLoanLink, NdchanCopyLink)}


# ---- the two workers ----------------------------------------------------------------

def cpu_self():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def clamp(v, lo, hi):
    return int(max(lo, min(hi, v)))


def worker(w, mode, links, n, cfg, bar, shared, resq):
    try:
        os.sched_setaffinity(0, {cfg["cpus"][w]})
        smp = Sample(n)
        reps, rep_time, sleep_s = cfg["reps"], cfg["rep_time"], cfg["sleep_us"] * 1e-6
        out = {"w": w, "t_start": [], "t_end": [], "cpu": [], "lat": []}
        if mode == "throughput":
            l = links[0]
            l.open(w == 0)
            warm = max(clamp(32 * 2**20 / max(n, 1), 3, 1000), l_slots(l) + 1)

            def step(seq):
                if w == 0:
                    a = l.tx_begin()
                    smp.stamp(a, seq)
                    l.tx_end()
                else:
                    a = l.rx_begin()
                    smp.verify(a, seq)
                    l.rx_end()
        else:
            out_l, in_l = (links[0], links[1]) if w == 0 else (links[1], links[0])
            out_l.open(True)
            in_l.open(False)
            # every slot written in the first half, which does not calibrate
            warm = max(clamp(16 * 2**20 / max(n, 1), 4, 200), 2 * (l_slots(out_l) + 1))

            def step(seq):
                a = out_l.tx_begin()
                if w == 0:
                    smp.stamp(a, seq)
                    t0 = time.monotonic_ns()
                    out_l.tx_end()
                    b = in_l.rx_begin()
                    t1 = time.monotonic_ns()
                    smp.verify(b, seq | PONG)
                    in_l.rx_end()
                    if sleep_s:
                        time.sleep(sleep_s)
                    return t1 - t0
                smp.stamp(a, seq | PONG)
                b = in_l.rx_begin()
                out_l.tx_end()
                smp.verify(b, seq)
                in_l.rx_end()
                return 0

        bar.wait()
        seq = 0
        th = time.monotonic_ns()
        for i in range(warm):
            if i == warm // 2:
                th = time.monotonic_ns()
            step(seq)
            seq += 1
        if w == 0:
            per = (time.monotonic_ns() - th) * 1e-9 / max(1, warm - warm // 2)
            hi = (1 << 24) if mode == "throughput" else MAX_SAMPLES // reps
            shared.value = clamp(rep_time / max(per, 1e-9), 1 if mode == "throughput" else 3, hi)
        bar.wait()
        msgs = shared.value
        if mode == "throughput":
            # steady state, as in the C bench: the producer never pauses; the
            # consumer lets the first array fill the pipeline, then times
            # groups of msgs arrays back to back
            bar.wait()
            c0 = cpu_self()
            if w == 0:
                for i in range(1 + reps * msgs):
                    step(seq)
                    seq += 1
            else:
                step(seq)
                seq += 1
                out["t_start"].append(time.monotonic_ns())
                for r in range(reps):
                    for i in range(msgs):
                        step(seq)
                        seq += 1
                    out["t_end"].append(time.monotonic_ns())
                    if r + 1 < reps:
                        out["t_start"].append(out["t_end"][-1])
            out["cpu"].append(cpu_self() - c0)
            reps = 0
        for r in range(reps):
            bar.wait()
            out["t_start"].append(time.monotonic_ns())
            c0 = cpu_self()
            for i in range(msgs):
                dt = step(seq)
                seq += 1
                if w == 0 and mode == "latency":
                    out["lat"].append(dt)
            out["t_end"].append(time.monotonic_ns())
            out["cpu"].append(cpu_self() - c0)
        bar.wait()
        out["msgs"] = msgs
        out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        resq.put(out)
    except Exception as e:  # reported in the table, never a hang
        resq.put({"w": w, "error": "%s: %s" % (type(e).__name__, e)})
        bar.abort()


def l_slots(l):
    return getattr(l, "slots", 1)


def run_cell(name, mode, n, cfg):
    rec = {"kind": mode, "transport": name, "bytes": n, "cpu_a": cfg["cpus"][0],
           "cpu_b": cfg["cpus"][1], "variant": cfg.get("variant", ""), "ok": 0, "err": ""}
    if mode == "latency" and cfg["sleep_us"]:
        rec["variant"] = "peer-asleep"
    cls = LINKS[name]
    slots = (4 if n <= 64 * 2**20 else 2) if mode == "throughput" else 1
    if mode == "latency" and name.startswith("py-ndchan"):
        slots = None   # the library's default
    links = [cls(n, slots) for _ in range(1 if mode == "throughput" else 2)]
    if hasattr(links[0], "ch"):
        rec["slots"] = links[0].slots
    bar = CTX.Barrier(2)
    shared = CTX.Value("q", 0, lock=False)
    resq = CTX.Queue()
    procs = [CTX.Process(target=worker, args=(w, mode, links, n, cfg, bar, shared, resq)) for w in (0, 1)]
    for p in procs:
        p.start()
    res = {}
    deadline = time.monotonic() + cfg["timeout"]
    try:
        while len(res) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out after %.0f s" % cfg["timeout"])
            try:
                o = resq.get(timeout=min(left, 1.0))
            except Exception:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a worker died (exit %s)" % [p.exitcode for p in procs])
                continue
            if "error" in o:
                raise RuntimeError(o["error"])
            res[o["w"]] = o
    except Exception as e:
        rec["err"] = str(e)
        for p in procs:
            p.kill()
    for p in procs:
        p.join(5)
    for l in links:
        if hasattr(l, "destroy"):
            l.destroy()
    if rec["err"]:
        return rec
    a, b = res[0], res[1]
    reps = len(b["t_end"]) if mode == "throughput" else len(a["t_end"])
    msgs = a["msgs"]
    cpu = sum(a["cpu"]) + sum(b["cpu"])
    rec.update(ok=1, reps=reps, msgs=msgs, peak_mib_a=a["maxrss_kib"] / 1024.0,
               peak_mib_b=b["maxrss_kib"] / 1024.0)
    if mode == "throughput":
        g = sorted(msgs * n / ((b["t_end"][r] - b["t_start"][r]) * 1e-9) / 1e9 for r in range(reps))
        rec.update(gbps_med=median(g), gbps_min=g[0], gbps_max=g[-1])
        moved = (msgs * reps + 1) * n
    else:
        lat = a["lat"]
        per = len(lat) // reps
        p50s = sorted(pct(sorted(lat[i * per:(i + 1) * per]), 0.5) / 1e3 for i in range(reps))
        s = sorted(lat)
        rec.update(nsamples=len(s), p50=pct(s, 0.5) / 1e3, p50_min=p50s[0], p50_max=p50s[-1],
                   p99=pct(s, 0.99) / 1e3, p999=pct(s, 0.999) / 1e3, lat_min=s[0] / 1e3)
        moved = 2 * msgs * n * reps
    rec["cpu_s_per_gib"] = cpu / (moved / 2**30) if moved else 0
    return rec


def median(v):
    k = len(v)
    return v[k // 2] if k % 2 else 0.5 * (v[k // 2 - 1] + v[k // 2])


def pct(s, q):
    k = min(len(s) - 1, int(q * len(s)))
    return s[k]


def sizes(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpus", default="0,1")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rep-time", type=float, default=0.1)
    ap.add_argument("--sleep-us", type=int, default=1000, help="pause of the pinger in the peer-asleep case")
    ap.add_argument("--tput-sizes", default="4096,1048576,16777216")
    ap.add_argument("--lat-sizes", default="8,4096,1048576")
    ap.add_argument("--sleep-sizes", default="", help="latency sizes also run with the peer asleep")
    ap.add_argument("--transports", default=",".join(LINKS))
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--pretty", action="store_true", help="a table instead of JSON lines")
    o = ap.parse_args()
    cfg = {"cpus": [int(c) for c in o.cpus.split(",")], "reps": o.reps, "rep_time": o.rep_time,
           "sleep_us": 0, "timeout": o.timeout}
    if len(cfg["cpus"]) == 1:
        cfg["cpus"] *= 2
    if cfg["cpus"][0] == cfg["cpus"][1]:
        cfg["variant"] = "same-core"
    names = [t for t in o.transports.split(",") if t]
    plan = [(t, "throughput", n, 0) for t in names for n in sizes(o.tput_sizes)]
    plan += [(t, "latency", n, 0) for t in names for n in sizes(o.lat_sizes)]
    plan += [(t, "latency", n, o.sleep_us) for t in names for n in sizes(o.sleep_sizes)]
    for t, mode, n, sl in plan:
        if t not in LINKS or (t.startswith("py-ndchan") and ndchan is None):
            err = NDCHAN_ERR if t in LINKS else "unknown transport"
            print(json.dumps({"kind": mode, "transport": t, "bytes": n, "ok": 0, "err": err}), flush=True)
            continue
        # with the peer asleep a round trip takes ~1 ms: time enough of them
        rt = max(cfg["rep_time"], 0.2) if sl else cfg["rep_time"]
        rec = run_cell(t, mode, n, dict(cfg, sleep_us=sl, rep_time=rt))
        if o.pretty:
            if mode == "throughput":
                print("%-9s %-10s %11d  %s" % (t, mode, n, "%.3f GB/s" % rec["gbps_med"] if rec["ok"] else rec["err"]))
            else:
                print("%-9s %-10s %11d  %s" % (t, mode, n, "p50 %.1f us" % rec["p50"] if rec["ok"] else rec["err"]))
        else:
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
