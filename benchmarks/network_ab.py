"""Whole networks with the convolution, pooling, FullyConnected and SoftMax kernels of a git
revision against the working tree's, in one process: a change to ``chain.py``, ``convolution.py``
(with ``gemm.py``, ``stem.py``, ``depthwise.py``, ``winograd.py``), ``pooling.py``,
``fully_connected.py`` or ``softmax.py`` measured end to end.

    python benchmarks/network_ab.py REVISION [--networks resnet,squeezenet,mobilenet] [--batches 1,8,32]
        [--calls 41] [--threads 2]

Each network (``compare.py``'s) is loaded once, by the working tree. The revision's copies of those
files are copied into the package under temporary names (as ``convolution_ab.py`` does), and its
kernels are called with the very arguments the working tree's steps were bound to: the same
buffers and weights (a chain bound again by the revision's ``chain_step`` from its members'), so
this compares kernel code only (it needs the two revisions to agree on those arguments and on how
weights are packed: the stem's 32-channel blocks of 2026-11-28 made older revisions' stem kernels
misread them). Each call writes the input and runs every step,
as ``InferRequest.infer`` does without its checks and output copy; the two take turns, in
alternating order, and each time is the median of ``--calls``. Their outputs must agree.
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402  (the benchmark networks)
import convolution_ab  # noqa: E402  (a revision's kernel modules, importable beside the working tree's)


def revision_calls(request, old_chain, old_convolution, old_pooling, old_fully_connected, old_softmax):
    """The request's (kernel, args) per step, each convolution kernel replaced by the revision's
    (where it has one of that name), each pooling kernel by the one the revision's
    ``choose_cpu_kernel`` picks and each FullyConnected and SoftMax kernel by the revision's. A
    chain is bound again by the revision's ``chain_step`` from its members' arguments (its rows
    and task functions are the revision's): into the runs that the revision chains, and the
    members it does not (a max pooling before 2026-11-28) called alone between them."""
    def old_kernel(step):
        if step.layer.type == "Pooling":  # (the same arguments for all its kernels)
            return old_pooling.choose_cpu_kernel(step.layer.normalized, step.args[0].shape, step.args[-1].shape)
        if step.layer.type == "SoftMax":
            return old_softmax.softmax_cpu
        if step.layer.type == "FullyConnected":
            return old_fully_connected.fully_connected_cpu
        if step.exec_type.startswith("convolution_") and hasattr(old_convolution, step.exec_type):
            return getattr(old_convolution, step.exec_type)  # (GEMM, Winograd, direct, averaged)
        return step.kernel

    calls = []
    for step, (call, args) in zip(request._steps, request._calls):
        if step.exec_type != "convolution_chain_cpu":
            calls.append((old_kernel(step), args))
            continue
        threads, run = args[0], []
        for member in step.members:
            kernel = old_kernel(member)
            if kernel in old_chain.CHAINED_KERNELS:
                run.append((kernel, member.args))
                continue
            if run:
                calls.append(old_chain.chain_step(run, threads))
                run = []
            calls.append((kernel, member.args))
        if run:
            calls.append(old_chain.chain_step(run, threads))
    return calls


def run_calls(request, calls, x, n):
    """One inference through ``calls``: the input written (the planner may reuse its buffer for
    later tensors, so a step rerun without it would read stale data), then every step."""
    request._write_inputs(x[:n])
    for call, args in calls:
        call(n, *args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--networks", default=",".join(compare.NETWORKS))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--calls", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numba

    import dynbatch as db

    numba.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    try:
        modules = ("chain", *convolution_ab.CONVOLUTION_MODULES, "pooling", "fully_connected", "softmax")
        old_chain = convolution_ab.load_revision(args.revision, modules=modules)
        old_convolution = importlib.import_module("dynbatch.kernels._ab_convolution")
        old_pooling = importlib.import_module("dynbatch.kernels._ab_pooling")
        old_fully_connected = importlib.import_module("dynbatch.kernels._ab_fully_connected")
        old_softmax = importlib.import_module("dynbatch.kernels._ab_softmax")
        print(f"convolution, pooling, FullyConnected and SoftMax kernels at {args.revision} (old) against the "
              f"working tree (new), {args.threads} threads, median of {args.calls} alternating calls (fewer at n = 32)")
        for name in args.networks.split(","):
            model = {**compare.NETWORKS, **compare.EXTRA_NETWORKS}[name]()
            network = db.read_network(model, batch=max(batches))
            request = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
            x = np.random.default_rng(0).standard_normal((max(batches), *compare.sample_shape(model))).astype(np.float32)
            old_calls = revision_calls(request, old_chain, old_convolution, old_pooling, old_fully_connected,
                                       old_softmax)
            versions = {"old": old_calls, "new": request._calls}
            for n in batches:
                request.set_batch(n)
                outputs = {}
                for label, calls in versions.items():
                    run_calls(request, calls, x, n)
                    outputs[label] = [buffer[:n].copy() for buffer in request._output_buffers.values()]
                for new, old in zip(outputs["new"], outputs["old"]):
                    np.testing.assert_allclose(new, old, rtol=1e-3, atol=1e-5)
                times = {"old": [], "new": []}
                for i in range(args.calls if n < 32 else max(5, args.calls // 3)):
                    for label in ("old", "new") if i % 2 == 0 else ("new", "old"):
                        start = time.perf_counter()
                        run_calls(request, versions[label], x, n)
                        times[label].append(time.perf_counter() - start)
                old, new = (statistics.median(times[label]) for label in ("old", "new"))
                print(f"{name:10s} n = {n:2d}: old {old * 1e3 / n:7.3f} ms/img  new {new * 1e3 / n:7.3f} ms/img  "
                      f"new/old {new / old:.3f}", flush=True)
    finally:
        convolution_ab.remove_revision()


if __name__ == "__main__":
    main()
