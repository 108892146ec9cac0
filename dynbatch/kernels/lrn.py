"""Local response normalization: x (N, C, H, W) -> y of the same shape,
y = x / (k + alpha' * S)^beta, where S sums x^2 over a window of ``local_size`` neighbours from
``(local_size-1)//2`` before to ``local_size//2`` after, clipped to the tensor:
- region "across": over channels c' of the same pixel, alpha' = alpha / local_size;
- region "same": over the local_size x local_size pixels (h', w') of the same channel,
  alpha' = alpha / local_size**2.
"""
import math

import numpy as np
from numba import njit, prange

from ..config import CHUNK, PARALLEL_KERNEL, SCALAR_FUNCTION
from .views import as_4d

REGION_ACROSS = 0
REGION_SAME = 1
REGION_CODES = {"across": REGION_ACROSS, "same": REGION_SAME}


@njit(**SCALAR_FUNCTION)
def lrn_normalize(value, square_sum, bias, scaled_alpha, beta):
    """value / (bias + scaled_alpha * square_sum) ** beta."""
    base = bias + scaled_alpha * square_sum
    if beta == 0.75:  # the beta of AlexNet and GoogLeNet: two square roots vectorize, pow does not
        return value / math.sqrt(base * math.sqrt(base))
    return value / base ** beta


@njit(**SCALAR_FUNCTION)
def normalize_span(x_rows, out_rows, row, start, stop, bias, scaled_alpha, beta):
    """out_rows[row, i] = lrn_normalize(x_rows[row, i], out_rows[row, i], ...), the sum of squares
    held in out_rows, for start <= i < stop. beta is tested once, out of the loop, so that the
    loop for 0.75 vectorizes."""
    if beta == 0.75:
        for i in range(start, stop):
            cell = np.uintp(i)
            out_rows[row, cell] = lrn_normalize(x_rows[row, cell], out_rows[row, cell], bias, scaled_alpha,
                                                np.float32(0.75))
    else:
        for i in range(start, stop):
            cell = np.uintp(i)
            out_rows[row, cell] = lrn_normalize(x_rows[row, cell], out_rows[row, cell], bias, scaled_alpha,
                                                beta)


#: Pixels of one output plane that a task of the across-channels LRN takes (in its kernel and in
#: ``chain.convolution_chain_cpu``'s LRN steps): long contiguous loops.
LRN_TASK_PIXELS = CHUNK


@njit(**SCALAR_FUNCTION)
def lrn_spans(plane_size):
    """The tasks of the across-channels LRN a plane of ``plane_size`` pixels makes."""
    return (plane_size + LRN_TASK_PIXELS - 1) // LRN_TASK_PIXELS


@njit(**SCALAR_FUNCTION)
def lrn_across_task(task, x_planes, out_planes, channels, spans, before, after, bias, scaled_alpha, beta):
    """Task ``task`` of the across-channels LRN over x_planes, out_planes (N * C planes, as 2-d
    arrays of rows), ``spans`` tasks a plane (``lrn_spans``): a span of up to LRN_TASK_PIXELS
    pixels of one output plane, summing the same span of its neighbour planes."""
    plane_size = x_planes.shape[1]
    plane = task // spans
    c = plane % channels
    start = (task % spans) * LRN_TASK_PIXELS
    stop = min(start + LRN_TASK_PIXELS, plane_size)
    row = np.uintp(plane)
    first_neighbour = plane - c + max(c - before, 0)
    stop_neighbour = plane - c + min(c + after + 1, channels)
    # The first neighbour assigns, the others add: no pass to zero the output.
    for i in range(start, stop):
        value = x_planes[np.uintp(first_neighbour), np.uintp(i)]
        out_planes[row, np.uintp(i)] = value * value
    for neighbour in range(first_neighbour + 1, stop_neighbour):
        for i in range(start, stop):
            value = x_planes[np.uintp(neighbour), np.uintp(i)]
            out_planes[row, np.uintp(i)] += value * value
    normalize_span(x_planes, out_planes, row, start, stop, bias, scaled_alpha, beta)


