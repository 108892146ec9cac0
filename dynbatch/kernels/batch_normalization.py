"""BatchNormalization (inference): y = gamma * (x - mean) / sqrt(variance + epsilon) + beta.

Channel axis 1 of an (N, C[, H[, W]]) tensor, rows < n. The per-channel statistics are folded at
bind time into one affine map, y = scale[c] * x + shift[c], so an inference does one multiply-add
per element.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION


@njit(**SCALAR_FUNCTION)
def affine_value(x, scale, shift):
    """scale * x + shift."""
    return scale * x + shift


@njit(**PARALLEL_KERNEL)
def batch_normalization_cpu(n, source, destination, scale, shift):
    """source, destination: (max_batch, C, spatial) float32; scale, shift: (C,) float32.

    Writes rows < n; one parallel iteration per (row, channel) plane. ``destination`` may be
    ``source`` (in place): each element is read before it is written.
    """
    channels = source.shape[1]
    spatial = source.shape[2]
    for plane in prange(n * channels):
        b = plane // channels
        c = plane % channels
        channel_scale = scale[c]
        channel_shift = shift[c]
        for s in range(spatial):
            destination[b, c, s] = affine_value(source[b, c, s], channel_scale, channel_shift)


def folded_affine(attrs):
    """(scale, shift) float32 (C,) arrays such that y = scale * x + shift, folded in float64."""
    mean, variance, gamma, beta = (
        np.asarray(attrs[name], dtype=np.float64) for name in ("mean", "variance", "gamma", "beta")
    )
    scale = gamma / np.sqrt(variance + float(attrs["epsilon"]))
    shift = beta - mean * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def cpu_step(attrs, inputs, outputs):
    source, destination = inputs[0], outputs[0]
    scale, shift = folded_affine(attrs)
    args = (
        source.reshape(source.shape[0], source.shape[1], -1),
        destination.reshape(destination.shape[0], destination.shape[1], -1),
        scale,
        shift,
    )
    return batch_normalization_cpu, args


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def batch_normalization_cuda(n, source, destination, scale, shift, channels, spatial):
    """source, destination: flat (max_batch * C * spatial,) float32; scale, shift: (C,) float32.
    Writes the first n rows, one element per thread. ``destination`` may be ``source``."""
    for i in range(cuda.grid(1), n * channels * spatial, cuda.gridsize(1)):
        c = (i // spatial) % channels
        destination[i] = affine_value(source[i], scale[c], shift[c])


def gpu_step(attrs, inputs, outputs):
    source, destination = inputs[0], outputs[0]
    channels = source.shape[1]
    spatial = source.size // (source.shape[0] * channels)
    scale, shift = folded_affine(attrs)
    args = (source.reshape(-1), destination.reshape(-1), scale, shift, channels, spatial)
    return elementwise_launch(batch_normalization_cuda, channels * spatial), args
