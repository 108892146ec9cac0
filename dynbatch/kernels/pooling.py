"""Pooling (max or average): x (N, C, H, W) -> y (N, C, OH, OW). The window of output (oh, ow)
covers rows [oh*sh - ph0, oh*sh - ph0 + kh) and columns [ow*sw - pw0, ow*sw - pw0 + kw); only
its data cells (inside [0, H) x [0, W)) are pooled, so padding never wins a max. An average
divides the sum by the number of data cells (``exclude_pad``) or by the window clipped to the
padded extent [-ph0, H + ph1) x [-pw0, W + pw1) (Caffe / ONNX ``count_include_pad``). The output
size (floor or ceil rounding, global pooling) is already resolved in ``out.shape``.

Three CPU kernels, chosen by ``cpu_step`` from the shapes: ``global_pooling_cpu`` where each
window spans whole input rows (global pooling), else ``max_pooling_cpu`` or ``avg_pooling_cpu``.
Each compiles only its own loops, so a network compiles only those it uses.
"""
import numpy as np
from numba import njit, prange

from ..config import CHUNK, PARALLEL_KERNEL, SCALAR_FUNCTION
from .views import as_4d

METHOD_MAX = 0
METHOD_AVG = 1
METHOD_CODES = {"max": METHOD_MAX, "avg": METHOD_AVG}


@njit(**SCALAR_FUNCTION)
def pooled_pair(a, b, method):
    """a and b pooled: their sum, or their max, which is NaN when either is (as np.max)."""
    if method == METHOD_AVG:
        return a + b
    return a if (a >= b or a != a) else b


@njit(**SCALAR_FUNCTION)
def window_cells(start, kernel, size, pad_end, exclude_pad):
    """Along one axis, the cells of the window [start, start + kernel) that an average divides by:
    the data cells in [0, size), or with padding counted, those in [start, size + pad_end)."""
    if exclude_pad:
        return min(start + kernel, size) - max(start, 0)
    return min(start + kernel, size + pad_end) - start


