"""Power: y = (shift + scale * x) ** power element by element, for rows < n, any rank (N, ...).

A negative base with a non-integer power gives NaN and a zero base with a negative power gives
inf, as in NumPy.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from ..config import CHUNK
from .views import as_rows


@njit(**SCALAR_FUNCTION)
def power_value(x, power, scale, shift):
    """(shift + scale * x) ** power."""
    base = shift + scale * x
    # The usual powers skip the general pow(). power is the same for every element, so the
    # compiler moves these tests out of the kernel's loop, which then vectorises for them.
    if power == 1.0:
        return base
    if power == 2.0:
        return base * base
    return base**power


@njit(**PARALLEL_KERNEL)
def power_cpu(n, source, destination, power, scale, shift):
    """source, destination: (max_batch, per_sample) float32; writes rows < n.

    ``destination`` may be ``source`` (in place): each element is read before it is written.
    """
    per_sample = source.shape[1]
    total = n * per_sample
    flat_source = source.reshape(-1)
    flat_destination = destination.reshape(-1)
    for chunk in prange((total + CHUNK - 1) // CHUNK):
        stop = min(total, (chunk + 1) * CHUNK)
        for i in range(chunk * CHUNK, stop):
            flat_destination[i] = power_value(flat_source[i], power, scale, shift)


def power_scalars(attrs):
    """(power, scale, shift) as float32: float64 scalars would make the kernels' math float64."""
    return np.float32(attrs["power"]), np.float32(attrs["scale"]), np.float32(attrs["shift"])


def cpu_step(attrs, inputs, outputs):
    args = (as_rows(inputs[0]), as_rows(outputs[0]), *power_scalars(attrs))
    return power_cpu, args


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def power_cuda(n, source, destination, per_sample, power, scale, shift):
    """source, destination: flat (max_batch * per_sample,) float32; writes the first n rows, one
    element per thread. ``destination`` may be ``source`` (in place)."""
    for i in range(cuda.grid(1), n * per_sample, cuda.gridsize(1)):
        destination[i] = power_value(source[i], power, scale, shift)


def gpu_step(attrs, inputs, outputs):
    source, destination = as_rows(inputs[0]), as_rows(outputs[0])
    per_sample = source.shape[1]
    args = (
        source.reshape(-1),
        destination.reshape(-1),
        per_sample,
        *power_scalars(attrs),
    )
    return elementwise_launch(power_cuda, per_sample), args
