"""Split: the input (N, ...) cut along ``axis`` into consecutive pieces of ``sizes[i]``, one output
each: piece_i[b, ..., k, ...] = x[b, ..., starts[i] + k, ...], starts[i] = sum(sizes[:i]).

Around the axis, a sample of the input is (outer, length * inner) and one of piece i is
(outer, sizes[i] * inner): each (row, outer) line of a piece is one contiguous run of its input line.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import around_axis


def lines_around_axis(buffer, axis):
    """(N, ...) -> (N, outer, shape[axis] * inner): a free reshape, one line per (row, outer)."""
    view = around_axis(buffer, axis)
    return view.reshape(view.shape[0], view.shape[1], view.shape[2] * view.shape[3])


@njit(**PARALLEL_KERNEL)
def split_cpu(n, source, pieces, piece_starts):
    """source: (max_batch, outer, length * inner); pieces: tuple of (max_batch, outer,
    size_i * inner); piece_starts[i]: where piece i begins in a source line. Rows < n only."""
    outer = source.shape[1]
    piece_count = len(pieces)
    # One iteration per (row, outer, piece) run: n = 1 still yields outer * pieces >= 2 runs.
    for index in prange(n * outer * piece_count):
        line = index // piece_count
        piece_index = index - line * piece_count
        row = line // outer
        block = line - row * outer
        piece = pieces[piece_index]
        # Unsigned indices: no negative-index wraparound test, so the copy vectorises.
        row, block, start = np.uintp(row), np.uintp(block), np.uintp(piece_starts[piece_index])
        for k in range(np.uintp(piece.shape[2])):
            piece[row, block, k] = source[row, block, start + k]


def cpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    inner = around_axis(inputs[0], axis).shape[3]
    piece_starts = np.cumsum([0] + [int(size) * inner for size in attrs["sizes"][:-1]]).astype(np.int64)
    pieces = tuple(lines_around_axis(output, axis) for output in outputs)
    return split_cpu, (lines_around_axis(inputs[0], axis), pieces, piece_starts)


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def split_cuda(n, source, pieces, piece_starts):
    """source: (max_batch, outer, length * inner); pieces: tuple of (max_batch, outer,
    size_i * inner); piece_starts[i]: where piece i begins in a source line. Rows < n only; one
    source element per thread (consecutive threads, consecutive addresses), written to its piece."""
    outer, line_length = source.shape[1], source.shape[2]
    last_piece = len(pieces) - 1
    for i in range(cuda.grid(1), n * outer * line_length, cuda.gridsize(1)):
        k = i % line_length
        block = (i // line_length) % outer
        row = i // (line_length * outer)
        piece_index = 0
        while piece_index < last_piece and k >= piece_starts[piece_index + 1]:
            piece_index += 1
        pieces[piece_index][row, block, k - piece_starts[piece_index]] = source[row, block, k]


def gpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    inner = around_axis(inputs[0], axis).shape[3]
    piece_starts = np.cumsum([0] + [int(size) * inner for size in attrs["sizes"][:-1]]).astype(np.int64)
    source = lines_around_axis(inputs[0], axis)
    pieces = tuple(lines_around_axis(output, axis) for output in outputs)
    per_sample = source.shape[1] * source.shape[2]
    return elementwise_launch(split_cuda, per_sample), (source, pieces, piece_starts)
