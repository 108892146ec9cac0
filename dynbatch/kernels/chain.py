"""A run of consecutive convolution steps (and the max poolings over 3-wide windows, the global
poolings, the LRN layers across channels and the FullyConnected layers among them) in one
parallel loop: ``convolution_chain_cpu``.

Each Numba parallel loop is a new TBB task arena that the worker thread joins 7 to 18 us after
the loop starts, even when loops follow each other closely (``benchmarks/thread_join.py``). A
layer that takes 20-40 us at n = 1 (SqueezeNet's small 1x1 layers) spends much of it on one core.
Run as one loop, the worker joins once for the whole run of layers and then stays.

Inside the loop every thread runs the steps in order. For each step it takes tasks (those of
``convolution.gemm_task``, ``winograd_task``, ``depthwise_task``, ``stem_task``,
``gemm_average_task``, ``pooling.pool_task``, ``pooling.global_pool_outputs``,
``lrn.lrn_across_task`` or ``fully_connected.fully_connected_task``) from
its own share first, the one the step's kernel would give it alone, then from the others'
shares. Each take is one atomic add on that share's counter, so no task runs twice. It then
waits until the step's count of finished tasks reaches its task count, since the next step
reads what this one wrote. A thread waits only for tasks that a running thread has taken, so
the loop ends even where a worker never comes (TBB does not promise one): the master then takes
every task itself.

The steps' arrays are passed as their addresses and shapes in one int64 array (``chain_step``),
which Numba's parallel loop can take where it cannot take a tuple of arrays. The arrays belong to
the infer request's buffers and to the bound steps, which the chain's step keeps as its members
(``graph.compiler.chain_convolutions``).

A task runs through a C function of its step's kind (``task_function``: a Numba ``cfunc`` that
rebuilds the step's arrays from its row with ``numba.carray`` and calls the task), which the loop
calls by the address that the row holds. Called directly, the tasks' code was linked into the
chain's machine code and optimised again three times over (the loop's body, the loop's wrapper,
the kernel): the chain's own compile took 19 s of a cold load of GoogLeNet, now 3 s (the load
57-59 s against 66-67 s, alternating, without ``compile_helper``'s second process).
"""
import inspect
import platform
import sys
import time

import llvmlite.ir as ir
import numpy as np
from numba import carray, cfunc, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import CHUNK, FASTMATH, PARALLEL_KERNEL, SCALAR_FUNCTION
from .convolution import (average_splits, convolution_depthwise_cpu, convolution_gemm_average_cpu,
                          convolution_gemm_cpu, convolution_stem_cpu, convolution_winograd_cpu, depthwise_share,
                          depthwise_task, gemm_average_task, gemm_split, gemm_task, stem_split, stem_task, stem_taps,
                          winograd_split, winograd_task)
from .fully_connected import fully_connected_cpu, fully_connected_task
from .gemm import NR
from .lrn import REGION_ACROSS, lrn_across_task, lrn_cpu, lrn_spans
from .pooling import (METHOD_MAX, global_pool_outputs, global_pool_share, global_pooling_cpu, max_pooling_3_wide_cpu,
                      pool_share, pool_task, window_cells)

(GEMM_STEP, WINOGRAD_STEP, DEPTHWISE_STEP, STEM_STEP, AVERAGE_STEP, MAX_POOL_STEP, FC_STEP, LRN_STEP,
 GLOBAL_POOL_STEP) = range(9)
#: The steps that are not convolutions: their x and out must be C-contiguous (``chainable``),
#: and ``chain_step`` fills in the arguments they lack.
OTHER_STEPS = (MAX_POOL_STEP, FC_STEP, LRN_STEP, GLOBAL_POOL_STEP)
_NO_ROWS = np.zeros(0, np.intp)
_NO_FLOATS = np.zeros(0, np.float32)
#: Arguments one chained kernel takes and another does not, at the value that stands for it:
#: the GEMM's that the Winograd kernel (3x3, stride 1, ungrouped) fixes, Winograd's tile side and
#: blocking, the GEMM's reduction rows and task width, which the depthwise and stem kernels have
#: none of, the stem's kernel, convolution and pooling sizes, the averaged pixels, and the
#: pooling's end pads, exclude_pad and method, which no convolution takes (a pooling step's others:
#: ``chain_step``).
ABSENT_ARGUMENTS = {"group": 1, "stride_h": 1, "stride_w": 1, "in_place": False, "tile": 0, "tile_rows": False,
                    "task_columns": 0, "first_out_channel": 0, "row_offset": _NO_ROWS, "row_tap": _NO_ROWS,
                    "tap_dy": _NO_ROWS, "tap_dx": _NO_ROWS, "kernel_h": 0, "kernel_w": 0, "conv_height": 0,
                    "conv_width": 0, "pool_h": 1, "pool_w": 1, "pool_stride_h": 1, "pool_stride_w": 1, "pool_top": 0,
                    "pool_left": 0, "pixels": 0, "pad_bottom": 0, "pad_right": 0, "exclude_pad": 0,
                    "method": METHOD_MAX}
