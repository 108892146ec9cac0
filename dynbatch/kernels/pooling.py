"""Pooling (max or average): x (N, C, H, W) -> y (N, C, OH, OW). The window of output (oh, ow)
covers rows [oh*sh - ph0, oh*sh - ph0 + kh) and columns [ow*sw - pw0, ow*sw - pw0 + kw); only
its data cells (inside [0, H) x [0, W)) are pooled, so padding never wins a max. An average
divides the sum by the number of data cells (``exclude_pad``) or by the window clipped to the
padded extent [-ph0, H + ph1) x [-pw0, W + pw1) (Caffe / ONNX ``count_include_pad``). The output
size (floor or ceil rounding, global pooling) is already resolved in ``out.shape``.

Four CPU kernels, chosen by ``choose_cpu_kernel`` from the shapes: ``global_pooling_cpu`` where
each window spans whole input rows (global pooling), ``max_pooling_3_wide_cpu`` for max pooling
over the common 3-wide windows at stride 1 or 2 (written in 8-wide vectors, rows of up to 16 in
16-wide ones with AVX-512), else ``max_pooling_cpu`` or ``avg_pooling_cpu``. Each compiles only
its own loops, so a network compiles only those it uses.
"""
import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import CHUNK, PARALLEL_KERNEL, SCALAR_FUNCTION
from .gemm import WIDE_VECTORS, _LANE, _float_pointer, _load_lanes, _store_lanes, _vector_at, switch_on
from .views import as_4d

METHOD_MAX = 0
METHOD_AVG = 1
METHOD_CODES = {"max": METHOD_MAX, "avg": METHOD_AVG}


@njit(**SCALAR_FUNCTION)
def pooled_pair(a, b, method):
    """a and b pooled: their sum, or their max, which is NaN when either is (as np.max)."""
    if method == METHOD_AVG:
        return a + b
    return a if (a >= b or a != a) else b


@njit(**SCALAR_FUNCTION)
def window_cells(start, kernel, size, pad_end, exclude_pad):
    """Along one axis, the cells of the window [start, start + kernel) that an average divides by:
    the data cells in [0, size), or with padding counted, those in [start, size + pad_end)."""
    if exclude_pad:
        return min(start + kernel, size) - max(start, 0)
    return min(start + kernel, size + pad_end) - start


#: Window cells that a task of a chain's global pooling step pools (``global_pool_share``): as
#: many whole outputs as make about this many, at least one.
GLOBAL_POOL_TASK_CELLS = 4 * CHUNK


@njit(**SCALAR_FUNCTION)
def global_pool_share(outputs, kernel_h, width):
    """(tasks, outputs per task) of ``outputs`` outputs of ``global_pooling_cpu`` whose windows
    are ``kernel_h`` rows of ``width`` cells, as a chain's global pooling step shares them out."""
    per_task = max(1, GLOBAL_POOL_TASK_CELLS // max(1, kernel_h * width))
    return (outputs + per_task - 1) // per_task, per_task


@njit(**SCALAR_FUNCTION)
def global_pool_outputs(first, end, planes, outputs, height, out_height, kernel_h, stride_h, pad_top, pad_bottom,
                        method, exclude_pad, columns):
    """outputs[i] for first <= i < end of ``global_pooling_cpu`` (x as ``planes``, (N * C, H * W);
    out as ``outputs``, flat; ``columns``: the cells of a window's row an average divides by)."""
    width = planes.shape[1] // height
    for i in range(first, end):
        plane = np.uintp(i // out_height)
        top = (i % out_height) * stride_h - pad_top
        start = max(top, 0) * width
        stop = min(top + kernel_h, height) * width
        pooled = planes[plane, np.uintp(start)]
        if method == METHOD_MAX:
            for cell in range(start + 1, stop):
                pooled = pooled_pair(pooled, planes[plane, np.uintp(cell)], METHOD_MAX)
        else:
            for cell in range(start + 1, stop):
                pooled = pooled_pair(pooled, planes[plane, np.uintp(cell)], METHOD_AVG)
            pooled /= np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad) * columns)
        outputs[np.uintp(i)] = pooled


