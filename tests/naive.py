"""Slow, obviously correct references for every layer type, written from each layer's definition
in float64 (tests only; they share nothing with the kernels).

Uniform contract: ``reference(inputs, attrs) -> list of outputs``, where ``inputs`` hold only the
n real rows and ``attrs`` is the layer's normalized attribute dict (see dynbatch/graph/layers.py).
``REFERENCES`` maps each layer type to its reference.
"""
import math

import numpy as np

# ----------------------------------------------------------------------------------------------
# Spatial layers: Convolution, Deconvolution, Pooling, LRN

def convolution(inputs, attrs):
    """Zero-pad the input, then take each output as the dot product of a (dilated) input patch
    with the weights of its output channel."""
    x = inputs[0].astype(np.float64)
    weights = attrs["weights"].astype(np.float64)
    biases = attrs["biases"].astype(np.float64)
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    ph0, pw0 = attrs["pads_begin"]
    ph1, pw1 = attrs["pads_end"]
    group = attrs["group"]
    batch, channels, height, width = x.shape
    out_channels, group_in, kh, kw = weights.shape
    group_out = out_channels // group
    padded = np.zeros((batch, channels, height + ph0 + ph1, width + pw0 + pw1))
    padded[:, :, ph0:ph0 + height, pw0:pw0 + width] = x
    out_h = (height + ph0 + ph1 - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + pw0 + pw1 - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((batch, out_channels, out_h, out_w))
    for k in range(out_channels):
        g = k // group_out
        channel_slice = slice(g * group_in, (g + 1) * group_in)
        for oh in range(out_h):
            for ow in range(out_w):
                patch = padded[:, channel_slice,
                               oh * sh: oh * sh + dh * (kh - 1) + 1: dh,
                               ow * sw: ow * sw + dw * (kw - 1) + 1: dw]
                out[:, k, oh, ow] = biases[k] + np.einsum("bcij,cij->b", patch, weights[k])
    return [out]


def deconvolution(inputs, attrs):
    """Scatter definition: every input pixel adds x * weights into an uncropped output, which is
    then cropped by the begin pads and cut (or zero-extended) to the output size."""
    x = inputs[0].astype(np.float64)
    weights = attrs["weights"].astype(np.float64)
    biases = attrs["biases"].astype(np.float64)
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    ph0, pw0 = attrs["pads_begin"]
    ph1, pw1 = attrs["pads_end"]
    oph, opw = attrs["output_padding"]
    group = attrs["group"]
    batch, channels, height, width = x.shape
    _, group_out, kh, kw = weights.shape
    group_in = channels // group
    out_channels = group_out * group
    out_h = (height - 1) * sh - ph0 - ph1 + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - pw0 - pw1 + dw * (kw - 1) + opw + 1
    full_h = max((height - 1) * sh + dh * (kh - 1) + 1, ph0 + out_h)
    full_w = max((width - 1) * sw + dw * (kw - 1) + 1, pw0 + out_w)
    full = np.zeros((batch, out_channels, full_h, full_w))
    for c in range(channels):
        g = c // group_in
        for ih in range(height):
            for iw in range(width):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * group_out:(g + 1) * group_out, ih * sh + i * dh, iw * sw + j * dw] += (
                            x[:, c, ih, iw, None] * weights[c, :, i, j])
    out = full[:, :, ph0:ph0 + out_h, pw0:pw0 + out_w] + biases[None, :, None, None]
    return [out]