#: The kernels whose steps a chain can take, and each one's step kind (an LRN across channels
#: only, AlexNet's and GoogLeNet's: run alone, each LRN, and GoogLeNet's global average pooling,
#: was a parallel loop of its own between two chains, each loop joined late by the worker thread).
#: (Max pooling over 3-wide windows, the networks' 3x3 poolings, and not ``max_pooling_cpu`` or
#: ``avg_pooling_cpu``: their loops, which LLVM vectorises on its own, took 1.5x-1.8x their
#: kernels' time in a task function, for reasons not found, where the 3-wide kernel's explicit
#: vectors took their kernel's time.)
CHAINED_KERNELS = {convolution_gemm_cpu: GEMM_STEP, convolution_winograd_cpu: WINOGRAD_STEP,
                   convolution_depthwise_cpu: DEPTHWISE_STEP, convolution_stem_cpu: STEM_STEP,
                   convolution_gemm_average_cpu: AVERAGE_STEP, max_pooling_3_wide_cpu: MAX_POOL_STEP,
                   fully_connected_cpu: FC_STEP, lrn_cpu: LRN_STEP, global_pooling_cpu: GLOBAL_POOL_STEP}
#: Loads of work in a chained pooling task: four times its kernel's (``config.CHUNK``). A task
#: costs the chain two atomic adds and a call; at CHUNK, a pooling took 1.02x-1.05x its kernel's
#: time on one thread, at four times 0.97x-0.98x.
CHAINED_POOL_WORK = 4 * CHUNK

# Columns of a step's row of ``ints``: its kind, where its arrays are (address, then shape or
# length), and its scalar arguments.
KIND, X, X_SHAPE, WEIGHTS, WEIGHTS_LENGTH, BIASES, BIASES_LENGTH = 0, 1, 2, 6, 7, 8, 9
ROW_OFFSET, ROW_TAP, TAP_DY, TAP_DX = 10, 12, 14, 16  # each (address, length)
RESIDUAL, RESIDUAL_SHAPE, OUT, OUT_SHAPE = 18, 19, 22, 23  # (shapes of 3, a 2-d array's as (N, K, 1))
GROUP, STRIDE_H, STRIDE_W, PAD_TOP, PAD_LEFT, OUT_WIDTH, IN_PLACE = 26, 27, 28, 29, 30, 31, 32
TASK_COLUMNS, MIN_TASKS, HAS_RESIDUAL, ACTIVATION, FIRST_OUT_CHANNEL, TILE = 33, 34, 35, 36, 37, 38
KERNEL_H, KERNEL_W, CONV_HEIGHT, CONV_WIDTH, POOL_H, POOL_W = 39, 40, 41, 42, 43, 44
POOL_STRIDE_H, POOL_STRIDE_W, POOL_TOP, POOL_LEFT, PIXELS = 45, 46, 47, 48, 49
PAD_BOTTOM, PAD_RIGHT, EXCLUDE_PAD, TILE_ROWS, METHOD = 50, 51, 52, 53, 54
TASK = 55  # the address of the step kind's task function (``task_function``)
INTS = 56
#: Columns of a step's row of ``floats``: its epilogue's alpha and beta (an LRN step's scaled
#: alpha and beta), and an LRN step's bias. (An LRN step's window, before and after its channel,
#: is in the KERNEL_H and KERNEL_W columns of ``ints``.)
FLOATS = 3
#: The scalar arguments from GROUP on, in their columns' order.
SCALARS = ("group", "stride_h", "stride_w", "pad_top", "pad_left", "out_width", "in_place", "task_columns",
           "min_tasks", "has_residual", "activation", "first_out_channel", "tile", "kernel_h", "kernel_w",
           "conv_height", "conv_width", "pool_h", "pool_w", "pool_stride_h", "pool_stride_w", "pool_top", "pool_left",
           "pixels", "pad_bottom", "pad_right", "exclude_pad", "tile_rows", "method")


@intrinsic
def fetch_add(typingctx, counters, index, value):
    """counters[index] += value atomically (an int64 array), returning the value before."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", builder.gep(data, [args[1]]), args[2], "acq_rel")

    return types.int64(counters, types.intp, types.int64), codegen


@intrinsic
def load_acquire(typingctx, counters, index):
    """counters[index] (an int64 array), read atomically: the loads it orders after it see the
    writes ordered before the adds that made its value."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)

    return types.int64(counters, types.intp), codegen


