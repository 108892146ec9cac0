"""Hypothesis strategies that build random valid networks from the 14 supported layer types:
chains with branches, Split/Concatenation, convolutions joined by a Concatenation (which the CPU
writes in place), Eltwise joins (with and without broadcasting), and a fully connected head.
Weights are scaled by 1/sqrt(fan-in) so values stay O(1) through depth."""
import math

import numpy as np
from hypothesis import strategies as st

import dynbatch as db

ACTIVATIONS = ["relu", "relu6", "clamp", "sigmoid", "tanh", "elu", "exp", "abs", "softplus", "hswish", "gelu"]


def _weights(rng, shape, fan_in):
    return (rng.standard_normal(shape) / math.sqrt(max(fan_in, 1))).astype(np.float32)


@st.composite
def networks(draw, max_layers: int = 8, max_batch: int = 6, max_channels: int = 6, max_side: int = 9):
    """A (Network, max_batch) pair; the batch is drawn independently of every other dimension."""
    max_batch = draw(st.integers(1, max_batch), label="max_batch")
    channels = draw(st.integers(1, max_channels), label="channels")
    height = draw(st.integers(3, max_side), label="height")
    width = draw(st.integers(3, max_side), label="width")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="weight seed"))
    net = db.Network("random")
    tensors = [net.add_input("data", (max_batch, channels, height, width))]

    def pick(rank=None):
        candidates = [t for t in tensors if rank is None or len(net.shape(t)) == rank]
        return draw(st.sampled_from(candidates)) if candidates else None

    for _ in range(draw(st.integers(1, max_layers), label="layers")):
        kind = draw(st.sampled_from([
            "Convolution", "Deconvolution", "Activation", "LRN", "Pooling", "BatchNormalization",
            "Power", "Eltwise", "SplitConcat", "Concatenation", "ConvConcat", "Crop", "Copy", "SoftMax",
        ]), label="layer")
        source = pick(4)
        n, c, h, w = net.shape(source)
        if kind == "Convolution":
            group = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0]))
            k = group * draw(st.integers(1, 3))
            kh, kw = draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))
            attrs = dict(strides=draw(st.sampled_from([1, 2])), group=group)
            if draw(st.booleans()):
                attrs["auto_pad"] = draw(st.sampled_from(["same_upper", "same_lower", "valid"]))
            else:
                attrs["pads_begin"] = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
                attrs["pads_end"] = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
            out = net.add_layer("Convolution", [source], weights=_weights(rng, (k, c // group, kh, kw), c // group * kh * kw),
                                biases=_weights(rng, (k,), 1), **attrs)
        elif kind == "Deconvolution":
            if h * w > 40:
                continue
            stride = draw(st.sampled_from([1, 2]))
            out = net.add_layer("Deconvolution", [source], weights=_weights(rng, (c, 2, 3, 3), c * 9),
                                biases=_weights(rng, (2,), 1), strides=stride, pads_begin=1, pads_end=1,
                                output_padding=draw(st.integers(0, stride - 1)))
        elif kind == "Activation":
            activation = draw(st.sampled_from(ACTIVATIONS))
            params = {"clamp": dict(min=-0.5, max=0.5), "relu": dict(negative_slope=0.1), "elu": dict(alpha=0.7)}
            out = net.add_layer("Activation", [source], type=activation, **params.get(activation, {}))
        elif kind == "LRN":
            out = net.add_layer("LRN", [source], local_size=draw(st.sampled_from([1, 3, 5])), alpha=1e-2, beta=0.75,
                                k=2.0, region=draw(st.sampled_from(["across", "same"])))
        elif kind == "Pooling":
            if draw(st.booleans()):
                out = net.add_layer("Pooling", [source], pool_method=draw(st.sampled_from(["max", "avg"])), global_pool=True)
            else:
                kernel = draw(st.integers(1, min(3, h, w)))
                out = net.add_layer("Pooling", [source], pool_method=draw(st.sampled_from(["max", "avg"])), kernel=kernel,
                                    strides=draw(st.integers(1, 2)), pads_begin=draw(st.integers(0, kernel - 1)),
                                    rounding_type=draw(st.sampled_from(["floor", "ceil"])), exclude_pad=draw(st.booleans()))
        elif kind == "BatchNormalization":
            out = net.add_layer("BatchNormalization", [source], mean=rng.standard_normal(c), variance=rng.uniform(0.5, 2, c),
                                gamma=rng.standard_normal(c), beta=rng.standard_normal(c), epsilon=1e-3)
        elif kind == "Power":
            out = net.add_layer("Power", [source], power=draw(st.sampled_from([1.0, 2.0])), scale=0.5, shift=0.1)
        elif kind == "Eltwise":
            same = [t for t in tensors if net.shape(t) == (n, c, h, w)]
            broadcast = [t for t in tensors if net.shape(t) == (n, c, 1, 1)]
            other = draw(st.sampled_from(same + broadcast))
            operation = draw(st.sampled_from(["sum", "sub", "mul", "max", "min", "squared_diff"]))
            out = net.add_layer("Eltwise", [source, other], operation=operation)
        elif kind == "SplitConcat":
            if c < 2:
                continue
            pieces = net.add_layer("Split", [source], axis=1, sizes=[1, c - 1])
            pieces = [net.add_layer("Activation", [pieces[0]], type="tanh"), pieces[1]]
            out = net.add_layer("Concatenation", draw(st.permutations(pieces)), axis=1)
        elif kind == "Concatenation":
            axis = draw(st.sampled_from([1, 2, 3]))
            partners = [t for t in tensors if all(a == b for d, (a, b) in enumerate(zip(net.shape(t), (n, c, h, w))) if d != axis)
                        and len(net.shape(t)) == 4]
            out = net.add_layer("Concatenation", [source, draw(st.sampled_from(partners))], axis=axis)
        elif kind == "ConvConcat":
            # 3x3 "same" convolutions big enough for the GEMM kernel (>= 8 outputs, reduction
            # >= 16), joined along channels: on the CPU they write into the Concatenation's
            # output in place, unless a later layer reads one of them too.
            if c * 9 < 16:
                continue
            branches = []
            for _ in range(draw(st.integers(2, 3), label="branches")):
                k = draw(st.sampled_from([8, 9, 12]), label="branch channels")
                # A deep branch writes a tensor of its own between the branches' convolutions.
                deep = draw(st.booleans(), label="deep branch")
                branch_input = net.add_layer("Activation", [source], type="tanh") if deep else source
                branch = net.add_layer("Convolution", [branch_input], weights=_weights(rng, (k, c, 3, 3), c * 9),
                                       biases=_weights(rng, (k,), 1), pads_begin=1, pads_end=1)
                if draw(st.booleans(), label="branch relu"):
                    branch = net.add_layer("Activation", [branch], type="relu")
                branches.append(branch)
            out = net.add_layer("Concatenation", branches, axis=1)
            if draw(st.booleans(), label="branches readable"):
                tensors.extend(branches)
        elif kind == "Crop":
            if h < 2 or w < 2:
                continue
            out = net.add_layer("Crop", [source], axis=[2, 3], offset=[1, 0], dim=[h - 1, w - 1])
        elif kind == "Copy":
            out = net.add_layer("Copy", [source])
        else:
            out = net.add_layer("SoftMax", [source], axis=draw(st.sampled_from([1, 2, 3, -1])), flatten=draw(st.booleans()))
        tensors.append(out)

    head = tensors[-1]
    if draw(st.booleans(), label="fully connected head"):
        features = math.prod(net.shape(head)[1:])
        head = net.add_layer("FullyConnected", [head], weights=_weights(rng, (5, features), features), biases=_weights(rng, (5,), 1))
        head = net.add_layer("SoftMax", [head], name="prob")
    net.add_output(head)
    extra = draw(st.sampled_from(tensors), label="second output")
    if extra != head:
        net.add_output(extra)
    return net, max_batch
