"""FullyConnected: y[b, o] = biases[o] + sum_i x_flat[b, i] * weights[o, i], for rows b < n.

The input (N, ...) is read as rows (N, in_features), in_features being the product of its
non-batch dims; weights are (out, in_features), biases (out,), the output (N, out).
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import as_rows


@njit(**PARALLEL_KERNEL)
def fully_connected_cpu(n, source, weights, biases, destination):
    """source: (max_batch, in_features); weights: (out, in_features); biases: (out,);
    destination: (max_batch, out). Writes rows < n only."""
    out_features, in_features = weights.shape
    # One iteration per output element, so that n = 1 still spreads the out_features dot
    # products over every core.
    for index in prange(n * out_features):
        row = index // out_features
        feature = index - row * out_features
        # A float32 accumulator over two contiguous rows: with ``reassoc`` LLVM splits the sum
        # into SIMD lanes.
        total = np.float32(0.0)
        for i in range(in_features):
            total += source[row, i] * weights[feature, i]
        destination[row, feature] = biases[feature] + total


def cpu_step(attrs, inputs, outputs):
    weights = np.ascontiguousarray(attrs["weights"], dtype=np.float32)
    biases = np.ascontiguousarray(attrs["biases"], dtype=np.float32)
    return fully_connected_cpu, (as_rows(inputs[0]), weights, biases, as_rows(outputs[0]))
