"""The CPU convolution kernel of a git revision against the working tree's, layer by layer, in one
process: the only way to see a 5-10% change on a shared machine where whole runs differ by 25%.

    python benchmarks/convolution_ab.py REVISION [--set resnet|squeezenet|alexnet|light|1x1|pointwise|depthwise|stems]
        [--batch 8] [--calls 41]

Both kernels are bound to the same layer (random weights and inputs, a fused ReLU, a residual
input where the shape says "+res"); their calls alternate, so that a slow phase of the machine
hits both; each time is the median of ``--calls``. The outputs must agree. REVISION's
``convolution.py`` and the kernel modules it calls (``gemm.py``, ``stem.py``, ``depthwise.py``,
``winograd.py``) are copied into the package under temporary names for the run (and removed after,
with their Numba cache files).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "dynbatch", "kernels")
sys.path.insert(0, ROOT)

# name: (in channels, out channels, kernel, input side, stride, pad, group)
SETS = {
    "resnet": [("stem 7x7 s2", 3, 64, 7, 112, 2, 3, 1), ("1x1 64->64 28", 64, 64, 1, 28, 1, 0, 1),
               ("3x3 64 28", 64, 64, 3, 28, 1, 1, 1), ("1x1 64->256 28 +res", 64, 256, 1, 28, 1, 0, 1),
               ("1x1 256->64 28", 256, 64, 1, 28, 1, 0, 1), ("1x1 256->128 28", 256, 128, 1, 28, 1, 0, 1),
               ("3x3 s2 128", 128, 128, 3, 28, 2, 1, 1), ("1x1 s2 256->512", 256, 512, 1, 28, 2, 0, 1),
               ("1x1 128->512 14 +res", 128, 512, 1, 14, 1, 0, 1)],
    "squeezenet": [("stem 3x3 s2", 3, 64, 3, 112, 2, 0, 1), ("1x1 64->16 27", 64, 16, 1, 27, 1, 0, 1),
                   ("1x1 16->64 27", 16, 64, 1, 27, 1, 0, 1), ("3x3 16->64 27", 16, 64, 3, 27, 1, 1, 1),
                   ("1x1 128->32 13", 128, 32, 1, 13, 1, 0, 1), ("3x3 32->128 13", 32, 128, 3, 13, 1, 1, 1),
                   ("1x1 256->1000 13", 256, 1000, 1, 13, 1, 0, 1)],
    "alexnet": [("11x11 s4", 3, 64, 11, 112, 4, 2, 1), ("5x5 g2", 64, 192, 5, 13, 1, 2, 2),
                ("3x3 192->384", 192, 384, 3, 6, 1, 1, 1), ("3x3 g2 384->256", 384, 256, 3, 6, 1, 1, 2),
                ("3x3 256->256", 256, 256, 3, 6, 1, 1, 1)],
    "googlenet": [("stem 7x7 s2", 3, 64, 7, 112, 2, 3, 1), ("3x3 64->192 28", 64, 192, 3, 28, 1, 1, 1),
                  ("3x3 96->128 14", 96, 128, 3, 14, 1, 1, 1), ("5x5 16->32 14", 16, 32, 5, 14, 1, 2, 1),
                  ("3x3 128->192 14", 128, 192, 3, 14, 1, 1, 1), ("5x5 32->96 14", 32, 96, 5, 14, 1, 2, 1),
                  ("3x3 96->208 7", 96, 208, 3, 7, 1, 1, 1), ("5x5 16->48 7", 16, 48, 5, 7, 1, 2, 1)],
    "light": [("fcn 3x3 3->32 64", 3, 32, 3, 64, 1, 1, 1), ("fcn 3x3 32->64 32", 32, 64, 3, 32, 1, 1, 1),
              ("lenet 5x5 3->16 32", 3, 16, 5, 32, 1, 2, 1), ("lenet 3x3 16->32 16", 16, 32, 3, 16, 1, 1, 1)],
    "1x1": [("1x1 64->256 28 +res", 64, 256, 1, 28, 1, 0, 1), ("1x1 256->64 28", 256, 64, 1, 28, 1, 0, 1),
            ("1x1 128->512 14 +res", 128, 512, 1, 14, 1, 0, 1), ("1x1 256->1000 13", 256, 1000, 1, 13, 1, 0, 1),
            ("1x1 192->64 28", 192, 64, 1, 28, 1, 0, 1), ("1x1 480->192 14", 480, 192, 1, 14, 1, 0, 1)],
    # The networks' first layers (``convolution_stem_cpu`` with ``--algorithm chosen``).
    "stems": [("mobilenet 3x3 s2", 3, 32, 3, 112, 2, 1, 1), ("squeezenet 3x3 s2", 3, 64, 3, 112, 2, 0, 1),
              ("alexnet 11x11 s4", 3, 64, 11, 112, 4, 2, 1), ("resnet 7x7 s2", 3, 64, 7, 112, 2, 3, 1),
              ("fcn 3x3 64", 3, 32, 3, 64, 1, 1, 1)],
    # MobileNet's 1x1 layers at compare.py's 112x112 input: short reductions over large planes.
    "pointwise": [("pw 32->64 56", 32, 64, 1, 56, 1, 0, 1), ("pw 64->128 28", 64, 128, 1, 28, 1, 0, 1),
                  ("pw 128->128 28", 128, 128, 1, 28, 1, 0, 1), ("pw 128->256 14", 128, 256, 1, 14, 1, 0, 1),
                  ("pw 256->256 14", 256, 256, 1, 14, 1, 0, 1), ("pw 512->512 7", 512, 512, 1, 7, 1, 0, 1)],
    # Strided and 5x5 layers past the first (ResNet-50's 3x3 stride-2 layers, GoogLeNet's 5x5),
    # which the GEMM or the output-channel vectors (``--algorithm stem``) may take.
    "strided": [("3x3 s2 64 56", 64, 64, 3, 56, 2, 1, 1), ("3x3 s2 128 28", 128, 128, 3, 28, 2, 1, 1),
                ("3x3 s2 256 28", 256, 256, 3, 28, 2, 1, 1), ("3x3 s2 512 14", 512, 512, 3, 14, 2, 1, 1),
                ("5x5 16->32 14", 16, 32, 5, 14, 1, 2, 1), ("5x5 32->96 14", 32, 96, 5, 14, 1, 2, 1)],
    # MobileNet's depthwise layers (the direct kernel), a 5x5 one and groups of 4 channels.
    "depthwise": [("dw 3x3 32 112", 32, 32, 3, 112, 1, 1, 32), ("dw 3x3 s2 64 112", 64, 64, 3, 112, 2, 1, 64),
                  ("dw 3x3 128 56", 128, 128, 3, 56, 1, 1, 128), ("dw 3x3 s2 128 56", 128, 128, 3, 56, 2, 1, 128),
                  ("dw 3x3 256 28", 256, 256, 3, 28, 1, 1, 256), ("dw 3x3 512 14", 512, 512, 3, 14, 1, 1, 512),
                  ("dw 3x3 1024 7", 1024, 1024, 3, 7, 1, 1, 1024), ("dw 5x5 240 14", 240, 240, 5, 14, 1, 2, 240),
                  ("3x3 g16 64 28", 64, 64, 3, 28, 1, 1, 16)],
}


CONVOLUTION_MODULES = ("convolution", "gemm", "stem", "depthwise", "winograd")


def load_revision(revision: str, modules=CONVOLUTION_MODULES):
    """REVISION's kernel module ``modules[0]`` (importing its sibling ``modules[1:]`` and its
    ``epilogue`` from the same revision), importable beside the working tree's."""
    modules = (*modules, "epilogue")  # (the kernels' shared epilogue: the revision's may differ)
    for name in modules:
        source = subprocess.run(["git", "-C", ROOT, "show", f"{revision}:dynbatch/kernels/{name}.py"],
                                check=True, capture_output=True, text=True).stdout
        for sibling in modules[1:]:
            source = source.replace(f"from .{sibling} import", f"from ._ab_{sibling} import")
        with open(os.path.join(KERNELS, f"_ab_{name}.py"), "w") as handle:
            handle.write(source)
    return importlib.import_module(f"dynbatch.kernels._ab_{modules[0]}")


