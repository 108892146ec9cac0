"""A 1x1 convolution reading its panels of x in place against packing them, at planes of several
sizes (``convolution.reads_in_place`` packs where a plane is a multiple of 2 KB), in one process:

    python benchmarks/pointwise_ab.py [--batches 1,8] [--calls 41] [--threads 2]

Both are bound to the same layer, input and output (random weights, a fused ReLU), differing only
in the kernel's ``in_place`` argument; their calls alternate, each time is the median of
``--calls``, and their outputs must agree.
"""
from __future__ import annotations

import argparse
import inspect

import numpy as np

from convolution_ab import alternating_medians  # (which puts the package on the path)

# (in channels, out channels, height, width): planes of 4 KB (32x32), 16 KB (64x64), 2 KB (16x32),
# 1 KB (8x32, 16x16) and 3136 bytes (28x28); at most 96 outputs, which read x in place.
LAYERS = [(16, 64, 32, 32), (64, 64, 32, 32), (128, 32, 32, 32), (64, 21, 64, 64), (64, 64, 16, 32),
          (256, 64, 16, 32), (64, 64, 8, 32), (64, 64, 16, 16), (64, 64, 28, 28)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    from dynbatch.kernels import convolution

    at = list(inspect.signature(convolution.convolution_gemm_cpu.py_func).parameters).index("in_place") - 1
    print(f"{args.threads} threads, median of {args.calls} alternating calls")
    for n in (int(value) for value in args.batches.split(",")):
        for channels, out_channels, height, width in LAYERS:
            rng = np.random.default_rng(channels * out_channels + height)
            attrs = dict(weights=rng.standard_normal((out_channels, channels, 1, 1)).astype(np.float32) * 0.1,
                         biases=rng.standard_normal(out_channels).astype(np.float32), strides=(1, 1),
                         dilations=(1, 1), pads_begin=(0, 0), pads_end=(0, 0), group=1,
                         activation={"type": "relu", "alpha": 0.0, "beta": 0.0})
            x = rng.standard_normal((n, channels, height, width)).astype(np.float32)
            out = np.empty((n, out_channels, height, width), np.float32)
            kernel_fn, kernel_args = convolution.cpu_step(attrs, [x], [out], algorithm="gemm")
            bound = {flag: (kernel_fn, (*kernel_args[:at], flag, *kernel_args[at + 1:])) for flag in (True, False)}
            results = {}
            for flag, (function, bound_args) in bound.items():
                function(n, *bound_args)
                results[flag] = out.copy()
            np.testing.assert_allclose(results[False], results[True], rtol=1e-5, atol=1e-5)
            median = {flag: seconds * 1e6 for flag, seconds in alternating_medians(bound, n, args.calls).items()}
            chosen = "packed" if not kernel_args[at] else "in place"
            name = f"{channels} -> {out_channels}, {height}x{width} ({height * width * 4} B), n = {n}"
            print(f"{name:38s} in place {median[True]:7.0f} us  packed {median[False]:7.0f} us  "
                  f"packed / in place {median[False] / median[True]:.2f}  (chosen: {chosen})", flush=True)


if __name__ == "__main__":
    main()
