"""read_network: ONNX models of real architectures give onnxruntime's outputs, sample by sample, at
batch 1, a middle size and the maximum; every unsupported node is named in one error; paths,
bytes and ModelProtos read alike; the batch override and the errors of a bad file."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import dynbatch as db  # noqa: E402

from . import onnx_models as models  # noqa: E402
from .onnx_models import GraphBuilder  # noqa: E402

MAX = 5
BATCHES = (1, 3, MAX)
TOLERANCE = 1e-4
ort.set_default_logger_severity(3)  # opset-6 models make onnxruntime warn about legacy support


def ort_session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_ort(session, feeds: dict, fixed_batch: bool) -> dict:
    """onnxruntime's outputs for ``feeds``; sample by sample when the model's batch is fixed."""
    names = [o.name for o in session.get_outputs()]
    if not fixed_batch:
        return dict(zip(names, session.run(None, feeds)))
    rows = len(next(iter(feeds.values())))
    per_sample = [session.run(None, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(rows)]
    return {name: np.concatenate([outputs[j] for outputs in per_sample]) for j, name in enumerate(names)}


def relative_errors(actual, expected):
    """||actual - expected|| / ||expected|| for each sample (row)."""
    rows = len(expected)
    difference = np.asarray(actual, np.float64).reshape(rows, -1) - np.asarray(expected, np.float64).reshape(rows, -1)
    return np.linalg.norm(difference, axis=1) / np.maximum(np.linalg.norm(np.reshape(expected, (rows, -1)), axis=1), 1e-30)


def load(network):
    return db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})


# ---------------------------------------------------------------------------------------------
# Architectures against onnxruntime


def assert_matches_onnxruntime(network, model):
    """Run ``network`` at batch 1, a middle size and the maximum on one request, each time against
    onnxruntime running ``model`` on the same samples (one by one when its batch is fixed)."""
    fixed_batch = all(i.type.tensor_type.shape.dim[0].HasField("dim_value") for i in model.graph.input)
    session = ort_session(model)
    request = load(network).create_infer_request()
    rng = np.random.default_rng(0)
    data = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in network.inputs.items()}
    for n in BATCHES:
        request.set_batch(n)
        feeds = {k: v[:n] for k, v in data.items()}
        actual = request.infer(feeds)
        expected = run_ort(session, feeds, fixed_batch)
        assert list(actual) == list(expected)
        for output, reference in expected.items():
            assert actual[output].shape == reference.shape, output
            errors = relative_errors(actual[output], reference)
            assert errors.max() < TOLERANCE, f"{output} at batch {n}: per-sample relative L2 errors {errors}"


@pytest.mark.parametrize("name", list(models.ARCHITECTURES))
def test_architecture_matches_onnxruntime(name):
    builder, kwargs = models.ARCHITECTURES[name]
    model = builder(**kwargs)
    network = db.read_network(model, batch=MAX)
    assert network.batch_size == MAX
    assert network.outputs == [o.name for o in model.graph.output]
    assert_matches_onnxruntime(network, model)


def test_opset6_legacy_broadcast_matches_its_opset7_spelling():
    """onnxruntime cannot run opset-6 arithmetic; the opset-7 spelling of the same model can."""
    network = db.read_network(models.legacy_broadcast(6), batch=MAX)
    assert [layer.type for layer in network.layers] == ["Convolution", "Activation", "BatchNormalization", "Power", "SoftMax"]
    assert_matches_onnxruntime(network, models.legacy_broadcast(7))


def layer_types(network):
    return [layer.type for layer in network.layers]


def test_exporter_flatten_chains_fold_into_fully_connected():
    """Shape->Gather->Unsqueeze->Concat->Reshape and a Reshape hard-coding the traced batch [1, 144]
    leave no layer: FullyConnected reads the convolution's output directly."""
    for model in (models.shape_gather_flatten(), models.hardcoded_flatten()):
        network = db.read_network(model, batch=MAX)
        assert layer_types(network) == ["Convolution", "Activation", "FullyConnected"] + (
            ["Activation"] if model.graph.name == "hardcoded_flatten" else [])
        assert network.layers[2].inputs == (network.layers[1].name,)


