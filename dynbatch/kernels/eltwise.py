"""Eltwise: y = ((x0 op x1) op x2) ... element by element, for rows < n, with broadcasting.

Inputs have equal rank (2 to 4) and the same batch; each other dim of an input equals the
output's or is 1 (broadcast along it). ``sum`` is sum_i coeff[i] * x_i; the other operations
(``ELTWISE_CODES``) ignore coeff: sub, mul, div, max, min, squared_diff (a - b)^2, pow a ** b.
When every input has the output's shape, a flat loop runs instead of the broadcasting one.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from ..config import CHUNK
from .views import as_4d, as_rows

SUM, SUB, MUL, DIV, MAX, MIN, SQUARED_DIFF, POW = range(8)

#: Eltwise operation name (as in the normalized attributes) -> the code the kernels switch on.
ELTWISE_CODES = {
    "sum": SUM,
    "sub": SUB,
    "mul": MUL,
    "div": DIV,
    "max": MAX,
    "min": MIN,
    "squared_diff": SQUARED_DIFF,
    "pow": POW,
}


@njit(**SCALAR_FUNCTION)
def eltwise_value(a, b, op_code):
    """a op b. For sum the caller has already multiplied each operand by its coeff."""
    if op_code == SUM:
        return a + b
    if op_code == SUB:
        return a - b
    if op_code == MUL:
        return a * b
    if op_code == DIV:
        # Inlined into a prange body, which follows NumPy's error model: x / 0 gives inf or NaN.
        return a / b
    # max and min test a != a so that a NaN on either side comes out, as with np.maximum.
    if op_code == MAX:
        return a if (a > b or a != a) else b
    if op_code == MIN:
        return a if (a < b or a != a) else b
    if op_code == SQUARED_DIFF:
        difference = a - b
        return difference * difference
    # POW
    return a**b


@njit(**SCALAR_FUNCTION)
def fold_span(inputs, flat_destination, start, stop, coeff, op_code):
    """flat_destination[i] = the fold of inputs[k][i] for start <= i < stop."""
    for i in range(start, stop):
        accumulator = coeff[0] * inputs[0][i]
        for k in range(1, len(inputs)):
            accumulator = eltwise_value(accumulator, coeff[k] * inputs[k][i], op_code)
        flat_destination[i] = accumulator


@njit(**PARALLEL_KERNEL)
def eltwise_same_shape_cpu(n, inputs, destination, coeff, op_code):
    """inputs: tuple of flat (max_batch * per_sample,) float32 views of inputs with the output's
    shape; destination: (max_batch, per_sample) float32; coeff: one float32 per input. Writes
    rows < n, i.e. the first n * per_sample elements. ``destination`` may be one of the inputs.
    """
    total = n * destination.shape[1]
    flat_destination = destination.reshape(-1)
    for chunk in prange((total + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(total, start + CHUNK)
        # Each branch passes a constant code: the switch in eltwise_value then folds away and
        # the inner loop vectorises, where a switch on a variable inside it would not.
        if op_code == SUM:
            fold_span(inputs, flat_destination, start, stop, coeff, SUM)
        elif op_code == SUB:
            fold_span(inputs, flat_destination, start, stop, coeff, SUB)
        elif op_code == MUL:
            fold_span(inputs, flat_destination, start, stop, coeff, MUL)
        elif op_code == DIV:
            fold_span(inputs, flat_destination, start, stop, coeff, DIV)
        elif op_code == MAX:
            fold_span(inputs, flat_destination, start, stop, coeff, MAX)
        elif op_code == MIN:
            fold_span(inputs, flat_destination, start, stop, coeff, MIN)
        elif op_code == SQUARED_DIFF:
            fold_span(inputs, flat_destination, start, stop, coeff, SQUARED_DIFF)
        else:
            fold_span(inputs, flat_destination, start, stop, coeff, POW)


@njit(**SCALAR_FUNCTION)
def broadcast_read(x, b, c, h, w):
    """x[b, c, h, w], read at index 0 along every axis where x has size 1 (broadcast)."""
    return x[b, min(c, x.shape[1] - 1), min(h, x.shape[2] - 1), min(w, x.shape[3] - 1)]


@njit(**PARALLEL_KERNEL)
def eltwise_cpu(n, inputs, destination, coeff, op_code):
    """inputs: tuple of two or more (max_batch, Ci, Hi, Wi) float32, each dim equal to the
    output's or 1; destination: (max_batch, C, H, W) float32; coeff: one float32 per input.
    Writes rows < n.

    One parallel iteration per output line (row, channel, h), w innermost. Each element is folded
    in a register before it is stored, so ``destination`` may be one of the inputs (in place).
    """
    # The switch on op_code stays inside the loop. Dispatching per chunk as the flat kernel does
    # gains nothing here (measured); only one prange loop per constant code made the w loop
    # vectorise, about twice as fast, but the kernel then took ten times longer to compile
    # (about 15 s per number of inputs).
    channels, height, width = destination.shape[1], destination.shape[2], destination.shape[3]
    for line in prange(n * channels * height):
        b = line // (channels * height)
        c = (line // height) % channels
        h = line % height
        for w in range(width):
            accumulator = coeff[0] * broadcast_read(inputs[0], b, c, h, w)
            for k in range(1, len(inputs)):
                operand = coeff[k] * broadcast_read(inputs[k], b, c, h, w)
                accumulator = eltwise_value(accumulator, operand, op_code)
            destination[b, c, h, w] = accumulator


def eltwise_coeff(attrs, count):
    """One float32 coefficient per input (float64 ones would make the kernels' math float64).
    Only sum uses coeff; 1 for the other operations keeps a single multiply in the loop (exact for
    every value, inf and NaN included) instead of a branch."""
    if attrs["operation"] == "sum":
        return tuple(np.float32(value) for value in attrs["coeff"])
    return (np.float32(1.0),) * count


def cpu_step(attrs, inputs, outputs):
    operation = attrs["operation"]
    coeff = eltwise_coeff(attrs, len(inputs))
    op_code = int(ELTWISE_CODES[operation])
    destination = outputs[0]
    if all(x.shape == destination.shape for x in inputs):
        flat_inputs = tuple(x.reshape(-1) for x in inputs)
        return eltwise_same_shape_cpu, (flat_inputs, as_rows(destination), coeff, op_code)
    inputs_4d = tuple(as_4d(x) for x in inputs)
    return eltwise_cpu, (inputs_4d, as_4d(destination), coeff, op_code)


# GPU ------------------------------------------------------------------------------------------

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def eltwise_same_shape_cuda(n, inputs, destination, per_sample, coeff, op_code):
    """inputs: tuple of flat (max_batch * per_sample,) float32 views of inputs with the output's
    shape; destination: flat, likewise; coeff: one float32 per input. Writes the first n rows, one
    element per thread, folded in a register (``destination`` may be one of the inputs)."""
    for i in range(cuda.grid(1), n * per_sample, cuda.gridsize(1)):
        accumulator = coeff[0] * inputs[0][i]
        for k in range(1, len(inputs)):
            accumulator = eltwise_value(accumulator, coeff[k] * inputs[k][i], op_code)
        destination[i] = accumulator


@cuda_kernel
def eltwise_cuda(n, inputs, destination, coeff, op_code):
    """inputs: tuple of two or more (max_batch, Ci, Hi, Wi) float32, each dim equal to the
    output's or 1; destination: (max_batch, C, H, W) float32. Writes rows < n, one element per
    thread with w fastest; an input of size 1 along an axis is read at index 0 there."""
    channels, height, width = destination.shape[1], destination.shape[2], destination.shape[3]
    for i in range(cuda.grid(1), n * channels * height * width, cuda.gridsize(1)):
        w = i % width
        h = (i // width) % height
        c = (i // (width * height)) % channels
        b = i // (width * height * channels)
        x = inputs[0]
        accumulator = coeff[0] * x[b, min(c, x.shape[1] - 1), min(h, x.shape[2] - 1), min(w, x.shape[3] - 1)]
        for k in range(1, len(inputs)):
            x = inputs[k]
            operand = coeff[k] * x[b, min(c, x.shape[1] - 1), min(h, x.shape[2] - 1), min(w, x.shape[3] - 1)]
            accumulator = eltwise_value(accumulator, operand, op_code)
        destination[b, c, h, w] = accumulator


def gpu_step(attrs, inputs, outputs):
    coeff = eltwise_coeff(attrs, len(inputs))
    op_code = int(ELTWISE_CODES[attrs["operation"]])
    destination = as_rows(outputs[0])
    per_sample = destination.shape[1]
    if all(x.shape == outputs[0].shape for x in inputs):
        flat_inputs = tuple(x.reshape(-1) for x in inputs)
        args = (flat_inputs, destination.reshape(-1), per_sample, coeff, op_code)
        return elementwise_launch(eltwise_same_shape_cuda, per_sample), args
    args = (tuple(as_4d(x) for x in inputs), as_4d(outputs[0]), coeff, op_code)
    return elementwise_launch(eltwise_cuda, per_sample), args
