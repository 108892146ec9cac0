"""Slow, obviously correct references for the spatial layers (Convolution, Deconvolution, Pooling,
LRN), written from each layer's definition in float64. Uniform contract:
``reference(inputs, attrs) -> outputs``, where ``inputs`` hold only the n real rows and ``attrs``
is the normalized attribute dict."""
import numpy as np


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


REFERENCES = {
    "Convolution": convolution,
    "Deconvolution": deconvolution,
    "Pooling": pooling,
    "LRN": lrn,
}
