"""Pooling (max or average): x (N, C, H, W) -> y (N, C, OH, OW). The window of output (oh, ow)
covers rows [oh*sh - ph0, oh*sh - ph0 + kh) and columns [ow*sw - pw0, ow*sw - pw0 + kw); only
its data cells (inside [0, H) x [0, W)) are pooled, so padding never wins a max. An average
divides the sum by the number of data cells (``exclude_pad``) or by the window clipped to the
padded extent [-ph0, H + ph1) x [-pw0, W + pw1) (Caffe / ONNX ``count_include_pad``). The output
size (floor or ceil rounding, global pooling) is already resolved in ``out.shape``.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from .views import as_4d

METHOD_MAX = 0
METHOD_AVG = 1
METHOD_CODES = {"max": METHOD_MAX, "avg": METHOD_AVG}


@njit(**SCALAR_FUNCTION)
def max_propagating_nan(a, b):
    """max(a, b) that returns NaN when either is NaN, as np.max does."""
    return a if (a >= b or a != a) else b


@njit(**PARALLEL_KERNEL)
def pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, OW); method: METHOD_MAX or METHOD_AVG;
    exclude_pad: 0 or 1 (avg only). Reads x rows < n, writes out rows < n; each parallel iteration
    owns one output line. Every window holds at least one data cell (the graph guarantees it).
    Indices known to be >= 0 are made unsigned, which spares Numba's negative-index wraparound
    (a branch that keeps LLVM from vectorizing)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_height, out_width = out.shape[2], out.shape[3]
    for line in prange(n * channels * out_height):
        b = line // (channels * out_height)
        c = (line // out_height) % channels
        oh = line % out_height
        x_plane = x[b, c]
        out_row = out[b, c, oh]
        top = oh * stride_h - pad_top
        row_begin = max(top, 0)
        row_end = min(top + kernel_h, height)
        if method == METHOD_MAX:
            for ow in range(out_width):
                left = ow * stride_w - pad_left
                col_begin = max(left, 0)
                col_end = min(left + kernel_w, width)
                largest = -float("inf")
                for ih in range(row_begin, row_end):
                    x_row = x_plane[ih]
                    for iw in range(col_begin, col_end):
                        largest = max_propagating_nan(largest, x_row[np.uintp(iw)])
                out_row[ow] = largest
        else:
            if exclude_pad:
                window_rows = row_end - row_begin
            else:
                window_rows = min(top + kernel_h, height + pad_bottom) - top
            for ow in range(out_width):
                left = ow * stride_w - pad_left
                col_begin = max(left, 0)
                col_end = min(left + kernel_w, width)
                total = 0.0
                for ih in range(row_begin, row_end):
                    x_row = x_plane[ih]
                    for iw in range(col_begin, col_end):
                        total += x_row[np.uintp(iw)]
                if exclude_pad:
                    window_cols = col_end - col_begin
                else:
                    window_cols = min(left + kernel_w, width + pad_right) - left
                out_row[ow] = total / (window_rows * window_cols)


def cpu_step(attrs, inputs, outputs):
    kernel_h, kernel_w = attrs["kernel"]
    stride_h, stride_w = attrs["strides"]
    pad_top, pad_left = attrs["pads_begin"]
    pad_bottom, pad_right = attrs["pads_end"]
    return pooling_cpu, (
        as_4d(inputs[0]),
        int(kernel_h), int(kernel_w), int(stride_h), int(stride_w),
        int(pad_top), int(pad_left), int(pad_bottom), int(pad_right),
        METHOD_CODES[attrs["pool_method"]], int(bool(attrs["exclude_pad"])),
        as_4d(outputs[0]),
    )
