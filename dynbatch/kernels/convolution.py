"""Convolution (grouped, strided, dilated, zero-padded): x (N, C, H, W) -> y (N, K, OH, OW),

    y[b, k, oh, ow] = biases[k] + sum_{c, i, j} x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
                                                * weights[k, c, i, j]

with weights (K, C/group, kh, kw), g = k // (K/group) the group of output channel k, and input
positions outside the image reading as zero. ``group == C`` is a depthwise convolution.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
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


def cpu_step(attrs, inputs, outputs):
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    return convolution_cpu, (
        as_4d(inputs[0]), weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), int(attrs["group"]),
        as_4d(outputs[0]),
    )
