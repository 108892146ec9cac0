"""The fused epilogue of the Convolution and FullyConnected kernels: y = f(acc + bias [+ residual]),
where the compiler's fusion pass (``dynbatch.graph.fusion``) may have folded in the residual
(an Eltwise sum with another tensor, as in ResNet's shortcuts; Convolution only) and the
activation f (or none).

Writing these while the GEMM's output is still in cache spares a whole pass over the tensor (and
the tensor itself) per fused layer. Only the activations that are one compare or two (relu with
its leak, relu6, clamp) are fused; the others stay layers.
"""
import numpy as np
from numba import njit

from ..config import SCALAR_FUNCTION
from .activation import ACTIVATION_CODES, CLAMP, RELU, RELU6, activation_value

#: No activation after the bias.
NO_ACTIVATION = -1

#: The activation codes (``activation.ACTIVATION_CODES``) the epilogue can apply.
FUSABLE_ACTIVATIONS = (RELU, RELU6, CLAMP)


@njit(**SCALAR_FUNCTION)
def epilogue_value(value, activation, alpha, beta):
    """f(value) for one element (the GPU kernels' epilogue, where a branch per element is free)."""
    if activation == NO_ACTIVATION:
        return value
    return activation_value(value, activation, alpha, beta)


@njit(**SCALAR_FUNCTION)
def bias_activation_at(source, source_at, destination, destination_at, length, bias, activation, alpha, beta):
    """destination[destination_at + i] = f(source[source_at + i] + bias) for i < length, on 1-d
    arrays (they may be one array: each element is read before it is written). Offsets rather than
    views: a view takes a reference on its array, an atomic that parallel threads contend for.
    Each branch passes a constant code, so the switch inside ``activation_value`` folds away and
    the loop vectorises."""
    # Unsigned indices: no negative-index wraparound test in the loop, which would stop LLVM
    # from vectorising it.
    source_at, destination_at, length = np.uintp(source_at), np.uintp(destination_at), np.uintp(length)
    if activation == NO_ACTIVATION:
        for i in range(length):
            destination[destination_at + i] = source[source_at + i] + bias
    elif activation == RELU:
        for i in range(length):
            destination[destination_at + i] = activation_value(source[source_at + i] + bias, RELU, alpha, beta)
    elif activation == RELU6:
        for i in range(length):
            destination[destination_at + i] = activation_value(source[source_at + i] + bias, RELU6, alpha, beta)
    else:
        for i in range(length):
            destination[destination_at + i] = activation_value(source[source_at + i] + bias, CLAMP, alpha, beta)


@njit(**SCALAR_FUNCTION)
def epilogue_at(source, source_at, destination, destination_at, length, bias, residual, residual_at,
                has_residual, activation, alpha, beta):
    """destination[destination_at + i] = f(source[source_at + i] + bias + residual[residual_at + i])
    for i < length (no residual term when has_residual is 0), on 1-d arrays; source may be
    destination. The residual is added first, in its own loop over the span (still in L1 cache),
    which keeps both loops free of branches."""
    if has_residual:
        source_base, destination_base = np.uintp(source_at), np.uintp(destination_at)
        residual_base = np.uintp(residual_at)
        for i in range(np.uintp(length)):
            destination[destination_base + i] = source[source_base + i] + residual[residual_base + i]
        bias_activation_at(destination, destination_at, destination, destination_at, length, bias,
                           activation, alpha, beta)
    else:
        bias_activation_at(source, source_at, destination, destination_at, length, bias, activation, alpha, beta)


@njit(**SCALAR_FUNCTION)
def _summed_with(source, source_at, length, bias, residual, residual_at, has_residual, activation, alpha, beta):
    """epilogue_sum for one constant activation code and residual flag (each caller passes
    literals, so the tests fold away and the loop vectorises: its sum may be reassociated)."""
    source_at, residual_at = np.uintp(source_at), np.uintp(residual_at)
    total = np.float32(0.0)
    for i in range(np.uintp(length)):
        value = source[source_at + i] + bias
        if has_residual:
            value += residual[residual_at + i]
        total += epilogue_value(value, activation, alpha, beta)
    return total


@njit(**SCALAR_FUNCTION)
def _summed_by_activation(source, source_at, length, bias, residual, residual_at, has_residual, activation, alpha,
                          beta):
    """epilogue_sum for a literal residual flag: a loop per activation code."""
    if activation == NO_ACTIVATION:
        return _summed_with(source, source_at, length, bias, residual, residual_at, has_residual, NO_ACTIVATION,
                            alpha, beta)
    if activation == RELU:
        return _summed_with(source, source_at, length, bias, residual, residual_at, has_residual, RELU, alpha, beta)
    if activation == RELU6:
        return _summed_with(source, source_at, length, bias, residual, residual_at, has_residual, RELU6, alpha, beta)
    return _summed_with(source, source_at, length, bias, residual, residual_at, has_residual, CLAMP, alpha, beta)


@njit(**SCALAR_FUNCTION)
def epilogue_sum(source, source_at, length, bias, residual, residual_at, has_residual, activation, alpha, beta):
    """sum_i f(source[source_at + i] + bias + residual[residual_at + i]) for i < length (no
    residual term when has_residual is 0), on 1-d arrays: what ``epilogue_at`` would write,
    summed instead (a convolution whose output only a global average pooling reads)."""
    if has_residual:
        return _summed_by_activation(source, source_at, length, bias, residual, residual_at, True, activation, alpha,
                                     beta)
    return _summed_by_activation(source, source_at, length, bias, residual, residual_at, False, activation, alpha, beta)


def fused_activation(attrs) -> tuple[int, np.float32, np.float32]:
    """(code, alpha, beta) of the activation the fusion pass put in a layer's ``attrs["activation"]``
    (an Activation layer's normalized attributes), or NO_ACTIVATION. Float32 parameters, so the
    epilogue's math stays in float32."""
    fused = attrs.get("activation")
    if fused is None:
        return NO_ACTIVATION, np.float32(0.0), np.float32(0.0)
    return ACTIVATION_CODES[fused["type"]], np.float32(fused["alpha"]), np.float32(fused["beta"])


def fused_epilogue(attrs, has_residual: bool) -> tuple[int, int, np.float32, np.float32]:
    """(has_residual, activation, alpha, beta): the epilogue arguments of a Convolution kernel."""
    return (int(has_residual), *fused_activation(attrs))
