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
        # Accumulate the whole output line one window cell (row ih, column j) at a time, over the
        # ow whose input column lies inside the image: no test in the innermost loop, which
        # vectorizes for stride 1.
        for ow in range(out_width):
            out_row[ow] = -np.inf if method == METHOD_MAX else 0.0
        for ih in range(row_begin, row_end):
            x_row = x_plane[ih]
            for j in range(kernel_w):
                shift = j - pad_left
                ow_begin = min(out_width, max(0, -(shift // stride_w)))  # ceil(-shift / sw)
                ow_end = max(ow_begin, min(out_width, (width - 1 - shift) // stride_w + 1))
                if method == METHOD_MAX:
                    for ow in range(ow_begin, ow_end):
                        out_row[np.uintp(ow)] = max_propagating_nan(out_row[np.uintp(ow)],
                                                                    x_row[np.uintp(ow * stride_w + shift)])
                else:
                    for ow in range(ow_begin, ow_end):
                        out_row[np.uintp(ow)] += x_row[np.uintp(ow * stride_w + shift)]
        if method == METHOD_AVG:
            if exclude_pad:
                window_rows = row_end - row_begin
            else:
                window_rows = min(top + kernel_h, height + pad_bottom) - top
            for ow in range(out_width):
                left = ow * stride_w - pad_left
                if exclude_pad:
                    window_cols = min(left + kernel_w, width) - max(left, 0)
                else:
                    window_cols = min(left + kernel_w, width + pad_right) - left
                out_row[ow] /= window_rows * window_cols


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


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def pooling_cuda(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, OW); as ``pooling_cpu``. One output
    element per thread, ow fastest: the threads of a warp read neighbouring input columns.
    Reads x rows < n, writes out rows < n."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_height, out_width = out.shape[2], out.shape[3]
    for i in range(cuda.grid(1), n * channels * out_height * out_width, cuda.gridsize(1)):
        ow = i % out_width
        oh = (i // out_width) % out_height
        c = (i // (out_width * out_height)) % channels
        b = i // (out_width * out_height * channels)
        top = oh * stride_h - pad_top
        left = ow * stride_w - pad_left
        row_begin, row_end = max(top, 0), min(top + kernel_h, height)
        col_begin, col_end = max(left, 0), min(left + kernel_w, width)
        if method == METHOD_MAX:
            largest = np.float32(-math.inf)
            for ih in range(row_begin, row_end):
                for iw in range(col_begin, col_end):
                    largest = max_propagating_nan(largest, x[b, c, ih, iw])
            out[b, c, oh, ow] = largest
        else:
            total = np.float32(0.0)
            for ih in range(row_begin, row_end):
                for iw in range(col_begin, col_end):
                    total += x[b, c, ih, iw]
            if exclude_pad:
                count = (row_end - row_begin) * (col_end - col_begin)
            else:
                count = ((min(top + kernel_h, height + pad_bottom) - top)
                         * (min(left + kernel_w, width + pad_right) - left))
            out[b, c, oh, ow] = total / count


def gpu_step(attrs, inputs, outputs):
    kernel_h, kernel_w = attrs["kernel"]
    stride_h, stride_w = attrs["strides"]
    pad_top, pad_left = attrs["pads_begin"]
    pad_bottom, pad_right = attrs["pads_end"]
    out = as_4d(outputs[0])
    args = (
        as_4d(inputs[0]),
        int(kernel_h), int(kernel_w), int(stride_h), int(stride_w),
        int(pad_top), int(pad_left), int(pad_bottom), int(pad_right),
        METHOD_CODES[attrs["pool_method"]], int(bool(attrs["exclude_pad"])),
        out,
    )
    return elementwise_launch(pooling_cuda, out.shape[1] * out.shape[2] * out.shape[3]), args
