"""Winograd's F(2x2, 3x3) transforms, for ``convolution.convolution_winograd_cpu``.

A 3x3, stride-1 convolution computes each 2x2 block of its output (a tile) from a 4x4 block of
its input d, per output channel k:

    Y = A^T [ sum_c (G g[k, c] G^T) * (B^T d[c] B) ] A        (* elementwise on 4x4 matrices)

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The sum over input
channels is, for each of the 16 elements xi of the 4x4 matrices, a matrix product
M[xi] = U[xi] V[xi] with U[xi] (K, C) the transformed weights and V[xi] (C, tiles) the
transformed input. Per tile and pair of channels that is 16 multiply-adds where the direct
convolution's GEMM takes 36 (9 for each of the 4 outputs): 2.25x fewer. The transforms themselves
are additions only.

The input and output transforms here work on 16 tiles at once, one per lane of the GEMM's
16-column panels (two 8-wide vectors), written in LLVM IR as ``gemm``'s micro-kernel is (Numba
would not vectorise them itself: it cannot tell that their source and destination do not
overlap). Numba caches the kernels on disk keyed on their own source file: after editing this
file, delete ``dynbatch/kernels/__pycache__``.
"""
import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.extending import intrinsic

from .gemm import (NR, _activate, _branch, _branch_on_activation, _float_pointer, _splat,
                   _vector_at, pack_weights)

#: The 4x3 matrix G of F(2x2, 3x3): U = G g G^T.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: Input elements a tile reads along each side, and the elements of the transformed 4x4 matrices.
TILE_INPUT = 4
ELEMENTS = TILE_INPUT * TILE_INPUT
#: Outputs of one row of a panel's 16 tiles, 2 columns each: the most one run of outputs has.
RUN_OUTPUTS = 2 * NR


def transform_weights(weights: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) weights -> ``gemm.pack_weights`` of U (16, K, C), U[4a + b] = (G g G^T)[a, b]:
    element xi's A panels are group xi of the packing (in float64, then rounded once)."""
    out_channels, channels = weights.shape[:2]
    u = np.einsum("ai,kcij,bj->abkc", G, weights.astype(np.float64), G)
    return pack_weights(u.reshape(ELEMENTS, out_channels, channels).astype(np.float32))


def _lanes(builder, row_pointer, h):
    """Lanes 8h..8h+7 of a 16-lane row."""
    return builder.load(_vector_at(builder, row_pointer, 8 * h), align=4)


