"""A register-blocked GEMM micro-kernel and the weight packing it reads, for the convolution
kernel that packs its input itself (``convolution.convolution_gemm_cpu``) and its Winograd variant
(``convolution.convolution_winograd_cpu``, through ``product_panel``), the deconvolution kernel
that keeps each output plane's product in cache (``deconvolution.deconvolution_packed_cpu``), and
FullyConnected (``fully_connected.fully_connected_cpu``).

BLAS multiplies two ready matrices; a convolution would first have to unfold its input (im2col)
into one, and BLAS then copies that into its own packed panels again. Packing straight from the
image into the panels the micro-kernel reads saves both passes, keeps every thread in Numba's one
thread pool, and leaves the epilogue (bias, residual, activation) to run while the block is in cache.

The micro-kernel is the BLIS design: ``MR`` rows by ``NR`` columns of the product held in vector
registers while it walks the reduction, each step one broadcast of A times a 16-float row of B.
Numba has no vector types of its own, so it is written in LLVM IR (``numba.extending.intrinsic``):
LLVM then keeps the accumulators in registers and emits fused multiply-adds, a row of 16 floats
as two 8-wide operations on AVX2 (four on SSE: slower, still right) and one with AVX-512, where
two or four panels of A go to one call (``WIDE_VECTORS``, ``micro_kernel_panels``), or two panels
of A and two of B (12 x 32, ``micro_kernel_pair_panels``).

Numba caches a kernel on disk keyed on its own source file: after editing this file, delete
``dynbatch/kernels/__pycache__``, or the convolution, deconvolution and FullyConnected kernels
keep the old micro-kernel.

Packed layouts (element offsets into 1-d float32 arrays):
- A (the weights, packed once at load by ``pack_weights``): per group, per reduction block of
  ``KC`` rows starting at ``pc`` (length kc), per panel of up to ``MR`` output channels starting at
  row ``m0`` (height mr, padded with zero rows): ``a[p * mr + i]`` = weights[m0 + i, pc + p].
  The panel starts at ``group_offset + pc * padded_rows + m0 * kc``.
- B (packed by the convolution for each block of columns): panel ``jp`` of ``NR`` columns holds
  ``b[(jp * kc + p) * NR + j]`` = column ``jp * NR + j``, reduction row ``pc + p``. Where B's
  rows already lie in memory NR-contiguous (a 1x1 convolution's input), the micro-kernel reads
  them in place with a row stride instead.
"""
import contextlib

import llvmlite.binding as binding
import llvmlite.ir as ir
import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import SCALAR_FUNCTION, SHARED_STEP
from .activation import CLAMP, RELU, RELU6

#: Rows and columns of the product a micro-kernel call keeps in registers: 6 x 16 float32 is 12
#: AVX2 registers of accumulators, 2 of B and 1 broadcast of A: 15 of the 16. (With AVX-512 a
#: call takes up to four such panels: 24 of its 32 registers.)
MR, NR = 6, 16
#: Reduction rows per packed block: a 6 x KC panel of A and a KC x 16 panel of B stay in L1.
KC = 256
#: A panels multiplied with every B panel of a task before the next ones: 16 x 6 x KC floats
#: (96 KB) stay in L2.
PANELS_PER_BLOCK = 16


def _compiles_for_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512F: the features it compiles for are
    NUMBA_CPU_FEATURES where set, else the host's (even under a NUMBA_CPU_NAME of its own)."""
    if numba.config.CPU_FEATURES is not None:
        return "+avx512f" in numba.config.CPU_FEATURES.split(",")
    return bool(binding.get_host_cpu_features().get("avx512f", False))


#: AVX-512: 32 vector registers of 16 floats. A row of the 6 x 16 kernel is then one register, and
#: ``micro_kernel_panels`` multiplies two or four A panels a call (12 x 16 or 24 x 16: 12 or 24
#: accumulators), which the 16 AVX2 registers could not hold.
WIDE_VECTORS = _compiles_for_avx512()
#: A panels a whole-panel call of ``micro_kernel_panels`` takes where it can.
PANELS_PER_CALL = 4 if WIDE_VECTORS else 1

_FLOAT = ir.FloatType()
_VECTOR = ir.VectorType(_FLOAT, 8)
_LANE = ir.IntType(32)
_ZERO = ir.Constant(_VECTOR, [0.0] * 8)


def _float_pointer(context, builder, array_type, array, offset):
    """Pointer to element ``offset`` of a 1-d float32 Numba array, or of the floats from an
    address (an integer, ``address``) on."""
    if isinstance(array_type, types.Integer):
        return builder.gep(builder.inttoptr(array, _FLOAT.as_pointer()), [offset])
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


@njit(**SCALAR_FUNCTION)
def address(array):
    """The address of a float32 array's first element, which the kernels here take in place of
    the array (``_float_pointer``). A loop that picks one of two arrays per micro-kernel call
    (packed panels or x in place; out or a task-local product) passes their addresses: Numba
    counts the references of an array variable at each assignment, two atomics per call that the
    threads contend for where the array is shared. The caller keeps the array alive."""
    return np.intp(array.ctypes.data)


def _vector_at(builder, pointer, offset, width=8):
    """Pointer to the ``width`` floats from ``pointer[offset]`` on (offset: an LLVM integer or an
    int)."""
    if isinstance(offset, int):
        offset = ir.Constant(ir.IntType(64), offset)
    return builder.bitcast(builder.gep(pointer, [offset]), ir.VectorType(_FLOAT, width).as_pointer())


def _prefetch(builder, pointer, write: bool):
    """Ask for the cache line holding ``pointer`` (any LLVM pointer), to read or to write, into
    every cache level. A prefetch never faults."""
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] + [ir.IntType(32)] * 3),
        "llvm.prefetch.p0i8")
    flags = [ir.Constant(ir.IntType(32), value) for value in (int(write), 3, 1)]  # (rw, locality, data)
    builder.call(function, [builder.bitcast(pointer, ir.IntType(8).as_pointer())] + flags)


@contextlib.contextmanager
def steps_not_unrolled(builder, count):
    """``cgutils.for_range(builder, count)`` whose loop LLVM is told not to unroll
    (``llvm.loop.unroll.disable``), for a register-blocked loop that holds all the registers:
    unrolled by 2, the 12 x 8 kernel's loads of A for both steps went ahead of its multiply-adds
    and 8 of its 12 accumulators lived on the stack (0.90x-0.94x the time of two 6 x 16 calls on
    the same panels; 0.56x not unrolled, its multiply-adds' share)."""
    index_type = count.type
    condition = builder.append_basic_block("steps.cond")
    body = builder.append_basic_block("steps.body")
    end = builder.append_basic_block("steps.end")
    start = builder.basic_block
    builder.branch(condition)
    with builder.goto_block(condition):
        index = builder.phi(index_type, name="steps.index")
        builder.cbranch(builder.icmp_signed("<", index, count), body, end)
    with builder.goto_block(body):
        yield cgutils.Loop(index, lambda: builder.branch(end))
        last = builder.basic_block
        following = builder.add(index, ir.Constant(index_type, 1))
        back = builder.branch(condition)
        module = builder.module
        no_unroll = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
        # A loop's ID is a node whose first operand is itself, which add_metadata cannot make: it
        # makes a node of this loop's own (the name keeps it from being shared), then points it
        # at itself.
        loop_id = module.add_metadata([no_unroll, no_unroll, ir.MetaDataString(module, f"steps.{id(back)}")])
        loop_id.operands = (loop_id, no_unroll)
        back.set_metadata("llvm.loop", loop_id)
    index.add_incoming(ir.Constant(index_type, 0), start)
    index.add_incoming(following, last)
    builder.position_at_end(end)


