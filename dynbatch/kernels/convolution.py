"""Convolution (grouped, strided, dilated, zero-padded): x (N, C, H, W) -> y (N, K, OH, OW),

    y[b, k, oh, ow] = biases[k] + sum_{c, i, j} x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
                                                * weights[k, c, i, j]

with weights (K, C/group, kh, kw), g = k // (K/group) the group of output channel k, and input
positions outside the image reading as zero. ``group == C`` is a depthwise convolution.
"""
import numpy as np
import numba
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION, SHARED_STEP
from ..memory import on_huge_pages
from .epilogue import bias_activation_at, epilogue_at, epilogue_sum, epilogue_value, fused_epilogue
from .gemm import (KC, MAX_TRANSPOSE_COLUMNS, MAX_VECTOR_STRIDE, MR, NARROW_COLUMNS, NR, PANELS_PER_BLOCK,
                   PANELS_PER_CALL, SHORT_PANEL_COLUMNS, WIDE_VECTORS, address, copy_lanes, empty_panels,
                   masked_copy_panel_row_runs, micro_kernel_pair_panels, micro_kernel_panels, pack_weights,
                   pair_panels_a_call, panel_layout, panels_a_call, prefetch_rows, product_pair_panels,
                   product_panels, short_panel_product, transpose_copy_panel_rows)
from .depthwise import LANES, deinterleave_rows, depthwise_row, depthwise_row_5, interleave_rows, pack_depthwise
from .stem import (STEM_CHANNEL_MULTIPLE, STEM_CHANNELS, STEM_PIXELS, STEM_VECTORS, max_run, pack_stem, stem_pixels,
                   stem_pixels_pair)
from .views import as_4d
from .winograd import (MAX_RUN_OUTPUTS, TILE_ROWS_CHANNELS, TILE_ROWS_MAX, copy_vectors, input_transform_2,
                       input_transform_4, output_transform_2, output_transform_4, run_outputs, sample_tiles,
                       tile_elements, tile_rows_product, transform_weights, transform_weights_tile_rows)


