"""Deconvolution (transposed convolution, ONNX ConvTranspose): x (N, C, H, W) -> y (N, K, OH, OW),
OH = (H-1)*sh - ph0 - ph1 + dh*(kh-1) + oph + 1 (likewise OW). Each input pixel spreads into the
output: x[b, c, ih, iw] * weights[c, k, i, j] adds into y[b, g*K/group + k, ih*sh - ph0 + i*dh,
iw*sw - pw0 + j*dw], for c in group g; weights are (C, K/group, kh, kw), plus biases[k].

Every kernel computes that sum as a gather: each output line collects, for every kernel row i,
the single input row ih with ih*sh = oh + ph0 - i*dh (if any), so no two iterations write one
element. Three CPU algorithms, chosen by ``choose_algorithm`` from the shapes: ``direct`` (groups
of few channels), ``packed`` (the micro-kernel of ``gemm``, one output plane per task) and
``gemm`` (BLAS over whole groups, then col2im).
"""
import numpy as np
from numba import njit, prange

from ..config import CHUNK, PARALLEL_KERNEL, SCALAR_FUNCTION
from .convolution import IN_PLACE_PLANE_ALIASING, columns_in_range
from .gemm import KC, MR, NR, micro_kernel_panels, pack_weights, panel_layout
from .views import as_4d, shape_4d


@njit(**SCALAR_FUNCTION)
def source_row(oh, i, pad_top, dilation_h, stride_h, height):
    """The one input row ih with ih*sh == oh + ph0 - i*dh that kernel row i spreads onto output
    row oh, or -1 where there is none."""
    scaled_ih = oh + pad_top - i * dilation_h
    if scaled_ih < 0 or scaled_ih % stride_h != 0 or scaled_ih // stride_h >= height:
        return -1
    return scaled_ih // stride_h


@njit(**PARALLEL_KERNEL)
def deconvolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                      pad_top, pad_left, group, out):
    """x: (max_batch, C, H, W); weights: (C, K/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the end pads and output padding.
    Reads x rows < n, writes out rows < n; each parallel iteration owns one output line."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_out_channels, kernel_h, kernel_w = weights.shape[1], weights.shape[2], weights.shape[3]
    group_in_channels = channels // group
    for line in prange(n * out_channels * out_height):
        # Output channels vary fastest, so consecutive lines reuse the same input rows from cache.
        b = line // (out_height * out_channels)
        oh = (line // out_channels) % out_height
        out_channel = line % out_channels
        out_row = out[b, out_channel, oh]
        bias = biases[out_channel]
        for ow in range(out_width):
            out_row[ow] = bias
        k = out_channel % group_out_channels
        first_in_channel = (out_channel // group_out_channels) * group_in_channels
        for i in range(kernel_h):
            ih = source_row(oh, i, pad_top, dilation_h, stride_h, height)
            if ih < 0:
                continue
            for j in range(kernel_w):
                # Input column iw lands on output column ow = iw*sw + shift.
                shift = j * dilation_w - pad_left
                iw_begin, iw_end = columns_in_range(shift, stride_w, out_width, width)
                for c in range(first_in_channel, first_in_channel + group_in_channels):
                    x_row = x[b, c, ih]
                    weight = weights[c, k, i, j]
                    for iw in range(iw_begin, iw_end):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        out_row[np.uintp(iw * stride_w + shift)] += weight * x_row[np.uintp(iw)]


@njit(**SCALAR_FUNCTION)
def col2im_tables(height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
                  dilation_w, pad_top, pad_left):
    """What ``col2im_line`` looks up instead of dividing per line: source_rows (OH, kh), the input
    row each kernel row spreads onto each output row (``source_row``); column_ranges (kw, 2), the
    input columns iw that kernel column j spreads inside the output; phase_offset (kw,) and
    phase_width, where they land in the line's phase-major sum (see ``col2im_line``)."""
    source_rows = np.empty((out_height, kernel_h), np.intp)
    for oh in range(out_height):
        for i in range(kernel_h):
            source_rows[oh, i] = source_row(oh, i, pad_top, dilation_h, stride_h, height)
    # Kernel column j's input columns iw land on phase r of the sum at q = iw + (shift - r) / sw.
    phase_width = (out_width + stride_w - 1) // stride_w
    column_ranges = np.empty((kernel_w, 2), np.intp)
    phase_offset = np.empty(kernel_w, np.intp)
    for j in range(kernel_w):
        shift = j * dilation_w - pad_left
        begin, end = columns_in_range(shift, stride_w, out_width, width)
        column_ranges[j, 0], column_ranges[j, 1] = begin, end
        phase = shift % stride_w  # in [0, sw): Python's modulo
        phase_offset[j] = phase * phase_width + (shift - phase) // stride_w
    return source_rows, column_ranges, phase_offset, phase_width


