"""OpenBLAS's worker threads spinning between GEMMs (its default) against sleeping at once
(``OPENBLAS_THREAD_TIMEOUT=4``, what dynbatch sets unless the user did), in fresh processes.

    python benchmarks/openblas_timeout.py [--rounds 4] [--batch 8] [--busy]

Each round runs one process per setting, alternating; each process loads compare.py's ResNet and
GoogLeNet for the batch, makes 3 warm-up inferences and prints the median wall-clock time of 25,
in ms per image. ``--busy`` keeps one core busy with another process meanwhile (a shared machine).
The variable must be set before SciPy's OpenBLAS loads, hence one process per measurement.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import statistics, sys, time
sys.path.insert(0, {benchmarks!r})
import numpy as np, numba, compare, dynbatch as db
numba.set_num_threads(2)
batch = {batch}
for name in ("resnet", "googlenet"):
    model = compare.NETWORKS[name]()
    exe = db.Core().load_network(db.read_network(model, batch=batch), "CPU", {{db.KEY_DYN_BATCH_ENABLED: db.YES}})
    request = exe.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, 3, 112, 112)).astype(np.float32)
    for _ in range(3):
        request.infer({{"data": x}})
    times = []
    for _ in range(25):
        start = time.perf_counter()
        request.infer({{"data": x}})
        times.append(time.perf_counter() - start)
    print(f"{{statistics.median(times) / batch * 1e3:.2f}}", end=" ")
"""

BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"

SETTINGS = {"OpenBLAS default (28)": "28", "timeout 4 (dynbatch's)": "4"}


def run(timeout: str, batch: int) -> str:
    env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT=timeout)
    code = CHILD.format(benchmarks=os.path.dirname(os.path.abspath(__file__)), batch=batch)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return " / ".join(done.stdout.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if args.busy else None
    try:
        print(f"ms per image at n = {args.batch}, resnet / googlenet" + (" (one core busy)" if busy else ""))
        print("| round | " + " | ".join(SETTINGS) + " |")
        print("|---|" + "---|" * len(SETTINGS))
        for round_ in range(1, args.rounds + 1):
            print(f"| {round_} | " + " | ".join(run(value, args.batch) for value in SETTINGS.values()) + " |",
                  flush=True)
    finally:
        if busy is not None:
            busy.kill()


if __name__ == "__main__":
    main()
