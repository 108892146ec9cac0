"""dynbatch against ONNX Runtime and OpenVINO on the same ONNX networks, in one process.

    pip install -e ".[bench]" && python benchmarks/compare.py [--batches 1,2,4,8,16,32] [--networks alexnet,googlenet]
        [--threads 2] [--repeats 5] [--rounds 5] [--plot benchmarks/compare.png] [--json FILE]

For each network and batch n: milliseconds per image of each runtime (float32, the same thread
count, the same inputs; the runtimes take turns at each batch, and each cell is the median over
``--rounds`` turns of the median of ``--repeats`` calls), dynbatch's time over each other
runtime's (the median of the turns' ratios), and a check that the outputs agree (relative L2
error). dynbatch and OpenVINO load once for the maximum batch (OpenVINO with a bounded dynamic
batch, 1..max) and run n; ONNX Runtime runs its session at n (dim 0 is symbolic).
Where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set they slow BLAS: unset both for this command.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import dynbatch as db


class Builder:
    """A few lines per layer with onnx.helper; random weights scaled by 1/sqrt(fan-in)."""

    def __init__(self, name: str, seed: int = 0):
        self.name, self.rng, self.nodes, self.weights, self.count = name, np.random.default_rng(seed), [], [], 0

    def _fresh(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, array, dtype=np.float32):
        name = self._fresh("w")
        self.weights.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def op(self, op_type, inputs, **attrs):
        out = self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x, c_in, c_out, k, stride=1, pad=None, group=1, relu=True):
        pad = k // 2 if pad is None else pad
        w = self.const(self.rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / (c_in // group * k * k)))
        b = self.const(self.rng.standard_normal(c_out) * 0.01)
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)
        return self.op("Relu", [y]) if relu else y

    def bn(self, x, c):
        params = [self.const(v) for v in (self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c),
                                           self.rng.normal(0, 0.1, c), self.rng.uniform(0.5, 1.5, c))]
        return self.op("BatchNormalization", [x] + params, epsilon=1e-5)

    def fc(self, x, f_in, f_out):
        w = self.const(self.rng.standard_normal((f_out, f_in)) / np.sqrt(f_in))
        return self.op("Gemm", [x, w, self.const(np.zeros(f_out))], transB=1)

    def model(self, x_shape, output):
        graph = helper.make_graph(
            self.nodes, self.name, [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", *x_shape])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def alexnet(size=112):
    g = Builder("alexnet")
    y = g.conv("data", 3, 64, 11, stride=4, pad=2)
    y = g.op("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2])
    y = g.conv(y, 64, 192, 5, group=2)
    y = g.op("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = g.conv(y, 192, 384, 3)
    y = g.conv(y, 384, 256, 3, group=2)
    y = g.conv(y, 256, 256, 3)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = g.op("Flatten", [y], axis=1)
    side = ((size + 4 - 11) // 4 + 1 - 3) // 2 + 1        # after conv1 and the first pooling
    side = -(-(side - 3) // 2) + 1                       # second pooling (ceil)
    side = -(-(side - 3) // 2) + 1                       # third pooling (ceil)
    y = g.op("Relu", [g.fc(y, 256 * side * side, 1024)])
    return g.model((3, size, size), g.op("Softmax", [g.fc(y, 1024, 1000)], axis=1))


def googlenet(size=112):
    g = Builder("googlenet")

    def inception(x, c_in, c1, c3r, c3, c5r, c5, cp):
        b1 = g.conv(x, c_in, c1, 1)
        b2 = g.conv(g.conv(x, c_in, c3r, 1), c3r, c3, 3)
        b3 = g.conv(g.conv(x, c_in, c5r, 1), c5r, c5, 5)
        b4 = g.conv(g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), c_in, cp, 1)
        return g.op("Concat", [b1, b2, b3, b4], axis=1), c1 + c3 + c5 + cp

    y = g.conv("data", 3, 64, 7, stride=2)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = g.op("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    y = g.conv(g.conv(y, 64, 64, 1), 64, 192, 3)
    y = g.op("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y, c = inception(y, 192, 64, 96, 128, 16, 32, 32)
    y, c = inception(y, c, 128, 128, 192, 32, 96, 64)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y, c = inception(y, c, 192, 96, 208, 16, 48, 64)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    return g.model((3, size, size), g.op("Softmax", [g.fc(y, c, 1000)], axis=1))


def resnet(size=112):
    g = Builder("resnet")

    def bottleneck(x, c_in, mid, c_out, stride):
        y = g.op("Relu", [g.bn(g.conv(x, c_in, mid, 1, relu=False), mid)])
        y = g.op("Relu", [g.bn(g.conv(y, mid, mid, 3, stride=stride, relu=False), mid)])
        y = g.bn(g.conv(y, mid, c_out, 1, relu=False), c_out)
        shortcut = x if (c_in == c_out and stride == 1) else g.bn(g.conv(x, c_in, c_out, 1, stride=stride, pad=0, relu=False), c_out)
        return g.op("Relu", [g.op("Add", [y, shortcut])])

    y = g.op("Relu", [g.bn(g.conv("data", 3, 64, 7, stride=2, relu=False), 64)])
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = bottleneck(y, 64, 64, 256, 1)
    y = bottleneck(y, 256, 64, 256, 1)
    y = bottleneck(y, 256, 128, 512, 2)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    return g.model((3, size, size), g.op("Softmax", [g.fc(y, 512, 1000)], axis=1))


def squeezenet(size=112):
    g = Builder("squeezenet")

    def fire(x, c_in, squeeze, expand):
        s = g.conv(x, c_in, squeeze, 1)
        return g.op("Concat", [g.conv(s, squeeze, expand, 1), g.conv(s, squeeze, expand, 3)], axis=1), 2 * expand

    y = g.conv("data", 3, 64, 3, stride=2, pad=0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y, c = fire(y, 64, 16, 64)
    y, c = fire(y, c, 16, 64)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y, c = fire(y, c, 32, 128)
    y, c = fire(y, c, 32, 128)
    y = g.op("GlobalAveragePool", [g.conv(y, c, 1000, 1, pad=0)])
    return g.model((3, size, size), g.op("Softmax", [y], axis=1))  # (N, 1000, 1, 1): no trailing Flatten


def fcn(size=64):
    g = Builder("fcn")
    y = g.conv("data", 3, 32, 3)
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.conv(y, 32, 64, 3)
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.conv(y, 64, 21, 1, pad=0, relu=False)
    w = g.const(g.rng.standard_normal((21, 21, 8, 8)) * 0.05)
    y = g.op("ConvTranspose", [y, w], kernel_shape=[8, 8], strides=[4, 4])
    crop = [g.const(v, np.int64) for v in ([2, 2], [2 + size, 2 + size], [2, 3])]  # starts, ends, axes
    y = g.op("Slice", [y] + crop)
    return g.model((3, size, size), y)


def mobilenet(size=112):
    """MobileNet v1's layers (depthwise 3x3 then pointwise 1x1, each with its ReLU), not in the
    default set (issue 5's five networks): run it with ``--networks mobilenet``."""
    g = Builder("mobilenet")
    y = g.conv("data", 3, 32, 3, stride=2)
    for c_in, c_out, stride in [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
                                (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]:
        y = g.conv(g.conv(y, c_in, c_in, 3, stride=stride, group=c_in), c_in, c_out, 1, pad=0)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    return g.model((3, size, size), g.op("Softmax", [g.fc(y, 1024, 1000)], axis=1))


def mobilenet_v2(size=112):
    """MobileNet v2's inverted residual blocks (a 1x1 expansion by 6 and a depthwise 3x3, each
    with ReLU6, then a linear 1x1 projection, added to the block's input where the shapes match),
    not in the default set: run it with ``--networks mobilenet_v2``."""
    g = Builder("mobilenet_v2")
    six = [g.const(0.0), g.const(6.0)]

    def relu6(y):
        return g.op("Clip", [y] + six)

    def block(x, c_in, c_out, stride, expand):
        y = x if expand == 1 else relu6(g.conv(x, c_in, c_in * expand, 1, pad=0, relu=False))
        y = relu6(g.conv(y, c_in * expand, c_in * expand, 3, stride=stride, group=c_in * expand, relu=False))
        y = g.conv(y, c_in * expand, c_out, 1, pad=0, relu=False)
        return g.op("Add", [y, x]) if stride == 1 and c_in == c_out else y

    y, c = relu6(g.conv("data", 3, 32, 3, stride=2, relu=False)), 32
    for expand, c_out, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                           (6, 160, 3, 2), (6, 320, 1, 1)]:
        for r in range(repeats):
            y, c = block(y, c, c_out, stride if r == 0 else 1, expand), c_out
    y = relu6(g.conv(y, c, 1280, 1, pad=0, relu=False))
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    return g.model((3, size, size), g.op("Softmax", [g.fc(y, 1280, 1000)], axis=1))


NETWORKS = {"alexnet": alexnet, "googlenet": googlenet, "resnet": resnet, "squeezenet": squeezenet, "fcn": fcn}
#: Networks beside issue 5's, run by name only.
EXTRA_NETWORKS = {"mobilenet": mobilenet, "mobilenet_v2": mobilenet_v2}


#: Seconds between two runtimes' turns: longer than their worker threads spin after a call.
PAUSE_S = 0.05
#: Seconds of calls each turn makes before it times any (at least one call): after the pause, a
#: runtime's worker threads are asleep, and on this VM TBB's worker stayed away from a short call
#: for up to 10 calls back to back (the idle pause, README's Limitations, measured on its own by
#: ``idle_pause.py``). The cells are then every runtime's time with its threads at work.
WARM_UP_S = 0.02


def median_ms(run, repeats: int) -> float:
    """The median ms of ``repeats`` calls of ``run``, after calls for WARM_UP_S."""
    start = time.perf_counter()
    run()
    while time.perf_counter() - start < WARM_UP_S:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def relative_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def sample_shape(model) -> list[int]:
    """The shape of one sample of the model's first input (its dims after the batch)."""
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]


