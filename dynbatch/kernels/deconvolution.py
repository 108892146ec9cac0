"""Deconvolution (transposed convolution, ONNX ConvTranspose): x (N, C, H, W) -> y (N, K, OH, OW),
OH = (H-1)*sh - ph0 - ph1 + dh*(kh-1) + oph + 1 (likewise OW). Each input pixel spreads into the
output: x[b, c, ih, iw] * weights[c, k, i, j] adds into y[b, g*K/group + k, ih*sh - ph0 + i*dh,
iw*sw - pw0 + j*dw], for c in group g; weights are (C, K/group, kh, kw), plus biases[k].

The kernel computes that sum as a gather: each output line collects, for every kernel row i, the
single input row ih with ih*sh = oh + ph0 - i*dh (if any), so no two iterations write one element.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import as_4d


@njit(**PARALLEL_KERNEL)
def deconvolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                      pad_top, pad_left, group, out):
    """x: (max_batch, C, H, W); weights: (C, K/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the end pads and output padding.
    Reads x rows < n, writes out rows < n; each parallel iteration owns one output line."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_out_channels, kernel_h, kernel_w = weights.shape[1], weights.shape[2], weights.shape[3]
    group_in_channels = channels // group
    for line in prange(n * out_channels * out_height):
        # Output channels vary fastest, so consecutive lines reuse the same input rows from cache.
        b = line // (out_height * out_channels)
        oh = (line // out_channels) % out_height
        out_channel = line % out_channels
        out_row = out[b, out_channel, oh]
        bias = biases[out_channel]
        for ow in range(out_width):
            out_row[ow] = bias
        k = out_channel % group_out_channels
        first_in_channel = (out_channel // group_out_channels) * group_in_channels
        for i in range(kernel_h):
            # Only the input row with ih*sh == oh + ph0 - i*dh reaches this output line.
            scaled_ih = oh + pad_top - i * dilation_h
            if scaled_ih < 0 or scaled_ih % stride_h != 0 or scaled_ih // stride_h >= height:
                continue
            ih = scaled_ih // stride_h
            for j in range(kernel_w):
                # Input column iw lands on output column ow = iw*sw + shift; keep the iw whose ow
                # lies in [0, OW), so the innermost loop has no bounds test.
                shift = j * dilation_w - pad_left
                iw_begin = max(0, -(shift // stride_w))  # ceil(-shift / sw)
                iw_end = min(width, (out_width - 1 - shift) // stride_w + 1)
                for c in range(first_in_channel, first_in_channel + group_in_channels):
                    x_row = x[b, c, ih]
                    weight = weights[c, k, i, j]
                    for iw in range(iw_begin, iw_end):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        out_row[np.uintp(iw * stride_w + shift)] += weight * x_row[np.uintp(iw)]


def cpu_step(attrs, inputs, outputs):
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    return deconvolution_cpu, (
        as_4d(inputs[0]), weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), int(attrs["group"]),
        as_4d(outputs[0]),
    )
