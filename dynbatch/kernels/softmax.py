"""SoftMax over one axis: y = exp(x - max) / sum(exp(x - max)), max and sum taken along the axis.

Input and output (N, ...) of rank 2 to 4 share a shape and are read as (N, outer, length, inner)
around the axis; subtracting the maximum keeps ``exp`` from overflowing.

The CPU kernel works 8 floats at a time, in LLVM IR as the GEMM micro-kernel is: Numba calls the
C library's ``expf`` once per element, which took 24 us for 2 rows of 1000 classes (MobileNet's
last layer at n = 2) where ONNX Runtime takes 13; alone, 11 us against 3 now.
"""
import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from .gemm import _LANE, _VECTOR, _float_pointer, _splat, _store_lanes, _vector_at
from .pooling import _load, _nan_max
from .views import around_axis

#: Up to this many elements (rows < n) in at most SERIAL_TASKS tasks, ``softmax_cpu`` runs in the
#: calling thread: a parallel region costs about what 8 rows of 1000 classes take (9 us).
SERIAL_ELEMENTS = 1 << 13
#: (Each task has costs of its own: 1024 softmaxes of 7 classes took 1.3x the time in one thread.)
SERIAL_TASKS = 64

#: Floats per vector.
LANES = 8

# exp(x) = 2**k * exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln 2 / 2, ln 2 / 2]: exp(r) by
# Cephes' degree-7 polynomial for expf (1 + r + r**2 (p5 + r (p4 + ...))), ln 2 in two parts so
# that k ln 2 is exact, 2**k built in the exponent's bits. Within 2 float32 ulps of expf.
_LOG2_E = 1.44269504088896341
_LN2_HIGH, _LN2_LOW = 0.693359375, -2.12194440e-4
_EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                   5.0000001201e-1)
#: Below ln(FLT_MIN), exp(x) is denormal or 0: taken as 0 (2**k would leave the exponent's range).
_EXP_LOWEST = -87.33654475
#: Above this, 2**k would overflow the exponent: taken as inf. softmax's x - max is never above 0.
_EXP_HIGHEST = 88.0


def _call(builder, name, *vectors):
    """An LLVM intrinsic of 8-wide floats (llvm.fma, llvm.floor, ...)."""
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * len(vectors)),
                                              f"llvm.{name}.v8f32")
    return builder.call(function, list(vectors))


def _exp(builder, x):
    """exp of an 8-wide vector: 0 below _EXP_LOWEST (and at -inf), inf above _EXP_HIGHEST, NaN
    where x is."""
    def constant(value):
        return ir.Constant(_VECTOR, [value] * LANES)

    clamped = builder.select(builder.fcmp_ordered("<", x, constant(_EXP_LOWEST)), constant(_EXP_LOWEST), x)
    clamped = builder.select(builder.fcmp_ordered(">", clamped, constant(_EXP_HIGHEST)), constant(_EXP_HIGHEST),
                             clamped)
    k = _call(builder, "floor", _call(builder, "fma", clamped, constant(_LOG2_E), constant(0.5)))
    r = _call(builder, "fma", k, constant(-_LN2_HIGH), clamped)
    r = _call(builder, "fma", k, constant(-_LN2_LOW), r)
    polynomial = constant(_EXP_POLYNOMIAL[0])
    for coefficient in _EXP_POLYNOMIAL[1:]:
        polynomial = _call(builder, "fma", polynomial, r, constant(coefficient))
    exp_r = _call(builder, "fma", polynomial, builder.fmul(r, r), builder.fadd(r, constant(1.0)))
    ints = ir.VectorType(ir.IntType(32), LANES)
    exponent = builder.shl(builder.add(builder.fptosi(k, ints), ir.Constant(ints, [127] * LANES)),
                           ir.Constant(ints, [23] * LANES))
    value = builder.fmul(exp_r, builder.bitcast(exponent, _VECTOR))
    value = builder.select(builder.fcmp_ordered("<", x, constant(_EXP_LOWEST)), constant(0.0), value)
    value = builder.select(builder.fcmp_ordered(">", x, constant(_EXP_HIGHEST)), constant(np.inf), value)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, value)


def _across_lanes(builder, vector, combine):
    """combine folded across the 8 lanes of ``vector``: a scalar (three shuffles)."""
    for width in (4, 2, 1):
        lanes = ir.Constant(ir.VectorType(_LANE, LANES), [(lane + width) % LANES for lane in range(LANES)])
        vector = combine(vector, builder.shuffle_vector(vector, ir.Constant(_VECTOR, ir.Undefined), lanes))
    return builder.extract_element(vector, ir.Constant(_LANE, 0))


def _over_vectors(builder, length, emit):
    """emit(at, count) for at = 0, 8, 16, ... < length: count None for a whole vector of 8, the
    last one's count (an LLVM integer, 1 to 7) where length is no multiple of 8."""
    eight = ir.Constant(length.type, LANES)
    whole = builder.sdiv(length, eight)
    with cgutils.for_range(builder, whole) as loop:
        emit(builder.mul(loop.index, eight), None)
    at = builder.mul(whole, eight)
    rest = builder.sub(length, at)
    with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(length.type, 0))):
        emit(at, rest)