def onnxruntime_options(threads: int):
    """ONNX Runtime session options for ``threads`` intra-op threads, as every benchmark here runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return options


def runtimes(model, max_batch: int, threads: int):
    """{name: run(x) -> output} for each runtime found, loaded once for max_batch."""
    import numba

    numba.set_num_threads(threads)
    found = {}
    exe = db.Core().load_network(db.read_network(model, batch=max_batch), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()

    def run_dynbatch(x):
        request.set_batch(len(x))
        return next(iter(request.infer({"data": x}).values()))

    found["dynbatch"] = run_dynbatch
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), onnxruntime_options(threads),
                                       providers=["CPUExecutionProvider"])
        found["onnxruntime"] = lambda x: session.run(None, {"data": x})[0]
    except ImportError:
        print("onnxruntime not installed: skipped", file=sys.stderr)
    try:
        import openvino as ov

        core = ov.Core()
        ov_model = core.read_model(model.SerializeToString(), b"")
        shape = list(ov_model.input(0).get_partial_shape())
        ov_model.reshape({0: ov.PartialShape([ov.Dimension(1, max_batch)] + shape[1:])})
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        ov_request = compiled.create_infer_request()
        found["openvino"] = lambda x: ov_request.infer({0: x})[compiled.output(0)]
    except ImportError:
        print("openvino not installed: skipped", file=sys.stderr)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="of " + ",".join({**NETWORKS, **EXTRA_NETWORKS}))
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="turns of every runtime at every batch; each cell is their median")
    parser.add_argument("--plot")
    parser.add_argument("--json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    results = []
    for name in args.networks.split(","):
        model = {**NETWORKS, **EXTRA_NETWORKS}[name]()
        found = runtimes(model, max(batches), args.threads)
        shape = sample_shape(model)
        samples = rng.standard_normal([max(batches)] + shape).astype(np.float32)
        inputs = {n: np.ascontiguousarray(samples[:n]) for n in batches}
        rows = {n: {"network": name, "batch": n} for n in batches}
        if "onnxruntime" in found:
            for n in batches:
                reference = found["onnxruntime"](inputs[n])
                for runtime, run in found.items():
                    rows[n][f"{runtime}_error"] = relative_l2(run(inputs[n]), reference)
        # The runtimes take turns at each batch, ``--rounds`` times over: this shared machine runs
        # 1.3x slower for seconds to minutes at a time, and what one runtime loses to such a
        # phase the others then lose too, in the same round. A pause before each turn lets the
        # previous runtime's worker threads stop spinning (they would steal the cores). Each cell
        # is the median of its rounds; each ratio the median of its rounds' ratios.
        sweeps = {runtime: {n: [] for n in batches} for runtime in found}
        for _ in range(args.rounds):
            for n in batches:
                for runtime, run in found.items():
                    time.sleep(PAUSE_S)
                    sweeps[runtime][n].append(median_ms(lambda: run(inputs[n]), args.repeats) / n)
        for runtime in found:
            for n in batches:
                rows[n][runtime] = statistics.median(sweeps[runtime][n])
                rows[n][f"dynbatch_over_{runtime}"] = statistics.median(
                    d / t for d, t in zip(sweeps["dynbatch"][n], sweeps[runtime][n]))
        for n in batches:
            row = rows[n]
            results.append(row)
            ratios = "  ".join(f"{r} {row[r]:8.3f} ms/img" + (f" (dynbatch / it {row[f'dynbatch_over_{r}']:.2f}x)"
                                                              if r != "dynbatch" else "")
                               for r in found)
            errors = max((row.get(f"{r}_error", 0.0) for r in found), default=0.0)
            print(f"{name:10s} n={n:3d}  {ratios}  max rel. L2 vs ORT {errors:.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    if args.plot:
        plot(results, args.plot)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = sorted({r["network"] for r in results}, key=list({**NETWORKS, **EXTRA_NETWORKS}).index)
    figure, axes = plt.subplots(1, len(networks), figsize=(4 * len(networks), 3.5), squeeze=False)
    for axis, name in zip(axes[0], networks):
        rows = [r for r in results if r["network"] == name]
        for runtime in ("dynbatch", "onnxruntime", "openvino"):
            if runtime in rows[0]:
                axis.plot([r["batch"] for r in rows], [r[runtime] for r in rows], "o-", label=runtime)
        axis.set(title=name, xlabel="batch n", ylabel="ms per image", xscale="log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
