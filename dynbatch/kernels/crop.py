"""Crop: y[b, c, h, w] = x[b, c + offsets[1], h + offsets[2], w + offsets[3]], rows b < n.

Input and output of rank 2 to 4 are read as (N, C, H, W) with trailing axes of size 1 and the
offsets padded with zeros to four; the output's shape (already inferred) sets the window size.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import as_4d


@njit(**PARALLEL_KERNEL)
def crop_cpu(n, source, offsets, destination):
    """source: (max_batch, C, H, W); offsets: (0, oc, oh, ow); destination: (max_batch, C', H', W')
    with C' + oc <= C etc. Rows < n only."""
    _, channels, height, width = destination.shape
    channel_offset = offsets[1]
    height_offset = offsets[2]
    width_offset = offsets[3]
    # One iteration per output line (row, channel, h), each a contiguous run of the input line.
    for index in prange(n * channels * height):
        line = index // height
        h = index - line * height
        row = line // channels
        channel = line - row * channels
        # Unsigned indices: no negative-index wraparound test, so the copy vectorises.
        row, channel, h = np.uintp(row), np.uintp(channel), np.uintp(h)
        source_channel, source_h = channel + np.uintp(channel_offset), h + np.uintp(height_offset)
        for w in range(np.uintp(width)):
            destination[row, channel, h, w] = source[row, source_channel, source_h, w + np.uintp(width_offset)]


def cpu_step(attrs, inputs, outputs):
    offsets = tuple(int(offset) for offset in attrs["offsets"])
    offsets = offsets + (0,) * (4 - len(offsets))
    return crop_cpu, (as_4d(inputs[0]), offsets, as_4d(outputs[0]))


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def crop_cuda(n, source, offsets, destination):
    """source: (max_batch, C, H, W); offsets: (0, oc, oh, ow); destination: (max_batch, C', H', W').
    Rows < n only; one output element per thread, w fastest (consecutive reads and writes)."""
    channels, height, width = destination.shape[1], destination.shape[2], destination.shape[3]
    for i in range(cuda.grid(1), n * channels * height * width, cuda.gridsize(1)):
        w = i % width
        h = (i // width) % height
        c = (i // (width * height)) % channels
        b = i // (width * height * channels)
        destination[b, c, h, w] = source[b, c + offsets[1], h + offsets[2], w + offsets[3]]


def gpu_step(attrs, inputs, outputs):
    offsets = tuple(int(offset) for offset in attrs["offsets"])
    offsets = offsets + (0,) * (4 - len(offsets))
    destination = as_4d(outputs[0])
    per_sample = destination.shape[1] * destination.shape[2] * destination.shape[3]
    return elementwise_launch(crop_cuda, per_sample), (as_4d(inputs[0]), offsets, destination)
