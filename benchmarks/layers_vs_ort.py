"""Per layer, dynbatch against ONNX Runtime on one of ``compare.py``'s networks, in one process.

    python benchmarks/layers_vs_ort.py [--network squeezenet] [--batch 1] [--threads 2] [--rounds 8]
        [--busy-pause]

dynbatch's times are ``get_performance_counts`` (a chained convolution's from the time-stamp
counter); ONNX Runtime's come from its profiler (``enable_profiling``: the ``*_kernel_time``
events of its nodes, after its graph optimizations, so its nodes are NCHWc convolutions with
their activation fused, reorders and Concat). Each round, after a 60 ms pause (ONNX Runtime's
worker spins about 40 ms after a call), each runtime runs 10 calls: a slow phase of this shared
machine then hits both. After 60 ms asleep, TBB's worker stayed away from all 10 of dynbatch's
calls in half the rounds (SqueezeNet at n = 1: 0.77 ms a call, not 0.41; 2026-11-28): the idle
pause of README's Limitations, not the layers' speed. ``--busy-pause`` keeps the calling thread
busy through the pause instead, which brings the worker back within a call or two, but then
slowed ONNX Runtime's layers (SqueezeNet's first 1.8x): read each runtime from the run that
suits it. Printed: end-to-end medians, each runtime's sum of per-layer medians, and
every layer's median, dynbatch's first. The profiler adds a few microseconds to each node of
ONNX Runtime: read small nodes with that in mind, and its end-to-end time as an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402  (the benchmark networks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="squeezenet", choices=sorted({**compare.NETWORKS, **compare.EXTRA_NETWORKS}))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--busy-pause", action="store_true", help="spin through the pauses rather than sleep")
    args = parser.parse_args()
    import numba
    import onnxruntime as ort

    import dynbatch as db

    numba.set_num_threads(args.threads)
    model = {**compare.NETWORKS, **compare.EXTRA_NETWORKS}[args.network]()
    exe = db.Core().load_network(db.read_network(model, batch=max(args.batch, 8)), "CPU",
                                 {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    request.set_batch(args.batch)
    options = compare.onnxruntime_options(args.threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    shape = compare.sample_shape(model)
    x = np.random.default_rng(0).standard_normal([args.batch] + shape).astype(np.float32)

    def pause(seconds=0.06):
        if not args.busy_pause:
            time.sleep(seconds)
            return
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    ours, ends = {}, {"dynbatch": [], "onnxruntime": []}
    for _ in range(args.rounds):
        pause()
        for _ in range(10):
            start = time.perf_counter()
            request.infer({"data": x})
            ends["dynbatch"].append(time.perf_counter() - start)
            for name, count in request.get_performance_counts().items():
                if count["status"] == "EXECUTED":
                    ours.setdefault(name, (count["exec_type"], []))[1].append(count["real_time_us"])
        pause()
        for _ in range(10):
            start = time.perf_counter()
            session.run(None, {"data": x})
            ends["onnxruntime"].append(time.perf_counter() - start)
    theirs = {}
    with open(session.end_profiling()) as handle:
        for event in json.load(handle):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                node = event["name"][: -len("_kernel_time")]
                theirs.setdefault(node, (event["args"].get("op_name", "?"), []))[1].append(event["dur"])

    print(f"{args.network}, n = {args.batch}, {args.threads} threads, {args.rounds} rounds of 10 calls each")
    for label, table in (("dynbatch", ours), ("onnxruntime", theirs)):
        total = sum(statistics.median(times) for _, times in table.values())
        print(f"{label}: end to end {statistics.median(ends[label]) * 1e3:.3f} ms, "
              f"sum of layer medians {total / 1e3:.3f} ms")
        for name, (kind, times) in table.items():
            print(f"  {name:32s} {kind:28s} {statistics.median(times):9.1f} us")


if __name__ == "__main__":
    main()