@njit(**PARALLEL_KERNEL)
def lrn_cpu(n, x, before, after, bias, scaled_alpha, beta, region, out):
    """x, out: (max_batch, C, H, W) float32, not aliased; the window spans ``before`` neighbours
    before and ``after`` after; bias, scaled_alpha, beta: float32 (float64 would turn the whole
    normalization double, at half the vector width); region: REGION_ACROSS or REGION_SAME. Reads
    x rows < n, writes out rows < n. The output holds the sums of squares until they are turned
    into outputs.

    x and out are indexed in full through 2-d views made once: a view made per iteration would
    count a reference on the buffer, an atomic that the threads contend for. Indices known to be
    >= 0 are unsigned, which spares Numba's negative-index wraparound (a branch that keeps LLVM
    from vectorizing)."""
    max_batch, channels, height, width = x.shape
    if region == REGION_ACROSS:
        # Each parallel iteration owns a span of one output plane (``lrn_across_task``).
        plane_size = height * width
        x_planes = x.reshape((max_batch * channels, plane_size))
        out_planes = out.reshape((max_batch * channels, plane_size))
        spans = lrn_spans(plane_size)
        for task in prange(n * channels * spans):
            lrn_across_task(task, x_planes, out_planes, channels, spans, before, after, bias, scaled_alpha, beta)
    else:
        # Each parallel iteration owns one output line.
        x_rows = x.reshape((max_batch * channels * height, width))
        out_rows = out.reshape((max_batch * channels * height, width))
        for line in prange(n * channels * height):
            h = line % height
            row = np.uintp(line)
            for w in range(width):
                out_rows[row, np.uintp(w)] = 0.0
            for neighbour in range(line + max(-before, -h), line + min(after + 1, height - h)):
                neighbour_row = np.uintp(neighbour)
                for offset in range(-before, after + 1):
                    # Only the w whose neighbour w + offset lies in [0, W): no test inside.
                    for w in range(max(-offset, 0), min(width - offset, width)):
                        value = x_rows[neighbour_row, np.uintp(w + offset)]
                        out_rows[row, np.uintp(w)] += value * value
            normalize_span(x_rows, out_rows, row, 0, width, bias, scaled_alpha, beta)


def lrn_scalars(attrs):
    """(before, after, bias, scaled_alpha, beta) of the kernels: float32 scalars, so that the
    normalization runs in float32 on both devices."""
    local_size = int(attrs["local_size"])
    window_cells = local_size if attrs["region"] == "across" else local_size * local_size
    return ((local_size - 1) // 2, local_size // 2, np.float32(attrs["k"]),
            np.float32(float(attrs["alpha"]) / window_cells), np.float32(attrs["beta"]))


def cpu_step(attrs, inputs, outputs):
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    return lrn_cpu, (x, *lrn_scalars(attrs), REGION_CODES[attrs["region"]], out)


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def lrn_cuda(n, x, before, after, bias, scaled_alpha, beta, region, out):
    """x, out: (max_batch, C, H, W); as ``lrn_cpu``. One element per thread, w fastest: the
    threads of a warp read consecutive addresses of each neighbour channel or row. Reads x rows
    < n, writes out rows < n."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for i in range(cuda.grid(1), n * channels * height * width, cuda.gridsize(1)):
        w = i % width
        h = (i // width) % height
        c = (i // (width * height)) % channels
        b = i // (width * height * channels)
        square_sum = np.float32(0.0)
        if region == REGION_ACROSS:
            for neighbour in range(max(c - before, 0), min(c + after + 1, channels)):
                value = x[b, neighbour, h, w]
                square_sum += value * value
        else:
            for neighbour_h in range(max(h - before, 0), min(h + after + 1, height)):
                for neighbour_w in range(max(w - before, 0), min(w + after + 1, width)):
                    value = x[b, c, neighbour_h, neighbour_w]
                    square_sum += value * value
        out[b, c, h, w] = lrn_normalize(x[b, c, h, w], square_sum, bias, scaled_alpha, beta)


def gpu_step(attrs, inputs, outputs):
    x = as_4d(inputs[0])
    args = (x, *lrn_scalars(attrs), REGION_CODES[attrs["region"]], as_4d(outputs[0]))
    return elementwise_launch(lrn_cuda, x.shape[1] * x.shape[2] * x.shape[3]), args