def _store(builder, value, pointer, count):
    """value into the 8 floats from ``pointer`` on; where ``count`` (under 8), into that many by a
    masked store, which touches nothing past them."""
    if count is None:
        builder.store(value, _vector_at(builder, pointer, 0), align=4)
    else:
        _store_lanes(builder, value, pointer, count)


@intrinsic
def softmax_run(typingctx, source, source_offset, destination, destination_offset, length):
    """softmax_run(source, source_offset, destination, destination_offset, length): the softmax
    of the ``length`` contiguous floats from source[source_offset] on, into destination from
    destination_offset on (the same place is fine): one pass for the max, one for the
    exponentials (stored) and their sum, one to scale them, 8 floats at a time, the last ones
    by masked loads and stores. No bounds checks."""
    sig = types.void(source, types.intp, destination, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source, source_offset, destination, destination_offset, length = args
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[2], destination, destination_offset)
        largest = cgutils.alloca_once_value(builder, ir.Constant(_VECTOR, [-np.inf] * LANES))
        total = cgutils.alloca_once_value(builder, ir.Constant(_VECTOR, [0.0] * LANES))

        def find_max(at, count):
            value = _load(builder, builder.gep(source_ptr, [at]), count, -np.inf)
            builder.store(_nan_max(builder, builder.load(largest), value), largest)

        _over_vectors(builder, length, find_max)
        shift = _splat(builder, _across_lanes(builder, builder.load(largest),
                                              lambda a, b: _nan_max(builder, a, b)))

        def exponentials(at, count):  # (masked lanes: -inf - shift, whose exp is 0)
            value = _exp(builder, builder.fsub(_load(builder, builder.gep(source_ptr, [at]), count, -np.inf), shift))
            _store(builder, value, builder.gep(destination_ptr, [at]), count)
            builder.store(builder.fadd(builder.load(total), value), total)

        _over_vectors(builder, length, exponentials)
        scale = _splat(builder, builder.fdiv(ir.Constant(ir.FloatType(), 1.0),
                                             _across_lanes(builder, builder.load(total), builder.fadd)))

        def rescale(at, count):
            pointer = builder.gep(destination_ptr, [at])
            _store(builder, builder.fmul(_load(builder, pointer, count, 0.0), scale), pointer, count)

        _over_vectors(builder, length, rescale)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def softmax_lanes(typingctx, source, source_offset, destination, destination_offset, length, stride, count):
    """softmax_lanes(source, source_offset, destination, destination_offset, length, stride,
    count): the softmaxes of ``count`` (1 to 8) side-by-side vectors, element k of vector j at
    offset + k * stride + j for k < length, one in each lane: max, exponentials and sum, scale,
    each a pass over k. Where count < 8, masked loads and stores touch nothing past it. No bounds
    checks."""
    sig = types.void(source, types.intp, destination, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source, source_offset, destination, destination_offset, length, stride, count = args
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[2], destination, destination_offset)
        largest = cgutils.alloca_once_value(builder, ir.Constant(_VECTOR, [-np.inf] * LANES))
        total = cgutils.alloca_once_value(builder, ir.Constant(_VECTOR, [0.0] * LANES))

        def over_k(emit):
            with cgutils.for_range(builder, length) as loop:
                at = builder.mul(loop.index, stride)
                emit(builder.gep(source_ptr, [at]), builder.gep(destination_ptr, [at]))

        def passes(whole):  # straight-line code for 8 lanes, masked code for fewer
            lanes = None if whole else count
            over_k(lambda x, y: builder.store(
                _nan_max(builder, builder.load(largest), _load(builder, x, lanes, -np.inf)), largest))
            shift = builder.load(largest)

            def exponentials(x, y):
                value = _exp(builder, builder.fsub(_load(builder, x, lanes, -np.inf), shift))
                _store(builder, value, y, lanes)
                builder.store(builder.fadd(builder.load(total), value), total)

            over_k(exponentials)
            scale = builder.fdiv(ir.Constant(_VECTOR, [1.0] * LANES), builder.load(total))
            over_k(lambda x, y: _store(builder, builder.fmul(_load(builder, y, lanes, 0.0), scale), y, lanes))

        with builder.if_else(builder.icmp_signed("==", count, ir.Constant(count.type, LANES))) as (whole, part):
            with whole:
                passes(True)
            with part:
                passes(False)
        return context.get_dummy_value()

    return sig, codegen


@njit(**SCALAR_FUNCTION)
def softmax_vectors(source, destination, task, groups, length, inner):
    """Task ``task`` of softmax_cpu: the softmax vectors of one (row, outer) line, the ``task %
    groups``-th group of 8 positions along inner (inner == 1: the line's one contiguous vector)."""
    line = task // groups
    first = (task - line * groups) * LANES
    offset = line * length * inner + first
    if inner == 1:
        softmax_run(source, offset, destination, offset, length)
    else:
        softmax_lanes(source, offset, destination, offset, length, inner, min(LANES, inner - first))


