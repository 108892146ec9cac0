"""Issue #5's target 2 in a process of its own: per-image time at n = 1 against n = max, one request
of each network calling back to back, as a dedicated service would:

    python benchmarks/cost_follows_n.py [--networks alexnet,googlenet,resnet,squeezenet,fcn]
        [--rounds 6] [--threads 2]

``compare.py`` gives the same ratio, but there ONNX Runtime and OpenVINO run between dynbatch's
turns and take the caches over, so each of dynbatch's calls at n = 1 reads its weights from memory
again (AlexNet's 24 MB). Here each round runs a block of calls at n = 1 and one at n = max, both
after 3 calls to warm up; each time is the median of its block, each ratio the median over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

import dynbatch as db
from compare import NETWORKS, sample_shape

MAX_BATCH = 32


def per_image_seconds(request, x, calls):
    """Median seconds per image of ``calls`` back-to-back inferences of ``x`` (after 3 more)."""
    request.set_batch(x.shape[0])
    for _ in range(3):
        request.infer({"data": x})
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        request.infer({"data": x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) / x.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    print(f"per-image ms at n = 1 and n = {MAX_BATCH}, {args.threads} threads, median of {args.rounds} rounds")
    for name in args.networks.split(","):
        model = NETWORKS[name]()
        executable = db.Core().load_network(db.read_network(model, batch=MAX_BATCH), "CPU",
                                             {db.KEY_DYN_BATCH_ENABLED: db.YES})
        request = executable.create_infer_request()
        one, full = (np.random.default_rng(n).standard_normal((n, *sample_shape(model))).astype(np.float32)
                     for n in (1, MAX_BATCH))
        rounds = [(per_image_seconds(request, one, 15), per_image_seconds(request, full, 4))
                  for _ in range(args.rounds)]
        ratios = [a / b for a, b in rounds]
        print(f"{name:10s} n = 1 {statistics.median(a for a, _ in rounds) * 1e3:6.3f}  n = {MAX_BATCH} "
              f"{statistics.median(b for _, b in rounds) * 1e3:6.3f}  ratio {statistics.median(ratios):.2f} "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f})", flush=True)


if __name__ == "__main__":
    main()