@njit(**SCALAR_FUNCTION)
def columns_in_range(shift, stride, source_width, count):
    """(begin, end): the k in [0, count) whose column k*stride + shift lies in [0, source_width),
    begin <= end. For a convolution k is the output column and the column an input one; for a
    deconvolution the reverse. Looping over exactly these leaves no bounds test in the loop."""
    begin = min(count, max(0, -(shift // stride)))  # ceil(-shift / stride)
    return begin, max(begin, min(count, (source_width - 1 - shift) // stride + 1))


#: Multiply-adds a task of ``convolution_cpu`` takes at least (whole output planes, or lines of
#: one): enough that a task's setup (its scratch, zeroed) and its call are a small part of it.
#: Against 1 << 12, MobileNet's depthwise layers on 14x14 and 28x28 planes took 0.76x-0.91x the
#: time at n = 8, the others 0.94x-1.0x.
DIRECT_TASK_MULTIPLY_ADDS = 1 << 16
#: ... but by planes, at least this many tasks per thread, so that a small batch still shares out
#: evenly (7x7 planes at n = 1 would otherwise make 9 tasks for 2 threads).
DIRECT_TASKS_PER_THREAD = 8
#: The most floats of phase planes (a zero-padded input plane, split by stride) that
#: ``convolution_cpu`` copies an input plane into (``direct_plane``): the copy and the plane's
#: sums then stay in L2. MobileNet's depthwise layers on 112x112 take 13 K.
DIRECT_PLANE_FLOATS = 1 << 15


@njit(**SCALAR_FUNCTION)
def phase_layout(out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w):
    """(phase_height, phase_width, phase_floats) of ``direct_plane``'s phase planes: each holds
    the padded input's rows r and columns c of one (r % stride_h, c % stride_w), as many rows and
    columns as the output reads, and dw*(kw-1)/sw floats more that the last row's unused columns
    read."""
    phase_height = out_height + (dilation_h * (kernel_h - 1)) // stride_h
    phase_width = out_width + (dilation_w * (kernel_w - 1)) // stride_w
    return phase_height, phase_width, phase_height * phase_width + (dilation_w * (kernel_w - 1)) // stride_w


@njit(**SCALAR_FUNCTION)
def phase_columns(width, pad_left, stride_w, phase_width):
    """(column_first, column_count, column_at): column phase px of ``direct_plane`` takes the
    image's columns first[px], first[px] + sw, ... (those with (pl + col) % sw == px), count[px]
    of them (as many as its phase_width columns hold), into its columns from at[px] on."""
    column_first, column_count = np.empty(stride_w, np.intp), np.empty(stride_w, np.intp)
    column_at = np.empty(stride_w, np.intp)
    for px in range(stride_w):
        column_first[px] = (px - pad_left) % stride_w
        column_at[px] = (pad_left + column_first[px]) // stride_w
        column_count[px] = max(0, min((width - column_first[px] + stride_w - 1) // stride_w,
                                      phase_width - column_at[px]))
    return column_first, column_count, column_at


@njit(**SCALAR_FUNCTION)
def direct_layout(height, pad_top, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, out_height,
                  out_width):
    """What ``direct_plane`` needs of the layout, worked out once per call rather than per plane
    (its integer divisions cost a 7x7 plane as much as its sums): (phase_width, phase_floats,
    copied_rows, first_row_phase, first_phase_row, tap_offsets). Image row r is padded row pt +
    r: of row phase (pt + r) % sh, row (pt + r) // sh of that phase plane; the first
    copied_rows rows are those the phase planes hold. Tap (i, j) reads the plane of row phase
    i*dh % sh and column phase j*dw % sw from its row i*dh // sh and column j*dw // sw on, at
    tap_offsets[i*kw + j] in ``phases``."""
    phase_height, phase_width, phase_floats = phase_layout(out_height, out_width, kernel_h, kernel_w, stride_h,
                                                           stride_w, dilation_h, dilation_w)
    first_row_phase, first_phase_row = pad_top % stride_h, pad_top // stride_h
    copied_rows = max(0, min(height, (phase_height - first_phase_row) * stride_h - first_row_phase))
    tap_offsets = np.empty(kernel_h * kernel_w, np.intp)
    for i in range(kernel_h):
        for j in range(kernel_w):
            tap_offsets[i * kernel_w + j] = (((i * dilation_h % stride_h) * stride_w + j * dilation_w % stride_w)
                                             * phase_floats + (i * dilation_h // stride_h) * phase_width
                                             + j * dilation_w // stride_w)
    return phase_width, phase_floats, copied_rows, first_row_phase, first_phase_row, tap_offsets


@njit(**SCALAR_FUNCTION)
def direct_plane(x_flat, x_base, group_in_channels, plane, width, weights_flat, w_k, stride_h, stride_w, phase_width,
                 phase_floats, copied_rows, first_row_phase, first_phase_row, column_first, column_count, column_at,
                 tap_offsets, phases, sums, span):
    """sums[oh * phase_width + ow] = sum over c, i, j of w[c, i, j] * x[c, oh*sh + i*dh - pt,
    ow*sw + j*dw - pl] (zero outside the image) for one output plane, for q < span = OH *
    phase_width (``direct_layout``). Each input plane is copied into ``phases`` (sh*sw planes of
    phase_floats, zero where the copies do not write: the caller zeroes them once for all its
    planes), split by row and column phase, so that every tap (i, j) reads one phase plane at
    consecutive addresses: then each tap is one run over the whole output at once, the columns
    past OW in each row computed and left unused. The runs are contiguous whatever the image's
    size or the stride, so they vectorize (a loop per output row ran 7 long on a 7x7 image, and a
    stride of 2 read every other input). column_first, column_count, column_at (sw,):
    ``phase_columns``."""
    taps = tap_offsets.shape[0]
    # A 3x3 kernel at stride 1 sums its taps in registers (``nine_taps``). At other strides its
    # loads span several phase planes; where one of their nine runs lay a multiple of 4 KB from
    # the sums' stores (4K aliasing), MobileNet's stride-2 112x112 layer took 1.9x the time: a
    # run per tap keeps such a stall to that tap.
    in_registers = taps == 9 and stride_h == 1 and stride_w == 1
    if not in_registers:
        for q in range(span):
            sums[q] = 0.0
    for c in range(group_in_channels):
        # Row phase and row stepped, not divided, per image row.
        row_phase, phase_row = first_row_phase, first_phase_row
        for r in range(copied_rows):
            row_base = row_phase * stride_w * phase_floats + phase_row * phase_width
            source_row = x_base + c * plane + r * width
            for px in range(stride_w):
                first, count = column_first[px], column_count[px]
                at = row_base + px * phase_floats + column_at[px]
                if stride_w == 1 and count <= MAX_RUN_OUTPUTS:  # a few vectors, no loop
                    copy_run(x_flat, source_row + first, phases, at, count)
                elif stride_w == 1:  # (a literal stride: a plain vector copy)
                    for t in range(count):
                        phases[np.uintp(at + t)] = x_flat[np.uintp(source_row + first + t)]
                else:
                    for t in range(count):
                        phases[np.uintp(at + t)] = x_flat[np.uintp(source_row + first + t * stride_w)]
            row_phase += 1
            if row_phase == stride_h:
                row_phase, phase_row = 0, phase_row + 1
        if in_registers:
            nine_taps(sums, phases, tap_offsets, weights_flat, w_k + c * taps, span, c > 0)
            continue
        for t in range(taps):
            weight, offset = weights_flat[w_k + c * taps + t], tap_offsets[t]
            for q in range(span):
                sums[np.uintp(q)] += weight * phases[np.uintp(offset + q)]


@njit(**SCALAR_FUNCTION)
def nine_taps(sums, phases, tap_offsets, weights_flat, w, span, accumulate):
    """sums[q] (+)= sum over the 9 taps t of weights_flat[w + t] * phases[tap_offsets[t] + q], for
    q < span: a 3x3 kernel's taps summed in registers, one store per output, where a loop per
    tap would load and store the whole run nine times (MobileNet's depthwise layers)."""
    o0, o1, o2 = np.uintp(tap_offsets[0]), np.uintp(tap_offsets[1]), np.uintp(tap_offsets[2])
    o3, o4, o5 = np.uintp(tap_offsets[3]), np.uintp(tap_offsets[4]), np.uintp(tap_offsets[5])
    o6, o7, o8 = np.uintp(tap_offsets[6]), np.uintp(tap_offsets[7]), np.uintp(tap_offsets[8])
    w0, w1, w2 = weights_flat[w], weights_flat[w + 1], weights_flat[w + 2]
    w3, w4, w5 = weights_flat[w + 3], weights_flat[w + 4], weights_flat[w + 5]
    w6, w7, w8 = weights_flat[w + 6], weights_flat[w + 7], weights_flat[w + 8]
    for q in range(np.uintp(span)):
        total = (w0 * phases[o0 + q] + w1 * phases[o1 + q] + w2 * phases[o2 + q]
                 + w3 * phases[o3 + q] + w4 * phases[o4 + q] + w5 * phases[o5 + q]
                 + w6 * phases[o6 + q] + w7 * phases[o7 + q] + w8 * phases[o8 + q])
        sums[q] = sums[q] + total if accumulate else total


@njit(**PARALLEL_KERNEL)
def convolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                    pad_top, pad_left, group, min_tasks, residual, has_residual, activation, alpha, beta, out):
    """x: (max_batch, C, H, W); weights: (K, C/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the bottom and right pads;
    min_tasks: the threads to share the planes out among (an argument: a kernel that asked Numba
    for its thread count could not be cached); residual (shaped as out), has_residual,
    activation, alpha, beta: the fused ``epilogue``. Reads x rows < n, writes out rows < n.

    The direct convolution, for depthwise layers and small groups (``choose_algorithm``). Where
    a plane's phase planes fit DIRECT_PLANE_FLOATS (up to 112x112 images and more), each task
    owns whole output planes (b, k), each tap summed as one run over the whole plane
    (``direct_plane``; a 3x3 kernel at stride 1 all nine at once) and the plane written through
    the epilogue (over the whole run, then row by row, where there is no residual and rows are
    short). Larger planes go by lines:
    each task owns a few consecutive output lines of one plane, summing each line's taps into a
    task-local row (in L1). Indexed through flat views taken once, outside the parallel loop: a
    view per line (of x's plane and rows, out's line) took a reference on its array each time, an
    atomic add both threads contend for. Against lines through views, MobileNet's depthwise
    layers take 0.17x-0.69x the time (``benchmarks/convolution_ab.py --set depthwise``)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_in_channels, kernel_h, kernel_w = weights.shape[1], weights.shape[2], weights.shape[3]
    group_out_channels = out_channels // group
    plane, out_plane, taps = height * width, out_height * out_width, kernel_h * kernel_w
    x_flat, weights_flat = x.reshape(x.size), weights.reshape(weights.size)
    out_flat, residual_flat = out.reshape(out.size), residual.reshape(residual.size)
    # A plane per task where its phase planes fit in L2 (``direct_plane``); else lines.
    phase_width, phase_floats, copied_rows, first_row_phase, first_phase_row, tap_offsets = direct_layout(
        height, pad_top, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, out_height, out_width)
    if stride_h * stride_w * phase_floats <= DIRECT_PLANE_FLOATS:
        column_first, column_count, column_at = phase_columns(width, pad_left, stride_w, phase_width)
        span = out_height * phase_width
        # Several small planes per task (a 7x7 plane is a few hundred multiply-adds): its
        # scratch allocated once.
        planes = n * out_channels
        plane_work = span * taps * group_in_channels
        planes_per_task = max(1, min(DIRECT_TASK_MULTIPLY_ADDS // max(1, plane_work),
                                     planes // (DIRECT_TASKS_PER_THREAD * min_tasks)))
        for task in prange((planes + planes_per_task - 1) // planes_per_task):
            phases = np.zeros(stride_h * stride_w * phase_floats, np.float32)  # (the padding, for every plane)
            sums = np.empty(span, np.float32)
            first_plane = task * planes_per_task
            b, k = first_plane // out_channels, first_plane % out_channels  # (then stepped)
            for output_plane in range(first_plane, min(planes, first_plane + planes_per_task)):
                g = k if group_out_channels == 1 else k // group_out_channels  # (depthwise: no division)
                direct_plane(x_flat, (b * channels + g * group_in_channels) * plane,
                             group_in_channels, plane, width, weights_flat, k * group_in_channels * taps, stride_h,
                             stride_w, phase_width, phase_floats, copied_rows, first_row_phase, first_phase_row,
                             column_first, column_count, column_at, tap_offsets, phases, sums, span)
                at = output_plane * out_plane
                if has_residual or out_width > MAX_RUN_OUTPUTS:
                    for oh in range(out_height):
                        epilogue_at(sums, oh * phase_width, out_flat, at + oh * out_width, out_width, biases[k],
                                    residual_flat, at + oh * out_width, has_residual, activation, alpha, beta)
                else:
                    # Short rows: the epilogue in one loop over the whole run (the columns past
                    # out_width too), then each row copied out in a few vectors.
                    bias_activation_at(sums, 0, sums, 0, span, biases[k], activation, alpha, beta)
                    for oh in range(out_height):
                        copy_run(sums, oh * phase_width, out_flat, at + oh * out_width, out_width)
                k += 1
                if k == out_channels:
                    b, k = b + 1, 0
        return
    # Kernel column j reads input column ow*sw + shift[j]: the ow in [ow_begin[j], ow_end[j]) whose
    # column lies in [0, W), so that the innermost loop has no bounds test (and vectorizes at
    # stride 1). The integer divisions, once here, would cost more than a short row.
    shift = np.empty(kernel_w, np.intp)
    ow_begin, ow_end = np.empty(kernel_w, np.intp), np.empty(kernel_w, np.intp)
    for j in range(kernel_w):
        shift[j] = j * dilation_w - pad_left
        ow_begin[j], ow_end[j] = columns_in_range(shift[j], stride_w, width, out_width)
    lines_per_task = min(out_height, max(1, DIRECT_TASK_MULTIPLY_ADDS // max(1, out_width * taps * group_in_channels)))
    tasks_per_plane = (out_height + lines_per_task - 1) // lines_per_task
    for task in prange(n * out_channels * tasks_per_plane):
        b = task // (out_channels * tasks_per_plane)
        k = (task // tasks_per_plane) % out_channels
        first_line = (task % tasks_per_plane) * lines_per_task
        x_group = (b * channels + (k // group_out_channels) * group_in_channels) * plane
        w_k = k * group_in_channels * taps
        line_sum = np.empty(out_width, np.float32)
        for oh in range(first_line, min(first_line + lines_per_task, out_height)):
            for ow in range(out_width):
                line_sum[ow] = 0.0
            # Kernel rows i whose input row top + i*dh lies in [0, H); the others fall on zero
            # padding.
            top = oh * stride_h - pad_top
            i_begin = max(0, -(top // dilation_h))  # ceil(-top / dh)
            i_end = min(kernel_h, (height - 1 - top) // dilation_h + 1)
            for c in range(group_in_channels):
                for i in range(i_begin, i_end):
                    row = x_group + c * plane + (top + i * dilation_h) * width
                    for j in range(kernel_w):
                        weight = weights_flat[w_k + c * taps + i * kernel_w + j]
                        base = row + shift[j]
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing; and stride 1 as a
                        # literal, where LLVM vectorizes the loop with plain vector loads.
                        if stride_w == 1:
                            for ow in range(ow_begin[j], ow_end[j]):
                                line_sum[np.uintp(ow)] += weight * x_flat[np.uintp(base + ow)]
                        else:
                            for ow in range(ow_begin[j], ow_end[j]):
                                line_sum[np.uintp(ow)] += weight * x_flat[np.uintp(base + ow * stride_w)]
            at = (b * out_channels + k) * out_plane + oh * out_width
            epilogue_at(line_sum, 0, out_flat, at, out_width, biases[k], residual_flat, at, has_residual, activation,
                        alpha, beta)


#: Floats of padded input a task of ``convolution_depthwise_cpu`` copies at most (128 KB, in L2):
#: whole planes up to 56x56 at stride 1 or 2 (the scratch reused for each plane), bands of output
#: rows on larger ones. Against bands of at most 16 rows (``convolution_ab.py --set depthwise``,
#: n = 1, 2, 8): 28x28 planes 0.81x-0.88x the time, 56x56 0.87x-0.93x, 112x112 0.98x-1.02x.
DEPTHWISE_SCRATCH_FLOATS = 1 << 15
#: ... and as many tasks per thread at least, where the rows and planes allow (n = 1 on 56x56
#: planes of 32 channels makes 4 planes of 8 channels, for 2 threads).
DEPTHWISE_TASKS_PER_THREAD = 4


@njit(**SCALAR_FUNCTION)
def depthwise_side(weights_length, octets):
    """The kernel side of ``depthwise.pack_depthwise``'s weights of this length for ``octets``
    planes of 8 channels (``depthwise.SIDES``)."""
    return 3 if weights_length == 9 * LANES * octets else 5


@njit(**SCALAR_FUNCTION)
def depthwise_band_rows(out_width, stride_h, stride_w, side):
    """The most output rows of a band whose padded input fits DEPTHWISE_SCRATCH_FLOATS (1 at
    least)."""
    row_floats = ((out_width - 1) * stride_w + side) * LANES
    return max(1, (DEPTHWISE_SCRATCH_FLOATS // row_floats - side) // stride_h + 1)


@njit(**SCALAR_FUNCTION)
def depthwise_split(n, octets, out_height, max_rows, min_tasks):
    """How ``convolution_depthwise_cpu`` shares out n samples of ``octets`` planes of 8
    channels: (tasks, rows per band, planes per task, chunks of planes per band). Bands of at
    most ``max_rows`` output rows (``depthwise_band_rows``), fewer where there are too few planes
    for DEPTHWISE_TASKS_PER_THREAD tasks per thread; each task takes consecutive planes of one
    band, as many as make that many tasks (n = 0: no tasks)."""
    wanted = DEPTHWISE_TASKS_PER_THREAD * min_tasks
    planes = n * octets
    bands = max(-(-out_height // max_rows), min(out_height, -(-wanted // max(1, planes))))
    band_rows = -(-out_height // max(1, bands))
    bands = -(-out_height // band_rows)
    planes_per_task = max(1, -(-planes // max(1, min(planes, -(-wanted // bands)))))
    chunks = -(-planes // planes_per_task)
    return bands * chunks, band_rows, planes_per_task, chunks


@njit(**SCALAR_FUNCTION)
def depthwise_share(n, channels, weights_length, out_pixels, out_width, stride_h, stride_w, min_tasks):
    """``depthwise_split`` of a layer of ``channels`` channels, packed weights of this length and
    outputs ``out_width`` wide, its bands as ``depthwise_band_rows`` allows: what
    ``convolution_depthwise_cpu`` and the chain's depthwise steps share out."""
    octets = (channels + LANES - 1) // LANES
    max_rows = depthwise_band_rows(out_width, stride_h, stride_w, depthwise_side(weights_length, octets))
    return depthwise_split(n, octets, out_pixels // out_width, max_rows, min_tasks)


@njit(**PARALLEL_KERNEL)
def convolution_depthwise_cpu(n, x, packed_weights, biases, stride_h, stride_w, pad_top, pad_left, out_width,
                              min_tasks, residual, has_residual, activation, alpha, beta, out):
    """A depthwise 3x3 or 5x5 convolution (one input channel per output channel, any stride and
    pads) with 8 channels in each vector's lanes (``depthwise``).

    x: (max_batch, C, H, W); packed_weights, biases: ``depthwise.pack_depthwise`` of the (C, 1,
    s, s) weights and (C,) biases (their length tells s); out: (max_batch, C, OH*OW), rows
    ``out_width`` wide; min_tasks: the threads to share the work among; residual (shaped as out,
    not out's own memory: a last run of 8 pixels writes some again, reading their residual
    again), has_residual, activation, alpha, beta: the fused ``epilogue``. Rows >= n are neither
    read nor written.

    Each task takes a band of output rows of a few planes of 8 channels (``depthwise_share``).
    For each plane it copies the input rows the band reads into a zero-padded scratch of
    8-channel pixels (``interleave_rows``, 8 pixels at a time), computes each output row's
    pixels from it (``depthwise_row``: s*s multiply-adds per pixel of 8 channels, the stride a
    step between pixels) and writes them back as the channels' rows (``deinterleave_rows``,
    through the epilogue). Every plane of a band writes the same cells of the scratch, so its
    border of zeros is made once per task.
    """
    tasks, band_rows, planes_per_task, chunks = depthwise_share(n, x.shape[1], packed_weights.shape[0], out.shape[2],
                                                                out_width, stride_h, stride_w, min_tasks)
    x_flat, out_flat, residual_flat = x.reshape(x.size), out.reshape(out.size), residual.reshape(residual.size)
    for task in prange(tasks):
        depthwise_task(np.int64(task), n, x, x_flat, packed_weights, biases, stride_h, stride_w, pad_top, pad_left,
                       out_width, residual_flat, has_residual, activation, alpha, beta, out, out_flat, band_rows,
                       planes_per_task, chunks)


@njit(**SCALAR_FUNCTION)
def deinterleave_run(source, source_offset, run, out_flat, out_offset, out_plane, channels, residual_flat,
                     has_residual, activation, alpha, beta):
    """``run`` consecutive pixels of up to 8 channels, 8-channel pixel vectors from source_offset on
    in source, written back as the channels' rows (out_flat[out_offset + c*out_plane + i]) through
    the epilogue by ``depthwise.deinterleave_rows``, 8 pixels at a time: the last 8 overlap the
    ones before (a masked store, slow on AMD, only where the whole run is under 8, whose vectors
    past it source must hold)."""
    for x0 in range(0, run, LANES):
        x0 = max(0, min(x0, run - LANES))
        deinterleave_rows(source, source_offset + x0 * LANES, min(LANES, run - x0), out_flat, out_offset + x0,
                          out_plane, channels, residual_flat, has_residual != 0, activation, alpha, beta)


@njit(**SHARED_STEP)
def depthwise_task(task, n, x, x_flat, packed_weights, biases, stride_h, stride_w, pad_top, pad_left, out_width,
                   residual_flat, has_residual, activation, alpha, beta, out, out_flat, band_rows, planes_per_task,
                   chunks):
    """Task ``task`` of ``convolution_depthwise_cpu`` (its arguments, with x, out and residual
    also as flat views, and ``depthwise_share``'s share): also a step of
    ``chain.convolution_chain_cpu``."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_plane = out.shape[2]
    out_height, plane = out_plane // out_width, height * width
    octets = (channels + LANES - 1) // LANES
    # (The side a variable: 3x3 layers on 7x7 planes took 1.05x-1.10x the time of a constant 3,
    # MobileNet 0.99x-1.00x.)
    side = depthwise_side(packed_weights.shape[0], octets)
    taps = side * side
    # The padded input a band reads: pitch pixels a row, from image row first_row*sh - pad_top
    # on; of an image row, the first copied_columns land in it (the rest lie past what the last
    # output reads).
    pitch = (out_width - 1) * stride_w + side
    copied_columns = min(width, pitch - pad_left)
    band, chunk = task // chunks, task % chunks
    first_row = band * band_rows
    rows = min(band_rows, out_height - first_row)
    top = first_row * stride_h - pad_top  # the image row of the scratch's first
    padded = np.zeros(((rows - 1) * stride_h + side) * pitch * LANES, np.float32)
    # (+ LANES pixels: deinterleave_rows reads 8 pixels from a last run of 1 to 8)
    sums = np.empty((rows * out_width + LANES) * LANES, np.float32)
    sums[rows * out_width * LANES:] = 0.0
    for unit in range(chunk * planes_per_task, min(n * octets, (chunk + 1) * planes_per_task)):
        b, octet = unit // octets, unit % octets
        lanes = min(LANES, channels - octet * LANES)
        x_base = (b * channels + octet * LANES) * plane
        for y in range(max(0, top), min(height, top + (rows - 1) * stride_h + side)):
            for x0 in range(0, copied_columns, LANES):
                # A last run of under 8 as the row's last 8 (the same values again where they
                # overlap): a masked load only where the row is shorter than 8.
                x0 = max(0, min(x0, copied_columns - LANES))
                interleave_rows(x_flat, x_base + y * width + x0, plane, lanes, min(LANES, copied_columns - x0),
                                padded, ((y - top) * pitch + pad_left + x0) * LANES)
        if side == 3:
            for r in range(rows):
                depthwise_row(padded, r * stride_h * pitch * LANES, pitch, stride_w, packed_weights,
                              octet * taps * LANES, biases, octet * LANES, sums, r * out_width * LANES, out_width)
        else:
            for r in range(rows):
                depthwise_row_5(padded, r * stride_h * pitch * LANES, pitch, stride_w, packed_weights,
                                octet * taps * LANES, biases, octet * LANES, sums, r * out_width * LANES, out_width)
        # The band's rows lie back to back in each output plane: one run of rows x OW pixels.
        deinterleave_run(sums, 0, rows * out_width, out_flat, (b * channels + octet * LANES) * out_plane
                         + first_row * out_width, out_plane, lanes, residual_flat, has_residual, activation, alpha,
                         beta)


@njit(**SCALAR_FUNCTION)
def pack_panel_rows(one_run, stride, packed, start, x_flat, base, second_base, split, inside, first, row_offset,
                    row_tap, pc, kc, panel_columns):
    """Rows pc..pc+kc of one packed B panel by ``gemm.masked_copy_panel_row_runs``, whose loads
    the caller has checked stay inside x."""
    for p in range(kc):
        row = np.uintp(pc + p)  # (unsigned: no negative-index wraparound on the two loads)
        offset = row_offset[row]
        mask = np.uintp(row_tap[row] * panel_columns) + first
        masked_copy_panel_row_runs(one_run, stride, packed, start + np.uintp(p * NR), x_flat, base + offset,
                                   second_base + offset, split, inside, mask)


#: What packing one reduction row of one column costs, in multiply-adds of one output channel
#: (the GEMM's packing: about 0.75 cycles a float, 12 multiply-adds): the price of splitting a
#: layer's output channels, each split packing the same columns again.
PACK_COST_ROWS = 12


@njit(**SCALAR_FUNCTION)
def split_tasks(columns, task_columns, min_tasks, panels, group, balance_by_outputs):
    """How ``convolution_gemm_cpu`` and ``convolution_winograd_cpu`` share out ``columns`` output
    columns by ``panels`` panels of A per group: (column_panels, chunks, splits, panels_per_split),
    group * splits * chunks tasks (``task_share``). Columns per task: at most task_columns, in
    whole panels, spread evenly (13 panels run as 3 + 3 + 3 + 4, not 4 + 4 + 4 + 1), and as many
    chunks as a multiple of min_tasks where there are more, so that each thread gets the same
    share; where the chunks make fewer than min_tasks tasks (n = 1, small images), the panels of
    A are split too, so that every core has work.

    Whole panels cannot always be shared evenly: 11 panels of columns (a 13x13 image) give one
    of 2 threads 6. With ``balance_by_outputs`` (one group), each of min_tasks threads then
    takes its share of the output channels over all the columns instead, where that costs less
    by the count of multiply-adds and packing (PACK_COST_ROWS) of the busiest thread. (Numba
    gives each of its threads one run of consecutive tasks, the first ones one more where they
    do not divide evenly.)"""
    column_panels = (columns + NR - 1) // NR
    widest_chunks = (columns + task_columns - 1) // task_columns  # chunks of task_columns
    chunks = widest_chunks
    if chunks > min_tasks:
        chunks = min(column_panels, -(-chunks // min_tasks) * min_tasks)
    splits = min(panels, max(1, -(-min_tasks // max(1, chunks * group))))  # (n = 0: no tasks)
    panels_per_split = -(-panels // splits)
    if balance_by_outputs and group == 1 and splits == 1 and 1 < min_tasks <= panels and columns > 0:
        # The busiest thread's columns (a last panel of at most 8 counted as 8: the narrow or
        # 12 x 8 kernel takes it) under the split by columns, against all of them under a split
        # by outputs.
        padded_columns = min(NR * column_panels, -(-columns // (NR // 2)) * (NR // 2))
        busiest = 0
        first_chunk = 0
        for thread in range(min_tasks):
            end_chunk = first_chunk + chunks // min_tasks + (1 if thread < chunks % min_tasks else 0)
            first, end = NR * (first_chunk * column_panels // chunks), NR * (end_chunk * column_panels // chunks)
            busiest = max(busiest, min(end, padded_columns) - first)
            first_chunk = end_chunk
        by_outputs = -(-panels // min_tasks)
        if padded_columns * (by_outputs * MR + PACK_COST_ROWS) < busiest * (panels * MR + PACK_COST_ROWS):
            return column_panels, widest_chunks, -(-panels // by_outputs), by_outputs
    return column_panels, chunks, -(-panels // panels_per_split), panels_per_split


@njit(**SCALAR_FUNCTION)
def task_share(task, columns, panels, column_panels, chunks, splits, panels_per_split):
    """Task ``task`` of ``split_tasks``' share: (group, first panel, end panel, first column,
    its column count). Negative splits: an even tail's share among -splits threads (``even_tail``,
    ``tail_share``; group 0)."""
    if splits < 0:
        return tail_share(task, columns, panels, column_panels, chunks, -splits)
    chunk, split, g = task % chunks, (task // chunks) % splits, task // (chunks * splits)
    first_panel = split * panels_per_split
    first_column = NR * (chunk * column_panels // chunks)
    chunk_columns = min(NR * ((chunk + 1) * column_panels // chunks), columns) - first_column
    return g, first_panel, min(panels, first_panel + panels_per_split), first_column, chunk_columns


@njit(**SCALAR_FUNCTION)
def tail_share(task, columns, panels, column_panels, head_chunks, threads):
    """Task ``task`` of ``even_tail``'s share of ``column_panels`` panels of columns among
    ``threads``: head_chunks chunks (a multiple of threads) of column_panels // head_chunks panels
    each, with every panel of A, then each of the last few panels split into threads tasks, each
    of panels // threads or one more panels of A (none empty: ``even_tail`` asks for at least one
    panel of A a thread). Each thread's run of consecutive tasks (the chain's share, and Numba's)
    holds head_chunks / threads chunks and one piece of each tail panel: the same work."""
    width = column_panels // head_chunks
    head, tail = head_chunks // threads, column_panels - head_chunks * width
    owner, i = task // (head + tail), task % (head + tail)
    first_panel, end_panel = 0, panels
    if i < head:
        first_column = NR * width * (owner * head + i)
    else:
        width = 1
        first_column = NR * (head_chunks * (column_panels // head_chunks) + i - head)
        first_panel, end_panel = owner * panels // threads, (owner + 1) * panels // threads
    return 0, first_panel, end_panel, first_column, min(first_column + NR * width, columns) - first_column


@njit(**SCALAR_FUNCTION)
def even_tail(column_panels, chunks, threads, panels):
    """The chunks of an even-tailed share (``tail_share``) of ``column_panels`` panels of columns
    split into ``chunks`` (as ``task_share`` spreads them) among ``threads``, or 0 where each
    thread's run of chunks already holds as many panels, or where the tail would be more than a
    panel a thread. Two threads that take each other's tasks still end up to a task apart: one
    waits up to a whole chunk at the end of each layer (ResNet's 28x28 Winograd layers at n = 2,
    7 panels for 2 threads: 25-28 us of a 150 us layer; its 3x3 stride-2 GEMM, 25 panels in 8
    chunks, 12 for one thread and 13 for the other: 30 us of 330). Even-tailed, each thread
    takes whole chunks of the narrowest width and a piece of each panel left over, split by
    output channels (each piece packs the same columns again)."""
    if threads < 2 or chunks < threads or panels < threads:
        return 0
    first_share = (chunks // threads) * column_panels // chunks  # (thread 0's panels)
    uneven = False
    for thread in range(threads):
        first_chunk, end_chunk = thread * chunks // threads, (thread + 1) * chunks // threads
        uneven = uneven or end_chunk * column_panels // chunks - first_chunk * column_panels // chunks != first_share
    if not uneven:
        return 0
    width = column_panels // chunks
    head_chunks = column_panels // width // threads * threads
    tail = column_panels - head_chunks * width
    return head_chunks if 0 < tail <= threads and tail < head_chunks else 0


@njit(**SCALAR_FUNCTION)
def share_tasks(column_panels, chunks, splits, group):
    """The tasks of a share (``task_share``'s arguments)."""
    if splits < 0:
        return chunks + (column_panels - chunks * (column_panels // chunks)) * -splits
    return group * splits * chunks


@njit(**SCALAR_FUNCTION)
def task_patches(first_column, chunk_columns, panel_columns, pixels, out_width, stride_h, stride_w, pad_top,
                 pad_left, sample_size, first_offset, height, width, tap_dy, tap_dx):
    """Where the patches of a task's columns (output pixels first_column.. of the batch, ``pixels``
    a sample, ``out_width`` a row) lie in x, for ``pack_patches``: (column_base, inside,
    panel_one_run, panel_split, panel_second), for its chunk_columns rounded up to whole panels
    (panel_columns).

    column_base[j]: the offset in x of column j's window (its top-left tap, which may lie in
    the padding): sample * sample_size + first_offset + top * width + left. inside[t *
    panel_columns + j]: 1.0 where tap t of column j falls inside the image, 0.0 on padding;
    columns past the batch read as padding. A panel whose 16 columns read inputs stride_w
    apart (one output row, or consecutive rows of a stride-1 "same" convolution), stride_w <=
    MAX_VECTOR_STRIDE, packs each row with contiguous loads and its mask: vectorised, no gather
    (panel_one_run). So does one whose columns make two such runs, the second starting at column
    panel_split (> 0) in the next output row: lane j of it reads from panel_second + j *
    stride_w instead. Any other panel: element by element. (A 1x1, stride-1, unpadded layer takes
    ``pointwise_patches``, the same arrays by a short cut; any other, ``window_patches``.)"""
    if (tap_dy.shape[0] == 1 and tap_dy[0] == 0 and tap_dx[0] == 0 and stride_h == 1 and stride_w == 1
            and pad_top == 0 and pad_left == 0 and pixels == height * width):
        return pointwise_patches(first_column, chunk_columns, panel_columns, pixels, sample_size, first_offset)
    return window_patches(first_column, chunk_columns, panel_columns, pixels, out_width, stride_h, stride_w, pad_top,
                          pad_left, sample_size, first_offset, height, width, tap_dy, tap_dx)


@njit(**SHARED_STEP)
def window_patches(first_column, chunk_columns, panel_columns, pixels, out_width, stride_h, stride_w, pad_top,
                   pad_left, sample_size, first_offset, height, width, tap_dy, tap_dx):
    """``task_patches`` of any convolution: each column's window, tap by tap where it reaches
    the padding, and each panel's runs, found by comparing its columns' bases."""
    taps = tap_dy.shape[0]
    # Pixel coordinates are stepped, not divided out per column: 64-bit divisions would cost
    # more than the rest.
    column_base = np.zeros(panel_columns, np.intp)
    column_top = np.full(panel_columns, -(1 << 30), np.intp)
    column_left = np.zeros(panel_columns, np.intp)
    b, pixel = first_column // pixels, first_column % pixels
    oh, ow = pixel // out_width, pixel % out_width
    for j in range(chunk_columns):
        column_top[j] = oh * stride_h - pad_top
        column_left[j] = ow * stride_w - pad_left
        column_base[j] = b * sample_size + first_offset + column_top[j] * width + column_left[j]
        ow += 1
        if ow == out_width:
            ow, oh = 0, oh + 1
            if oh * out_width == pixels:
                oh, b = 0, b + 1
    # Window tops and lefts whose every tap lies inside the image (the dilated kernel's extent).
    interior_rows = np.uintp(max(0, height - tap_dy[taps - 1]))
    interior_columns = np.uintp(max(0, width - tap_dx[taps - 1]))
    inside = np.ones(taps * panel_columns, np.float32)
    for j in range(panel_columns):
        # Unsigned compares: one test each for both sides of the image. Most columns see no
        # padding at any tap and keep their ones.
        if (np.uintp(column_top[j]) < interior_rows) and (np.uintp(column_left[j]) < interior_columns):
            continue
        for t in range(taps):
            inside[t * panel_columns + j] = (np.uintp(column_top[j] + tap_dy[t]) < np.uintp(height)) & (
                np.uintp(column_left[j] + tap_dx[t]) < np.uintp(width))
    panel_one_run = np.zeros(panel_columns // NR, np.bool_)
    panel_split = np.zeros(panel_columns // NR, np.intp)
    panel_second = np.zeros(panel_columns // NR, np.intp)
    for jp in range((chunk_columns + NR - 1) // NR):
        first = jp * NR
        if first + NR <= chunk_columns and stride_w <= MAX_VECTOR_STRIDE:
            breaks, split = 0, 0
            for j in range(1, NR):
                if column_base[first + j] != column_base[first + j - 1] + stride_w:
                    breaks, split = breaks + 1, j
            if breaks == 0:
                panel_one_run[jp] = True
            elif breaks == 1:
                panel_split[jp] = split
                panel_second[jp] = column_base[first + split] - split * stride_w
    return column_base, inside, panel_one_run, panel_split, panel_second


@njit(**SCALAR_FUNCTION)
def pointwise_patches(first_column, chunk_columns, panel_columns, pixels, sample_size, first_offset):
    """``task_patches`` of a 1x1, stride-1, unpadded convolution, whose column j reads pixel j of
    x: no tap falls on padding, so each column's base is stepped and every panel is one run but
    where a sample ends inside it (then two). The general loops cost SqueezeNet's 16 -> 64 layer
    10% of its time."""
    column_base = np.empty(panel_columns, np.intp)
    inside = np.empty(panel_columns, np.float32)
    panel_one_run = np.ones(panel_columns // NR, np.bool_)
    panel_split = np.zeros(panel_columns // NR, np.intp)
    panel_second = np.zeros(panel_columns // NR, np.intp)
    b, pixel = first_column // pixels, first_column % pixels
    base = b * sample_size + first_offset
    for j in range(chunk_columns):
        column_base[j] = base + pixel
        inside[j] = 1.0
        pixel += 1
        if pixel == pixels:  # the next sample, from its pixel 0
            pixel, base = 0, base + sample_size
            jp = (j + 1) // NR
            if (j + 1) % NR != 0 and j + 1 < chunk_columns and sample_size != pixels:
                if panel_one_run[jp]:  # its second run
                    panel_one_run[jp] = False
                    panel_split[jp] = (j + 1) % NR
                    panel_second[jp] = base - panel_split[jp]
                else:  # a third (samples under 16 pixels): element by element
                    panel_split[jp], panel_second[jp] = 0, 0
    for j in range(chunk_columns, panel_columns):  # past the batch: padding
        column_base[j] = 0
        inside[j] = 0.0
    if chunk_columns % NR != 0:  # a last panel short of NR columns packs element by element
        panel_one_run[chunk_columns // NR] = False
        panel_split[chunk_columns // NR], panel_second[chunk_columns // NR] = 0, 0
    return column_base, inside, panel_one_run, panel_split, panel_second


@njit(**SCALAR_FUNCTION)
def window_columns(tap_dy, tap_dx):
    """The taps of one kernel row where they read consecutive input columns (an undilated kernel)
    and number 2 to MAX_TRANSPOSE_COLUMNS: how many consecutive reduction rows of a patch
    ``gemm.transpose_copy_panel_rows`` packs at once (``pack_patches``); else 0."""
    width = 1
    while width < tap_dy.shape[0] and tap_dy[width] == tap_dy[0]:
        width += 1
    if width < 2 or width > MAX_TRANSPOSE_COLUMNS or tap_dx[1] - tap_dx[0] != 1:
        return 0
    return width


@njit(**SHARED_STEP)
def pack_window_rows(packed, start, x_flat, pc, kc, panel_columns, window_width, row_offset, row_tap, column_base, first,
                     inside):
    """Rows pc..pc+kc of the packed B panel whose first column is ``first`` (from start in
    packed), ``window_width`` rows at a time by ``gemm.transpose_copy_panel_rows``: each whole
    row of the kernel's window whose loads stay inside x (at the start and end of the batch,
    padding rows may lie outside). The other rows (those, and where a block's reduction rows
    start or end inside a window row) go element by element. Its own function, not inlined into
    pack_patches: that one is compiled into every convolution kernel, and its cold compile grows
    with its size."""
    lane_low, lane_high = column_base[first], column_base[first]
    for j in range(1, NR):
        lane_low = min(lane_low, column_base[first + np.uintp(j)])
        lane_high = max(lane_high, column_base[first + np.uintp(j)])
    p = 0
    while p < kc:
        row = pc + p
        offset, mask = row_offset[row], np.uintp(row_tap[row] * panel_columns) + first
        at = start + np.uintp(p * NR)
        if (row % window_width == 0 and p + window_width <= kc and lane_low + offset >= 0
                and lane_high + offset + MAX_TRANSPOSE_COLUMNS <= x_flat.shape[0]):
            transpose_copy_panel_rows(packed, at, x_flat, offset, column_base, first, inside, mask, panel_columns,
                                      window_width)
            p += window_width
        else:
            for j in range(NR):
                if inside[mask + np.uintp(j)] != 0.0:
                    packed[at + np.uintp(j)] = x_flat[np.uintp(column_base[first + np.uintp(j)] + offset)]
                else:
                    packed[at + np.uintp(j)] = 0.0
            p += 1


@njit(**SHARED_STEP)
def pack_patches(packed, x_flat, pc, kc, column_panels, panel_columns, stride_w, window_width, in_place, row_offset,
                 row_tap, column_base, inside, panel_one_run, panel_split, panel_second):
    """Reduction rows pc..pc+kc of the task's column panels (``task_patches``) into packed, panel
    jp from jp * kc * NR on (``gemm``'s B layout); an in-place panel (``in_place`` and one run)
    is skipped, the micro-kernel reading it from x. window_width: ``window_columns`` of the
    kernel's taps (0: none)."""
    span = stride_w * NR  # what a vectorised panel-row copy loads from each run's start
    # The block's lowest and highest input offsets, which decide below whether a panel's vector
    # loads stay inside x for every row of the block.
    lowest, highest = row_offset[pc], row_offset[pc]
    for p in range(pc + 1, pc + kc):
        lowest, highest = min(lowest, row_offset[p]), max(highest, row_offset[p])
    for jp in range(column_panels):
        one_run, split = panel_one_run[jp], panel_split[jp]
        if in_place and one_run:
            continue
        first = np.uintp(jp * NR)
        base, second_base = column_base[first], panel_second[jp]
        start = np.uintp(jp * kc * NR)
        # The copies by runs load stride_w vectors per 8 columns, and again for a second run:
        # from stride 3, and for two runs of stride 2, a window row packed by transposes costs
        # less (one 8-wide load per column serves up to 8 rows), and so do panels of three runs
        # or more (small images; Winograd's tiles on them), which would pack element by element.
        # Per 16-column row: 4.4 ns one run of stride 4, 3.5 two of stride 2, 8.6 element by
        # element; transposed 2.5 (4 rows at once) to 3.5 (6 rows).
        if window_width > 0 and not ((one_run and stride_w <= 2) or (split > 0 and stride_w == 1)):
            pack_window_rows(packed, start, x_flat, pc, kc, panel_columns, window_width, row_offset, row_tap,
                             column_base, first, inside)
            continue
        # A row packs with vector loads (span elements from each run's start) where the panel
        # has a vector path and the loads stay inside x: for the whole block at once where they
        # do at its lowest and highest offsets (the common case: no test per row), else row by
        # row (panels at the start or end of the batch, whose padding rows lie outside x). Any
        # other row: element by element.
        vector = one_run or split > 0
        low, high = (base, base) if one_run else (min(base, second_base), max(base, second_base))
        if vector and low + lowest >= 0 and high + highest + span <= x_flat.shape[0]:
            # A literal stride per call, so that the copy's choice by stride folds away and the
            # row loop has no branch (a vector panel's stride is at most MAX_VECTOR_STRIDE, 4).
            if stride_w == 1:
                pack_panel_rows(one_run, 1, packed, start, x_flat, base, second_base, split, inside, first,
                                row_offset, row_tap, pc, kc, panel_columns)
            elif stride_w == 2:
                pack_panel_rows(one_run, 2, packed, start, x_flat, base, second_base, split, inside, first,
                                row_offset, row_tap, pc, kc, panel_columns)
            elif stride_w == 3:
                pack_panel_rows(one_run, 3, packed, start, x_flat, base, second_base, split, inside, first,
                                row_offset, row_tap, pc, kc, panel_columns)
            else:
                pack_panel_rows(one_run, 4, packed, start, x_flat, base, second_base, split, inside, first,
                                row_offset, row_tap, pc, kc, panel_columns)
            continue
        for p in range(kc):
            at = start + np.uintp(p * NR)
            offset, mask = row_offset[pc + p], np.uintp(row_tap[pc + p] * panel_columns) + first
            if vector and low + offset >= 0 and high + offset + span <= x_flat.shape[0]:
                masked_copy_panel_row_runs(one_run, stride_w, packed, at, x_flat, base + offset,
                                           second_base + offset, split, inside, mask)
            else:
                # (Element by element, written out: as an inlined function of its own, this loop
                # ran the edge panels of padded 5x5 layers 1.1x-1.3x slower at n = 1.)
                for j in range(NR):
                    if inside[mask + np.uintp(j)] != 0.0:
                        packed[at + np.uintp(j)] = x_flat[np.uintp(column_base[first + np.uintp(j)] + offset)]
                    else:
                        packed[at + np.uintp(j)] = 0.0


@njit(**SCALAR_FUNCTION)
def gemm_split(n, out_channels, group, task_columns, min_tasks, pixels):
    """How ``convolution_gemm_cpu`` shares out a batch of n (of ``pixels`` outputs per channel):
    (tasks, column_panels_total, chunks, splits, panels_per_split), ``split_tasks`` of its output
    columns and panels of A, evened out among the threads by ``even_split``."""
    panels, _, _ = panel_layout(out_channels // group)
    column_panels_total, chunks, splits, panels_per_split = split_tasks(n * pixels, task_columns, min_tasks,
                                                                        panels, group, True)
    return even_split(column_panels_total, chunks, splits, panels_per_split, min_tasks, panels, group)


@njit(**SCALAR_FUNCTION)
def even_split(column_panels, chunks, splits, panels_per_split, threads, panels, group):
    """(tasks, column_panels, chunks, splits, panels_per_split): ``split_tasks``' share as it is,
    or even-tailed (``even_tail``; negative splits, panels_per_split the largest piece of A) where
    one ungrouped, unsplit layer's chunks give the threads unequal runs."""
    head_chunks = even_tail(column_panels, chunks, threads, panels) if group == 1 and splits == 1 else 0
    if head_chunks > 0:
        return (share_tasks(column_panels, head_chunks, -threads, 1), column_panels, head_chunks, -threads,
                -(-panels // threads))
    return group * splits * chunks, column_panels, chunks, splits, panels_per_split


@njit(**PARALLEL_KERNEL)
def convolution_gemm_cpu(n, x, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left,
                         out_width, row_offset, row_tap, tap_dy, tap_dx, in_place, task_columns,
                         min_tasks, residual, has_residual, activation, alpha, beta, first_out_channel, out):
    """Any convolution as one GEMM per group, out[k, (b, pixel)] = sum_r W[k, r] * patch[r, (b, pixel)]
    over the n samples' pixels side by side, packing the patches straight from x (no im2col
    matrix) for the register-blocked micro-kernel of ``gemm``.

    x: (max_batch, C, H, W); packed_weights: ``gemm.pack_weights`` of the (group, K/group, R)
    weights, R = C/group*kh*kw; biases (K,); out: (max_batch, T, OH*OW), of whose T >= K channels
    this convolution writes [first_out_channel, first_out_channel + K) (T > K: the output of a
    Concatenation that its inputs' convolutions write in place); row_offset, row_tap (R,):
    for reduction row r = (c, i, j), its input offset (c*H + i*dh)*W + j*dw and its tap i*kw + j;
    tap_dy, tap_dx (kh*kw,): each tap's shifts i*dh, j*dw; in_place: a 1x1, stride 1, unpadded
    convolution whose patches are x's own rows, read there (``reads_in_place``); task_columns:
    the most output columns a task takes (a multiple of NR); min_tasks: how many parallel tasks
    to make at least (by splitting the output channels, each split packing the same patches);
    residual (shaped as out), has_residual, activation, alpha, beta: the fused ``epilogue``. Rows
    >= n are neither read nor written.

    Each parallel task owns up to ``task_columns`` output columns and a block of A panels of one
    group (``split_tasks``). It packs those columns' patches KC reduction rows at a time (a few
    KB, in L1/L2; a 1x1 convolution reads whole 16-column panels of x in place instead) and
    multiplies them by every panel of its block. The micro-kernel stores a panel that lies
    within one sample straight into out through the epilogue; a panel spanning two samples goes
    to a task-local product, written to out by ``epilogue_at`` at the end.
    """
    tasks, column_panels_total, chunks, splits, panels_per_split = gemm_split(n, biases.shape[0], group, task_columns,
                                                                              min_tasks, out.shape[2])
    # Flat views taken once, outside the parallel loop: a view per task or line would take a
    # reference on the buffer, an atomic the threads contend for.
    x_flat, out_flat, residual_flat = x.reshape(x.size), out.reshape(out.size), residual.reshape(residual.size)
    for task in prange(tasks):
        # (an int64 index, as the chain's: a parallel loop's own is unsigned, and a second type
        # would compile the task a second time)
        gemm_task(np.int64(task), n, x, x_flat, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left,
                  out_width, row_offset, row_tap, tap_dy, tap_dx, in_place, residual_flat, has_residual, activation,
                  alpha, beta, first_out_channel, out, out_flat, column_panels_total, chunks, splits, panels_per_split)


@njit(**SHARED_STEP)
def gemm_task(task, n, x, x_flat, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left, out_width,
              row_offset, row_tap, tap_dy, tap_dx, in_place, residual_flat, has_residual, activation, alpha, beta,
              first_out_channel, out, out_flat, column_panels_total, chunks, splits, panels_per_split):
    """Task ``task`` of ``convolution_gemm_cpu`` (its arguments, with x, out and residual also as
    flat views, and ``gemm_split``'s share), on whichever thread runs it: also a step of
    ``chain.convolution_chain_cpu``."""
    max_batch, channels, height, width = x.shape
    out_channels, pixels = biases.shape[0], out.shape[2]
    buffer_channels = out.shape[1]  # out's channels: out_channels, or a Concatenation's
    group_rows, group_channels = out_channels // group, channels // group
    reduction = row_offset.shape[0]
    panels, _, padded_rows = panel_layout(group_rows)
    columns = n * pixels
    plane = height * width
    g, first_panel, end_panel, first_column, chunk_columns = task_share(
        task, columns, panels, column_panels_total, chunks, splits, panels_per_split)
    column_panels = (chunk_columns + NR - 1) // NR
    panel_columns = column_panels * NR  # (the task's scratch is sized by these, not task_columns)
    column_base, inside, panel_one_run, panel_split, panel_second = task_patches(
        first_column, chunk_columns, panel_columns, pixels, out_width, stride_h, stride_w, pad_top, pad_left,
        channels * plane, g * group_channels * plane, height, width, tap_dy, tap_dx)
    # A whole panel within one sample is written straight into out (its row-0 offset there);
    # -1: through the product and the epilogue loop below.
    direct_out = np.full(column_panels, -1, np.intp)
    through_product = False  # (most tasks have no such panel, and then no product to allocate)
    for jp in range(column_panels):
        first = first_column + jp * NR
        if jp * NR + NR <= chunk_columns and first // pixels == (first + NR - 1) // pixels:
            direct_out[jp] = (((first // pixels) * buffer_channels + first_out_channel + g * group_rows) * pixels
                              + first % pixels)
        else:
            through_product = True
    # A 1x1, unit-stride, unpadded layer reads each panel of x as kc rows a plane apart: more
    # streams than the hardware prefetcher follows, so each row would be a miss the micro-kernel
    # waits for (at large n, x is in DRAM). While it multiplies one panel, it prefetches the next
    # one's rows, spread over the calls of the panel: in place, its own next panel; packed, the
    # panel the next task (most likely this thread's next: Numba gives each thread a run of
    # consecutive tasks) packs first.
    pointwise = (row_offset.shape[0] == group_channels and stride_h == 1 and stride_w == 1 and pad_top == 0
                 and pad_left == 0 and pixels == plane)
    next_first, next_columns, next_group_offset = 0, 0, 0
    if pointwise and task + 1 < share_tasks(column_panels_total, chunks, splits, group):
        next_g, _, _, next_first, next_columns = task_share(task + 1, columns, panels, column_panels_total, chunks,
                                                            splits, panels_per_split)
        next_group_offset = next_g * group_channels * plane
        if next_first == first_column and next_g == g:  # (the same columns, other outputs: cached)
            next_columns = 0
    # A residual that out overwrites (``graph.compiler`` plans the output into the residual's
    # memory where nothing reads the residual after): the panels written straight into out
    # accumulate onto it from the first block on, so that its rows are read once, by the loads
    # the stores need anyway, and not again in the epilogue. (The product's panels read it in
    # ``epilogue_at`` element by element, before writing the same element.)
    onto_residual = has_residual and residual_flat.ctypes.data == out_flat.ctypes.data
    packed = empty_panels(min(KC, reduction) * panel_columns)
    window_width = window_columns(tap_dy, tap_dx)
    product = empty_panels((end_panel - first_panel) * MR * panel_columns if through_product else 0)
    x_at, packed_at, out_at, product_at = address(x_flat), address(packed), address(out_flat), address(product)
    a_group = g * padded_rows * reduction
    for pc in range(0, reduction, KC):
        kc = min(KC, reduction - pc)
        pack_patches(packed, x_flat, pc, kc, column_panels, panel_columns, stride_w, window_width, in_place,
                     row_offset, row_tap, column_base, inside, panel_one_run, panel_split, panel_second)
        # A few A panels at a time (they stay in L2) against every B panel (each in L1): a
        # 1000-channel layer would otherwise stream all its weights from L3 per B panel.
        last_block = pc + KC >= reduction
        for block in range(first_panel, end_panel, PANELS_PER_BLOCK):
            block_end = min(end_panel, block + PANELS_PER_BLOCK)
            jp = 0
            while jp < column_panels:
                own_rows = in_place and panel_one_run[jp]
                if own_rows:  # x's rows pc.. of these columns, plane apart
                    b_source, b_offset, ldb, b_second = x_at, column_base[jp * NR] + pc * plane, plane, NR
                else:
                    b_source, b_offset, ldb, b_second = packed_at, jp * kc * NR, NR, kc * NR
                valid = min(NR, chunk_columns - jp * NR)  # (under NR: the last panel, through the product)
                paired = paired_with_next(jp, column_panels, chunk_columns, in_place, panel_one_run, column_base) and (
                    direct_out[jp + 1] < 0 if direct_out[jp] < 0 else direct_out[jp + 1] == direct_out[jp] + NR)
                taken_columns = 2 if paired else 1  # (column panels this pass takes)
                # (Written out here: as an inlined helper returning the three, the 1x1 layers took
                # 1.004x-1.015x the time, convolution_ab.py --set 1x1, 2026-11-28.)
                fetch_at, fetch_second, fetch_count = -1, -1, 0
                if pointwise and block == first_panel:
                    if in_place and jp + taken_columns < column_panels:
                        for q in range(jp + taken_columns, min(column_panels, jp + 2 * taken_columns)):
                            if panel_one_run[q]:
                                at = column_base[q * NR] + pc * plane
                                fetch_at, fetch_second = (at, -1) if q == jp + taken_columns else (fetch_at, at)
                        fetch_count = kc
                    elif last_block and jp * NR < next_columns:  # (in place: at its last panel)
                        column = next_first + (0 if in_place else jp * NR)
                        fetch_at = (column // pixels) * channels * plane + next_group_offset + column % pixels
                        column += NR
                        if paired and column < next_first + next_columns:
                            fetch_second = (column // pixels) * channels * plane + next_group_offset + column % pixels
                        fetch_count = min(KC, reduction)
                panels_per_call = 2 if paired else PANELS_PER_CALL
                fetch_rows = -(-fetch_count // -(-(block_end - block) // panels_per_call))
                fetched = 0
                panel = block
                while panel < block_end:
                    if fetched < fetch_count:
                        count = min(fetch_rows, fetch_count - fetched)
                        if fetch_at >= 0:
                            prefetch_rows(x_flat, fetch_at + fetched * plane, plane, count)
                        if fetch_second >= 0:
                            prefetch_rows(x_flat, fetch_second + fetched * plane, plane, count)
                        fetched += count
                    a_offset = a_group + pc * padded_rows + panel * MR * kc
                    k = g * group_rows + panel * MR
                    if direct_out[jp] >= 0:  # straight into out, through the epilogue
                        c, ldc, finish, accumulate = out_at, pixels, last_block, pc > 0 or onto_residual
                        c_offset = direct_out[jp] + panel * MR * pixels
                    else:
                        c, ldc, finish, accumulate = product_at, panel_columns, False, pc > 0
                        c_offset = (panel - first_panel) * MR * panel_columns + jp * NR
                    following = min(block_end, padded_rows // MR) - panel
                    if paired:
                        panel += micro_kernel_pair_panels(
                            following, block_end - panel, kc, packed_weights, a_offset, b_source, b_offset, b_second,
                            ldb, c, c_offset, ldc, group_rows - panel * MR, accumulate, finish, biases, k,
                            residual_flat, has_residual and not onto_residual, activation, alpha, beta)
                    elif valid <= SHORT_PANEL_COLUMNS:
                        panel += short_panel_product(
                            valid, panel + 1 < block_end and panel * MR + 2 * MR <= padded_rows,
                            panel * MR + MR <= padded_rows, kc, packed_weights, a_offset, b_source, b_offset, ldb, c,
                            c_offset, ldc, group_rows - panel * MR, accumulate)
                    else:
                        panel += micro_kernel_panels(
                            following, block_end - panel, kc, packed_weights, a_offset, b_source, b_offset, ldb, c,
                            c_offset, ldc, group_rows - panel * MR, accumulate, finish, biases, k, residual_flat,
                            has_residual and not onto_residual, activation, alpha, beta)
                jp += taken_columns
    # The panels that span two samples or end the batch went to the product: their epilogue.
    for jp in range(column_panels):
        if direct_out[jp] >= 0:
            continue
        end_column = first_column + min(chunk_columns, (jp + 1) * NR)
        for row in range(first_panel * MR, min(group_rows, end_panel * MR)):
            k = g * group_rows + row
            line = (row - first_panel * MR) * panel_columns
            column = first_column + jp * NR
            while column < end_column:  # one stretch per sample
                b, pixel = column // pixels, column % pixels
                length = min(end_column - column, pixels - pixel)
                at = (b * buffer_channels + first_out_channel + k) * pixels + pixel
                epilogue_at(product, line + column - first_column, out_flat, at, length, biases[k],
                            residual_flat, at, has_residual, activation, alpha, beta)
                column += length


@njit(**SCALAR_FUNCTION)
def paired_with_next(jp, column_panels, chunk_columns, in_place, panel_one_run, column_base):
    """Whether a task multiplies its column panel jp together with jp + 1
    (``gemm.micro_kernel_pair_panels``): with WIDE_VECTORS, where both are whole and both read x
    in place a panel apart or both are packed. (``gemm_task`` also needs both written straight
    into out a panel apart, or both into its product.)"""
    if not WIDE_VECTORS or (jp + 2) * NR > chunk_columns or jp + 2 > column_panels:
        return False
    own_rows = in_place and panel_one_run[jp]
    if own_rows != (in_place and panel_one_run[jp + 1]):
        return False
    return not own_rows or column_base[(jp + 1) * NR] == column_base[jp * NR] + NR


@njit(**SCALAR_FUNCTION)
def average_splits(n, out_channels, min_tasks):
    """How ``convolution_gemm_average_cpu`` shares out a batch of n: each sample's output channels
    in this many runs of A panels, one task each, so that the n * splits tasks are a multiple of
    min_tasks where the panels allow (n = 1 and 2 threads: 2; n = 3: 2, 6 tasks; n = 8: 1)."""
    panels, _, _ = panel_layout(out_channels)
    shared, other = n, min_tasks  # gcd(n, min_tasks)
    while other:
        shared, other = other, shared % other
    return max(1, min(panels, min_tasks // max(1, shared)))


@njit(**PARALLEL_KERNEL)
def convolution_gemm_average_cpu(n, x, packed_weights, biases, stride_h, stride_w, pad_top, pad_left, out_width,
                                 pixels, row_offset, row_tap, tap_dy, tap_dx, in_place, task_columns, min_tasks,
                                 residual, has_residual, activation, alpha, beta, out):
    """A one-group convolution followed by a global average pooling, the convolution's output never
    written: out[b, k] = mean over its ``pixels`` output pixels p of f(conv[b, k, p] + residual[b,
    k, p]) (the fused ``epilogue``). SqueezeNet's 256 -> 1000 layer at n = 8 would write 5.4 MB
    only for the pooling to read it back.

    x: (max_batch, C, H, W); packed_weights: ``gemm.pack_weights`` of the (1, K, R) weights;
    biases (K,); residual: (max_batch, K, pixels), or out itself where has_residual is 0 (never
    read); out: (max_batch, K). The other arguments are ``convolution_gemm_cpu``'s, task_columns
    bounding the columns packed at once. Rows >= n are neither read nor written.

    Each task takes one sample and a run of its output channels' A panels (``average_splits``),
    so no output sums across tasks. It packs the sample's patches task_columns at a time, as
    ``gemm_task`` does, multiplies them by its A panels block by block into a task-local product
    (one block's panels; all of the task's where the reduction takes several KC blocks), and
    sums each finished row through the epilogue (``epilogue.epilogue_sum``) while it is in
    cache."""
    splits = average_splits(n, biases.shape[0], min_tasks)
    x_flat, residual_flat = x.reshape(x.size), residual.reshape(residual.size)
    out_flat = out.reshape(out.size)
    for task in prange(n * splits):
        gemm_average_task(np.int64(task), splits, x, x_flat, packed_weights, biases, stride_h, stride_w, pad_top,
                          pad_left, out_width, pixels, row_offset, row_tap, tap_dy, tap_dx, in_place, task_columns,
                          residual_flat, has_residual, activation, alpha, beta, out_flat)


@njit(**SHARED_STEP)
def gemm_average_task(task, splits, x, x_flat, packed_weights, biases, stride_h, stride_w, pad_top, pad_left,
                      out_width, pixels, row_offset, row_tap, tap_dy, tap_dx, in_place, task_columns, residual_flat,
                      has_residual, activation, alpha, beta, out_flat):
    """Task ``task`` of ``convolution_gemm_average_cpu``: sample task // splits, the
    (task % splits)-th run of its A panels."""
    _, channels, height, width = x.shape
    out_channels = biases.shape[0]
    reduction = row_offset.shape[0]
    plane = height * width
    panels, _, padded_rows = panel_layout(out_channels)
    b, split = task // splits, task % splits
    per_split = -(-panels // splits)
    first_panel, end_panel = split * per_split, min(panels, split * per_split + per_split)
    if first_panel >= end_panel:
        return
    keep_all = reduction > KC  # (partial products must outlive each KC block)
    product_panels = end_panel - first_panel if keep_all else min(PANELS_PER_BLOCK, end_panel - first_panel)
    most_columns = NR * -(-min(task_columns, pixels) // NR)
    product = empty_panels(product_panels * MR * most_columns)
    packed = empty_panels(min(KC, reduction) * most_columns)
    sums = np.zeros((end_panel - first_panel) * MR, np.float32)
    window_width = window_columns(tap_dy, tap_dx)
    # The sample's columns in chunks of whole panels, spread evenly (13 panels as 4 + 4 + 5), so
    # that only the sample's own last panel is short.
    sample_panels = (pixels + NR - 1) // NR
    chunks = -(-sample_panels // (most_columns // NR))
    for chunk in range(chunks):
        first_pixel = NR * (chunk * sample_panels // chunks)
        first_column = b * pixels + first_pixel
        chunk_columns = min(NR * ((chunk + 1) * sample_panels // chunks), pixels) - first_pixel
        column_panels = (chunk_columns + NR - 1) // NR
        panel_columns = column_panels * NR
        column_base, inside, panel_one_run, panel_split, panel_second = task_patches(
            first_column, chunk_columns, panel_columns, pixels, out_width, stride_h, stride_w, pad_top, pad_left,
            channels * plane, 0, height, width, tap_dy, tap_dx)
        for pc in range(0, reduction, KC):
            kc = min(KC, reduction - pc)
            pack_patches(packed, x_flat, pc, kc, column_panels, panel_columns, stride_w, window_width, in_place,
                         row_offset, row_tap, column_base, inside, panel_one_run, panel_split, panel_second)
            for block in range(first_panel, end_panel, PANELS_PER_BLOCK):
                block_end = min(end_panel, block + PANELS_PER_BLOCK)
                base = first_panel if keep_all else block  # the product's first panel
                last_block = pc + KC >= reduction
                jp = 0
                while jp < column_panels:
                    if in_place and panel_one_run[jp]:
                        b_source, b_offset, ldb, b_second = x_flat, column_base[jp * NR] + pc * plane, plane, NR
                    else:
                        b_source, b_offset, ldb, b_second = packed, jp * kc * NR, NR, kc * NR
                    valid = min(NR, chunk_columns - jp * NR)
                    paired = paired_with_next(jp, column_panels, chunk_columns, in_place, panel_one_run, column_base)
                    panel = block
                    while panel < block_end:
                        if jp == 0 and last_block and has_residual:
                            # The panel's residual rows (a plane apart), which the epilogue
                            # below reads: fetched while the block multiplies, a panel's at a
                            # time, not missed one by one there.
                            rows = min(MR, out_channels - panel * MR)
                            for at in range(0, chunk_columns, NR):
                                row_at = (b * out_channels + panel * MR) * pixels + first_pixel + at
                                prefetch_rows(residual_flat, row_at, pixels, rows)
                        a_offset = pc * padded_rows + panel * MR * kc
                        c_offset = (panel - base) * MR * panel_columns + jp * NR
                        # (The short and whole panels' calls written out as in gemm_task: as one
                        # function shared with it, its layers took 1.01x-1.20x the time.)
                        following = min(block_end, padded_rows // MR) - panel
                        if paired:
                            panel += micro_kernel_pair_panels(
                                following, block_end - panel, kc, packed_weights, a_offset, b_source, b_offset,
                                b_second, ldb, product, c_offset, panel_columns, out_channels - panel * MR, pc > 0,
                                False, biases, 0, product, False, 0, alpha, beta)
                        elif valid <= SHORT_PANEL_COLUMNS:
                            panel += short_panel_product(
                                valid, panel + 1 < block_end and panel * MR + 2 * MR <= padded_rows,
                                panel * MR + MR <= padded_rows, kc, packed_weights, a_offset, b_source, b_offset,
                                ldb, product, c_offset, panel_columns, out_channels - panel * MR, pc > 0)
                        else:
                            panel += micro_kernel_panels(
                                following, block_end - panel, kc, packed_weights, a_offset, b_source, b_offset, ldb,
                                product, c_offset, panel_columns, out_channels - panel * MR, pc > 0, False, biases, 0,
                                product, False, 0, alpha, beta)
                    jp += 2 if paired else 1
                if last_block:  # the block's rows are finished for these columns
                    for row in range(block * MR, min(out_channels, block_end * MR)):
                        sums[row - first_panel * MR] += epilogue_sum(
                            product, (row - base * MR) * panel_columns, chunk_columns, biases[row], residual_flat,
                            (b * out_channels + row) * pixels + first_pixel, has_residual, activation, alpha, beta)
    scale = np.float32(1.0) / np.float32(pixels)
    for row in range(first_panel * MR, min(out_channels, end_panel * MR)):
        out_flat[b * out_channels + row] = sums[row - first_panel * MR] * scale


@njit(**SCALAR_FUNCTION)
def copy_run(source, source_at, destination, at, length):
    """destination[at + i] = source[source_at + i] for i < length (at most winograd.MAX_RUN_OUTPUTS)."""
    if length >= 8:
        copy_vectors(source, source_at, destination, at, length)
    elif length > 0:
        copy_lanes(source, source_at, destination, at, length)


@njit(**SCALAR_FUNCTION)
def winograd_panels(out_channels, tile_rows):
    """(panels, panel_height, block_panels) of U for ``convolution_winograd_cpu``: panels of MR
    output channels (``panel_layout``), PANELS_PER_BLOCK to a block a task keeps in L2; where
    ``tile_rows``, blocks of TILE_ROWS_CHANNELS channels, as many channels (96) to a block."""
    if tile_rows:
        return -(-out_channels // TILE_ROWS_CHANNELS), TILE_ROWS_CHANNELS, PANELS_PER_BLOCK * MR // TILE_ROWS_CHANNELS
    return panel_layout(out_channels)[0], MR, PANELS_PER_BLOCK


@njit(**SCALAR_FUNCTION)
def winograd_split(n, out_channels, out_width, tile, tile_rows, task_columns, min_tasks, pixels):
    """How ``convolution_winograd_cpu`` shares out a batch of n (of ``pixels`` outputs per
    channel): (tasks, column_panels_total, chunks, splits, panels_per_split), ``split_tasks`` of
    its tiles and panels of U (blocks of TILE_ROWS_CHANNELS output channels where ``tile_rows``)."""
    _, tiles = sample_tiles(pixels // out_width, out_width, tile)  # per sample
    panels, _, _ = winograd_panels(out_channels, tile_rows)
    columns = n * tiles
    # Narrower tasks before split ones: a split transforms the same tiles again (a quarter of
    # the work), a narrower task only reuses each panel of U over fewer tiles.
    task_columns = min(task_columns, NR * max(1, (columns + NR - 1) // NR // min_tasks))
    column_panels_total, chunks, splits, panels_per_split = split_tasks(columns, task_columns, min_tasks, panels, 1,
                                                                        False)
    # Chunks of unequal panels (7 panels as 1 + 2 + 2 + 2: 3 for one thread, 4 for the other)
    # become a panel each (then ``even_split`` halves the seventh between the threads). Each panel
    # has a fixed cost (36 GEMMs, as short as the input's channels) that fewer tiles do not cut;
    # a task per panel only re-reads U, which stays in L2.
    if splits == 1 and chunks < column_panels_total and column_panels_total % chunks != 0:
        chunks = column_panels_total
    # (Each piece of a split tail panel transforms the same few tiles.)
    return even_split(column_panels_total, chunks, splits, panels_per_split, min_tasks, panels, 1)


@njit(**PARALLEL_KERNEL)
def convolution_winograd_cpu(n, x, packed_u, biases, pad_top, pad_left, out_width, tile, tile_rows, row_offset,
                             row_tap, tap_dy, tap_dx, task_columns, min_tasks, residual, has_residual, activation,
                             alpha, beta, first_out_channel, out):
    """A 3x3, stride-1, ungrouped convolution by Winograd's F(m x m, 3x3), m = ``tile`` (2 or 4,
    ``winograd``): 2.25x or 4x fewer multiply-adds than ``convolution_gemm_cpu``, the same
    micro-kernel.

    x: (max_batch, C, H, W); packed_u: ``winograd.transform_weights`` of the (K, C, 3, 3)
    weights for this tile (where ``tile_rows``, ``winograd.transform_weights_tile_rows``); biases
    (K,); out: (max_batch, T, OH*OW), rows OH = pixels / out_width, channels [first_out_channel,
    first_out_channel + K) of T (as ``convolution_gemm_cpu``); row_offset, row_tap, tap_dy,
    tap_dx: ``window_rows`` of an s x s window (s = m + 2), which an m x m tile of the output
    reads; task_columns: the most tiles a task takes (a multiple of NR); min_tasks, residual,
    has_residual, activation, alpha, beta: as ``convolution_gemm_cpu``. Rows >= n are neither
    read nor written.

    The tiles of the n samples are the columns of a GEMM as the pixels are in
    ``convolution_gemm_cpu``, shared out among the tasks the same way: their s x s windows are
    patches of an s x s, stride-m convolution, packed a few channels at a time by
    ``pack_patches``. Each task transforms its tiles' patches into V (s*s x C x its tiles, in
    L2), multiplies each of the s*s by the matching U for a block of output channels at a time
    into M, and transforms M back into m x m output blocks, written row run by row run through
    the epilogue. Where ``tile_rows`` (``winograd_tile_rows``: images of few tiles), the tiles
    are the rows of those products and the output channels their vectors (``tile_rows_product``):
    a task's last panel of tiles then costs only the tiles it has, not 16.
    """
    tasks, column_panels_total, chunks, splits, panels_per_split = winograd_split(
        n, biases.shape[0], out_width, tile, tile_rows, task_columns, min_tasks, out.shape[2])
    x_flat, out_flat, residual_flat = x.reshape(x.size), out.reshape(out.size), residual.reshape(residual.size)
    for task in prange(tasks):
        winograd_task(np.int64(task), n, x, x_flat, packed_u, biases, pad_top, pad_left, out_width, tile, tile_rows,
                      row_offset, row_tap, tap_dy, tap_dx, residual_flat, has_residual, activation, alpha, beta,
                      first_out_channel, out, out_flat, column_panels_total, chunks, splits, panels_per_split)


@njit(**SHARED_STEP)
def winograd_task(task, n, x, x_flat, packed_u, biases, pad_top, pad_left, out_width, tile, tile_rows, row_offset,
                  row_tap, tap_dy, tap_dx, residual_flat, has_residual, activation, alpha, beta, first_out_channel,
                  out, out_flat, column_panels_total, chunks, splits, panels_per_split):
    """Task ``task`` of ``convolution_winograd_cpu`` (as ``gemm_task`` is of the GEMM's)."""
    max_batch, channels, height, width = x.shape
    out_channels, pixels = biases.shape[0], out.shape[2]
    buffer_channels = out.shape[1]
    out_height = pixels // out_width
    tiles_wide, tiles = sample_tiles(out_height, out_width, tile)  # (tiles per sample)
    elements, run = tile_elements(tile), run_outputs(tile)
    _, _, padded_rows = panel_layout(out_channels)
    panels, panel_height, block_panels = winograd_panels(out_channels, tile_rows)
    columns = n * tiles
    plane = height * width
    block_channels = KC // elements  # channels per packed block of KC rows
    _, first_panel, end_panel, first_column, chunk_columns = task_share(
        task, columns, panels, column_panels_total, chunks, splits, panels_per_split)
    column_panels = (chunk_columns + NR - 1) // NR
    panel_columns = column_panels * NR  # (the task's scratch is sized by these, not task_columns)
    column_base, inside, panel_one_run, panel_split, panel_second = task_patches(
        first_column, chunk_columns, panel_columns, tiles, tiles_wide, tile, tile, pad_top, pad_left, channels * plane,
        0, height, width, tap_dy, tap_dx)
    # Each run of a task's tiles along one row of tiles: its first column, where its top
    # output row starts in out (channel 0), how many outputs wide it is (the last tile of a
    # row may overhang the output) and how many output rows it has (likewise).
    run_column = np.empty(panel_columns + 1, np.intp)
    run_out = np.empty(panel_columns, np.intp)
    run_length = np.empty(panel_columns, np.intp)
    run_rows = np.empty(panel_columns, np.intp)
    runs = 0
    b, first_tile = first_column // tiles, first_column % tiles
    ty, tx = first_tile // tiles_wide, first_tile % tiles_wide
    j = 0
    while j < chunk_columns:
        count = min(tiles_wide - tx, NR - j % NR, chunk_columns - j)  # (a run stays in one panel)
        run_column[runs] = j
        run_out[runs] = (b * buffer_channels + first_out_channel) * pixels + tile * (ty * out_width + tx)
        run_length[runs] = min(tile * count, out_width - tile * tx)
        run_rows[runs] = min(tile, out_height - tile * ty)
        runs += 1
        j += count
        tx += count
        if tx == tiles_wide:
            tx, ty = 0, ty + 1
            if ty * tiles_wide == tiles:
                ty, b = 0, b + 1
    run_column[runs] = chunk_columns
    # V[xi]: the transformed patches in ``gemm``'s B layout, panel jp's rows (channels) from
    # xi * v_stride + jp * channels * NR on. (+ NR: a stride of a multiple of 4 KB would put
    # the 16 rows the transforms write or read together in one set of the L1 cache.)
    v_stride = column_panels * channels * NR + NR
    v = empty_panels(elements * v_stride)
    packed = empty_panels(KC * panel_columns)
    window_width = window_columns(tap_dy, tap_dx)
    for c0 in range(0, channels, block_channels):
        block = min(block_channels, channels - c0)
        pack_patches(packed, x_flat, c0 * elements, block * elements, column_panels, panel_columns, tile, window_width,
                     False, row_offset, row_tap, column_base, inside, panel_one_run, panel_split, panel_second)
        for jp in range(column_panels):
            for c in range(block):
                source, destination = (jp * block + c) * elements * NR, (jp * channels + c0 + c) * NR
                if tile == 2:
                    input_transform_2(packed, source, v, destination, v_stride)
                else:
                    input_transform_4(packed, source, v, destination, v_stride)
    # M[xi] for up to PANELS_PER_BLOCK panels of output channels at a time (in L2), row i of
    # the block from xi * m_stride + i * m_columns on.
    m_columns = column_panels * NR
    # A last panel of at most NARROW_COLUMNS tiles (a 28 x 28 image's 49 4x4 tiles at n = 1 are
    # 3 x 16 + 1; a 6 x 6 image's 18 2x2 tiles at n = 2, 16 + 2) takes the narrow kernel, which
    # multiplies no missing tile and stores zeros in their columns, as the output transforms
    # read all NR. (Not the 12 x 8 kernel: it leaves columns 8 to 15 as they were.) Under 32
    # channels, its calls cost more than the multiply-adds they save (16 -> 64 at 27x27 took
    # 1.10x the time; 32 -> 128 0.97x, 128 -> 128 0.83x).
    last_valid = chunk_columns - (column_panels - 1) * NR
    narrow_last = last_valid <= NARROW_COLUMNS and channels >= 32
    full_column_panels = column_panels - (1 if narrow_last else 0)
    block_rows = min(end_panel - first_panel, block_panels) * panel_height
    m_stride = block_rows * m_columns + NR
    m = empty_panels(elements * m_stride)
    transformed = np.empty(tile * run, np.float32)  # one panel's output rows
    for first_block_panel in range(first_panel, end_panel, block_panels):
        end_block_panel = min(end_panel, first_block_panel + block_panels)
        for xi in range(elements):
            if tile_rows:
                # Each block of channels' U (C x 32 floats, in L1) over every panel of tiles, in
                # calls of at most TILE_ROWS_MAX tiles (16 as 8 + 8), the last of a panel zeroing
                # its lanes past the tiles (the output transforms read all NR).
                for panel in range(first_block_panel, end_block_panel):
                    u_offset = (xi * panels + panel) * channels * TILE_ROWS_CHANNELS
                    m_offset = xi * m_stride + (panel - first_block_panel) * TILE_ROWS_CHANNELS * m_columns
                    for jp in range(column_panels):
                        valid, first = min(NR, chunk_columns - jp * NR), 0
                        while first < valid:
                            rows = valid - first if valid - first <= TILE_ROWS_MAX else TILE_ROWS_MAX - 1
                            tile_rows_product(rows, channels, v, xi * v_stride + jp * channels * NR + first,
                                              packed_u, u_offset, m, m_offset + jp * NR + first, m_columns,
                                              rows if first + rows < valid else NR - first)
                            first += rows
                continue
            for pc in range(0, channels, KC):
                kc = min(KC, channels - pc)
                panel = first_block_panel
                while panel < end_block_panel:
                    a_offset = xi * padded_rows * channels + pc * padded_rows + panel * MR * kc
                    c_offset = xi * m_stride + (panel - first_block_panel) * MR * m_columns
                    following, remaining = min(end_block_panel, padded_rows // MR) - panel, end_block_panel - panel
                    # Two column panels a call where WIDE_VECTORS allows (V's next panel is C rows of
                    # NR further on, M's NR columns), an odd last one alone on the same A panels.
                    pairs = full_column_panels // 2 if WIDE_VECTORS else 0
                    taken = pair_panels_a_call(following, remaining) if pairs else panels_a_call(following,
                                                                                                  remaining)
                    for jp in range(0, 2 * pairs, 2):
                        product_pair_panels(following, remaining, kc, packed_u, a_offset, v,
                                            xi * v_stride + (jp * channels + pc) * NR, channels * NR, NR, m,
                                            c_offset + jp * NR, m_columns, (end_block_panel - panel) * MR, pc > 0)
                    for jp in range(2 * pairs, full_column_panels):
                        product_panels(min(following, taken), taken, kc, packed_u, a_offset, v,
                                       xi * v_stride + (jp * channels + pc) * NR, NR, m, c_offset + jp * NR,
                                       m_columns, (end_block_panel - panel) * MR, pc > 0)
                    panel += taken
                panel = first_block_panel
                # (ldb as np.intp: a constant 16 would compile short_panel_product once more)
                while narrow_last and panel < end_block_panel:
                    panel += short_panel_product(
                        last_valid, panel + 1 < end_block_panel and panel * MR + 2 * MR <= padded_rows,
                        panel * MR + MR <= padded_rows, kc, packed_u,
                        xi * padded_rows * channels + pc * padded_rows + panel * MR * kc, v,
                        xi * v_stride + (full_column_panels * channels + pc) * NR, np.intp(NR), m,
                        xi * m_stride + (panel - first_block_panel) * MR * m_columns + full_column_panels * NR,
                        m_columns, (end_block_panel - panel) * MR, pc > 0)
        for k in range(first_block_panel * panel_height, min(out_channels, end_block_panel * panel_height)):
            row = (k - first_block_panel * panel_height) * m_columns
            r = 0
            for jp in range(column_panels):
                # Without a residual, the transform applies the bias and activation, and the runs
                # are plain copies; a residual (rare after a 3x3 layer) goes through epilogue_at.
                if tile == 2:
                    output_transform_2(m, row + jp * NR, m_stride, transformed, 0, not has_residual, biases[k],
                                       activation, alpha, beta)
                else:
                    output_transform_4(m, row + jp * NR, m_stride, transformed, 0, not has_residual, biases[k],
                                       activation, alpha, beta)
                while run_column[r] < min(chunk_columns, (jp + 1) * NR):
                    source = tile * (run_column[r] - jp * NR)
                    at = run_out[r] + k * pixels
                    for top in range(run_rows[r]):
                        if has_residual:
                            epilogue_at(transformed, source + top * run, out_flat, at + top * out_width,
                                        run_length[r], biases[k], residual_flat, at + top * out_width,
                                        has_residual, activation, alpha, beta)
                        else:
                            copy_run(transformed, source + top * run, out_flat, at + top * out_width, run_length[r])
                    r += 1


#: Floats of products a task of ``convolution_stem_cpu`` keeps (256 KB, in L2): the convolution's
#: output rows its band reads, for its chunk of the output channels.
STEM_SUMS_FLOATS = 1 << 16
#: ... and at most as many tasks per thread as this, where the rows allow.
STEM_TASKS_PER_THREAD = 4
#: What ``stem_split`` counts for each float a task copies into its zero-padded scratch, in the
#: time of one tap of one pixel for one block of STEM_CHANNELS channels (a cycle with AVX-512):
#: copying ResNet's 28x28 input of 128 channels three times more took 10 us a copy at n = 1.
STEM_COPY_COST = 0.5
#: ... and for each task, for its setup (the scratch's allocation, the windows' origins).
STEM_TASK_COST = 2000
#: ... and for each float of weights a task reads (its chunk's blocks of channels by their taps):
#: at n = 1 each thread streams its tasks' weights from memory (AlexNet's 25 MB do not stay in
#: L3), and two bands of a deep layer would read all of them twice where two chunks read half each.
#: Counted so, AlexNet's first layer and grouped 3x3 and ResNet's stride-2 3x3 take two chunks at
#: n = 1, not two bands (the same at any cost from 0.25 to 1): AlexNet 0.946x-0.984x, ResNet
#: 0.992x-1.000x at n = 1 (``network_ab.py``, three runs); alone, with their weights in cache,
#: 0.98x-1.00x.
STEM_WEIGHT_COST = 0.5
#: Two consecutive blocks of STEM_CHANNELS output channels of one group go to one call
#: (``stem.stem_pixels_pair``: 24 accumulators), with AVX-512 only (on AVX2 they would be 48
#: registers). Alone (``convolution_ab.py --set stems --algorithm chosen``, n = 2): AlexNet's first
#: layer 0.86x, SqueezeNet's 0.93x, ResNet's 0.94x; ResNet's 3x3 stride-2 layer 0.98x.
STEM_PAIRS = WIDE_VECTORS


@njit(**SCALAR_FUNCTION)
def stem_split(n, channels, group, out_channels, out_height, conv_height, conv_width, kernel_h, kernel_w, stride_h,
               stride_w, pool_h, pool_stride_h, min_tasks):
    """How ``convolution_stem_cpu`` shares out n samples: (output rows per band, bands per
    sample, chunks of output channels per band), a task per chunk of a band, min_tasks threads
    each taking a run of tasks. A band reads (rows - 1) * pool_stride_h + pool_h convolution rows
    (a pool of 1 where there is none), conv_width wide, whose products for the chunk's channels
    fit STEM_SUMS_FLOATS.

    The cheapest share by a count of the thread that works longest: its tasks (tasks over
    threads, rounded up) times a task's work: the taps of its padded pixels (whole calls of
    STEM_PIXELS; a group's channels times the kernel's taps) for its channels, the input of all
    the channels it copies (STEM_COPY_COST a float: bands read overlapping rows, and each chunk
    copies the band's input again), the weights of its channels (STEM_WEIGHT_COST a float: each
    band reads them all again) and STEM_TASK_COST. Among
    shares of at most STEM_TASKS_PER_THREAD tasks per thread (more only where the budget needs more
    bands): small bands waste the last call's pixels and copy the window's overlap again; a deep
    layer's channels split into chunks instead."""
    blocks = -(-out_channels // STEM_CHANNELS)
    taps = channels // group * kernel_h * kernel_w
    pitch = (conv_width - 1) * stride_w + kernel_w
    samples, threads = max(1, n), max(1, min_tasks)  # (n = 0: no tasks)
    wanted = threads * STEM_TASKS_PER_THREAD
    best_cost, best_rows, best_bands, best_chunks = -1.0, out_height, 1, 1
    for chunks in range(1, blocks + 1):
        chunk_blocks = -(-blocks // chunks)
        if chunks > 1 and -(-blocks // (chunks - 1)) == chunk_blocks:
            continue  # (no smaller chunk than one fewer makes)
        conv_rows = STEM_SUMS_FLOATS // (chunk_blocks * STEM_CHANNELS * conv_width)
        least_bands = -(-out_height // max(1, (conv_rows - pool_h) // pool_stride_h + 1))
        most_bands = max(least_bands, min(out_height, -(-wanted // (samples * chunks))))
        for bands in range(least_bands, most_bands + 1):
            rows = -(-out_height // bands)
            if bands > least_bands and -(-out_height // (bands - 1)) == rows:
                continue  # (the same rows as one band fewer)
            read_rows = min(conv_height, (rows - 1) * pool_stride_h + pool_h)
            slots = -(-read_rows * conv_width // STEM_PIXELS) * STEM_PIXELS
            copied = channels * ((read_rows - 1) * stride_h + kernel_h) * pitch
            task = (slots * chunk_blocks * taps + STEM_COPY_COST * copied + STEM_TASK_COST
                    + STEM_WEIGHT_COST * chunk_blocks * STEM_CHANNELS * taps)
            whole_bands = -(-out_height // rows)  # (bands of ``rows``: fewer than ``bands`` where they round up)
            cost = -(-samples * whole_bands * chunks // threads) * task
            if best_cost < 0 or cost < best_cost:
                best_cost, best_rows, best_bands, best_chunks = cost, rows, whole_bands, chunks
    return best_rows, best_bands, best_chunks


@njit(**SCALAR_FUNCTION)
def stem_taps(channels, kernel_h, kernel_w, stride_h, stride_w, conv_height, conv_width, pool_h, pool_stride_h,
              band_rows):
    """(tap_offsets, scratch_plane) of ``convolution_stem_cpu``'s tasks: each tap's offset in a
    task's scratch, whose planes (``scratch_plane`` floats) hold the input that the largest band
    reads."""
    pitch = (conv_width - 1) * stride_w + kernel_w
    scratch_plane = ((min(conv_height, (band_rows - 1) * pool_stride_h + pool_h) - 1) * stride_h + kernel_h) * pitch
    tap_offsets = np.empty(channels * kernel_h * kernel_w, np.intp)
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                tap_offsets[(c * kernel_h + i) * kernel_w + j] = c * scratch_plane + i * pitch + j
    return tap_offsets, scratch_plane


@njit(**PARALLEL_KERNEL)
def convolution_stem_cpu(n, x, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left, kernel_h,
                         kernel_w, conv_height, conv_width, pool_h, pool_w, pool_stride_h, pool_stride_w, pool_top,
                         pool_left, min_tasks, residual, has_residual, activation, alpha, beta, out, out_width):
    """An undilated convolution (a network's first layer on the image, a strided one with a window,
    or groups of them: ``choose_algorithm``) with 8 output channels in each vector's lanes and the
    input's pixels broadcast (``stem``), and the max pooling that alone reads it, if any.
    x: (max_batch, C, H, W); packed_weights, biases: ``stem.pack_stem`` of the (K, C/group, kh, kw)
    weights and (K,) biases, each group's K/group a multiple of STEM_CHANNELS; conv_height,
    conv_width: the convolution's output size; pool_h, pool_w, pool_stride_h, pool_stride_w,
    pool_top, pool_left: the max pooling's window, strides and leading pads (1, 1, 1, 1, 0, 0:
    none); out: (max_batch, K, OH*OW), rows ``out_width`` wide, the pooling's output
    (else the convolution's); min_tasks: the threads to share the work among; residual (shaped as
    out, not out's own memory: a last run of 8 pixels writes some again), has_residual,
    activation, alpha, beta: the fused ``epilogue``, after the pooling (its activation a
    non-decreasing one, so the same as before it). Rows >= n are neither read nor written.

    Each task takes a band of output rows of one sample and a chunk of its output channels
    (``stem_split``). It copies the input that the band's convolution rows read into zero-padded
    planes, computes its channels of those rows' pixels, STEM_PIXELS pixels and STEM_CHANNELS
    channels a call, or twice as many channels where two blocks of one group follow each other
    (``stem.stem_pixels``, ``stem_pixels_pair``; the pixels' windows at any stride, in consecutive
    rows or not), pools them where there is a pooling (across each convolution row, then down, by
    ``stem.max_run``: the convolution's output is never written, and bands whose windows overlap
    compute their shared row twice), and writes them back as the channels' rows through the
    epilogue (``depthwise.deinterleave_rows``)."""
    band_rows, bands, chunks = stem_split(n, x.shape[1], group, out.shape[1], out.shape[2] // out_width,
                                          conv_height, conv_width, kernel_h, kernel_w, stride_h, stride_w, pool_h,
                                          pool_stride_h, min_tasks)
    tap_offsets, scratch_plane = stem_taps(x.shape[1] // group, kernel_h, kernel_w, stride_h, stride_w, conv_height,
                                           conv_width, pool_h, pool_stride_h, band_rows)
    x_flat, out_flat, residual_flat = x.reshape(x.size), out.reshape(out.size), residual.reshape(residual.size)
    for task in prange(n * bands * chunks):
        stem_task(np.int64(task), x, x_flat, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left,
                  kernel_h, kernel_w, conv_height, conv_width, pool_h, pool_w, pool_stride_h, pool_stride_w, pool_top,
                  pool_left, tap_offsets, scratch_plane, residual_flat, has_residual, activation, alpha, beta, out,
                  out_flat, out_width, band_rows, bands, chunks)


@njit(**SHARED_STEP)
def stem_task(task, x, x_flat, packed_weights, biases, group, stride_h, stride_w, pad_top, pad_left, kernel_h,
              kernel_w, conv_height, conv_width, pool_h, pool_w, pool_stride_h, pool_stride_w, pool_top, pool_left,
              tap_offsets, scratch_plane, residual_flat, has_residual, activation, alpha, beta, out, out_flat,
              out_width, band_rows, bands, chunks):
    """Task ``task`` of ``convolution_stem_cpu`` (its arguments, with x, out and residual also as
    flat views, the taps' offsets in a group's planes of ``scratch_plane`` floats, and
    ``stem_split``'s share)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, out_plane = out.shape[1], out.shape[2]
    out_height = out_plane // out_width
    b, band, chunk = task // (bands * chunks), (task // chunks) % bands, task % chunks
    # The chunk's blocks of STEM_CHANNELS output channels: [first_block, end_block), each within
    # one group (whose input planes start group_channels planes apart in the scratch).
    all_blocks = packed_weights.shape[0] // (tap_offsets.shape[0] * STEM_CHANNELS)
    group_blocks, group_channels = all_blocks // group, channels // group
    first_block, end_block = chunk * all_blocks // chunks, (chunk + 1) * all_blocks // chunks
    first_out_row = band * band_rows
    out_rows = min(band_rows, out_height - first_out_row)
    # The convolution's rows the band's output reads: [first_row, first_row + rows).
    first_row = max(0, first_out_row * pool_stride_h - pool_top)
    rows = min(conv_height, (first_out_row + out_rows - 1) * pool_stride_h - pool_top + pool_h) - first_row
    pitch = (conv_width - 1) * stride_w + kernel_w
    taps = tap_offsets.shape[0]
    top = first_row * stride_h - pad_top  # the image row of the scratch's first
    copied_columns = max(0, min(width, pitch - pad_left))  # (none where the pads are wider than the window)
    padded = np.zeros(channels * scratch_plane, np.float32)
    for c in range(channels):
        for y in range(max(0, top), min(height, top + (rows - 1) * stride_h + kernel_h)):
            at, source = c * scratch_plane + (y - top) * pitch + pad_left, ((b * channels + c) * height + y) * width
            # In runs of vectors: as a slice assignment, a scalar loop of clamped indices that
            # took 11% of SqueezeNet's first layer (one thread, perf).
            for start in range(0, copied_columns, MAX_RUN_OUTPUTS):
                copy_run(x_flat, source + start, padded, at + start, min(MAX_RUN_OUTPUTS, copied_columns - start))
    pixels = rows * conv_width
    pixel_groups = -(-pixels // STEM_PIXELS)
    # Each pixel's window in the scratch; a last group of under STEM_PIXELS repeats the last pixel.
    # (Row by row: a division per pixel took 8% of SqueezeNet's first layer.)
    origins = np.empty(pixel_groups * STEM_PIXELS, np.intp)
    for r in range(rows):
        for column in range(conv_width):
            origins[r * conv_width + column] = r * stride_h * pitch + column * stride_w
    for q in range(pixels, pixel_groups * STEM_PIXELS):
        origins[q] = origins[pixels - 1]
    # (+ LANES pixels: deinterleave_rows reads 8 pixels from a last run of 1 to 8)
    octet_pixels = pixel_groups * STEM_PIXELS + LANES
    # The chunk's octets of channels, from its first (octet 0 of sums and results).
    first_octet = first_block * STEM_VECTORS
    octets = min(end_block * STEM_VECTORS, (out_channels + LANES - 1) // LANES) - first_octet
    sums = np.empty((end_block - first_block) * STEM_VECTORS * octet_pixels * LANES, np.float32)
    for octet in range((end_block - first_block) * STEM_VECTORS):
        sums[(octet * octet_pixels + octet_pixels - LANES) * LANES:(octet + 1) * octet_pixels * LANES] = 0.0
    block = first_block
    while block < end_block:
        paired = STEM_PAIRS and block + 1 < end_block and (block + 1) // group_blocks == block // group_blocks
        planes_at = (block // group_blocks) * group_channels * scratch_plane  # (its group's input planes)
        weights_at, octet_rows = block * taps * STEM_CHANNELS, octet_pixels * LANES
        for pixel_group in range(pixel_groups):
            first_pixel = pixel_group * STEM_PIXELS
            sums_at = ((block - first_block) * STEM_VECTORS * octet_pixels + first_pixel) * LANES
            if paired:  # (the second block's weights, biases and sums one block further)
                stem_pixels_pair(padded, planes_at, origins, first_pixel, tap_offsets, taps, packed_weights, weights_at,
                                 biases, block * STEM_CHANNELS, sums, sums_at, octet_rows, taps * STEM_CHANNELS,
                                 STEM_CHANNELS, STEM_VECTORS * octet_rows)
            else:
                stem_pixels(padded, planes_at, origins, first_pixel, tap_offsets, taps, packed_weights, weights_at,
                            biases, block * STEM_CHANNELS, sums, sums_at, octet_rows)
        block += 2 if paired else 1
    run = out_rows * out_width
    results, result_pixels = sums, octet_pixels
    if pool_h * pool_w * pool_stride_h * pool_stride_w > 1:
        result_pixels = run + LANES
        results = np.empty(octets * result_pixels * LANES, np.float32)
        # Separable: each convolution row of the band pooled across, into ``across`` (out_width
        # pixels a row), then each output down its window's rows of that. A window at a time
        # loaded all its pool_h x pool_w pixels: SqueezeNet's first layer with its 3x3 stride-2
        # pooling took 1.5x-1.6x this time at n = 1 to 4, ResNet's 1.07x-1.18x.
        across = np.empty(rows * out_width * LANES, np.float32)
        for octet in range(octets):
            results[(octet * result_pixels + run) * LANES:(octet + 1) * result_pixels * LANES] = 0.0
            for ow in range(out_width):
                column = max(0, ow * pool_stride_w - pool_left)
                column_end = min(conv_width, ow * pool_stride_w - pool_left + pool_w)
                for r in range(rows):
                    max_run(sums, (octet * octet_pixels + r * conv_width + column) * LANES, LANES, column_end - column,
                            across, (r * out_width + ow) * LANES)
            for oh in range(out_rows):
                out_row = first_out_row + oh
                row = max(0, out_row * pool_stride_h - pool_top)
                row_end = min(conv_height, out_row * pool_stride_h - pool_top + pool_h)
                for ow in range(out_width):
                    max_run(across, ((row - first_row) * out_width + ow) * LANES, out_width * LANES, row_end - row,
                            results, (octet * result_pixels + oh * out_width + ow) * LANES)
    # The band's rows lie back to back in each output plane: one run of out_rows x OW pixels.
    for octet in range(octets):
        deinterleave_run(results, octet * result_pixels * LANES, run, out_flat,
                         (b * out_channels + (first_octet + octet) * LANES) * out_plane + first_out_row * out_width,
                         out_plane, min(LANES, out_channels - (first_octet + octet) * LANES), residual_flat,
                         has_residual, activation, alpha, beta)


# Below these sizes the GEMM's panels would be mostly padding (measured on depthwise and tiny groups).
GEMM_MIN_REDUCTION = 16
GEMM_MIN_GROUP_OUTPUTS = 8

#: Output columns (pixels) per task of ``convolution_gemm_cpu``: a multiple of ``gemm.NR``. 128
#: keeps a task's packed patches (KC x 128 floats, 128 KB) in L2, makes enough tasks for 2 cores
#: from a single 28x28 image, and streams each A panel from L2 once per four pairs of column
#: panels (``gemm.micro_kernel_pair_panels``). Against 64, the network loaded twice in one
#: process, alternating: ResNet 0.971x-0.984x at n = 1, 0.990x-0.991x at n = 2, 0.989x-0.995x at
#: n = 8; SqueezeNet 0.993x-1.000x, GoogLeNet 0.990x-1.015x, AlexNet 0.996x-1.004x (96: ResNet
#: 0.983x-0.996x, GoogLeNet 0.981x-0.994x).
COLUMNS_PER_TASK = 128
#: ... unless a column holds so little work (output channels x reduction) that a task of
#: COLUMNS_PER_TASK would be mostly its own setup: then as many columns as make this many
#: multiply-adds, up to MAX_COLUMNS_PER_TASK.
TASK_MULTIPLY_ADDS = 1 << 19
MAX_COLUMNS_PER_TASK = 512


def task_width(group_outputs: int, reduction: int) -> int:
    """COLUMNS_PER_TASK, or more for layers with little work per column (a multiple of NR)."""
    wanted = NR * -(-TASK_MULTIPLY_ADDS // (NR * group_outputs * reduction))
    return int(min(MAX_COLUMNS_PER_TASK, max(COLUMNS_PER_TASK, wanted)))


#: Output columns ``convolution_gemm_average_cpu`` packs at once, at most: a whole 13x13 or 14x14
#: sample, whose every A panel then streams from L2 once per sample rather than once per 64
#: columns, and whose rows go through the epilogue's sum in one run each. Against 64 (fused, one
#: process, 2 threads, n = 1 to 32): 256 -> 1000 on 13x13 0.88x-0.94x the time where 64 took
#: 0.94x-0.98x of the layer and pooling apart; 128 -> 512 on 14x14 with a residual 0.85x-1.07x
#: where 64 took 0.98x-1.10x.
AVERAGE_TASK_COLUMNS = 256


#: A 1x1, stride-1, unpadded convolution reads its input rows in place while a group's A panels
#: make one block of PANELS_PER_BLOCK (96 output channels): each 16-column panel of x is then read
#: once and multiplied by every panel of weights while it is in L1. With more blocks, a strided
#: panel of x would be fetched again for each, and a packed copy (contiguous, aligned) pays for
#: itself. Side by side, packed against in place: 64 -> 256 on 28x28 0.90x-0.92x at n = 1 and 8,
#: 256 -> 128 0.89x-0.96x, 480 -> 192 on 14x14 0.92x-0.96x, 256 -> 1000 on 13x13 0.92x; 256 -> 64
#: and 192 -> 64 0.96x-1.26x (in place wins).
IN_PLACE_MAX_ROWS = PANELS_PER_BLOCK * MR
#: ... and while x's planes are not a multiple of this many bytes long. A panel's rows are a plane
#: apart: at a multiple of 2 KB, its 16 rows fall in one or two sets of the L1 cache (8 ways each,
#: a set every 64 bytes of a 4 KB period) and evict each other and the weights before the
#: micro-kernel is done with them. Packed against in place (``benchmarks/pointwise_ab.py``, 2
#: threads, n = 1, 2 and 8): 32x32 planes 0.76x-0.97x, 64x64 0.89x-0.93x, 16x32 (2 KB)
#: 0.91x-1.05x; 8x32 and 16x16 (1 KB, four sets) 0.93x-1.05x, 28x28 1.02x-1.06x.
IN_PLACE_PLANE_ALIASING = 2048
#: IN_PLACE_MAX_ROWS where x lies on 2 MB pages (``memory.on_huge_pages``: a request's arena from
#: 2 MB on). The measurements above ran on 4 KB pages, where a panel's 256 rows a plane apart
#: touch some 200 pages, more than the first-level TLB holds; on 2 MB pages the rows read in place
#: again for each block of A cost less than packing them. In the networks (max batch 32, each
#: layer's time from ``get_performance_counts``, two loads alternating, in place / packed):
#: ResNet's 256 -> 128 on 28x28 0.94x-0.95x, 64 -> 256 0.98x, 128 -> 512 on 14x14 with the global
#: average 0.98x-0.99x; GoogLeNet's 1x1 layers of 128 to 192 outputs 0.93x-0.98x; SqueezeNet's
#: 32 -> 128 on 13x13 0.94x-0.97x, but its 256 -> 1000 1.00x-1.01x (left packed).
IN_PLACE_HUGE_PAGE_MAX_ROWS = 512


def reads_in_place(kernel, strides, pads_begin, pads_end, group_outputs, plane, huge_pages=False) -> bool:
    """Whether ``convolution_gemm_cpu`` reads its panels of x in place (``in_place``): a 1x1,
    stride-1, unpadded convolution (at both ends: end padding makes the output larger than x, and
    panels read in place would run past its rows) of at most IN_PLACE_MAX_ROWS outputs per group
    (IN_PLACE_HUGE_PAGE_MAX_ROWS where x lies on huge pages, ``huge_pages``), whose x planes
    (``plane`` floats) are not a multiple of IN_PLACE_PLANE_ALIASING bytes long."""
    most_rows = IN_PLACE_HUGE_PAGE_MAX_ROWS if huge_pages else IN_PLACE_MAX_ROWS
    return ((*kernel, *strides, *pads_begin, *pads_end) == (1, 1, 1, 1, 0, 0, 0, 0)
            and group_outputs <= most_rows and plane * 4 % IN_PLACE_PLANE_ALIASING != 0)


#: A 3x3 convolution takes ``convolution_winograd_cpu`` from this many input and output channels:
#: with fewer, its 16 GEMMs run reductions too short to pay for the transforms.
WINOGRAD_MIN_CHANNELS = 16
#: Floats of transformed input ((m+2)^2 x C x tiles) a Winograd task keeps in L2: its tile count.
WINOGRAD_TASK_FLOATS = 1 << 15


def winograd_task_width(channels: int, tile: int) -> int:
    """Tiles per task of ``convolution_winograd_cpu``: 1 to 4 panels of NR, as many as keep its
    transformed input within WINOGRAD_TASK_FLOATS."""
    return NR * int(min(4, max(1, WINOGRAD_TASK_FLOATS // (tile_elements(tile) * channels * NR))))


def winograd_tile(out_height: int, out_width: int) -> int:
    """The tile side of a Winograd layer with this output: 4 (4x fewer multiply-adds than the
    GEMM's, against 2.25x for 2) unless one sample's 4x4 tiles would make more multiply-adds,
    panels of NR tiles included, than its 2x2 ones: small images at n = 1, such as 6x6, where
    four 4x4 tiles (of 36 elements each) leave a 16-tile panel three-quarters empty."""
    def work(tile):
        _, tiles = sample_tiles(out_height, out_width, tile)
        return tile_elements(tile) * NR * -(-tiles // NR)

    return 4 if work(4) < work(2) else 2


#: A Winograd layer whose sample has at most this many tiles, of at least
#: WINOGRAD_TILE_ROWS_MIN_CHANNELS input channels, takes the tiles as the rows of its products
#: (``tile_rows``), with AVX-512 (``WIDE_VECTORS``): a 6x6 output's 9 tiles of 2x2 fill only 9 of
#: a panel's 16 lanes at n = 1. Against the panels of tiles (one process, 2 threads, a layer
#: alone): AlexNet's 192 -> 384 and 256 -> 256 on 6x6 0.67x-0.73x the time at n = 1, 0.99x-1.00x
#: at n = 2, 0.88x-0.93x at 4 and 8, 1.00x-1.02x at 32; 96 or 128 -> 256 on 6x6 and 128 or 256 ->
#: 256 on 12x12 (4x4 tiles) alike. A sample of 16 tiles (7x7, 13x13) fills its panels: 1.05x-1.13x.
WINOGRAD_TILE_ROWS_MAX_TILES = TILE_ROWS_MAX
#: ... where each call's transposes into M (``tile_rows_product``) cost too much of a short
#: reduction: 48 -> 192 on 6x6 took 0.81x the time at n = 1, but 1.07x at n = 2 and 32.
WINOGRAD_TILE_ROWS_MIN_CHANNELS = 96


def winograd_tile_rows(channels: int, out_height: int, out_width: int, tile: int) -> bool:
    """Whether a Winograd layer of ``channels`` inputs, this output and tile side takes
    ``tile_rows_product`` (see WINOGRAD_TILE_ROWS_MAX_TILES)."""
    return (WIDE_VECTORS and channels >= WINOGRAD_TILE_ROWS_MIN_CHANNELS
            and sample_tiles(out_height, out_width, tile)[1] <= WINOGRAD_TILE_ROWS_MAX_TILES)


#: The kernel sizes of the depthwise convolutions (one input channel per output channel,
#: undilated) that ``convolution_depthwise_cpu`` takes; other depthwise layers take the direct
#: kernel.
DEPTHWISE_KERNELS = ((3, 3), (5, 5))


#: An ungrouped, undilated convolution of at most this many input channels (a network's first
#: layer, on the image) takes ``convolution_stem_cpu`` where its output channels are a multiple of
#: STEM_CHANNEL_MULTIPLE (16), at any kernel size, stride and pads. Against the GEMM
#: kernel (AVX2, one process, alternating, n = 1, 2 and 8): AlexNet's 3 -> 64 11x11 stride 4
#: 0.73x-0.88x the time, ResNet's and GoogLeNet's 3 -> 64 7x7 stride 2 0.84x-0.88x, FCN's 3 -> 32
#: 3x3 0.74x-0.83x, MobileNet's 3 -> 32 3x3 stride 2 0.91x-0.92x, SqueezeNet's 3 -> 64 3x3 stride 2
#: 0.93x-0.99x; but 3 -> 24 (padded to 32 channels) 1.05x-1.07x.
STEM_MAX_CHANNELS = 4
#: ... and, where STEM_STRIDED_WINDOWS, so does any ungrouped, undilated, strided convolution with
#: a window (kernel above 1x1), whatever its input channels: the GEMM would pack each patch's
#: strided taps (the 3x3 stride-2 layer of ResNet's third bottleneck spent 13% of its time there),
#: where these windows are read where they lie. Against the GEMM (one process, 2 threads, n = 1, 2
#: and 8): 3x3 stride 2 on 64 x 56x56, 128 x 28x28 and 256 x 28x28 0.79x-0.92x the time, 512 x
#: 14x14 0.91x-0.98x (ResNet 0.968x-1.001x, ``benchmarks/in_place_ab.py --what strided_stem``). A
#: strided 1x1 layer reads no window: the GEMM, 0.67x-0.74x the stem's time.
STEM_STRIDED_WINDOWS = True
#: ... and, where STEM_GROUPS, so does a grouped convolution with a window at any stride, where each
#: group's output channels are a multiple of STEM_GROUP_CHANNELS (32: a block of STEM_CHANNELS never
#: spans two groups, on AVX2 or AVX-512, so both plan alike). Against the GEMM, one group after
#: another (one process, 2 threads, n = 1, 2 and 8): AlexNet's 5x5 64 -> 192 in 2 groups on 13x13
#: 0.82x-0.86x the time, its 3x3 384 -> 256 in 2 groups on 6x6 0.78x-0.87x; 2 groups of 32 -> 32 or
#: 32 -> 64 on 28x28 0.72x-0.97x, 4 groups of 32 -> 64 at stride 2 0.79x-0.89x.
STEM_GROUPS = True
STEM_GROUP_CHANNELS = 32


def out_size(attrs, input_shape) -> tuple[int, int]:
    """The output's (height, width) for this input (N, C, H, W)."""
    return tuple((input_shape[2 + a] + attrs["pads_begin"][a] + attrs["pads_end"][a]
                  - (attrs["weights"].shape[2 + a] - 1) * attrs["dilations"][a] - 1) // attrs["strides"][a] + 1
                 for a in (0, 1))


def choose_algorithm(attrs, input_shape) -> str:
    """'depthwise' for an undilated depthwise convolution of a kernel in DEPTHWISE_KERNELS;
    'winograd' for a 3x3, stride-1, undilated, ungrouped convolution of at least
    WINOGRAD_MIN_CHANNELS channels in and out; 'stem' for a first layer on the image, a strided one
    with a window and groups with a window (see STEM_MAX_CHANNELS); else 'gemm' where each group's
    matrices are big enough for the micro-kernel's 6 x 16 blocks; else 'direct' (other depthwise
    layers and small groups)."""
    k, c_per_group, kh, kw = attrs["weights"].shape
    if ((kh, kw) in DEPTHWISE_KERNELS and c_per_group == 1 and attrs["group"] == k
            and tuple(attrs["dilations"]) == (1, 1)):
        return "depthwise"
    if ((kh, kw) == (3, 3) and tuple(attrs["strides"]) == (1, 1) and tuple(attrs["dilations"]) == (1, 1)
            and attrs["group"] == 1 and min(k, c_per_group) >= WINOGRAD_MIN_CHANNELS):
        return "winograd"
    group, window = attrs["group"], kh * kw > 1
    if tuple(attrs["dilations"]) == (1, 1) and k % STEM_CHANNEL_MULTIPLE == 0 and (
            group == 1 and (c_per_group <= STEM_MAX_CHANNELS
                            or (STEM_STRIDED_WINDOWS and window and tuple(attrs["strides"]) != (1, 1)))
            or group > 1 and STEM_GROUPS and window and (k // group) % STEM_GROUP_CHANNELS == 0):
        return "stem"
    if c_per_group * kh * kw >= GEMM_MIN_REDUCTION and k // attrs["group"] >= GEMM_MIN_GROUP_OUTPUTS:
        return "gemm"
    return "direct"


def window_rows(x_shape, weights_shape, dilations):
    """(row_offset, row_tap, tap_dy, tap_dx) of ``convolution_gemm_cpu``: for each reduction row
    r = (c, i, j) of a group, its input offset (c*H + i*dh)*W + j*dw and its tap i*kw + j; for
    each tap, its shifts i*dh and j*dw."""
    _, _, height, width = x_shape
    _, group_channels, kernel_h, kernel_w = weights_shape
    i, j = np.meshgrid(np.arange(kernel_h), np.arange(kernel_w), indexing="ij")
    tap_dy, tap_dx = (i * dilations[0]).ravel(), (j * dilations[1]).ravel()
    taps = kernel_h * kernel_w
    row_tap = np.tile(np.arange(taps), group_channels)
    row_offset = np.repeat(np.arange(group_channels) * height * width, taps) + tap_dy[row_tap] * width + tap_dx[row_tap]
    return tuple(np.ascontiguousarray(a, dtype=np.intp) for a in (row_offset, row_tap, tap_dy, tap_dx))


#: The algorithms that can write a Concatenation's channels in place (``cpu_step``'s destination),
#: and whose output may be the residual's own memory: each reads a residual element before it
#: writes that output element (the direct kernel sums its taps in out first, then reads it).
WRITES_DESTINATION = ("gemm", "winograd")


def cpu_step(attrs, inputs, outputs, algorithm=None, columns_per_task=None, min_tasks=None, destination=None,
             tile=None, tile_rows=None):
    """Bind to the algorithm ``choose_algorithm`` picks (tests may force one, Winograd's tile side,
    and the GEMM's columns per task and least task count, which only change how the work is
    split; the tile side, as ``winograd_tile`` picks it, also the rounding; ``tile_rows``, as
    ``winograd_tile_rows`` picks it, how Winograd's products are blocked).

    destination: (buffer, first channel), to write the output into channels [first, first + K)
    of the C-contiguous (max_batch, T, OH, OW) buffer instead of outputs[0]: a Concatenation's
    output, which its inputs' convolutions write in place (``graph.compiler``). GEMM or Winograd
    algorithm, no residual.

    attrs["global_average"]: (OH, OW), the convolution's output size, where a global average
    pooling of that output is fused in (``graph.compiler.averages_fused``): outputs[0] is then
    the pooling's (max_batch, K, 1, 1), computed by ``convolution_gemm_average_cpu``."""
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    algorithm = algorithm or choose_algorithm(attrs, x.shape)
    if attrs.get("max_pool") is not None and algorithm != "stem":
        raise ValueError(f"only the stem convolution computes a max pooling of its output, not {algorithm!r}")
    first_out_channel = 0
    if destination is not None:
        out, first_out_channel = destination
        if algorithm not in WRITES_DESTINATION or len(inputs) > 1:
            raise ValueError("only a GEMM or Winograd convolution without residual writes into a destination")
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    # The fused epilogue: (residual, has_residual, activation, alpha, beta); residual is the
    # output itself (never read) when there is none, so that every call has one signature.
    residual = as_4d(inputs[1]) if len(inputs) > 1 else out
    epilogue = fused_epilogue(attrs, len(inputs) > 1)
    k, _, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    max_batch, _, out_height, out_width = out.shape
    pixels = out_height * out_width
    if attrs.get("global_average") is not None:
        # out: (max_batch, K, 1, 1), the pooling's; the convolution's own output is never written
        if algorithm != "gemm" or group != 1 or destination is not None:
            raise ValueError("only a one-group GEMM convolution computes a global average of its output")
        out_height, out_width = attrs["global_average"]
        pixels = out_height * out_width
        residual = as_4d(inputs[1]).reshape(max_batch, -1, pixels) if len(inputs) > 1 else out.reshape(max_batch, -1, 1)
        return convolution_gemm_average_cpu, (
            x, pack_weights(weights.reshape(1, k, -1)), biases, int(stride_h), int(stride_w), int(pad_top),
            int(pad_left), int(out_width), int(pixels), *window_rows(x.shape, weights.shape, (dilation_h, dilation_w)),
            reads_in_place((kernel_h, kernel_w), (stride_h, stride_w), (pad_top, pad_left), attrs["pads_end"], k,
                           x.shape[2] * x.shape[3], on_huge_pages(x)),
            int(columns_per_task or AVERAGE_TASK_COLUMNS), int(min_tasks or numba.get_num_threads()),
            residual, *epilogue, out.reshape(max_batch, k),
        )
    if algorithm == "winograd":
        tile = int(tile or winograd_tile(out_height, out_width))
        if tile_rows is None:
            tile_rows = winograd_tile_rows(weights.shape[1], out_height, out_width, tile)
        return convolution_winograd_cpu, (
            x, (transform_weights_tile_rows if tile_rows else transform_weights)(weights, tile), biases, int(pad_top),
            int(pad_left), int(out_width), tile, bool(tile_rows),
            *window_rows(x.shape, (k, weights.shape[1], tile + 2, tile + 2), (1, 1)),
            int(columns_per_task or winograd_task_width(weights.shape[1], tile)),
            int(min_tasks or numba.get_num_threads()),
            residual.reshape(max_batch, -1, pixels), *epilogue, int(first_out_channel),
            out.reshape(max_batch, -1, pixels),
        )
    if algorithm == "depthwise":
        return convolution_depthwise_cpu, (
            x, *pack_depthwise(weights, biases), int(stride_h), int(stride_w), int(pad_top), int(pad_left),
            int(out_width), int(min_tasks or numba.get_num_threads()), residual.reshape(max_batch, -1, pixels),
            *epilogue, out.reshape(max_batch, -1, pixels),
        )
    if algorithm == "stem":
        # attrs["max_pool"]: the max pooling fused in (``graph.compiler.max_poolings_fused``), whose
        # output outputs[0] then is; the convolution's own size there.
        pool = attrs.get("max_pool") or {"kernel": (1, 1), "strides": (1, 1), "pads_begin": (0, 0),
                                         "conv_size": (out_height, out_width)}
        conv_height, conv_width = pool["conv_size"]
        if group > 1 and (k // group) % STEM_CHANNELS != 0:  # (a block of channels would span two groups)
            raise ValueError(f"the stem kernel takes groups of a multiple of {STEM_CHANNELS} output channels, "
                             f"not {k // group}")
        return convolution_stem_cpu, (
            x, *pack_stem(weights, biases), group, int(stride_h), int(stride_w), int(pad_top), int(pad_left),
            int(kernel_h),
            int(kernel_w), int(conv_height), int(conv_width), *(int(v) for v in pool["kernel"]),
            *(int(v) for v in pool["strides"]), *(int(v) for v in pool["pads_begin"]),
            int(min_tasks or numba.get_num_threads()), residual.reshape(max_batch, -1, pixels), *epilogue,
            out.reshape(max_batch, -1, pixels), int(out_width),
        )
    if algorithm == "gemm":
        return convolution_gemm_cpu, (
            x, pack_weights(weights.reshape(group, k // group, -1)), biases, group,
            int(stride_h), int(stride_w), int(pad_top), int(pad_left), int(out_width),
            *window_rows(x.shape, weights.shape, (dilation_h, dilation_w)),
            reads_in_place((kernel_h, kernel_w), (stride_h, stride_w), (pad_top, pad_left), attrs["pads_end"],
                           k // group, x.shape[2] * x.shape[3], on_huge_pages(x)),
            int(columns_per_task or task_width(k // group, weights[0].size)),
            int(min_tasks or numba.get_num_threads()),
            residual.reshape(max_batch, -1, pixels), *epilogue, int(first_out_channel),
            out.reshape(max_batch, -1, pixels),
        )
    return convolution_cpu, (
        x, weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), group, int(min_tasks or numba.get_num_threads()), residual, *epilogue,
        out,
    )


# GPU ------------------------------------------------------------------------------------------

from numba import float32, int32  # noqa: E402

from .launch import REGISTER_OUTPUTS, REGISTER_TILE, cuda, cuda_kernel, tiled_launch  # noqa: E402


@cuda_kernel
def convolution_cuda(n, x, weights, biases, taps, stride_h, stride_w, pad_top, pad_left, group,
                     residual, has_residual, activation, alpha, beta, out):
    """x: (max_batch, C, H, W); weights: (K, C/group * kh * kw), each output channel's filter
    flattened in (c, i, j) order; biases: (K,); taps: (C/group * kh * kw, 3) int32, row r = (c,
    i * dilation_h, j * dilation_w), so that no thread divides to decode r; out: (max_batch, K,
    OH, OW); residual (shaped as out), has_residual, activation, alpha, beta: the fused
    ``epilogue``. Reads x rows < n, writes out rows < n.

    An implicit GEMM, out[k, pixel] = sum_r weights[k, r] * patch[r, pixel], pixels running over
    the n samples' OH*OW outputs and r over a group's (c, i, j), register-tiled like a BLAS SGEMM:
    a block of T x T threads computes a (T*R channels of one group) x (T*R pixels) tile, each
    thread R x R outputs in registers (R = REGISTER_TILE): channels ty + a*T and pixels tx + b*T,
    so that a warp's stores and shared-memory reads go to consecutive pixels. The block walks r
    T at a time, its threads first loading the T x T*R weights (along r: consecutive addresses)
    and the T x T*R patch elements (along the pixels: neighbouring input columns; zero on
    padding) into shared memory; every loaded value then feeds R products. ``tiled_launch`` also
    compiles it with R = 1 (one output per thread, 16 times the threads) for batches too small to
    fill the GPU with R x R tiles.
    """
    tile = cuda.blockDim.x
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    thread = ty * tile + tx
    threads = tile * tile
    block_side = tile * REGISTER_TILE      # channels and pixels of a block tile
    weights_stride = block_side + 1        # padded: the transposing stores hit distinct banks
    height, width = x.shape[2], x.shape[3]
    group_in_channels = x.shape[1] // group
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_out_channels = out_channels // group
    reduction = weights.shape[1]
    out_pixels = out_height * out_width
    batch_pixels = n * out_pixels
    # shared[r * weights_stride + m]: weights[first_channel + m, r0 + r]; then, from patch_tile,
    # shared[patch_tile + r * block_side + p]: patch[r0 + r, first_pixel + p].
    shared = cuda.shared.array(0, float32)
    patch_tile = tile * weights_stride
    totals = cuda.local.array(REGISTER_OUTPUTS, float32)
    channel_values = cuda.local.array(REGISTER_TILE, float32)
    pixel_values = cuda.local.array(REGISTER_TILE, float32)
    # The R patch elements this thread loads per step: their pixel's sample and top-left input
    # corner, or sample -1 beyond the batch; fixed for a tile, so decoded once per tile.
    load_sample = cuda.local.array(REGISTER_TILE, int32)
    load_top = cuda.local.array(REGISTER_TILE, int32)
    load_left = cuda.local.array(REGISTER_TILE, int32)
    pixel_tiles = (batch_pixels + block_side - 1) // block_side
    channel_tiles = (group_out_channels + block_side - 1) // block_side  # per group
    column_tiles = group * channel_tiles
    for t in range(cuda.blockIdx.x, pixel_tiles * column_tiles, cuda.gridDim.x):
        column_tile = t % column_tiles
        g = column_tile // channel_tiles
        first_channel = g * group_out_channels + (column_tile % channel_tiles) * block_side
        group_end = (g + 1) * group_out_channels
        first_input_channel = g * group_in_channels
        first_pixel = (t // column_tiles) * block_side
        for q in range(REGISTER_TILE):
            pixel = first_pixel + (thread + q * threads) % block_side
            load_sample[q] = -1
            if pixel < batch_pixels:
                load_sample[q] = pixel // out_pixels
                load_top[q] = ((pixel % out_pixels) // out_width) * stride_h - pad_top
                load_left[q] = (pixel % out_width) * stride_w - pad_left
        for k in range(REGISTER_OUTPUTS):
            totals[k] = 0.0
        for r0 in range(0, reduction, tile):
            for q in range(REGISTER_TILE):
                # Weights: consecutive threads read consecutive r of one channel.
                e = thread + q * threads
                m = e // tile
                r = r0 + e % tile
                value = float32(0.0)
                if first_channel + m < group_end and r < reduction:
                    value = weights[first_channel + m, r]
                shared[(e % tile) * weights_stride + m] = value
                # Patch: consecutive threads read consecutive pixels of one r.
                p = e % block_side
                r = r0 + e // block_side
                value = float32(0.0)
                sample = load_sample[q]
                if sample >= 0 and r < reduction:
                    ih = load_top[q] + taps[r, 1]
                    iw = load_left[q] + taps[r, 2]
                    if 0 <= ih < height and 0 <= iw < width:
                        value = x[sample, first_input_channel + taps[r, 0], ih, iw]
                shared[patch_tile + (e // block_side) * block_side + p] = value
            cuda.syncthreads()
            for rr in range(tile):
                for a in range(REGISTER_TILE):
                    channel_values[a] = shared[rr * weights_stride + ty + a * tile]
                    pixel_values[a] = shared[patch_tile + rr * block_side + tx + a * tile]
                for a in range(REGISTER_TILE):
                    for b in range(REGISTER_TILE):
                        totals[a * REGISTER_TILE + b] += channel_values[a] * pixel_values[b]
            cuda.syncthreads()
        for b in range(REGISTER_TILE):
            pixel = first_pixel + tx + b * tile
            if pixel < batch_pixels:
                sample = pixel // out_pixels
                oh = (pixel % out_pixels) // out_width
                ow = pixel % out_width
                for a in range(REGISTER_TILE):
                    channel = first_channel + ty + a * tile
                    if channel < group_end:
                        value = biases[channel] + totals[a * REGISTER_TILE + b]
                        if has_residual:
                            value += residual[sample, channel, oh, ow]
                        out[sample, channel, oh, ow] = epilogue_value(value, activation, alpha, beta)


def gpu_step(attrs, inputs, outputs):
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    weights = np.ascontiguousarray(attrs["weights"], dtype=np.float32)
    biases = np.ascontiguousarray(attrs["biases"], dtype=np.float32)
    out_channels, group_in_channels, kernel_h, kernel_w = weights.shape
    c, i, j = np.meshgrid(np.arange(group_in_channels), np.arange(kernel_h) * dilation_h,
                          np.arange(kernel_w) * dilation_w, indexing="ij")
    taps = np.ascontiguousarray(np.stack([c.ravel(), i.ravel(), j.ravel()], axis=1), dtype=np.int32)
    group = int(attrs["group"])
    out = as_4d(outputs[0])
    kernel = tiled_launch(convolution_cuda, out.shape[2] * out.shape[3], out_channels // group, group,
                          register_tile=REGISTER_TILE)
    return kernel, (
        as_4d(inputs[0]), weights.reshape(out_channels, -1), biases, taps,
        int(stride_h), int(stride_w), int(pad_top), int(pad_left), group,
        as_4d(inputs[1]) if len(inputs) > 1 else out, *fused_epilogue(attrs, len(inputs) > 1),
        out,
    )
