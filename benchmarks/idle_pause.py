"""What an idle pause costs the calls after it: a video pipeline idles between frames.

    python benchmarks/idle_pause.py [--network squeezenet] [--batch 1] [--pause-ms 50] [--calls 8]
        [--rounds 15] [--threads 2]

Each round, dynbatch and ONNX Runtime (if installed) take turns: sleep ``--pause-ms``, then time
``--calls`` inferences back to back. Printed per runtime: the median over the rounds of each call's
time, first call first, and the first and second call over the last. A probe (a parallel loop of
two halves run just before each dynbatch call) counts the rounds in which Numba's second thread
took no part in it, call by call: where it is absent, that call's layers run on one core.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402  (the benchmark networks and runtimes)


def make_probe():
    """A parallel loop of two equal halves that returns 1.0 where one thread ran both."""
    import numba
    from numba import njit, prange

    @njit(parallel=True)
    def probe(out):
        for half in prange(2):
            total = 0.0
            for k in range(20000):
                total += np.sqrt(k + half + 0.5)
            # (the sum feeds the result, so that the loop that keeps the thread busy is kept)
            out[half] = numba.get_thread_id() + (0.0 if total > -1.0 else 1.0)
        return 1.0 if out[0] == out[1] else 0.0

    return probe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="squeezenet", choices=sorted(compare.NETWORKS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pause-ms", type=float, default=50.0)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = compare.NETWORKS[args.network]()
    found = compare.runtimes(model, args.batch, args.threads)
    found.pop("openvino", None)
    shape = compare.sample_shape(model)
    x = np.random.default_rng(0).standard_normal([args.batch] + shape).astype(np.float32)
    probe, scratch = make_probe(), np.zeros(2)
    probe(scratch)
    for run in found.values():
        for _ in range(5):
            run(x)
    times = {name: [[] for _ in range(args.calls)] for name in found}
    alone = [0] * args.calls
    for _ in range(args.rounds):
        for name, run in found.items():
            time.sleep(args.pause_ms / 1e3)
            for call in range(args.calls):
                if name == "dynbatch":
                    alone[call] += int(probe(scratch))
                start = time.perf_counter()
                run(x)
                times[name][call].append(time.perf_counter() - start)
    print(f"{args.network}, n = {args.batch}, {args.threads} threads: calls after a {args.pause_ms:g} ms pause, "
          f"ms (median of {args.rounds} rounds)")
    for name in found:
        medians = [statistics.median(t) * 1e3 for t in times[name]]
        print(f"  {name:12s} " + " ".join(f"{m:7.3f}" for m in medians)
              + f"   first/last {medians[0] / medians[-1]:.2f}, second/last {medians[1] / medians[-1]:.2f}")
    print(f"  rounds (of {args.rounds}) in which Numba's second thread missed the probe before call k: "
          + " ".join(str(count) for count in alone))


if __name__ == "__main__":
    main()
