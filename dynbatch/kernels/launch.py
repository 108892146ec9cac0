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

import functools
import threading
import types
import warnings
from dataclasses import dataclass

from .. import config
from ..errors import ConfigError


class _CudaPlaceholder:
    """Stands for numba.cuda in kernel bodies until ``@cuda_kernel`` compiles them."""

    def __getattr__(self, name):
        raise RuntimeError(f"cuda.{name} is only available inside a @cuda_kernel function launched on the GPU")


#: The name kernel bodies use for numba.cuda (``cuda.grid(1)``, ``cuda.shared.array``, ...).
cuda = _CudaPlaceholder()


@functools.cache
def import_cuda():
    """numba.cuda, imported on first use; ConfigError when numba-cuda is not installed."""
    try:
        from numba import cuda as numba_cuda
    except ImportError as error:
        raise ConfigError(
            "the GPU device needs numba-cuda, which is not installed: pip install 'dynbatch[gpu]'"
        ) from error
    # Grids are sized from n on purpose (a batch of 1 launches few blocks, and loading compiles
    # each kernel with a launch of n = 0): numba-cuda's warning for grids under 128 blocks would
    # only be noise to dynbatch's users.
    warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU under-utilization")
    return numba_cuda


class CudaKernel:
    """A ``@cuda_kernel`` function; ``dispatcher`` is its numba.cuda kernel, compiled on first use."""

    def __init__(self, function):
        self.py_func = function
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__doc__ = function.__doc__
        self.__module__ = function.__module__
        self._dispatchers = {}
        self._lock = threading.Lock()

    @property
    def dispatcher(self):
        return self.dispatcher_for(REGISTER_TILE)

    def dispatcher_for(self, register_tile: int):
        """The numba.cuda kernel with ``REGISTER_TILE`` = register_tile: a separate kernel (and
        compilation) per value, since its register arrays need literal sizes. Kernels that do
        not use the constant get the same code either way."""
        with self._lock:
            if register_tile not in self._dispatchers:
                numba_cuda = import_cuda()
                # The kernel's module namespace, with `cuda` meaning numba.cuda. A copy: the
                # module itself keeps the placeholder and never imports numba.cuda.
                namespace = dict(self.py_func.__globals__, cuda=numba_cuda, REGISTER_TILE=register_tile,
                                 REGISTER_OUTPUTS=register_tile * register_tile)
                function = types.FunctionType(self.py_func.__code__, namespace, self.__name__)
                function.__qualname__ = self.__qualname__
                function.__doc__ = self.__doc__
                function.__module__ = self.__module__
                self._dispatchers[register_tile] = numba_cuda.jit(**config.GPU_KERNEL)(function)
            return self._dispatchers[register_tile]

    def __repr__(self):
        return f"<cuda_kernel {self.__module__}.{self.__qualname__}>"


def cuda_kernel(function) -> CudaKernel:
    """Decorator: ``function`` is a numba.cuda kernel, compiled the first time it is launched."""
    return CudaKernel(function)


#: Outputs per thread along each side of a register-tiled block (``tiled_launch``): each value a
#: thread reads from shared memory then feeds this many products. A compile-time constant.
REGISTER_TILE = 4
#: A kernel's local arrays need a literal size: the R x R accumulators' count as its own constant.
REGISTER_OUTPUTS = REGISTER_TILE * REGISTER_TILE


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
    #: The kernel's one-output-per-thread variant, launched instead where this grid would have
    #: fewer than ``min_blocks`` blocks (a small n): 16 times the threads keep the GPU busier.
    smaller: GpuKernel | None = None
    min_blocks: int = 1

    @property
    def __name__(self) -> str:
        return self.function.py_func.__name__

    def variants(self) -> list[GpuKernel]:
        """This launch and the smaller ones it may hand a batch to (``for_batch``)."""
        return [self] + (self.smaller.variants() if self.smaller is not None else [])

    @property
    def signatures(self) -> list:
        """The compiled signatures of the variant that has the most: each variant is a kernel
        of its own, compiled once (none under the CUDA simulator, which compiles nothing)."""
        return max((list(variant.function.overloads) for variant in self.variants()), key=len)

    def compile(self, *args, stream=0) -> None:
        """Compile every variant, with launches of n = 0 (they touch no data)."""
        for variant in self.variants():
            variant.function[1, variant.threads, stream, variant.shared_bytes](0, *args)

    def blocks(self, n: int) -> int:
        row_blocks = -(-(n * self.rows_per_sample) // self.rows_per_block)
        return max(1, min(row_blocks * self.column_blocks, self.max_blocks))

    def for_batch(self, n: int) -> GpuKernel:
        """The launch that runs a batch of n: this one, or its one-output-per-thread variant
        where this grid would leave multiprocessors idle."""
        kernel = self
        while kernel.smaller is not None and kernel.blocks(n) < kernel.min_blocks:
            kernel = kernel.smaller
        return kernel

    def __call__(self, n: int, *args, stream=0):
        kernel = self.for_batch(n)
        kernel.function[kernel.blocks(n), kernel.threads, stream, kernel.shared_bytes](n, *args)


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


def min_blocks() -> int:
    """``config.MIN_BLOCKS``, else a quarter of the GPU's multiprocessors (1 under the simulator).
    A quarter, as measured on an H200 (132 multiprocessors, benchmarks/README.md): AlexNet's 6 x 6
    convolutions ran 1.7x-2.6x faster register-tiled at 72 to 108 blocks than one output per
    thread at about 1,700, and the two tied at 20 to 30 blocks."""
    if config.MIN_BLOCKS is not None:
        return config.MIN_BLOCKS
    return max(1, getattr(import_cuda().get_current_device(), "MULTIPROCESSOR_COUNT", 4) // 4)


def tiled_launch(kernel: CudaKernel, rows_per_sample: int, columns: int, groups: int = 1,
                 register_tile: int = 1) -> GpuKernel:
    """``config.TILE`` x ``config.TILE`` threads per block, each computing register_tile x
    register_tile outputs, one block per output tile: tiles of TILE * register_tile rows
    (``n * rows_per_sample`` rows) by as many columns (``columns`` per group, tiled within each
    of the ``groups``), with two TILE x (TILE * register_tile + 1) float32 tiles of shared
    memory. With register_tile > 1, a batch whose grid would have fewer than ``min_blocks()``
    blocks runs the kernel's register_tile = 1 variant instead (``GpuKernel.for_batch``)."""
    tile = config.TILE
    launch = None
    for outputs_per_side in sorted({1, register_tile}):
        side = tile * outputs_per_side
        launch = GpuKernel(kernel.dispatcher_for(outputs_per_side), (tile, tile), rows_per_sample, side,
                           groups * -(-columns // side), config.MAX_BLOCKS,
                           shared_bytes=4 * 2 * tile * (side + 1), smaller=launch, min_blocks=min_blocks())
    return launch
