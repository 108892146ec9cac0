"""Convolution (grouped, strided, dilated, zero-padded): x (N, C, H, W) -> y (N, K, OH, OW),

    y[b, k, oh, ow] = biases[k] + sum_{c, i, j} x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
                                                * weights[k, c, i, j]

with weights (K, C/group, kh, kw), g = k // (K/group) the group of output channel k, and input
positions outside the image reading as zero. ``group == C`` is a depthwise convolution.
"""
import numpy as np
from numba import njit, prange

from ..config import DRIVER_KERNEL, PARALLEL_KERNEL
from .views import as_4d


@njit(**PARALLEL_KERNEL)
def convolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                    pad_top, pad_left, group, out):
    """x: (max_batch, C, H, W); weights: (K, C/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the bottom and right pads.
    Reads x rows < n, writes out rows < n; each parallel iteration owns one output line."""
    height, width = x.shape[2], x.shape[3]
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_in_channels, kernel_h, kernel_w = weights.shape[1], weights.shape[2], weights.shape[3]
    group_out_channels = out_channels // group
    for line in prange(n * out_channels * out_height):
        # Output channels vary fastest, so consecutive lines reuse the same input rows from cache.
        b = line // (out_height * out_channels)
        oh = (line // out_channels) % out_height
        k = line % out_channels
        out_row = out[b, k, oh]
        bias = biases[k]
        for ow in range(out_width):
            out_row[ow] = bias
        first_in_channel = (k // group_out_channels) * group_in_channels
        # Kernel rows i whose input row ih = oh*sh - ph0 + i*dh lies in [0, H); the others fall
        # on zero padding.
        top = oh * stride_h - pad_top
        i_begin = max(0, -(top // dilation_h))  # ceil(-top / dh)
        i_end = min(kernel_h, (height - 1 - top) // dilation_h + 1)
        for j in range(kernel_w):
            # Input column iw = ow*sw + shift; keep only the ow whose iw lies in [0, W), so the
            # innermost loop has no bounds test and vectorizes for stride 1. Hoisted above the
            # channel loop: the integer divisions would cost more than a short row.
            shift = j * dilation_w - pad_left
            ow_begin = max(0, -(shift // stride_w))  # ceil(-shift / sw)
            ow_end = min(out_width, (width - 1 - shift) // stride_w + 1)
            for c in range(group_in_channels):
                x_plane = x[b, first_in_channel + c]
                for i in range(i_begin, i_end):
                    x_row = x_plane[top + i * dilation_h]
                    weight = weights[k, c, i, j]
                    for ow in range(ow_begin, ow_end):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        out_row[np.uintp(ow)] += weight * x_row[np.uintp(ow * stride_w + shift)]


@njit(**PARALLEL_KERNEL)
def unfold_sample(x_sample, first_channel, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left,
                  kernel_h, kernel_w, out_width, columns):
    """im2col of one sample and one group: x_sample (C, H, W) -> columns (C/group*kh*kw, OH*OW),
    columns[(c*kh + i)*kw + j, oh*OW + ow] = x_sample[first_channel + c, oh*sh - ph0 + i*dh,
    ow*sw - pw0 + j*dw], zero where that falls on padding. Parallel over (row, oh)."""
    height, width = x_sample.shape[1], x_sample.shape[2]
    rows = columns.shape[0]
    out_height = columns.shape[1] // out_width
    for task in prange(rows * out_height):
        row, oh = task // out_height, task % out_height
        c, i, j = row // (kernel_h * kernel_w), (row // kernel_w) % kernel_h, row % kernel_w
        line = columns[row, oh * out_width:(oh + 1) * out_width]
        ih = oh * stride_h - pad_top + i * dilation_h
        if ih < 0 or ih >= height:
            line[:] = 0.0
            continue
        source = x_sample[first_channel + c, ih]
        shift = j * dilation_w - pad_left
        ow_begin = min(out_width, max(0, -(shift // stride_w)))
        ow_end = max(ow_begin, min(out_width, (width - 1 - shift) // stride_w + 1))
        line[:ow_begin] = 0.0
        for ow in range(ow_begin, ow_end):
            line[np.uintp(ow)] = source[np.uintp(ow * stride_w + shift)]
        line[ow_end:] = 0.0


@njit(**PARALLEL_KERNEL)
def add_channel_bias(out_sample, biases):
    """out_sample (K, OH*OW) += biases[k] per row k."""
    for k in prange(out_sample.shape[0]):
        out_sample[k] += biases[k]


@njit(**DRIVER_KERNEL)
def convolution_gemm_cpu(n, x, grouped_weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                         pad_top, pad_left, kernel_h, kernel_w, out_width, columns, out):
    """x: (max_batch, C, H, W); grouped_weights: (group, K/group, C/group*kh*kw); biases (K,);
    columns: (C/group*kh*kw, OH*OW) scratch; out: (max_batch, group, K/group, OH*OW).
    Per sample and group: unfold into columns (parallel), then one GEMM through BLAS, which uses
    every core itself, so n = 1 keeps them busy. Rows >= n are neither read nor written."""
    group = grouped_weights.shape[0]
    group_in_channels = x.shape[1] // group
    for b in range(n):
        for g in range(group):
            unfold_sample(x[b], g * group_in_channels, stride_h, stride_w, dilation_h, dilation_w,
                          pad_top, pad_left, kernel_h, kernel_w, out_width, columns)
            np.dot(grouped_weights[g], columns, out[b, g])
        add_channel_bias(out[b].reshape(biases.shape[0], -1), biases)


@njit(**DRIVER_KERNEL)
def convolution_pointwise_cpu(n, x, weights, biases, out):
    """1x1 convolution, stride 1, no padding, one group: a plain GEMM per sample, no unfolding.
    x: (max_batch, C, H*W); weights (K, C); out: (max_batch, K, H*W)."""
    for b in range(n):
        np.dot(weights, x[b], out[b])
        add_channel_bias(out[b], biases)


# Below these sizes a GEMM call costs more than it saves (measured on depthwise and tiny groups).
GEMM_MIN_REDUCTION = 16
GEMM_MIN_GROUP_OUTPUTS = 8


def choose_algorithm(attrs, input_shape) -> str:
    """'pointwise' for 1x1/stride 1/unpadded/one group, 'gemm' where each group's matrices are big
    enough for BLAS, else 'direct' (depthwise and small groups)."""
    k, c_per_group, kh, kw = attrs["weights"].shape
    group = attrs["group"]
    if (kh, kw) == (1, 1) and group == 1 and attrs["strides"] == (1, 1) and not any(attrs["pads_begin"] + attrs["pads_end"]):
        return "pointwise"
    if c_per_group * kh * kw >= GEMM_MIN_REDUCTION and k // group >= GEMM_MIN_GROUP_OUTPUTS:
        return "gemm"
    return "direct"


def cpu_step(attrs, inputs, outputs, algorithm=None):
    """Bind to the algorithm ``choose_algorithm`` picks (tests may force one)."""
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    algorithm = algorithm or choose_algorithm(attrs, x.shape)
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    k, c_per_group, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    max_batch, _, out_height, out_width = out.shape
    if algorithm == "pointwise":
        return convolution_pointwise_cpu, (
            x.reshape(max_batch, x.shape[1], -1), np.ascontiguousarray(weights.reshape(k, -1)), biases,
            out.reshape(max_batch, k, -1),
        )
    if algorithm == "gemm":
        # The request's own scratch, allocated once here (bind time), never on the inference path.
        columns = np.empty((c_per_group * kernel_h * kernel_w, out_height * out_width), np.float32)
        return convolution_gemm_cpu, (
            x, np.ascontiguousarray(weights.reshape(group, k // group, -1)), biases,
            int(stride_h), int(stride_w), int(dilation_h), int(dilation_w), int(pad_top), int(pad_left),
            int(kernel_h), int(kernel_w), int(out_width), columns,
            out.reshape(max_batch, group, k // group, out_height * out_width),
        )
    return convolution_cpu, (
        x, weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), group,
        out,
    )
