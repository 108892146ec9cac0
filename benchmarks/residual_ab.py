"""One convolution with a residual, its output written over the residual (as
``graph.compiler.residuals_in_place`` plans it) against an output of its own, in one process:

    python benchmarks/residual_ab.py [--batch 8] [--calls 41] [--threads 2]

Both are bound to the same layer (random weights and inputs, a fused ReLU); their calls
alternate, each time is the median of ``--calls``. Before timing, every batch from 1 to
``--batch`` must give the same rows < n both ways and leave the residual's rows >= n as they were.
"""
from __future__ import annotations

import argparse

import numpy as np

from convolution_ab import alternating_medians  # (which puts the package on the path)

# (in channels, out channels, kernel side, image side): ResNet's 1x1 layers that add a shortcut,
# a reduction of two packed blocks (300 > KC) on a 13x13 image (panels spanning samples), and a
# Winograd layer (whose output runs read the residual element by element either way).
LAYERS = [(64, 256, 1, 28), (128, 512, 1, 14), (300, 64, 1, 13), (64, 64, 3, 28)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    from dynbatch.kernels import convolution

    rng = np.random.default_rng(0)
    n = args.batch
    print(f"n = {n}, {args.threads} threads, median of {args.calls} alternating calls")
    for channels, out_channels, kernel, side in LAYERS:
        pad = kernel // 2
        attrs = dict(weights=rng.standard_normal((out_channels, channels, kernel, kernel)).astype(np.float32) * 0.1,
                     biases=rng.standard_normal(out_channels).astype(np.float32), strides=(1, 1), dilations=(1, 1),
                     pads_begin=(pad, pad), pads_end=(pad, pad), group=1,
                     activation={"type": "relu", "alpha": 0.0, "beta": 0.0})
        x = rng.standard_normal((n, channels, side, side)).astype(np.float32)
        residual = rng.standard_normal((n, out_channels, side, side)).astype(np.float32)
        apart, over = np.empty_like(residual), residual.copy()
        bound = {"apart": convolution.cpu_step(attrs, [x, residual], [apart]),
                 "over": convolution.cpu_step(attrs, [x, over], [over])}
        for rows in range(1, n + 1):
            over[:] = residual
            for kernel_fn, kernel_args in bound.values():
                kernel_fn(rows, *kernel_args)
            np.testing.assert_allclose(over[:rows], apart[:rows], rtol=1e-5, atol=1e-5)
            assert np.array_equal(over[rows:], residual[rows:])
        # (over the residual, each call adds onto the last one's output: the time is the same)
        median = {label: seconds * 1e6 for label, seconds in alternating_medians(bound, n, args.calls).items()}
        name = f"{kernel}x{kernel} {channels} -> {out_channels}, {side}x{side}"
        print(f"{name:26s} ({convolution.choose_algorithm(attrs, x.shape):8s}) own output {median['apart']:7.0f} us  "
              f"over the residual {median['over']:7.0f} us  over / own {median['over'] / median['apart']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
