"""A network with its Concatenations written in place (the CPU default) against the same network
with them copied, or (``--what residuals``) with its convolutions written over their residuals
against each with an output buffer of its own, in one process:

    python benchmarks/in_place_ab.py [--network squeezenet] [--what concatenations|residuals]
        [--batches 1,8,32] [--calls 41]

Both are loaded from the same ONNX network of ``compare.py`` (max batch 32); their infer calls
alternate, each time is the median of ``--calls``, and their outputs must agree.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

import dynbatch as db
from compare import NETWORKS, sample_shape
from dynbatch.graph import compiler


def load(network, in_place: bool, what: str):
    """The executable network, its ``what`` (concatenations or residuals) written in place or not."""
    name = f"{what}_in_place"
    chosen = getattr(compiler, name)
    if not in_place:
        setattr(compiler, name, lambda graph: ())
    try:
        return db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    finally:
        setattr(compiler, name, chosen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="squeezenet", choices=sorted(NETWORKS))
    parser.add_argument("--what", default="concatenations", choices=["concatenations", "residuals"])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    model = NETWORKS[args.network]()
    network = db.read_network(model, batch=32)
    apart = "copied" if args.what == "concatenations" else "separate"  # (what is not written in place)
    requests = {label: load(network, label == "in place", args.what).create_infer_request()
                for label in (apart, "in place")}
    shape = sample_shape(model)
    print(f"{args.network}: {args.what} {apart} against written in place, {args.threads} threads, "
          f"median of {args.calls} alternating calls")
    for n in (int(value) for value in args.batches.split(",")):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        outputs = {}
        for label, request in requests.items():
            request.set_batch(n)
            outputs[label] = {name: value.copy() for name, value in request.infer({"data": x}).items()}
        for name, value in outputs[apart].items():
            np.testing.assert_allclose(outputs["in place"][name], value, rtol=1e-5, atol=1e-6)
        times = {label: [] for label in requests}
        for _ in range(args.calls):
            for label, request in requests.items():
                start = time.perf_counter()
                request.infer({"data": x})
                times[label].append(time.perf_counter() - start)
        median = {label: statistics.median(values) * 1e3 for label, values in times.items()}
        print(f"n = {n:2d}: {apart} {median[apart]:7.2f} ms  in place {median['in place']:7.2f} ms  "
              f"in place / {apart} {median['in place'] / median[apart]:.3f}", flush=True)


if __name__ == "__main__":
    main()
