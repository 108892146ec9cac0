"""Copy: y = x, for rows < n.

This file shows the contract every layer file in ``dynbatch/kernels`` follows:
- ``<layer>_cpu(n, ...)``: the ``@njit(parallel=True)`` kernel. ``n`` is the runtime batch and
  the only loop bound over the batch; buffers are allocated at the maximum batch and rows ``>= n``
  are never read or written. The ``prange`` runs over all the work of the ``n`` rows, so that
  ``n = 1`` still keeps every core busy.
- ``cpu_step(attrs, inputs, outputs)``: turns a layer's normalized attributes (see
  ``dynbatch.graph.layers``) and its max-batch buffers into ``(kernel, args)``; the runtime calls
  ``kernel(n, *args)`` on each inference, so nothing is looked up or allocated on that path.
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
