"""The fusion pass (dynbatch.graph.fusion): BatchNormalization folded into a Convolution, relu /
relu6 / clamp computed by the Convolution's or FullyConnected's epilogue; and Concatenations whose
convolutions write their inputs in place, and convolutions written over their residual
(dynbatch.graph.compiler, CPU). Fused networks must equal
the naive reference network (which runs every layer unfused) at every batch, on every device; and
a merge must not happen where another layer, or the caller, reads the tensor in between."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynbatch as db

from .reference_network import run_reference

FUSABLE = [dict(type="relu"), dict(type="relu", negative_slope=0.1), dict(type="relu6"),
           dict(type="clamp", min=-0.5, max=0.25)]
NOT_FUSABLE = [dict(type="sigmoid"), dict(type="tanh")]


def chain(producer, batch_norm, activation, extra_reader=False, expose_middle=False, max_batch=4, side=6,
          algorithm_sizes=(3, 5, 3)):
    """data -> producer (Convolution or FullyConnected) [-> BatchNormalization] [-> Activation].
    extra_reader: a Power layer also reads the producer's output; expose_middle: that output is a
    network output too. Either must stop the merge into the producer."""
    rng = np.random.default_rng(3)
    channels, out_channels, kernel = algorithm_sizes
    net = db.Network("chain")
    x = net.add_input("data", (max_batch, channels, side, side))
    if producer == "Convolution":
        y = net.add_layer("Convolution", [x], name="producer",
                          weights=rng.standard_normal((out_channels, channels, kernel, kernel)) * 0.3,
                          biases=rng.standard_normal(out_channels), pads_begin=kernel // 2, pads_end=kernel // 2)
        features = out_channels
    else:
        y = net.add_layer("FullyConnected", [x], name="producer",
                          weights=rng.standard_normal((out_channels, channels * side * side)) * 0.3,
                          biases=rng.standard_normal(out_channels))
        features = out_channels
    middle = y
    if batch_norm:
        y = net.add_layer("BatchNormalization", [y], name="bn", mean=rng.standard_normal(features),
                          variance=rng.uniform(0.5, 2.0, features), gamma=rng.standard_normal(features),
                          beta=rng.standard_normal(features), epsilon=1e-5)
    if activation is not None:
        y = net.add_layer("Activation", [y], name="act", **activation)
    net.add_output(y)
    if extra_reader:
        net.add_output(net.add_layer("Power", [middle], name="reader", scale=2.0))
    if expose_middle and middle != y:
        net.add_output(middle)
    return net


def run_and_compare(net, device, batches=(4, 1, 3)):
    exe = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    samples = np.random.default_rng(0).standard_normal(exe.inputs["data"]).astype(np.float32)
    for n in batches:
        request.set_batch(n)
        feed = samples.copy()
        feed[n:] = np.nan  # rows >= n are poison
        outputs = request.infer({"data": feed})
        expected = run_reference(net, {"data": samples[:n]})
        for name in net.outputs:
            scale = max(1.0, float(np.abs(expected[name]).max()))
            np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-4, atol=1e-5 * scale)
    return {name: c["status"] for name, c in request.get_performance_counts().items()}


#: The share of the profile's examples, and the image side, per device: on GPU the kernels run on
#: numba's (slow) CUDA simulator in CI.
EXAMPLES = {"CPU": 1.0, "GPU": 0.25}
SIDE = {"CPU": 6, "GPU": 3}


def test_chain_matches_reference_and_merges_only_where_allowed(device):
    @settings(deadline=None, max_examples=max(1, int(settings.default.max_examples * EXAMPLES[device])))
    @given(producer=st.sampled_from(["Convolution", "FullyConnected"]), batch_norm=st.booleans(),
           activation=st.sampled_from([None] + FUSABLE + NOT_FUSABLE), extra_reader=st.booleans(),
           expose_middle=st.booleans(), sizes=st.sampled_from([(3, 5, 3), (1, 1, 1), (8, 16, 3), (16, 16, 1)]))
    def check(producer, batch_norm, activation, extra_reader, expose_middle, sizes):
        check_chain(device, producer, batch_norm, activation, extra_reader, expose_middle, sizes)

    check()


def check_chain(device, producer, batch_norm, activation, extra_reader, expose_middle, sizes):
    if producer == "FullyConnected" and batch_norm:
        batch_norm = False  # the fusion pass folds BatchNormalization into convolutions only
    net = chain(producer, batch_norm, activation, extra_reader, expose_middle, side=SIDE[device],
                algorithm_sizes=sizes)
    statuses = run_and_compare(net, device)
    blocked = extra_reader or expose_middle
    bn_merges = batch_norm and not blocked
    # The activation merges when its input comes straight from the producer (directly, or
    # through a folded BatchNormalization) and nothing else reads it.
    act_merges = (activation in FUSABLE and not (batch_norm and not bn_merges)
                  and not (blocked and not batch_norm))
    if batch_norm:
        assert statuses["bn"] == ("OPTIMIZED_OUT" if bn_merges else "EXECUTED")
    if activation is not None:
        assert statuses["act"] == ("OPTIMIZED_OUT" if act_merges else "EXECUTED")
    assert statuses["producer"] == "EXECUTED"


def test_nothing_merges_after_an_activation(device):
    """conv -> relu -> BatchNormalization: the relu merges, the BatchNormalization must not fold
    into weights that run before the relu."""
    rng = np.random.default_rng(5)
    net = db.Network("order")
    x = net.add_input("data", (3, 2, 5, 5))
    y = net.add_layer("Convolution", [x], name="conv", weights=rng.standard_normal((4, 2, 3, 3)),
                      biases=rng.standard_normal(4))
    y = net.add_layer("Activation", [y], name="relu", type="relu")
    y = net.add_layer("BatchNormalization", [y], name="bn", mean=rng.standard_normal(4), variance=np.ones(4),
                      gamma=-np.ones(4), beta=np.zeros(4), epsilon=1e-5)
    net.add_output(y)
    statuses = run_and_compare(net, device, batches=(3, 1))
    assert statuses == {"conv": "EXECUTED", "relu": "OPTIMIZED_OUT", "bn": "EXECUTED"}


def test_fused_tensor_is_not_planned():
    net = chain("Convolution", batch_norm=True, activation=dict(type="relu"))
    exe = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    planned = set(exe._compiled.plan.shapes)
    assert planned == {"data", net.outputs[0]}
    assert [layer.name for layer in exe._compiled.layers] == ["producer"]


@pytest.mark.parametrize("activation", FUSABLE)
def test_fused_activation_keeps_nan(activation):
    """NaN from the GEMM reaches the output through a fused activation, as through the layer."""
    net = chain("Convolution", batch_norm=False, activation=activation, max_batch=2)
    exe = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    request.set_batch(1)
    x = np.zeros((1,) + exe.inputs["data"][1:], np.float32)
    x[0, 0, 2, 2] = np.nan
    out = request.infer({"data": x})[net.outputs[0]]
    assert np.isnan(out[0, :, 2, 2]).all()
    assert not np.isnan(out[0, :, 0, 5]).any()  # the 3x3 window of (0, 5) misses (2, 2)


def residual_block(shortcut, operation="sum", coeff=None, activation="relu", extra_reader=False, max_batch=4):
    """data -> conv_a -> Eltwise(conv_a, shortcut) [-> relu]. shortcut: "input" (the data itself),
    "conv_after" (a projection convolution added after conv_a, so the merged conv_a must move
    after it) or "conv_before"."""
    rng = np.random.default_rng(7)
    net = db.Network("residual")
    x = net.add_input("data", (max_batch, 4, 6, 6))

    def conv(name, source):
        return net.add_layer("Convolution", [source], name=name, weights=rng.standard_normal((4, 4, 3, 3)) * 0.3,
                             biases=rng.standard_normal(4), pads_begin=1, pads_end=1)

    if shortcut == "conv_before":
        short = conv("projection", x)
    main = conv("conv_a", x)
    if shortcut == "conv_after":
        short = conv("projection", x)
    if shortcut == "input":
        short = x
    attrs = {"operation": operation} | ({"coeff": coeff} if coeff else {})
    y = net.add_layer("Eltwise", [main, short], name="add", **attrs)
    if activation:
        y = net.add_layer("Activation", [y], name="act", type=activation)
    net.add_output(y)
    if extra_reader:
        net.add_output(net.add_layer("Power", [main], name="reader", scale=2.0))
    return net


@pytest.mark.parametrize("shortcut", ["input", "conv_after", "conv_before"])
@pytest.mark.parametrize("activation", ["relu", None, "sigmoid"])
def test_residual_sum_merges_into_the_convolution(device, shortcut, activation):
    statuses = run_and_compare(residual_block(shortcut, activation=activation), device)
    assert statuses["add"] == "OPTIMIZED_OUT"
    if activation:
        assert statuses["act"] == ("OPTIMIZED_OUT" if activation == "relu" else "EXECUTED")


@pytest.mark.parametrize("variant", [dict(operation="sub"), dict(coeff=[1.0, 0.5]), dict(extra_reader=True)])
def test_residual_merge_only_for_a_plain_sum_nothing_else_reads(variant):
    net = residual_block("conv_after", **variant)
    statuses = run_and_compare(net, "CPU")
    # A plain sum still merges with the projection (its own output is read by the sum alone).
    expected = "OPTIMIZED_OUT" if variant.get("extra_reader") else "EXECUTED"
    assert statuses["add"] == expected


def test_merged_convolution_runs_after_its_residual():
    net = residual_block("conv_after")
    exe = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    # conv_a comes first in the network, but adds the projection's output: it must run second.
    assert [layer.name for layer in exe._compiled.layers] == ["projection", "conv_a"]
    assert exe._compiled.layers[1].inputs == ("data", "projection")


def residual_chain(residual_read_later=False, input_residual=False, max_batch=4):
    """data -> projection (1x1) ; first = conv_a(data) (3x3) + projection ; second =
    conv_b(reduce(first)) (1x1s) + first -> sigmoid. Convolutions of 16 channels, which take the
    GEMM and Winograd kernels. residual_read_later: a Power layer reads the projection at the
    end; input_residual: conv_a adds the network input instead of the projection."""
    rng = np.random.default_rng(5)
    net = db.Network("residual_chain")
    x = net.add_input("data", (max_batch, 16, 6, 6))

    def conv(name, source, side):
        return net.add_layer("Convolution", [source], name=name, biases=rng.standard_normal(16),
                             weights=rng.standard_normal((16, 16, side, side)) * 0.2, pads_begin=side // 2,
                             pads_end=side // 2)

    projection = conv("projection", x, 1)
    first = net.add_layer("Eltwise", [conv("conv_a", x, 3), x if input_residual else projection], name="first",
                          operation="sum")
    second = net.add_layer("Eltwise", [conv("conv_b", conv("reduce", first, 1), 1), first], name="second",
                           operation="sum")
    net.add_output(net.add_layer("Activation", [second], name="act", type="sigmoid"))
    if residual_read_later or input_residual:
        net.add_output(net.add_layer("Power", [projection], name="reader", scale=2.0))
    return net


@pytest.mark.parametrize("variant", ["", "residual_read_later", "input_residual"])
def test_convolution_output_written_over_its_residual_where_nothing_reads_it_after(device, variant):
    """conv_a's output takes the projection's memory, and conv_b's takes that again (its residual
    is conv_a's output), unless the projection is read later or is not a tensor of the plan's own
    (the network input). The results still equal the reference at every batch."""
    net = residual_chain(**({variant: True} if variant else {}))
    statuses = run_and_compare(net, device)
    assert statuses["first"] == statuses["second"] == "OPTIMIZED_OUT"
    compiled = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})._compiled
    plan, shape = compiled.plan, (4, 16, 6, 6)
    if device == "GPU":  # (planned as CPU kernels run them only)
        assert compiled.residuals_in_place == {} and plan.aliases == {}
    elif variant == "":
        assert compiled.residuals_in_place == {"conv_a": "projection", "conv_b": "first"}
        assert plan.aliases == {"first": ("projection", 0, shape), "second": ("projection", 0, shape)}
        assert plan.lifetimes["projection"] == (0, len(compiled.layers) - 1)  # until the sigmoid reads it
    else:
        assert compiled.residuals_in_place == {"conv_b": "first"}
        assert plan.aliases == {"second": ("first", 0, shape)}
        assert {"projection", "first"} <= set(plan.shapes)


def test_residuals_written_over_around_a_concatenation_written_in_place(device):
    """A Concatenation written in place, read by a convolution with a residual (its output's shape
    comes from the Concatenation, which no longer runs), then itself the residual of another
    convolution, whose output takes its memory."""
    rng = np.random.default_rng(1)
    net = db.Network("joined_residuals")
    x = net.add_input("data", (4, 16, 6, 6))

    def conv(name, source, k, side):
        return net.add_layer("Convolution", [source], name=name, weights=rng.standard_normal((k, 16, side, side)) * 0.2,
                             biases=rng.standard_normal(k), pads_begin=side // 2, pads_end=side // 2)

    joined = net.add_layer("Concatenation", [conv("a", x, 8, 1), conv("b", x, 8, 3)], name="join", axis=1)
    first = net.add_layer("Eltwise", [conv("main", joined, 16, 3), conv("projection", x, 16, 1)], name="first",
                          operation="sum")
    second = net.add_layer("Eltwise", [conv("main2", first, 16, 1), joined], name="second", operation="sum")
    net.add_output(net.add_layer("Activation", [second], name="act", type="sigmoid"))
    statuses = run_and_compare(net, device)
    compiled = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})._compiled
    if device == "CPU":
        assert statuses["join"] == "OPTIMIZED_OUT"
        assert compiled.residuals_in_place == {"main": "projection", "main2": "join"}
        assert compiled.plan.aliases["second"] == ("join", 0, (4, 16, 6, 6))
        assert compiled.plan.aliases["first"] == ("projection", 0, (4, 16, 6, 6))
    else:
        assert compiled.residuals_in_place == {}


def joined_branches(branches, extra_reader=None, expose=None, axis=1, max_batch=4):
    """data (16 channels) -> Concatenation(axis) of one layer per entry of ``branches``, each on
    data: "gemm" (a 3x3 convolution with 8 outputs, big enough for the GEMM kernel, then a relu
    it fuses), "winograd" (the same with 16 outputs, which takes the Winograd kernel), "gemm1x1" (a 1x1 one with 12 outputs), "direct" (a depthwise convolution, which
    runs the direct kernel), "deep" (a 1x1 convolution then a 3x3 one: a tensor of its own is
    written between the branches), "residual" (a convolution with an Eltwise sum merged
    into it), "pool", or "twice" (the previous branch's tensor again). extra_reader / expose:
    the index of a branch that a Power layer also reads / that is a network output too."""
    rng = np.random.default_rng(11)
    net = db.Network("joined")
    x = net.add_input("data", (max_batch, 16, 6, 6))

    def conv(name, k, side, group=1, source=x):
        return net.add_layer("Convolution", [source], name=name, group=group,
                             weights=rng.standard_normal((k, 16 // group, side, side)) * 0.2,
                             biases=rng.standard_normal(k), pads_begin=side // 2, pads_end=side // 2)

    outputs = []
    for index, kind in enumerate(branches):
        name = f"branch{index}"
        if kind == "gemm":
            y = net.add_layer("Activation", [conv(name, 8, 3)], name=f"relu{index}", type="relu")
        elif kind == "winograd":
            y = net.add_layer("Activation", [conv(name, 16, 3)], name=f"relu{index}", type="relu")
        elif kind == "gemm1x1":
            y = conv(name, 12, 1)
        elif kind == "deep":
            y = conv(name, 8, 3, source=conv(f"reduce{index}", 16, 1))
        elif kind == "direct":
            y = conv(name, 16, 3, group=16)
        elif kind == "residual":
            y = net.add_layer("Eltwise", [conv(name, 16, 3), x], name=f"add{index}", operation="sum")
        elif kind == "pool":
            y = net.add_layer("Pooling", [x], name=name, pool_method="max", kernel=3, strides=1,
                              pads_begin=1, pads_end=1)
        else:  # "twice"
            y = outputs[-1]
        outputs.append(y)
    net.add_output(net.add_layer("Concatenation", outputs, name="join", axis=axis))
    if extra_reader is not None:
        net.add_output(net.add_layer("Power", [outputs[extra_reader]], name="reader", scale=2.0))
    if expose is not None:
        net.add_output(outputs[expose])
    return net


@pytest.mark.parametrize("branches", [("gemm", "gemm"), ("gemm", "gemm1x1", "deep", "gemm"), ("winograd", "gemm")])
def test_concatenation_of_gemm_convolutions_is_written_in_place(device, branches):
    net = joined_branches(branches)
    statuses = run_and_compare(net, device)
    exe = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    counts = exe.create_infer_request().get_performance_counts()
    if device == "CPU":
        assert statuses["join"] == "OPTIMIZED_OUT"
        writers = ", ".join(f"branch{index}" for index in range(len(branches)))
        assert counts["join"]["exec_type"] == f"written in place by {writers}"
        kernels = {"gemm": "convolution_gemm_cpu", "winograd": "convolution_winograd_cpu"}
        for index, kind in enumerate(branches):
            if kind in kernels:
                assert counts[f"branch{index}"]["exec_type"] == kernels[kind]
        plan = exe._compiled.plan
        assert set(plan.aliases) == {net.layers[-1].inputs[i] for i in range(len(branches))}
        assert "join" not in [layer.name for layer in exe._compiled.layers]
        # The aliases take no memory of their own; the output lives from the first branch on.
        assert set(plan.shapes) == {"data", "join"} | {f"reduce{i}" for i, kind in enumerate(branches) if kind == "deep"}
        assert plan.lifetimes["join"] == (0, len(exe._compiled.layers))
    else:  # the GPU kernels write only whole tensors
        assert statuses["join"] == "EXECUTED"


@pytest.mark.parametrize("branches, extra_reader, expose, axis", [
    (("gemm", "direct"), None, None, 1),     # a depthwise convolution runs the direct kernel
    (("gemm", "pool"), None, None, 1),       # not a convolution
    (("gemm", "residual"), None, None, 1),   # a residual's index is the convolution's own
    (("gemm", "twice"), None, None, 1),      # one tensor in two places
    (("gemm", "gemm"), 1, None, 1),          # another layer reads a branch
    (("gemm", "gemm"), None, 0, 1),          # a branch is a network output
    (("gemm", "gemm"), None, None, 2),       # joined along the rows
])
def test_concatenation_runs_where_an_input_cannot_be_written_in_place(branches, extra_reader, expose, axis):
    statuses = run_and_compare(joined_branches(branches, extra_reader, expose, axis), "CPU")
    assert statuses["join"] == "EXECUTED"


def output_with_readers(net, pooled, y, variant):
    """Make ``pooled`` the network's output, and ``y`` (what it pools) one too for the "exposed"
    variant, or read by a Power layer for "second_reader"; return the network."""
    net.add_output(pooled)
    if variant == "exposed":
        net.add_output(y)
    if variant == "second_reader":
        net.add_output(net.add_layer("Power", [y], name="reader", scale=2.0))
    return net


def averaged_head(variant="", max_batch=4):
    """data (16 channels, 6x6) -> projection (1x1, 24) -> conv (1x1, 24 outputs: the GEMM kernel) ->
    relu -> GlobalAveragePool -> output. variant: "residual" (conv adds the projection's output
    through an Eltwise sum), "exposed" (conv's output is a network output too), "second_reader"
    (a Power layer reads it too), "grouped" (conv in 2 groups), "winograd" (conv 3x3 with 16
    outputs: the Winograd kernel), "window" (an average pooling of 3x3 windows, not global),
    "max" (a global max pooling)."""
    rng = np.random.default_rng(8)
    net = db.Network("averaged_head")
    x = net.add_input("data", (max_batch, 16, 6, 6))
    projection = net.add_layer("Convolution", [x], name="projection", weights=rng.standard_normal((24, 16, 1, 1)) * 0.3,
                               biases=rng.standard_normal(24))
    outputs, side = (16, 3) if variant == "winograd" else (24, 1)
    group = 2 if variant == "grouped" else 1
    y = net.add_layer("Convolution", [projection], name="conv", group=group, biases=rng.standard_normal(outputs),
                      weights=rng.standard_normal((outputs, 24 // group, side, side)) * 0.3, pads_begin=side // 2,
                      pads_end=side // 2)
    if variant == "residual":
        y = net.add_layer("Eltwise", [y, projection], name="shortcut", operation="sum")
    y = net.add_layer("Activation", [y], name="relu", type="relu")
    if variant == "window":
        pooled = net.add_layer("Pooling", [y], name="pool", pool_method="avg", kernel=3, strides=3)
    else:
        pooled = net.add_layer("Pooling", [y], name="pool", pool_method="max" if variant == "max" else "avg",
                               global_pool=True)
    return output_with_readers(net, pooled, y, variant)


@pytest.mark.parametrize("variant", ["", "residual", "exposed", "second_reader", "grouped", "winograd", "window",
                                     "max"])
def test_global_average_fused_into_the_convolution_it_alone_reads(device, variant):
    """On the CPU a global average pooling is merged into the one-group GEMM convolution whose
    output only it reads (its activation and residual fused before): the convolution's output is
    never planned. Nowhere else, and never on the GPU; the results equal the reference at every
    batch."""
    net = averaged_head(variant)
    statuses = run_and_compare(net, device)
    compiled = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})._compiled
    merged = device == "CPU" and variant in ("", "residual")
    assert (statuses["pool"] == "OPTIMIZED_OUT") == merged
    assert (compiled.fused_into.get("pool") == "conv") == merged
    conv = next(layer for layer in compiled.layers if layer.name == "conv")
    assert ("global_average" in conv.normalized) == merged
    assert conv.outputs == (("pool",) if merged else ("relu",))
    if merged:  # nothing but the two convolutions, and no 6x6 tensor of the convolution's own
        assert [layer.name for layer in compiled.layers] == ["projection", "conv"]
        assert conv.normalized["global_average"] == (6, 6)
        assert set(compiled.plan.shapes) == {"data", "projection", "pool"}


def pooled_stem(variant="", max_batch=4):
    """data (3 channels, 15x15) -> conv (3x3 stride 2, pad 1, 16 outputs: a first layer of
    ``convolution_stem_cpu``) -> relu -> MaxPool 3x3 stride 2 -> output (overlapping windows over
    the 8x8 output). variant: "ceil" (ceil rounding: a fourth window, its last column and row past
    the output), "padded"
    (pads 1), "tiles" (2x2 windows at stride 2, which do not overlap), "exposed" (conv's output is
    a network output too), "second_reader" (a Power layer reads it too), "leak" (a relu with a
    negative leak, which does not keep its inputs' order), "avg" (an average pooling), "gemm"
    (24 outputs: the GEMM kernel)."""
    rng = np.random.default_rng(9)
    net = db.Network("pooled_stem")
    x = net.add_input("data", (max_batch, 3, 15, 15))
    outputs = 24 if variant == "gemm" else 16
    y = net.add_layer("Convolution", [x], name="conv", weights=rng.standard_normal((outputs, 3, 3, 3)) * 0.3,
                      biases=rng.standard_normal(outputs), strides=2, pads_begin=1, pads_end=1)
    y = net.add_layer("Activation", [y], name="relu", type="relu", negative_slope=-0.1 if variant == "leak" else 0.0)
    window = dict(kernel=2, strides=2) if variant == "tiles" else dict(kernel=3, strides=2)
    if variant == "padded":
        window.update(pads_begin=1, pads_end=1)
    pooled = net.add_layer("Pooling", [y], name="pool", pool_method="avg" if variant == "avg" else "max",
                           rounding_type="ceil" if variant == "ceil" else "floor", **window)
    return output_with_readers(net, pooled, y, variant)


@pytest.mark.parametrize("variant", ["", "ceil", "padded", "tiles", "exposed", "second_reader", "leak", "avg",
                                     "gemm"])
def test_max_pooling_fused_into_the_first_layer_it_alone_reads(device, variant):
    """On the CPU a max pooling is merged into the first layer (``convolution_stem_cpu``) whose
    output only it reads, where the fused activation keeps its inputs' order: the convolution's
    output is never planned. Nowhere else, and never on the GPU; the results equal the reference
    at every batch."""
    net = pooled_stem(variant)
    statuses = run_and_compare(net, device)
    compiled = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})._compiled
    merged = device == "CPU" and variant in ("", "ceil", "padded", "tiles")
    assert (statuses["pool"] == "OPTIMIZED_OUT") == merged
    assert (compiled.fused_into.get("pool") == "conv") == merged
    conv = next(layer for layer in compiled.layers if layer.name == "conv")
    assert ("max_pool" in conv.normalized) == merged
    if merged:  # the convolution alone, and no 8x8 tensor of its own
        assert [layer.name for layer in compiled.layers] == ["conv"]
        assert conv.normalized["max_pool"]["conv_size"] == (8, 8)
        assert compiled.plan.shapes["pool"][2:] == ((4, 4) if variant in ("ceil", "padded", "tiles") else (3, 3))
        assert set(compiled.plan.shapes) == {"data", "pool"}
