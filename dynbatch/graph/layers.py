"""Attribute validation and shape inference, one function per layer type.

``infer_layer`` runs when a layer is added to a ``Network`` (and again when its batch changes). It
checks the attributes and weights against the input shapes, and returns

- the *normalized* attributes the kernels receive: every default filled in, pairs as tuples of
  Python ints, floats as Python floats, weights as float32 C-contiguous arrays, ``auto_pad``
  resolved into explicit pads, and ceil rounding and global pooling into an explicit
  ``output_size`` (Crop carries its output ``dims`` likewise);
- the output shapes, batch first.

Every error names the layer and shows the values involved. Layer types dynbatch cannot run are
still accepted here (so that a whole model can be described and the topology check can list
everything it rejects); their output shapes are inferred where the type says how (Flatten,
Reshape, Permute) or taken from an ``output_shape`` attribute, and are otherwise unknown (None).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import NetworkDefinitionError

Shape = tuple[int, ...]

ACTIVATION_TYPES = (
    "relu", "relu6", "clamp", "sigmoid", "tanh", "elu", "exp", "abs", "softplus", "hswish", "gelu",
)
ELTWISE_OPERATIONS = ("sum", "sub", "mul", "div", "max", "min", "squared_diff", "pow")
AUTO_PAD_MODES = ("explicit", "same_upper", "same_lower", "valid")


class LayerContext:
    """Reads one layer's attributes and raises errors that name it."""

    def __init__(self, layer_type: str, name: str, attrs: dict, allowed: set[str]):
        self.layer_type = layer_type
        self.name = name
        self.attrs = attrs
        unknown = sorted(set(attrs) - allowed)
        if unknown:
            self.fail(f"unknown attribute(s) {unknown}; {layer_type} takes {sorted(allowed) or 'none'}")

    def fail(self, message: str):
        raise NetworkDefinitionError(f"{self.layer_type} layer '{self.name}': {message}")

    def integer(self, key: str, default=None, minimum: int | None = None) -> int:
        value = self.attrs.get(key, default)
        if value is None:
            self.fail(f"attribute '{key}' is required")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            self.fail(f"attribute '{key}' must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(f"attribute '{key}' must be >= {minimum}, got {value}")
        return int(value)

    def real(self, key: str, default=None) -> float:
        value = self.attrs.get(key, default)
        if value is None:
            self.fail(f"attribute '{key}' is required")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            self.fail(f"attribute '{key}' must be a number, got {value!r}")
        return float(value)

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.attrs.get(key, default)
        if not isinstance(value, str) or value.lower() not in options:
            self.fail(f"attribute '{key}' must be one of {list(options)}, got {value!r}")
        return value.lower()

    def pair(self, key: str, default: int, minimum: int) -> tuple[int, int]:
        """An (H, W) pair given as one int or a sequence of two."""
        value = self.attrs.get(key, default)
        values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
        if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
            self.fail(f"attribute '{key}' must be an int or a pair of ints (H, W), got {value!r}")
        if min(values) < minimum:
            self.fail(f"attribute '{key}' must be >= {minimum}, got {value!r}")
        return int(values[0]), int(values[1])

    def array(self, key: str, shape: tuple[int | None, ...] | None = None, required: bool = True):
        """A weight array, copied to float32 C order; ``None`` in ``shape`` matches any size."""
        value = self.attrs.get(key)
        if value is None:
            if required:
                self.fail(f"attribute '{key}' (an array) is required")
            return None
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            self.fail(f"'{key}' must be a numeric array, got dtype {array.dtype}")
        if shape is not None and (
            array.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, array.shape))
        ):
            expected = "(" + ", ".join("?" if e is None else str(e) for e in shape) + ")"
            self.fail(f"'{key}' has shape {array.shape}, expected {expected}")
        return np.array(array, dtype=np.float32, order="C", copy=True)

    def vector_or_default(self, key: str, size: int, fill: float) -> np.ndarray:
        array = self.array(key, (size,), required=False)
        return np.full(size, fill, np.float32) if array is None else array

    def axis(self, key: str, rank: int, default: int = 1) -> int:
        axis = self.integer(key, default)
        if not -rank <= axis < rank:
            self.fail(f"axis {axis} is out of range for input rank {rank}")
        return axis % rank


