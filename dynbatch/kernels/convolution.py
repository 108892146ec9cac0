"""Convolution (grouped, strided, dilated, zero-padded): x (N, C, H, W) -> y (N, K, OH, OW),

    y[b, k, oh, ow] = biases[k] + sum_{c, i, j} x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
                                                * weights[k, c, i, j]

with weights (K, C/group, kh, kw), g = k // (K/group) the group of output channel k, and input
positions outside the image reading as zero. ``group == C`` is a depthwise convolution.
"""
import numpy as np
from numba import njit, prange

from ..config import PARALLEL_KERNEL
from .views import as_4d


@njit(**PARALLEL_KERNEL)
def convolution_cpu(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                    pad_top, pad_left, group, out):
    """x: (max_batch, C, H, W); weights: (K, C/group, kh, kw); biases: (K,);
    out: (max_batch, K, OH, OW), whose OH, OW already account for the bottom and right pads.
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
        bias = biases[k]
        for ow in range(out_width):
            out_row[ow] = bias
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
            ow_begin = max(0, -(shift // stride_w))  # ceil(-shift / sw)
            ow_end = min(out_width, (width - 1 - shift) // stride_w + 1)
            for c in range(group_in_channels):
                x_plane = x[b, first_in_channel + c]
                for i in range(i_begin, i_end):
                    x_row = x_plane[top + i * dilation_h]
                    weight = weights[k, c, i, j]
                    for ow in range(ow_begin, ow_end):
                        # Unsigned indices (never negative here) spare Numba's negative-index
                        # wraparound, which would keep LLVM from vectorizing.
                        out_row[np.uintp(ow)] += weight * x_row[np.uintp(ow * stride_w + shift)]


@njit(**PARALLEL_KERNEL)
def convolution_gemm_cpu(n, x, grouped_weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                         pad_top, pad_left, kernel_h, kernel_w, out_width, columns, out):
    """x: (max_batch, C, H, W); grouped_weights: (group, K/group, C/group*kh*kw); biases (K,);
    columns: (C/group*kh*kw, OH*OW) scratch; out: (max_batch, group, K/group, OH*OW).

    Per sample and group: unfold (im2col) into columns, in parallel over (row, oh), with
    columns[(c*kh + i)*kw + j, oh*OW + ow] = x[b, g*C/group + c, oh*sh - ph0 + i*dh, ow*sw - pw0 + j*dw]
    (zero on padding); then one GEMM through BLAS, which uses every core itself, so n = 1 keeps
    them busy. Rows >= n are neither read nor written.

    Everything stays in this one function: a cached jitted caller of another cached
    ``parallel=True`` function crashed when Numba reloaded both from its disk cache."""
    group = grouped_weights.shape[0]
    group_in_channels = x.shape[1] // group
    height, width = x.shape[2], x.shape[3]
    rows = columns.shape[0]
    out_height = columns.shape[1] // out_width
    out_channels = biases.shape[0]
    for b in range(n):
        for g in range(group):
            first_channel = g * group_in_channels
            for task in prange(rows * out_height):
                row, oh = task // out_height, task % out_height
                c, i, j = row // (kernel_h * kernel_w), (row // kernel_w) % kernel_h, row % kernel_w
                line = columns[row, oh * out_width:(oh + 1) * out_width]
                ih = oh * stride_h - pad_top + i * dilation_h
                if ih < 0 or ih >= height:
                    line[:] = 0.0
                    continue
                source = x[b, first_channel + c, ih]
                shift = j * dilation_w - pad_left
                ow_begin = min(out_width, max(0, -(shift // stride_w)))  # ceil(-shift / sw)
                ow_end = max(ow_begin, min(out_width, (width - 1 - shift) // stride_w + 1))
                line[:ow_begin] = 0.0
                for ow in range(ow_begin, ow_end):
                    line[np.uintp(ow)] = source[np.uintp(ow * stride_w + shift)]
                line[ow_end:] = 0.0
            np.dot(grouped_weights[g], columns, out[b, g])
        out_sample = out[b].reshape(out_channels, -1)
        for k in prange(out_channels):
            out_sample[k] += biases[k]


@njit(**PARALLEL_KERNEL)
def convolution_pointwise_cpu(n, x, weights, biases, out):
    """1x1 convolution, stride 1, no padding, one group: a plain GEMM per sample, no unfolding.
    x: (max_batch, C, H*W); weights (K, C); out: (max_batch, K, H*W)."""
    for b in range(n):
        np.dot(weights, x[b], out[b])
        out_sample = out[b]
        for k in prange(out_sample.shape[0]):
            out_sample[k] += biases[k]


# Below these sizes a GEMM call costs more than it saves (measured on depthwise and tiny groups).
GEMM_MIN_REDUCTION = 16
GEMM_MIN_GROUP_OUTPUTS = 8


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


def cpu_step(attrs, inputs, outputs, algorithm=None):
    """Bind to the algorithm ``choose_algorithm`` picks (tests may force one)."""
    x, out = as_4d(inputs[0]), as_4d(outputs[0])
    algorithm = algorithm or choose_algorithm(attrs, x.shape)
    stride_h, stride_w = attrs["strides"]
    dilation_h, dilation_w = attrs["dilations"]
    pad_top, pad_left = attrs["pads_begin"]
    # Writeable C-contiguous float32, so that every model gives the kernel the same array types
    # (a read-only weight array would be a second compiled signature).
    weights = np.require(attrs["weights"], np.float32, ["C", "W"])
    biases = np.require(attrs["biases"], np.float32, ["C", "W"])
    k, c_per_group, kernel_h, kernel_w = weights.shape
    group = int(attrs["group"])
    max_batch, _, out_height, out_width = out.shape
    if algorithm == "pointwise":
        return convolution_pointwise_cpu, (
            x.reshape(max_batch, x.shape[1], -1), np.ascontiguousarray(weights.reshape(k, -1)), biases,
            out.reshape(max_batch, k, -1),
        )
    if algorithm == "gemm":
        # The request's own scratch, allocated once here (bind time), never on the inference path.
        columns = np.empty((c_per_group * kernel_h * kernel_w, out_height * out_width), np.float32)
        return convolution_gemm_cpu, (
            x, np.ascontiguousarray(weights.reshape(group, k // group, -1)), biases,
            int(stride_h), int(stride_w), int(dilation_h), int(dilation_w), int(pad_top), int(pad_left),
            int(kernel_h), int(kernel_w), int(out_width), columns,
            out.reshape(max_batch, group, k // group, out_height * out_width),
        )
    return convolution_cpu, (
        x, weights, biases,
        int(stride_h), int(stride_w), int(dilation_h), int(dilation_w),
        int(pad_top), int(pad_left), group,
        out,
    )


# GPU ------------------------------------------------------------------------------------------

from numba import float32  # noqa: E402

from .launch import cuda, cuda_kernel, tiled_launch  # noqa: E402


@cuda_kernel
def convolution_cuda(n, x, weights, biases, stride_h, stride_w, dilation_h, dilation_w,
                     pad_top, pad_left, kernel_h, kernel_w, group, out):
    """x: (max_batch, C, H, W); weights: (K, C/group * kh * kw), each output channel's filter
    flattened in (c, i, j) order; biases: (K,); out: (max_batch, K, OH, OW). Reads x rows < n,
    writes out rows < n.

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
            out[b, channel, oh, ow] = biases[channel] + total


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
        out,
    )
