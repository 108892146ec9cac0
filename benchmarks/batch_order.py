"""Does changing the batch cost anything? A random sequence of batch sizes against the same calls
grouped by size, on one infer request, in one process.

    python benchmarks/batch_order.py [--networks lenet,inception,squeezenet,fcn] [--rounds 30]
        [--min-rounds 8] [--seconds 60] [--calls 32] [--max-batch 16] [--diagnose]

Each round draws a new sequence of ``--calls`` batch sizes, uniform in 1..max batch, and times the
calls once in that order and once sorted by n (the order of the two alternates from round to
round, so drift and neighbours' load hit both alike). Every call is ``set_batch(n)`` + ``infer``
on inputs of n rows made beforehand. The ratio random / grouped is taken per round; the table
shows the median over rounds and its quartiles, then two estimates less sensitive to a busy
machine: the ratio from per-call medians (the median time of a call of each n, summed over n, in
one order against the other) and the ratio of the fastest rounds; then minor page faults per call
(getrusage) and the load average. Target (issue #5): at most 1.05.

``--diagnose`` adds two variants that run the same steps without the copy of the outputs that
``InferRequest.infer`` returns (``_write_inputs`` + ``_run_steps``, as ``infer`` does, then
nothing): if the copy's allocations of varying sizes cost the difference, it vanishes there.

Networks: ``lenet`` and ``inception`` from ``dynbatch.models``, and any name of
``benchmarks/compare.py``'s NETWORKS (ONNX, imported with ``read_network(model, batch=max)``).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

import dynbatch as db
from dynbatch import models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import NETWORKS as ONNX_NETWORKS  # noqa: E402


def load(name: str, max_batch: int):
    if name in ("lenet", "inception"):
        network = getattr(models, name)(max_batch)
    else:
        network = db.read_network(ONNX_NETWORKS[name](), batch=max_batch)
    exe = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    return exe, len(network.layers)


def variants(request, inputs, diagnose: bool):
    """{name: (run(sequence, record), grouped)}: random and grouped share one runner; only the
    order of the calls differs. ``record`` collects (n, seconds) per call."""
    clock = time.perf_counter

    def with_copy(sequence, record):
        for n in sequence:
            start = clock()
            request.set_batch(n)
            request.infer(inputs[n])
            record.append((n, clock() - start))

    def without_copy(sequence, record):  # what infer does, less the copy of the outputs it returns
        for n in sequence:
            start = clock()
            request.set_batch(n)
            request._write_inputs(inputs[n])
            request._run_steps(n)
            record.append((n, clock() - start))

    runs = {"random": (with_copy, False), "grouped": (with_copy, True)}
    if diagnose:
        runs.update({"random, no copy": (without_copy, False), "grouped, no copy": (without_copy, True)})
    return runs


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(name: str, args) -> dict:
    exe, layers = load(name, args.max_batch)
    request = exe.create_infer_request()
    rng = np.random.default_rng(0)
    inputs = {n: {k: rng.standard_normal((n,) + shape[1:]).astype(np.float32) for k, shape in exe.inputs.items()}
              for n in range(1, args.max_batch + 1)}
    runs = variants(request, inputs, args.diagnose)
    for run, _ in runs.values():  # warm-up: every n once, in both directions
        run(list(range(1, args.max_batch + 1)) + list(range(args.max_batch, 0, -1)), [])
    times = {key: [] for key in runs}  # seconds per round (the sum of its calls)
    calls = {key: {n: [] for n in range(1, args.max_batch + 1)} for key in runs}  # seconds per call, by n
    faults = {key: [] for key in runs}
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rounds = 0
    while rounds < args.rounds and (rounds < args.min_rounds or time.perf_counter() - started < args.seconds):
        sequence = [int(n) for n in rng.integers(1, args.max_batch + 1, size=args.calls)]
        order = list(runs) if rounds % 2 == 0 else list(runs)[::-1]
        for key in order:
            run, grouped = runs[key]
            record = []
            f0 = minor_faults()
            run(sorted(sequence) if grouped else sequence, record)
            faults[key].append((minor_faults() - f0) / args.calls)
            times[key].append(sum(seconds for _, seconds in record))
            for n, seconds in record:
                calls[key][n].append(seconds)
        rounds += 1
    result = {"network": name, "layers": layers, "rounds": rounds, "times": times, "faults": faults,
              "load": (load_before, os.getloadavg()[0]), "seconds": time.perf_counter() - started, "ratios": {}}
    pairs = [("random", "grouped")] + ([("random, no copy", "grouped, no copy")] if args.diagnose else [])
    for a, b in pairs:
        per_round = sorted(x / y for x, y in zip(times[a], times[b]))
        q1, _, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        # Robust to a neighbour's burst: the median time of a call of each n, summed over n (each n
        # equally likely), in one order against the other.
        n_values = [n for n in calls[a] if calls[a][n] and calls[b][n]]
        per_call = (sum(statistics.median(calls[a][n]) for n in n_values)
                    / sum(statistics.median(calls[b][n]) for n in n_values))
        result["ratios"][a] = dict(median=statistics.median(per_round), q1=q1, q3=q3, per_call=per_call,
                                   of_minima=min(times[a]) / min(times[b]))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="lenet,inception,squeezenet,fcn")
    parser.add_argument("--rounds", type=int, default=30, help="rounds per network at most")
    parser.add_argument("--min-rounds", type=int, default=8, help="rounds per network at least")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop a network's rounds after this (past min-rounds)")
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--diagnose", action="store_true")
    args = parser.parse_args()
    import numba

    print("| network | variants | rounds | random ms (median) | grouped ms (median) | random / grouped, "
          "median of rounds | quartiles | from per-call medians | ratio of minima | minor faults per call, "
          "random / grouped | load average before / after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for name in args.networks.split(","):
        result = measure(name, args)
        for key, ratio in result["ratios"].items():
            other = key.replace("random", "grouped")
            print(f"| {name} ({result['layers']} layers) | {key} / {other} | {result['rounds']} | "
                  f"{statistics.median(result['times'][key]) * 1e3:.1f} | {statistics.median(result['times'][other]) * 1e3:.1f} | "
                  f"**{ratio['median']:.3f}** | {ratio['q1']:.3f} to {ratio['q3']:.3f} | {ratio['per_call']:.3f} | "
                  f"{ratio['of_minima']:.3f} | "
                  f"{statistics.median(result['faults'][key]):.1f} / {statistics.median(result['faults'][other]):.1f} | "
                  f"{result['load'][0]:.1f} / {result['load'][1]:.1f} |", flush=True)
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, numba {numba.__version__} ({numba.threading_layer()} "
          f"threading layer, {numba.get_num_threads()} threads), {args.calls} calls per round, n uniform in "
          f"1..{args.max_batch}")

if __name__ == "__main__":
    main()
