"""Where a kernel's time goes, function by function, under Linux ``perf``: one convolution layer
(or one of ``compare.py``'s networks) run in a loop, its Numba code named for perf by a map file
(``/tmp/perf-PID.map``).

    perf record -e cpu-clock -F 4000 -o perf.data python benchmarks/perf_map.py 256 1000 13 \\
        [--kernel 1] [--stride 1] [--pad 0] [--group 1] [--batch 2] [--threads 1] [--seconds 6] [--huge-pages]
    perf record ... python benchmarks/perf_map.py --network squeezenet [--batch 2] [--threads 2]
    perf report -i perf.data --stdio --sort sym

(this VM has no hardware counters; ``cpu-clock`` samples work). perf names JIT code only through
that map, which this script writes once the kernel is compiled: the start address of each
function compiled so far by any of ``dynbatch.kernels``' Numba functions (the kernel's own module
and its callees', such as ``stem_task``, which a chain calls from code of its own), up to the
next one. The map can only be written for code compiled in this process, so run it with an empty
cache (``NUMBA_CACHE_DIR=$(mktemp -d)``); the compile's own samples then show as LLVM's and
Python's, apart from the kernel's. Functions inlined into another (the micro-kernel into
``gemm_task``) count as that one. ``--huge-pages``: x in ``memory.zeroed_floats``' memory, as in a
request's arena, where 1x1 layers of up to 512 outputs read it in place. ``--network``: the whole
network's inferences (max batch 8, or ``--batch`` if more), loaded without ``compile_helper``'s
second process, whose compiled code this one would load from the cache, unnamed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def qualified_name(symbol: str) -> str:
    """The dotted name in a Numba-mangled symbol (its ``_ZN<length><part>...`` prefix)."""
    at = symbol.find("_ZN")
    if at < 0:
        return symbol[:100]
    i, parts = at + 3, []
    while i < len(symbol) and symbol[i].isdigit():
        digits_end = i
        while symbol[digits_end].isdigit():
            digits_end += 1
        part = symbol[digits_end:digits_end + int(symbol[i:digits_end])]
        if part.startswith("B") or not part.replace("_", "").isalnum():  # (the argument types)
            break
        parts.append(part)
        i = digits_end + len(part)
    return (symbol[:at] + ".".join(parts))[:100]


def kernel_libraries() -> list:
    """The compiled code of every Numba CPU function of the ``dynbatch.kernels`` modules imported
    so far, and of the C functions through which ``chain.convolution_chain_cpu`` runs its steps'
    tasks (``chain.task_function``)."""
    from numba.core.ccallback import CFunc
    from numba.core.registry import CPUDispatcher

    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("dynbatch.kernels.") and module is not None:
            for value in vars(module).values():
                if isinstance(value, CPUDispatcher):
                    for result in value.overloads.values():
                        found[id(result.library)] = result.library
            for value in getattr(module, "_task_functions", {}).values():
                if isinstance(value, CFunc):
                    found[id(value._library)] = value._library
    return list(found.values())


def write_perf_map(libraries) -> int:
    """Write /tmp/perf-PID.map for every function of the libraries (``kernel_libraries``); return
    how many it names."""
    starts = {}
    for library in libraries:
        engine = library.codegen._engine
        for function in library._final_module.functions:
            if not function.is_declaration:
                address = engine.get_function_address(function.name)
                if address:
                    starts[address] = qualified_name(function.name)
    ordered = sorted(starts)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as handle:
        for address, end in zip(ordered, ordered[1:] + [ordered[-1] + (1 << 16)]):
            handle.write(f"{address:x} {min(end - address, 1 << 20):x} {starts[address]}\n")
    return len(ordered)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channels", type=int, nargs="?")
    parser.add_argument("out_channels", type=int, nargs="?")
    parser.add_argument("side", type=int, nargs="?")
    parser.add_argument("--network", help="one of compare.py's networks, in place of a layer")
    parser.add_argument("--kernel", type=int, default=1)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--group", type=int, default=1, help="the channels' groups (channels: depthwise)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--huge-pages", action="store_true", help="x in memory.zeroed_floats' memory")
    args = parser.parse_args()
    if (args.network is None) == (args.side is None):
        parser.error("give either a layer (channels, out_channels, side) or --network")
    import numba

    numba.set_num_threads(args.threads)
    if args.network:
        run_network(args)
        return
    from dynbatch.kernels import convolution

    rng = np.random.default_rng(0)
    k = args.kernel
    attrs = dict(strides=(args.stride,) * 2, dilations=(1, 1), pads_begin=(args.pad,) * 2, pads_end=(args.pad,) * 2,
                 group=args.group,
                 weights=rng.standard_normal((args.out_channels, args.channels // args.group, k, k)).astype(np.float32),
                 biases=rng.standard_normal(args.out_channels).astype(np.float32),
                 activation=dict(type="relu", alpha=0.0, beta=0.0))
    out_side = (args.side + 2 * args.pad - k) // args.stride + 1
    x = rng.standard_normal((args.batch, args.channels, args.side, args.side)).astype(np.float32)
    if args.huge_pages:
        from dynbatch import memory

        huge = memory.zeroed_floats(x.size).reshape(x.shape)
        huge[...] = x
        x = huge
    out = np.empty((args.batch, args.out_channels, out_side, out_side), np.float32)
    kernel, kernel_args = convolution.cpu_step(attrs, [x], [out])
    kernel(args.batch, *kernel_args)
    print(f"{kernel.__name__}: {write_perf_map(kernel_libraries())} functions mapped", file=sys.stderr)
    run_for(args.seconds, lambda: kernel(args.batch, *kernel_args))


def run_network(args):
    """--network: the network's inferences at n = --batch, every kernel's code named."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import compare
    from dynbatch.compile_helper import HELPER_VARIABLE

    os.environ[HELPER_VARIABLE] = "0"
    import dynbatch as db

    model = {**compare.NETWORKS, **compare.EXTRA_NETWORKS}[args.network]()
    network = db.read_network(model, batch=max(8, args.batch))
    request = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
    request.set_batch(args.batch)
    x = np.random.default_rng(0).standard_normal((args.batch, *compare.sample_shape(model))).astype(np.float32)
    inputs = {model.graph.input[0].name: x}
    request.infer(inputs)
    print(f"{args.network}: {write_perf_map(kernel_libraries())} functions mapped", file=sys.stderr)
    run_for(args.seconds, lambda: request.infer(inputs))


def run_for(seconds: float, call):
    """call() over and over for ``seconds``; print the time a call."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    print(f"{(time.perf_counter() - start) / calls * 1e6:.0f} us a call", file=sys.stderr)


if __name__ == "__main__":
    main()
