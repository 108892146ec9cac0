"""The CPU kernels of one layer type (pooling, deconvolution, fully connected or SoftMax) at a git revision
against the working tree's, layer by layer, in one process (as ``convolution_ab.py``, whose
revision loading it shares):

    python benchmarks/layer_ab.py REVISION [--layer pooling|deconvolution|fully_connected|softmax]
        [--method max|avg] [--batch 8] [--calls 61] [--threads 2]

The pooling layers are those of ``compare.py``'s networks (``--method`` picks max or avg); the
deconvolutions FCN's 8x8 stride-4 upsampling and three common shapes, on 16x16 or 28x28 inputs and
on 32x32 (planes of 4 KB, which the packed kernel copies out for large kernels), with 5x5 to 7x7
kernels there too; the fully connected layers those of compare.py's networks and LeNet's first;
the softmaxes over 1000 and 21841 classes, over a segmentation's 21 classes per pixel, and over a
short axis of 7 (7 floats apart, 1024 side by side).
Both kernels are bound to the same input, their calls alternate and each time is the median of
``--calls``. The outputs must agree.
"""
from __future__ import annotations

import argparse

import numpy as np

from convolution_ab import load_revision, remove_revision, time_old_and_new

# name: (channels, input side, kernel, stride, pad, ceil rounding)
POOLING = [("squeezenet 64x55 3x3 s2", 64, 55, 3, 2, 0, True), ("squeezenet 128x27 3x3 s2", 128, 27, 3, 2, 0, True),
           ("resnet 64x56 3x3 s2 p1", 64, 56, 3, 2, 1, False), ("googlenet 256x14 3x3 s1 p1", 256, 14, 3, 1, 1, False),
           ("googlenet 480x14 3x3 s2", 480, 14, 3, 2, 0, True), ("fcn 32x64 2x2 s2", 32, 64, 2, 2, 0, False)]
# name: (in channels, out channels, kernel, input side, stride, pad)
DECONVOLUTION = [("fcn 21->21 8x8 s4 16", 21, 21, 8, 16, 4, 0), ("2x2 s2 64->32 28", 64, 32, 2, 28, 2, 0),
                 ("4x4 s2 p1 64->64 16", 64, 64, 4, 16, 2, 1), ("3x3 s1 p1 32->32 16", 32, 32, 3, 16, 1, 1),
                 ("fcn 21->21 8x8 s4 32", 21, 21, 8, 32, 4, 0), ("4x4 s2 p1 64->64 32", 64, 64, 4, 32, 2, 1),
                 ("3x3 s1 p1 32->32 32", 32, 32, 3, 32, 1, 1), ("5x5 s2 p2 32->32 32", 32, 32, 5, 32, 2, 2),
                 ("6x6 s2 p2 32->32 32", 32, 32, 6, 32, 2, 2), ("7x7 s2 p3 32->32 32", 32, 32, 7, 32, 2, 3)]


def pooling_layers(rng, n, method):
    """(name, attrs, x, out shape) of each pooling layer."""
    for name, channels, side, kernel, stride, pad, ceil in POOLING:
        span = side + 2 * pad - kernel
        out_side = (-(-span // stride) if ceil else span // stride) + 1
        pad_end = max(0, (out_side - 1) * stride + kernel - side - pad)
        attrs = dict(kernel=(kernel, kernel), strides=(stride, stride), pads_begin=(pad, pad),
                     pads_end=(pad_end, pad_end), pool_method=method, exclude_pad=False)
        x = rng.standard_normal((n, channels, side, side)).astype(np.float32)
        yield name, attrs, x, (n, channels, out_side, out_side)


def deconvolution_layers(rng, n, method):
    for name, channels, out_channels, kernel, side, stride, pad in DECONVOLUTION:
        attrs = dict(weights=rng.standard_normal((channels, out_channels, kernel, kernel)).astype(np.float32) * 0.1,
                     biases=rng.standard_normal(out_channels).astype(np.float32), strides=(stride, stride),
                     dilations=(1, 1), pads_begin=(pad, pad), pads_end=(pad, pad), output_padding=(0, 0), group=1)
        out_side = (side - 1) * stride - 2 * pad + kernel
        x = rng.standard_normal((n, channels, side, side)).astype(np.float32)
        yield name, attrs, x, (n, out_channels, out_side, out_side)


# name: (in features, out features)
FULLY_CONNECTED = [("resnet 512->1000", 512, 1000), ("googlenet 832->1000", 832, 1000),
                   ("alexnet 2304->1024", 2304, 1024), ("alexnet 1024->1000", 1024, 1000), ("lenet 400->120", 400, 120)]


def fully_connected_layers(rng, n, method):
    for name, in_features, out_features in FULLY_CONNECTED:
        attrs = dict(weights=rng.standard_normal((out_features, in_features)).astype(np.float32) / np.sqrt(in_features),
                     biases=rng.standard_normal(out_features).astype(np.float32))
        x = rng.standard_normal((n, in_features)).astype(np.float32)
        yield name, attrs, x, (n, out_features)


# name: (sample shape, axis)
SOFTMAX = [("1000 classes", (1000,), 1), ("21841 classes", (21841,), 1),
           ("21 classes per pixel of 32x32", (21, 32, 32), 1), ("over 7 of 1024 positions", (1024, 7), 2)]


def softmax_layers(rng, n, method):
    for name, shape, axis in SOFTMAX:
        x = (rng.standard_normal((n, *shape)) * 5).astype(np.float32)
        yield name, dict(axis=axis, flatten=False), x, x.shape


LAYERS = {"pooling": (pooling_layers, ("pooling",)),
          "deconvolution": (deconvolution_layers, ("deconvolution", "convolution", "gemm")),
          "fully_connected": (fully_connected_layers, ("fully_connected", "gemm", "epilogue")),
          "softmax": (softmax_layers, ("softmax", "gemm", "pooling"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--layer", default="pooling", choices=sorted(LAYERS))
    parser.add_argument("--method", default="max", choices=("max", "avg"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=61)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import importlib

    import numba

    numba.set_num_threads(args.threads)
    new = importlib.import_module(f"dynbatch.kernels.{args.layer}")
    layers, modules = LAYERS[args.layer]
    try:
        run(load_revision(args.revision, modules), new, layers, args)
    finally:
        remove_revision()


def run(old, new, layers, args):
    n = args.batch
    totals = {"old": 0.0, "new": 0.0}
    kind = f"{args.method} pooling" if args.layer == "pooling" else args.layer
    print(f"{kind} at {args.revision} (old) against the working tree (new), n = {n}, "
          f"{args.threads} threads, median of {args.calls} alternating calls")
    for name, attrs, x, out_shape in layers(np.random.default_rng(0), n, args.method):
        median = time_old_and_new(old, new, lambda module, output: module.cpu_step(attrs, [x], [output]),
                                  out_shape, n, args.calls, 1e-5)
        for label in totals:
            totals[label] += median[label]
        print(f"{name:28s} old {median['old'] * 1e6:7.0f} us  new {median['new'] * 1e6:7.0f} us  "
              f"new/old {median['new'] / median['old']:.2f}", flush=True)
    print(f"{'in all':28s} old {totals['old'] * 1e6:7.0f} us  new {totals['new'] * 1e6:7.0f} us  "
          f"new/old {totals['new'] / totals['old']:.3f}")


if __name__ == "__main__":
    main()
