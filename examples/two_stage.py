"""The scenario Dynamic Batching was made for: a first stage finds a different number of objects in
every frame, and all the objects of a frame go to a second network as one batch.

Runs one stream of frames three ways and prints the cost of each:
- dynbatch with set_batch(n): the network is loaded once for the maximum batch, each frame runs n rows;
- padded: the same network always runs the maximum batch, whatever n is;
- reloaded: a network is loaded for each new batch size (what a static engine must do).

    python examples/two_stage.py [--frames 60] [--max-batch 16]
"""
import argparse
import time

import numpy as np

import dynbatch as db
from dynbatch.models import lenet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    # First stage stand-in: how many objects each frame holds, and their crops.
    counts = rng.integers(1, args.max_batch + 1, size=args.frames)
    frames = [rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in counts]
    core = db.Core()

    start = time.perf_counter()
    exe = core.load_network(lenet(args.max_batch), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    print(f"loaded for max batch {exe.max_batch} in {time.perf_counter() - start:.2f} s")

    dynamic_ms, dynamic_results = [], []
    for crops in frames:
        start = time.perf_counter()
        request.set_batch(len(crops))
        dynamic_results.append(request.infer({"crops": crops})["prob"])
        dynamic_ms.append((time.perf_counter() - start) * 1e3)
    for index in range(min(5, len(frames))):
        print(f"frame {index}: {counts[index]:2d} objects, {dynamic_ms[index]:6.2f} ms, classes {dynamic_results[index].argmax(1).tolist()}")

    padded = core.load_network(lenet(args.max_batch), "CPU").create_infer_request()
    padded_ms = []
    for crops in frames:
        start = time.perf_counter()
        batch = np.zeros((args.max_batch, 3, 32, 32), np.float32)
        batch[: len(crops)] = crops
        padded.infer({"crops": batch})
        padded_ms.append((time.perf_counter() - start) * 1e3)

    reload_ms = []
    for crops in frames:
        start = time.perf_counter()
        static = core.load_network(lenet(len(crops)), "CPU").create_infer_request()
        static.infer({"crops": crops})
        reload_ms.append((time.perf_counter() - start) * 1e3)

    total = {name: sum(times) for name, times in
             (("dynamic batch (set_batch)", dynamic_ms), ("padded to max batch", padded_ms), ("reload per batch size", reload_ms))}
    print(f"\n{len(frames)} frames, {counts.sum()} objects, batch sizes 1..{args.max_batch}")
    for name, ms in total.items():
        print(f"  {name:28s} {ms:9.1f} ms  ({ms / len(frames):7.2f} ms/frame)")
    print(f"speed-up of dynamic batch: {total['padded to max batch'] / total['dynamic batch (set_batch)']:.2f}x over padding, "
          f"{total['reload per batch size'] / total['dynamic batch (set_batch)']:.2f}x over reloading")


if __name__ == "__main__":
    main()