def pooling(inputs, attrs):
    """For each output cell of the attrs["output_size"] grid, pool the data cells of its window."""
    x = inputs[0].astype(np.float64)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    ph0, pw0 = attrs["pads_begin"]
    ph1, pw1 = attrs["pads_end"]
    batch, channels, height, width = x.shape
    out_h, out_w = attrs["output_size"]
    out = np.zeros((batch, channels, out_h, out_w))
    for oh in range(out_h):
        top = oh * sh - ph0
        rows = range(max(top, 0), min(top + kh, height))
        for ow in range(out_w):
            left = ow * sw - pw0
            cols = range(max(left, 0), min(left + kw, width))
            window = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
            if attrs["pool_method"] == "max":
                out[:, :, oh, ow] = window.max(axis=(2, 3))
            else:
                if attrs["exclude_pad"]:
                    count = len(rows) * len(cols)
                else:
                    count = (min(top + kh, height + ph1) - top) * (min(left + kw, width + pw1) - left)
                out[:, :, oh, ow] = window.sum(axis=(2, 3)) / count
    return [out]


def lrn(inputs, attrs):
    """Sum of squares over the neighbourhood of each element, then x / (k + alpha' * S)^beta."""
    x = inputs[0].astype(np.float64)
    size = attrs["local_size"]
    before, after = (size - 1) // 2, size // 2
    _, channels, height, width = x.shape
    squares = x * x
    sums = np.zeros_like(x)
    if attrs["region"] == "across":
        alpha = attrs["alpha"] / size
        for c in range(channels):
            sums[:, c] = squares[:, max(c - before, 0):c + after + 1].sum(axis=1)
    else:
        alpha = attrs["alpha"] / size ** 2
        for h in range(height):
            for w in range(width):
                sums[:, :, h, w] = squares[:, :, max(h - before, 0):h + after + 1,
                                           max(w - before, 0):w + after + 1].sum(axis=(2, 3))
    return [x / (attrs["k"] + alpha * sums) ** attrs["beta"]]


_SPATIAL = {
    "Convolution": convolution,
    "Deconvolution": deconvolution,
    "Pooling": pooling,
    "LRN": lrn,
}


# ----------------------------------------------------------------------------------------------
# Elementwise layers: Activation, Power, Eltwise, BatchNormalization

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0.0 else math.exp(x) / (1.0 + math.exp(x))


def _softplus(x):
    # log(1 + exp(x)), without overflowing exp for large x.
    return x + math.log1p(math.exp(-x)) if x > 0.0 else math.log1p(math.exp(x))


def _exp(x):
    # math.exp raises OverflowError where float arithmetic gives inf.
    return math.inf if x > 709.0 else math.exp(x)


_ACTIVATIONS = {
    "relu": lambda x, alpha, beta: x if x > 0.0 else alpha * x,
    "relu6": lambda x, alpha, beta: min(max(x, 0.0), 6.0),
    "clamp": lambda x, alpha, beta: min(max(x, alpha), beta),
    "sigmoid": lambda x, alpha, beta: _sigmoid(x),
    "tanh": lambda x, alpha, beta: math.tanh(x),
    "elu": lambda x, alpha, beta: x if x > 0.0 else alpha * (_exp(x) - 1.0),
    "exp": lambda x, alpha, beta: _exp(x),
    "abs": lambda x, alpha, beta: abs(x),
    "softplus": lambda x, alpha, beta: _softplus(x),
    "hswish": lambda x, alpha, beta: x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "gelu": lambda x, alpha, beta: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
}


def activation(inputs, attrs):
    """y = f(x) element by element, f chosen by attrs["type"]."""
    function = _ACTIVATIONS[attrs["type"]]
    alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
    x = np.asarray(inputs[0], dtype=np.float64)
    y = np.array([function(float(value), alpha, beta) for value in x.ravel()], dtype=np.float64)
    return [y.reshape(x.shape)]