@njit(**SCALAR_FUNCTION)
def col2im_line(contributions, first_row, row_length, column_base, width, kernel_h, kernel_w, stride_w,
                source_rows, column_ranges, phase_offset, phase_width, bias, acc, out, b, channel, oh):
    """Output line out[b, channel, oh] = bias + the contributions that land on it: for every
    kernel row i, the one input row ih it spreads from (if any), and every kernel column j, the
    flat ``contributions[(first_row + i*kw + j) * row_length + column_base + ih*W + iw]``.

    The line is summed phase by phase in acc (at least sw * phase_width floats): output column
    ow = q*sw + r goes to acc[r * phase_width + q], where the input columns of one kernel column
    land on consecutive q of one phase. Each (i, j) then adds a contiguous run, which
    vectorizes, where adding into the line itself would step sw apart; the line is copied out
    of acc once at the end. Unsigned indices (never negative here) spare Numba's negative-index
    wraparound, which would keep LLVM from vectorizing."""
    for a in range(stride_w * phase_width):
        acc[a] = bias
    for i in range(kernel_h):
        ih = source_rows[oh, i]
        if ih < 0:
            continue
        for j in range(kernel_w):
            row_start = (first_row + i * kernel_w + j) * row_length + column_base + ih * width
            target = phase_offset[j]
            for iw in range(column_ranges[j, 0], column_ranges[j, 1]):
                acc[np.uintp(target + iw)] += contributions[np.uintp(row_start + iw)]
    out_width, row = out.shape[3], np.uintp(oh)
    for r in range(min(stride_w, out_width)):
        for q in range((out_width - r + stride_w - 1) // stride_w):
            out[b, channel, row, np.uintp(q * stride_w + r)] = acc[np.uintp(r * phase_width + q)]


@njit(**PARALLEL_KERNEL)
def deconvolution_gemm_cpu(n, x, grouped_weights_t, biases, stride_h, stride_w, dilation_h, dilation_w,
                           pad_top, pad_left, kernel_h, kernel_w, samples_per_gemm, gathered, columns, out):
    """x: (max_batch, C, H, W); grouped_weights_t: (group, K/group*kh*kw, C/group), the weights of
    each group transposed; biases (K,); out: (max_batch, K, OH, OW); gathered, columns: 1-d
    scratch of at least C/group*s*H*W and K/group*kh*kw*s*H*W elements, s = samples_per_gemm.
    Rows >= n are neither read nor written.

    Per group, s samples at a time, one GEMM through BLAS gives every input pixel's contribution
    to every (k, i, j): columns[(k*kh + i)*kw + j, t*H*W + ih*W + iw] = sum_c weights[c, k, i, j]
    * x[b0 + t, c, ih, iw] (the s samples' planes are first copied side by side into gathered;
    a lone sample's planes are used in place). Then col2im as a gather (``col2im_line``), in
    parallel over output lines (t, k, oh), a few lines of one plane per task, so no two tasks
    write one element."""
    group, group_rows, group_in_channels = grouped_weights_t.shape
    height, width = x.shape[2], x.shape[3]
    pixels = height * width
    group_out_channels = group_rows // (kernel_h * kernel_w)
    out_height, out_width = out.shape[2], out.shape[3]
    source_rows, column_ranges, phase_offset, phase_width = col2im_tables(
        height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
        pad_top, pad_left)
    # Lines per task: about CHUNK additions, enough to pay for the task's acc.
    line_work = max(1, out_width * max(1, (kernel_h * kernel_w) // (stride_h * stride_w)))
    lines_per_task = max(1, min(out_height, CHUNK // line_work))
    tasks_per_plane = (out_height + lines_per_task - 1) // lines_per_task
    for first in range(0, n, samples_per_gemm):
        samples = min(samples_per_gemm, n - first)
        contributions = columns[:group_rows * samples * pixels].reshape((group_rows, samples * pixels))
        for g in range(group):
            first_in_channel = g * group_in_channels
            if samples == 1:
                planes = x[first, first_in_channel:first_in_channel + group_in_channels].reshape(
                    (group_in_channels, pixels))
            else:
                planes = gathered[:group_in_channels * samples * pixels].reshape(
                    (group_in_channels, samples * pixels))
                for task in prange(group_in_channels * samples):
                    c, t = task // samples, task % samples
                    planes[c, t * pixels:(t + 1) * pixels] = x[first + t, first_in_channel + c].reshape(pixels)
            np.dot(grouped_weights_t[g], planes, contributions)
            for task in prange(samples * group_out_channels * tasks_per_plane):
                plane = task // tasks_per_plane
                t, k = plane // group_out_channels, plane % group_out_channels
                out_channel = g * group_out_channels + k
                # Indexed in full, not through a view per (line, i, j): each view would take a
                # reference on its array, an atomic the threads contend for.
                b, channel = np.uintp(first + t), np.uintp(out_channel)
                acc = np.empty(stride_w * phase_width, np.float32)
                first_line = (task % tasks_per_plane) * lines_per_task
                for oh in range(first_line, min(first_line + lines_per_task, out_height)):
                    col2im_line(columns, k * kernel_h * kernel_w, samples * pixels, t * pixels, width, kernel_h,
                                kernel_w, stride_w, source_rows, column_ranges, phase_offset, phase_width,
                                biases[out_channel], acc, out, b, channel, oh)


@njit(**PARALLEL_KERNEL)
def deconvolution_packed_cpu(n, x, packed_weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                             pad_top, pad_left, kernel_h, kernel_w, group, out):
    """x: (max_batch, C, H, W); packed_weights: ``gemm.pack_weights`` of the (K, kh*kw, C/group)
    weights, each output channel k's W_k[(i, j), c] = weights[g*C/group + c, k % (K/group), i, j]
    packed as a group of its own; biases (K,); out: (max_batch, K, OH, OW). Rows >= n are
    neither read nor written.

    One parallel task per output plane (b, k): the register-blocked micro-kernel of ``gemm``
    multiplies W_k by the plane's input channels, read in place (16 pixels a panel; a last,
    partial panel is copied out with zeros), into a task-local product of kh*kw rows, one per
    tap, by the pixels; ``col2im_line`` then sums it into the plane's lines. The product of one
    plane stays in cache, where the GEMM algorithm writes that of every plane to memory and
    reads it back, and BLAS's threads never take over the cores between the two."""
    max_batch, channels, height, width = x.shape
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_in_channels, group_out_channels = channels // group, out_channels // group
    taps, pixels = kernel_h * kernel_w, height * width
    panels, _, padded_rows = panel_layout(taps)
    column_panels = (pixels + NR - 1) // NR
    row_length = column_panels * NR
    source_rows, column_ranges, phase_offset, phase_width = col2im_tables(
        height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
        pad_top, pad_left)
    x_flat = x.reshape(max_batch * channels * pixels)
    # Planes a multiple of 2 KB long put a panel's rows in one or two sets of the L1 cache
    # (``convolution.IN_PLACE_PLANE_ALIASING``): where COPIED_MIN_PANELS panels of taps or more
    # read each panel of x, it is copied out first.
    copied = (pixels * 4) % IN_PLACE_PLANE_ALIASING == 0 and panels >= COPIED_MIN_PANELS
    for task in prange(n * out_channels):
        b, out_channel = np.uintp(task // out_channels), np.uintp(task % out_channels)
        first_in_channel = (out_channel // group_out_channels) * group_in_channels
        product = np.empty(padded_rows * row_length, np.float32)
        tail = np.zeros(min(KC, group_in_channels) * NR if pixels % NR or copied else 0, np.float32)
        acc = np.empty(stride_w * phase_width, np.float32)
        a_plane = out_channel * padded_rows * group_in_channels
        for pc in range(0, group_in_channels, KC):
            kc = min(KC, group_in_channels - pc)
            x_rows = (b * channels + first_in_channel + pc) * pixels  # row pc of the plane's channels
            for jp in range(column_panels):
                first = jp * NR
                # A whole panel copied out has a loop of its own: its constant width NR unrolls (one
                # loop with the last panel's bound, min(NR, pixels - first), took 1.06x-1.11x).
                if first + NR <= pixels and copied:
                    for p in range(kc):
                        for j in range(NR):
                            tail[p * NR + j] = x_flat[x_rows + p * pixels + first + j]
                    b_source, b_offset, ldb = tail, 0, NR
                elif first + NR <= pixels:
                    b_source, b_offset, ldb = x_flat, x_rows + first, pixels
                else:  # the last panel's pixels, then zeros: no load past the plane
                    for p in range(kc):
                        for j in range(NR):
                            tail[p * NR + j] = x_flat[x_rows + p * pixels + first + j] if first + j < pixels else 0.0
                    b_source, b_offset, ldb = tail, 0, NR
                panel = 0
                while panel < panels:
                    a_offset = a_plane + pc * padded_rows + panel * MR * kc
                    panel += micro_kernel_panels(
                        min(panels, padded_rows // MR) - panel, panels - panel, kc,
                        packed_weights, a_offset, b_source, b_offset, ldb, product, panel * MR * row_length + first,
                        row_length, taps - panel * MR, pc > 0, False, biases, 0, product, False, 0, np.float32(0.0),
                        np.float32(0.0))
        for oh in range(out_height):
            col2im_line(product, 0, row_length, 0, width, kernel_h, kernel_w, stride_w, source_rows, column_ranges,
                        phase_offset, phase_width, biases[out_channel], acc, out, b, out_channel, oh)


#: ``deconvolution_packed_cpu`` copies the panels of x from planes a multiple of 2 KB long where
#: this many panels of taps (MR each) read each: each task (output channel) copies them again, so
#: only where they are read often enough. Side by side on 32x32 inputs, copied against in place
#: (``benchmarks/layer_ab.py --layer deconvolution``, n = 1, 2 and 8): 8x8 (11 panels, FCN's
#: stride-4 upsampling) 0.63x-0.89x in six runs; 7x7 (9) 0.89x-1.06x, 6x6 (6) 0.97x-1.14x and 5x5
#: (5) 1.00x, within this machine's noise; 4x4 (3) 1.02x-1.23x and 3x3 (2) 1.15x-1.40x, slower.
COPIED_MIN_PANELS = 10

# Below these sizes a GEMM call costs more than it saves.
GEMM_MIN_CHANNELS = 8
#: The packed algorithm's task reads all of a plane's input channels for each output channel: it
#: runs where they stay in L2 or each feeds at least MR taps (2*kh*kw flops per float read)...
PACKED_MAX_INPUT = 1 << 16
#: ... and where a plane's product (kh*kw rows by its pixels) stays a cache-sized task buffer.
PACKED_MAX_PRODUCT = 1 << 18


def choose_algorithm(attrs, input_shape) -> str:
    """'packed' where the task of one output plane reads its inputs and keeps its product in cache
    (side by side with 'gemm' at n = 1 and 8: FCN's 8x8 stride-4 upsampling 0.75x-0.85x the time,
    4x4 stride 2 0.77x-1.07x, 3x3 stride 1 0.46x-0.99x; 2x2 stride 2 of 512 channels on 14x14, which
    it declines, 1.8x); else 'gemm' when each group has enough input channels for BLAS; else
    'direct'."""
    channels, _, kernel_h, kernel_w = attrs["weights"].shape
    height, width = shape_4d(input_shape)[2:]
    group_channels, pixels = channels // attrs["group"], height * width
    if group_channels < GEMM_MIN_CHANNELS:
        return "direct"
    taps = kernel_h * kernel_w
    if ((taps >= MR or group_channels * pixels <= PACKED_MAX_INPUT)
            and taps * -(-pixels // NR) * NR <= PACKED_MAX_PRODUCT):
        return "packed"
    return "gemm"


#: Input pixels one GEMM should have: smaller inputs are batched over samples up to it, so that
#: BLAS gets matrices wide enough to run near its peak...
GEMM_TARGET_COLUMNS = 1024
#: ...unless the GEMM's product (kh*kw rows per output channel) would outgrow this many floats:
#: col2im then reads it back from memory instead of cache. FCN's 8x8 stride-4 upsampling of 21
#: channels (1344 rows) ran 1.6x faster one 16x16 sample per GEMM than four (measured at n = 8).
GEMM_MAX_PRODUCT = 1 << 18


def _samples_per_gemm(x_shape, product_rows):
    """How many samples' pixels share one GEMM: about ``GEMM_TARGET_COLUMNS`` columns, at most
    ``GEMM_MAX_PRODUCT`` elements of product, at least one sample."""
    pixels, max_batch = x_shape[2] * x_shape[3], x_shape[0]
    wanted = min(-(-GEMM_TARGET_COLUMNS // pixels), GEMM_MAX_PRODUCT // (product_rows * pixels))
    return max(1, min(max_batch, wanted))


def scratch_elements(attrs, input_shapes, output_shapes, algorithm=None) -> tuple[int, int]:
    """Float32 elements of the two scratch areas (gathered, columns) the GEMM algorithm needs:
    shared by all the layers of a request, which run one after the other."""
    if (algorithm or choose_algorithm(attrs, input_shapes[0])) != "gemm":
        return 0, 0
    x_shape = shape_4d(input_shapes[0])
    channels, group_out_channels, kernel_h, kernel_w = attrs["weights"].shape
    samples = _samples_per_gemm(x_shape, group_out_channels * kernel_h * kernel_w)
    pixels = samples * x_shape[2] * x_shape[3]
    gathered = channels // attrs["group"] * pixels if samples > 1 else 0
    return gathered, group_out_channels * kernel_h * kernel_w * pixels


def cpu_step(attrs, inputs, outputs, scratch=None, algorithm=None):
    """Bind to the algorithm ``choose_algorithm`` picks (tests may force one). ``scratch``: a 1-d
    float32 array of at least sum(``scratch_elements``); where it is missing or shorter, one is
    allocated here."""
    algorithm = algorithm or choose_algorithm(attrs, inputs[0].shape)
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    group = int(attrs["group"])
    if algorithm == "gemm":
        channels, group_out_channels, kernel_h, kernel_w = weights.shape
        # (group, C/group, K/group*kh*kw) -> (group, K/group*kh*kw, C/group), once per request.
        grouped_weights_t = np.ascontiguousarray(
            weights.reshape(group, channels // group, -1).transpose(0, 2, 1))
        sizes = scratch_elements(attrs, [x.shape], [out.shape], algorithm)
        if scratch is None or scratch.size < sum(sizes):  # (the kernel indexes it unchecked)
            scratch = np.empty(sum(sizes), np.float32)
        return deconvolution_gemm_cpu, (
            x, grouped_weights_t, biases, int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
            int(pad_top), int(pad_left), int(kernel_h), int(kernel_w),
            _samples_per_gemm(x.shape, group_out_channels * kernel_h * kernel_w),
            scratch[:sizes[0]], scratch[sizes[0]:sizes[0] + sizes[1]], out,
        )
    if algorithm == "packed":
        channels, group_out_channels, kernel_h, kernel_w = weights.shape
        # (C, K/group, kh, kw) -> (K, kh*kw, C/group): each output channel's taps by its inputs.
        per_channel = weights.reshape(group, channels // group, group_out_channels, kernel_h * kernel_w)
        per_channel = per_channel.transpose(0, 2, 3, 1).reshape(group * group_out_channels, kernel_h * kernel_w, -1)
        return deconvolution_packed_cpu, (
            x, pack_weights(per_channel), biases, int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
            int(pad_top), int(pad_left), int(kernel_h), int(kernel_w), group, out,
        )
    return deconvolution_cpu, (
        x, weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), group,
        out,
    )


# GPU ------------------------------------------------------------------------------------------

import math  # noqa: E402

from numba import float32  # noqa: E402

from .launch import REGISTER_TILE, cuda, cuda_kernel, elementwise_launch  # noqa: E402


@cuda_kernel
def deconvolution_cuda(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                       tap_step_h, tap_step_w, pad_top, pad_left, group, out):
    """x: (max_batch, C, H, W); weights: (C, kh, kw, K/group rounded up to R), zero beyond K/group
    (rearranged by ``gpu_step``), R = REGISTER_TILE; biases: (K,); out: (max_batch, K, OH, OW);
    tap_step_h = sh / gcd(sh, dh) (likewise w). Reads x rows < n, writes out rows < n.

    The gather form, one thread per output pixel and R output channels of one group (consecutive
    threads on consecutive pixels). Kernel row i reaches output row oh only where
    (oh + ph0 - i*dh) is a multiple of sh, which holds for every tap_step_h-th i from the first
    such i: a thread visits only those kernel rows (and likewise columns), so a stride-s
    upsampling does 1/s^2 of the products a dense implicit GEMM over all taps would. Each input
    value it reads then feeds R products, from R consecutive weights.
    """
    height, width = x.shape[2], x.shape[3]
    group_in_channels = x.shape[1] // group
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_out_channels = out_channels // group
    kernel_h, kernel_w, padded_group_out = weights.shape[1], weights.shape[2], weights.shape[3]
    blocks_per_group = padded_group_out // REGISTER_TILE
    out_pixels = out_height * out_width
    per_sample = group * blocks_per_group * out_pixels
    totals = cuda.local.array(REGISTER_TILE, float32)
    for item in range(cuda.grid(1), n * per_sample, cuda.gridsize(1)):
        b = item // per_sample
        block = (item % per_sample) // out_pixels
        pixel = item % out_pixels
        oh = pixel // out_width
        ow = pixel % out_width
        g = block // blocks_per_group
        first_k = (block % blocks_per_group) * REGISTER_TILE  # within the group
        for q in range(REGISTER_TILE):
            totals[q] = 0.0
        first_i = kernel_h  # none, unless a kernel row reaches oh
        for i in range(min(tap_step_h, kernel_h)):
            if (oh + pad_top - i * dilation_h) % stride_h == 0:
                first_i = i
                break
        first_j = kernel_w
        for j in range(min(tap_step_w, kernel_w)):
            if (ow + pad_left - j * dilation_w) % stride_w == 0:
                first_j = j
                break
        for i in range(first_i, kernel_h, tap_step_h):
            scaled_ih = oh + pad_top - i * dilation_h
            if scaled_ih < 0:
                break  # and every later kernel row
            ih = scaled_ih // stride_h
            if ih >= height:
                continue
            for j in range(first_j, kernel_w, tap_step_w):
                scaled_iw = ow + pad_left - j * dilation_w
                if scaled_iw < 0:
                    break
                iw = scaled_iw // stride_w
                if iw >= width:
                    continue
                for c in range(g * group_in_channels, (g + 1) * group_in_channels):
                    value = x[b, c, ih, iw]
                    for q in range(REGISTER_TILE):
                        totals[q] += value * weights[c, i, j, first_k + q]
        for q in range(REGISTER_TILE):
            k = first_k + q
            if k < group_out_channels:
                channel = g * group_out_channels + k
                out[b, channel, oh, ow] = biases[channel] + totals[q]


def gpu_step(attrs, inputs, outputs):
    stride_h, stride_w = (int(s) for s in attrs["strides"])
    dilation_h, dilation_w = (int(d) for d in attrs["dilations"])
    pad_top, pad_left = attrs["pads_begin"]
    weights = np.asarray(attrs["weights"], dtype=np.float32)
    biases = np.ascontiguousarray(attrs["biases"], dtype=np.float32)
    channels, group_out_channels, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    # (C, K/group, kh, kw) -> (C, kh, kw, K/group padded to whole blocks of R): the R weights a
    # thread multiplies one input value by lie side by side, and no block needs a bounds test.
    padded = -(-group_out_channels // REGISTER_TILE) * REGISTER_TILE
    rearranged = np.zeros((channels, kernel_h, kernel_w, padded), np.float32)
    rearranged[..., :group_out_channels] = weights.transpose(0, 2, 3, 1)
    out = as_4d(outputs[0])
    per_sample = group * (padded // REGISTER_TILE) * out.shape[2] * out.shape[3]
    return elementwise_launch(deconvolution_cuda, per_sample), (
        as_4d(inputs[0]), rearranged, biases,
        stride_h, stride_w, dilation_h, dilation_w,
        stride_h // math.gcd(stride_h, dilation_h), stride_w // math.gcd(stride_w, dilation_w),
        int(pad_top), int(pad_left), group,
        out,
    )