def time_old_and_new(old, new, bind, out_shape, n, calls, tolerance):
    """{"old": seconds, "new": seconds}: each module's kernel bound by ``bind(module, output)`` to
    an output of ``out_shape``, run once (their outputs must agree within ``tolerance``), then
    timed by ``alternating_medians``."""
    bound, outputs = {}, {}
    for label, module in (("old", old), ("new", new)):
        outputs[label] = np.empty(out_shape, np.float32)
        kernel_fn, kernel_args = bind(module, outputs[label])
        kernel_fn(n, *kernel_args)
        bound[label] = (kernel_fn, kernel_args)
    np.testing.assert_allclose(outputs["new"], outputs["old"], rtol=tolerance, atol=tolerance)
    return alternating_medians(bound, n, calls)


def alternating_medians(bound, n, calls):
    """{label: median seconds of kernel(n, *args)} for each bound {label: (kernel, args)}, their
    calls alternating, so that a slow phase of the machine hits them all."""
    times = {label: [] for label in bound}
    for _ in range(calls):
        for label, (kernel_fn, kernel_args) in bound.items():
            start = time.perf_counter()
            kernel_fn(n, *kernel_args)
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def remove_revision():
    for path in glob.glob(os.path.join(KERNELS, "_ab_*.py")) + glob.glob(os.path.join(KERNELS, "__pycache__", "_ab_*")):
        os.remove(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--set", default="resnet", choices=sorted(SETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--algorithm", default="gemm", choices=["gemm", "stem", "chosen"],
                        help="the GEMM kernel for every layer, the output-channel vectors', or the one the runtime "
                             "picks (Winograd for most 3x3)")
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    from dynbatch.kernels import convolution as new

    try:
        old = load_revision(args.revision)
        run(old, new, args)
    finally:
        remove_revision()


