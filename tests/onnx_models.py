"""Small ONNX models of real architectures, built with onnx.helper and random weights, for the
import tests. Every builder returns a ModelProto whose inputs have a symbolic batch "N" (unless
it says otherwise), so that onnxruntime can run it at any batch; spatial sizes stay <= 32 and
channels <= 32 so that a whole test file runs in seconds."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

INT64_MAX = 2**63 - 1


class GraphBuilder:
    """Collects nodes and initializers; ``model`` wraps them for one opset."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array, name: str | None = None) -> str:
        name = name or self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, fan_in: int | None = None) -> str:
        """Random float32 weights scaled by 1/sqrt(fan_in) (default: the product of shape[1:])."""
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        return self.const((self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def vector(self, size: int, low: float = -0.5, high: float = 0.5) -> str:
        return self.const(self.rng.uniform(low, high, size).astype(np.float32))

    def op(self, op_type: str, inputs, outputs: int | list[str] = 1, name: str | None = None, **attrs):
        """Add one node; returns its output name (a list when it has several)."""
        node_name = name or self._name(op_type.lower() + "_")
        names = outputs if isinstance(outputs, list) else [f"{node_name}_out{i}" if outputs > 1 else f"{node_name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=node_name, **attrs))
        return names if len(names) > 1 else names[0]

    # Layers of several nodes -------------------------------------------------------------------
    def conv(self, x, c_in, c_out, k, stride=1, pad=None, group=1, bias=True, **attrs):
        pad = k // 2 if pad is None else pad
        inputs = [x, self.weight(c_out, c_in // group, k, k)] + ([self.vector(c_out)] if bias else [])
        if "auto_pad" not in attrs:  # ONNX takes pads or auto_pad, not both
            attrs["pads"] = [pad] * 4
        return self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], group=group, **attrs)

    def batch_norm(self, x, channels):
        return self.op("BatchNormalization", [x, self.vector(channels, 0.5, 1.5), self.vector(channels),
                                              self.vector(channels), self.vector(channels, 0.5, 2.0)], epsilon=1e-3)

    def gemm(self, x, f_in, f_out, trans_b=1, **attrs):
        shape = (f_out, f_in) if trans_b else (f_in, f_out)
        return self.op("Gemm", [x, self.weight(*shape, fan_in=f_in), self.vector(f_out)], transB=trans_b, **attrs)

    def model(self, inputs: dict[str, tuple], outputs: list[str], opset: int, name: str = "test_model"):
        value_infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n, shape in inputs.items()]
        graph = helper.make_graph(self.nodes, name, value_infos,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                                  self.initializers)
        opsets = [helper.make_opsetid("", opset)]
        return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


# ---------------------------------------------------------------------------------------------
# Architectures


def alexnet(opset: int = 9):
    """Conv 5x5/2, LRN, max pools, a grouped 3x3 convolution, Flatten, Gemm, Dropout, Softmax."""
    g = GraphBuilder(1)
    y = g.op("Relu", [g.conv("data", 3, 8, 5, stride=2, pad=2)])
    y = g.op("LRN", [y], size=5, alpha=0.1, beta=0.75, bias=2.0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2])
    y = g.op("Relu", [g.conv(y, 8, 16, 3, group=2)])
    y = g.op("LRN", [y], size=3, alpha=0.05, beta=0.5, bias=1.0)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2])
    y = g.op("Relu", [g.conv(y, 16, 16, 3)])
    y = g.op("Flatten", [y], axis=1)
    y = g.op("Relu", [g.gemm(y, 16 * 3 * 3, 32)])
    y = g.op("Dropout", [y], ratio=0.5) if opset < 12 else g.op("Dropout", [y])
    y = g.gemm(y, 32, 10)
    g.op("Softmax", [y], ["prob"], axis=1)
    return g.model({"data": ("N", 3, 32, 32)}, ["prob"], opset, "alexnet")


