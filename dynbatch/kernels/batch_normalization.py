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
