"""The ``dynbatch`` command: ``demo`` (the two-stage scenario), ``bench`` (like OpenVINO's
benchmark_app) and ``check`` (the topology analysis as a table).

Every failure a user can cause (a missing file, a file that is not ONNX, a rejected topology, a bad
option) ends in one line on stderr and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _batch_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _read(path: str, batch: int | None):
    import dynbatch as db

    return db.read_network(path, batch=batch)


# -- demo -----------------------------------------------------------------------------------------
def command_demo(args) -> int:
    from . import demo

    demo.run(frames=args.frames, max_batch=args.max_batch, device=args.device, seed=args.seed)
    return EXIT_OK


# -- check ----------------------------------------------------------------------------------------
def command_check(args) -> int:
    import dynbatch as db

    try:
        network = _read(args.model, args.batch)
    except db.UnsupportedTopologyError as error:  # the importer rejected ONNX nodes: list every node
        return _print_rejected_onnx_nodes(args.model, error)
    verdicts = db.analyse(network)
    kernels = {}
    if all(v.supported for v in verdicts):  # load it: the kernel of each layer depends on its shapes
        exe = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
        counts = exe.create_infer_request().get_performance_counts()
        kernels = {name: c["exec_type"] for name, c in counts.items()}
    rows = [("name", "type", "kernel / reason")]
    for verdict in verdicts:
        verdict_text = kernels.get(verdict.name, "-") if verdict.supported else "REJECTED: " + verdict.reason
        rows.append((verdict.name, verdict.type, verdict_text))
    _print_table(rows)
    rejected = [v for v in verdicts if not v.supported]
    print(f"\n{network.name}: {len(verdicts)} layers, max batch {network.batch_size}: " + (
        f"{len(rejected)} rejected, cannot run with dynamic batch" if rejected else "runs with dynamic batch"))
    return EXIT_REJECTED if rejected else EXIT_OK


def _print_table(rows: list[tuple[str, str, str]]):
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]}")


def _print_rejected_onnx_nodes(path: str, error) -> int:
    import onnx

    rejected = {name: reason for name, _, reason in error.layers}
    rows = [("node", "op type", "verdict")]
    for node in onnx.load(path, load_external_data=False).graph.node:
        name = node.name or node.output[0]
        rows.append((name, node.op_type, "REJECTED: " + rejected[name] if name in rejected else "ok"))
    _print_table(rows)
    print(f"\n{path}: {len(rejected)} node(s) rejected, cannot run with dynamic batch")
    return EXIT_REJECTED


# -- bench ----------------------------------------------------------------------------------------
def _progress(done: float, label: str):
    width = 30
    filled = int(width * min(done, 1.0))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {label:<24}")
    sys.stderr.flush()


def _latency_stats(times_ms: list[float], batch: int) -> dict:
    ordered = sorted(times_ms)
    return {
        "batch": batch, "count": len(ordered), "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered), "min_ms": ordered[0], "max_ms": ordered[-1],
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "throughput_fps": batch * 1e3 / statistics.median(ordered),
    }


def command_bench(args) -> int:
    import dynbatch as db

    start = time.perf_counter()
    network = _read(args.model, args.max_batch)
    exe = db.Core().load_network(network, args.device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    load_ms = (time.perf_counter() - start) * 1e3
    batches = [b for b in args.batches if b <= exe.max_batch]
    skipped = [b for b in args.batches if b > exe.max_batch]
    if skipped:
        print(f"note: batches {skipped} exceed the max batch {exe.max_batch} and are skipped", file=sys.stderr)
    request = exe.create_infer_request()
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in exe.inputs.items()}

    start = time.perf_counter()
    request.set_batch(batches[0])
    request.infer(inputs)
    first_ms = (time.perf_counter() - start) * 1e3
    print(f"model {args.model}: {len(network.layers)} layers, inputs {exe.inputs}, device {args.device}")
    print(f"load_network: {load_ms:.1f} ms    first inference (batch {batches[0]}): {first_ms:.2f} ms")

    results, layer_times = [], {}
    for index, batch in enumerate(batches):
        request.set_batch(batch)
        times_ms, deadline = [], time.perf_counter() + args.time / len(batches)
        while time.perf_counter() < deadline or len(times_ms) < 3:
            start = time.perf_counter()
            request.infer(inputs)
            times_ms.append((time.perf_counter() - start) * 1e3)
            if len(times_ms) % 8 == 0:
                _progress((index + 1 - max(0.0, deadline - time.perf_counter()) * len(batches) / args.time) / len(batches),
                          f"batch {batch}: {len(times_ms)} runs")
        results.append(_latency_stats(times_ms, batch))
        layer_times[batch] = request.get_performance_counts()
    _progress(1.0, "done")
    sys.stderr.write("\n")

    header = f"{'batch':>5} {'count':>6} {'median ms':>10} {'mean ms':>9} {'min ms':>8} {'max ms':>8} {'p90 ms':>8} {'ms/image':>9} {'images/s':>9}"
    print(header)
    for r in results:
        print(f"{r['batch']:5d} {r['count']:6d} {r['median_ms']:10.3f} {r['mean_ms']:9.3f} {r['min_ms']:8.3f} "
              f"{r['max_ms']:8.3f} {r['p90_ms']:8.3f} {r['median_ms'] / r['batch']:9.3f} {r['throughput_fps']:9.1f}")
    if args.layers:
        batch = batches[-1]
        counts = layer_times[batch]
        total = sum(c["real_time_us"] for c in counts.values()) or 1.0
        print(f"\nper-layer counters (last inference, batch {batch}):")
        width = max(len(name) for name in counts)
        for name, c in counts.items():
            print(f"  {name:{width}}  {c['layer_type']:18} {c['exec_type']:24} {c['real_time_us']:10.1f} us  {100 * c['real_time_us'] / total:5.1f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "device": args.device, "load_ms": load_ms, "first_inference_ms": first_ms,
                       "batches": results}, handle, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        _plot(results, args.plot, args.model)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _plot(results: list[dict], path: str, title: str):
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib (pip install 'dynbatch[bench]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [r["batch"] for r in results]
    figure, (latency, per_image) = plt.subplots(1, 2, figsize=(10, 4))
    latency.plot(batches, [r["median_ms"] for r in results], "o-", label="median")
    latency.fill_between(batches, [r["min_ms"] for r in results], [r["p90_ms"] for r in results], alpha=0.2, label="min..p90")
    latency.set(xlabel="batch size", ylabel="latency (ms)", title="latency per inference")
    latency.legend()
    per_image.plot(batches, [r["median_ms"] / r["batch"] for r in results], "o-")
    per_image.set(xlabel="batch size", ylabel="ms per image", title="time per image")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynbatch", description="Run CNNs at any batch size up to a maximum (dynamic batching).")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the two-stage scenario: detect digits per frame, classify each frame's crops as one batch")
    demo.add_argument("--frames", type=_positive_int, default=100)
    demo.add_argument("--max-batch", type=_positive_int, default=8)
    demo.add_argument("--device", default="CPU")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=command_demo)

    bench = commands.add_parser("bench", help="latency and throughput per batch size, like benchmark_app")
    bench.add_argument("model", help="an ONNX file")
    bench.add_argument("--max-batch", type=_positive_int, default=32)
    bench.add_argument("--batches", type=_batch_list, default=[1, 2, 4, 8, 16, 32])
    bench.add_argument("--time", type=float, default=10.0, help="seconds in all, shared by the batch sizes")
    bench.add_argument("--device", default="CPU")
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument("--plot", help="draw latency and time per image against batch size to this PNG")
    bench.add_argument("--layers", action="store_true", help="print per-layer counters")
    bench.set_defaults(handler=command_bench)

    check = commands.add_parser("check", help="the topology analysis: can the model run with dynamic batch?")
    check.add_argument("model", help="an ONNX file")
    check.add_argument("--batch", type=_positive_int, help="the maximum batch (needed when dim 0 is symbolic)")
    check.set_defaults(handler=command_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import DynBatchError, UnsupportedTopologyError

    args = build_parser().parse_args(argv)
    if getattr(args, "time", 1.0) <= 0:
        print("error: --time must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except FileNotFoundError as error:
        print(f"error: no such file: {error.filename}", file=sys.stderr)
    except IsADirectoryError as error:
        print(f"error: {error.filename} is a directory, not an ONNX file", file=sys.stderr)
    except UnsupportedTopologyError as error:
        first = str(error).splitlines()[0]
        named = ", ".join(f"{name} ({kind})" for name, kind, _ in error.layers)
        print(f"error: {first}: {named}; `dynbatch check MODEL` gives every reason", file=sys.stderr)
        return EXIT_REJECTED
    except DynBatchError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
