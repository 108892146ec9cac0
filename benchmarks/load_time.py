"""Load time of a ~50-layer network in fresh processes, with Numba's on-disk cache cold and warm,
and the activation memory each request plans.

    python benchmarks/load_time.py [--network googlenet] [--max-batch 16] [--cold 2] [--warm 5] [--no-memory]

The network is an ONNX model of ``benchmarks/compare.py`` (default ``googlenet``: 56 layers after
import), saved to a temporary file. Each measurement is a fresh ``python`` process, started with
the caller's environment plus ``NUMBA_CACHE_DIR`` (nothing else: dynbatch picks its threading
layer as it does for any user), that times

- ``import dynbatch``,
- ``dynbatch.read_network(path, batch=max_batch)`` (ONNX import, shape inference),
- ``Core().load_network(network, "CPU", {DYN_BATCH_ENABLED: YES})`` (topology check, buffer
  plan, and every kernel compiled, or loaded from Numba's cache),
- the first ``infer`` at n = 1 after it, and the second.

"cold" runs with ``NUMBA_CACHE_DIR`` set to a new empty directory; the "warm" runs that follow
reuse that directory, so every kernel comes from the on-disk cache. Targets (issue #5): warm
``load_network`` under 2 s, cold under 60 s.

Then (unless ``--no-memory``) the activation memory of one infer request, ``ExecutableNetwork.memory``,
for ``dynbatch.models`` and every compare.py network, as the runtime plans it (after fusion):
planned arena, peak live bytes (the most bytes of tensors alive at one step, a lower bound for any
plan) and one buffer per tensor; and, outside that arena, the scratch its GEMM layers share.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import dynbatch as db
t1 = time.perf_counter()
network = db.read_network(sys.argv[1], batch=int(sys.argv[2]))
t2 = time.perf_counter()
exe = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
t3 = time.perf_counter()
import numpy as np
request = exe.create_infer_request()
request.set_batch(1)
inputs = {name: np.zeros((1,) + shape[1:], np.float32) for name, shape in exe.inputs.items()}
t4 = time.perf_counter()
request.infer(inputs)
t5 = time.perf_counter()
request.infer(inputs)
t6 = time.perf_counter()
import numba
print(json.dumps(dict(import_s=t1 - t0, read_s=t2 - t1, load_s=t3 - t2, first_infer_s=t5 - t4,
                     second_infer_s=t6 - t5, layers=len(network.layers),
                     threading_layer=numba.threading_layer())))
"""


def run_child(model_path: str, max_batch: int, cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, model_path, str(max_batch)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    result["load_average"] = os.getloadavg()[0]
    return result


def load_times(args):
    sys.path.insert(0, HERE)
    from compare import EXTRA_NETWORKS, NETWORKS

    work = tempfile.mkdtemp(prefix="dynbatch_load_time_")
    try:
        model_path = os.path.join(work, f"{args.network}.onnx")
        with open(model_path, "wb") as handle:
            handle.write({**NETWORKS, **EXTRA_NETWORKS}[args.network]().SerializeToString())
        rows = []
        for cold_round in range(args.cold):
            cache = os.path.join(work, f"numba_cache_{cold_round}")
            os.mkdir(cache)
            rows.append(("cold", run_child(model_path, args.max_batch, cache)))
            print(f"# cold run {cold_round + 1}: load {rows[-1][1]['load_s']:.1f} s", file=sys.stderr, flush=True)
            for _ in range(args.warm):
                rows.append(("warm", run_child(model_path, args.max_batch, cache)))
        first = rows[0][1]
        print(f"## Load time: {args.network} ({first['layers']} layers after read_network), max batch "
              f"{args.max_batch}, {first['threading_layer']} threading layer, fresh process per row\n")
        columns = ("import_s", "read_s", "load_s", "first_infer_s", "second_infer_s", "process_s")
        head = ("| import dynbatch s | read_network s | load_network s | first infer (n = 1) ms | "
                "second infer ms | process wall s | load average |")
        print("| cache " + head)
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind, row in rows:
            print(f"| {kind} | {row['import_s']:.2f} | {row['read_s']:.2f} | {row['load_s']:.2f} | "
                  f"{row['first_infer_s'] * 1e3:.1f} | {row['second_infer_s'] * 1e3:.1f} | {row['process_s']:.2f} | "
                  f"{row['load_average']:.1f} |")
        print("\nMedians:\n")
        print("| cache | runs " + head.replace(" load average |", ""))
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind in ("cold", "warm"):
            selected = [row for k, row in rows if k == kind]
            if selected:
                m = {c: statistics.median(row[c] for row in selected) for c in columns}
                print(f"| {kind} | {len(selected)} | {m['import_s']:.2f} | {m['read_s']:.2f} | {m['load_s']:.2f} | "
                      f"{m['first_infer_s'] * 1e3:.1f} | {m['second_infer_s'] * 1e3:.1f} | {m['process_s']:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory_table(max_batch: int):
    sys.path.insert(0, HERE)
    from compare import NETWORKS

    import dynbatch as db
    from dynbatch import models

    networks = {"lenet": lambda: models.lenet(max_batch), "inception": lambda: models.inception(max_batch)}
    networks.update({f"{name} (ONNX)": (lambda build=build: db.read_network(build(), batch=max_batch))
                     for name, build in NETWORKS.items()})
    print(f"\n## Activation memory of one infer request, max batch {max_batch} (ExecutableNetwork.memory)\n")
    print("| network | layers (run) | planned MB | peak live MB | naive MB | planned / peak | planned / naive "
          "| + GEMM scratch MB | (planned + scratch) / peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, build in networks.items():
        network = build()
        exe = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
        memory = exe.memory
        planned, peak, naive = memory["planned_bytes"], memory["peak_live_bytes"], memory["naive_bytes"]
        # The scratch the GEMM layers of a request share, outside the activation arena.
        scratch = memory["scratch_bytes"]
        run = len(exe._compiled.layers)
        print(f"| {name} | {len(network.layers)} ({run}) | {planned / 1e6:.2f} | {peak / 1e6:.2f} | {naive / 1e6:.2f} | "
              f"{planned / peak:.3f} | {planned / naive:.2f} | {scratch / 1e6:.2f} | {(planned + scratch) / peak:.2f} |",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="googlenet", help="a name of compare.py's NETWORKS or EXTRA_NETWORKS")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--cold", type=int, default=2, help="cold runs, each with a new empty cache directory")
    parser.add_argument("--warm", type=int, default=5, help="warm runs after each cold run")
    parser.add_argument("--no-memory", action="store_true", help="skip the activation memory table")
    args = parser.parse_args()
    if args.cold:
        load_times(args)
    if not args.no_memory:
        memory_table(args.max_batch)


if __name__ == "__main__":
    main()