def inception(opset: int = 13):
    """GoogLeNet inception block: 1x1, 1x1->3x3, 1x1->5x5, pool->1x1 branches, Concat."""
    g = GraphBuilder(2)
    x = "data"
    b1 = g.op("Relu", [g.conv(x, 16, 8, 1)])
    b2 = g.op("Relu", [g.conv(g.op("Relu", [g.conv(x, 16, 4, 1)]), 4, 8, 3)])
    b3 = g.op("Relu", [g.conv(g.op("Relu", [g.conv(x, 16, 4, 1)]), 4, 8, 5)])
    b4 = g.op("Relu", [g.conv(g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), 16, 8, 1)])
    y = g.op("Concat", [b1, b2, b3, b4], axis=1)
    y = g.op("GlobalAveragePool", [y])
    y = g.op("Flatten", [y])
    g.op("Softmax", [g.gemm(y, 32, 10)], ["prob"])
    return g.model({"data": ("N", 16, 12, 12)}, ["prob"], opset, "inception")


def squeezenet(opset: int = 11):
    """SqueezeNet fire modules (squeeze 1x1, expand 1x1 + 3x3, Concat), ceil-mode pooling, a
    1x1 classifier convolution, GlobalAveragePool, opset-11 Softmax over a 4-d tensor."""
    g = GraphBuilder(3)
    y = g.op("Relu", [g.conv("data", 3, 16, 3, stride=2, pad=0)])
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)

    def fire(x, c_in, squeeze, expand):
        s = g.op("Relu", [g.conv(x, c_in, squeeze, 1)])
        return g.op("Concat", [g.op("Relu", [g.conv(s, squeeze, expand, 1)]), g.op("Relu", [g.conv(s, squeeze, expand, 3)])], axis=1)

    y = fire(y, 16, 4, 8)
    y = fire(y, 16, 4, 8)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    y = fire(y, 16, 8, 16)
    y = g.op("Dropout", [y])
    y = g.op("Relu", [g.conv(y, 32, 10, 1)])
    y = g.op("GlobalAveragePool", [y])
    g.op("Softmax", [y], ["prob"], axis=1)
    return g.model({"data": ("N", 3, 32, 32)}, ["prob"], opset, "squeezenet")


def resnet(opset: int = 12):
    """Two ResNet bottlenecks with BatchNormalization and residual Add, the second with a
    strided 1x1 projection; GlobalAveragePool, Flatten, Gemm."""
    g = GraphBuilder(4)

    def bottleneck(x, c_in, mid, c_out, stride):
        y = g.op("Relu", [g.batch_norm(g.conv(x, c_in, mid, 1, bias=False), mid)])
        y = g.op("Relu", [g.batch_norm(g.conv(y, mid, mid, 3, stride=stride, bias=False), mid)])
        y = g.batch_norm(g.conv(y, mid, c_out, 1, bias=False), c_out)
        shortcut = x if stride == 1 and c_in == c_out else g.batch_norm(g.conv(x, c_in, c_out, 1, stride=stride, bias=False), c_out)
        return g.op("Relu", [g.op("Add", [y, shortcut])])

    y = bottleneck("data", 16, 8, 16, 1)
    y = bottleneck(y, 16, 8, 32, 2)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    g.gemm(y, 32, 10, name="fc")
    return g.model({"data": ("N", 16, 8, 8)}, ["fc_out"], opset, "resnet")


def mobilenet_v2(opset: int = 13):
    """MobileNet v2's inverted residual blocks (1x1 expansion, depthwise 3x3 or 5x5 (v3's), each
    with Clip as ReLU6, then a linear 1x1 projection and the residual Add where the shapes match),
    at strides 1 and 2, on 12 and 20 channels (last vectors of 4 in the depthwise kernel);
    GlobalAveragePool, Flatten, Gemm."""
    g = GraphBuilder(6)
    six = [g.const(np.float32(0.0)), g.const(np.float32(6.0))]

    def block(x, c_in, c_out, stride, side):
        hidden = 2 * c_in
        y = g.op("Clip", [g.conv(x, c_in, hidden, 1)] + six)
        y = g.op("Clip", [g.conv(y, hidden, hidden, side, stride=stride, group=hidden)] + six)
        y = g.conv(y, hidden, c_out, 1)
        return g.op("Add", [y, x]) if stride == 1 and c_in == c_out else y

    y = block("data", 6, 6, 1, 3)
    y = block(y, 6, 10, 2, 5)
    y = block(y, 10, 10, 1, 5)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    g.gemm(y, 10, 7, name="fc")
    return g.model({"data": ("N", 6, 11, 11)}, ["fc_out"], opset, "mobilenet_v2")


