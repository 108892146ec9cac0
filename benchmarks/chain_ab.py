"""Convolutions chained into one parallel loop (``kernels/chain.py``) against one loop per layer,
in one process, whole networks.

    python benchmarks/chain_ab.py [--networks squeezenet,resnet] [--batches 1,2,8,32] [--threads 2]

Each network of ``compare.py`` is loaded once (maximum batch 32). Two infer requests are made from
it: one as the runtime binds it (runs of convolutions chained), one with
``graph.compiler.chain_convolutions`` left out while it binds (every layer its own kernel and its
own parallel loop). Their outputs must agree; then their calls alternate, so that a slow phase of
this shared machine hits both, and each time is the median of the calls.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402  (the benchmark networks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(compare.NETWORKS))
    parser.add_argument("--batches", default="1,2,8,32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    import dynbatch as db
    from dynbatch.graph import compiler

    numba.set_num_threads(args.threads)
    print(f"chained / one loop per layer, {args.threads} threads, median of alternating calls")
    for name in args.networks.split(","):
        model = compare.NETWORKS[name]()
        exe = db.Core().load_network(db.read_network(model, batch=32), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
        chained = exe.create_infer_request()
        with mock.patch.object(compiler, "chain_convolutions", lambda steps, link_tasks=True: steps):
            per_layer = exe.create_infer_request()
        shape = compare.sample_shape(model)
        for n in [int(b) for b in args.batches.split(",")]:
            x = np.random.default_rng(0).standard_normal([n] + shape).astype(np.float32)
            for request in (chained, per_layer):
                request.set_batch(n)
                for _ in range(3):
                    request.infer({"data": x})
            got, want = chained.infer({"data": x}), per_layer.infer({"data": x})
            for output in got:
                np.testing.assert_allclose(got[output], want[output], rtol=1e-4, atol=1e-6)
            times = {"chained": [], "per_layer": []}
            for _ in range(max(15, 200 // n)):
                for label, request in (("per_layer", per_layer), ("chained", chained)):
                    start = time.perf_counter()
                    request.infer({"data": x})
                    times[label].append(time.perf_counter() - start)
            one, each = statistics.median(times["chained"]), statistics.median(times["per_layer"])
            print(f"  {name:10s} n={n:2d}: one loop per layer {each * 1e3:7.3f} ms, chained {one * 1e3:7.3f} ms, "
                  f"{one / each:.3f}x", flush=True)


if __name__ == "__main__":
    main()
