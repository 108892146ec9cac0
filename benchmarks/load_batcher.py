"""Load test: many callers, one sample each, against one loaded network.

Each of C caller threads sends one sample, waits for its outputs, and sends the next (a closed
loop), for a fixed time. Three ways to serve them:
- ``serial``: one infer request behind a lock; every sample is its own batch-1 inference;
- ``per-caller``: every caller has its own infer request and runs batch 1 on it (concurrent
  requests, Numba's thread-safe threading layer);
- ``batcher``: every caller submits to one ``DynamicBatcher``, which runs ``set_batch(k)``
  inferences of the samples waiting, one at a time;
- ``batcher-2w``: the same with ``workers=2``: two batches may run at once, on two requests.

Prints throughput (samples/s), p50 and p99 latency (submit to outputs), and the batcher's mean
batch, as a Markdown table. On a shared machine, ``--repeat N`` runs every row N times, rounds
interleaved, and reports the run of median throughput with the range of all N.

    python benchmarks/load_batcher.py [--network lenet] [--max-batch 16] [--seconds 3] [--callers 1 8 32] [--repeat 3]
"""
import argparse
import os
import platform
import threading
import time

import numba
import numpy as np

import dynbatch as db
from dynbatch.models import inception, lenet

NETWORKS = {"lenet": lenet, "inception": inception}


class Serial:
    """One request, one lock: one batch-1 inference at a time."""

    def __init__(self, exe, callers, max_delay_ms):
        self.request = exe.create_infer_request()
        self.request.set_batch(1)
        self.lock = threading.Lock()
        self.name = next(iter(exe.inputs))

    def caller(self, index):
        def call(sample):
            with self.lock:
                return self.request.infer({self.name: sample[None]})
        return call

    def close(self):
        return ""


class PerCaller:
    """A request per caller thread, each running batch 1."""

    def __init__(self, exe, callers, max_delay_ms):
        self.requests = [exe.create_infer_request() for _ in range(callers)]
        for request in self.requests:
            request.set_batch(1)
        self.name = next(iter(exe.inputs))

    def caller(self, index):
        request = self.requests[index]
        return lambda sample: request.infer({self.name: sample[None]})

    def close(self):
        return ""


class Batcher:
    """Every caller submits to one DynamicBatcher."""

    workers = 1

    def __init__(self, exe, callers, max_delay_ms):
        self.batcher = db.DynamicBatcher(exe, max_delay_ms=max_delay_ms, workers=self.workers)

    def caller(self, index):
        return lambda sample: self.batcher.submit(sample).result()

    def close(self):
        self.batcher.close()
        return f"{self.batcher.statistics.mean_batch_size:.1f}"


class TwoWorkerBatcher(Batcher):
    workers = 2


MODES = {"serial": Serial, "per-caller": PerCaller, "batcher": Batcher, "batcher-2w": TwoWorkerBatcher}


def run(exe, mode, callers, seconds, max_delay_ms, samples):
    """(samples per second, p50 ms, p99 ms, mean batch) of ``callers`` closed-loop callers."""
    server = MODES[mode](exe, callers, max_delay_ms)
    latencies = [[] for _ in range(callers)]
    start_line = threading.Barrier(callers + 1)
    stop = threading.Event()

    def caller(index):
        call = server.caller(index)
        call(samples[index % len(samples)])  # warm-up, not counted
        start_line.wait()
        clock, mine, i = time.perf_counter, latencies[index], index
        while not stop.is_set():
            start = clock()
            call(samples[i % len(samples)])
            mine.append(clock() - start)
            i += callers

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began  # includes the last calls in flight, counted too
    mean_batch = server.close() or "1"
    all_latencies = np.concatenate([np.asarray(values) for values in latencies]) * 1e3
    return len(all_latencies) / elapsed, np.percentile(all_latencies, 50), np.percentile(all_latencies, 99), mean_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(NETWORKS), default="lenet")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per configuration")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="runs of every row; the median run is reported")
    args = parser.parse_args()

    exe = db.Core().load_network(NETWORKS[args.network](args.max_batch), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    shape = next(iter(exe.inputs.values()))[1:]
    samples = np.random.default_rng(0).standard_normal((64,) + shape).astype(np.float32)
    warm_up = exe.create_infer_request()  # Numba picks its threading layer at the first parallel run
    warm_up.set_batch(1)
    warm_up.infer(samples[:1])
    print(f"{args.network}, max batch {exe.max_batch}, max_delay_ms {args.max_delay_ms}, {args.seconds:g} s per row; "
          f"{os.cpu_count()} CPUs, Numba {numba.__version__} ({numba.threading_layer()} threading layer), "
          f"Python {platform.python_version()}")
    print()
    rows = [(callers, mode) for callers in args.callers for mode in args.modes]
    runs = {row: [] for row in rows}
    for _ in range(args.repeat):  # whole rounds, so that a burst of load elsewhere hits every row alike
        for callers, mode in rows:
            runs[callers, mode].append(run(exe, mode, callers, args.seconds, args.max_delay_ms, samples))
    print("| callers | mode | samples/s | p50 ms | p99 ms | mean batch |" + (" samples/s, all runs |" if args.repeat > 1 else ""))
    print("|---:|---|---:|---:|---:|---:|" + ("---|" if args.repeat > 1 else ""))
    for callers, mode in rows:
        ordered = sorted(runs[callers, mode], key=lambda result: result[0])
        throughput, p50, p99, mean_batch = ordered[len(ordered) // 2]
        line = f"| {callers} | {mode} | {throughput:.0f} | {p50:.2f} | {p99:.2f} | {mean_batch} |"
        if args.repeat > 1:
            line += " " + ", ".join(f"{result[0]:.0f}" for result in runs[callers, mode]) + " |"
        print(line)


if __name__ == "__main__":
    main()
