"""The 8-channel vectors of ``convolution.convolution_depthwise_cpu``: a depthwise 3x3 or 5x5 layer
with 8 channels side by side in each vector's lanes.

A depthwise layer convolves each channel with its own kernel (3x3 in MobileNet v1 and v2, 5x5 too
in MobileNet v3 and EfficientNet). Along a row of a small plane (MobileNet's 14x14 and 7x7), a
vector of 8 pixels leaves lanes over at every row's end and the padding to handle at both; the
kernel of ``convolution_cpu`` spends more on that than on its 9 multiply-adds per output. With 8
channels in the lanes instead (the layout ONNX Runtime and OpenVINO keep for the whole network,
NCHWc), each output pixel is one vector and 9 multiply-adds of it, whatever the plane's size or
stride, and the padding is a border of zero pixels.

Here the layout lasts one layer: ``interleave_rows`` turns 8 channels' rows (8 pixels each) into 8
pixel vectors by an 8 x 8 transpose in registers (``gemm._transpose_8x8``), ``depthwise_row``
(``depthwise_row_5`` for 5x5) computes a row of output pixels, and ``deinterleave_rows`` turns
them back into the channels' rows through the epilogue. Written in LLVM IR as ``gemm``'s
micro-kernel is: Numba would not vectorise the transposes, nor keep the nine weights in
registers. Numba caches the kernels on disk keyed on their own source file: after editing this
file, delete ``dynbatch/kernels/__pycache__``.
"""
import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .gemm import (_VECTOR, _ZERO, _activate, _branch, _branch_on_activation, _float_pointer, _load_lanes,
                   _store_lanes, _transpose_8x8, _vector_at)

#: Channels per vector.
LANES = 8
#: The kernel sides there is a ``depthwise_row`` for.
SIDES = (3, 5)


def _channel_rows(builder, pointer, plane, channels, load):
    """load(row pointer) for each of the 8 channels' rows a ``plane`` apart from ``pointer``,
    zeros for those past ``channels`` (the last 8 of a channel count that 8 does not divide), which
    are not read."""
    rows = []
    for c in range(LANES):
        row = cgutils.alloca_once_value(builder, _ZERO)
        with builder.if_then(builder.icmp_signed("<", ir.Constant(channels.type, c), channels)):
            builder.store(load(builder.gep(pointer, [builder.mul(plane, ir.Constant(plane.type, c))])), row)
        rows.append(builder.load(row))
    return rows


