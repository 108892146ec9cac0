"""Topology analysis at load: every layer that cannot run with dynamic batch is named, with its
type and the reason, in one UnsupportedTopologyError."""
import numpy as np
import pytest

import dynbatch as db

DYN = {db.KEY_DYN_BATCH_ENABLED: db.YES}


def base(batch=4):
    net = db.Network("t")
    x = net.add_input("data", (batch, 4, 6, 6))
    return net, x


@pytest.mark.parametrize("layer_type, attrs", [
    ("Flatten", {}),
    ("Permute", {"order": [0, 2, 3, 1]}),
    ("Reshape", {"shape": [0, -1]}),
    ("ROIPooling", {"output_shape": (4, 4, 2, 2)}),
    ("PriorBox", {"output_shape": (1, 2, 64)}),
    ("DetectionOutput", {}),
    ("MyCustomLayer", {"anything": 1}),
])
def test_unsupported_types_are_named(layer_type, attrs):
    net, x = base()
    y = net.add_layer(layer_type, [x], name="bad", **attrs)
    net.add_output(y)
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, db.DynBatchError)
    assert [(name, kind) for name, kind, _ in error.layers] == [("bad", layer_type)]
    assert "bad" in str(error) and layer_type in str(error)
    assert "Convolution" in str(error)  # the message lists the supported types


def test_every_offending_layer_is_listed_not_just_the_first():
    net, x = base()
    a = net.add_layer("Reshape", [x], name="reshape1", shape=[0, -1])
    b = net.add_layer("Concatenation", [x, x], name="concat0", axis=0)
    c = net.add_layer("SoftMax", [x], name="softmax0", axis=0)
    d = net.add_layer("Activation", [x], name="fine", type="relu")
    for out in (a, b, c, d):
        net.add_output(out)
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    names = [name for name, _, _ in caught.value.layers]
    assert names == ["reshape1", "concat0", "softmax0"]
    reasons = dict((name, reason) for name, _, reason in caught.value.layers)
    assert "batch axis" in reasons["concat0"] and "batch axis" in reasons["softmax0"]


@pytest.mark.parametrize("layer_type, attrs, extra_inputs", [
    ("Concatenation", {"axis": 0}, 1),
    ("Split", {"axis": 0, "num_split": 2}, 0),
    ("SoftMax", {"axis": 0}, 0),
    ("SoftMax", {"axis": -4}, 0),
    ("Crop", {"axis": [0, 2], "offset": [1, 0], "dim": [2, 3]}, 0),
])
def test_attributes_on_the_batch_axis_are_rejected(layer_type, attrs, extra_inputs):
    net, x = base()
    out = net.add_layer(layer_type, [x] * (1 + extra_inputs), name="axis0", **attrs)
    net.add_output(out[0] if isinstance(out, list) else out)
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    assert caught.value.layers[0][:2] == ("axis0", layer_type)
    assert "axis 0" in caught.value.layers[0][2] or "batch" in caught.value.layers[0][2]


def test_eltwise_broadcasting_along_the_batch_is_rejected():
    net = db.Network("t")
    x = net.add_input("data", (4, 3, 5, 5))
    z = net.add_input("bias", (1, 3, 5, 5))
    y = net.add_layer("Eltwise", [x, z], name="add", operation="sum")
    net.add_output(y)
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    rejected = {name: reason for name, _, reason in caught.value.layers}
    assert "batch" in rejected["add"]
    assert "bias" in rejected  # inputs whose dim 0 differ are named too


def test_inputs_with_different_batch_are_rejected():
    net = db.Network("t")
    a = net.add_input("a", (4, 3))
    b = net.add_input("b", (2, 3))
    net.add_output(net.add_layer("Copy", [a]))
    net.add_output(net.add_layer("Copy", [b]))
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    assert caught.value.layers == [("b", "Input", caught.value.layers[0][2])]
    assert "dim 0 is 2" in caught.value.layers[0][2]


def test_layers_after_an_unsupported_one_are_not_blamed():
    net, x = base()
    y = net.add_layer("Flatten", [x], name="flat")
    z = net.add_layer("FullyConnected", [y], name="fc", weights=np.ones((3, 144), np.float32))
    net.add_output(z)
    with pytest.raises(db.UnsupportedTopologyError) as caught:
        db.Core().load_network(net, "CPU", DYN)
    assert [name for name, _, _ in caught.value.layers] == ["flat"]


def test_analyse_gives_one_verdict_per_layer():
    net, x = base()
    y = net.add_layer("Convolution", [x], name="conv", weights=np.ones((2, 4, 3, 3), np.float32))
    net.add_layer("Permute", [y], name="perm", order=[0, 2, 3, 1])
    verdicts = db.analyse(net)
    assert [(v.name, v.supported) for v in verdicts] == [("conv", True), ("perm", False)]


def test_without_dynamic_batch_unsupported_layers_still_cannot_run():
    net, x = base()
    net.add_output(net.add_layer("Reshape", [x], name="r", shape=[0, -1]))
    with pytest.raises(db.UnsupportedTopologyError, match="cannot run on dynbatch's kernels"):
        db.Core().load_network(net, "CPU")
