"""dynbatch on a CUDA GPU against PyTorch (cuDNN) on the same ONNX networks, in one process.

    python benchmarks/gpu_compare.py [--batches 1,2,4,8,16,32] [--networks alexnet,resnet]
        [--repeats 20] [--json FILE]

For each network of ``compare.py`` and batch n: milliseconds per image, host array in to host array
out, of dynbatch's "GPU" device (loaded once for the maximum batch, then ``set_batch(n)``) and of
PyTorch running the same ONNX graph with cuDNN (float32, TF32 off so that both do float32
arithmetic; ``cudnn.benchmark`` on, so cuDNN picks its fastest algorithm for each n during the
warm-up call). Also dynbatch's device time (the sum of its per-layer CUDA-event times), which
shows how much of a call is launch and copy overhead, and the relative L2 error of both against
ONNX Runtime on the CPU. Ends with the layers that take most of dynbatch's device time at the
largest batch. Skips with a message where no CUDA GPU is found.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import NETWORKS, median_ms, relative_l2, sample_shape  # noqa: E402

import dynbatch as db  # noqa: E402


def torch_runner(model, device="cuda"):
    """run(x) -> output: the ONNX graph's nodes (the ops compare.py builds) as torch functions on
    ``device``, weights copied there once. None where PyTorch or that device is missing."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device(device)
    constants = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(device) for t in model.graph.initializer}

    def attributes(node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def pads(a):
        p = a.get("pads", [0, 0, 0, 0])
        assert p[:2] == p[2:], f"asymmetric pads {p}"
        return tuple(p[:2])

    def node_fn(node):
        a = attributes(node)
        op = node.op_type
        if op == "Conv":
            return lambda x, w, b=None: F.conv2d(x, w, b, tuple(a.get("strides", [1, 1])), pads(a),
                                                 tuple(a.get("dilations", [1, 1])), a.get("group", 1))
        if op == "ConvTranspose":
            return lambda x, w, b=None: F.conv_transpose2d(x, w, b, tuple(a.get("strides", [1, 1])), pads(a),
                                                           groups=a.get("group", 1))
        if op == "Relu":
            return F.relu
        if op == "MaxPool":
            return lambda x: F.max_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])), pads(a),
                                          ceil_mode=bool(a.get("ceil_mode", 0)))
        if op == "GlobalAveragePool":
            return lambda x: x.mean(dim=(2, 3), keepdim=True)
        if op == "LRN":
            return lambda x: F.local_response_norm(x, a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))
        if op == "Concat":
            return lambda *xs: torch.cat(xs, dim=a["axis"])
        if op == "Flatten":
            return lambda x: torch.flatten(x, a.get("axis", 1))
        if op == "Gemm":
            assert a.get("transB", 0) == 1 and not a.get("transA", 0)
            return lambda x, w, b: F.linear(x, w, b)
        if op == "Softmax":
            return lambda x: torch.softmax(x, dim=a.get("axis", -1))
        if op == "Add":
            return torch.add
        if op == "BatchNormalization":
            return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, a.get("epsilon", 1e-5))
        if op == "Slice":
            def slice_(x, starts, ends, axes=None, steps=None):
                index = [slice(None)] * x.dim()
                axes = range(len(starts)) if axes is None else axes.tolist()
                for axis, start, end in zip(axes, starts.tolist(), ends.tolist()):
                    index[axis] = slice(start, end)
                return x[tuple(index)]
            return slice_
        raise NotImplementedError(f"no PyTorch translation of {op}")

    steps = [(node_fn(n), list(n.input), n.output[0]) for n in model.graph.node]
    output = model.graph.output[0].name

    @torch.inference_mode()
    def run(x):
        values = dict(constants)
        values[model.graph.input[0].name] = torch.from_numpy(x).to(device)
        for fn, inputs, out in steps:
            values[out] = fn(*(values[i] for i in inputs))
        return values[output].cpu().numpy()  # synchronizes

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--top", type=int, default=5, help="layers listed per network at the largest batch")
    parser.add_argument("--min-blocks", type=int,
                        help="dynbatch.config.MIN_BLOCKS: 1 always runs the register-tiled convolution, "
                             "a huge value always the one-output-per-thread one (default: a quarter of the SMs)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.min_blocks is not None:
        db.config.MIN_BLOCKS = args.min_blocks
    if "GPU" not in db.Core().available_devices or db.gpu.is_simulator():
        print("no CUDA GPU (or only the CUDA simulator): nothing to time", file=sys.stderr)
        return
    import onnxruntime as ort

    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    results = []
    for name in args.networks.split(","):
        model = NETWORKS[name]()
        model.ir_version = 8  # opset 13 needs no more; older onnxruntime builds refuse newer IR
        exe = db.Core().load_network(db.read_network(model, batch=max(batches)), "GPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
        request = exe.create_infer_request()

        def run_dynbatch(x):
            request.set_batch(len(x))
            return next(iter(request.infer({"data": x}).values()))

        run_torch = torch_runner(model)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        shape = sample_shape(model)
        samples = rng.standard_normal([max(batches)] + shape).astype(np.float32)
        for n in batches:
            x = np.ascontiguousarray(samples[:n])
            reference = session.run(None, {"data": x})[0]
            row = {"network": name, "batch": n, "dynbatch_error": relative_l2(run_dynbatch(x), reference)}
            row["dynbatch"] = median_ms(lambda: run_dynbatch(x), args.repeats) / n
            counts = request.get_performance_counts()
            row["dynbatch_device"] = sum(c["real_time_us"] for c in counts.values()) / 1e3 / n
            if run_torch is not None:
                row["torch_error"] = relative_l2(run_torch(x), reference)
                row["torch"] = median_ms(lambda: run_torch(x), args.repeats) / n
            results.append(row)
            torch_part = (f"  torch {row['torch']:8.4f} ms/img ({row['torch'] / row['dynbatch']:.2f}x)"
                          f"  err {row['torch_error']:.1e}") if run_torch is not None else ""
            print(f"{name:10s} n={n:3d}  dynbatch {row['dynbatch']:8.4f} ms/img (device {row['dynbatch_device']:8.4f})"
                  f"  err {row['dynbatch_error']:.1e}{torch_part}", flush=True)
        request.set_batch(max(batches))
        request.infer({"data": samples})
        counts = sorted(request.get_performance_counts().items(), key=lambda kv: -kv[1]["real_time_us"])
        total = sum(c["real_time_us"] for _, c in counts)
        for layer, c in counts[: args.top]:
            print(f"    {layer:28s} {c['exec_type']:24s} {c['real_time_us'] / 1e3:8.3f} ms ({c['real_time_us'] / total:4.0%})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
