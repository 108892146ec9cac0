"""The output-channel vectors of ``convolution.convolution_stem_cpu``: a network's first layer on
the image (1 to 4 channels in; 3x3 to 11x11 kernels at strides 1 to 4 in the networks here), and
strided or grouped layers with a window past it (ResNet's 3x3 stride-2 layers, AlexNet's 5x5 and
3x3 in two groups, any channels in), with 8 output channels side by side in each vector's lanes
and the input's pixels broadcast.

A strided layer would pack, as a GEMM, each patch's strided taps; here its windows are read where
they lie. A first layer has a short reduction (27 multiply-adds per output for 3 x 3 x 3) and many
output pixels. As a GEMM (``convolution_gemm_cpu``), each 6 x 16 block of its product is a call
of 27 steps whose fixed costs (its stores, the epilogue) weigh as much as the steps, after a
packing of B that the few output channels then use a handful of times: MobileNet's 3 -> 32 3x3 stride-2
layer ran at 65 GF/s. Here each output pixel's channels are vectors (``stem_pixels``: 2 vectors
of 8 channels by 6 pixels of accumulators, each tap 2 loads of weights and 6 broadcasts of input;
with AVX-512, 32 channels as 2 vectors of 16 by 6 pixels, and ``stem_pixels_pair`` 64 channels
as 4), read where they lie in a zero-padded
copy of the input whatever the stride; the products are turned back into the channels' rows by
``depthwise.deinterleave_rows``, through the epilogue.
This is how ONNX Runtime computes a first layer (its NCHW-input, NCHWc-output kernel). A max
pooling after the layer pools those 8-channel pixels before they are turned back (``max_run``,
across each row of the band, then down), so that only the pooled outputs are.

Written in LLVM IR as ``gemm``'s micro-kernel is. Numba caches the kernels on disk keyed on their
own source file: after editing this file, delete ``dynbatch/kernels/__pycache__``.
"""
import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .depthwise import LANES, pack_channel_blocks
from .gemm import WIDE_VECTORS, _float_pointer, _splat, _vector_at
from .pooling import _nan_max

#: Output-channel octets (of LANES channels) one ``stem_pixels`` call computes, as vectors of 16
#: channels (on AVX2 each two registers): 2 on AVX2, where 12 accumulators (2 x 6 pixels), 2 of
#: weights and a broadcast take 15 of its 16 registers; 4 with AVX-512 (2 x 6 accumulators of its
#: 32 registers, one 16-wide each): 267 GFLOP/s a core on ResNet's 7x7 taps, against 169 with
#: one vector by 12 pixels, whose 12 windows' pointers LLVM kept on the stack.
STEM_VECTORS = 4 if WIDE_VECTORS else 2
#: Output channels one call computes.
STEM_CHANNELS = STEM_VECTORS * LANES
#: A first layer takes the stem where its output channels are a multiple of this, on either CPU
#: (so that the plan, with its max pooling fused, is the same on both): with AVX-512 a layer of
#: 16 or 48 channels computes its last block of 32 with 16 zero channels.
STEM_CHANNEL_MULTIPLE = 16
#: Output pixels one call computes.
STEM_PIXELS = 6
#: Channels of one vector of ``stem_pixels``: two AVX2 registers, one AVX-512 register.
_CHANNEL_VECTOR = 16


