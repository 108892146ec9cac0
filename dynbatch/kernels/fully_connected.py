"""FullyConnected: y[b, o] = biases[o] + sum_i x_flat[b, i] * weights[o, i], for rows b < n.

The input (N, ...) is read as rows (N, in_features), in_features being the product of its
non-batch dims; weights are (out, in_features), biases (out,), the output (N, out).
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from .epilogue import epilogue_value, fused_activation
from .gemm import KC, MR, NR, address, rows_product
from .views import as_rows


@njit(**PARALLEL_KERNEL)
def fully_connected_cpu(n, source, packed_weights, biases, activation, alpha, beta, destination):
    """source: (max_batch, in_features); packed_weights: ``pack_columns`` of the weights, (panels,
    in_features, NR): output features jp*NR.. of panel jp side by side, zero past the last;
    biases: (out,); destination: (max_batch, out); activation, alpha, beta: the fused
    ``epilogue``. Reads and writes rows < n only.

    One parallel task per panel of NR output features (``fully_connected_task``), also a step of
    ``chain.convolution_chain_cpu``. No BLAS call, whose threads would wait on the cores Numba's
    hold: against OpenBLAS through np.dot, 0.34x-0.49x the time at n = 8 on compare.py's layers,
    0.50x-0.63x at n = 32; at n = 1 0.83x-1.09x alone, about half inside a network (ResNet's
    175 -> 87 us)."""
    source_flat, weights_flat = source.reshape(-1), packed_weights.reshape(-1)
    destination_flat = destination.reshape(-1)
    for jp in prange(packed_weights.shape[0]):
        fully_connected_task(jp, n, source_flat, source.shape[1], weights_flat, biases, activation, alpha, beta,
                             destination_flat, destination.shape[1])


@njit(**SCALAR_FUNCTION)
def fully_connected_task(jp, n, source_flat, in_features, weights_flat, biases, activation, alpha, beta,
                         destination_flat, out_features):
    """Output features jp*NR.. (panel jp of the packed weights) of rows < n: the rows six at a
    time as A, read in place (``gemm.rows_product``), the panel's weights as B (contiguous,
    packed at load), streamed once per six rows, so n = 1 reads every weight once as a
    matrix-vector product would and a batch reuses each KC block of the panel from L1. The bias
    and the activation go on while the rows are in cache."""
    first = jp * NR
    columns = min(NR, out_features - first)
    block = np.empty(MR * NR, np.float32)  # (the last panel's, whose columns end past out_features)
    # (by address: an array variable chosen per panel would take and drop a reference on the
    # buffer, an atomic the threads contend for)
    c = address(destination_flat) if columns == NR else address(block)
    for m0 in range(0, n, MR):
        rows = min(MR, n - m0)
        c_offset, ldc = (m0 * out_features + first, out_features) if columns == NR else (0, NR)
        for pc in range(0, in_features, KC):
            rows_product(min(KC, in_features - pc), source_flat, m0 * in_features + pc, in_features, rows,
                         weights_flat, (jp * in_features + pc) * NR, NR, c, c_offset, ldc, pc > 0)
        for i in range(rows):
            if columns == NR:
                row_at = (m0 + i) * out_features + first
                bias_activation_columns(destination_flat, row_at, destination_flat, row_at, NR, biases, first,
                                        activation, alpha, beta)
            else:
                bias_activation_columns(block, i * NR, destination_flat, (m0 + i) * out_features + first, columns,
                                        biases, first, activation, alpha, beta)


@njit(**SCALAR_FUNCTION)
def bias_activation_columns(source, source_at, destination, destination_at, length, biases, first_bias,
                            activation, alpha, beta):
    """destination[destination_at + j] = f(source[source_at + j] + biases[first_bias + j]), j < length."""
    for j in range(length):
        destination[destination_at + j] = epilogue_value(source[source_at + j] + biases[first_bias + j],
                                                         activation, alpha, beta)


def pack_columns(weights: np.ndarray) -> np.ndarray:
    """(out, in_features) weights -> (panels, in_features, NR): panel jp holds weights[jp*NR + j, k]
    at [jp, k, j], zero past out."""
    out_features, in_features = weights.shape
    panels = -(-out_features // NR)
    padded = np.zeros((panels * NR, in_features), np.float32)
    padded[:out_features] = weights
    return np.ascontiguousarray(padded.reshape(panels, NR, in_features).transpose(0, 2, 1))


def cpu_step(attrs, inputs, outputs):
    weights = np.asarray(attrs["weights"], dtype=np.float32)
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    return fully_connected_cpu, (as_rows(inputs[0]), pack_columns(weights), biases, *fused_activation(attrs),
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
