"""Convolution (grouped, strided, dilated, zero-padded): x (N, C, H, W) -> y (N, K, OH, OW),

    y[b, k, oh, ow] = biases[k] + sum_{c, i, j} x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
                                                * weights[k, c, i, j]

with weights (K, C/group, kh, kw), g = k // (K/group) the group of output channel k, and input
positions outside the image reading as zero. ``group == C`` is a depthwise convolution.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL, SCALAR_FUNCTION
from .epilogue import epilogue_span, epilogue_value, fused_epilogue
from .views import as_4d, shape_4d


@njit(**SCALAR_FUNCTION)
def columns_in_range(shift, stride, source_width, count):
    """(begin, end): the k in [0, count) whose column k*stride + shift lies in [0, source_width),
    begin <= end. For a convolution k is the output column and the column an input one; for a
    deconvolution the reverse. Looping over exactly these leaves no bounds test in the loop."""
    begin = min(count, max(0, -(shift // stride)))  # ceil(-shift / stride)
    return begin, max(begin, min(count, (source_width - 1 - shift) // stride + 1))


def samples_per_gemm(pixels, max_batch, target_columns):
    """How many samples' pixels share one GEMM so that it has about ``target_columns`` columns."""
    return max(1, min(max_batch, -(-target_columns // pixels)))


@njit(**PARALLEL_KERNEL)
def convolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                    pad_top, pad_left, group, residual, has_residual, activation, alpha, beta, out):
    """x: (max_batch, C, H, W); weights: (K, C/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the bottom and right pads;
    residual (shaped as out), has_residual, activation, alpha, beta: the fused ``epilogue``.
    Reads x rows < n, writes out rows < n; each parallel iteration owns one output line."""
    height, width = x.shape[2], x.shape[3]
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_in_channels, kernel_h, kernel_w = weights.shape[1], weights.shape[2], weights.shape[3]
    group_out_channels = out_channels // group
    for line in prange(n * out_channels * out_height):
        # Output channels vary fastest, so consecutive lines reuse the same input rows from cache.
        b = line // (out_height * out_channels)
        oh = (line // out_channels) % out_height
        k = line % out_channels
        out_row = out[b, k, oh]
        for ow in range(out_width):
            out_row[ow] = 0.0
        first_in_channel = (k // group_out_channels) * group_in_channels
        # Kernel rows i whose input row ih = oh*sh - ph0 + i*dh lies in [0, H); the others fall
        # on zero padding.
        top = oh * stride_h - pad_top
        i_begin = max(0, -(top // dilation_h))  # ceil(-top / dh)
        i_end = min(kernel_h, (height - 1 - top) // dilation_h + 1)
        for j in range(kernel_w):
            # Input column iw = ow*sw + shift; keep only the ow whose iw lies in [0, W), so the
            # innermost loop has no bounds test and vectorizes for stride 1. Hoisted above the
            # channel loop: the integer divisions would cost more than a short row.
            shift = j * dilation_w - pad_left
            ow_begin, ow_end = columns_in_range(shift, stride_w, width, out_width)
            for c in range(group_in_channels):
                x_plane = x[b, first_in_channel + c]
                for i in range(i_begin, i_end):
                    x_row = x_plane[top + i * dilation_h]
                    weight = weights[k, c, i, j]
                    for ow in range(ow_begin, ow_end):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        out_row[np.uintp(ow)] += weight * x_row[np.uintp(ow * stride_w + shift)]
        epilogue_span(out_row, out_row, biases[k], residual[b, k, oh], has_residual, activation, alpha, beta)


@njit(**PARALLEL_KERNEL)
def convolution_gemm_cpu(n, x, grouped_weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                         pad_top, pad_left, kernel_h, kernel_w, out_width, samples_per_gemm,
                         columns, product, residual, has_residual, activation, alpha, beta, out):
    """x: (max_batch, C, H, W); grouped_weights: (group, K/group, R), R = C/group*kh*kw;
    biases (K,); out: (max_batch, K, OH*OW); columns, product: 1-d scratch of at least
    R*s*OH*OW and K/group*s*OH*OW elements, s = samples_per_gemm; residual (shaped as out),
    has_residual, activation, alpha, beta: the fused ``epilogue``. Rows >= n are neither read
    nor written.

    Per group, s samples at a time: unfold them (im2col) side by side into columns (R, s*OH*OW),
    columns[(c*kh + i)*kw + j, t*OH*OW + oh*OW + ow] = x[b0 + t, g*C/group + c, oh*sh - ph0 + i*dh,
    ow*sw - pw0 + j*dw] (zero on padding); one BLAS GEMM (BLAS uses every core itself, so n = 1
    keeps them busy) into product (K/group, s*OH*OW), whose s blocks are written to the samples'
    output planes with the epilogue (bias, residual, activation). A lone sample's GEMM writes
    its output planes directly. Batching samples makes the small late-layer GEMMs (7x7 or 14x14
    outputs) wide enough for BLAS to run near its peak.

    Everything stays in this one function: a cached jitted caller of another cached
    ``parallel=True`` function crashed when Numba reloaded both from its disk cache."""
    group, group_out_channels, rows = grouped_weights.shape
    max_batch, channels, height, width = x.shape
    group_in_channels = channels // group
    pixels = out.shape[2]
    out_height = pixels // out_width
    kernel_area = kernel_h * kernel_w
    # Input rows indexed in full through one 2-d view: a view per line would take a reference on
    # the buffer, an atomic the threads contend for.
    x_rows = x.reshape((max_batch * channels * height, width))
    for first in range(0, n, samples_per_gemm):
        samples = min(samples_per_gemm, n - first)
        unfolded = columns[:rows * samples * pixels].reshape((rows, samples * pixels))
        for g in range(group):
            # One task per (row, sample): its own output columns, few integer divisions.
            for task in prange(rows * samples):
                row, t = task // samples, task % samples
                c, i, j = row // kernel_area, (row // kernel_w) % kernel_h, row % kernel_w
                shift = j * dilation_w - pad_left
                ow_begin, ow_end = columns_in_range(shift, stride_w, width, out_width)
                first_x_row = ((first + t) * channels + g * group_in_channels + c) * height
                for oh in range(out_height):
                    start = np.uintp(t * pixels + oh * out_width)
                    ih = oh * stride_h - pad_top + i * dilation_h
                    if ih < 0 or ih >= height:
                        for ow in range(out_width):
                            unfolded[row, start + np.uintp(ow)] = 0.0
                        continue
                    x_row = np.uintp(first_x_row + ih)
                    for ow in range(ow_begin):
                        unfolded[row, start + np.uintp(ow)] = 0.0
                    for ow in range(ow_begin, ow_end):
                        unfolded[row, start + np.uintp(ow)] = x_rows[x_row, np.uintp(ow * stride_w + shift)]
                    for ow in range(ow_end, out_width):
                        unfolded[row, start + np.uintp(ow)] = 0.0
            first_channel = g * group_out_channels
            if samples == 1:
                planes = out[first, first_channel:first_channel + group_out_channels]
                np.dot(grouped_weights[g], unfolded, planes)
                for k in prange(group_out_channels):
                    epilogue_span(planes[k], planes[k], biases[first_channel + k], residual[first, first_channel + k],
                                  has_residual, activation, alpha, beta)
            else:
                products = product[:group_out_channels * samples * pixels].reshape(
                    (group_out_channels, samples * pixels))
                np.dot(grouped_weights[g], unfolded, products)
                for task in prange(samples * group_out_channels):
                    t, k = task // group_out_channels, task % group_out_channels
                    epilogue_span(products[k, t * pixels:(t + 1) * pixels], out[first + t, first_channel + k],
                                  biases[first_channel + k], residual[first + t, first_channel + k],
                                  has_residual, activation, alpha, beta)


@njit(**PARALLEL_KERNEL)
def convolution_pointwise_cpu(n, x, weights, biases, samples_per_gemm, columns, product,
                              residual, has_residual, activation, alpha, beta, out):
    """1x1 convolution, stride 1, no padding, one group: x: (max_batch, C, H*W); weights (K, C);
    out: (max_batch, K, H*W); columns, product: 1-d scratch of at least C*s*H*W and K*s*H*W
    elements, s = samples_per_gemm. As ``convolution_gemm_cpu`` with no unfolding: a lone sample
    is one GEMM on its own planes; s samples are copied side by side into columns first."""
    channels, pixels = x.shape[1], x.shape[2]
    out_channels = out.shape[1]
    for first in range(0, n, samples_per_gemm):
        samples = min(samples_per_gemm, n - first)
        if samples == 1:
            planes = out[first]
            np.dot(weights, x[first], planes)
            for k in prange(out_channels):
                epilogue_span(planes[k], planes[k], biases[k], residual[first, k], has_residual, activation, alpha, beta)
            continue
        gathered = columns[:channels * samples * pixels].reshape((channels, samples * pixels))
        for task in prange(channels * samples):
            c, t = task // samples, task % samples
            gathered[c, t * pixels:(t + 1) * pixels] = x[first + t, c]
        products = product[:out_channels * samples * pixels].reshape((out_channels, samples * pixels))
        np.dot(weights, gathered, products)
        for task in prange(samples * out_channels):
            t, k = task // out_channels, task % out_channels
            epilogue_span(products[k, t * pixels:(t + 1) * pixels], out[first + t, k], biases[k],
                          residual[first + t, k], has_residual, activation, alpha, beta)


# Below these sizes a GEMM call costs more than it saves (measured on depthwise and tiny groups).
GEMM_MIN_REDUCTION = 16
GEMM_MIN_GROUP_OUTPUTS = 8

#: Columns one GEMM should have: outputs smaller than this (7x7, 14x14, ...) are batched over
#: samples up to it; 32x32 and larger run a sample per GEMM. Measured between 512 and 8192 on
#: GoogLeNet- and ResNet-sized layers: flat within noise from 1024 up, so the smallest scratch.
GEMM_TARGET_COLUMNS = 1024


def choose_algorithm(attrs, input_shape) -> str:
    """'pointwise' for 1x1/stride 1/unpadded/one group, 'gemm' where each group's matrices are big
    enough for BLAS, else 'direct' (depthwise and small groups)."""
    k, c_per_group, kh, kw = attrs["weights"].shape
    group = attrs["group"]
    if (kh, kw) == (1, 1) and group == 1 and attrs["strides"] == (1, 1) and not any(attrs["pads_begin"] + attrs["pads_end"]):
        return "pointwise"
    if c_per_group * kh * kw >= GEMM_MIN_REDUCTION and k // group >= GEMM_MIN_GROUP_OUTPUTS:
        return "gemm"
    return "direct"


def _gemm_shape(attrs, input_shape, output_shape):
    """(rows R of the unfolded input, samples per GEMM, output pixels) of a GEMM algorithm."""
    k, c_per_group, kernel_h, kernel_w = attrs["weights"].shape
    pixels = int(np.prod(output_shape[2:], dtype=np.int64))
    samples = samples_per_gemm(pixels, output_shape[0], GEMM_TARGET_COLUMNS)
    return c_per_group * kernel_h * kernel_w, samples, pixels


def scratch_elements(attrs, input_shapes, output_shapes, algorithm=None) -> tuple[int, int]:
    """Float32 elements of the two scratch areas (columns, product) the kernel needs: shared by
    all the layers of a request, which run one after the other."""
    x_shape, out_shape = shape_4d(input_shapes[0]), shape_4d(output_shapes[0])
    algorithm = algorithm or choose_algorithm(attrs, x_shape)
    if algorithm == "direct":
        return 0, 0
    rows, samples, pixels = _gemm_shape(attrs, x_shape, out_shape)
    if samples == 1:  # a lone sample unfolds (not pointwise) and writes its planes directly
        return (0 if algorithm == "pointwise" else rows * pixels), 0
    group_out_channels = attrs["weights"].shape[0] // attrs["group"]
    return rows * samples * pixels, group_out_channels * samples * pixels


def cpu_step(attrs, inputs, outputs, scratch=None, algorithm=None):
    """Bind to the algorithm ``choose_algorithm`` picks (tests may force one). ``scratch``: a 1-d
    float32 array of at least sum(``scratch_elements``); where it is missing or shorter, one is
    allocated here."""
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    algorithm = algorithm or choose_algorithm(attrs, x.shape)
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
    k, c_per_group, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    max_batch, _, out_height, out_width = out.shape
    if algorithm in ("pointwise", "gemm"):
        _, samples, _ = _gemm_shape(attrs, x.shape, out.shape)
        sizes = scratch_elements(attrs, [x.shape], [out.shape], algorithm)
        if scratch is None or scratch.size < sum(sizes):  # (the kernel indexes it unchecked)
            scratch = np.empty(sum(sizes), np.float32)
        columns, product = scratch[:sizes[0]], scratch[sizes[0]:sizes[0] + sizes[1]]
    if algorithm == "pointwise":
        return convolution_pointwise_cpu, (
            x.reshape(max_batch, x.shape[1], -1), np.ascontiguousarray(weights.reshape(k, -1)), biases,
            samples, columns, product, residual.reshape(max_batch, k, -1), *epilogue,
            out.reshape(max_batch, k, -1),
        )
    if algorithm == "gemm":
        return convolution_gemm_cpu, (
            x, np.ascontiguousarray(weights.reshape(group, k // group, -1)), biases,
            int(stride_h), int(stride_w), int(dilation_h), int(dilation_w), int(pad_top), int(pad_left),
            int(kernel_h), int(kernel_w), int(out_width), samples, columns, product,
            residual.reshape(max_batch, k, out_height * out_width), *epilogue,
            out.reshape(max_batch, k, out_height * out_width),
        )
    return convolution_cpu, (
        x, weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), group, residual, *epilogue,
        out,
    )


# GPU ------------------------------------------------------------------------------------------

from numba import float32  # noqa: E402

from .launch import cuda, cuda_kernel, tiled_launch  # noqa: E402


@cuda_kernel
def convolution_cuda(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                     pad_top, pad_left, kernel_h, kernel_w, group, residual, has_residual, activation,
                     alpha, beta, out):
    """x: (max_batch, C, H, W); weights: (K, C/group * kh * kw), each output channel's filter
    flattened in (c, i, j) order; biases: (K,); out: (max_batch, K, OH, OW); residual (shaped as
    out), has_residual, activation, alpha, beta: the fused ``epilogue``. Reads x rows < n, writes out rows < n.

    An implicit GEMM, tiled as numba-cuda's ``fast_matmul``: out[k, pixel] = sum_r weights[k, r]
    * patch[r, pixel], pixels running over the n samples' OH*OW outputs and r over a group's
    (c, i, j). A block of T x T threads computes T output channels of one group (ty) by T pixels
    (tx), walking r T at a time: each thread loads one weight (along r: consecutive addresses)
    and one patch element (along the pixels: neighbouring input columns; zero on padding) into
    shared memory, then takes T products from there.
    """
    tile = cuda.blockDim.x
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    height, width = x.shape[2], x.shape[3]
    group_in_channels = x.shape[1] // group
    out_channels, out_height, out_width = out.shape[1], out.shape[2], out.shape[3]
    group_out_channels = out_channels // group
    reduction = weights.shape[1]
    kernel_area = kernel_h * kernel_w
    out_pixels = out_height * out_width
    shared = cuda.shared.array(0, float32)
    weights_tile = 0           # shared[ty * tile + r]: weights[first_channel + ty, r0 + r]
    patch_tile = tile * tile   # shared[patch_tile + r * tile + tx]: patch[r0 + r, first_pixel + tx]
    pixel_tiles = (n * out_pixels + tile - 1) // tile
    channel_tiles = (group_out_channels + tile - 1) // tile  # per group
    column_tiles = group * channel_tiles
    for t in range(cuda.blockIdx.x, pixel_tiles * column_tiles, cuda.gridDim.x):
        column_tile = t % column_tiles
        g = column_tile // channel_tiles
        first_channel = g * group_out_channels + (column_tile % channel_tiles) * tile
        group_end = (g + 1) * group_out_channels
        first_input_channel = g * group_in_channels
        # This thread's pixel: the column it loads and the output it accumulates.
        pixel = (t // column_tiles) * tile + tx
        in_batch = pixel < n * out_pixels
        b = pixel // out_pixels
        oh = (pixel % out_pixels) // out_width
        ow = pixel % out_width
        top = oh * stride_h - pad_top
        left = ow * stride_w - pad_left
        total = np.float32(0.0)
        for r0 in range(0, reduction, tile):
            channel = first_channel + ty
            value = np.float32(0.0)
            if channel < group_end and r0 + tx < reduction:
                value = weights[channel, r0 + tx]
            shared[weights_tile + ty * tile + tx] = value
            r = r0 + ty
            value = np.float32(0.0)
            if in_batch and r < reduction:
                c = r // kernel_area
                i = (r % kernel_area) // kernel_w
                j = r % kernel_w
                ih = top + i * dilation_h
                iw = left + j * dilation_w
                if 0 <= ih < height and 0 <= iw < width:
                    value = x[b, first_input_channel + c, ih, iw]
            shared[patch_tile + ty * tile + tx] = value
            cuda.syncthreads()
            for rr in range(tile):
                total += shared[weights_tile + ty * tile + rr] * shared[patch_tile + rr * tile + tx]
            cuda.syncthreads()
        channel = first_channel + ty
        if in_batch and channel < group_end:
            value = biases[channel] + total
            if has_residual:
                value += residual[b, channel, oh, ow]
            out[b, channel, oh, ow] = epilogue_value(value, activation, alpha, beta)


def gpu_step(attrs, inputs, outputs):
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    weights = np.ascontiguousarray(attrs["weights"], dtype=np.float32)
    biases = np.ascontiguousarray(attrs["biases"], dtype=np.float32)
    out_channels, _, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    out = as_4d(outputs[0])
    kernel = tiled_launch(convolution_cuda, out.shape[2] * out.shape[3], out_channels // group, group)
    return kernel, (
        as_4d(inputs[0]), weights.reshape(out_channels, -1), biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), int(kernel_h), int(kernel_w), group,
        as_4d(inputs[1]) if len(inputs) > 1 else out, *fused_epilogue(attrs, len(inputs) > 1),
        out,
    )
