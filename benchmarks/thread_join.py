"""How long Numba's worker threads take to join a parallel loop, after gaps of different kinds.

    python benchmarks/thread_join.py [--threads 2] [--rounds 300] [--max-wait-us 5000]

Every convolution, pooling or other parallel step of an inference is one Numba parallel loop,
and with TBB each loop is a new task arena that the worker threads must join. The probe here is
a parallel loop of one iteration per thread: each marks its slot (an atomic add), then waits,
polling the others' slots, until every slot is marked. The master thread runs the first
iteration, so the loop's time is how long the last worker took to arrive (the polls stop after
``--max-wait-us``; a worker that never came leaves its iteration to the master).

Gaps measured before each probe: none (probes back to back, as an inference's layers run), the
main thread busy (a spin, as Python code between inferences) for 0.2, 1 and 5 ms, and the main
thread asleep (both cores idle, as between a video's frames) for 0.2, 1, 5 and 50 ms. Printed:
the 10th, 50th and 90th percentile of the probe's time, and in how many rounds a worker did not
arrive within the wait.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import numba
from numba import njit, prange

from dynbatch.kernels.chain import fetch_add, load_acquire


@njit(parallel=True, nogil=True)
def join_probe(slots, joined, max_polls):
    """One parallel iteration per slot: each marks its slot, then polls (at most max_polls times)
    until all are marked, and sets joined[slot] to 1 if they were (0: it gave up waiting)."""
    for slot in prange(slots.shape[0]):
        fetch_add(slots, slot, 1)  # (its slot: 0 before)
        joined[slot] = 0
        for _ in range(max_polls):
            arrived = 0
            for other in range(slots.shape[0]):
                arrived += load_acquire(slots, other)
            if arrived == slots.shape[0]:
                joined[slot] = 1
                break


def polls_per_microsecond(threads: int) -> float:
    """How many polls one iteration makes per microsecond, timed on one thread (then ``threads`` again)."""
    numba.set_num_threads(1)
    single, joined = np.zeros(2, np.int64), np.zeros(2, np.int64)
    join_probe(single, joined, 10)
    start = time.perf_counter()
    single[:] = 0
    join_probe(single, joined, 200_000)  # the second slot is marked only after the first gave up
    elapsed = time.perf_counter() - start
    numba.set_num_threads(threads)
    return 200_000 / (elapsed * 1e6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--max-wait-us", type=float, default=5000.0)
    args = parser.parse_args()
    slots, joined = np.zeros(args.threads, np.int64), np.zeros(args.threads, np.int64)
    max_polls = int(args.max_wait_us * polls_per_microsecond(args.threads))
    join_probe(slots, joined, 10)

    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    gaps = [("back to back", None, 0.0)] + [(f"busy {ms:g} ms", busy, ms / 1e3) for ms in (0.2, 1, 5)] + [
        (f"asleep {ms:g} ms", time.sleep, ms / 1e3) for ms in (0.2, 1, 5, 50)]
    print(f"{numba.threading_layer()} threading layer, {args.threads} threads: a parallel loop's time until every "
          f"thread has joined it, us (waits of at most {args.max_wait_us:g} us)")
    for label, wait, seconds in gaps:
        rounds = args.rounds if seconds < 0.01 else max(20, args.rounds // 10)
        times, missed = [], 0
        for _ in range(rounds):
            if wait is not None:
                wait(seconds)
            slots[:] = 0
            start = time.perf_counter()
            join_probe(slots, joined, max_polls)
            times.append((time.perf_counter() - start) * 1e6)
            # A worker that never came: the master polled to the end, then ran its iteration itself.
            missed += int(joined.min() == 0)
        p10, p50, p90 = np.percentile(times, [10, 50, 90])
        print(f"  {label:14s} p10 {p10:7.1f}  p50 {p50:7.1f}  p90 {p90:7.1f}   not joined in {missed} of {rounds}")


if __name__ == "__main__":
    main()