def vgg(opset: int = 21):
    """A VGG block (3x3 convolutions, ReLU, 2x2 max pools), Flatten, Gemm with transB=0, alpha
    and beta, MatMul + Add (a PyTorch Linear), Dropout."""
    g = GraphBuilder(5)
    y = g.op("Relu", [g.conv("data", 3, 8, 3)])
    y = g.op("Relu", [g.conv(y, 8, 8, 3)])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Relu", [g.conv(y, 8, 16, 3)])
    y = g.op("Relu", [g.conv(y, 16, 16, 3)])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Flatten", [y])
    y = g.op("Relu", [g.gemm(y, 16 * 4 * 4, 32, trans_b=0, alpha=0.5, beta=2.0)])
    y = g.op("Dropout", [y])
    y = g.op("MatMul", [y, g.weight(32, 10, fan_in=32)])
    g.op("Add", [y, g.vector(10)], ["logits"])
    return g.model({"data": ("N", 3, 16, 16)}, ["logits"], opset, "vgg")


def fcn_head(opset: int = 13):
    """An FCN segmentation head: score convolutions, ConvTranspose upsampling cropped back with
    Slice (negative and INT64_MAX ends), a second ConvTranspose sized by output_shape (odd total
    padding), and the two fused by Add."""
    g = GraphBuilder(6)
    y = g.op("Relu", [g.conv("data", 8, 16, 3)])
    score = g.conv(y, 16, 5, 1)
    up = g.op("ConvTranspose", [score, g.weight(5, 5, 4, 4), g.vector(5)], kernel_shape=[4, 4], strides=[2, 2])  # 26x26
    starts, ends, axes = g.const(np.array([1, 1], np.int64)), g.const(np.array([-1, INT64_MAX], np.int64)), g.const(np.array([2, 3], np.int64))
    crop = g.op("Slice", [up, starts, ends, axes])  # rows 1..24, columns 1..25
    crop = g.op("Slice", [crop, g.const(np.array([0], np.int64)), g.const(np.array([24], np.int64)),
                          g.const(np.array([-1], np.int64)), g.const(np.array([1], np.int64))])
    skip = g.conv("data", 8, 5, 1)
    up2 = g.op("ConvTranspose", [skip, g.weight(5, 5, 3, 3)], kernel_shape=[3, 3], strides=[2, 2], output_shape=[24, 24])
    g.op("Add", [crop, up2], ["score"])
    return g.model({"data": ("N", 8, 12, 12)}, ["score"], opset, "fcn_head")


def batchnorm_as_mul_add(opset: int = 13):
    """Batch normalization exported as primitive Mul/Add by per-channel constants: after a Conv
    read by nothing else (folded into it), on a network input (a BatchNormalization layer), and
    after a Conv that a second branch also reads (not folded)."""
    g = GraphBuilder(7)
    c = 6
    scale = lambda: g.const(g.rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32))  # noqa: E731
    shift = lambda: g.const(g.rng.uniform(-0.5, 0.5, (c, 1, 1)).astype(np.float32))  # noqa: E731
    folded = g.op("Relu", [g.op("Add", [g.op("Mul", [g.conv("data", 4, c, 3), scale()]), shift()])])
    normalized = g.op("Add", [shift(), g.op("Mul", [scale(), "data2"])])
    shared = g.conv("data", 4, c, 3)
    branch = g.op("Sub", [g.op("Div", [shared, scale()]), shift()])
    g.op("Add", [folded, normalized], ["y1"])
    g.op("Add", [branch, shared], ["y2"])
    return g.model({"data": ("N", 4, 8, 8), "data2": ("N", c, 8, 8)}, ["y1", "y2"], opset, "bn_mul_add")


def hardcoded_flatten(opset: int = 9):
    """A model traced at batch 1: fixed input dim 0 = 1 and Reshape to [1, 144] before Gemm."""
    g = GraphBuilder(8)
    y = g.op("Relu", [g.conv("data", 4, 4, 3)])
    y = g.op("Reshape", [y, g.const(np.array([1, 4 * 6 * 6], np.int64))])
    g.op("Relu", [g.gemm(y, 144, 12)], ["out"])
    return g.model({"data": (1, 4, 6, 6)}, ["out"], opset, "hardcoded_flatten")