#: x86's time-stamp counter ticks at a fixed rate and user code may read it; elsewhere (where
#: reading the cycle counter may trap) the chain's layers share their time unsplit.
HAS_CYCLE_COUNTER = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def _cycles(typingctx):
    """The time-stamp counter (0 without ``HAS_CYCLE_COUNTER``)."""
    def codegen(context, builder, signature, args):
        if not HAS_CYCLE_COUNTER:
            return ir.Constant(ir.IntType(64), 0)
        counter = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                                 "llvm.readcyclecounter")
        return builder.call(counter, [])

    return types.int64(), codegen


#: Polls of a layer's count of finished tasks before a waiting thread starts giving its core away
#: (about 20-50 us): a wait is one task at most, unless the thread running it lost its core to
#: another process or request, which the waiting one's spinning would then delay further.
SPINS_BEFORE_YIELD = 2000
_HAS_SCHED_YIELD = sys.platform != "win32"


@intrinsic
def _yield_core(typingctx):
    """sched_yield(): let another runnable thread have this core (nothing on Windows)."""
    def codegen(context, builder, signature, args):
        if _HAS_SCHED_YIELD:
            sched_yield = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                         "sched_yield")
            builder.call(sched_yield, [])
        return context.get_dummy_value()

    return types.void(), codegen


def _pointer_intrinsic(dtype):
    @intrinsic
    def pointer(typingctx, address):
        """The int64 ``address`` as a pointer to ``dtype``, for ``numba.carray``."""
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return types.CPointer(dtype)(types.int64), codegen

    return pointer


_float_pointer = _pointer_intrinsic(types.float32)
_index_pointer = _pointer_intrinsic(types.intp)


@intrinsic
def _data_address(typingctx, array):
    """Where ``array``'s data starts, as an int64."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return types.int64(array), codegen


@intrinsic
def _call_task(typingctx, address, task, n, row, alpha_beta, column_panels, chunks, splits, panels_per_split):
    """Call the task function at ``address`` (``task_function``) with the other arguments."""
    def codegen(context, builder, signature, args):
        int64 = ir.IntType(64)
        arguments = [context.cast(builder, value, kind, types.int64)
                     for value, kind in zip(args[1:], signature.args[1:])]
        function = builder.inttoptr(context.cast(builder, args[0], signature.args[0], types.int64),
                                    ir.FunctionType(ir.VoidType(), [int64] * len(arguments)).as_pointer())
        builder.call(function, arguments)
        return context.get_dummy_value()

    return types.void(address, task, n, row, alpha_beta, column_panels, chunks, splits, panels_per_split), codegen


@njit(**SCALAR_FUNCTION)
def _step_arrays(row):
    """The arrays of the step whose ``ints`` row is ``row``: (x, weights, biases, residual_flat,
    out, row_offset, row_tap, tap_dy, tap_dx)."""
    x = carray(_float_pointer(row[X]), (row[X_SHAPE], row[X_SHAPE + 1], row[X_SHAPE + 2], row[X_SHAPE + 3]))
    weights = carray(_float_pointer(row[WEIGHTS]), (row[WEIGHTS_LENGTH],))
    biases = carray(_float_pointer(row[BIASES]), (row[BIASES_LENGTH],))
    residual_flat = carray(_float_pointer(row[RESIDUAL]),
                           (row[RESIDUAL_SHAPE] * row[RESIDUAL_SHAPE + 1] * row[RESIDUAL_SHAPE + 2],))
    out = carray(_float_pointer(row[OUT]), (row[OUT_SHAPE], row[OUT_SHAPE + 1], row[OUT_SHAPE + 2]))
    row_offset = carray(_index_pointer(row[ROW_OFFSET]), (row[ROW_OFFSET + 1],))
    row_tap = carray(_index_pointer(row[ROW_TAP]), (row[ROW_TAP + 1],))
    tap_dy = carray(_index_pointer(row[TAP_DY]), (row[TAP_DY + 1],))
    tap_dx = carray(_index_pointer(row[TAP_DX]), (row[TAP_DX + 1],))
    return x, weights, biases, residual_flat, out, row_offset, row_tap, tap_dy, tap_dx


def gemm_step_task(task, n, row_address, alpha_beta_address, column_panels, chunks, splits, panels_per_split):
    """Task ``task`` of a GEMM step, whose ``ints`` row and (alpha, beta) are at these addresses."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    x, weights, biases, residual_flat, out, row_offset, row_tap, tap_dy, tap_dx = _step_arrays(row)
    gemm_task(task, n, x, x.reshape(x.size), weights, biases, row[GROUP], row[STRIDE_H], row[STRIDE_W], row[PAD_TOP],
              row[PAD_LEFT], row[OUT_WIDTH], row_offset, row_tap, tap_dy, tap_dx, row[IN_PLACE] != 0, residual_flat,
              row[HAS_RESIDUAL], row[ACTIVATION], alpha_beta[0], alpha_beta[1], row[FIRST_OUT_CHANNEL], out,
              out.reshape(out.size), column_panels, chunks, splits, panels_per_split)