@njit(**PARALLEL_KERNEL)
def global_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                       pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, 1), where each window spans whole input
    rows (kw - pw0 >= W: global pooling, for one); method: METHOD_MAX or METHOD_AVG; exclude_pad:
    0 or 1 (avg only). Reads x rows < n, writes out rows < n; each parallel iteration owns one
    output (``global_pool_outputs``). The data cells of a window are one contiguous run of its
    plane, pooled in a single loop: a sum vectorizes, an exact max with NaN does not.

    x and out are indexed in full through 2-d views made once: a view made per iteration would
    count a reference on the buffer, an atomic that the threads contend for. Indices known to be
    >= 0 are unsigned, which spares Numba's negative-index wraparound (a branch that keeps LLVM
    from vectorizing)."""
    max_batch, channels, height, width = x.shape
    out_height = out.shape[2]
    planes = x.reshape((max_batch * channels, height * width))
    outputs = out.reshape(-1)
    columns = window_cells(-pad_left, kernel_w, width, pad_right, exclude_pad)
    for i in prange(n * channels * out_height):
        global_pool_outputs(i, i + 1, planes, outputs, height, out_height, kernel_h, stride_h, pad_top, pad_bottom,
                            method, exclude_pad, columns)


def _nan_max(builder, a, b):
    """The max of two vectors (8 or 16 floats), NaN in a lane where either is (as
    ``pooled_pair``). x86's max keeps its second operand where the two are unordered, so max(a, b)
    and max(b, a) agree except where one is NaN, which one of them then holds: their bitwise OR is
    that NaN (an all-ones exponent, a nonzero fraction), else the max (-0 for a tie of 0 and -0).
    Three instructions where pooled_pair's compare, compare, or and select are four."""
    ints = ir.VectorType(ir.IntType(32), a.type.count)
    first = builder.select(builder.fcmp_ordered(">", a, b), a, b)
    second = builder.select(builder.fcmp_ordered(">", b, a), b, a)
    return builder.bitcast(builder.or_(builder.bitcast(first, ints), builder.bitcast(second, ints)), a.type)


def _for_each_vector(builder, count, emit, width=8):
    """emit(at, short) for at = 0, width, 2 * width, ... < count, the last at = count - width
    (overlapping the one before where count is no multiple of width: the same outputs again),
    short None; where count < width, once, at 0, with short = count, for ``_load`` and ``_store``."""
    lanes = ir.Constant(count.type, width)
    with builder.if_else(builder.icmp_signed("<", count, lanes)) as (short, whole):
        with short:
            emit(ir.Constant(count.type, 0), count)
        with whole:
            blocks = builder.udiv(builder.add(count, ir.Constant(count.type, width - 1)), lanes)
            with cgutils.for_range(builder, blocks) as loop:
                at = builder.mul(loop.index, lanes)
                last = builder.sub(count, lanes)
                emit(builder.select(builder.icmp_unsigned("<", at, last), at, last), None)


def _load(builder, pointer, short, fill, width=8):
    """The ``width`` floats from ``pointer`` on; where ``short`` (a count under width), only that
    many are read (a masked load, which stays inside the array), the other lanes ``fill``."""
    if short is None:
        return builder.load(_vector_at(builder, pointer, 0, width), align=4)
    return _load_lanes(builder, pointer, short, fill, width)


def _store(builder, value, pointer, short):
    """value into the floats from ``pointer`` on (its width); where ``short`` (a count under the
    width), into that many by a masked store: the floats after them belong to the next line, which
    another thread may be writing. (Against storing them one by one from a copy on the stack: the
    same on AVX2, GoogLeNet's 480-channel 14x14 stride-2 pooling, 7 outputs a row, 0.78x-0.84x the
    time with AVX-512.)"""
    if short is None:
        builder.store(value, _vector_at(builder, pointer, 0, value.type.count), align=4)
        return
    _store_lanes(builder, value, pointer, short)


#: With AVX-512, the 3-wide max pooling takes rows of at most this many columns as one vector of
#: 16 (masked), where 8-wide vectors took two, the second overlapping or masked: GoogLeNet's 14x14
#: poolings 0.80x-0.92x the time (``layer_ab.py --layer pooling``, n = 8). Longer rows stay 8
#: wide: a 16-wide load at any offset spans two cache lines, and SqueezeNet's 27-wide and ResNet's
#: 56-wide rows took 1.06x-1.08x the time in 16-wide vectors.
WIDE_POOL_COLUMNS = 16 if WIDE_VECTORS else 0