def run(old, new, args):
    rng = np.random.default_rng(0)
    n = args.batch
    totals = {"old": 0.0, "new": 0.0}
    algorithm = None if args.algorithm == "chosen" else args.algorithm
    print(f"convolution at {args.revision} (old) against the working tree (new), n = {n}, "
          f"{args.threads} threads, {args.algorithm} algorithm, median of {args.calls} alternating calls")
    for name, c, k, kernel, side, stride, pad, group in SETS[args.set]:
        attrs = dict(weights=rng.standard_normal((k, c // group, kernel, kernel)).astype(np.float32) * 0.1,
                     biases=rng.standard_normal(k).astype(np.float32), strides=(stride, stride), dilations=(1, 1),
                     pads_begin=(pad, pad), pads_end=(pad, pad), group=group,
                     activation={"type": "relu", "alpha": 0.0, "beta": 0.0})
        out_side = (side + 2 * pad - kernel) // stride + 1
        inputs = [rng.standard_normal((n, c, side, side)).astype(np.float32)]
        if "+res" in name:
            inputs.append(rng.standard_normal((n, k, out_side, out_side)).astype(np.float32))
        median = time_old_and_new(
            old, new, lambda module, output: module.cpu_step(attrs, inputs, [output], algorithm=algorithm),
            (n, k, out_side, out_side), n, args.calls, 1e-4)
        for label in totals:
            totals[label] += median[label]
        flops = 2 * k * (c // group) * kernel * kernel * out_side * out_side * n
        print(f"{name:22s} old {median['old'] * 1e3:7.3f} ms ({flops / median['old'] / 1e9:4.0f} GF/s)  "
              f"new {median['new'] * 1e3:7.3f} ms ({flops / median['new'] / 1e9:4.0f} GF/s)  "
              f"new/old {median['new'] / median['old']:.2f}", flush=True)
    print(f"{'in all':22s} old {totals['old'] * 1e3:7.3f} ms  new {totals['new'] * 1e3:7.3f} ms  "
          f"new/old {totals['new'] / totals['old']:.3f}")


if __name__ == "__main__":
    main()
