"""A convolution with its global average pooling fused (``convolution.convolution_gemm_average_cpu``)
against the two run apart (the GEMM kernel writing the output, then ``global_pooling_cpu``), in one
process:

    python benchmarks/average_ab.py [--batches 1,2,8,32] [--calls 31] [--threads 2]

Each layer (random weights and inputs, a fused ReLU) is bound both ways over the same buffers; the
two alternate call by call, each time is the median of ``--calls``, and their outputs must agree.
Where the layer adds a residual, the layer apart writes its output over it (as ResNet's plan has
it), so the residual is restored between calls, outside the timings.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, in channels, out channels, side, with a residual): SqueezeNet's last layer and ResNet's.
LAYERS = [("256 -> 1000 on 13x13", 256, 1000, 13, False), ("128 -> 512 on 14x14 +res", 128, 512, 14, True)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,8,32")
    parser.add_argument("--calls", type=int, default=31)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    from dynbatch.kernels import convolution, pooling

    numba.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    max_batch = max(batches)
    rng = np.random.default_rng(0)
    print(f"fused against apart, {args.threads} threads, median of {args.calls} alternating calls")
    for name, channels, out_channels, side, with_residual in LAYERS:
        attrs = dict(weights=rng.uniform(-0.1, 0.1, (out_channels, channels, 1, 1)).astype(np.float32),
                     biases=rng.uniform(-1, 1, out_channels).astype(np.float32), strides=(1, 1), dilations=(1, 1),
                     pads_begin=(0, 0), pads_end=(0, 0), group=1, activation=dict(type="relu", alpha=0.0, beta=0.0))
        x = rng.uniform(-2, 2, (max_batch, channels, side, side)).astype(np.float32)
        residual = rng.uniform(-2, 2, (max_batch, out_channels, side, side)).astype(np.float32)
        kept = residual.copy()
        written = residual if with_residual else np.empty_like(residual)
        inputs = [x, residual] if with_residual else [x]
        pooled, fused = (np.empty((max_batch, out_channels, 1, 1), np.float32) for _ in range(2))
        conv, conv_args = convolution.cpu_step(attrs, inputs, [written], algorithm="gemm")
        pool, pool_args = pooling.cpu_step(
            dict(pool_method="avg", kernel=(side, side), strides=(1, 1), pads_begin=(0, 0), pads_end=(0, 0),
                 exclude_pad=False), [written], [pooled])
        average, average_args = convolution.cpu_step({**attrs, "global_average": (side, side)}, inputs, [fused])
        for n in batches:
            times = {"apart": [], "fused": []}
            for call in range(args.calls + 1):
                residual[:] = kept
                start = time.perf_counter()
                conv(n, *conv_args)
                pool(n, *pool_args)
                times["apart"].append(time.perf_counter() - start)
                residual[:] = kept
                start = time.perf_counter()
                average(n, *average_args)
                times["fused"].append(time.perf_counter() - start)
                if call == 0:  # (compiled and checked; not timed)
                    np.testing.assert_allclose(fused[:n], pooled[:n], rtol=1e-4, atol=1e-4)
                    times = {"apart": [], "fused": []}
            apart, fused_time = (statistics.median(times[key]) for key in ("apart", "fused"))
            print(f"{name:26s} n = {n:2d}: apart {apart * 1e6:8.1f} us  fused {fused_time * 1e6:8.1f} us  "
                  f"fused / apart {fused_time / apart:.3f}", flush=True)


if __name__ == "__main__":
    main()