@njit(**PARALLEL_KERNEL)
def softmax_cpu(n, source, destination):
    """source, destination: (max_batch, outer, length, inner), C-contiguous (the same array is
    fine); softmax along ``length`` for rows < n. A task per (row, outer) line and group of 8
    positions along inner, so that n = 1 with outer * inner > 1 still keeps every core busy; all
    in the calling thread up to SERIAL_ELEMENTS and SERIAL_TASKS."""
    _, outer, length, inner = source.shape
    groups = (inner + LANES - 1) // LANES
    tasks = n * outer * groups
    if n * outer * length * inner <= SERIAL_ELEMENTS and tasks <= SERIAL_TASKS:
        for task in range(tasks):
            softmax_vectors(source, destination, task, groups, length, inner)
    else:
        for task in prange(tasks):
            softmax_vectors(source, destination, task, groups, length, inner)


def cpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    source, destination = inputs[0], outputs[0]
    if attrs["flatten"]:  # one softmax over all the axes from `axis` on (ONNX Softmax before opset 13)
        source = source.reshape(source.shape[:axis] + (-1,))
        destination = destination.reshape(destination.shape[:axis] + (-1,))
    return softmax_cpu, (around_axis(source, axis), around_axis(destination, axis))


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from numba import float32  # noqa: E402

from .launch import block_per_row_launch, cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def softmax_cuda(n, source, destination):
    """source, destination: (max_batch, outer, length, inner) with inner > 1; softmax along
    ``length`` for rows < n. One thread per softmax vector, ``inner`` fastest: at each step k the
    threads of a warp read consecutive addresses."""
    outer, length, inner = source.shape[1], source.shape[2], source.shape[3]
    for index in range(cuda.grid(1), n * outer * inner, cuda.gridsize(1)):
        position = index % inner
        block = (index // inner) % outer
        row = index // (inner * outer)
        largest = source[row, block, 0, position]
        for k in range(1, length):
            largest = max(largest, source[row, block, k, position])
        total = np.float32(0.0)
        for k in range(length):
            value = math.exp(source[row, block, k, position] - largest)
            destination[row, block, k, position] = value
            total += value
        scale = np.float32(1.0) / total
        for k in range(length):
            destination[row, block, k, position] *= scale


@cuda_kernel
def softmax_rows_cuda(n, source, destination):
    """source, destination: (max_batch, outer, length, 1); softmax along ``length`` for rows < n.
    One block per softmax vector: its threads stride along the vector (consecutive threads,
    consecutive addresses) and combine their maxima, then their sums, in shared memory."""
    outer, length = source.shape[1], source.shape[2]
    thread, threads = cuda.threadIdx.x, cuda.blockDim.x
    partial = cuda.shared.array(0, float32)  # one value per thread (dynamic shared memory)
    for vector in range(cuda.blockIdx.x, n * outer, cuda.gridDim.x):
        row = vector // outer
        block = vector - row * outer
        largest = np.float32(-math.inf)
        for k in range(thread, length, threads):
            largest = max(largest, source[row, block, k, 0])
        partial[thread] = largest
        cuda.syncthreads()
        active = threads  # tree reduction over any number of threads: fold the upper half down
        while active > 1:
            half = (active + 1) // 2
            if thread + half < active:
                partial[thread] = max(partial[thread], partial[thread + half])
            cuda.syncthreads()
            active = half
        largest = partial[0]
        cuda.syncthreads()  # every thread has read the maximum before partial is reused
        total = np.float32(0.0)
        for k in range(thread, length, threads):
            value = math.exp(source[row, block, k, 0] - largest)
            destination[row, block, k, 0] = value
            total += value
        partial[thread] = total
        cuda.syncthreads()
        active = threads
        while active > 1:
            half = (active + 1) // 2
            if thread + half < active:
                partial[thread] += partial[thread + half]
            cuda.syncthreads()
            active = half
        scale = np.float32(1.0) / partial[0]
        cuda.syncthreads()  # every thread has read the sum before the next vector reuses partial
        for k in range(thread, length, threads):
            destination[row, block, k, 0] *= scale


def gpu_step(attrs, inputs, outputs):
    axis = int(attrs["axis"])
    source, destination = inputs[0], outputs[0]
    if attrs["flatten"]:  # one softmax over all the axes from `axis` on
        source = source.reshape(*source.shape[:axis], -1)
        destination = destination.reshape(*destination.shape[:axis], -1)
    source, destination = around_axis(source, axis), around_axis(destination, axis)
    outer, inner = source.shape[1], source.shape[3]
    if inner == 1:  # the softmax axis is the innermost: a block walks each vector
        return block_per_row_launch(softmax_rows_cuda, outer), (source, destination)
    return elementwise_launch(softmax_cuda, outer * inner), (source, destination)