@njit(**PARALLEL_KERNEL)
def global_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                       pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, 1), where each window spans whole input
    rows (kw - pw0 >= W: global pooling, for one); method: METHOD_MAX or METHOD_AVG; exclude_pad:
    0 or 1 (avg only). Reads x rows < n, writes out rows < n; each parallel iteration owns one
    output. The data cells of a window are one contiguous run of its plane, pooled in a single
    loop: a sum vectorizes, an exact max with NaN does not.

    x and out are indexed in full through 2-d views made once: a view made per iteration would
    count a reference on the buffer, an atomic that the threads contend for. Indices known to be
    >= 0 are unsigned, which spares Numba's negative-index wraparound (a branch that keeps LLVM
    from vectorizing)."""
    max_batch, channels, height, width = x.shape
    out_height = out.shape[2]
    planes = x.reshape((max_batch * channels, height * width))
    outputs = out.reshape(-1)
    columns = window_cells(-pad_left, kernel_w, width, pad_right, exclude_pad)
    for i in prange(n * channels * out_height):
        plane = np.uintp(i // out_height)
        top = (i % out_height) * stride_h - pad_top
        start = max(top, 0) * width
        stop = min(top + kernel_h, height) * width
        pooled = planes[plane, np.uintp(start)]
        if method == METHOD_MAX:
            for cell in range(start + 1, stop):
                pooled = pooled_pair(pooled, planes[plane, np.uintp(cell)], METHOD_MAX)
        else:
            for cell in range(start + 1, stop):
                pooled = pooled_pair(pooled, planes[plane, np.uintp(cell)], METHOD_AVG)
            pooled /= np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad) * columns)
        outputs[i] = pooled


@njit(**SCALAR_FUNCTION)
def pool_rows(x_rows, first_row, rows, scratch, begin, count, method):
    """scratch[0, begin + w] = x_rows[first_row + i, w] pooled over i < rows, for w < count, in
    contiguous passes, which vectorize. Up to 3 rows (the common windows) take a single pass,
    which loads each input once and stores once: 0.77x-0.85x the time of a pass per row on 3x3
    windows. Taller windows take a pass per row, alternating between scratch rows 1 and 0, the
    last writing row 0: LLVM turns an in-place max into masked stores, which are slow."""
    second, third = first_row + np.uintp(1), first_row + np.uintp(2)
    if rows == 1:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = x_rows[first_row, np.uintp(w)]
        return
    if rows == 2:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = pooled_pair(
                x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method)
        return
    if rows == 3:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = pooled_pair(pooled_pair(
                x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method),
                x_rows[third, np.uintp(w)], method)
        return
    target = np.uintp(rows % 2)
    for w in range(count):
        scratch[target, begin + np.uintp(w)] = pooled_pair(
            x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method)
    for i in range(2, rows):
        source, target = target, np.uintp((rows - 1 - i) % 2)
        x_row = first_row + np.uintp(i)
        for w in range(count):
            scratch[target, begin + np.uintp(w)] = pooled_pair(
                scratch[source, begin + np.uintp(w)], x_rows[x_row, np.uintp(w)], method)


@njit(**SCALAR_FUNCTION)
def pool_columns(scratch, out_rows, line, count, kernel, stride, method):
    """out_rows[line, ow] = scratch[0, ow * stride + j] pooled over j < kernel, for ow < count.
    Called with a literal kernel and stride where it can be: the loop over j then unrolls and the
    loop over ow vectorizes (with interleaved loads); otherwise it runs scalar."""
    step = np.uintp(stride)
    for ow in range(np.uintp(count)):
        start = ow * step
        pooled = scratch[0, start]
        for j in range(np.uintp(1), np.uintp(kernel)):
            pooled = pooled_pair(pooled, scratch[0, start + j], method)
        out_rows[line, ow] = pooled


@njit(**SCALAR_FUNCTION)
def pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, method, exclude_pad, out):
    """The body of max_pooling_cpu and avg_pooling_cpu, inlined into each with a literal
    ``method`` (its prange becomes the kernel's parallel loop, and Numba prunes the branches of
    the other method, which halves the compile time of each kernel).

    Separable: the rows of a window are pooled into one row, whose columns then pool each output.
    That row is padded (-inf, which loses every max, or 0 for a sum), so every window reads kw
    cells of it and no loop tests a bound. A parallel iteration pools several output lines of one
    plane, enough to pay for its scratch: rows 0 and 1 for the rows pooled, row 2 (an average's
    only) for the number of columns of each window that it divides by. x and out are indexed in
    full through 2-d views, as in global_pooling_cpu."""
    max_batch, channels, height, width = x.shape
    out_height, out_width = out.shape[2], out.shape[3]
    x_rows = x.reshape((max_batch * channels * height, width))
    out_rows = out.reshape((max_batch * channels * out_height, out_width))
    padded_width = (out_width - 1) * stride_w + kernel_w  # >= out_width
    data_width = min(width, padded_width - pad_left)
    lines_per_task = max(1, min(out_height, CHUNK // (kernel_h * width + kernel_w * out_width)))
    tasks_per_plane = (out_height + lines_per_task - 1) // lines_per_task
    lines_per_task = (out_height + tasks_per_plane - 1) // tasks_per_plane
    for task in prange(n * channels * tasks_per_plane):
        plane = task // tasks_per_plane
        first_line = (task % tasks_per_plane) * lines_per_task
        scratch = np.empty((3, padded_width), dtype=np.float32)
        padding = -np.inf if method == METHOD_MAX else 0.0
        for i in range(pad_left):
            scratch[0, i] = padding
        for i in range(pad_left + data_width, padded_width):
            scratch[0, i] = padding
        if method == METHOD_AVG:
            for ow in range(out_width):
                left = ow * stride_w - pad_left
                scratch[2, ow] = window_cells(left, kernel_w, width, pad_right, exclude_pad)
        for oh in range(first_line, min(first_line + lines_per_task, out_height)):
            top = oh * stride_h - pad_top
            row_begin = max(top, 0)
            rows = min(top + kernel_h, height) - row_begin
            first_row = np.uintp(plane * height + row_begin)
            pool_rows(x_rows, first_row, rows, scratch, np.uintp(pad_left), data_width, method)
            line = np.uintp(plane * out_height + oh)
            # The common window widths and strides, as literals.
            if kernel_w == 3 and stride_w == 2:
                pool_columns(scratch, out_rows, line, out_width, 3, 2, method)
            elif kernel_w == 2 and stride_w == 2:
                pool_columns(scratch, out_rows, line, out_width, 2, 2, method)
            elif kernel_w == 3 and stride_w == 1:
                pool_columns(scratch, out_rows, line, out_width, 3, 1, method)
            else:
                pool_columns(scratch, out_rows, line, out_width, kernel_w, stride_w, method)
            if method == METHOD_AVG:
                divisor_rows = np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad))
                for ow in range(np.uintp(out_width)):
                    out_rows[line, ow] /= divisor_rows * scratch[2, ow]


@njit(**PARALLEL_KERNEL)
def max_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                    pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W) float32; out: (max_batch, C, OH, OW) float32; method is
    METHOD_MAX (taken for a uniform signature) and exclude_pad unused. Reads x rows < n, writes
    out rows < n; each parallel iteration owns whole output lines. Every window holds at least
    one data cell (the graph guarantees it)."""
    pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, METHOD_MAX, exclude_pad, out)


@njit(**PARALLEL_KERNEL)
def avg_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                    pad_right, method, exclude_pad, out):
    """As max_pooling_cpu, for METHOD_AVG; exclude_pad: 0 or 1."""
    pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, METHOD_AVG, exclude_pad, out)


def choose_cpu_kernel(attrs, x_shape, out_shape):
    """The CPU kernel for these attributes and 4-d shapes (see the module docstring)."""
    kernel_w, pad_left = attrs["kernel"][1], attrs["pads_begin"][1]
    if out_shape[3] == 1 and kernel_w - pad_left >= x_shape[3]:
        return global_pooling_cpu
    return max_pooling_cpu if attrs["pool_method"] == "max" else avg_pooling_cpu


def cpu_step(attrs, inputs, outputs):
    kernel_h, kernel_w = attrs["kernel"]
    stride_h, stride_w = attrs["strides"]
    pad_top, pad_left = attrs["pads_begin"]
    pad_bottom, pad_right = attrs["pads_end"]
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    return choose_cpu_kernel(attrs, x.shape, out.shape), (
        x,
        int(kernel_h), int(kernel_w), int(stride_h), int(stride_w),
        int(pad_top), int(pad_left), int(pad_bottom), int(pad_right),
        METHOD_CODES[attrs["pool_method"]], int(bool(attrs["exclude_pad"])),
        out,
    )


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def pooling_cuda(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, OW); as the CPU kernels. One output
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
        pooled = np.float32(-math.inf) if method == METHOD_MAX else np.float32(0.0)
        for ih in range(max(top, 0), min(top + kernel_h, height)):
            for iw in range(max(left, 0), min(left + kernel_w, width)):
                pooled = pooled_pair(pooled, x[b, c, ih, iw], method)
        if method == METHOD_AVG:
            pooled /= np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad)
                                 * window_cells(left, kernel_w, width, pad_right, exclude_pad))
        out[b, c, oh, ow] = pooled


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