def softmax_4d(opset: int = 11):
    """Opset-11 Softmax on a 4-d tensor: axis 1 covers C*H*W, axis 2 covers H*W, axis 3 one line."""
    g = GraphBuilder(9)
    y = g.conv("data", 3, 4, 1)
    for axis in (1, 2, -1):
        g.op("Softmax", [y], [f"softmax_axis{axis}"], axis=axis)
    g.op("Softmax", [y], ["softmax_default"])
    return g.model({"data": ("N", 3, 4, 5)}, ["softmax_axis1", "softmax_axis2", "softmax_axis-1", "softmax_default"], opset, "softmax4d")


def clip(opset: int):
    """Clip as relu6, as a clamp, and with one bound: attributes before opset 11, inputs from 11."""
    g = GraphBuilder(10)
    # Scaled so that relu6 clips too (onnxruntime has no opset-6 Mul: the oldest style reads raw data).
    x = g.op("Mul", ["data", g.const(np.float32(4.0))]) if opset >= 7 else "data"
    if opset < 11:
        g.op("Clip", [x], ["relu6"], min=0.0, max=6.0)
        g.op("Clip", [x], ["clamp"], min=-0.5, max=1.5)
        g.op("Clip", [x], ["upper"], max=0.25)
    else:
        zero, six = g.const(np.float32(0.0)), g.const(np.float32(6.0))
        g.op("Clip", [x, zero, six], ["relu6"])
        g.op("Clip", [x, g.const(np.float32(-0.5)), g.const(np.float32(1.5))], ["clamp"])
        g.op("Clip", [x, "", g.const(np.float32(0.25))], ["upper"])
        g.op("Clip", [x, zero], ["relu"])
    outputs = ["relu6", "clamp", "upper"] + (["relu"] if opset >= 11 else [])
    return g.model({"data": ("N", 3, 5, 5)}, outputs, opset, f"clip{opset}")


def shape_gather_flatten(opset: int = 13):
    """The PyTorch-style flatten: Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape,
    then Gemm; and a dead Shape chain left over by the exporter."""
    g = GraphBuilder(11)
    y = g.op("Relu", [g.conv("data", 3, 4, 3)])
    shape = g.op("Shape", [y])
    batch = g.op("Gather", [shape, g.const(np.array(0, np.int64))], axis=0)
    batch = g.op("Unsqueeze", [batch, g.const(np.array([0], np.int64))])
    target = g.op("Concat", [batch, g.const(np.array([-1], np.int64))], axis=0)
    y = g.op("Reshape", [y, target])
    g.op("Shape", [y])  # dead: read by nothing
    g.gemm(y, 4 * 5 * 5, 7, name="fc")
    return g.model({"data": ("N", 3, 5, 5)}, ["fc_out"], opset, "shape_flatten")


def activations(opset: int = 20):
    """Every Activation mapping (LeakyRelu, PRelu with one slope, Elu, Sigmoid, Tanh, Exp, Abs,
    Softplus, HardSwish, Gelu) and the scalar Power forms, each a graph output."""
    g = GraphBuilder(12)
    x = "data"
    ops = {
        "leaky": ("LeakyRelu", [x], {"alpha": 0.2}), "prelu": ("PRelu", [x, g.const(np.array([0.3], np.float32))], {}),
        "elu": ("Elu", [x], {"alpha": 0.7}), "sigmoid": ("Sigmoid", [x], {}), "tanh": ("Tanh", [x], {}),
        "exp": ("Exp", [x], {}), "abs": ("Abs", [x], {}), "softplus": ("Softplus", [x], {}),
        "hswish": ("HardSwish", [x], {}), "gelu": ("Gelu", [x], {}), "neg": ("Neg", [x], {}),
        "add": ("Add", [x, g.const(np.float32(1.5))], {}), "rsub": ("Sub", [g.const(np.float32(2.0)), x], {}),
        "div": ("Div", [x, g.const(np.array([[[4.0]]], np.float32))], {}), "square": ("Pow", [x, g.const(np.float32(2.0))], {}),
        "max": ("Max", [x, g.const(np.float32(0.1))], {}), "mean": ("Mean", [x, g.const(np.float32(1.0))], {}),
    }
    for output, (op, inputs, attrs) in ops.items():
        g.op(op, inputs, [output], **attrs)
    return g.model({"data": ("N", 3, 4, 4)}, list(ops), opset, "activations")


