"""The GPU half of the kernel-file contract (see copy.py): how a ``<layer>_cuda`` kernel is written,
compiled and launched for a batch n.

A kernel file writes its GPU kernel as a plain function decorated with ``@cuda_kernel``, using the
name ``cuda`` (imported from here) for numba.cuda's intrinsics, and calling the file's
``@njit(**SCALAR_FUNCTION)`` functions for the per-element math, exactly as its CPU kernel does.
numba.cuda is imported the first time a layer is bound to the GPU, never before, so CPU-only use
does not need numba-cuda installed: ``@cuda_kernel`` then compiles the function with
``numba.cuda.jit`` with ``cuda`` standing for the real module. Under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) the same function runs in Python, and the scalar functions it calls
run as compiled CPU code.

``gpu_step(attrs, inputs, outputs)`` returns ``(kernel, args)`` like ``cpu_step``, where
``kernel`` is a ``GpuKernel``: the compiled kernel plus how its grid follows n. The runtime calls
``kernel(n, *args, stream=stream)``. The grid is sized from n (never from the maximum batch), and
every kernel loops grid-stride, so any grid computes rows < n and nothing else.
"""
from __future__ import annotations

import threading
import types
from dataclasses import dataclass

from .. import config
from ..errors import ConfigError


class _CudaPlaceholder:
    """Stands for numba.cuda in kernel bodies until ``@cuda_kernel`` compiles them."""

    def __getattr__(self, name):
        raise RuntimeError(f"cuda.{name} is only available inside a @cuda_kernel function launched on the GPU")


#: The name kernel bodies use for numba.cuda (``cuda.grid(1)``, ``cuda.shared.array``, ...).
cuda = _CudaPlaceholder()


def import_cuda():
    """numba.cuda, imported on first use; ConfigError when numba-cuda is not installed."""
    try:
        from numba import cuda as numba_cuda
    except ImportError as error:
        raise ConfigError(
            "the GPU device needs numba-cuda, which is not installed: pip install 'dynbatch[gpu]'"
        ) from error
    return numba_cuda


class CudaKernel:
    """A ``@cuda_kernel`` function; ``dispatcher`` is its numba.cuda kernel, compiled on first use."""

    def __init__(self, function):
        self.py_func = function
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__doc__ = function.__doc__
        self.__module__ = function.__module__
        self._dispatcher = None
        self._lock = threading.Lock()

    @property
    def dispatcher(self):
        with self._lock:
            if self._dispatcher is None:
                numba_cuda = import_cuda()
                # The kernel's module namespace, with `cuda` meaning numba.cuda. A copy: the
                # module itself keeps the placeholder and never imports numba.cuda.
                namespace = dict(self.py_func.__globals__, cuda=numba_cuda)
                function = types.FunctionType(self.py_func.__code__, namespace, self.__name__)
                function.__qualname__ = self.__qualname__
                function.__doc__ = self.__doc__
                function.__module__ = self.__module__
                self._dispatcher = numba_cuda.jit(**config.GPU_KERNEL)(function)
            return self._dispatcher

    def __repr__(self):
        return f"<cuda_kernel {self.__module__}.{self.__qualname__}>"


def cuda_kernel(function) -> CudaKernel:
    """Decorator: ``function`` is a numba.cuda kernel, compiled the first time it is launched."""
    return CudaKernel(function)


@dataclass(frozen=True)
class GpuKernel:
    """A compiled kernel and its launch geometry: ``kernel(n, *args, stream=s)`` runs
    ``function[blocks(n), threads, s, shared_bytes](n, *args)``.

    The work of a batch n is ``n * rows_per_sample`` rows, ``rows_per_block`` of them per block,
    times ``column_blocks`` blocks across; at most ``max_blocks`` blocks are launched (and at
    least one, so that n = 0 compiles the kernel and touches nothing).
    """

    function: object
    threads: int | tuple[int, int]
    rows_per_sample: int
    rows_per_block: int
    column_blocks: int
    max_blocks: int
    shared_bytes: int = 0

    @property
    def __name__(self) -> str:
        return self.function.py_func.__name__

    @property
    def signatures(self) -> list:
        """The compiled signatures of the kernel (none under the CUDA simulator, which compiles nothing)."""
        return list(self.function.overloads)

    def blocks(self, n: int) -> int:
        row_blocks = -(-(n * self.rows_per_sample) // self.rows_per_block)
        return max(1, min(row_blocks * self.column_blocks, self.max_blocks))

    def __call__(self, n: int, *args, stream=0):
        self.function[self.blocks(n), self.threads, stream, self.shared_bytes](n, *args)


def elementwise_launch(kernel: CudaKernel, items_per_sample: int) -> GpuKernel:
    """One thread per item, ``config.THREADS_PER_BLOCK`` threads per block, over the
    ``n * items_per_sample`` items of the batch (consecutive threads on consecutive items)."""
    threads = config.THREADS_PER_BLOCK
    return GpuKernel(kernel.dispatcher, threads, items_per_sample, threads, 1, config.MAX_BLOCKS)


def block_per_row_launch(kernel: CudaKernel, rows_per_sample: int) -> GpuKernel:
    """One block per row, its ``config.THREADS_PER_BLOCK`` threads striding along the row and
    reducing through one float32 of shared memory each."""
    threads = config.THREADS_PER_BLOCK
    return GpuKernel(kernel.dispatcher, threads, rows_per_sample, 1, 1, config.MAX_BLOCKS,
                     shared_bytes=4 * threads)


def tiled_launch(kernel: CudaKernel, rows_per_sample: int, columns: int, groups: int = 1) -> GpuKernel:
    """``config.TILE`` x ``config.TILE`` threads per block, one block per output tile: tiles of
    TILE rows (``n * rows_per_sample`` rows) by TILE columns (``columns`` per group, tiled within
    each of the ``groups``), with two TILE x (TILE + 1) float32 tiles of shared memory."""
    tile = config.TILE
    column_tiles = groups * -(-columns // tile)
    return GpuKernel(kernel.dispatcher, (tile, tile), rows_per_sample, tile, column_tiles,
                     config.MAX_BLOCKS, shared_bytes=4 * 2 * tile * (tile + 1))
