"""Activation: y = f(x) element by element, for rows < n, on a tensor of any rank (N, ...).

The eleven functions f share one kernel and are told apart by an int code (``ACTIVATION_CODES``):
relu (x if x > 0 else alpha*x), relu6 (clip to [0, 6]), clamp (clip to [alpha, beta]),
sigmoid 1/(1+exp(-x)), tanh, elu (x if x > 0 else alpha*(exp(x)-1)), exp, abs,
softplus log(1+exp(x)), hswish x*clip(x+3, 0, 6)/6 and gelu 0.5*x*(1+erf(x/sqrt(2))).
"""
import math

import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from ..config import CHUNK
from .views import as_rows

RELU, RELU6, CLAMP, SIGMOID, TANH, ELU, EXP, ABS, SOFTPLUS, HSWISH, GELU = range(11)

#: Activation type name (as in the normalized attributes) -> the code the kernel switches on.
ACTIVATION_CODES = {
    "relu": RELU,
    "relu6": RELU6,
    "clamp": CLAMP,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "elu": ELU,
    "exp": EXP,
    "abs": ABS,
    "softplus": SOFTPLUS,
    "hswish": HSWISH,
    "gelu": GELU,
}

# float32 constants: a float64 literal would turn the math around it (and the result) into
# float64, at half the vector width on the CPU and a fraction of the speed on most GPUs.
ZERO, HALF, ONE, THREE, SIX = (np.float32(value) for value in (0.0, 0.5, 1.0, 3.0, 6.0))
INVERSE_SQRT_2 = np.float32(1.0 / math.sqrt(2.0))


@njit(**SCALAR_FUNCTION)
def clip_value(x, low, high):
    """x limited to [low, high]; a NaN x stays NaN (max and min return a NaN first argument)."""
    return min(max(x, low), high)


@njit(**SCALAR_FUNCTION)
def activation_value(x, code, alpha, beta):
    """f(x) for the activation ``code``; alpha and beta are the layer's (0 when unused). With x,
    alpha and beta float32 the math is float32 throughout."""
    if code == RELU:
        return x if x > ZERO else alpha * x
    if code == RELU6:
        return clip_value(x, ZERO, SIX)
    if code == CLAMP:
        return clip_value(x, alpha, beta)
    if code == SIGMOID:
        # exp(-x) overflowing to inf for very negative x gives the right limit, 0.
        return ONE / (ONE + math.exp(-x))
    if code == TANH:
        return math.tanh(x)
    if code == ELU:
        # expm1 keeps the precision that exp(x) - 1 loses near 0.
        return x if x > ZERO else alpha * math.expm1(x)
    if code == EXP:
        return math.exp(x)
    if code == ABS:
        return abs(x)
    if code == SOFTPLUS:
        # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): exp never overflows.
        return max(x, ZERO) + math.log1p(math.exp(-abs(x)))
    if code == HSWISH:
        return x * clip_value(x + THREE, ZERO, SIX) / SIX
    # GELU
    return HALF * x * (ONE + math.erf(x * INVERSE_SQRT_2))


@njit(**SCALAR_FUNCTION)
def activation_span(flat_source, flat_destination, start, stop, code, alpha, beta):
    """flat_destination[i] = f(flat_source[i]) for start <= i < stop."""
    for i in range(start, stop):
        flat_destination[i] = activation_value(flat_source[i], code, alpha, beta)


@njit(**PARALLEL_KERNEL)
def activation_cpu(n, source, destination, code, alpha, beta):
    """source, destination: (max_batch, per_sample) float32; writes f(source) to rows < n.

    ``destination`` may be ``source`` (in place): each element is read before it is written.
    """
    per_sample = source.shape[1]
    total = n * per_sample
    flat_source = source.reshape(-1)
    flat_destination = destination.reshape(-1)
    for chunk in prange((total + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(total, start + CHUNK)
        # Each branch passes a constant code: the switch in activation_value then folds away and
        # the inner loop vectorises, where a switch on a variable inside it would not.
        if code == RELU:
            activation_span(flat_source, flat_destination, start, stop, RELU, alpha, beta)
        elif code == RELU6:
            activation_span(flat_source, flat_destination, start, stop, RELU6, alpha, beta)
        elif code == CLAMP:
            activation_span(flat_source, flat_destination, start, stop, CLAMP, alpha, beta)
        elif code == SIGMOID:
            activation_span(flat_source, flat_destination, start, stop, SIGMOID, alpha, beta)
        elif code == TANH:
            activation_span(flat_source, flat_destination, start, stop, TANH, alpha, beta)
        elif code == ELU:
            activation_span(flat_source, flat_destination, start, stop, ELU, alpha, beta)
        elif code == EXP:
            activation_span(flat_source, flat_destination, start, stop, EXP, alpha, beta)
        elif code == ABS:
            activation_span(flat_source, flat_destination, start, stop, ABS, alpha, beta)
        elif code == SOFTPLUS:
            activation_span(flat_source, flat_destination, start, stop, SOFTPLUS, alpha, beta)
        elif code == HSWISH:
            activation_span(flat_source, flat_destination, start, stop, HSWISH, alpha, beta)
        else:
            activation_span(flat_source, flat_destination, start, stop, GELU, alpha, beta)


def cpu_step(attrs, inputs, outputs):
    args = (
        as_rows(inputs[0]),
        as_rows(outputs[0]),
        int(ACTIVATION_CODES[attrs["type"]]),
        np.float32(attrs["alpha"]),
        np.float32(attrs["beta"]),
    )
    return activation_cpu, args


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def activation_cuda(n, source, destination, per_sample, code, alpha, beta):
    """source, destination: flat (max_batch * per_sample,) float32; writes f(source) to the first
    n rows, one element per thread. ``destination`` may be ``source`` (in place)."""
    for i in range(cuda.grid(1), n * per_sample, cuda.gridsize(1)):
        destination[i] = activation_value(source[i], code, alpha, beta)


def gpu_step(attrs, inputs, outputs):
    source, destination = as_rows(inputs[0]), as_rows(outputs[0])
    per_sample = source.shape[1]
    args = (
        source.reshape(-1),
        destination.reshape(-1),
        per_sample,
        int(ACTIVATION_CODES[attrs["type"]]),
        np.float32(attrs["alpha"]),
        np.float32(attrs["beta"]),
    )
    return elementwise_launch(activation_cuda, per_sample), args