def winograd_step_task(task, n, row_address, alpha_beta_address, column_panels, chunks, splits, panels_per_split):
    """Task ``task`` of a Winograd step, as ``gemm_step_task``."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    x, weights, biases, residual_flat, out, row_offset, row_tap, tap_dy, tap_dx = _step_arrays(row)
    winograd_task(task, n, x, x.reshape(x.size), weights, biases, row[PAD_TOP], row[PAD_LEFT], row[OUT_WIDTH],
                  row[TILE], row[TILE_ROWS] != 0, row_offset, row_tap, tap_dy, tap_dx, residual_flat,
                  row[HAS_RESIDUAL], row[ACTIVATION], alpha_beta[0], alpha_beta[1], row[FIRST_OUT_CHANNEL], out,
                  out.reshape(out.size), column_panels, chunks, splits, panels_per_split)


def depthwise_step_task(task, n, row_address, alpha_beta_address, band_rows, planes_per_task, chunks, unused):
    """Task ``task`` of a depthwise step, as ``gemm_step_task`` (with ``depthwise_share``'s share)."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    x, weights, biases, residual_flat, out, _, _, _, _ = _step_arrays(row)
    depthwise_task(task, n, x, x.reshape(x.size), weights, biases, row[STRIDE_H], row[STRIDE_W], row[PAD_TOP],
                   row[PAD_LEFT], row[OUT_WIDTH], residual_flat, row[HAS_RESIDUAL], row[ACTIVATION], alpha_beta[0],
                   alpha_beta[1], out, out.reshape(out.size), band_rows, planes_per_task, chunks)


def stem_step_task(task, n, row_address, alpha_beta_address, band_rows, bands, chunks, unused):
    """Task ``task`` of a stem step, as ``gemm_step_task`` (with ``stem_split``'s share)."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    x, weights, biases, residual_flat, out, _, _, _, _ = _step_arrays(row)
    tap_offsets, scratch_plane = stem_taps(row[X_SHAPE + 1] // row[GROUP], row[KERNEL_H], row[KERNEL_W],
                                           row[STRIDE_H], row[STRIDE_W], row[CONV_HEIGHT], row[CONV_WIDTH],
                                           row[POOL_H], row[POOL_STRIDE_H], band_rows)
    stem_task(task, x, x.reshape(x.size), weights, biases, row[GROUP], row[STRIDE_H], row[STRIDE_W], row[PAD_TOP],
              row[PAD_LEFT], row[KERNEL_H], row[KERNEL_W], row[CONV_HEIGHT], row[CONV_WIDTH], row[POOL_H], row[POOL_W],
              row[POOL_STRIDE_H], row[POOL_STRIDE_W], row[POOL_TOP], row[POOL_LEFT], tap_offsets, scratch_plane,
              residual_flat, row[HAS_RESIDUAL], row[ACTIVATION], alpha_beta[0], alpha_beta[1], out,
              out.reshape(out.size), row[OUT_WIDTH], band_rows, bands, chunks)


def average_step_task(task, n, row_address, alpha_beta_address, splits, unused, unused2, unused3):
    """Task ``task`` of a GEMM step with its global average (``average_splits``' share)."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    x, weights, biases, residual_flat, out, row_offset, row_tap, tap_dy, tap_dx = _step_arrays(row)
    gemm_average_task(task, splits, x, x.reshape(x.size), weights, biases, row[STRIDE_H], row[STRIDE_W],
                      row[PAD_TOP], row[PAD_LEFT], row[OUT_WIDTH], row[PIXELS], row_offset, row_tap, tap_dy, tap_dx,
                      row[IN_PLACE] != 0, row[TASK_COLUMNS], residual_flat, row[HAS_RESIDUAL], row[ACTIVATION],
                      alpha_beta[0], alpha_beta[1], out.reshape(out.size))


@njit(**SCALAR_FUNCTION)
def _pooling_rows(row):
    """A pooling step's x and out as 2-d arrays of rows (``pooling.pool_task``'s), and out's
    rows a plane."""
    x_rows = carray(_float_pointer(row[X]), (row[X_SHAPE] * row[X_SHAPE + 1] * row[X_SHAPE + 2], row[X_SHAPE + 3]))
    out_height = row[OUT_SHAPE + 2] // row[OUT_WIDTH]
    out_rows = carray(_float_pointer(row[OUT]), (row[OUT_SHAPE] * row[OUT_SHAPE + 1] * out_height, row[OUT_WIDTH]))
    return x_rows, out_rows, out_height


def max_pool_step_task(task, n, row_address, alpha_beta_address, tasks_per_plane, lines_per_task, planes_per_task,
                       unused):
    """Task ``task`` of a ``max_pooling_3_wide_cpu`` step (``pooling.pool_share``'s share)."""
    row = carray(_index_pointer(row_address), (INTS,))
    x_rows, out_rows, out_height = _pooling_rows(row)
    pool_task(task, x_rows, row[X_SHAPE + 2], row[KERNEL_H], row[KERNEL_W], row[STRIDE_H], row[STRIDE_W],
              row[PAD_TOP], row[PAD_LEFT], row[PAD_BOTTOM], row[PAD_RIGHT], METHOD_MAX, row[EXCLUDE_PAD], out_rows,
              out_height, True, tasks_per_plane, lines_per_task, planes_per_task, n * row[X_SHAPE + 1])


def fully_connected_step_task(task, n, row_address, alpha_beta_address, unused, unused2, unused3, unused4):
    """Task ``task`` of a FullyConnected step: its panel ``task`` of output features."""
    row = carray(_index_pointer(row_address), (INTS,))
    alpha_beta = carray(_float_pointer(alpha_beta_address), (2,))
    in_features, out_features = row[X_SHAPE + 1], row[OUT_SHAPE + 1]
    fully_connected_task(task, n, carray(_float_pointer(row[X]), (row[X_SHAPE] * in_features,)), in_features,
                         carray(_float_pointer(row[WEIGHTS]), (row[WEIGHTS_LENGTH],)),
                         carray(_float_pointer(row[BIASES]), (row[BIASES_LENGTH],)), row[ACTIVATION], alpha_beta[0],
                         alpha_beta[1], carray(_float_pointer(row[OUT]), (row[OUT_SHAPE] * out_features,)),
                         out_features)


def lrn_step_task(task, n, row_address, floats_address, spans, unused, unused2, unused3):
    """Task ``task`` of an LRN step across channels (``lrn.lrn_spans``' ``spans`` a plane)."""
    row = carray(_index_pointer(row_address), (INTS,))
    scaled_alpha, beta, bias = carray(_float_pointer(floats_address), (FLOATS,))
    planes, plane_size = row[X_SHAPE] * row[X_SHAPE + 1], row[X_SHAPE + 2] * row[X_SHAPE + 3]
    lrn_across_task(task, carray(_float_pointer(row[X]), (planes, plane_size)),
                    carray(_float_pointer(row[OUT]), (planes, plane_size)), row[X_SHAPE + 1], spans, row[KERNEL_H],
                    row[KERNEL_W], bias, scaled_alpha, beta)


def global_pool_step_task(task, n, row_address, floats_address, outputs_per_task, unused, unused2, unused3):
    """Task ``task`` of a ``global_pooling_cpu`` step: its ``outputs_per_task`` outputs
    (``pooling.global_pool_share``)."""
    row = carray(_index_pointer(row_address), (INTS,))
    height, width, out_height = row[X_SHAPE + 2], row[X_SHAPE + 3], row[OUT_SHAPE + 2]
    planes = carray(_float_pointer(row[X]), (row[X_SHAPE] * row[X_SHAPE + 1], height * width))
    outputs = carray(_float_pointer(row[OUT]), (row[OUT_SHAPE] * row[OUT_SHAPE + 1] * out_height,))
    first = task * outputs_per_task
    global_pool_outputs(first, min(first + outputs_per_task, n * row[X_SHAPE + 1] * out_height), planes, outputs,
                        height, out_height, row[KERNEL_H], row[STRIDE_H], row[PAD_TOP], row[PAD_BOTTOM], row[METHOD],
                        row[EXCLUDE_PAD],
                        window_cells(-row[PAD_LEFT], row[KERNEL_W], width, row[PAD_RIGHT], row[EXCLUDE_PAD]))


_TASK_SIGNATURE = types.void(*([types.int64] * 8))
_STEP_TASKS = {GEMM_STEP: gemm_step_task, WINOGRAD_STEP: winograd_step_task, DEPTHWISE_STEP: depthwise_step_task,
               STEM_STEP: stem_step_task, AVERAGE_STEP: average_step_task, MAX_POOL_STEP: max_pool_step_task,
               FC_STEP: fully_connected_step_task, LRN_STEP: lrn_step_task, GLOBAL_POOL_STEP: global_pool_step_task}
_task_functions = {}


def task_function(kind: int) -> int:
    """The address of the C function that runs one task of a step of this kind, compiled (or
    loaded from Numba's cache) on first use."""
    if kind not in _task_functions:
        _task_functions[kind] = cfunc(_TASK_SIGNATURE, cache=True, fastmath=FASTMATH,
                                      error_model="numpy")(_STEP_TASKS[kind])
    return _task_functions[kind].address


@njit(**PARALLEL_KERNEL)
def convolution_chain_cpu(n, threads, counters, cycles, ints, floats):
    """Steps 0.. of ``chain_step``'s rows, in order, inside one parallel loop of ``threads``
    iterations. ints: (steps, INTS) int64, a row per step (its kind, its arrays' addresses and
    shapes, its scalar arguments, its task function's address); floats: (steps, FLOATS), each
    step's epilogue alpha and beta (and an LRN step's bias); counters: (steps * (threads + 1),)
    int64, zeroed here: for each step, the tasks taken from each thread's share, then the tasks
    finished; cycles: (steps + 1,) int64, the cycle counter before the loop and when iteration 0
    saw each step finished (``step_seconds``). Reads and writes rows < n of every step, as its own
    kernel would."""
    steps = ints.shape[0]
    stride = threads + 1
    for i in range(counters.shape[0]):  # (a loop: Numba would make a slice assignment parallel)
        counters[i] = 0
    cycles[0] = _cycles()
    for thread in prange(threads):
        for s in range(steps):
            biases_length, out_pixels = ints[s, BIASES_LENGTH], ints[s, OUT_SHAPE + 2]
            if ints[s, KIND] == GEMM_STEP:
                tasks, column_panels, chunks, splits, panels_per_split = gemm_split(
                    n, biases_length, ints[s, GROUP], ints[s, TASK_COLUMNS], ints[s, MIN_TASKS], out_pixels)
            elif ints[s, KIND] == DEPTHWISE_STEP:  # (its share in the same four integers)
                tasks, column_panels, chunks, splits = depthwise_share(
                    n, ints[s, X_SHAPE + 1], ints[s, WEIGHTS_LENGTH], out_pixels, ints[s, OUT_WIDTH], ints[s, STRIDE_H],
                    ints[s, STRIDE_W], ints[s, MIN_TASKS])
                panels_per_split = 0
            elif ints[s, KIND] == STEM_STEP:
                column_panels, chunks, splits = stem_split(
                    n, ints[s, X_SHAPE + 1], ints[s, GROUP], ints[s, OUT_SHAPE + 1], out_pixels // ints[s, OUT_WIDTH],
                    ints[s, CONV_HEIGHT], ints[s, CONV_WIDTH], ints[s, KERNEL_H], ints[s, KERNEL_W], ints[s, STRIDE_H],
                    ints[s, STRIDE_W], ints[s, POOL_H], ints[s, POOL_STRIDE_H], ints[s, MIN_TASKS])
                tasks, panels_per_split = n * chunks * splits, 0
            elif ints[s, KIND] == AVERAGE_STEP:
                column_panels = average_splits(n, biases_length, ints[s, MIN_TASKS])
                tasks, chunks, splits, panels_per_split = n * column_panels, 0, 0, 0
            elif ints[s, KIND] == MAX_POOL_STEP:  # (its share in three of the four)
                out_width = ints[s, OUT_WIDTH]
                tasks, column_panels, chunks, splits = pool_share(
                    n, ints[s, X_SHAPE + 1], ints[s, X_SHAPE + 3], out_pixels // out_width, out_width,
                    ints[s, KERNEL_H], ints[s, KERNEL_W], CHAINED_POOL_WORK)
                panels_per_split = 0
            elif ints[s, KIND] == FC_STEP:  # (a task per panel of NR output features)
                tasks = ints[s, WEIGHTS_LENGTH] // (ints[s, X_SHAPE + 1] * NR) if n > 0 else 0
                column_panels, chunks, splits, panels_per_split = 0, 0, 0, 0
            elif ints[s, KIND] == GLOBAL_POOL_STEP:  # (its outputs a task in the first of the four)
                tasks, column_panels = global_pool_share(n * ints[s, X_SHAPE + 1] * out_pixels, ints[s, KERNEL_H],
                                                         ints[s, X_SHAPE + 3])
                chunks, splits, panels_per_split = 0, 0, 0
            elif ints[s, KIND] == LRN_STEP:  # (its spans a plane in the first of the four)
                column_panels = lrn_spans(out_pixels)
                tasks, chunks, splits, panels_per_split = n * ints[s, X_SHAPE + 1] * column_panels, 0, 0, 0
            else:
                tasks, column_panels, chunks, splits, panels_per_split = winograd_split(
                    n, biases_length, ints[s, OUT_WIDTH], ints[s, TILE], ints[s, TILE_ROWS] != 0,
                    ints[s, TASK_COLUMNS], ints[s, MIN_TASKS], out_pixels)
            # (the addresses of step s's rows of ints and floats)
            row, alpha_beta = _data_address(ints) + s * INTS * 8, _data_address(floats) + s * FLOATS * 4
            done = s * stride + threads
            for k in range(threads):
                owner = (thread + k) % threads  # its own share first, then the next threads'
                first, end = owner * tasks // threads, (owner + 1) * tasks // threads
                while True:
                    task = first + fetch_add(counters, s * stride + owner, 1)
                    if task >= end:
                        break
                    _call_task(ints[s, TASK], task, n, row, alpha_beta, column_panels, chunks, splits,
                               panels_per_split)
                    fetch_add(counters, done, 1)
            polls = 0
            while load_acquire(counters, done) < tasks:
                polls += 1
                if polls > SPINS_BEFORE_YIELD:
                    _yield_core()
            if thread == 0:
                cycles[s + 1] = _cycles()


def chainable(kernel, args) -> bool:
    """Whether a chain can take the step ``kernel(n, *args)``: a kernel of ``CHAINED_KERNELS``
    (an LRN across channels; and a pooling, FullyConnected or LRN step's input and output
    C-contiguous float32, as their own kernels take any strides)."""
    if kernel not in CHAINED_KERNELS:
        return False
    if CHAINED_KERNELS[kernel] not in OTHER_STEPS:
        return True
    if CHAINED_KERNELS[kernel] == LRN_STEP and arguments_by_name(kernel, args)["region"] != REGION_ACROSS:
        return False
    return all(array.dtype == np.float32 and array.flags.c_contiguous for array in (args[0], args[-1]))


def arguments_by_name(kernel, args) -> dict:
    """A step's arguments (after n) by the kernel's own parameter names, so that their order is
    written once, in the kernel."""
    return dict(zip(list(inspect.signature(kernel.py_func).parameters)[1:], args))


def task_kinds(args) -> list[int]:
    """The kinds of step (GEMM_STEP, WINOGRAD_STEP, DEPTHWISE_STEP, STEM_STEP, AVERAGE_STEP,
    MAX_POOL_STEP, FC_STEP, LRN_STEP, GLOBAL_POOL_STEP) of the chain bound to ``args``."""
    return sorted({int(kind) for kind in args[3][:, KIND]})


def _address(array: np.ndarray, dtype) -> int:
    """Where ``array``'s data starts: the chain rebuilds it from that and its shape alone."""
    if array.dtype != dtype or not array.flags.c_contiguous:
        layout = "C-contiguous" if array.flags.c_contiguous else "not C-contiguous"
        raise ValueError(f"a chained step's arrays must be C-contiguous {np.dtype(dtype)}: got a {layout} "
                         f"{array.dtype} array of shape {array.shape}")
    return array.ctypes.data


def _shape_3(array: np.ndarray) -> tuple[int, ...]:
    """A 3-d array's shape, a 2-d one's as (N, K, 1) (an averaged step's output, (N, K))."""
    return tuple(array.shape) + (1,) * (3 - array.ndim)


def chain_step(steps, threads: int, link_tasks: bool = True):
    """(convolution_chain_cpu, args) running ``steps`` ([(kernel, args)] of ``CHAINED_KERNELS``,
    as ``convolution.cpu_step`` binds them) in one parallel loop of ``threads`` iterations. The
    args hold the steps' arrays by address only: the caller keeps ``steps`` alive as long.

    link_tasks=False leaves the task functions' addresses 0 (``task_function`` not called, so
    nothing compiled yet): a step bound so only compiles its kernel, by a call with n = 0."""
    ints = np.zeros((len(steps), INTS), np.int64)
    floats = np.zeros((len(steps), FLOATS), np.float32)
    for s, (kernel, args) in enumerate(steps):
        # (ABSENT_ARGUMENTS fills in what this kernel does not take.)
        named = {**ABSENT_ARGUMENTS, **arguments_by_name(kernel, args)}
        if CHAINED_KERNELS[kernel] in (MAX_POOL_STEP, GLOBAL_POOL_STEP):
            # A pooling step: its out (N, C, OH, OW) held as (N, C, OH*OW) and OW, as a
            # convolution's; no weights, epilogue or thread count.
            out = named["out"]
            _address(out, np.float32)  # (C-contiguous, or the reshape below would be a copy)
            named.update(out=out.reshape(out.shape[0], out.shape[1], -1), out_width=out.shape[3],
                         residual=out.reshape(out.shape[0], out.shape[1], -1), biases=_NO_FLOATS,
                         packed_weights=_NO_FLOATS, has_residual=0, activation=0, alpha=0.0, beta=0.0, min_tasks=0)
        elif CHAINED_KERNELS[kernel] == LRN_STEP:
            # An LRN step: its out (N, C, H, W) held as (N, C, H*W) and W, its window in KERNEL_H
            # and KERNEL_W, its scaled alpha, beta and bias in ``floats``.
            out = named["out"]
            _address(out, np.float32)
            flat = out.reshape(out.shape[0], out.shape[1], -1)
            named.update(out=flat, out_width=out.shape[3], residual=flat, biases=_NO_FLOATS, packed_weights=_NO_FLOATS,
                         has_residual=0, activation=0, min_tasks=0, pad_top=0, pad_left=0, kernel_h=named["before"],
                         kernel_w=named["after"], alpha=named["scaled_alpha"])
        elif CHAINED_KERNELS[kernel] == FC_STEP:
            # A FullyConnected step: its (N, in_features) source held as x (N, in_features, 1, 1),
            # its (N, out) destination as out; no residual or thread count.
            source, destination = named["source"], named["destination"]
            _address(source, np.float32)
            named.update(x=source.reshape(source.shape[0], source.shape[1], 1, 1), out=destination,
                         residual=destination, out_width=1, has_residual=0, min_tasks=0, pad_top=0, pad_left=0)
        x, biases, residual, out = named["x"], named["biases"], named["residual"], named["out"]
        weights = named["packed_weights"] if "packed_weights" in named else named["packed_u"]
        row = ints[s]
        row[KIND] = CHAINED_KERNELS[kernel]
        row[TASK] = task_function(row[KIND]) if link_tasks else 0
        row[X], row[X_SHAPE:X_SHAPE + 4] = _address(x, np.float32), x.shape
        row[WEIGHTS], row[WEIGHTS_LENGTH] = _address(weights, np.float32), weights.size
        row[BIASES], row[BIASES_LENGTH] = _address(biases, np.float32), biases.size
        for column, name in ((ROW_OFFSET, "row_offset"), (ROW_TAP, "row_tap"), (TAP_DY, "tap_dy"), (TAP_DX, "tap_dx")):
            row[column], row[column + 1] = _address(named[name], np.intp), named[name].size
        row[RESIDUAL], row[RESIDUAL_SHAPE:RESIDUAL_SHAPE + 3] = _address(residual, np.float32), _shape_3(residual)
        row[OUT], row[OUT_SHAPE:OUT_SHAPE + 3] = _address(out, np.float32), _shape_3(out)
        row[GROUP:GROUP + len(SCALARS)] = [named[name] for name in SCALARS]
        floats[s] = named["alpha"], named["beta"], named["bias"] if row[KIND] == LRN_STEP else 0.0
    counters = np.zeros(len(steps) * (threads + 1), np.int64)
    cycles = np.zeros(len(steps) + 1, np.int64)
    return convolution_chain_cpu, (int(threads), counters, cycles, ints, floats)


@njit(cache=True, nogil=True)
def _read_cycles():
    return _cycles()


_cycles_per_second = None


def cycles_per_second() -> float:
    """The cycle counter's rate, measured once against ``time.perf_counter`` over 20 ms."""
    global _cycles_per_second
    if _cycles_per_second is None:
        _read_cycles()
        start, start_cycles = time.perf_counter(), _read_cycles()
        time.sleep(0.02)
        end, end_cycles = time.perf_counter(), _read_cycles()
        _cycles_per_second = (end_cycles - start_cycles) / (end - start)
    return _cycles_per_second


def step_seconds(args) -> list[float] | None:
    """Each step's time in the last call of the chain bound to ``args`` (``chain_step``'s): from
    the end of the step before (or the loop's start) to when iteration 0 saw it finished. None
    without ``HAS_CYCLE_COUNTER``."""
    if not HAS_CYCLE_COUNTER:
        return None
    cycles = args[2]
    rate = cycles_per_second()
    return [max(0.0, float(cycles[s + 1] - cycles[s]) / rate) for s in range(len(cycles) - 1)]
