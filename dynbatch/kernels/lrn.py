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

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
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


@njit(**PARALLEL_KERNEL)
def lrn_cpu(n, x, before, after, bias, scaled_alpha, beta, region, out):
    """x, out: (max_batch, C, H, W); the window spans ``before`` neighbours before and ``after``
    after; region: REGION_ACROSS or REGION_SAME. Reads x rows < n, writes out rows < n; each
    parallel iteration owns one output line."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for line in prange(n * channels * height):
        b = line // (channels * height)
        c = (line // height) % channels
        h = line % height
        # The output line holds the sums of squares until they are turned into outputs.
        square_sums = out[b, c, h]
        for w in range(width):
            square_sums[w] = 0.0
        if region == REGION_ACROSS:
            for neighbour in range(max(c - before, 0), min(c + after + 1, channels)):
                x_row = x[b, neighbour, h]
                for w in range(width):
                    square_sums[w] += x_row[w] * x_row[w]
        else:
            for neighbour in range(max(h - before, 0), min(h + after + 1, height)):
                x_row = x[b, c, neighbour]
                for offset in range(-before, after + 1):
                    # Only the w whose neighbour w + offset lies in [0, W): no test inside.
                    for w in range(max(-offset, 0), min(width - offset, width)):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        neighbour_value = x_row[np.uintp(w + offset)]
                        square_sums[np.uintp(w)] += neighbour_value * neighbour_value
        x_row = x[b, c, h]
        for w in range(width):
            square_sums[w] = lrn_normalize(x_row[w], square_sums[w], bias, scaled_alpha, beta)


def cpu_step(attrs, inputs, outputs):
    local_size = int(attrs["local_size"])
    window_cells = local_size if attrs["region"] == "across" else local_size * local_size
    return lrn_cpu, (
        as_4d(inputs[0]),
        (local_size - 1) // 2, local_size // 2,
        float(attrs["k"]), float(attrs["alpha"]) / window_cells, float(attrs["beta"]),
        REGION_CODES[attrs["region"]],
        as_4d(outputs[0]),
    )


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
    local_size = int(attrs["local_size"])
    window_cells = local_size if attrs["region"] == "across" else local_size * local_size
    x = as_4d(inputs[0])
    args = (
        x,
        (local_size - 1) // 2, local_size // 2,
        float(attrs["k"]), float(attrs["alpha"]) / window_cells, float(attrs["beta"]),
        REGION_CODES[attrs["region"]],
        as_4d(outputs[0]),
    )
    return elementwise_launch(lrn_cuda, x.shape[1] * x.shape[2] * x.shape[3]), args