def require_inputs(ctx: LayerContext, shapes: list[Shape], count: int | None = None, minimum: int = 1):
    if count is not None and len(shapes) != count:
        ctx.fail(f"takes {count} input(s), got {len(shapes)}")
    if len(shapes) < minimum:
        ctx.fail(f"takes at least {minimum} inputs, got {len(shapes)}")


def require_rank(ctx: LayerContext, shape: Shape, ranks: tuple[int, ...]):
    if len(shape) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        ctx.fail(f"input has shape {shape} (rank {len(shape)}); expected rank {expected}")


def resolve_pads(ctx: LayerContext, spatial: Shape, extents: Shape, strides: Shape):
    """pads_begin, pads_end for a window of ``extents`` sliding with ``strides`` (auto_pad resolved)."""
    auto_pad = ctx.attrs.get("auto_pad", "explicit")
    auto_pad = "explicit" if isinstance(auto_pad, str) and auto_pad.lower() == "notset" else auto_pad
    ctx.attrs = {**ctx.attrs, "auto_pad": auto_pad}
    mode = ctx.choice("auto_pad", "explicit", AUTO_PAD_MODES)
    if mode == "explicit":
        return ctx.pair("pads_begin", 0, 0), ctx.pair("pads_end", 0, 0)
    if mode == "valid":
        return (0, 0), (0, 0)
    begin, end = [], []
    for size, extent, stride in zip(spatial, extents, strides):
        out = -(-size // stride)
        total = max((out - 1) * stride + extent - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "same_upper" else large)
        end.append(large if mode == "same_upper" else small)
    return tuple(begin), tuple(end)


def output_extent(ctx: LayerContext, what: str, size: int) -> int:
    if size < 1:
        ctx.fail(f"the output {what} would be {size}; the input is too small for this kernel, stride and padding")
    return size


# ----------------------------------------------------------------------------------------------
# The 14 supported layer types. Each takes (ctx, input shapes) and returns (attrs, output shapes).


def convolution(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    (n, c, h, w) = shape = shapes[0]
    require_rank(ctx, shape, (4,))
    weights = ctx.array("weights", (None, None, None, None))
    k, c_per_group, kh, kw = weights.shape
    group = ctx.integer("group", 1, minimum=1)
    if c % group or c_per_group * group != c:
        ctx.fail(f"weights {weights.shape} take {c_per_group} channels per group, but the input has {c} channels and group is {group}")
    if k % group:
        ctx.fail(f"{k} output channels (weights dim 0) do not divide into group {group}")
    strides = ctx.pair("strides", 1, 1)
    dilations = ctx.pair("dilations", 1, 1)
    extents = (dilations[0] * (kh - 1) + 1, dilations[1] * (kw - 1) + 1)
    pads_begin, pads_end = resolve_pads(ctx, (h, w), extents, strides)
    oh = output_extent(ctx, "height", (h + pads_begin[0] + pads_end[0] - extents[0]) // strides[0] + 1)
    ow = output_extent(ctx, "width", (w + pads_begin[1] + pads_end[1] - extents[1]) // strides[1] + 1)
    attrs = dict(
        weights=weights, biases=ctx.vector_or_default("biases", k, 0.0), strides=strides,
        dilations=dilations, pads_begin=pads_begin, pads_end=pads_end, group=group,
    )
    return attrs, [(n, k, oh, ow)]


def deconvolution(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    (n, c, h, w) = shape = shapes[0]
    require_rank(ctx, shape, (4,))
    weights = ctx.array("weights", (c, None, None, None))
    _, k_per_group, kh, kw = weights.shape
    group = ctx.integer("group", 1, minimum=1)
    if c % group:
        ctx.fail(f"{c} input channels do not divide into group {group}")
    k = k_per_group * group
    strides = ctx.pair("strides", 1, 1)
    dilations = ctx.pair("dilations", 1, 1)
    output_padding = ctx.pair("output_padding", 0, 0)
    for axis, (pad, stride, dilation) in enumerate(zip(output_padding, strides, dilations)):
        if pad >= max(stride, dilation):
            ctx.fail(f"output_padding {output_padding} must be smaller than the stride or the dilation on each axis")
    extents = (dilations[0] * (kh - 1) + 1, dilations[1] * (kw - 1) + 1)
    mode = ctx.choice("auto_pad", "explicit", AUTO_PAD_MODES + ("notset",))
    if mode in ("explicit", "notset", "valid"):
        pads_begin = ctx.pair("pads_begin", 0, 0) if mode != "valid" else (0, 0)
        pads_end = ctx.pair("pads_end", 0, 0) if mode != "valid" else (0, 0)
    else:  # same_*: the output is input * stride, as in ONNX ConvTranspose
        totals = [s * (i - 1) + p + e - i * s for i, s, p, e in zip((h, w), strides, output_padding, extents)]
        if min(totals) < 0:
            ctx.fail(f"auto_pad {mode} needs a kernel extent {extents} + output_padding of at least the stride {strides}")
        small = tuple(t // 2 for t in totals)
        large = tuple(t - t // 2 for t in totals)
        pads_begin, pads_end = (small, large) if mode == "same_upper" else (large, small)
    oh, ow = (
        output_extent(ctx, axis_name, (i - 1) * s - pb - pe + e + p)
        for axis_name, i, s, pb, pe, e, p in zip(
            ("height", "width"), (h, w), strides, pads_begin, pads_end, extents, output_padding
        )
    )
    attrs = dict(
        weights=weights, biases=ctx.vector_or_default("biases", k, 0.0), strides=strides,
        dilations=dilations, pads_begin=pads_begin, pads_end=pads_end,
        output_padding=output_padding, group=group,
    )
    return attrs, [(n, k, oh, ow)]


def activation(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    if "type" not in ctx.attrs:
        ctx.fail(f"attribute 'type' is required, one of {list(ACTIVATION_TYPES)}")
    kind = ctx.choice("type", "relu", ACTIVATION_TYPES)
    alpha = beta = 0.0
    if kind == "relu":
        alpha = ctx.real("negative_slope", 0.0)
    elif kind == "clamp":
        alpha, beta = ctx.real("min"), ctx.real("max")
        if alpha > beta:
            ctx.fail(f"clamp min {alpha} is greater than max {beta}")
    elif kind == "elu":
        alpha = ctx.real("alpha", 1.0)
    allowed_params = {"relu": {"negative_slope"}, "clamp": {"min", "max"}, "elu": {"alpha"}}.get(kind, set())
    stray = sorted(set(ctx.attrs) - {"type"} - allowed_params)
    if stray:
        ctx.fail(f"attribute(s) {stray} do not apply to activation '{kind}'")
    return dict(type=kind, alpha=alpha, beta=beta), [shapes[0]]


def lrn(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    require_rank(ctx, shapes[0], (4,))
    attrs = dict(
        local_size=ctx.integer("local_size", 5, minimum=1), alpha=ctx.real("alpha", 1e-4),
        beta=ctx.real("beta", 0.75), k=ctx.real("k", 1.0),
        region=ctx.choice("region", "across", ("across", "same")),
    )
    return attrs, [shapes[0]]


def pooling(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    (n, c, h, w) = shape = shapes[0]
    require_rank(ctx, shape, (4,))
    method = ctx.choice("pool_method", "max", ("max", "avg"))
    exclude_pad = bool(ctx.attrs.get("exclude_pad", False))
    if ctx.attrs.get("global_pool", False):
        ignored = sorted({"kernel", "strides", "pads_begin", "pads_end", "auto_pad"} & set(ctx.attrs))
        if ignored:
            ctx.fail(f"global_pool=True takes no {ignored}")
        attrs = dict(pool_method=method, kernel=(h, w), strides=(1, 1), pads_begin=(0, 0), pads_end=(0, 0),
                     exclude_pad=exclude_pad, output_size=(1, 1))
        return attrs, [(n, c, 1, 1)]
    if "kernel" not in ctx.attrs:
        ctx.fail("attribute 'kernel' is required (or global_pool=True)")
    kernel = ctx.pair("kernel", 1, 1)
    strides = ctx.pair("strides", 1, 1)
    pads_begin, pads_end = resolve_pads(ctx, (h, w), kernel, strides)
    if any(p >= k for p, k in zip(pads_begin + pads_end, kernel + kernel)):
        ctx.fail(f"pads {pads_begin}/{pads_end} must be smaller than the kernel {kernel}, or a window holds only padding")
    ceil = ctx.choice("rounding_type", "floor", ("floor", "ceil")) == "ceil"
    out = []
    for size, k, s, pb, pe in zip((h, w), kernel, strides, pads_begin, pads_end):
        span = size + pb + pe - k
        count = (-(-span // s) if ceil else span // s) + 1
        if ceil and (count - 1) * s >= size + pb:  # the last window would start inside the end padding
            count -= 1
        out.append(output_extent(ctx, "size", count))
    attrs = dict(pool_method=method, kernel=kernel, strides=strides, pads_begin=pads_begin, pads_end=pads_end,
                 exclude_pad=exclude_pad, output_size=tuple(out))
    return attrs, [(n, c, out[0], out[1])]


def fully_connected(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    shape = shapes[0]
    require_rank(ctx, shape, (2, 3, 4))
    in_features = math.prod(shape[1:])
    weights = ctx.array("weights", (None, in_features))
    out_features = weights.shape[0]
    return dict(weights=weights, biases=ctx.vector_or_default("biases", out_features, 0.0)), [(shape[0], out_features)]


def softmax(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    require_rank(ctx, shapes[0], (2, 3, 4))
    flatten = ctx.attrs.get("flatten", False)
    if not isinstance(flatten, (bool, np.bool_)):
        ctx.fail(f"attribute 'flatten' must be True or False, got {flatten!r}")
    return dict(axis=ctx.axis("axis", len(shapes[0])), flatten=bool(flatten)), [shapes[0]]


def split(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    shape = shapes[0]
    require_rank(ctx, shape, (2, 3, 4))
    axis = ctx.axis("axis", len(shape))
    length = shape[axis]
    if ("sizes" in ctx.attrs) == ("num_split" in ctx.attrs):
        ctx.fail("give exactly one of 'sizes' (a list) or 'num_split' (equal parts)")
    if "num_split" in ctx.attrs:
        parts = ctx.integer("num_split", minimum=1)
        if length % parts:
            ctx.fail(f"axis {axis} of length {length} does not split into {parts} equal parts")
        sizes = (length // parts,) * parts
    else:
        sizes = tuple(int(s) for s in ctx.attrs["sizes"])
        if min(sizes, default=0) < 1 or sum(sizes) != length:
            ctx.fail(f"sizes {list(sizes)} must be positive and sum to {length}, the length of axis {axis}")
    outputs = [shape[:axis] + (size,) + shape[axis + 1:] for size in sizes]
    return dict(axis=axis, sizes=sizes), outputs


def concatenation(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, minimum=2)
    first = shapes[0]
    require_rank(ctx, first, (2, 3, 4))
    axis = ctx.axis("axis", len(first))
    for index, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first) or any(a != b for d, (a, b) in enumerate(zip(shape, first)) if d != axis):
            ctx.fail(f"input {index} has shape {shape}, which differs from input 0 {first} outside axis {axis}")
    total = sum(shape[axis] for shape in shapes)
    return dict(axis=axis), [first[:axis] + (total,) + first[axis + 1:]]


def power(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    attrs = dict(power=ctx.real("power", 1.0), scale=ctx.real("scale", 1.0), shift=ctx.real("shift", 0.0))
    return attrs, [shapes[0]]


def eltwise(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, minimum=2)
    operation = ctx.choice("operation", "sum", ELTWISE_OPERATIONS)
    rank = len(shapes[0])
    require_rank(ctx, shapes[0], (2, 3, 4))
    output = []
    for axis in range(rank):
        sizes = {shape[axis] for shape in shapes if len(shape) == rank}
        if any(len(shape) != rank for shape in shapes) or len(sizes - {1}) > 1:
            ctx.fail(f"input shapes {shapes} are not equal and do not broadcast (each dim must match or be 1, ranks equal)")
        output.append(max(sizes))
    coeff = ctx.attrs.get("coeff")
    if coeff is None:
        coeff = (1.0,) * len(shapes)
    else:
        if operation != "sum":
            ctx.fail(f"'coeff' applies to operation 'sum' only, not '{operation}'")
        coeff = tuple(float(v) for v in coeff)
        if len(coeff) != len(shapes):
            ctx.fail(f"'coeff' has {len(coeff)} values for {len(shapes)} inputs")
    return dict(operation=operation, coeff=coeff), [tuple(output)]


def crop(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, minimum=1)
    if len(shapes) > 2:
        ctx.fail(f"takes one input (with axis/offset/dim) or two (data and a reference shape), got {len(shapes)}")
    shape = shapes[0]
    rank = len(shape)
    require_rank(ctx, shape, (2, 3, 4))
    offsets, out = [0] * rank, list(shape)
    if len(shapes) == 2:  # Caffe form: crop every axis from `axis` on to the reference's size
        reference = shapes[1]
        if len(reference) != rank:
            ctx.fail(f"reference input has rank {len(reference)}, data has rank {rank}")
        first = ctx.axis("axis", rank, default=2)
        offset = ctx.attrs.get("offset", 0)
        given = [offset] * (rank - first) if isinstance(offset, (int, np.integer)) else list(offset)
        if len(given) == 1:
            given = given * (rank - first)
        if len(given) != rank - first:
            ctx.fail(f"'offset' needs 1 or {rank - first} values for axes {first}..{rank - 1}, got {offset!r}")
        for axis, value in zip(range(first, rank), given):
            offsets[axis], out[axis] = int(value), reference[axis]
    else:
        axes, offset, dim = (list(np.atleast_1d(ctx.attrs.get(key, []))) for key in ("axis", "offset", "dim"))
        if not axes or not (len(axes) == len(offset) == len(dim)):
            ctx.fail(f"'axis', 'offset' and 'dim' must be lists of one equal, non-zero length; got {axes}, {offset}, {dim}")
        for axis, begin, size in zip(axes, offset, dim):
            if not -rank <= int(axis) < rank:
                ctx.fail(f"axis {axis} is out of range for input rank {rank}")
            offsets[int(axis) % rank], out[int(axis) % rank] = int(begin), int(size)
    for axis in range(rank):
        if offsets[axis] < 0 or out[axis] < 1 or offsets[axis] + out[axis] > shape[axis]:
            ctx.fail(f"crop of {out[axis]} from offset {offsets[axis]} does not fit axis {axis} of length {shape[axis]} (input {shape})")
    return dict(offsets=tuple(offsets), dims=tuple(out[1:])), [tuple(out)]


def batch_normalization(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    shape = shapes[0]
    require_rank(ctx, shape, (2, 3, 4))
    channels = shape[1]
    mean = ctx.array("mean", (channels,))
    variance = ctx.array("variance", (channels,))
    epsilon = ctx.real("epsilon", 1e-5)
    if np.any(variance + epsilon <= 0):
        ctx.fail(f"variance + epsilon must be positive (min variance {variance.min()}, epsilon {epsilon})")
    attrs = dict(
        mean=mean, variance=variance, gamma=ctx.vector_or_default("gamma", channels, 1.0),
        beta=ctx.vector_or_default("beta", channels, 0.0), epsilon=epsilon,
    )
    return attrs, [shape]


def copy(ctx: LayerContext, shapes: list[Shape]):
    require_inputs(ctx, shapes, 1)
    return {}, [shapes[0]]


LayerSpec = Callable[[LayerContext, list[Shape]], tuple[dict, list[Shape]]]

#: layer type -> (shape inference, the attribute names it accepts)
SUPPORTED_LAYERS: dict[str, tuple[LayerSpec, set[str]]] = {
    "Convolution": (convolution, {"weights", "biases", "strides", "pads_begin", "pads_end", "dilations", "group", "auto_pad"}),
    "Deconvolution": (deconvolution, {"weights", "biases", "strides", "pads_begin", "pads_end", "dilations", "group", "output_padding", "auto_pad"}),
    "Activation": (activation, {"type", "negative_slope", "min", "max", "alpha"}),
    "LRN": (lrn, {"local_size", "alpha", "beta", "k", "region"}),
    "Pooling": (pooling, {"pool_method", "kernel", "strides", "pads_begin", "pads_end", "exclude_pad", "rounding_type", "auto_pad", "global_pool"}),
    "FullyConnected": (fully_connected, {"weights", "biases"}),
    "SoftMax": (softmax, {"axis", "flatten"}),
    "Split": (split, {"axis", "sizes", "num_split"}),
    "Concatenation": (concatenation, {"axis"}),
    "Power": (power, {"power", "scale", "shift"}),
    "Eltwise": (eltwise, {"operation", "coeff"}),
    "Crop": (crop, {"axis", "offset", "dim"}),
    "BatchNormalization": (batch_normalization, {"mean", "variance", "gamma", "beta", "epsilon"}),
    "Copy": (copy, set()),
}


# ----------------------------------------------------------------------------------------------
# Types dynbatch cannot run: only their output shapes, so that a whole model can be checked.


def _unsupported_shapes(ctx: LayerContext, shapes: list[Shape | None]) -> list[Shape | None] | None:
    if "output_shape" in ctx.attrs:
        return [tuple(int(d) for d in ctx.attrs["output_shape"])]
    if not shapes or shapes[0] is None:
        return None
    shape = shapes[0]
    if ctx.layer_type == "Flatten":
        axis = ctx.integer("axis", 1) % len(shape)
        return [(math.prod(shape[:axis]), math.prod(shape[axis:]))]
    if ctx.layer_type == "Permute" and "order" in ctx.attrs:
        return [tuple(shape[int(axis)] for axis in ctx.attrs["order"])]
    if ctx.layer_type == "Reshape" and "shape" in ctx.attrs:
        target = [shape[i] if int(d) == 0 else int(d) for i, d in enumerate(ctx.attrs["shape"])]
        if -1 in target:
            known = math.prod(d for d in target if d != -1)
            target[target.index(-1)] = math.prod(shape) // max(known, 1)
        return [tuple(target)]
    return None


def infer_layer(layer_type: str, name: str, shapes: list[Shape | None], attrs: dict):
    """Validate one layer; return (normalized attrs or None, output shapes or None)."""
    if layer_type not in SUPPORTED_LAYERS:
        return None, _unsupported_shapes(LayerContext(layer_type, name, attrs, set(attrs)), shapes)
    spec, allowed = SUPPORTED_LAYERS[layer_type]
    ctx = LayerContext(layer_type, name, attrs, allowed)
    if any(shape is None for shape in shapes):  # downstream of a layer of unknown shape
        return None, None
    return spec(ctx, shapes)