def pooling(opset: int = 12):
    """Pooling corners: ceil mode whose last window would start in the end padding,
    count_include_pad 0 and 1, SAME_UPPER and SAME_LOWER padding, global max."""
    g = GraphBuilder(13)
    x = "data"
    g.op("MaxPool", [x], ["max_ceil"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    g.op("AveragePool", [x], ["avg_exclude"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    g.op("AveragePool", [x], ["avg_include"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)
    g.op("AveragePool", [x], ["avg_same"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    g.op("MaxPool", [x], ["max_same_lower"], kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_LOWER")
    g.conv(x, 3, 4, 2, pad=0, auto_pad="SAME_UPPER", name="conv_same")
    g.op("GlobalMaxPool", [x], ["global_max"])
    outputs = ["max_ceil", "avg_exclude", "avg_include", "avg_same", "max_same_lower", "conv_same_out", "global_max"]
    return g.model({"data": ("N", 3, 9, 9)}, outputs, opset, "pooling")


def split_concat(opset: int):
    """Split in the three styles of its opsets (attribute, input, num_outputs), Concat,
    Eltwise between tensors (Sub, Mul, Div, Max, Min, Sum, Mean), a Squeeze/Transpose/Unsqueeze
    flatten before MatMul, and two outputs."""
    g = GraphBuilder(14)
    x = g.op("Relu", [g.conv("data", 3, 12, 3)])
    if opset < 13:
        a, b, c = g.op("Split", [x], 3, axis=1, split=[4, 4, 4])
    elif opset < 18:
        a, b, c = g.op("Split", [x, g.const(np.array([4, 4, 4], np.int64))], 3, axis=1)
    else:
        a, b, c = g.op("Split", [x], 3, axis=1, num_outputs=3)
    positive = g.op("Sigmoid", [c])
    y = g.op("Concat", [g.op("Sub", [a, b]), g.op("Mul", [a, b]), g.op("Div", [a, g.op("Add", [positive, g.const(np.float32(0.5))])])], axis=1)
    z = g.op("Sum", [g.op("Max", [a, b]), g.op("Min", [b, c]), g.op("Mean", [a, b, c])])
    g.op("Concat", [y, z], ["features"], axis=1)
    pooled = g.op("GlobalAveragePool", [z])  # (N, 4, 1, 1)
    squeezed = g.op("Squeeze", [pooled], axes=[2, 3]) if opset < 13 else g.op("Squeeze", [pooled, g.const(np.array([2, 3], np.int64))])
    moved = g.op("Transpose", [g.op("Unsqueeze", [squeezed], axes=[1]) if opset < 13 else
                               g.op("Unsqueeze", [squeezed, g.const(np.array([1], np.int64))])], perm=[0, 2, 1])  # (N, 4, 1)
    flat = g.op("Flatten", [moved])
    g.op("MatMul", [flat, g.weight(4, 3)], ["logits"])
    return g.model({"data": ("N", 3, 6, 6)}, ["features", "logits"], opset, f"split{opset}")


def transposed_convolutions(opset: int = 17):
    """ConvTranspose corners: groups with dilations and output_padding, auto_pad SAME_UPPER and
    SAME_LOWER, output_shape with SAME_UPPER (odd total padding at the end), and a dilated,
    strided Conv."""
    g = GraphBuilder(16)
    x = "data"
    g.op("ConvTranspose", [x, g.weight(4, 3, 3, 3), g.vector(6)], ["grouped"], kernel_shape=[3, 3], strides=[2, 2],
         dilations=[2, 1], output_padding=[1, 1], pads=[1, 0, 2, 1], group=2)
    g.op("ConvTranspose", [x, g.weight(4, 2, 3, 3)], ["same_upper"], strides=[2, 2], auto_pad="SAME_UPPER")
    g.op("ConvTranspose", [x, g.weight(4, 2, 4, 4)], ["same_lower"], strides=[2, 2], auto_pad="SAME_LOWER")
    g.op("ConvTranspose", [x, g.weight(4, 2, 3, 3)], ["sized"], strides=[2, 2], output_shape=[12, 11], auto_pad="SAME_UPPER")
    g.conv(x, 4, 5, 3, stride=2, pad=2, dilations=[2, 2], name="dilated")
    return g.model({"data": ("N", 4, 6, 6)}, ["grouped", "same_upper", "same_lower", "sized", "dilated_out"], opset, "deconv")


def softmax_views(opset: int):
    """Reshapes absorbed by the readers after them: Flatten -> Softmax -> Gemm (opset < 13: one
    softmax over all features), Reshape (N, C, H*W) -> Softmax(axis=-1) -> Flatten -> Gemm, and an
    Add of two equal views, a scalar Mul on a view."""
    g = GraphBuilder(17)
    y = g.conv("data", 3, 4, 3)
    flat = g.op("Flatten", [y])
    a = g.op("Softmax", [flat], axis=1)
    lines = g.op("Reshape", [y, g.const(np.array([0, 4, -1], np.int64))])
    b = g.op("Flatten", [g.op("Softmax", [lines], axis=-1 if opset >= 13 else 2)])
    c = g.op("Mul", [g.op("Add", [flat, g.op("Relu", [flat])]), g.const(np.float32(0.5))])
    joined = g.op("Add", [g.op("Add", [a, b]), c])
    g.gemm(joined, 4 * 5 * 5, 6, name="fc")
    return g.model({"data": ("N", 3, 5, 5)}, ["fc_out"], opset, f"softmax_views{opset}")


def legacy_broadcast(opset: int):
    """Caffe2-era arithmetic: before opset 7, Add/Mul broadcast a (C,) constant per channel with
    broadcast=1, axis=1. From opset 7 the same model spells the constants (C, 1, 1); onnxruntime
    runs only that one, the reference for both."""
    g = GraphBuilder(18)
    bias = g.rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    scale = g.rng.uniform(0.5, 1.5, 6).astype(np.float32)
    legacy = opset < 7
    y = g.conv("data", 3, 6, 3, bias=False)
    y = g.op("Add", [y, g.const(bias if legacy else bias.reshape(6, 1, 1))], **({"broadcast": 1, "axis": 1} if legacy else {}))
    y = g.op("Relu", [y])
    y = g.op("Mul", [y, g.const(scale if legacy else scale.reshape(6, 1, 1))], **({"broadcast": 1, "axis": 1} if legacy else {}))
    y = g.op("Sub", [y, g.const(np.array([0.25], np.float32))], **({"broadcast": 1} if legacy else {}))
    g.op("Softmax", [y], ["prob"])
    return g.model({"data": ("N", 3, 6, 6)}, ["prob"], opset, f"legacy_broadcast{opset}")


def two_inputs():
    """Two inputs and three outputs, one of them an Identity of an input (a Copy)."""
    g = GraphBuilder(15)
    s = g.op("Add", ["left", "right"], ["sum"])
    g.op("Relu", [s], ["relu"])
    g.op("Identity", ["right"], ["right_copy"])
    return g.model({"left": ("N", 4, 3, 3), "right": ("batch", 4, 3, 3)}, ["sum", "relu", "right_copy"], 13, "two_inputs")


#: name -> (builder, kwargs) of every model compared with onnxruntime.
ARCHITECTURES = {
    "alexnet_opset9": (alexnet, {"opset": 9}),
    "alexnet_opset13": (alexnet, {"opset": 13}),
    "inception": (inception, {}),
    "squeezenet": (squeezenet, {}),
    "resnet_bottleneck": (resnet, {}),
    "mobilenet_v2": (mobilenet_v2, {}),
    "vgg_opset21": (vgg, {}),
    "fcn_head": (fcn_head, {}),
    "batchnorm_as_mul_add": (batchnorm_as_mul_add, {}),
    "hardcoded_flatten": (hardcoded_flatten, {}),
    "softmax_4d_opset11": (softmax_4d, {}),
    "clip_opset6": (clip, {"opset": 6}),
    "clip_opset13": (clip, {"opset": 13}),
    "shape_gather_flatten": (shape_gather_flatten, {}),
    "activations": (activations, {}),
    "pooling": (pooling, {}),
    "split_opset11": (split_concat, {"opset": 11}),
    "split_opset13": (split_concat, {"opset": 13}),
    "split_opset18": (split_concat, {"opset": 18}),
    "two_inputs": (two_inputs, {}),
    "transposed_convolutions": (transposed_convolutions, {}),
    "softmax_views_opset11": (softmax_views, {"opset": 11}),
    "softmax_views_opset13": (softmax_views, {"opset": 13}),
}
