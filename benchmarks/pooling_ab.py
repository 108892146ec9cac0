"""The CPU pooling kernels of a git revision against the working tree's, layer by layer, in one
process (as ``convolution_ab.py``, whose revision loading it shares):

    python benchmarks/pooling_ab.py REVISION [--method max|avg] [--batch 8] [--calls 61] [--threads 2]

The layers are the pooling layers of ``compare.py``'s networks; both kernels are bound to the
same input, their calls alternate and each time is the median of ``--calls``. The outputs must
be equal.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from convolution_ab import load_revision, remove_revision

# name: (channels, input side, kernel, stride, pad, ceil rounding)
LAYERS = [("squeezenet 64x55 3x3 s2", 64, 55, 3, 2, 0, True), ("squeezenet 128x27 3x3 s2", 128, 27, 3, 2, 0, True),
          ("resnet 64x56 3x3 s2 p1", 64, 56, 3, 2, 1, False), ("googlenet 256x14 3x3 s1 p1", 256, 14, 3, 1, 1, False),
          ("googlenet 480x14 3x3 s2", 480, 14, 3, 2, 0, True), ("fcn 32x64 2x2 s2", 32, 64, 2, 2, 0, False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--method", default="max", choices=("max", "avg"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=61)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    from dynbatch.kernels import pooling as new

    try:
        run(load_revision(args.revision, ("pooling",)), new, args)
    finally:
        remove_revision()


def run(old, new, args):
    rng, n = np.random.default_rng(0), args.batch
    totals = {"old": 0.0, "new": 0.0}
    print(f"{args.method} pooling at {args.revision} (old) against the working tree (new), n = {n}, "
          f"{args.threads} threads, median of {args.calls} alternating calls")
    for name, channels, side, kernel, stride, pad, ceil in LAYERS:
        span = side + 2 * pad - kernel
        out_side = (-(-span // stride) if ceil else span // stride) + 1
        pad_end = max(0, (out_side - 1) * stride + kernel - side - pad)
        attrs = dict(kernel=(kernel, kernel), strides=(stride, stride), pads_begin=(pad, pad),
                     pads_end=(pad_end, pad_end), pool_method=args.method, exclude_pad=False)
        x = rng.standard_normal((n, channels, side, side)).astype(np.float32)
        bound, outputs = {}, {}
        for label, module in (("old", old), ("new", new)):
            outputs[label] = np.empty((n, channels, out_side, out_side), np.float32)
            kernel_fn, kernel_args = module.cpu_step(attrs, [x], [outputs[label]])
            kernel_fn(n, *kernel_args)
            bound[label] = (kernel_fn, kernel_args)
        np.testing.assert_array_equal(outputs["new"], outputs["old"])
        times = {label: [] for label in bound}
        for _ in range(args.calls):
            for label, (kernel_fn, kernel_args) in bound.items():
                start = time.perf_counter()
                kernel_fn(n, *kernel_args)
                times[label].append(time.perf_counter() - start)
        median = {label: statistics.median(values) for label, values in times.items()}
        for label in totals:
            totals[label] += median[label]
        print(f"{name:28s} old {median['old'] * 1e6:7.0f} us  new {median['new'] * 1e6:7.0f} us  "
              f"new/old {median['new'] / median['old']:.2f}", flush=True)
    print(f"{'in all':28s} old {totals['old'] * 1e6:7.0f} us  new {totals['new'] * 1e6:7.0f} us  "
          f"new/old {totals['new'] / totals['old']:.3f}")


if __name__ == "__main__":
    main()
