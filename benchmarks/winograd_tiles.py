"""Winograd's two tile sides against each other, layer by layer, in one process:

    python benchmarks/winograd_tiles.py [--batch 1,8] [--threads 2] [--calls 31]

Each 3x3 layer of compare.py's networks that takes ``convolution_winograd_cpu`` (and FCN's) is
bound twice to the same input, with 2x2 tiles (F(2x2, 3x3)) and with 4x4 tiles (F(4x4, 3x3));
their calls alternate and each time is the median of ``--calls``. It prints both times, their
ratio, the tile ``convolution.winograd_tile`` picks for the layer, and the largest difference
between the two outputs relative to the largest output.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (in channels, out channels, output side)
LAYERS = [("resnet 64->64 28", 64, 64, 28), ("squeezenet 16->64 27", 16, 64, 27),
          ("squeezenet 32->128 13", 32, 128, 13), ("googlenet 64->192 28", 64, 192, 28),
          ("googlenet 96->128 14", 96, 128, 14), ("googlenet 128->192 14", 128, 192, 14),
          ("alexnet 192->384 6", 192, 384, 6), ("alexnet 256->256 6", 256, 256, 6), ("fcn 32->64 32", 32, 64, 32)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=31)
    args = parser.parse_args()

    import numba

    from dynbatch.kernels import convolution

    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"Winograd 2x2 against 4x4 tiles, {args.threads} threads, median of {args.calls} alternating calls (us)")
    for n in (int(b) for b in args.batch.split(",")):
        for name, channels, out_channels, side in LAYERS:
            x = rng.standard_normal((max(n, 8), channels, side, side)).astype(np.float32)
            weights = rng.standard_normal((out_channels, channels, 3, 3)) / np.sqrt(9 * channels)
            attrs = {"weights": weights.astype(np.float32), "biases": np.zeros(out_channels, np.float32),
                     "strides": (1, 1), "dilations": (1, 1), "pads_begin": (1, 1), "pads_end": (1, 1), "group": 1,
                     "activation": {"type": "relu", "alpha": 0.0, "beta": 0.0}}
            bound = {}
            for tile in (2, 4):
                out = np.zeros((max(n, 8), out_channels, side, side), np.float32)
                kernel, kernel_args = convolution.cpu_step(attrs, [x], [out], algorithm="winograd", tile=tile)
                kernel(n, *kernel_args)
                bound[tile] = (out, kernel, kernel_args)
            difference = np.abs(bound[4][0][:n] - bound[2][0][:n]).max() / np.abs(bound[2][0][:n]).max()
            times = {2: [], 4: []}
            for _ in range(args.calls):
                for tile, (_, kernel, kernel_args) in bound.items():
                    start = time.perf_counter()
                    kernel(n, *kernel_args)
                    times[tile].append(time.perf_counter() - start)
            two, four = (statistics.median(times[tile]) * 1e6 for tile in (2, 4))
            print(f"n={n:2d} {name:22s} 2x2 {two:8.1f}  4x4 {four:8.1f}  4x4/2x2 {four / two:.2f}  "
                  f"picked {convolution.winograd_tile(side, side)}x{convolution.winograd_tile(side, side)}  "
                  f"difference {difference:.1e}")


if __name__ == "__main__":
    main()
