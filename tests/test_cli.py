"""The dynbatch command, driven as a user would: in a subprocess."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dynbatch import demo


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dynbatch.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def small_model(path, reject=False):
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc_w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "fc_w"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
    ]
    if reject:
        nodes.insert(2, helper.make_node("Transpose", ["relu"], ["relu_t"], name="odd_transpose", perm=[0, 1, 3, 2]))
        nodes[3].input[0] = "relu_t"
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5])], [weights, fc])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_demo_runs_and_reports(tmp_path):
    result = run_cli("demo", "--frames", 6, "--max-batch", 8)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "accuracy" in out and "padded to max batch" in out and "re-load per new batch size" in out
    assert "speed-up of dynamic batch" in out
    assert len([line for line in out.splitlines() if line[:5].strip().isdigit()]) == 6  # one line per frame


def test_demo_accuracy_reaches_the_floor_of_the_shipped_model():
    # The shipped classifier with the demo's detector reaches about 98% on held-out digits.
    summary = demo.run(frames=60, max_batch=8, seed=3, echo=lambda *_: None)
    assert summary["objects"] > 100
    assert summary["accuracy"] >= 0.93


def test_detector_finds_the_placed_digits():
    frames = demo.make_frames(20, 6, seed=5)
    found = sum(len(demo.detect(frame.image)[0]) for frame in frames)
    placed = sum(len(frame.labels) for frame in frames)
    assert abs(found - placed) <= placed * 0.05


def test_bench_reports_every_batch_and_writes_json_and_plot(tmp_path):
    model = small_model(tmp_path / "small.onnx")
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", model, "--max-batch", 4, "--batches", "1,2,4", "--time", 0.6, "--layers",
                     "--json", report, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "load_network" in result.stdout and "first inference" in result.stdout
    assert "per-layer counters" in result.stdout and "convolution_cpu" in result.stdout
    data = json.loads(report.read_text())
    assert [row["batch"] for row in data["batches"]] == [1, 2, 4]
    for row in data["batches"]:
        assert row["count"] >= 3 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["throughput_fps"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_accepts_and_rejects(tmp_path):
    accepted = run_cli("check", small_model(tmp_path / "ok.onnx"), "--batch", 4)
    assert accepted.returncode == 0, accepted.stderr
    assert "runs with dynamic batch" in accepted.stdout and "convolution_cpu" in accepted.stdout
    rejected = run_cli("check", small_model(tmp_path / "bad.onnx", reject=True), "--batch", 4)
    assert rejected.returncode == 1
    assert "odd_transpose" in rejected.stdout and "REJECTED" in rejected.stdout


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: ["check", tmp / "missing.onnx", "--batch", 2], "no such file"),
    (lambda tmp: ["check", tmp / "notes.txt", "--batch", 2], "onnx"),
    (lambda tmp: ["bench", small_model(tmp / "bad.onnx", reject=True), "--max-batch", 2], "odd_transpose"),
    (lambda tmp: ["bench", small_model(tmp / "ok.onnx"), "--batches", "1,x"], "comma-separated positive integers"),
    (lambda tmp: ["bench", small_model(tmp / "ok.onnx"), "--max-batch", 0], "positive integer"),
    (lambda tmp: ["check", small_model(tmp / "ok.onnx")], "batch"),
])
def test_errors_are_one_clear_line_without_traceback(tmp_path, make_args, message):
    (tmp_path / "notes.txt").write_text("not a model")
    result = run_cli(*make_args(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error_lines and message.lower() in result.stderr.lower()