def test_per_channel_mul_add_fold_into_convolution_or_become_batch_normalization():
    network = db.read_network(models.batchnorm_as_mul_add(), batch=MAX)
    # Conv->Mul->Add folds into the convolution; Mul/Add on an input and Div/Sub after a shared
    # convolution each become one BatchNormalization.
    assert layer_types(network) == ["Convolution", "Activation", "BatchNormalization", "Convolution",
                                    "BatchNormalization", "Eltwise", "Eltwise"]


def test_layer_names_are_node_names_and_outputs_keep_onnx_names():
    model = models.resnet()
    network = db.read_network(model, batch=2)
    node_names = {node.name for node in model.graph.node}
    assert all(layer.name in node_names for layer in network.layers[:-1])
    assert network.layers[-1].name == "fc_out" and network.outputs == ["fc_out"]  # the Gemm took its output's name
    assert layer_types(network).count("BatchNormalization") == 7
    two = db.read_network(models.two_inputs(), batch=2)
    assert two.outputs == ["sum", "relu", "right_copy"]
    assert layer_types(two) == ["Eltwise", "Activation", "Copy"]  # an output aliasing an input is copied
    vgg = db.read_network(models.vgg(), batch=2)  # MatMul + Add: one FullyConnected with biases
    assert layer_types(vgg)[-3:] == ["FullyConnected", "Activation", "FullyConnected"] and vgg.layers[-1].name == "logits"


def test_dead_nodes_and_unread_inputs_are_left_out():
    g = GraphBuilder()
    g.op("Relu", ["data"], ["out"])
    g.op("Resize", ["data", "", g.const(np.array([1, 1, 2, 2], np.float32))])  # read by nothing
    model = g.model({"data": ("N", 2, 4, 4), "unused": ("N", 7)}, ["out"], 13)
    network = db.read_network(model, batch=3)
    assert list(network.inputs) == ["data"] and layer_types(network) == ["Activation"]


# ---------------------------------------------------------------------------------------------
# Rejection: every offending node, in one error


def rejected(model, batch=MAX):
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.read_network(model, batch=batch)
    error = caught.value
    assert isinstance(error, ValueError)
    for name, op, reason in error.layers:
        assert name in str(error) and reason in str(error)
    return error


def test_every_offending_node_is_named():
    """Transpose, Resize and a non-flatten Reshape in three branches: all three are named; the
    Relu after the Resize is skipped, not blamed; the supported branch is not named."""
    g = GraphBuilder()
    g.op("Transpose", ["data"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1])
    resized = g.op("Resize", ["data", "", g.const(np.array([1, 1, 2, 2], np.float32))], name="upsample")
    g.op("Relu", [resized], ["up"], name="after_resize")
    blocks = g.op("Reshape", ["data", g.const(np.array([0, 16, 4, 4], np.int64))], name="to_blocks")
    g.conv(blocks, 16, 4, 3, name="conv_blocks")
    g.op("Relu", ["data"], ["fine"], name="supported")
    model = g.model({"data": ("N", 4, 8, 8)}, ["nhwc", "up", "conv_blocks_out", "fine"], 13)
    error = rejected(model)
    assert [(name, op) for name, op, _ in error.layers] == [("to_nhwc", "Transpose"), ("upsample", "Resize"), ("to_blocks", "Reshape")]
    reasons = dict((name, reason) for name, _, reason in error.layers)
    assert "perm [0, 2, 3, 1]" in reasons["to_nhwc"]
    assert "conv_blocks" in reasons["to_blocks"] and "(5, 16, 4, 4)" in reasons["to_blocks"]
    assert "after_resize" not in str(error) and "supported" not in str(error).split("Supported ONNX ops")[0]


def single_node(op, inputs, input_shape=("N", 4, 6, 6), opset=13, outputs=1, domain=None, **attrs):
    """A model of one node reading "data" (and constants); every output is a graph output."""
    g = GraphBuilder()
    names = [f"out{i}" for i in range(outputs)]
    g.nodes.append(helper.make_node(op, [g.const(i) if isinstance(i, np.ndarray) else i for i in inputs],
                                    names, name="node", domain=domain, **attrs))
    return g.model({"data": input_shape}, names, opset)


def f32(*values):
    return np.array(values, np.float32)