def switch_on(builder, value, cases, emit):
    """emit(case) in a branch of its own for each constant case of ``value`` (an LLVM integer), so
    that each gets straight-line code for its literal (a layer's value is the same at every call,
    so the branch is always predicted); nothing for any other value."""
    done = builder.append_basic_block("switched")
    switch = builder.switch(value, done)
    for case in cases:
        block = builder.append_basic_block(f"case_{case}")
        switch.add_case(ir.Constant(value.type, case), block)
        builder.position_at_end(block)
        emit(case)
        builder.branch(done)
    builder.position_at_end(done)


def _lane_mask(builder, count, width=8):
    """The ``width`` lanes' mask of the first ``count`` (an LLVM integer): lane i set where i < count."""
    lanes = ir.VectorType(_LANE, width)
    splat = builder.insert_element(ir.Constant(lanes, ir.Undefined), builder.trunc(count, _LANE), ir.Constant(_LANE, 0))
    splat = builder.shuffle_vector(splat, ir.Constant(lanes, ir.Undefined), ir.Constant(lanes, [0] * width))
    return builder.icmp_signed("<", ir.Constant(lanes, list(range(width))), splat)


def _load_lanes(builder, pointer, count, fill, width=8):
    """The first ``count`` (an LLVM integer, at most ``width``) of the ``width`` floats from
    ``pointer`` on, the other lanes ``fill``: a masked load, which reads nothing past them (so
    stays inside the array)."""
    mask = _lane_mask(builder, count, width)
    vector = ir.VectorType(_FLOAT, width)
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector.as_pointer(), ir.IntType(32), mask.type, vector]),
        f"llvm.masked.load.v{width}f32.p0v{width}f32")
    return builder.call(load, [_vector_at(builder, pointer, 0, width), ir.Constant(ir.IntType(32), 4), mask,
                               ir.Constant(vector, [fill] * width)])


def _store_lanes(builder, value, pointer, count):
    """Store the first ``count`` (an LLVM integer, at most the vector's width: 8 or 16) lanes of
    ``value`` from ``pointer`` on: a masked store, which writes nothing past them."""
    width = value.type.count
    mask = _lane_mask(builder, count, width)
    vector = ir.VectorType(_FLOAT, width)
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), ir.IntType(32), mask.type]),
        f"llvm.masked.store.v{width}f32.p0v{width}f32")
    builder.call(store, [value, _vector_at(builder, pointer, 0, width), ir.Constant(ir.IntType(32), 4), mask])


@intrinsic
def copy_lanes(typingctx, source, source_offset, destination, destination_offset, count):
    """copy_lanes(source, source_offset, destination, destination_offset, count):
    destination[destination_offset + i] = source[source_offset + i] for i < count, 1 <= count <= 8:
    one masked 8-wide load and store, which touch nothing past the count (a short row: a loop
    would be a call to memmove, which costs more than the copy). No bounds checks."""
    sig = types.void(source, types.intp, destination, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source_ptr = _float_pointer(context, builder, signature.args[0], args[0], args[1])
        destination_ptr = _float_pointer(context, builder, signature.args[2], args[2], args[3])
        count = args[4]
        _store_lanes(builder, _load_lanes(builder, source_ptr, count, 0.0), destination_ptr, count)
        return context.get_dummy_value()

    return sig, codegen


def _splat(builder, value, width=8):
    """A ``width``-wide vector of one float."""
    undef = ir.Constant(ir.VectorType(_FLOAT, width), ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undef, value, ir.Constant(_LANE, 0)), undef,
                                  ir.Constant(ir.VectorType(_LANE, width), [0] * width))


def _activate(builder, value, code, alpha, beta):
    """``epilogue``'s activation of a vector of floats (any width), for a code known while
    generating the code (the micro-kernel branches once per call to a store sequence made for its
    code): relu x > 0 ? x : alpha*x, relu6 and clamp min(max(x, low), high), each keeping NaN as
    ``activation.activation_value`` does; any other code (no activation) leaves x."""
    width = value.type.count
    zero = ir.Constant(value.type, [0.0] * width)

    def clip(low, high):
        low_clipped = builder.select(builder.fcmp_ordered("<", value, low), low, value)
        return builder.select(builder.fcmp_ordered(">", low_clipped, high), high, low_clipped)

    if code == RELU:
        leaky = builder.fmul(value, _splat(builder, alpha, width))
        return builder.select(builder.fcmp_ordered(">", value, zero), value, leaky)
    if code == RELU6:
        return clip(zero, ir.Constant(value.type, [6.0] * width))
    if code == CLAMP:
        return clip(_splat(builder, alpha, width), _splat(builder, beta, width))
    return value


def _branch(builder, condition, emit):
    """emit(True) where the runtime i1 ``condition`` holds, else emit(False): each branch gets
    straight-line code for its case."""
    with builder.if_else(condition) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)


def _branch_on_activation(builder, activation, emit):
    """emit(code) for the runtime activation code: RELU, RELU6, CLAMP, or None for any other."""
    def rest(codes):
        if not codes:
            emit(None)
            return
        is_code = builder.icmp_signed("==", activation, ir.Constant(activation.type, codes[0]))
        _branch(builder, is_code, lambda yes: emit(codes[0]) if yes else rest(codes[1:]))

    rest([RELU, RELU6, CLAMP])


def _fma_and_accumulators(builder, count, width):
    """(the llvm.fma intrinsic on ``width`` floats, ``count`` accumulators of that many zeros):
    allocas in the entry block, which LLVM promotes to registers."""
    row_vector = ir.VectorType(_FLOAT, width)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(row_vector, [row_vector] * 3),
                                         f"llvm.fma.v{width}f32")
    return fma, [cgutils.alloca_once_value(builder, ir.Constant(row_vector, [0.0] * width)) for _ in range(count)]


