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
