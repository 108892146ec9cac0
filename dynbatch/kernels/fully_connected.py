"""FullyConnected: y[b, o] = biases[o] + sum_i x_flat[b, i] * weights[o, i], for rows b < n.

The input (N, ...) is read as rows (N, in_features), in_features being the product of its
non-batch dims; weights are (out, in_features), biases (out,), the output (N, out).
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .epilogue import biases_activation_span, epilogue_value, fused_activation
from .views import as_rows


#: Up to this many rows, one BLAS call per row (``fully_connected_cpu``).
ROW_BY_ROW = 4


@njit(**PARALLEL_KERNEL)
def fully_connected_cpu(n, source, weights_t, biases, activation, alpha, beta, destination):
    """source: (max_batch, in_features); weights_t: (in_features, out), the weights transposed;
    biases: (out,); destination: (max_batch, out); activation, alpha, beta: the fused
    ``epilogue``. Reads and writes rows < n only.

    One BLAS GEMM of the n rows (BLAS spreads even n = 1 over the cores), then the bias and the
    activation per row. Up to ``ROW_BY_ROW`` rows, one BLAS product per row instead: OpenBLAS
    runs a single row as a fast matrix-vector product, but a GEMM of 2 to 4 rows slowly (AlexNet's
    2304 -> 1024 layer: 0.40 ms at n = 1, 1.77 ms at n = 2)."""
    if n <= ROW_BY_ROW:
        for row in range(n):
            np.dot(source[row:row + 1], weights_t, destination[row:row + 1])
    else:
        np.dot(source[:n], weights_t, destination[:n])
    for row in prange(n):
        biases_activation_span(destination[row], destination[row], biases, activation, alpha, beta)


def cpu_step(attrs, inputs, outputs):
    # (in_features, out) contiguous: the GEMM reads the n rows against it without a transpose.
    weights_t = np.ascontiguousarray(np.asarray(attrs["weights"], dtype=np.float32).T)
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    return fully_connected_cpu, (as_rows(inputs[0]), weights_t, biases, *fused_activation(attrs),
                                 as_rows(outputs[0]))


# GPU ------------------------------------------------------------------------------------------

from numba import float32  # noqa: E402

from .launch import cuda, cuda_kernel, tiled_launch  # noqa: E402


@cuda_kernel
def fully_connected_cuda(n, source, weights, biases, activation, alpha, beta, destination):
    """source: (max_batch, in_features); weights: (out, in_features); biases: (out,);
    destination: (max_batch, out); activation, alpha, beta: the fused ``epilogue``. Writes rows
    < n only.

    A tiled matrix product (numba-cuda's ``fast_matmul`` pattern): a block of T x T threads
    computes a tile of T rows by T features, walking in_features T at a time. Each thread loads
    one element of the rows' tile and one of the weights' tile into shared memory (both read
    along in_features, so a warp reads consecutive addresses), then every thread takes T
    products from shared memory. The weights' tile is stored transposed with a row of padding
    (stride T + 1), so that neither its stores nor its reads hit one memory bank twice.
    """
    tile = cuda.blockDim.x
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    out_features, in_features = weights.shape
    shared = cuda.shared.array(0, float32)
    rows_tile = 0                 # shared[ty * tile + k]: source[row, k0 + k]
    weights_tile = tile * tile    # shared[weights_tile + k * (tile + 1) + f]: weights[feature0 + f, k0 + k]
    row_tiles = (n + tile - 1) // tile
    feature_tiles = (out_features + tile - 1) // tile
    for t in range(cuda.blockIdx.x, row_tiles * feature_tiles, cuda.gridDim.x):
        first_row = (t // feature_tiles) * tile
        first_feature = (t % feature_tiles) * tile
        row = first_row + ty
        total = np.float32(0.0)
        for k0 in range(0, in_features, tile):
            k = k0 + tx
            value = np.float32(0.0)
            if row < n and k < in_features:
                value = source[row, k]
            shared[rows_tile + ty * tile + tx] = value
            loaded_feature = first_feature + ty
            value = np.float32(0.0)
            if loaded_feature < out_features and k < in_features:
                value = weights[loaded_feature, k]
            shared[weights_tile + tx * (tile + 1) + ty] = value
            cuda.syncthreads()
            for kk in range(tile):
                total += shared[rows_tile + ty * tile + kk] * shared[weights_tile + kk * (tile + 1) + tx]
            cuda.syncthreads()
        feature = first_feature + tx
        if row < n and feature < out_features:
            destination[row, feature] = epilogue_value(biases[feature] + total, activation, alpha, beta)


def gpu_step(attrs, inputs, outputs):
    weights = np.ascontiguousarray(attrs["weights"], dtype=np.float32)
    biases = np.ascontiguousarray(attrs["biases"], dtype=np.float32)
    kernel = tiled_launch(fully_connected_cuda, 1, weights.shape[0])
    return kernel, (as_rows(inputs[0]), weights, biases, *fused_activation(attrs), as_rows(outputs[0]))
