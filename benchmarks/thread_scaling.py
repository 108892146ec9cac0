"""Per layer, a network's time on one thread against two, in one process: whether a layer's time
goes to its kernels' own speed or to how its work is shared among the threads.

    python benchmarks/thread_scaling.py [--network resnet] [--batch 1] [--max-batch 8] [--rounds 30]

The network (``compare.py``'s) is loaded twice, once with Numba's thread count at 1 and once at
2 (a request's steps are bound to the thread count at load: it decides how each kernel splits
its work), and the two requests take turns, three calls each a round. Printed: each one's median
time a call, and per layer (``get_performance_counts``) its medians on 1 and 2 threads and their
ratio, the speed-up (2.00 where the split costs nothing and both cores run at one core's speed;
this VM's cores ran a pure multiply-add loop at 0.975x their one-core speed with both busy, so
about 1.95 is what a perfect split reaches).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402  (the benchmark networks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet", choices=sorted({**compare.NETWORKS, **compare.EXTRA_NETWORKS}))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    import numba

    import dynbatch as db

    model = {**compare.NETWORKS, **compare.EXTRA_NETWORKS}[args.network]()
    thread_counts = (1, 2)
    requests = {}
    for threads in thread_counts:
        numba.set_num_threads(threads)
        network = db.read_network(model, batch=max(args.batch, args.max_batch))
        request = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
        request.set_batch(args.batch)
        requests[threads] = request
    x = np.random.default_rng(0).standard_normal((args.batch, *compare.sample_shape(model))).astype(np.float32)
    inputs = {model.graph.input[0].name: x}
    calls = {threads: [] for threads in thread_counts}
    layers = {threads: {} for threads in thread_counts}
    for _ in range(args.rounds):
        for threads in thread_counts:
            numba.set_num_threads(threads)
            request = requests[threads]
            for _ in range(3):
                start = time.perf_counter()
                request.infer(inputs)
                calls[threads].append(time.perf_counter() - start)
            for name, count in request.get_performance_counts().items():
                if count["status"] == "EXECUTED":
                    layers[threads].setdefault(name, []).append(count["real_time_us"])
    one, two = (statistics.median(calls[threads]) * 1e6 for threads in thread_counts)
    print(f"{args.network}, n = {args.batch}: a call {one:.0f} us on 1 thread, {two:.0f} us on 2, "
          f"speed-up {one / two:.2f}")
    for name, times in layers[1].items():
        one, two = statistics.median(times), statistics.median(layers[2][name])
        print(f"  {name:28s} {one:9.1f} us {two:9.1f} us  {one / two:5.2f}")


if __name__ == "__main__":
    main()