def _micro_kernel(mr: int, nr: int = NR, epilogue: bool = True, vectors: int = 1):
    """The intrinsic computing an ``mr`` x ``nr`` block, see ``micro_kernel_6``. Its A is mr // MR
    full panels of MR rows, each MR * kc floats after the one before, then where mr % MR is not 0
    one panel of that many rows: a layer's short last panel (4 rows, ``panel_layout``). Without
    ``epilogue``, ``finish`` is taken as False and only the two plain store sequences are made
    (half the code of a kernel that calls it, and of its compile time, is the epilogue's
    sixteen). With ``vectors`` 2, the block is mr x 2nr, two panels of B side by side (see
    ``micro_kernel_12x32``): the intrinsic then takes ``b_second`` after ``b_offset``."""
    full_rows, short_rows = mr - mr % MR, mr % MR

    def codegen(context, builder, signature, args, b_second):
        (kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
         biases, bias_offset, residual, has_residual, activation, alpha, beta) = args
        a_ptr = _float_pointer(context, builder, signature.args[1], a, a_offset)
        b_ptr = _float_pointer(context, builder, signature.args[3], b, b_offset)
        c_ptr = _float_pointer(context, builder, signature.args[6], c, c_offset)
        bias_ptr = _float_pointer(context, builder, signature.args[12], biases, bias_offset)
        residual_ptr = _float_pointer(context, builder, signature.args[14], residual, c_offset)
        fma, accumulators = _fma_and_accumulators(builder, mr * vectors, nr)
        # The block's rows of c (and of the residual) lie a whole row of the output apart, far
        # from each other and from anything the loop touches: fetch their cache lines now, so
        # that the loop hides the misses the stores would wait for.
        def fetch(pointer, write):
            for i in range(mr):
                row = builder.gep(pointer, [builder.mul(ldc, ir.Constant(ldc.type, i))])
                for last in range(0, vectors * nr, nr):  # (an unaligned vector spans two lines)
                    _prefetch(builder, builder.gep(row, [ir.Constant(ldc.type, last)]), write)
                _prefetch(builder, builder.gep(row, [ir.Constant(ldc.type, vectors * nr - 1)]), write)

        if not epilogue:
            finish = ir.Constant(ir.IntType(1), 0)
        with builder.if_then(builder.or_(accumulate, finish)):
            fetch(c_ptr, True)
        if epilogue:
            with builder.if_then(builder.and_(finish, has_residual)):
                fetch(residual_ptr, False)
        # (The 6 x 16 kernel and the others stay unrolled: not unrolled, whole layers took
        # 1.03x-1.13x the time at n = 1 and 8.)
        steps = steps_not_unrolled if mr * vectors > MR else cgutils.for_range
        with steps(builder, kc) as loop:
            b_row = builder.gep(b_ptr, [builder.mul(loop.index, ldb)])
            b_vectors = [builder.load(_vector_at(builder, b_row, 0 if v == 0 else b_second, nr), align=4)
                         for v in range(vectors)]
            a_row = builder.gep(a_ptr, [builder.mul(loop.index, ir.Constant(kc.type, MR))])
            short_row = builder.gep(a_ptr, [builder.add(builder.mul(kc, ir.Constant(kc.type, full_rows)),
                                                        builder.mul(loop.index, ir.Constant(kc.type, short_rows)))])
            for i in range(mr):
                # Row i of A: in full panel i // MR (each MR * kc floats), at i % MR; past
                # them, in the short panel.
                if i < full_rows:
                    panel_start = builder.mul(kc, ir.Constant(kc.type, i - i % MR))
                    a_pointer = builder.gep(a_row, [builder.add(panel_start, ir.Constant(kc.type, i % MR))])
                else:
                    a_pointer = builder.gep(short_row, [ir.Constant(kc.type, i - full_rows)])
                a_vector = _splat(builder, builder.load(a_pointer), nr)
                for v, b_vector in enumerate(b_vectors):
                    held = accumulators[i * vectors + v]
                    builder.store(builder.call(fma, [a_vector, b_vector, builder.load(held)]), held)

        def store(add_partial, finishing, add_residual, code):
            """The block's rows < rows into c: one sequence per combination of the flags
            (chosen once per call below), so that no store waits on a test."""
            for i in range(mr):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(rows.type, i), rows)):
                    offset = builder.mul(ldc, ir.Constant(ldc.type, i))
                    c_row, residual_row = builder.gep(c_ptr, [offset]), builder.gep(residual_ptr, [offset])
                    for v in range(vectors):
                        total = builder.load(accumulators[i * vectors + v])
                        if add_partial:
                            total = builder.fadd(builder.load(_vector_at(builder, c_row, v * nr, nr), align=4), total)
                        if finishing:
                            if add_residual:
                                shortcut = builder.load(_vector_at(builder, residual_row, v * nr, nr), align=4)
                                total = builder.fadd(total, shortcut)
                            bias = _splat(builder, builder.load(builder.gep(bias_ptr, [ir.Constant(ldc.type, i)])),
                                          nr)
                            total = _activate(builder, builder.fadd(total, bias), code, alpha, beta)
                        builder.store(total, _vector_at(builder, c_row, v * nr, nr), align=4)

        def finished(add_partial):
            _branch(builder, has_residual, lambda add_residual: _branch_on_activation(
                builder, activation, lambda code: store(add_partial, True, add_residual, code)))

        if not epilogue:
            _branch(builder, accumulate, lambda add_partial: store(add_partial, False, False, None))
            return context.get_dummy_value()
        _branch(builder, finish, lambda finishing: _branch(
            builder, accumulate,
            (lambda add_partial: finished(add_partial)) if finishing
            else (lambda add_partial: store(add_partial, False, False, None))))
        return context.get_dummy_value()

    def signature(a, b, c, biases, residual, second=()):
        return types.void(types.intp, a, types.intp, b, types.intp, *second, types.intp, c, types.intp, types.intp,
                          types.intp, types.boolean, types.boolean, biases, types.intp, residual, types.boolean,
                          types.intp, types.float32, types.float32)

    if vectors == 1:
        @intrinsic
        def kernel(typingctx, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                   biases, bias_offset, residual, has_residual, activation, alpha, beta):
            return signature(a, b, c, biases, residual), (
                lambda context, builder, sig, args: codegen(context, builder, sig, args, None))

        return kernel

    @intrinsic
    def pair_kernel(typingctx, kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, rows, accumulate,
                    finish, biases, bias_offset, residual, has_residual, activation, alpha, beta):
        def pair_codegen(context, builder, sig, args):
            # (b_second taken out: the rest are the one-panel kernel's arguments)
            return codegen(context, builder, signature(*(sig.args[i] for i in (1, 3, 7, 13, 15))),
                           args[:5] + args[6:], args[5])

        return signature(a, b, c, biases, residual, (types.intp,)), pair_codegen

    return pair_kernel


#: micro_kernel_6(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
#: biases, bias_offset, residual, has_residual, activation, alpha, beta): the block
#: P[i, j] = sum_{p < kc} a[a_offset + p*6 + i] * b[b_offset + p*ldb + j], i < 6, j < NR, stored
#: for i < rows as c[c_offset + i*ldc + j] = (c[...] if accumulate else 0) + P[i, j], then, where
#: ``finish``, through the ``epilogue``: f(that + residual[c_offset + i*ldc + j] (if has_residual)
#: + biases[bias_offset + i]) with f the activation code (relu, relu6, clamp or none) and its
#: alpha, beta. ldb is NR for a packed panel of B, or the row length of a matrix read in place.
#: No bounds checks: the caller sizes every array.
micro_kernel_6 = _micro_kernel(6)
#: The same for 4-row panels: the last panel of a channel count that leaves 1 to 4 rows.
micro_kernel_4 = _micro_kernel(4)


@njit(**SCALAR_FUNCTION)
def micro_kernel_panel(full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                       biases, bias_offset, residual, has_residual, activation, alpha, beta):
    """``micro_kernel_6`` where A's panel is a full one of MR rows (``full``), else
    ``micro_kernel_4``: the last panel of a row count that leaves 1 to 4 (``panel_layout``)."""
    if full:
        micro_kernel_6(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                       biases, bias_offset, residual, has_residual, activation, alpha, beta)
    else:
        micro_kernel_4(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                       biases, bias_offset, residual, has_residual, activation, alpha, beta)


