"""Attribute validation and shape inference when a layer is added: errors name the layer, and
auto_pad / ceil rounding / output_padding give the sizes the ONNX and OpenVINO specs define."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dynbatch as db


def network(shape=(4, 3, 10, 10)):
    net = db.Network("layers")
    return net, net.add_input("data", shape)


@given(size=st.integers(1, 20), kernel=st.integers(1, 5), stride=st.integers(1, 4), dilation=st.integers(1, 3),
       mode=st.sampled_from(["same_upper", "same_lower", "valid"]))
def test_convolution_auto_pad_output_size(size, kernel, stride, dilation, mode):
    extent = dilation * (kernel - 1) + 1
    expected = math.ceil(size / stride) if mode != "valid" else (size - extent) // stride + 1
    net, x = network((2, 1, size, size))
    if expected < 1:
        with pytest.raises(db.NetworkDefinitionError, match="too small"):
            net.add_layer("Convolution", [x], weights=np.ones((1, 1, kernel, kernel)), strides=stride, dilations=dilation, auto_pad=mode)
        return
    y = net.add_layer("Convolution", [x], name="c", weights=np.ones((1, 1, kernel, kernel)), strides=stride,
                      dilations=dilation, auto_pad=mode)
    assert net.shape(y) == (2, 1, expected, expected)
    begin, end = net.layers[-1].normalized["pads_begin"][0], net.layers[-1].normalized["pads_end"][0]
    if mode != "valid":  # SAME_UPPER puts the odd padding at the end, SAME_LOWER at the beginning
        assert abs(begin - end) <= 1 and (begin <= end if mode == "same_upper" else begin >= end)


@given(size=st.integers(1, 20), kernel=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 3),
       ceil=st.booleans())
def test_pooling_rounding(size, kernel, stride, pad, ceil):
    if pad >= kernel or size + 2 * pad < kernel:
        return
    net, x = network((2, 1, size, size))
    y = net.add_layer("Pooling", [x], kernel=kernel, strides=stride, pads_begin=pad, pads_end=pad,
                      rounding_type="ceil" if ceil else "floor")
    span = size + 2 * pad - kernel
    expected = (math.ceil(span / stride) if ceil else span // stride) + 1
    if ceil and (expected - 1) * stride >= size + pad:
        expected -= 1
    assert net.shape(y)[2] == expected


def test_deconvolution_output_size():
    net, x = network((2, 3, 5, 7))
    y = net.add_layer("Deconvolution", [x], weights=np.ones((3, 2, 3, 3)), strides=2, pads_begin=1, pads_end=1,
                      output_padding=1, group=1)
    assert net.shape(y) == (2, 2, 10, 14)  # (i-1)*s - 2p + k + op
    z = net.add_layer("Deconvolution", [x], weights=np.ones((3, 1, 3, 3)), strides=2, group=3, auto_pad="same_upper")
    assert net.shape(z) == (2, 3, 10, 14)  # SAME: input * stride


def test_global_pooling_and_split_outputs():
    net, x = network()
    assert net.shape(net.add_layer("Pooling", [x], pool_method="avg", global_pool=True)) == (4, 3, 1, 1)
    names = net.add_layer("Split", [x], name="s", axis=2, sizes=[3, 7])
    assert names == ["s.0", "s.1"] and net.shape("s.1") == (4, 3, 7, 10)
    assert [net.shape(n) for n in net.add_layer("Split", [x], axis=1, num_split=3)] == [(4, 1, 10, 10)] * 3


def test_layer_names_default_to_unique_generated_ones():
    net, x = network()
    a = net.add_layer("Activation", [x], type="relu")
    b = net.add_layer("Activation", [x], type="relu")
    assert a != b and {a, b} == {layer.name for layer in net.layers}


@pytest.mark.parametrize("layer_type, attrs, message", [
    ("Convolution", dict(weights=np.ones((4, 2, 3, 3))), r"Convolution layer 'bad': weights \(4, 2, 3, 3\) take 2 channels per group, but the input has 3 channels"),
    ("Convolution", dict(weights=np.ones((4, 3, 3, 3)), biases=np.ones(5)), r"'biases' has shape \(5,\), expected \(4\)"),
    ("Convolution", dict(weights=np.ones((4, 3, 3, 3)), strides=0), r"'strides' must be >= 1"),
    ("Convolution", dict(weights=np.ones((4, 3, 3, 3)), auto_pad="same"), r"'auto_pad' must be one of"),
    ("Convolution", dict(weights=np.ones((4, 3, 3, 3)), padding=1), r"unknown attribute\(s\) \['padding'\]"),
    ("Convolution", dict(weights=np.ones((4, 3, 30, 3))), r"too small"),
    ("Activation", dict(type="swish"), r"'type' must be one of"),
    ("Activation", dict(), r"'type' is required"),
    ("Activation", dict(type="sigmoid", alpha=1.0), r"do not apply to activation 'sigmoid'"),
    ("Activation", dict(type="clamp", min=1.0, max=0.0), r"clamp min 1.0 is greater than max 0.0"),
    ("Pooling", dict(pool_method="max"), r"'kernel' is required"),
    ("Pooling", dict(kernel=2, pads_begin=2), r"smaller than the kernel"),
    ("FullyConnected", dict(weights=np.ones((5, 10))), r"'weights' has shape \(5, 10\), expected \(\?, 300\)"),
    ("SoftMax", dict(axis=4), r"axis 4 is out of range for input rank 4"),
    ("Split", dict(axis=1, sizes=[1, 1]), r"sum to 3"),
    ("Split", dict(axis=1), r"exactly one of 'sizes'"),
    ("Eltwise", dict(operation="sum"), r"takes at least 2 inputs"),
    ("Crop", dict(axis=[2], offset=[5], dim=[6]), r"does not fit axis 2 of length 10"),
    ("BatchNormalization", dict(mean=np.zeros(3)), r"'variance' \(an array\) is required"),
    ("BatchNormalization", dict(mean=np.zeros(3), variance=-np.ones(3)), r"variance \+ epsilon must be positive"),
    ("LRN", dict(region="within"), r"'region' must be one of"),
    ("Power", dict(power="2"), r"'power' must be a number"),
    ("Deconvolution", dict(weights=np.ones((3, 2, 3, 3)), strides=2, output_padding=2), r"output_padding"),
])
def test_invalid_layers_raise_naming_the_layer(layer_type, attrs, message):
    net, x = network((4, 3, 10, 10))
    with pytest.raises(db.NetworkDefinitionError, match=message) as caught:
        net.add_layer(layer_type, [x], name="bad", **attrs)
    assert f"{layer_type} layer 'bad'" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert len(net.layers) == 0  # nothing half-added


def test_eltwise_shapes_must_broadcast():
    net = db.Network("t")
    a = net.add_input("a", (2, 3, 4, 4))
    b = net.add_input("b", (2, 3, 2, 4))
    with pytest.raises(db.NetworkDefinitionError, match="do not broadcast"):
        net.add_layer("Eltwise", [a, b], name="e")


def test_unknown_inputs_and_duplicate_names():
    net, x = network()
    with pytest.raises(db.NetworkDefinitionError, match="input tensor 'nope' does not exist"):
        net.add_layer("Copy", ["nope"])
    net.add_layer("Copy", [x], name="c")
    with pytest.raises(db.NetworkDefinitionError, match="name is already used"):
        net.add_layer("Copy", [x], name="c")
    with pytest.raises(db.NetworkDefinitionError, match="not a tensor"):
        net.add_output("missing")


def test_weights_are_copied_when_added():
    net, x = network()
    weights = np.ones((2, 3, 1, 1))
    net.add_layer("Convolution", [x], name="c", weights=weights)
    weights[...] = 5
    assert net.layers[0].normalized["weights"].dtype == np.float32
    assert np.all(net.layers[0].normalized["weights"] == 1)


def test_batch_size_setter_rejects_bad_values_and_keeps_the_network():
    net, x = network()
    net.add_layer("Copy", [x])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(db.NetworkDefinitionError, match="batch_size must be a positive int"):
            net.batch_size = bad
    assert net.batch_size == 4