def _stem_pixels_codegen(blocks: int):
    """The code of ``stem_pixels`` (blocks 1) or ``stem_pixels_pair`` (2)."""

    def codegen(context, builder, signature, args):
        (source, source_offset, origins, origins_offset, tap_offsets, taps, weights, weights_offset, biases,
         biases_offset, sums, sums_offset, octet_stride) = args[:13]
        block_steps = args[13:]  # (the second block's offsets from the first's: weights, biases, sums)
        index = taps.type
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        origins_ptr = builder.gep(context.make_array(signature.args[2])(context, builder, origins).data,
                                  [origins_offset])
        taps_ptr = context.make_array(signature.args[4])(context, builder, tap_offsets).data
        weights_ptrs = [_float_pointer(context, builder, signature.args[6], weights, weights_offset)]
        biases_ptrs = [_float_pointer(context, builder, signature.args[8], biases, biases_offset)]
        sums_ptrs = [_float_pointer(context, builder, signature.args[10], sums, sums_offset)]
        if blocks == 2:
            weights_ptrs.append(builder.gep(weights_ptrs[0], [block_steps[0]]))
            biases_ptrs.append(builder.gep(biases_ptrs[0], [block_steps[1]]))
            sums_ptrs.append(builder.gep(sums_ptrs[0], [block_steps[2]]))
        channels = ir.VectorType(ir.FloatType(), _CHANNEL_VECTOR)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(channels, [channels] * 3),
                                             f"llvm.fma.v{_CHANNEL_VECTOR}f32")
        vectors = STEM_CHANNELS // _CHANNEL_VECTOR
        windows = [builder.gep(source_ptr, [builder.load(builder.gep(origins_ptr, [ir.Constant(index, p)]))])
                   for p in range(STEM_PIXELS)]
        accumulators = []  # [block][vector][pixel]
        for biases_ptr in biases_ptrs:
            accumulators.append([])
            for v in range(vectors):
                bias = builder.load(_vector_at(builder, biases_ptr, _CHANNEL_VECTOR * v, _CHANNEL_VECTOR), align=4)
                accumulators[-1].append([cgutils.alloca_once_value(builder, bias) for _ in range(STEM_PIXELS)])
        with cgutils.for_range(builder, taps) as loop:
            offset = builder.load(builder.gep(taps_ptr, [loop.index]))
            weight_vectors = []
            for weights_ptr in weights_ptrs:
                weights_row = builder.gep(weights_ptr, [builder.mul(loop.index, ir.Constant(index, STEM_CHANNELS))])
                weight_vectors.append([builder.load(_vector_at(builder, weights_row, _CHANNEL_VECTOR * v,
                                                               _CHANNEL_VECTOR), align=4) for v in range(vectors)])
            for p, window in enumerate(windows):
                value = _splat(builder, builder.load(builder.gep(window, [offset])), _CHANNEL_VECTOR)
                for block_vectors, block_accumulators in zip(weight_vectors, accumulators):
                    for v, vector in enumerate(block_vectors):
                        total = builder.call(fma, [vector, value, builder.load(block_accumulators[v][p])])
                        builder.store(total, block_accumulators[v][p])
        # Each octet of a pixel's channels to its own octet's row.
        halves = [ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(LANES * h, LANES * (h + 1))))
                  for h in range(_CHANNEL_VECTOR // LANES)]
        for sums_ptr, block_accumulators in zip(sums_ptrs, accumulators):
            for v in range(vectors):
                for p in range(STEM_PIXELS):
                    total = builder.load(block_accumulators[v][p])
                    for h, lanes in enumerate(halves):
                        octet = len(halves) * v + h
                        row = builder.gep(sums_ptr, [builder.mul(octet_stride, ir.Constant(index, octet))])
                        builder.store(builder.shuffle_vector(total, total, lanes),
                                      _vector_at(builder, row, LANES * p), align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def stem_pixels(typingctx, source, source_offset, origins, origins_offset, tap_offsets, taps, weights,
                weights_offset, biases, biases_offset, sums, sums_offset, octet_stride):
    """stem_pixels(source, source_offset, origins, origins_offset, tap_offsets, taps, weights,
    weights_offset, biases, biases_offset, sums, sums_offset, octet_stride): for each of
    STEM_PIXELS output pixels p (its window at source_offset + origins[origins_offset + p]) and each
    of STEM_VECTORS octets v of output channels, the 8 floats sums[sums_offset + v*octet_stride +
    8*p + lane] = biases[biases_offset + 8*v + lane] + sum over t < taps of weights[weights_offset
    + (STEM_VECTORS*t + v)*8 + lane] * source[source_offset + origins[origins_offset + p] +
    tap_offsets[t]]. No bounds checks."""
    sig = types.void(source, types.intp, origins, types.intp, tap_offsets, types.intp, weights, types.intp, biases,
                     types.intp, sums, types.intp, types.intp)
    return sig, _stem_pixels_codegen(1)


@intrinsic
def stem_pixels_pair(typingctx, source, source_offset, origins, origins_offset, tap_offsets, taps, weights,
                     weights_offset, biases, biases_offset, sums, sums_offset, octet_stride, weights_step,
                     biases_step, sums_step):
    """``stem_pixels`` for two blocks of STEM_CHANNELS output channels at once, the second's weights,
    biases and sums weights_step, biases_step and sums_step floats after the first's: with
    AVX-512, 64 channels by 6 pixels, 24 accumulators, each tap 4 loads of weights and 6
    broadcasts for 24 multiply-adds (one block: 2 and 6 for 12)."""
    sig = types.void(source, types.intp, origins, types.intp, tap_offsets, types.intp, weights, types.intp, biases,
                     types.intp, sums, types.intp, types.intp, types.intp, types.intp, types.intp)
    return sig, _stem_pixels_codegen(2)


#: The runs ``max_run`` unrolls (3 and 2 wide or high windows, the common ones); longer runs take
#: its loop.
UNROLLED_RUN = 3


@intrinsic
def max_run(typingctx, source, source_offset, step, count, destination, destination_offset):
    """max_run(source, source_offset, step, count, destination, destination_offset): the vector
    destination[destination_offset + lane] = the max over i < ``count`` (1 or more) of
    source[source_offset + i*step + lane], NaN where any is (as ``pooling.pooled_pair``): one
    side of a max pooling window of 8-channel pixels, ``step`` floats apart (8: along a row).
    No bounds checks.

    Runs up to UNROLLED_RUN take straight-line code: UNROLLED_RUN loads, those past the run
    reading its last vector again (which leaves the max as it is), so that no branch depends on
    the run's length."""
    sig = types.void(source, types.intp, types.intp, types.intp, destination, types.intp)

    def codegen(context, builder, signature, args):
        source, source_offset, step, count, destination, destination_offset = args
        index = count.type
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[4], destination, destination_offset)
        with builder.if_else(builder.icmp_signed("<=", count, ir.Constant(index, UNROLLED_RUN))) as (unrolled, looped):
            with unrolled:
                pooled = None
                for i in range(UNROLLED_RUN):
                    clamped = builder.select(builder.icmp_signed("<", ir.Constant(index, i), count),
                                             ir.Constant(index, i), builder.sub(count, ir.Constant(index, 1)))
                    value = builder.load(_vector_at(builder, source_ptr, builder.mul(clamped, step)), align=4)
                    pooled = value if pooled is None else _nan_max(builder, pooled, value)
                builder.store(pooled, _vector_at(builder, destination_ptr, 0), align=4)
            with looped:
                pooled = cgutils.alloca_once_value(builder, builder.load(_vector_at(builder, source_ptr, 0), align=4))
                with cgutils.for_range(builder, count) as loop:
                    value = builder.load(_vector_at(builder, source_ptr, builder.mul(loop.index, step)), align=4)
                    builder.store(_nan_max(builder, builder.load(pooled), value), pooled)
                builder.store(builder.load(pooled), _vector_at(builder, destination_ptr, 0), align=4)
        return context.get_dummy_value()

    return sig, codegen


def pack_stem(weights: np.ndarray, biases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, C, kh, kw) weights and (K,) biases -> (packed weights, packed biases) of
    ``convolution_stem_cpu``: for each STEM_CHANNELS output channels b (the last padded with zero
    channels), weights[(b*taps + t)*STEM_CHANNELS + 8*v + lane] = tap t = (c, i, j) of channel
    b*STEM_CHANNELS + 8*v + lane, and biases[b*STEM_CHANNELS + 8*v + lane] its bias."""
    return pack_channel_blocks(weights, biases, STEM_CHANNELS)