#: The same for 12 and 24 rows: two or four consecutive full panels of A, each MR * kc floats
#: after the one before (``micro_kernel_panels``, with WIDE_VECTORS only) ...
micro_kernel_12 = _micro_kernel(12)
micro_kernel_24 = _micro_kernel(24)
#: ... and for one or two full panels followed by the short last panel (4 rows): 10 and 16 rows.
#: Alone, the 4-row panel takes as long as a 6-row one, and each half a 12-row call (each step
#: waits on its few accumulators' multiply-adds), so where a layer's last rows left 12 + 4
#: (ResNet's 64 and 256 outputs) their calls took the time of 24 rows, and 6 + 4 (128, 512) of
#: 12. (With 22 and 28-row kernels too, a cold load compiled for 1.4x as long.)
micro_kernel_10 = _micro_kernel(10)
micro_kernel_16 = _micro_kernel(16)


@njit(**SCALAR_FUNCTION)
def panels_a_call(following, remaining):
    """A panels one call of ``micro_kernel_panels`` (or ``product_panels``) takes, of the
    ``remaining`` panels from the first on that the caller takes, the first ``following`` of them
    MR-row ("full": a last panel padded to MR rows counts) and the one after them, where
    remaining = following + 1, a layer's short last panel of 4 rows (``panel_layout``). With
    WIDE_VECTORS: all of them where they are the short one after one or two full ones (10 or 16
    rows); two (12 x 16) where three or four full ones are left before the short one, which then
    joins the next call; else four (24 x 16) where there are four, two where there are two. Else
    one."""
    short = remaining > following
    if WIDE_VECTORS and short and 1 <= following <= 2:
        return remaining
    if WIDE_VECTORS and following >= 4 and not (short and following == 4):
        return 4
    if WIDE_VECTORS and following >= 2:
        return 2
    return 1


@njit(**SCALAR_FUNCTION)
def micro_kernel_panels(following, remaining, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                        finish, biases, bias_offset, residual, has_residual, activation, alpha, beta):
    """``micro_kernel_panel`` for the A panel at a_offset and, with WIDE_VECTORS, the next ones
    with it (``panels_a_call(following, remaining)``): four full ones in one 24 x 16 call, two in
    one 12 x 16 call, or one or two and the short last one in one call of 10 or 16 rows. With
    AVX-512 (a core, A in L2, B in L1): two 6 x 16 calls 199 GFLOP/s, 12 x 16 223-246, 24 x 16
    240-250, the larger ones less held back where B's rows cross cache lines or the reduction is
    short. Stores rows < ``rows`` of the panels taken (c's row i, biases[bias_offset + i]).
    Returns how many it took."""
    taken = panels_a_call(following, remaining)
    rows = min(rows, taken * MR)
    short = taken > following  # (the call ends with the short panel)
    if taken == 1:
        micro_kernel_panel(not short, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                           finish, biases, bias_offset, residual, has_residual, activation, alpha, beta)
    elif taken == 2 and not short:
        micro_kernel_12(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                        biases, bias_offset, residual, has_residual, activation, alpha, beta)
    elif taken == 2:
        micro_kernel_10(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                        biases, bias_offset, residual, has_residual, activation, alpha, beta)
    elif taken == 3:
        micro_kernel_16(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                        biases, bias_offset, residual, has_residual, activation, alpha, beta)
    else:
        micro_kernel_24(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish,
                        biases, bias_offset, residual, has_residual, activation, alpha, beta)
    return taken


#: micro_kernel_12x32(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, rows, ...):
#: ``micro_kernel_12`` on two panels of B at once, the block's columns NR.. read from
#: b[b_offset + b_second + p*ldb + j] (the next packed panel: b_second = kc * NR; x in place:
#: NR) and stored at c[c_offset + i*ldc + NR + j] (and read from the residual there). Each
#: reduction step is then 2 loads of B and 12 broadcasts of A for 24 multiply-adds, not 1 and
#: 24: a 1x1 layer's loop of calls (A from L2, B in L1, out a plane apart, bias and ReLU) ran
#: at 260-272 GFLOP/s a core against 219-241 for 24 x 16 (kc 64 to 256). With WIDE_VECTORS
#: only (``micro_kernel_pair_panels``).
micro_kernel_12x32 = _micro_kernel(12, vectors=2)
#: The same for one full panel and the short last one (10 rows), and for a lone full panel.
micro_kernel_10x32 = _micro_kernel(10, vectors=2)
micro_kernel_6x32 = _micro_kernel(6, vectors=2)


@njit(**SCALAR_FUNCTION)
def pair_panels_a_call(following, remaining):
    """A panels one call of ``micro_kernel_pair_panels`` (or ``product_pair_panels``) takes, as
    ``panels_a_call`` counts them: two full ones (12 x 32) unless that would leave the short last
    one alone; the last full one with the short one (10 x 32); else one (6 x 32, or the short
    one alone as two 4 x 16 calls)."""
    short = remaining > following
    if following >= 3 or (following == 2 and not short) or (following == 1 and short):
        return 2
    return 1


@njit(**SCALAR_FUNCTION)
def micro_kernel_pair_panels(following, remaining, kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc,
                             rows, accumulate, finish, biases, bias_offset, residual, has_residual, activation,
                             alpha, beta):
    """``micro_kernel_panels`` over two panels of B side by side (``micro_kernel_12x32``): the A
    panels ``pair_panels_a_call(following, remaining)`` gives from the one at a_offset. Returns
    how many it took."""
    taken = pair_panels_a_call(following, remaining)
    if taken == 2 and following >= 2:
        micro_kernel_12x32(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, 2 * MR),
                           accumulate, finish, biases, bias_offset, residual, has_residual, activation, alpha, beta)
    elif taken == 2:
        micro_kernel_10x32(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, 2 * MR),
                           accumulate, finish, biases, bias_offset, residual, has_residual, activation, alpha, beta)
    elif following >= 1:
        micro_kernel_6x32(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, MR), accumulate,
                          finish, biases, bias_offset, residual, has_residual, activation, alpha, beta)
    else:
        for half in range(2):
            micro_kernel_panel(False, kc, a, a_offset, b, b_offset + half * b_second, ldb, c, c_offset + half * NR,
                               ldc, min(rows, MR), accumulate, finish, biases, bias_offset, residual, has_residual,
                               activation, alpha, beta)
    return taken


#: micro_kernel_6 and micro_kernel_4 without the epilogue (``finish`` ignored): for a product
#: that is transformed before it is stored (``convolution.convolution_winograd_cpu``).
micro_kernel_6_product = _micro_kernel(6, epilogue=False)
micro_kernel_4_product = _micro_kernel(4, epilogue=False)


@njit(**SCALAR_FUNCTION)
def product_panel(full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate):
    """``micro_kernel_panel`` without the epilogue: c[c_offset + i*ldc + j] = (c[...] if
    accumulate else 0) + P[i, j] for i < rows."""
    if full:
        micro_kernel_6_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, False,
                               c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    else:
        micro_kernel_4_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, False,
                               c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))


