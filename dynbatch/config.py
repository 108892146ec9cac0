"""Every JIT option dynbatch uses, in one place (tests and benchmarks patch it here).

Kernels are compiled once per signature and cached on disk (``cache=True``), so a second
process pays no compilation. ``nogil=True`` lets several infer requests run from several
threads; the ``threadsafe`` threading layer (TBB, else OpenMP) allows those concurrent
parallel regions, where Numba's default ``workqueue`` layer would abort.
"""
import os

import numba

# Fast-math flags that let LLVM vectorise reductions and fuse multiply-adds. ``nnan`` and
# ``ninf`` are left out on purpose: NaN and infinity must propagate exactly as in NumPy.
FASTMATH = {"contract", "arcp", "nsz", "reassoc"}

#: Options for every layer kernel: parallel over all rows, channels and output lines of the batch.
PARALLEL_KERNEL = dict(parallel=True, cache=True, nogil=True, fastmath=FASTMATH)

#: Options for kernels that sequence parallel kernels and BLAS calls (which bring their own
#: parallelism) over the batch, such as the GEMM convolution.
DRIVER_KERNEL = dict(parallel=False, cache=True, nogil=True, fastmath=FASTMATH)

#: Options for the per-element math shared by the CPU and (later) the GPU kernels.
SCALAR_FUNCTION = dict(cache=True, nogil=True, fastmath=FASTMATH, inline="always")

#: Elements per parallel chunk in the elementwise kernels: big enough to amortise scheduling,
#: small enough that n = 1 still splits across cores.
CHUNK = 4096

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"