def i64(*values):
    return np.array(values, np.int64)


W = np.ones((4, 4, 3, 3), np.float32)
REJECTIONS = {
    "maxpool_dilations": (single_node("MaxPool", ["data"], opset=12, kernel_shape=[2, 2], dilations=[2, 2]), "dilations [2, 2]"),
    "maxpool_storage_order": (single_node("MaxPool", ["data"], kernel_shape=[2, 2], storage_order=1), "storage_order 1"),
    "maxpool_indices": (single_node("MaxPool", ["data"], outputs=2, kernel_shape=[2, 2]), "output 1 ('out1')"),
    "averagepool_dilations": (single_node("AveragePool", ["data"], opset=19, kernel_shape=[2, 2], dilations=[1, 2]), "dilations [1, 2]"),
    "pool_1d": (single_node("MaxPool", ["data"], input_shape=("N", 4, 6), kernel_shape=[2]), "4-d"),
    "conv_1d": (single_node("Conv", ["data", np.ones((2, 4, 3), np.float32)], input_shape=("N", 4, 6)), "4-d"),
    "conv_tensor_weights": (single_node("Conv", ["data", "data"], input_shape=(4, 4, 3, 3)), "weights W (input 'data') must be a constant"),
    "conv_transpose_output_shape": (single_node("ConvTranspose", ["data", W], strides=[2, 2], output_shape=[20, 20]), "negative pads"),
    "gemm_transA": (single_node("Gemm", ["data", np.ones((4, 3), np.float32)], input_shape=("N", 4), transA=1), "transA"),
    "gemm_tensor_B": (single_node("Gemm", ["data", "data"], input_shape=(4, 4)), "B (input 'data') must be a constant"),
    "gemm_C_per_sample": (single_node("Gemm", ["data", np.ones((4, 3), np.float32), np.ones((5, 3), np.float32)], input_shape=("N", 4)), "C of shape (5, 3)"),
    "matmul_3d": (single_node("MatMul", ["data", np.ones((6, 2), np.float32)], input_shape=("N", 4, 6)), "A (5, 4, 6) @ B (6, 2)"),
    "matmul_tensor_rhs": (single_node("MatMul", ["data", "data"], input_shape=(4, 4)), "constant on the right"),
    "softmax_axis0": (single_node("Softmax", ["data"], axis=0), "axis 0"),
    "concat_axis0": (single_node("Concat", ["data", "data"], axis=0), "axis 0"),
    "split_axis0": (single_node("Split", ["data"], outputs=2, axis=0), "axis 0"),
    "slice_batch": (single_node("Slice", ["data", i64(0), i64(1), i64(0)]), "axis 0"),
    "slice_steps": (single_node("Slice", ["data", i64(0), i64(6), i64(2), i64(2)]), "steps [2]"),
    "slice_empty": (single_node("Slice", ["data", i64(4), i64(2), i64(3)]), "is empty"),
    "mul_spatial_constant": (single_node("Mul", ["data", np.ones((1, 1, 6, 6), np.float32)]), "shape (1, 1, 6, 6)"),
    "div_by_zero": (single_node("Div", ["data", f32(0)]), "division by the constant 0"),
    "pow_constant_base": (single_node("Pow", [f32(2), "data"]), "constant base 2.0"),
    "prelu_per_channel": (single_node("PRelu", ["data", np.array([[[0.1]], [[0.2]], [[0.3]], [[0.4]]], np.float32)]), "several values"),
    "gelu_tanh": (single_node("Gelu", ["data"], opset=20, approximate="tanh"), "approximate='tanh'"),
    "clip_min_above_max": (single_node("Clip", ["data", f32(2), f32(1)]), "min 2.0 is greater than max 1.0"),
    "clip_tensor_bound": (single_node("Clip", ["data", "data"]), "min (input 'data') must be a constant"),
    "batchnorm_training": (single_node("BatchNormalization", ["data", f32(1, 1, 1, 1), f32(0, 0, 0, 0), f32(0, 0, 0, 0), f32(1, 1, 1, 1)],
                                       opset=15, training_mode=1), "training_mode=1"),
    "dropout_training": (single_node("Dropout", ["data", f32(0.5), np.array(True)]), "training_mode is true"),
    "reshape_across_batch": (single_node("Reshape", ["data", i64(-1, 36)]), "moving data across the batch axis"),
    "flatten_output": (single_node("Flatten", ["data"]), "graph output 'out0'"),
    "transpose_data": (single_node("Transpose", ["data"], perm=[0, 1, 3, 2]), "reorders the data"),
    "custom_domain": (single_node("FancyOp", ["data"], domain="com.example"), "custom domain 'com.example'"),
    "unknown_op": (single_node("LpNormalization", ["data"]), "op 'LpNormalization' (opset 13) has no dynbatch layer"),
    "resize": (single_node("Resize", ["data", "", f32(1, 1, 2, 2)]), "resizing"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejection_names_the_node(case):
    model, reason = REJECTIONS[case]
    error = rejected(model)
    assert len(error.layers) == 1, error.layers
    name, op, message = error.layers[0]
    assert (name, op) == ("node", model.graph.node[0].op_type)
    assert reason in message, message


def test_control_flow_is_rejected():
    branch = helper.make_graph([helper.make_node("Identity", ["data"], ["inner"])], "branch", [],
                               [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)])
    g = GraphBuilder()
    g.nodes.append(helper.make_node("If", [g.const(np.array(True))], ["out"], name="choose", then_branch=branch, else_branch=branch))
    error = rejected(g.model({"data": ("N", 2, 3, 3)}, ["out"], 13))
    assert error.layers == [("choose", "If", "control flow (Loop, If, Scan) has no dynbatch equivalent")]


def test_eltwise_of_different_ranks_is_rejected():
    g = GraphBuilder()
    g.op("Add", ["data", "lines"], ["out"], name="add")
    error = rejected(g.model({"data": ("N", 4, 6, 6), "lines": ("N", 6, 6)}, ["out"], 13))
    assert error.layers == [("add", "Add", "inputs of shapes [(5, 4, 6, 6), (5, 6, 6)] have different ranks; "
                                           "dynbatch's Eltwise broadcasts equal ranks only")]


def test_constant_node_that_cannot_be_evaluated_is_rejected_and_its_readers_skipped():
    g = GraphBuilder()
    bad = g.op("Reshape", [g.const(f32(1, 2, 3, 4, 5, 6)), g.const(i64(4))], name="bad_reshape")
    g.op("Add", ["data", bad], ["out"], name="reader")
    error = rejected(g.model({"data": ("N", 4)}, ["out"], 13))
    assert [(name, op) for name, op, _ in error.layers] == [("bad_reshape", "Reshape")]
    assert "evaluating it at import failed" in error.layers[0][2]


def test_node_names_that_collide_get_a_suffix():
    g = GraphBuilder()
    y = g.op("Relu", ["data"], name="data")  # a node named like the input
    y = g.op("Sigmoid", [y], name="twice")
    y = g.op("Tanh", [y], name="twice")
    g.op("Relu", [y], ["out"], name="last")
    network = db.read_network(g.model({"data": ("N", 3)}, ["out"], 13), batch=2)
    assert [layer.name for layer in network.layers] == ["data_2", "twice", "twice_2", "out"]  # "last" computes "out"


def test_unnamed_node_is_named_by_its_output():
    g = GraphBuilder()
    g.nodes.append(helper.make_node("Transpose", ["data"], ["transposed"], perm=[0, 1, 3, 2]))
    error = rejected(g.model({"data": ("N", 2, 3, 4)}, ["transposed"], 13))
    assert error.layers[0][:2] == ("transposed", "Transpose")


@pytest.mark.parametrize("shape, elem_type, reason", [
    (("N", 1, 2, 3, 4), TensorProto.FLOAT, "rank 5"),
    (("N", 3, "H", 8), TensorProto.FLOAT, "fixed positive size"),
    (("N", 3), TensorProto.INT64, "element type 7"),
])
def test_unusable_input_is_rejected(shape, elem_type, reason):
    g = GraphBuilder()
    g.op("Identity", ["data"], ["out"])
    g.op("Relu", ["good"], ["out2"])
    model = g.model({"good": ("N", 2, 2)}, ["out", "out2"], 13)
    model.graph.input.append(helper.make_tensor_value_info("data", elem_type, list(shape)))
    error = rejected(model)
    assert [(name, op) for name, op, _ in error.layers] == [("data", "Input")]
    assert reason in error.layers[0][2]


def test_constant_output_and_several_rejections_together():
    g = GraphBuilder()
    g.op("Add", [g.const(f32(1)), g.const(f32(2))], ["three"], name="folded")
    g.op("Softmax", ["data"], ["s"], name="softmax_batch", axis=0)
    g.op("Relu", [g.op("Resize", ["data", "", g.const(f32(1, 1, 2, 2))], name="resize")], ["r"], name="relu")
    g.op("Slice", ["data", g.const(i64(1)), g.const(i64(3)), g.const(i64(0))], ["rows"], name="slice_rows")
    error = rejected(g.model({"data": ("N", 2, 4, 4)}, ["three", "s", "r", "rows"], 13))
    assert [(name, op) for name, op, _ in error.layers] == [
        ("softmax_batch", "Softmax"), ("resize", "Resize"), ("slice_rows", "Slice"), ("three", "Output")]


# ---------------------------------------------------------------------------------------------
# read_network's arguments and errors


def test_path_bytes_and_model_proto_read_alike(tmp_path):
    model = models.inception()
    path = tmp_path / "inception.onnx"
    onnx.save(model, str(path))
    before = model.SerializeToString()
    networks = [db.read_network(source, batch=2) for source in (path, str(path), path.read_bytes(), model)]
    assert model.SerializeToString() == before  # the ModelProto is not changed
    data = np.random.default_rng(1).standard_normal((2, 16, 12, 12)).astype(np.float32)
    outputs = []
    for network in networks:
        assert [(l.name, l.type) for l in network.layers] == [(l.name, l.type) for l in networks[0].layers]
        outputs.append(load(network).create_infer_request().infer({"data": data})["prob"])
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_batch_overrides_symbolic_and_fixed_dims():
    assert db.read_network(models.alexnet(), batch=7).inputs == {"data": (7, 3, 32, 32)}
    assert db.read_network(models.hardcoded_flatten()).inputs == {"data": (1, 4, 6, 6)}  # fixed dim 0 kept
    assert db.read_network(models.hardcoded_flatten(), batch=3).inputs == {"data": (3, 4, 6, 6)}
    two = db.read_network(models.two_inputs(), batch=4)  # symbolic dims of different names
    assert two.inputs == {"left": (4, 4, 3, 3), "right": (4, 4, 3, 3)}


def test_symbolic_batch_without_batch_argument_says_to_pass_it():
    with pytest.raises(db.OnnxImportError) as caught:
        db.read_network(models.alexnet())
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "batch=" in message and "'N'" in message and "\n" not in message


def test_fixed_inputs_of_different_batches_need_batch_argument():
    g = GraphBuilder()
    g.op("Add", ["a", "b"], ["out"])
    error = rejected(g.model({"a": (2, 3), "b": (3, 3)}, ["out"], 13), batch=None)
    assert error.layers[0][:2] == ("b", "Input") and "pass batch=" in error.layers[0][2]
    assert db.read_network(g.model({"a": (2, 3), "b": (3, 3)}, ["out"], 13), batch=3).inputs == {"a": (3, 3), "b": (3, 3)}


@pytest.mark.parametrize("content", [b"this is not an ONNX model\n", b"\x00\xff\x13garbage", b""])
def test_non_onnx_file_is_an_error(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    for source in (path, content):
        with pytest.raises(db.OnnxImportError) as caught:
            db.read_network(source, batch=1)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, db.DynBatchError)
        assert "not an ONNX model" in str(caught.value) and "\n" not in str(caught.value)


def test_bad_arguments():
    with pytest.raises(FileNotFoundError):
        db.read_network("/nonexistent/model.onnx", batch=1)
    with pytest.raises(TypeError, match="path, bytes or an onnx.ModelProto"):
        db.read_network(42, batch=1)
    for batch in (0, -1, 2.5, True):
        with pytest.raises(db.BatchSizeError):
            db.read_network(models.alexnet(), batch=batch)
    old = models.alexnet()
    old.opset_import[0].version = 5
    with pytest.raises(db.OnnxImportError, match="opset 5"):
        db.read_network(old, batch=1)