def _max_rows_vectors(width: int):
    """The intrinsic max_rows_vectors(source, source_offset, row_stride, rows, destination,
    destination_offset, count): destination[destination_offset + w] = the max over i < ``rows`` (1
    to 3: windows up to 3 high, clipped by the padding) of source[source_offset + i*row_stride +
    w], NaN where any is, for w < count: ``width`` columns at a time (``_for_each_vector``; a row
    under ``width`` by masked loads, -inf past it, all ``width`` stored: the destination needs that
    many to spare). LLVM's own vectorisation of this loop runs 32 columns an iteration and leaves a
    row of 56 mostly to its scalar remainder; and a loop over a run-time number of rows per 8
    columns ran 1.4x slower than the old scalar-heavy pass, so each window height gets its own
    straight-line code (``gemm.switch_on``). No bounds checks; destination must not overlap source."""

    @intrinsic
    def max_rows_vectors(typingctx, source, source_offset, row_stride, rows, destination, destination_offset, count):
        sig = types.void(source, types.intp, types.intp, types.intp, destination, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            source, source_offset, row_stride, rows, destination, destination_offset, count = args
            source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
            destination_ptr = _float_pointer(context, builder, signature.args[4], destination, destination_offset)

            def pool_rows_of(height):
                def pool(at, short):
                    pooled = None
                    for i in range(height):
                        row = builder.gep(source_ptr, [builder.add(builder.mul(ir.Constant(at.type, i), row_stride),
                                                                   at)])
                        value = _load(builder, row, short, float("-inf"), width)
                        pooled = value if pooled is None else _nan_max(builder, pooled, value)
                    # (whole: past a short row, the -inf of the masked loads is the padding's value)
                    _store(builder, pooled, builder.gep(destination_ptr, [at]), None)

                _for_each_vector(builder, count, pool, width)

            switch_on(builder, rows, (1, 2, 3), pool_rows_of)
            return context.get_dummy_value()

        return sig, codegen

    return max_rows_vectors


def _max_columns_vectors(kernel: int, width: int):
    """The intrinsic max_columns_vectors(source, source_offset, destination, destination_offset,
    count, stride): destination[destination_offset + o] = the max over j < ``kernel`` of
    source[source_offset + o*stride + j], NaN where any is, for o < count, ``width`` outputs at a
    time (``_for_each_vector``; under ``width``, by a masked store), at stride 1 or 2 (each its own
    code, ``gemm.switch_on``). Stride 1: one load per j. Stride 2: the even or odd elements of two
    loads side by side, the loads shared by j = 2i and 2i + 1. Reads whole vectors, up to 2 * width
    + 1 elements past the first window of the last ``width`` outputs (or of the first, where count
    < width): the source needs that much to spare. No bounds checks."""
    pick = {parity: ir.Constant(ir.VectorType(_LANE, width), [2 * lane + parity for lane in range(width)])
            for parity in (0, 1)}

    @intrinsic
    def max_columns_vectors(typingctx, source, source_offset, destination, destination_offset, count, stride):
        sig = types.void(source, types.intp, destination, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            source, source_offset, destination, destination_offset, count, stride = args
            source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
            destination_ptr = _float_pointer(context, builder, signature.args[2], destination, destination_offset)

            def pool_columns_at(step):
                def pool(at, short):
                    window = builder.gep(source_ptr, [builder.mul(at, ir.Constant(at.type, step))])
                    pooled, pair = None, None
                    for j in range(kernel):
                        if step == 1:
                            value = builder.load(_vector_at(builder, window, j, width), align=4)
                        else:
                            if j % 2 == 0:
                                pair = [builder.load(_vector_at(builder, window, j + width * h, width), align=4)
                                        for h in (0, 1)]
                            value = builder.shuffle_vector(pair[0], pair[1], pick[j % 2])
                        pooled = value if pooled is None else _nan_max(builder, pooled, value)
                    _store(builder, pooled, builder.gep(destination_ptr, [at]), short)

                _for_each_vector(builder, count, pool, width)

            switch_on(builder, stride, (1, 2), pool_columns_at)
            return context.get_dummy_value()

        return sig, codegen

    return max_columns_vectors


#: Both passes of the 3-wide max pooling, in vectors of 8 and of 16 floats.
max_rows_8, max_rows_16 = _max_rows_vectors(8), _max_rows_vectors(16)
max_columns_3_8, max_columns_3_16 = _max_columns_vectors(3, 8), _max_columns_vectors(3, 16)


@njit(**SCALAR_FUNCTION)
def pool_rows(x_rows, first_row, rows, scratch, begin, count, method):
    """scratch[0, begin + w] = x_rows[first_row + i, w] pooled over i < rows, for w < count, in
    contiguous passes, which vectorize. Up to 3 rows (the common windows) take a single pass,
    which loads each input once and stores once: 0.77x-0.85x the time of a pass per row on 3x3
    windows. Taller windows take a pass per row, alternating between scratch rows 1 and 0, the
    last writing row 0: LLVM turns an in-place max into masked stores, which are slow."""
    second, third = first_row + np.uintp(1), first_row + np.uintp(2)
    if rows == 1:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = x_rows[first_row, np.uintp(w)]
        return
    if rows == 2:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = pooled_pair(
                x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method)
        return
    if rows == 3:
        for w in range(count):
            scratch[0, begin + np.uintp(w)] = pooled_pair(pooled_pair(
                x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method),
                x_rows[third, np.uintp(w)], method)
        return
    target = np.uintp(rows % 2)
    for w in range(count):
        scratch[target, begin + np.uintp(w)] = pooled_pair(
            x_rows[first_row, np.uintp(w)], x_rows[second, np.uintp(w)], method)
    for i in range(2, rows):
        source, target = target, np.uintp((rows - 1 - i) % 2)
        x_row = first_row + np.uintp(i)
        for w in range(count):
            scratch[target, begin + np.uintp(w)] = pooled_pair(
                scratch[source, begin + np.uintp(w)], x_rows[x_row, np.uintp(w)], method)


@njit(**SCALAR_FUNCTION)
def pool_columns(scratch, out_rows, line, count, kernel, stride, method):
    """out_rows[line, ow] = scratch[0, ow * stride + j] pooled over j < kernel, for ow < count.
    Called with a literal kernel and stride where it can be: the loop over j then unrolls and the
    loop over ow vectorizes (with interleaved loads); otherwise it runs scalar."""
    step = np.uintp(stride)
    for ow in range(np.uintp(count)):
        start = ow * step
        pooled = scratch[0, start]
        for j in range(np.uintp(1), np.uintp(kernel)):
            pooled = pooled_pair(pooled, scratch[0, start + j], method)
        out_rows[line, ow] = pooled


@njit(**SCALAR_FUNCTION)
def max_pool_lines_by_vectors(x_rows, out_rows, scratch, plane, first_line, end_line, height, out_height, kernel_h,
                              stride_h, stride_w, pad_top, pad_left, data_width, wide):
    """Output lines first_line..end_line of one plane of ``pool_windows``, max pooling over
    windows 3 wide and at most 3 high, stride_w 1 or 2, both passes as explicit vectors:
    ``max_rows_vectors`` into scratch row 0, padded as pool_windows pads it, then
    ``max_columns_vectors``, which may read up to 18 columns from the row's start past its padding
    (34 with 16-wide vectors). The vectors are 16 wide where ``wide`` (a row's data at most
    WIDE_POOL_COLUMNS wide: ``pool_task`` then gives the scratch room for them), else 8 wide."""
    width, out_width = np.uintp(x_rows.shape[1]), np.uintp(out_rows.shape[1])
    for oh in range(first_line, end_line):
        top = oh * stride_h - pad_top
        row_begin = max(top, 0)
        rows = min(top + kernel_h, height) - row_begin
        first_row = np.uintp(plane * height + row_begin)
        at = np.uintp(plane * out_height + oh) * out_width
        if wide:
            max_rows_16(x_rows, first_row * width, width, rows, scratch, pad_left, data_width)
            max_columns_3_16(scratch, 0, out_rows, at, out_width, stride_w)
        else:
            max_rows_8(x_rows, first_row * width, width, rows, scratch, pad_left, data_width)
            max_columns_3_8(scratch, 0, out_rows, at, out_width, stride_w)


@njit(**SCALAR_FUNCTION)
def pool_lines(x_rows, out_rows, scratch, plane, first_line, end_line, height, out_height, kernel_h, kernel_w,
               stride_h, stride_w, pad_top, pad_left, pad_bottom, exclude_pad, data_width, method):
    """Output lines first_line..end_line of one plane of ``pool_windows``, any window: the rows of
    each window pooled into scratch row 0 (``pool_rows``), its columns then pooled into the line
    (``pool_columns``), an average divided by its cells (scratch row 2 holds each window's columns)."""
    out_width = out_rows.shape[1]
    for oh in range(first_line, end_line):
        top = oh * stride_h - pad_top
        row_begin = max(top, 0)
        rows = min(top + kernel_h, height) - row_begin
        first_row = np.uintp(plane * height + row_begin)
        pool_rows(x_rows, first_row, rows, scratch, np.uintp(pad_left), data_width, method)
        line = np.uintp(plane * out_height + oh)
        # The common window widths and strides, as literals.
        if kernel_w == 3 and stride_w == 2:
            pool_columns(scratch, out_rows, line, out_width, 3, 2, method)
        elif kernel_w == 2 and stride_w == 2:
            pool_columns(scratch, out_rows, line, out_width, 2, 2, method)
        elif kernel_w == 3 and stride_w == 1:
            pool_columns(scratch, out_rows, line, out_width, 3, 1, method)
        else:
            pool_columns(scratch, out_rows, line, out_width, kernel_w, stride_w, method)
        if method == METHOD_AVG:
            divisor_rows = np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad))
            for ow in range(np.uintp(out_width)):
                out_rows[line, ow] /= divisor_rows * scratch[2, ow]