def power(inputs, attrs):
    """y = (shift + scale * x) ** power; NaN for a negative base and a non-integer power."""
    x = np.asarray(inputs[0], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = np.power(attrs["shift"] + attrs["scale"] * x, attrs["power"])
    return [y]


_ELTWISE = {
    "sum": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "max": np.maximum,
    "min": np.minimum,
    "squared_diff": lambda a, b: (a - b) ** 2,
    "pow": np.power,
}


def eltwise(inputs, attrs):
    """Left fold ((x0 op x1) op x2) ... with NumPy broadcasting of size-1 dims; sum is
    sum_i coeff[i] * x_i."""
    operation = attrs["operation"]
    xs = [np.asarray(x, dtype=np.float64) for x in inputs]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if operation == "sum":
            y = sum(float(c) * x for c, x in zip(attrs["coeff"], xs))
        else:
            y = xs[0]
            for x in xs[1:]:
                y = _ELTWISE[operation](y, x)
    return [np.broadcast_to(y, np.broadcast_shapes(*(x.shape for x in xs))).copy()]


def batch_normalization(inputs, attrs):
    """y = gamma * (x - mean) / sqrt(variance + epsilon) + beta along channel axis 1."""
    x = np.asarray(inputs[0], dtype=np.float64)
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        mean = float(attrs["mean"][c])
        std = math.sqrt(float(attrs["variance"][c]) + float(attrs["epsilon"]))
        y[:, c] = float(attrs["gamma"][c]) * (x[:, c] - mean) / std + float(attrs["beta"][c])
    return [y]


_ELEMENTWISE = {
    "Activation": activation,
    "Power": power,
    "Eltwise": eltwise,
    "BatchNormalization": batch_normalization,
}


# ----------------------------------------------------------------------------------------------
# Structural layers: FullyConnected, SoftMax, Split, Concatenation, Crop

def fully_connected(inputs, attrs):
    """y = x_flat @ weights.T + biases, x_flat the samples flattened to rows."""
    x = inputs[0].astype(np.float64)
    rows = x.reshape(x.shape[0], -1)
    weights = attrs["weights"].astype(np.float64)
    biases = attrs["biases"].astype(np.float64)
    out = np.zeros((rows.shape[0], weights.shape[0]))
    for b in range(rows.shape[0]):
        for o in range(weights.shape[0]):
            out[b, o] = biases[o] + np.sum(rows[b] * weights[o])
    return [out]


def softmax(inputs, attrs):
    """exp(x) / sum(exp(x)) along attrs["axis"] (with "flatten": over all axes from it on), shifted
    by the maximum for stability."""
    x = inputs[0].astype(np.float64)
    axis = attrs["axis"]
    if attrs.get("flatten"):
        axis = tuple(range(axis, x.ndim))
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return [shifted / shifted.sum(axis=axis, keepdims=True)]


def split(inputs, attrs):
    """Consecutive pieces of attrs["sizes"] along attrs["axis"]."""
    x = inputs[0].astype(np.float64)
    axis = attrs["axis"]
    pieces = []
    start = 0
    for size in attrs["sizes"]:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(x[tuple(index)].copy())
        start += size
    return pieces


def concatenation(inputs, attrs):
    """The inputs joined along attrs["axis"]."""
    return [np.concatenate([x.astype(np.float64) for x in inputs], axis=attrs["axis"])]


def crop(inputs, attrs):
    """out[b, i1, ...] = x[b, i1 + offsets[1], ...], of non-batch shape attrs["dims"]."""
    x = inputs[0].astype(np.float64)
    offsets = attrs["offsets"]
    dims = attrs["dims"]
    out = np.empty((x.shape[0],) + tuple(dims))
    for index in np.ndindex(*out.shape):
        out[index] = x[tuple(i + offset for i, offset in zip(index, offsets))]
    return [out]


_STRUCTURAL = {
    "FullyConnected": fully_connected,
    "SoftMax": softmax,
    "Split": split,
    "Concatenation": concatenation,
    "Crop": crop,
}


# ----------------------------------------------------------------------------------------------
# Copy


def copy(inputs, attrs):
    return [np.array(inputs[0], dtype=np.float64)]


REFERENCES = {**_SPATIAL, **_ELEMENTWISE, **_STRUCTURAL, "Copy": copy}
