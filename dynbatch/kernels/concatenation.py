"""Concatenation: inputs (N, ...) equal except along ``axis`` joined along it, the mirror of Split:
y[b, ..., starts[i] + k, ...] = x_i[b, ..., k, ...], starts[i] = sum of the earlier inputs' sizes.

Around the axis, a sample of input i is (outer, size_i * inner) and one of the output
(outer, length * inner): each (row, outer) line of an input is one contiguous run of an output line.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .split import lines_around_axis


@njit(**PARALLEL_KERNEL)
def concatenation_cpu(n, pieces, piece_starts, destination):
    """pieces: tuple of (max_batch, outer, size_i * inner); piece_starts[i]: where piece i begins
    in a destination line; destination: (max_batch, outer, length * inner). Rows < n only."""
    outer = destination.shape[1]
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
            destination[row, block, start + k] = piece[row, block, k]


def cpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    pieces = tuple(lines_around_axis(source, axis) for source in inputs)
    piece_starts = np.cumsum([0] + [piece.shape[2] for piece in pieces[:-1]]).astype(np.int64)
    return concatenation_cpu, (pieces, piece_starts, lines_around_axis(outputs[0], axis))


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def concatenation_cuda(n, pieces, piece_starts, destination):
    """pieces: tuple of (max_batch, outer, size_i * inner); piece_starts[i]: where piece i begins
    in a destination line; destination: (max_batch, outer, length * inner). Rows < n only; one
    destination element per thread (consecutive threads, consecutive addresses), read from its piece."""
    outer, line_length = destination.shape[1], destination.shape[2]
    last_piece = len(pieces) - 1
    for i in range(cuda.grid(1), n * outer * line_length, cuda.gridsize(1)):
        k = i % line_length
        block = (i // line_length) % outer
        row = i // (line_length * outer)
        piece_index = 0
        while piece_index < last_piece and k >= piece_starts[piece_index + 1]:
            piece_index += 1
        destination[row, block, k] = pieces[piece_index][row, block, k - piece_starts[piece_index]]


def gpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    pieces = tuple(lines_around_axis(source, axis) for source in inputs)
    piece_starts = np.cumsum([0] + [piece.shape[2] for piece in pieces[:-1]]).astype(np.int64)
    destination = lines_around_axis(outputs[0], axis)
    per_sample = destination.shape[1] * destination.shape[2]
    return elementwise_launch(concatenation_cuda, per_sample), (pieces, piece_starts, destination)
