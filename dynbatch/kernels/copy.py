"""Copy: y = x, for rows < n.

This file shows the contract every layer file in ``dynbatch/kernels`` follows:
- ``<layer>_cpu(n, ...)``: the ``@njit(parallel=True)`` kernel. ``n`` is the runtime batch and
  the only loop bound over the batch; buffers are allocated at the maximum batch and rows ``>= n``
  are never read or written. The ``prange`` runs over all the work of the ``n`` rows, so that
  ``n = 1`` still keeps every core busy.
- ``cpu_step(attrs, inputs, outputs)``: turns a layer's normalized attributes (see
  ``dynbatch.graph.layers``) and its max-batch buffers into ``(kernel, args)``; the runtime calls
  ``kernel(n, *args)`` on each inference, so nothing is looked up or allocated on that path.
- ``<layer>_cuda(n, ...)``: the same layer as a ``@cuda_kernel`` (see launch.py): a numba.cuda
  kernel over max-batch device buffers, whose grid is sized from ``n`` and whose grid-stride loops
  never read or write rows ``>= n``. Its per-element math is the ``@njit(**SCALAR_FUNCTION)``
  functions the CPU kernel calls, so that the two targets cannot drift apart.
- ``gpu_step(attrs, inputs, outputs)``: ``cpu_step`` over device buffers, returning
  ``(GpuKernel, args)``; the runtime calls ``kernel(n, *args, stream=stream)``. Constant arrays
  (weights, biases, ...) are left in ``args`` as NumPy arrays: the runtime copies them to the
  device once per loaded network (``dynbatch.gpu.DeviceWeights``).
"""
from numba import njit, prange

from ..config import CHUNK, PARALLEL_KERNEL
from .views import as_rows

@njit(**PARALLEL_KERNEL)
def copy_cpu(n, source, destination):
    """source, destination: (max_batch, per_sample) float32; copies rows < n."""
    per_sample = source.shape[1]
    total = n * per_sample
    flat_source = source.reshape(-1)
    flat_destination = destination.reshape(-1)
    for chunk in prange((total + CHUNK - 1) // CHUNK):
        for i in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            flat_destination[i] = flat_source[i]


def cpu_step(attrs, inputs, outputs):
    return copy_cpu, (as_rows(inputs[0]), as_rows(outputs[0]))


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def copy_cuda(n, source, destination, per_sample):
    """source, destination: flat (max_batch * per_sample,) float32; copies the first n rows."""
    for i in range(cuda.grid(1), n * per_sample, cuda.gridsize(1)):
        destination[i] = source[i]


def gpu_step(attrs, inputs, outputs):
    source, destination = as_rows(inputs[0]), as_rows(outputs[0])
    per_sample = source.shape[1]
    args = (source.reshape(-1), destination.reshape(-1), per_sample)
    return elementwise_launch(copy_cuda, per_sample), args