@intrinsic
def interleave_rows(typingctx, source, source_offset, plane, channels, columns, destination, destination_offset):
    """interleave_rows(source, source_offset, plane, channels, columns, destination,
    destination_offset): destination[destination_offset + 8*i + c] = source[source_offset +
    c*plane + i] for i < ``columns`` (1 to 8) and c < 8, 0 for c >= ``channels``: ``columns``
    pixels of one row of 8 channels, each pixel's 8 channels one vector. Reads nothing past the
    columns (a masked load where there are fewer than 8) or the channels; writes only those
    ``columns`` vectors. No bounds checks."""
    sig = types.void(source, types.intp, types.intp, types.intp, types.intp, destination, types.intp)

    def codegen(context, builder, signature, args):
        source, source_offset, plane, channels, columns, destination, destination_offset = args
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[5], destination, destination_offset)
        full = builder.icmp_signed("==", columns, ir.Constant(columns.type, LANES))

        def load(row):
            with builder.if_else(full) as (whole, part):
                with whole:
                    whole_block, whole_value = builder.block, builder.load(_vector_at(builder, row, 0), align=4)
                with part:
                    part_block, part_value = builder.block, _load_lanes(builder, row, columns, 0.0)
            value = builder.phi(_VECTOR)
            value.add_incoming(whole_value, whole_block)
            value.add_incoming(part_value, part_block)
            return value

        rows = _channel_rows(builder, source_ptr, plane, channels, load)
        for i, pixel in enumerate(_transpose_8x8(builder, rows)):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(columns.type, i), columns)):
                builder.store(pixel, _vector_at(builder, destination_ptr, LANES * i), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _depthwise_row(side: int):
    """The intrinsic computing one output row of a ``side`` x ``side`` depthwise kernel, see
    ``depthwise_row``."""

    @intrinsic
    def depthwise_row(typingctx, source, source_offset, pitch, stride, weights, weights_offset, biases,
                      biases_offset, destination, destination_offset, count):
        sig = types.void(source, types.intp, types.intp, types.intp, weights, types.intp, biases, types.intp,
                         destination, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            (source, source_offset, pitch, stride, weights, weights_offset, biases, biases_offset, destination,
             destination_offset, count) = args
            index = count.type
            source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
            weights_ptr = _float_pointer(context, builder, signature.args[4], weights, weights_offset)
            bias = builder.load(_vector_at(builder, _float_pointer(context, builder, signature.args[6], biases,
                                                                   biases_offset), 0), align=4)
            destination_ptr = _float_pointer(context, builder, signature.args[8], destination, destination_offset)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                 "llvm.fma.v8f32")
            taps = [(builder.load(_vector_at(builder, weights_ptr, LANES * (side * i + j)), align=4),
                     builder.mul(builder.add(builder.mul(pitch, ir.Constant(index, i)), ir.Constant(index, j)),
                                 ir.Constant(index, LANES)))
                    for i in range(side) for j in range(side)]
            step = builder.mul(stride, ir.Constant(index, LANES))
            with cgutils.for_range(builder, count) as loop:
                window = builder.gep(source_ptr, [builder.mul(loop.index, step)])
                # A sum per kernel row, added at the end: chains of ``side`` multiply-adds, not one
                # of side * side, for the next pixels' sums to overlap.
                row_sums = []
                for i in range(side):
                    total = bias if i == 0 else None
                    for weight, offset in taps[side * i:side * i + side]:
                        value = builder.load(_vector_at(builder, window, offset), align=4)
                        total = (builder.fmul(weight, value) if total is None
                                 else builder.call(fma, [weight, value, total]))
                    row_sums.append(total)
                total = row_sums[0]
                for row_sum in row_sums[1:]:
                    total = builder.fadd(total, row_sum)
                builder.store(total, _vector_at(builder, destination_ptr,
                                                builder.mul(loop.index, ir.Constant(index, LANES))), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return depthwise_row


#: depthwise_row(source, source_offset, pitch, stride, weights, weights_offset, biases,
#: biases_offset, destination, destination_offset, count): for each of ``count`` output pixels o,
#: the vector destination[destination_offset + 8*o + lane] = biases[biases_offset + lane] + sum over
#: taps (i, j) of weights[weights_offset + 8*(3*i + j) + lane] * source[source_offset + 8*(i*pitch +
#: o*stride + j) + lane]: one output row of 8 channels from the zero-padded input rows from
#: source_offset on, ``pitch`` pixels each. The nine weight vectors stay in registers. No bounds
#: checks.
depthwise_row = _depthwise_row(3)
#: The same for a 5x5 kernel (weights[weights_offset + 8*(5*i + j) + lane]): its 25 weight
#: vectors do not fit in the registers, and are read from L1 with the pixels.
depthwise_row_5 = _depthwise_row(5)


@intrinsic
def deinterleave_rows(typingctx, source, source_offset, columns, destination, destination_offset, plane, channels,
                      residual, has_residual, activation, alpha, beta):
    """deinterleave_rows(source, source_offset, columns, destination, destination_offset, plane,
    channels, residual, has_residual, activation, alpha, beta): for c < ``channels`` (1 to 8) and
    i < ``columns`` (1 to 8), destination[destination_offset + c*plane + i] = f(source[source_offset
    + 8*i + c] + residual[destination_offset + c*plane + i] (where has_residual)), f the
    ``epilogue``'s activation code and its alpha, beta: ``interleave_rows`` undone for output
    pixels whose bias is already in. Reads the 8 vectors from source_offset on (those past the
    columns unused); reads and writes nothing of destination and residual past the columns or
    the channels. No bounds checks."""
    sig = types.void(source, types.intp, types.intp, destination, types.intp, types.intp, types.intp, residual,
                     types.boolean, types.intp, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        (source, source_offset, columns, destination, destination_offset, plane, channels, residual, has_residual,
         activation, alpha, beta) = args
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[3], destination, destination_offset)
        residual_ptr = _float_pointer(context, builder, signature.args[7], residual, destination_offset)
        full = builder.icmp_signed("==", columns, ir.Constant(columns.type, LANES))
        pixels = [builder.load(_vector_at(builder, source_ptr, LANES * i), align=4) for i in range(LANES)]
        rows = _transpose_8x8(builder, pixels)

        def store(add_residual, code):
            for c, row in enumerate(rows):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(channels.type, c), channels)):
                    at = builder.mul(plane, ir.Constant(plane.type, c))
                    value = row
                    if add_residual:
                        value = builder.fadd(value, _load_lanes(builder, builder.gep(residual_ptr, [at]), columns, 0.0))
                    value = _activate(builder, value, code, alpha, beta)
                    row_ptr = builder.gep(destination_ptr, [at])
                    # (AMD's masked store is microcode, slower than the rest of the call)
                    with builder.if_else(full) as (whole, part):
                        with whole:
                            builder.store(value, _vector_at(builder, row_ptr, 0), align=4)
                        with part:
                            _store_lanes(builder, value, row_ptr, columns)

        _branch(builder, has_residual,
                lambda add_residual: _branch_on_activation(builder, activation, lambda code: store(add_residual, code)))
        return context.get_dummy_value()

    return sig, codegen


def pack_channel_blocks(weights: np.ndarray, biases: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, ...) weights and (K,) biases -> (packed weights, packed biases) with ``block`` output
    channels side by side per tap: for each block b of channels (the last padded with zero
    channels), weights[(b*taps + t)*block + i] = tap t (the weights' flattened index past K) of
    channel b*block + i, and biases[b*block + i] its bias."""
    channels, taps = weights.shape[0], weights[0].size
    blocks = -(-channels // block)
    packed = np.zeros((blocks * block, taps), np.float32)
    packed[:channels] = weights.reshape(channels, taps)
    packed_biases = np.zeros(blocks * block, np.float32)
    packed_biases[:channels] = biases
    return np.ascontiguousarray(packed.reshape(blocks, block, taps).transpose(0, 2, 1)).reshape(-1), packed_biases


def pack_depthwise(weights: np.ndarray, biases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 1, s, s) weights (s in SIDES) and (K,) biases -> (packed weights, packed biases) of
    ``convolution_depthwise_cpu``: for each 8 channels o, weights[8*s*s*o + 8*t + lane] = tap t
    of channel 8*o + lane and biases[8*o + lane] its bias, zeros past K."""
    return pack_channel_blocks(weights, biases, LANES)
