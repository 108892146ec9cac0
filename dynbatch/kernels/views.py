"""Free (no-copy) reshapes that turn a planned buffer into the layout a kernel loops over.

Every buffer is C-contiguous with the batch first and allocated at the maximum batch, so rows
``< n`` are always its first ``n * per_sample`` elements, whatever view a kernel takes. The same
views serve NumPy arrays and numba.cuda device arrays (whose ``reshape`` takes the dims one by one).
"""
import numpy as np


def as_rows(buffer: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, per_sample)."""
    return buffer.reshape(buffer.shape[0], -1)


def as_4d(buffer: np.ndarray) -> np.ndarray:
    """(N, C[, H[, W]]) -> (N, C, H, W), appending axes of size 1."""
    if buffer.ndim > 4:
        raise ValueError(f"tensor of rank {buffer.ndim} has no 4-d view (supported ranks: 2 to 4)")
    return buffer.reshape(*shape_4d(buffer.shape))


def shape_4d(shape) -> tuple[int, ...]:
    """The shape ``as_4d`` gives a buffer of ``shape``."""
    return tuple(shape) + (1,) * (4 - len(shape))


def around_axis(buffer: np.ndarray, axis: int) -> np.ndarray:
    """(N, ...) -> (N, outer, length, inner), where ``length = shape[axis]`` (axis >= 1)."""
    shape = buffer.shape
    outer = int(np.prod(shape[1:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return buffer.reshape(shape[0], outer, shape[axis], inner)
