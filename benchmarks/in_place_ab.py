"""A network with its Concatenations written in place (the CPU default) against the same network with
them copied, or (``--what residuals``) with its convolutions written over their residuals against
each with an output buffer of its own, or (``--what pointwise``) with its 1x1 convolutions packing
x where its planes are a multiple of 2 KB against reading it in place at any plane size
(``convolution.reads_in_place``), or (``--what huge_page_in_place``) with its 1x1 convolutions of
97 to 512 outputs reading x in place on huge pages against packing it, or (``--what averages``)
with its global average poolings fused into their convolutions (``compiler.averages_fused``)
against run apart, or (``--what max_poolings``) with its first max pooling fused into the first
layer (``compiler.max_poolings_fused``) against run apart, or (``--what stem``) with its first
layer and its strided layers by output-channel vectors (``convolution_stem_cpu``, where
``choose_algorithm`` picks it) against packed by the GEMM kernel, or (``--what strided_stem``,
``grouped_stem``) only its strided layers past the first or its grouped layers so, or (``--what
tile_rows``) with its Winograd layers of few tiles taking the tiles as the rows of their products
(``convolution.winograd_tile_rows``) against in panels of 16, or (``--what depthwise``) with its
depthwise 3x3 layers by 8-channel vectors (``convolution_depthwise_cpu``) against the direct
kernel, or (``--what chained_depthwise``) with those layers in the chains of convolutions
(``compiler.chain_convolutions``) against a parallel loop each, or (``--what chained_ends``) with
its first layers and its convolutions with a global average in those chains too against a parallel
loop each, or (``--what huge_pages``) with its arena on transparent huge pages
(``memory.zeroed_floats``) against 4 KB pages, in one process:

    python benchmarks/in_place_ab.py [--network squeezenet] [--size 112]
        [--what concatenations|residuals|pointwise|huge_page_in_place|averages|max_poolings|stem|
              strided_stem|grouped_stem|tile_rows|depthwise|chained_depthwise|chained_ends|huge_pages]
        [--batches 1,8,32] [--calls 41]

Both are loaded from the same ONNX network of ``compare.py`` (max batch 32, ``--size`` its input
side); their infer calls alternate, each time is the median of ``--calls``, and their outputs
must agree.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

import dynbatch as db
from compare import EXTRA_NETWORKS, NETWORKS, sample_shape
from dynbatch import memory
from dynbatch.graph import compiler
from dynbatch.kernels import chain, convolution

#: For each ``--what``: (the module and name of what it changes, the value that turns the
#: default off, labels of the alternative and the default); a tuple of names takes a tuple of
#: values.
CHOICES = {
    "concatenations": (compiler, "concatenations_in_place", lambda graph: (), "copied", "in place"),
    "residuals": (compiler, "residuals_in_place", lambda graph: (), "separate", "in place"),
    "pointwise": (convolution, "IN_PLACE_PLANE_ALIASING", 1 << 62, "in place", "packed at 2 KB"),
    "huge_page_in_place": (convolution, "IN_PLACE_HUGE_PAGE_MAX_ROWS", convolution.IN_PLACE_MAX_ROWS, "packed",
                           "in place"),
    "averages": (compiler, "averages_fused", lambda graph: graph, "apart", "fused"),
    "max_poolings": (compiler, "max_poolings_fused", lambda graph: graph, "apart", "fused"),
    "stem": (convolution, ("STEM_MAX_CHANNELS", "STEM_STRIDED_WINDOWS", "STEM_GROUPS"), (0, False, False), "GEMM",
             "stem"),
    "strided_stem": (convolution, "STEM_STRIDED_WINDOWS", False, "GEMM", "stem"),
    "grouped_stem": (convolution, "STEM_GROUPS", False, "GEMM", "stem"),
    "tile_rows": (convolution, "WINOGRAD_TILE_ROWS_MAX_TILES", 0, "panels", "tile rows"),
    "depthwise": (convolution, "DEPTHWISE_KERNELS", (), "direct", "channel vectors"),
    "chained_depthwise": (chain, "CHAINED_KERNELS",
                          {kernel: kind for kernel, kind in chain.CHAINED_KERNELS.items()
                           if kernel is not convolution.convolution_depthwise_cpu}, "apart", "chained"),
    "chained_ends": (chain, "CHAINED_KERNELS",
                     {kernel: kind for kernel, kind in chain.CHAINED_KERNELS.items()
                      if kernel not in (convolution.convolution_stem_cpu, convolution.convolution_gemm_average_cpu)},
                     "apart", "chained"),
    "huge_pages": (memory, "HUGE_PAGE", 1 << 62, "4 KB pages", "huge pages"),
}


def load(network, default: bool, what: str):
    """An infer request of the network, with the default choice of ``what`` (``CHOICES``) or the
    other. (Created while the choice holds: a request binds its kernels' arguments, and with them
    whether a 1x1 layer reads x in place.)"""
    module, names, offs = CHOICES[what][:3]
    if isinstance(names, str):
        names, offs = (names,), (offs,)
    chosen = [getattr(module, name) for name in names]
    if not default:
        for name, off in zip(names, offs):
            setattr(module, name, off)
    try:
        return db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
    finally:
        for name, value in zip(names, chosen):
            setattr(module, name, value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="squeezenet", choices=sorted({**NETWORKS, **EXTRA_NETWORKS}))
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--what", default="concatenations", choices=sorted(CHOICES))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    model = {**NETWORKS, **EXTRA_NETWORKS}[args.network](args.size)
    network = db.read_network(model, batch=32)
    other, default = CHOICES[args.what][3:]
    requests = {label: load(network, label == default, args.what) for label in (other, default)}
    shape = sample_shape(model)
    print(f"{args.network} ({args.size}x{args.size}): {args.what} {other} against {default}, {args.threads} threads, "
          f"median of {args.calls} alternating calls")
    for n in (int(value) for value in args.batches.split(",")):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        outputs = {}
        for label, request in requests.items():
            request.set_batch(n)
            outputs[label] = {name: value.copy() for name, value in request.infer({"data": x}).items()}
        for name, value in outputs[other].items():
            np.testing.assert_allclose(outputs[default][name], value, rtol=1e-5, atol=1e-6)
        times = {label: [] for label in requests}
        for _ in range(args.calls):
            for label, request in requests.items():
                start = time.perf_counter()
                request.infer({"data": x})
                times[label].append(time.perf_counter() - start)
        median = {label: statistics.median(values) * 1e3 for label, values in times.items()}
        print(f"n = {n:2d}: {other} {median[other]:7.2f} ms  {default} {median[default]:7.2f} ms  "
              f"{default} / {other} {median[default] / median[other]:.3f}", flush=True)


if __name__ == "__main__":
    main()