@njit(**SCALAR_FUNCTION)
def pool_split(planes, out_height, line_work, task_work=CHUNK):
    """How ``pool_windows`` shares out ``planes`` planes of ``out_height`` output lines, each line
    ``line_work`` loads (window rows times input width, plus window columns times output width):
    (tasks, tasks_per_plane, lines_per_task, planes_per_task). A task takes about ``task_work``
    loads of work (CHUNK; a chain's pooling steps more), enough to pay for its scratch:
    lines_per_task lines of one plane where a plane holds more (the lines spread evenly over
    tasks_per_plane tasks), else planes_per_task whole planes (the last task fewer). Small planes
    went one to a task before: GoogLeNet's 480-channel 14x14 pooling took 1.27x-1.28x the time at
    n = 2 and 8 (``benchmarks/layer_ab.py --layer pooling``)."""
    lines_per_task = max(1, min(out_height, task_work // line_work))
    tasks_per_plane = (out_height + lines_per_task - 1) // lines_per_task
    lines_per_task = (out_height + tasks_per_plane - 1) // tasks_per_plane
    planes_per_task = max(1, task_work // (out_height * line_work)) if tasks_per_plane == 1 else 1
    tasks = (planes + planes_per_task - 1) // planes_per_task * tasks_per_plane
    return tasks, tasks_per_plane, lines_per_task, planes_per_task


@njit(**SCALAR_FUNCTION)
def pool_share(n, channels, width, out_height, out_width, kernel_h, kernel_w, task_work=CHUNK):
    """``pool_split`` of n samples of ``channels`` planes ``width`` wide into planes of out_height
    x out_width, by windows kernel_h x kernel_w: (tasks, tasks_per_plane, lines_per_task,
    planes_per_task), for ``pool_windows`` and a chain's pooling steps."""
    return pool_split(n * channels, out_height, kernel_h * width + kernel_w * out_width, task_work)


@njit(**SCALAR_FUNCTION)
def pool_task(task, x_rows, height, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
              method, exclude_pad, out_rows, out_height, vectors, tasks_per_plane, lines_per_task, planes_per_task,
              planes):
    """Task ``task`` of ``pool_windows`` (``pool_share``'s share of its ``planes`` = n * C planes),
    on x and out as 2-d arrays of rows (``height`` and ``out_height`` a plane), inlined with a
    literal ``method`` and ``vectors``: into each pooling kernel's parallel loop, and into the
    task functions of ``chain.convolution_chain_cpu``'s pooling steps. (Views taken per task
    would each take a reference on the buffer: an atomic both threads contend for, which made
    the pooling kernels 1.02x-1.28x slower.)"""
    width, out_width = x_rows.shape[1], out_rows.shape[1]
    padded_width = (out_width - 1) * stride_w + kernel_w  # >= out_width
    data_width = min(width, padded_width - pad_left)
    first_plane = (task // tasks_per_plane) * planes_per_task
    end_plane = min(first_plane + planes_per_task, planes)
    first_line = (task % tasks_per_plane) * lines_per_task
    end_line = min(first_line + lines_per_task, out_height)
    # (8 more columns, 16 for rows 16 wide: the vector passes load past the last window, and on
    # short rows, into rows 1 and 2, which they do not use. For 8-wide rows, 16 more or row 0
    # alone on cache lines of its own made SqueezeNet's first pool 1.2x-1.3x the time on two
    # threads.)
    wide = data_width <= WIDE_POOL_COLUMNS
    spare = (16 if wide else 8) if vectors else 0
    scratch = np.empty((3, padded_width + spare), dtype=np.float32)
    padding = -np.inf if method == METHOD_MAX else 0.0
    for i in range(pad_left):
        scratch[0, i] = padding
    for i in range(pad_left + data_width, padded_width):
        scratch[0, i] = padding
    if method == METHOD_AVG:
        for ow in range(out_width):
            left = ow * stride_w - pad_left
            scratch[2, ow] = window_cells(left, kernel_w, width, pad_right, exclude_pad)
    for plane in range(first_plane, end_plane):
        if vectors:
            max_pool_lines_by_vectors(x_rows, out_rows, scratch, plane, first_line, end_line, height,
                                      out_height, kernel_h, stride_h, stride_w, pad_top, pad_left, data_width, wide)
        else:
            pool_lines(x_rows, out_rows, scratch, plane, first_line, end_line, height, out_height, kernel_h,
                       kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, exclude_pad, data_width,
                       method)


@njit(**SCALAR_FUNCTION)
def pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, method, exclude_pad, out, vectors):
    """The body of max_pooling_cpu, max_pooling_3_wide_cpu and avg_pooling_cpu, inlined into each
    with a literal ``method`` and ``vectors`` (its prange becomes the kernel's parallel loop, and
    Numba prunes the branches of the others, which halves the compile time of each kernel).
    vectors: the lines go to ``max_pool_lines_by_vectors`` (``max_pooling_3_wide_cpu``), else to
    ``pool_lines``.

    Separable: the rows of a window are pooled into one row, whose columns then pool each output.
    That row is padded (-inf, which loses every max, or 0 for a sum), so every window reads kw
    cells of it and no loop tests a bound. A parallel iteration (``pool_task``) pools several
    output lines of one plane, or several small planes (``pool_split``), enough to pay for its
    scratch: rows 0 and 1 for the rows pooled, row 2 (an average's only) for the number of
    columns of each window that it divides by. x and out are indexed in full through 2-d views,
    as in global_pooling_cpu."""
    max_batch, channels, height, width = x.shape
    out_height, out_width = out.shape[2], out.shape[3]
    x_rows = x.reshape((max_batch * channels * height, width))
    out_rows = out.reshape((max_batch * channels * out_height, out_width))
    tasks, tasks_per_plane, lines_per_task, planes_per_task = pool_share(n, channels, width, out_height, out_width,
                                                                         kernel_h, kernel_w)
    for task in prange(tasks):
        pool_task(task, x_rows, height, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                  pad_right, method, exclude_pad, out_rows, out_height, vectors, tasks_per_plane, lines_per_task,
                  planes_per_task, n * channels)


@njit(**PARALLEL_KERNEL)
def max_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                    pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W) float32; out: (max_batch, C, OH, OW) float32; method is
    METHOD_MAX (taken for a uniform signature) and exclude_pad unused. Reads x rows < n, writes
    out rows < n; each parallel iteration owns whole output lines. Every window holds at least
    one data cell (the graph guarantees it)."""
    pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, METHOD_MAX, exclude_pad, out, False)


@njit(**PARALLEL_KERNEL)
def max_pooling_3_wide_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                           pad_right, method, exclude_pad, out):
    """As max_pooling_cpu, for windows 3 wide and at most 3 high, at stride_w 1 or 2
    (``choose_cpu_kernel``): every line by 8- or 16-wide vectors (``max_pool_lines_by_vectors``), where
    max_pooling_cpu's loops, which LLVM vectorises 32 columns at a time, leave short rows to
    scalar code. A kernel of its own, with no other loops: as a branch of max_pooling_cpu it made
    that kernel's other loops 1.1x-1.2x slower, and those loops kept here for rows under 8 made
    this one 1.01x-1.05x slower."""
    pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, METHOD_MAX, exclude_pad, out, True)


@njit(**PARALLEL_KERNEL)
def avg_pooling_cpu(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                    pad_right, method, exclude_pad, out):
    """As max_pooling_cpu, for METHOD_AVG; exclude_pad: 0 or 1."""
    pool_windows(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, METHOD_AVG, exclude_pad, out, False)


def choose_cpu_kernel(attrs, x_shape, out_shape):
    """The CPU kernel for these attributes and 4-d shapes (see the module docstring)."""
    kernel_w, pad_left = attrs["kernel"][1], attrs["pads_begin"][1]
    if out_shape[3] == 1 and kernel_w - pad_left >= x_shape[3]:
        return global_pooling_cpu
    if attrs["pool_method"] != "max":
        return avg_pooling_cpu
    if kernel_w == 3 and attrs["strides"][1] <= 2 and attrs["kernel"][0] <= 3:
        return max_pooling_3_wide_cpu
    return max_pooling_cpu


def cpu_step(attrs, inputs, outputs):
    kernel_h, kernel_w = attrs["kernel"]
    stride_h, stride_w = attrs["strides"]
    pad_top, pad_left = attrs["pads_begin"]
    pad_bottom, pad_right = attrs["pads_end"]
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    return choose_cpu_kernel(attrs, x.shape, out.shape), (
        x,
        int(kernel_h), int(kernel_w), int(stride_h), int(stride_w),
        int(pad_top), int(pad_left), int(pad_bottom), int(pad_right),
        METHOD_CODES[attrs["pool_method"]], int(bool(attrs["exclude_pad"])),
        out,
    )


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from .launch import cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def pooling_cuda(n, x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                 pad_right, method, exclude_pad, out):
    """x: (max_batch, C, H, W); out: (max_batch, C, OH, OW); as the CPU kernels. One output
    element per thread, ow fastest: the threads of a warp read neighbouring input columns.
    Reads x rows < n, writes out rows < n."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_height, out_width = out.shape[2], out.shape[3]
    for i in range(cuda.grid(1), n * channels * out_height * out_width, cuda.gridsize(1)):
        ow = i % out_width
        oh = (i // out_width) % out_height
        c = (i // (out_width * out_height)) % channels
        b = i // (out_width * out_height * channels)
        top = oh * stride_h - pad_top
        left = ow * stride_w - pad_left
        pooled = np.float32(-math.inf) if method == METHOD_MAX else np.float32(0.0)
        for ih in range(max(top, 0), min(top + kernel_h, height)):
            for iw in range(max(left, 0), min(left + kernel_w, width)):
                pooled = pooled_pair(pooled, x[b, c, ih, iw], method)
        if method == METHOD_AVG:
            pooled /= np.float32(window_cells(top, kernel_h, height, pad_bottom, exclude_pad)
                                 * window_cells(left, kernel_w, width, pad_right, exclude_pad))
        out[b, c, oh, ow] = pooled


def gpu_step(attrs, inputs, outputs):
    kernel_h, kernel_w = attrs["kernel"]
    stride_h, stride_w = attrs["strides"]
    pad_top, pad_left = attrs["pads_begin"]
    pad_bottom, pad_right = attrs["pads_end"]
    out = as_4d(outputs[0])
    args = (
        as_4d(inputs[0]),
        int(kernel_h), int(kernel_w), int(stride_h), int(stride_w),
        int(pad_top), int(pad_left), int(pad_bottom), int(pad_right),
        METHOD_CODES[attrs["pool_method"]], int(bool(attrs["exclude_pad"])),
        out,
    )
    return elementwise_launch(pooling_cuda, out.shape[1] * out.shape[2] * out.shape[3]), args
