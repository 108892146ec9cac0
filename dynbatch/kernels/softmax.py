"""SoftMax over one axis: y = exp(x - max) / sum(exp(x - max)), max and sum taken along the axis.

Input and output (N, ...) of rank 2 to 4 share a shape and are read as (N, outer, length, inner)
around the axis; subtracting the maximum keeps ``exp`` from overflowing.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import around_axis


@njit(**PARALLEL_KERNEL)
def softmax_cpu(n, source, destination):
    """source, destination: (max_batch, outer, length, inner); softmax along ``length`` for
    rows < n."""
    _, outer, length, inner = source.shape
    # One iteration per softmax vector, (row, outer, inner) flattened, so that n = 1 with
    # outer * inner > 1 still keeps every core busy.
    for index in prange(n * outer * inner):
        line = index // inner
        position = index - line * inner
        row = line // outer
        block = line - row * outer
        largest = source[row, block, 0, position]
        for k in range(1, length):
            largest = max(largest, source[row, block, k, position])
        # The exponentials are stored once and rescaled in place, so exp runs once per element.
        total = np.float32(0.0)
        for k in range(length):
            value = np.exp(source[row, block, k, position] - largest)
            destination[row, block, k, position] = value
            total += value
        scale = np.float32(1.0) / total
        for k in range(length):
            destination[row, block, k, position] *= scale


def cpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    source, destination = inputs[0], outputs[0]
    if attrs["flatten"]:  # one softmax over all the axes from `axis` on (ONNX Softmax before opset 13)
        source = source.reshape(source.shape[:axis] + (-1,))
        destination = destination.reshape(destination.shape[:axis] + (-1,))
    return softmax_cpu, (around_axis(source, axis), around_axis(destination, axis))


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from numba import float32  # noqa: E402

from .launch import block_per_row_launch, cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def softmax_cuda(n, source, destination):
    """source, destination: (max_batch, outer, length, inner) with inner > 1; softmax along
    ``length`` for rows < n. One thread per softmax vector, ``inner`` fastest: at each step k the
    threads of a warp read consecutive addresses."""
    outer, length, inner = source.shape[1], source.shape[2], source.shape[3]
    for index in range(cuda.grid(1), n * outer * inner, cuda.gridsize(1)):
        position = index % inner
        block = (index // inner) % outer
        row = index // (inner * outer)
        largest = source[row, block, 0, position]
        for k in range(1, length):
            largest = max(largest, source[row, block, k, position])
        total = np.float32(0.0)
        for k in range(length):
            value = math.exp(source[row, block, k, position] - largest)
            destination[row, block, k, position] = value
            total += value
        scale = np.float32(1.0) / total
        for k in range(length):
            destination[row, block, k, position] *= scale


@cuda_kernel
def softmax_rows_cuda(n, source, destination):
    """source, destination: (max_batch, outer, length, 1); softmax along ``length`` for rows < n.
    One block per softmax vector: its threads stride along the vector (consecutive threads,
    consecutive addresses) and combine their maxima, then their sums, in shared memory."""
    outer, length = source.shape[1], source.shape[2]
    thread, threads = cuda.threadIdx.x, cuda.blockDim.x
    partial = cuda.shared.array(0, float32)  # one value per thread (dynamic shared memory)
    for vector in range(cuda.blockIdx.x, n * outer, cuda.gridDim.x):
        row = vector // outer
        block = vector - row * outer
        largest = np.float32(-math.inf)
        for k in range(thread, length, threads):
            largest = max(largest, source[row, block, k, 0])
        partial[thread] = largest
        cuda.syncthreads()
        active = threads  # tree reduction over any number of threads: fold the upper half down
        while active > 1:
            half = (active + 1) // 2
            if thread + half < active:
                partial[thread] = max(partial[thread], partial[thread + half])
            cuda.syncthreads()
            active = half
        largest = partial[0]
        cuda.syncthreads()  # every thread has read the maximum before partial is reused
        total = np.float32(0.0)
        for k in range(thread, length, threads):
            value = math.exp(source[row, block, k, 0] - largest)
            destination[row, block, k, 0] = value
            total += value
        partial[thread] = total
        cuda.syncthreads()
        active = threads
        while active > 1:
            half = (active + 1) // 2
            if thread + half < active:
                partial[thread] += partial[thread + half]
            cuda.syncthreads()
            active = half
        scale = np.float32(1.0) / partial[0]
        cuda.syncthreads()  # every thread has read the sum before the next vector reuses partial
        for k in range(thread, length, threads):
            destination[row, block, k, 0] *= scale


def gpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    source, destination = inputs[0], outputs[0]
    if attrs["flatten"]:  # one softmax over all the axes from `axis` on
        source = source.reshape(*source.shape[:axis], -1)
        destination = destination.reshape(*destination.shape[:axis], -1)
    source, destination = around_axis(source, axis), around_axis(destination, axis)
    outer, inner = source.shape[1], source.shape[3]
    if inner == 1:  # the softmax axis is the innermost: a block walks each vector
        return block_per_row_launch(softmax_rows_cuda, outer), (source, destination)
    return elementwise_launch(softmax_cuda, outer * inner), (source, destination)