@intrinsic
def input_transform(typingctx, source, source_offset, destination, destination_offset, destination_stride):
    """input_transform(source, source_offset, destination, destination_offset, destination_stride):
    V = B^T d B for 16 tiles, d[i][j] = source[source_offset + (4i + j) * 16 + lane] (the 16 rows
    of one channel in a packed B panel of the tiles' 4x4 inputs), written as
    destination[destination_offset + xi * destination_stride + lane] = V[xi], xi = 4a + b.
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. No bounds checks."""
    sig = types.void(source, types.intp, destination, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source_ptr = _float_pointer(context, builder, signature.args[0], args[0], args[1])
        destination_ptr = _float_pointer(context, builder, signature.args[2], args[2], args[3])
        stride = args[4]

        def b_transpose(v):  # (B^T v) for 4 values along one side
            return [builder.fsub(v[0], v[2]), builder.fadd(v[1], v[2]), builder.fsub(v[2], v[1]),
                    builder.fsub(v[1], v[3])]

        for h in range(NR // 8):
            d = [[_lanes(builder, builder.gep(source_ptr, [ir.Constant(ir.IntType(64), (4 * i + j) * NR)]), h)
                  for j in range(4)] for i in range(4)]
            columns = [b_transpose([d[i][j] for i in range(4)]) for j in range(4)]  # (B^T d)[a][j]
            for a in range(4):
                row = b_transpose([columns[j][a] for j in range(4)])  # ((B^T d) B)[a][b]
                for b in range(4):
                    at = builder.add(builder.mul(stride, ir.Constant(stride.type, 4 * a + b)),
                                     ir.Constant(stride.type, 8 * h))
                    builder.store(row[b], _vector_at(builder, destination_ptr, at), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def output_transform(typingctx, source, source_offset, source_stride, destination, destination_offset, finish,
                     bias, activation, alpha, beta):
    """output_transform(source, source_offset, source_stride, destination, destination_offset,
    finish, bias, activation, alpha, beta): Y = A^T M A (2x2) for 16 tiles, M[xi] =
    source[source_offset + xi * source_stride + lane], written as two output rows of the 16
    tiles side by side: destination[destination_offset + RUN_OUTPUTS * r + 2 * lane + c] =
    Y[r][c], or where ``finish`` f(Y[r][c] + bias), f the ``epilogue``'s activation code
    (relu, relu6, clamp or none) and its alpha, beta. A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
    No bounds checks."""
    sig = types.void(source, types.intp, types.intp, destination, types.intp, types.boolean, types.float32,
                     types.intp, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        source, source_offset, stride, destination, destination_offset, finish, bias, activation, alpha, beta = args
        source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
        destination_ptr = _float_pointer(context, builder, signature.args[3], destination, destination_offset)
        lane = ir.IntType(32)
        # Y[r][0] and Y[r][1] of lanes 0-3 interleaved, then of lanes 4-7.
        first_half = ir.Constant(ir.VectorType(lane, 8), [0, 8, 1, 9, 2, 10, 3, 11])
        second_half = ir.Constant(ir.VectorType(lane, 8), [4, 12, 5, 13, 6, 14, 7, 15])

        def a_transpose(v):  # (A^T v) for 4 values along one side
            return [builder.fadd(builder.fadd(v[0], v[1]), v[2]), builder.fsub(builder.fsub(v[1], v[2]), v[3])]

        def emit(code):
            for h in range(NR // 8):
                m = [_lanes(builder, builder.gep(source_ptr, [builder.mul(stride, ir.Constant(stride.type, xi))]), h)
                     for xi in range(ELEMENTS)]
                columns = [a_transpose([m[4 * a + b] for a in range(4)]) for b in range(4)]  # (A^T M)[r][b]
                for r in range(2):
                    y = a_transpose([columns[b][r] for b in range(4)])
                    if code is not False:
                        y = [_activate(builder, builder.fadd(value, _splat(builder, bias)), code, alpha, beta)
                             for value in y]
                    for half, order in enumerate((first_half, second_half)):
                        at = RUN_OUTPUTS * r + 16 * h + 8 * half
                        builder.store(builder.shuffle_vector(y[0], y[1], order),
                                      _vector_at(builder, destination_ptr, at), align=4)

        _branch(builder, finish, lambda finishing: _branch_on_activation(builder, activation, emit) if finishing
                else emit(False))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def copy_vectors(typingctx, source, source_offset, destination, destination_offset, length):
    """copy_vectors(source, source_offset, destination, destination_offset, length):
    destination[destination_offset + i] = source[source_offset + i] for i < length, 8 <= length
    <= RUN_OUTPUTS, in whole 8-wide vectors, no loop: those from 0 on, then one ending at length
    (overlapping the one before: the same values again) where length is not a multiple of 8.
    No bounds checks."""
    sig = types.void(source, types.intp, destination, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source_ptr = _float_pointer(context, builder, signature.args[0], args[0], args[1])
        destination_ptr = _float_pointer(context, builder, signature.args[2], args[2], args[3])
        length = args[4]

        def copy(at):
            value = builder.load(_vector_at(builder, source_ptr, at), align=4)
            builder.store(value, _vector_at(builder, destination_ptr, at), align=4)

        for q in range(RUN_OUTPUTS // 8):
            with builder.if_then(builder.icmp_signed("<=", ir.Constant(length.type, 8 * q + 8), length)):
                copy(8 * q)
        ragged = builder.icmp_signed("!=", builder.and_(length, ir.Constant(length.type, 7)), ir.Constant(length.type, 0))
        with builder.if_then(ragged):
            copy(builder.sub(length, ir.Constant(length.type, 8)))
        return context.get_dummy_value()

    return sig, codegen
