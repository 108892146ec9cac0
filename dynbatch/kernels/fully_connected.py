"""FullyConnected: y[b, o] = biases[o] + sum_i x_flat[b, i] * weights[o, i], for rows b < n.

The input (N, ...) is read as rows (N, in_features), in_features being the product of its
non-batch dims; weights are (out, in_features), biases (out,), the output (N, out).
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from .epilogue import epilogue_value, fused_activation
from .gemm import KC, MR, NR, micro_kernel_1, micro_kernel_panel, panel_layout
from .views import as_rows


#: Up to this many input elements, ``fully_connected_cpu`` packs its rows in one thread.
SERIAL_PACKING = 1 << 14


@njit(**PARALLEL_KERNEL)
def fully_connected_cpu(n, source, packed_weights, biases, activation, alpha, beta, destination):
    """source: (max_batch, in_features); packed_weights: ``pack_columns`` of the weights, (panels,
    in_features, NR): output features jp*NR.. of panel jp side by side, zero past the last;
    biases: (out,); destination: (max_batch, out); activation, alpha, beta: the fused
    ``epilogue``. Reads and writes rows < n only.

    The gemm micro-kernel with the n rows as its A (packed here, MR rows a panel, zero rows past
    n; a lone row read in place by the one-row micro-kernel) and the weights as its B, one
    parallel task per panel of NR output features: each task streams its panel of weights
    (contiguous, packed at load) once per MR rows, so n = 1 reads every weight once as a
    matrix-vector product would, and a batch reuses each panel from L1. The bias and the
    activation go on while the task's block is in cache. No BLAS call, whose threads would wait
    on the cores Numba's hold: against OpenBLAS through np.dot, 0.34x-0.49x the time at n = 8 on
    compare.py's layers, 0.50x-0.63x at n = 32; at n = 1 0.83x-1.09x alone, about half inside a
    network (ResNet's 175 -> 87 us)."""
    in_features, out_features = source.shape[1], destination.shape[1]
    weights_flat = packed_weights.reshape(-1)
    destination_flat = destination.reshape(-1)
    if n == 1:  # one row: the micro-kernel reads it in place
        source_flat = source.reshape(-1)
        for jp in prange(packed_weights.shape[0]):
            first = jp * NR
            columns = min(NR, out_features - first)
            block = np.empty(NR, np.float32)
            for pc in range(0, in_features, KC):
                micro_kernel_1(min(KC, in_features - pc), source_flat, pc, weights_flat, (jp * in_features + pc) * NR,
                               NR, block, 0, NR, 1, pc > 0, False, biases, 0, block, False, 0, alpha, beta)
            bias_activation_columns(block, 0, destination_flat, first, columns, biases, first, activation, alpha, beta)
        return
    panels, _, padded_rows = panel_layout(n)
    rows_packed = np.zeros(padded_rows * in_features, np.float32)
    blocks = (in_features + KC - 1) // KC
    if n * in_features <= SERIAL_PACKING:  # a parallel region would cost more than the copy
        for block in range(blocks):
            pack_rows(n, source, block * KC, padded_rows, rows_packed)
    else:
        for block in prange(blocks):
            pack_rows(n, source, block * KC, padded_rows, rows_packed)
    for jp in prange(packed_weights.shape[0]):
        first = jp * NR
        columns = min(NR, out_features - first)
        block = np.empty(MR * NR, np.float32)  # the panel that ends past out_features
        for panel in range(panels):
            m0 = panel * MR
            rows = min(MR, n - m0)
            for pc in range(0, in_features, KC):
                kc = min(KC, in_features - pc)
                a_offset = pc * padded_rows + m0 * kc
                b_offset = (jp * in_features + pc) * NR
                if columns == NR:
                    c, c_offset, ldc = destination_flat, m0 * out_features + first, out_features
                else:
                    c, c_offset, ldc = block, 0, NR
                micro_kernel_panel(m0 + MR <= padded_rows, kc, rows_packed, a_offset, weights_flat, b_offset, NR, c,
                                   c_offset, ldc, rows, pc > 0, False, biases, 0, c, False, 0, alpha, beta)
            for i in range(rows):
                if columns == NR:
                    row_at = (m0 + i) * out_features + first
                    bias_activation_columns(destination_flat, row_at, destination_flat, row_at, NR, biases, first,
                                            activation, alpha, beta)
                else:
                    bias_activation_columns(block, i * NR, destination_flat, (m0 + i) * out_features + first,
                                            columns, biases, first, activation, alpha, beta)


@njit(**SCALAR_FUNCTION)
def pack_rows(n, source, pc, padded_rows, rows_packed):
    """Rows < n of source, columns pc..pc+KC, into ``gemm.pack_weights``' layout (MR-row panels,
    p-major); the rows from n to padded_rows stay as they are (zero)."""
    kc = min(KC, source.shape[1] - pc)
    for row in range(n):
        panel_start = (row // MR) * MR
        height = min(MR, padded_rows - panel_start)
        at = pc * padded_rows + panel_start * kc + row - panel_start
        for p in range(kc):
            rows_packed[at + p * height] = source[row, pc + p]


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
