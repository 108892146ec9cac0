"""Every JIT option dynbatch uses, in one place (tests and benchmarks patch it here).

Kernels are compiled once per signature and cached on disk (``cache=True``), so a second
process pays no compilation. ``nogil=True`` lets several infer requests run from several
threads; the ``threadsafe`` threading layer (TBB, else OpenMP) allows those concurrent
parallel regions, where Numba's default ``workqueue`` layer would abort.
"""
import ctypes
import os
import sys

import numba

# Fast-math flags that let LLVM vectorise reductions and fuse multiply-adds. ``nnan`` and
# ``ninf`` are left out on purpose: NaN and infinity must propagate exactly as in NumPy.
FASTMATH = {"contract", "arcp", "nsz", "reassoc"}

#: Options for every layer kernel: parallel over all rows, channels and output lines of the batch.
PARALLEL_KERNEL = dict(parallel=True, cache=True, nogil=True, fastmath=FASTMATH)

#: Options for the per-element math shared by the CPU and the GPU kernels. NumPy's error model
#: (x / 0 gives inf or NaN, never an exception) is the one the CPU kernels' parallel loops and
#: numba.cuda already use; it also holds where the CUDA simulator calls these functions directly.
SCALAR_FUNCTION = dict(cache=True, nogil=True, fastmath=FASTMATH, inline="always", error_model="numpy")

#: Options for a CPU kernel's larger steps that several kernels share (the convolutions' patch
#: setup and packing): compiled once, each kernel calling the same code, where an inlined copy
#: would be typed and lowered again in every kernel (seconds of a cold load each). LLVM may
#: still inline them in the machine code.
SHARED_STEP = dict(SCALAR_FUNCTION, inline="never")

#: Elements per parallel chunk in the elementwise kernels: big enough to amortise scheduling,
#: small enough that n = 1 still splits across cores.
CHUNK = 4096

# GPU (numba.cuda). Launch sizes are read when a layer is bound to a request, so a test can patch
# them small and make even a tiny input run several blocks and several grid-stride rounds.

#: Options for every numba.cuda kernel. No fast math: CUDA's flushes denormals and approximates
#: division, sqrt and exp, and results must stay within float32 tolerance of the CPU kernels.
GPU_KERNEL = dict(fastmath=False)

#: Threads per block of the one-thread-per-element kernels (and of SoftMax's block reductions).
THREADS_PER_BLOCK = 256

#: Side of the square tiles (TILE x TILE threads, two tiles of shared memory per block) of the
#: Convolution, Deconvolution and FullyConnected kernels.
TILE = 16

#: Most blocks a launch asks for; grid-stride loops cover whatever work lies beyond them.
MAX_BLOCKS = 4096

#: A register-tiled launch (Convolution) whose grid would have fewer blocks than this, at a small
#: n, runs the kernel's one-output-per-thread variant instead. None: a quarter of the GPU's
#: multiprocessors (``kernels.launch.min_blocks``).
MIN_BLOCKS = None


def _load_pip_tbb() -> None:
    """Make a pip-installed TBB (the ``tbb`` dependency) visible to Numba.

    pip puts ``libtbb.so.12`` in ``<prefix>/lib``, where the dynamic loader does not look (in a
    virtual environment or most Python builds), so Numba would silently fall back to OpenMP
    (numba issue #6108). Loaded once by path and globally, it is what Numba then finds by name.
    """
    if not sys.platform.startswith("linux"):
        return
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        library = os.path.join(prefix, "lib", "libtbb.so.12")
        if os.path.exists(library):
            try:
                ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
            except OSError:  # a broken install: Numba falls back to OpenMP, as without TBB
                pass
            return


# OpenBLAS (SciPy's copy, which Numba's np.dot calls in the Deconvolution kernel's BLAS
# algorithm; FullyConnected no longer calls it) keeps its worker threads spinning for about
# 2**28 cycles after each call, so through every TBB-parallel kernel after a GEMM they take
# cycles from Numba's workers. Letting them sleep at once (the smallest timeout, 2**4 cycles)
# measured 1.1x to 1.7x faster on ResNet and GoogLeNet when their FullyConnected layers still
# called BLAS, both on a quiet machine and with another process busy on one of the 2 cores
# (benchmarks/openblas_timeout.py). It takes effect only where SciPy's OpenBLAS is not loaded
# yet (importing dynbatch does not load it); a value the user set is kept. NumPy's own OpenBLAS
# is a separate library, loaded earlier.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# The threading layer: TBB when it can be loaded, else OpenMP. Both allow parallel kernels from
# several threads at once (Numba's default ``workqueue`` aborts). TBB is preferred: its one pool
# of workers is shared by all the threads that infer, where OpenMP gives every such thread a team
# of its own (32 busy requests: 64 threads on the cores), and it is fork-safe where GNU OpenMP is
# not. Measured in benchmarks/README.md ("Serving: DynamicBatcher under load").
if "NUMBA_THREADING_LAYER" not in os.environ:
    _load_pip_tbb()
    numba.config.THREADING_LAYER = "threadsafe"