micro_kernel_12_product = _micro_kernel(12, epilogue=False)
micro_kernel_24_product = _micro_kernel(24, epilogue=False)
micro_kernel_10_product = _micro_kernel(10, epilogue=False)
micro_kernel_16_product = _micro_kernel(16, epilogue=False)


@njit(**SCALAR_FUNCTION)
def product_panels(following, remaining, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate):
    """``micro_kernel_panels`` without the epilogue (``product_panel`` for the panels
    ``panels_a_call(following, remaining)`` gives). Returns the panels it took."""
    taken = panels_a_call(following, remaining)
    rows = min(rows, taken * MR)
    short = taken > following
    if taken == 1:
        product_panel(not short, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate)
    elif taken == 2 and not short:
        micro_kernel_12_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                                False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    elif taken == 2:
        micro_kernel_10_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                                False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    elif taken == 3:
        micro_kernel_16_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                                False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    else:
        micro_kernel_24_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate,
                                False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    return taken


micro_kernel_12x32_product = _micro_kernel(12, epilogue=False, vectors=2)
micro_kernel_10x32_product = _micro_kernel(10, epilogue=False, vectors=2)
micro_kernel_6x32_product = _micro_kernel(6, epilogue=False, vectors=2)


@njit(**SCALAR_FUNCTION)
def product_pair_panels(following, remaining, kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, rows,
                        accumulate):
    """``micro_kernel_pair_panels`` without the epilogue. Returns the A panels it took."""
    taken = pair_panels_a_call(following, remaining)
    if taken == 2 and following >= 2:
        micro_kernel_12x32_product(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, 2 * MR),
                                   accumulate, False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    elif taken == 2:
        micro_kernel_10x32_product(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, 2 * MR),
                                   accumulate, False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    elif following >= 1:
        micro_kernel_6x32_product(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, min(rows, MR),
                                  accumulate, False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
    else:
        for half in range(2):
            product_panel(False, kc, a, a_offset, b, b_offset + half * b_second, ldb, c, c_offset + half * NR, ldc,
                          min(rows, MR), accumulate)
    return taken


def _rows_kernel(mr: int, chains: int = 1):
    """The intrinsic of ``rows_product``, for 1 to ``mr`` rows of A, each row's sum kept in
    ``chains`` accumulators (reduction steps p with p % chains == c in the c-th), added at the end."""
    @intrinsic
    def kernel(typingctx, kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate):
        sig = types.void(types.intp, a, types.intp, types.intp, types.intp, b, types.intp, types.intp, c,
                         types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate = args
            a_ptr = _float_pointer(context, builder, signature.args[1], a, a_offset)
            b_ptr = _float_pointer(context, builder, signature.args[5], b, b_offset)
            c_ptr = _float_pointer(context, builder, signature.args[8], c, c_offset)
            fma, accumulators = _fma_and_accumulators(builder, mr * chains, NR)
            # Row i of A, or the last one where i >= rows (computed, never stored: nothing past
            # the caller's rows is read).
            last = builder.sub(rows, ir.Constant(rows.type, 1))
            a_rows = []
            for i in range(mr):
                index = ir.Constant(rows.type, i)
                row = builder.select(builder.icmp_signed("<", index, rows), index, last)
                a_rows.append(builder.gep(a_ptr, [builder.mul(row, lda)]))

            def steps(first, count, step, chain_count):
                """count loop trips from reduction step ``first``, each taking chain_count
                steps ``step`` apart, the c-th into chain c."""
                with cgutils.for_range(builder, count) as loop:
                    for chain in range(chain_count):
                        p = builder.add(first, builder.add(builder.mul(loop.index, ir.Constant(kc.type, step)),
                                                           ir.Constant(kc.type, chain)))
                        b_row = builder.gep(b_ptr, [builder.mul(p, ldb)])
                        b_vector = builder.load(_vector_at(builder, b_row, 0, NR), align=4)
                        for i in range(mr):
                            a_vector = _splat(builder, builder.load(builder.gep(a_rows[i], [p])), NR)
                            held = accumulators[i * chains + chain]
                            builder.store(builder.call(fma, [a_vector, b_vector, builder.load(held)]), held)

            whole = builder.sdiv(kc, ir.Constant(kc.type, chains))
            steps(ir.Constant(kc.type, 0), whole, chains, chains)
            done = builder.mul(whole, ir.Constant(kc.type, chains))
            steps(done, builder.sub(kc, done), 1, 1)

            def store(add_partial):
                for i in range(mr):
                    with builder.if_then(builder.icmp_signed("<", ir.Constant(rows.type, i), rows)):
                        c_row = _vector_at(builder, builder.gep(c_ptr, [builder.mul(ldc, ir.Constant(ldc.type, i))]),
                                           0, NR)
                        total = builder.load(accumulators[i * chains])
                        for chain in range(1, chains):
                            total = builder.fadd(total, builder.load(accumulators[i * chains + chain]))
                        if add_partial:
                            total = builder.fadd(builder.load(c_row, align=4), total)
                        builder.store(total, c_row, align=4)

            _branch(builder, accumulate, store)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


#: One and two rows keep two chains of sums a row: with one, each step waited out the previous
#: multiply-add's latency (4 cycles), so a lone row read its B at a 64-byte row per 4 cycles,
#: 134-152 GB/s from L3 on two threads where plain reads reach 190. With two, FullyConnected
#: (``layer_ab.py --layer fully_connected``) took 0.79x the time at n = 1, 0.80x at n = 2, 0.87x
#: at n = 8 (its last two rows), 0.98x at n = 32; four chains 0.99x-1.01x of two, and six rows,
#: six chains already, 1.01x-1.02x with two each.
rows_product_1, rows_product_2, rows_product_6 = _rows_kernel(1, 2), _rows_kernel(2, 2), _rows_kernel(MR)


@njit(**SCALAR_FUNCTION)
def rows_product(kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate):
    """c[c_offset + i*ldc + j] = (c[...] if accumulate else 0) + sum_{p < kc} a[a_offset + i*lda +
    p] * b[b_offset + p*ldb + j] for i < rows (1 to MR), j < NR. A's rows are read where they
    are, a row apart (FullyConnected's input rows), not packed. One or two rows take kernels of
    their own, with two chains of sums a row: a lone row in the 6-row kernel (the others
    repeating it, never stored) took 1.2x the time of a 1-row kernel of one chain."""
    if rows == 1:
        rows_product_1(kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate)
    elif rows == 2:
        rows_product_2(kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate)
    else:
        rows_product_6(kc, a, a_offset, lda, rows, b, b_offset, ldb, c, c_offset, ldc, accumulate)


def _narrow_kernel(columns: int):
    """The intrinsic computing two A panels by ``columns`` (1 to NARROW_COLUMNS) columns of B,
    see ``narrow_product``: a panel's floats of one reduction step are the vector, each column
    of B a broadcast, so no lane multiplies a column that is not there (the 6 x 16 kernel
    spends 12 multiply-adds a step on a panel, however few of its 16 columns count)."""

    @intrinsic
    def kernel(typingctx, kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc,
               rows, accumulate):
        sig = types.void(types.intp, a, types.intp, types.intp, types.intp, types.intp, b, types.intp, types.intp, c,
                         types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            (kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
             accumulate) = args
            index = kc.type

            def constant(value):
                return ir.Constant(index, value)

            a_panels = [_float_pointer(context, builder, signature.args[1], a, offset)
                        for offset in (a_offset, second_offset)]
            steps = (a_step, second_step)
            b_ptr = _float_pointer(context, builder, signature.args[6], b, b_offset)
            c_ptr = _float_pointer(context, builder, signature.args[9], c, c_offset)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                 "llvm.fma.v8f32")
            # A multiply-add waits 4 cycles for the one before into the same accumulator: with
            # as few as 2 of them the loop would wait, not multiply. So ``unroll`` consecutive
            # steps of the reduction go to sets of their own, added up after the loop.
            unroll = -(-4 // columns)
            accumulators = [[cgutils.alloca_once_value(builder, _ZERO) for _ in range(2 * columns)]
                            for _ in range(unroll)]

            def step(p, sums, last=False):
                # A step's a_step floats and the next step's first ones in one load: lanes past
                # a_step add up products that are never stored. The last step's load is masked,
                # not to read past the array (in the loop, masks would take 2 of the registers).
                a_rows = [builder.gep(a_panels[h], [builder.mul(p, steps[h])]) for h in range(2)]
                a_vectors = [_load_lanes(builder, row, steps[h], 0.0) if last
                             else builder.load(_vector_at(builder, row, 0), align=4)
                             for h, row in enumerate(a_rows)]
                b_row = builder.gep(b_ptr, [builder.mul(p, ldb)])
                for j in range(columns):  # (one broadcast live at a time: 12 accumulators + 3 registers)
                    b_value = _splat(builder, builder.load(builder.gep(b_row, [constant(j)])))
                    for h, a_vector in enumerate(a_vectors):
                        total = builder.load(sums[h * columns + j])
                        builder.store(builder.call(fma, [a_vector, b_value, total]), sums[h * columns + j])

            last = builder.sub(kc, constant(1))
            rounds = builder.sdiv(last, constant(unroll))
            with cgutils.for_range(builder, rounds) as loop:
                first = builder.mul(loop.index, constant(unroll))
                for u in range(unroll):
                    step(builder.add(first, constant(u)), accumulators[u])
            done = builder.mul(rounds, constant(unroll))
            with cgutils.for_range(builder, builder.sub(last, done)) as loop:
                step(builder.add(done, loop.index), accumulators[0])
            with builder.if_then(builder.icmp_signed(">=", last, constant(0))):
                step(last, accumulators[0], last=True)
            # The sums, on the stack, then stored lane by lane in a loop over the rows (a column
            # of the product is a row of c's block): row 6h + i is lane i of panel h's vectors.
            spill = cgutils.alloca_once(builder, _VECTOR, size=2 * columns)
            for k in range(2 * columns):
                total = builder.load(accumulators[0][k])
                for u in range(1, unroll):
                    total = builder.fadd(total, builder.load(accumulators[u][k]))
                builder.store(total, builder.gep(spill, [constant(k)]))
            # The row's other columns of the panel get zeros (two vector stores): whatever lay there
            # may be denormal, and Winograd's output transforms read all NR.
            lanes = builder.bitcast(spill, _FLOAT.as_pointer())
            with cgutils.for_range(builder, rows) as loop:
                h, i = builder.sdiv(loop.index, constant(MR)), builder.srem(loop.index, constant(MR))
                c_row = builder.gep(c_ptr, [builder.mul(ldc, loop.index)])
                values = []
                for j in range(columns):
                    at = builder.add(builder.mul(builder.add(builder.mul(h, constant(columns)), constant(j)),
                                                 constant(8)), i)
                    value = builder.load(builder.gep(lanes, [at]))
                    pointer = builder.gep(c_row, [constant(j)])
                    values.append(builder.select(accumulate, builder.fadd(builder.load(pointer), value), value))
                for half in range(NR // 8):
                    builder.store(_ZERO, _vector_at(builder, c_row, 8 * half), align=4)
                for j, value in enumerate(values):
                    builder.store(value, builder.gep(c_row, [constant(j)]))
            return context.get_dummy_value()

        return sig, codegen

    return kernel


#: The most columns of one narrow kernel: 2 x 6 accumulators, 2 vectors of A and a broadcast
#: of B fill 15 of the 16 AVX2 registers.
NARROW_COLUMNS = 6
_NARROW_KERNELS = [_narrow_kernel(j) for j in range(1, NARROW_COLUMNS + 1)]
narrow_kernel_1, narrow_kernel_2, narrow_kernel_3, narrow_kernel_4, narrow_kernel_5, narrow_kernel_6 = _NARROW_KERNELS


@njit(**SHARED_STEP)
def narrow_product(columns, kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc,
                   rows, accumulate):
    """c[c_offset + r*ldc + j] = (c[...] if accumulate else 0) + sum_{p < kc} A[r, p] *
    b[b_offset + p*ldb + j] for r < rows (at most 12) and j < ``columns`` (1 to NARROW_COLUMNS),
    and 0 for columns <= j < NR, where row i < 6 of A is a[a_offset + p*a_step + i] and row 6 + i
    is a[second_offset + p*second_step + i] (a_step, second_step: 6, or 4 for a last panel of 4
    rows). A call, not inlined: in a task as large as ``convolution.winograd_task``, LLVM spilled
    its accumulators or addressed A through the stack, and the product took 1.2x-1.9x as long.
    (One branch per width: a Numba function cannot pick an intrinsic out of a tuple at run
    time.)"""
    if columns == 1:
        narrow_kernel_1(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)
    elif columns == 2:
        narrow_kernel_2(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)
    elif columns == 3:
        narrow_kernel_3(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)
    elif columns == 4:
        narrow_kernel_4(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)
    elif columns == 5:
        narrow_kernel_5(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)
    else:
        narrow_kernel_6(kc, a, a_offset, a_step, second_offset, second_step, b, b_offset, ldb, c, c_offset, ldc, rows,
                        accumulate)


#: ``micro_kernel_6_product`` for 12 rows (two consecutive 6-row panels of A, the second 6*kc
#: floats after the first) by 8 columns (j < 8; B's rows still ldb apart): 7 or 8 valid columns
#: of a B panel (a 6 x 6 image at n = 2: 72 = 4 x 16 + 8, or 14 x 14: 392 = 24 x 16 + 8) cost
#: 0.55x-0.59x the two 6 x 16 calls with its loop not unrolled (``steps_not_unrolled``), 0.90x-0.94x
#: unrolled.
micro_kernel_12x8_product = _micro_kernel(12, 8, epilogue=False)
#: The most valid columns of a B panel that ``short_panel_product`` takes, in one pass over A.
#: Two passes (9 columns as 6 + 3) measured 0.8x the 6 x 16 kernel's time with A in cache, but
#: 1.2x with A streaming from memory (as AlexNet's Winograd weights do at n = 1): the first
#: pass then waits on memory as the 6 x 16 kernel does, and the second adds its own time.
SHORT_PANEL_COLUMNS = NR // 2


@njit(**SHARED_STEP)
def short_panel_product(valid, pair, full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate):
    """``product_panel`` for a B panel of which only the first ``valid`` columns (1 to
    SHORT_PANEL_COLUMNS) count, the last of a task's: a small image at n = 1 leaves a few
    (7 x 7 = 3 x 16 + 1, 14 x 14 = 12 x 16 + 4). Up to NARROW_COLUMNS, the narrow kernel
    multiplies the A panel at a_offset (full, of MR rows, or else of 4) and, where ``pair``, the
    next one too (both full): j columns cost j vector multiply-adds a step for each panel, where
    the 6 x 16 kernel costs 12 (measured 0.30x-0.55x its time with A in cache, 0.64x-1.0x with A
    streaming from memory). 7 or 8 columns of a pair go to the 12 x 8 kernel, of a lone panel to
    the 6 x 16 one. Stores rows < ``rows`` (of the 12 or the panel's): all NR columns (zeros past
    the valid ones), but for the 12 x 8 kernel's 8. Returns the A panels it took: 2 where
    ``pair``, else 1."""
    a_step = MR if full else 4
    if valid > NARROW_COLUMNS:
        if pair:
            micro_kernel_12x8_product(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, min(rows, 2 * MR),
                                      accumulate, False, c, 0, c, False, 0, np.float32(0.0), np.float32(0.0))
            return 2
        product_panel(full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, min(rows, a_step), accumulate)
        return 1
    # (A lone panel goes as its own second, whose rows are not stored: it is rare, at most one
    # per block of a task's A panels, and one kernel of each width is half the code to compile.)
    second_offset, stored, taken = a_offset, min(rows, a_step), 1
    if pair:
        second_offset, stored, taken = a_offset + MR * kc, min(rows, 2 * MR), 2
    narrow_product(valid, kc, a, a_offset, a_step, second_offset, a_step, b, b_offset, ldb, c, c_offset, ldc, stored,
                   accumulate)
    return taken


@njit(**SCALAR_FUNCTION)
def empty_panels(size):
    """np.empty(size, np.float32) from a 64-byte boundary on, for panels of B (and blocks of C)
    whose NR-float rows the micro-kernel loads (stores) whole: each row then lies in one cache
    line. (Numba aligns arrays to 32 bytes; the 12 x 16 kernel took 1.11x the time with B's
    rows across two lines.)"""
    raw = np.empty(size + NR, np.float32)
    start = (64 - raw.ctypes.data % 64) % 64 // 4
    return raw[start:start + size]


@njit(**SCALAR_FUNCTION)
def panel_layout(rows):
    """(panels, full panels, padded rows) of the A panels covering ``rows`` output channels: MR-row
    panels, then a last one of 4 rows where 1 to 4 remain (padded with zero rows), else one more
    of MR."""
    full, remainder = rows // MR, rows % MR
    last = 0 if remainder == 0 else (4 if remainder <= 4 else MR)
    return full + (1 if remainder else 0), full, full * MR + last


def panel_rows(rows: int) -> list[int]:
    """The heights of those panels, in order."""
    panels, full, padded_rows = panel_layout(rows)
    return [MR] * full + [padded_rows - full * MR] * (panels - full)


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """(group, M, R) weights -> the packed A of every group, concatenated (layout in the module
    docstring); group g starts at g * padded_rows * R."""
    group, rows, reduction = weights.shape
    heights = panel_rows(rows)
    padded_rows = sum(heights)
    packed = np.zeros(group * padded_rows * reduction, np.float32)
    for g in range(group):
        padded = np.zeros((padded_rows, reduction), np.float32)
        padded[:rows] = weights[g]
        at = g * padded_rows * reduction
        for pc in range(0, reduction, KC):
            kc = min(KC, reduction - pc)
            m0 = 0
            for height in heights:
                block = padded[m0:m0 + height, pc:pc + kc]  # (height, kc) -> p-major
                packed[at:at + height * kc] = block.T.ravel()
                at += height * kc
                m0 += height
    return packed


@intrinsic
def prefetch_rows(typingctx, array, offset, stride, rows):
    """prefetch_rows(array, offset, stride, rows): ask for the cache lines of the NR floats from
    array[offset + i*stride] on, for i < rows (a 1-d float32 array; a prefetch never faults, so
    no bounds are checked)."""
    sig = types.void(array, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        array, offset, stride, rows = args
        base = _float_pointer(context, builder, signature.args[0], array, offset)
        with cgutils.for_range(builder, rows) as loop:
            row = builder.gep(base, [builder.mul(loop.index, stride)])
            for last in (0, NR - 1):  # (an unaligned run spans two lines)
                _prefetch(builder, builder.gep(row, [ir.Constant(ir.IntType(64), last)]), False)
        return context.get_dummy_value()

    return sig, codegen


#: The largest stride whose panel rows pack with vector loads (``masked_copy_panel_row``); a
#: convolution of a larger stride packs element by element.
MAX_VECTOR_STRIDE = 4


def _masked_copy(two_runs: bool):
    """The intrinsic copying one row of a packed B panel, see ``masked_copy_panel_row``."""

    def load_columns(builder, source_ptr, stride, h):
        """Lanes 8h..8h+7 of a run: source[stride * j] for those j, from ``stride`` contiguous
        8-wide loads put side by side, then every stride-th element picked out."""
        parts = [builder.load(_vector_at(builder, source_ptr, 8 * (stride * h + k)), align=4) for k in range(stride)]
        if stride == 1:
            return parts[0]
        while len(parts) > 1:
            if len(parts) % 2:
                parts.append(ir.Constant(parts[0].type, ir.Undefined))
            width = parts[0].type.count
            both = ir.Constant(ir.VectorType(_LANE, 2 * width), list(range(2 * width)))
            parts = [builder.shuffle_vector(parts[i], parts[i + 1], both) for i in range(0, len(parts), 2)]
        every_stride_th = ir.Constant(ir.VectorType(_LANE, 8), [stride * j for j in range(8)])
        return builder.shuffle_vector(parts[0], ir.Constant(parts[0].type, ir.Undefined), every_stride_th)

    def copy_row(builder, destination_ptr, source_ptr, second_ptr, splits, mask_ptr, stride):
        for h in range(NR // 8):
            value = load_columns(builder, source_ptr, stride, h)
            if two_runs:
                lanes = ir.Constant(ir.VectorType(_LANE, 8), list(range(8 * h, 8 * h + 8)))
                in_first = builder.icmp_signed("<", lanes, splits)
                value = builder.select(in_first, value, load_columns(builder, second_ptr, stride, h))
            keep = builder.fcmp_unordered("!=", builder.load(_vector_at(builder, mask_ptr, 8 * h), align=4), _ZERO)
            builder.store(builder.select(keep, value, _ZERO), _vector_at(builder, destination_ptr, 8 * h), align=4)

    def codegen(context, builder, signature, args):
        destination_ptr, source_ptr = (
            _float_pointer(context, builder, signature.args[i], args[i], args[i + 1]) for i in (0, 2))
        mask_ptr = _float_pointer(context, builder, signature.args[-2], args[-2], args[-1])
        stride = args[-3]
        second_ptr = splits = None
        if two_runs:
            second_ptr = _float_pointer(context, builder, signature.args[2], args[2], args[4])
            split = builder.trunc(args[5], _LANE)
            splits = builder.insert_element(ir.Constant(ir.VectorType(_LANE, 8), ir.Undefined), split,
                                            ir.Constant(_LANE, 0))
            splits = builder.shuffle_vector(splits, splits, ir.Constant(ir.VectorType(_LANE, 8), [0] * 8))
        # The stride picks a copy made for it (the shuffles need constant lane indices).
        switch_on(builder, stride, range(1, MAX_VECTOR_STRIDE + 1),
                  lambda constant: copy_row(builder, destination_ptr, source_ptr, second_ptr, splits, mask_ptr,
                                            constant))
        return context.get_dummy_value()

    if two_runs:
        @intrinsic
        def copy(typingctx, destination, destination_offset, source, source_offset, second_offset, split, stride, mask,
                 mask_offset):
            return types.void(destination, types.intp, source, types.intp, types.intp, types.intp, types.intp, mask,
                              types.intp), codegen
    else:
        @intrinsic
        def copy(typingctx, destination, destination_offset, source, source_offset, stride, mask, mask_offset):
            return types.void(destination, types.intp, source, types.intp, types.intp, mask, types.intp), codegen

    return copy


#: masked_copy_panel_row(destination, destination_offset, source, source_offset, stride, mask,
#: mask_offset): destination[destination_offset + j] = source[source_offset + stride*j] where
#: mask[mask_offset + j] is non-zero, else 0, for j < NR: one row of a packed B panel whose 16
#: columns read inputs ``stride`` apart (1 to MAX_VECTOR_STRIDE; any other stride copies
#: nothing), the mask zeroing those on padding. Loads the stride*NR elements from source_offset
#: on. A select, not a product with the mask: what lies under the padding (a neighbouring row, a
#: row past the batch) may be inf or NaN. Written as 8-wide loads, shuffles, selects and stores,
#: since LLVM will not vectorise the loop itself (it cannot rule out that the arrays overlap). No
#: bounds checks.
masked_copy_panel_row = _masked_copy(two_runs=False)
#: masked_copy_panel_row_two_runs(destination, destination_offset, source, source_offset,
#: second_offset, split, stride, mask, mask_offset): as masked_copy_panel_row, but the columns
#: j >= split read source[second_offset + stride*j] instead: a panel whose columns run over the
#: end of one output row into the next. Loads stride*NR elements from each offset.
masked_copy_panel_row_two_runs = _masked_copy(two_runs=True)


#: The most consecutive reduction rows ``transpose_copy_panel_rows`` packs in one call: the
#: columns of one 8-wide load.
MAX_TRANSPOSE_COLUMNS = 8


def _transpose_8x8(builder, rows):
    """The columns of 8 rows of 8 lanes (8-wide vectors): columns[c][l] = rows[l][c], in the
    24 shuffles of the usual AVX transpose (pairs of rows interleaved, then pairs of pairs, then
    128-bit halves swapped), which LLVM maps to unpack, shufps and vperm2f128."""
    def shuffle(a, b, lanes):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_LANE, 8), lanes))

    pairs = []
    for k in range(0, 8, 2):  # rows k, k+1 interleaved: lanes 0, 1, 4, 5 of each, then 2, 3, 6, 7
        pairs += [shuffle(rows[k], rows[k + 1], [0, 8, 1, 9, 4, 12, 5, 13]),
                  shuffle(rows[k], rows[k + 1], [2, 10, 3, 11, 6, 14, 7, 15])]
    low, high = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    # quads[q]: columns q and q + 4 of rows 0-3 (q < 4) or of rows 4-7 (q >= 4), in 128-bit halves
    quads = [shuffle(pairs[a], pairs[a + 2], half) for a in (0, 1, 4, 5) for half in (low, high)]
    columns = [None] * 8
    for c in range(4):
        columns[c] = shuffle(quads[c], quads[c + 4], [0, 1, 2, 3, 8, 9, 10, 11])
        columns[c + 4] = shuffle(quads[c], quads[c + 4], [4, 5, 6, 7, 12, 13, 14, 15])
    return columns


@intrinsic
def transpose_copy_panel_rows(typingctx, destination, destination_offset, source, offset, bases, bases_offset, mask,
                              mask_offset, mask_stride, columns):
    """transpose_copy_panel_rows(destination, destination_offset, source, offset, bases,
    bases_offset, mask, mask_offset, mask_stride, columns): destination[destination_offset + c*NR
    + j] = source[bases[bases_offset + j] + offset + c] where mask[mask_offset + c*mask_stride +
    j] is non-zero, else 0, for c < columns (1 to MAX_TRANSPOSE_COLUMNS), j < NR: ``columns``
    consecutive rows of a packed B panel whose column j reads ``columns`` consecutive inputs from
    its own start, wherever the columns' starts lie (a panel of windows over several rows of the
    image, at any stride). One 8-wide load per column, 8 x 8 transposes, a select per row: no
    gather and no branch per element. Loads the 8 elements from each bases[...] + offset on. No
    bounds checks."""
    sig = types.void(destination, types.intp, source, types.intp, bases, types.intp, mask, types.intp, types.intp,
                     types.intp)

    def codegen(context, builder, signature, args):
        destination, destination_offset, source, offset, bases, bases_offset, mask, mask_offset, mask_stride, columns = args
        destination_ptr = _float_pointer(context, builder, signature.args[0], destination, destination_offset)
        source_ptr = _float_pointer(context, builder, signature.args[2], source, offset)
        bases_ptr = builder.gep(context.make_array(signature.args[4])(context, builder, bases).data, [bases_offset])
        mask_ptr = _float_pointer(context, builder, signature.args[6], mask, mask_offset)
        # One copy for every count: all 8 columns transposed, the first ``columns`` stored (the
        # count is a layer's kernel width, the same every call, so the branches are predicted). A
        # copy per count would skip the shuffles of the rest, but every convolution kernel
        # compiles its own copy of the packing, and would then compile eight of this.
        for h in range(NR // 8):
            starts = [builder.load(builder.gep(bases_ptr, [ir.Constant(ir.IntType(64), 8 * h + j)])) for j in range(8)]
            column_values = _transpose_8x8(builder, [builder.load(_vector_at(builder, source_ptr, start), align=4)
                                                     for start in starts])
            for c in range(MAX_TRANSPOSE_COLUMNS):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(columns.type, c), columns)):
                    at = builder.add(builder.mul(mask_stride, ir.Constant(mask_stride.type, c)),
                                     ir.Constant(mask_stride.type, 8 * h))
                    keep = builder.fcmp_unordered("!=", builder.load(_vector_at(builder, mask_ptr, at), align=4), _ZERO)
                    builder.store(builder.select(keep, column_values[c], _ZERO),
                                  _vector_at(builder, destination_ptr, c * NR + 8 * h), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(**SCALAR_FUNCTION)
def masked_copy_panel_row_runs(one_run, stride, destination, destination_offset, source, source_offset,
                               second_offset, split, mask, mask_offset):
    """The masked copy of one packed B row whose columns read one run of inputs (``one_run``) or
    two (the second from column ``split`` on, at second_offset), ``stride`` apart: the matching
    one of the two above."""
    if one_run:
        masked_copy_panel_row(destination, destination_offset, source, source_offset, stride, mask, mask_offset)
    else:
        masked_copy_panel_row_two_runs(destination, destination_offset, source, source_offset, second_offset, split,
                                       stride, mask, mask_offset)
