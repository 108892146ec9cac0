"""Winograd's F(2x2, 3x3) and F(4x4, 3x3) transforms, for ``convolution.convolution_winograd_cpu``.

A 3x3, stride-1 convolution computes each m x m block of its output (a tile, m = 2 or 4) from an
(m+2) x (m+2) block of its input d, per output channel k:

    Y = A^T [ sum_c (G g[k, c] G^T) * (B^T d[c] B) ] A        (* elementwise)

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; F(4x4, 3x3) with the
interpolation points 0, 1, -1, 2, -2). The sum over input channels is, for each of the (m+2)^2
elements xi of the matrices, a matrix product M[xi] = U[xi] V[xi] with U[xi] (K, C) the
transformed weights and V[xi] (C, tiles) the transformed input. Per pair of channels, a tile
takes (m+2)^2 multiply-adds for its m^2 outputs where the direct convolution's GEMM takes 9 per
output: 2.25x fewer for m = 2, 4x fewer for m = 4. The price of m = 4 is a larger float32
rounding error (about 4e-6 of the output's scale against 3e-7, measured against a float64 direct
sum: benchmarks/README.md, "Winograd's 4x4 tiles") and tiles that overhang small images further
(a 6x6 output is 4 tiles of 16 outputs, where 2x2 tiles make 9 of 4).

The input and output transforms here work on 16 tiles at once, one per lane of the GEMM's
16-column panels (one 16-wide vector with AVX-512, else two 8-wide passes), written in LLVM IR
as ``gemm``'s micro-kernel is (Numba would not vectorise them itself: it cannot tell that their
source and destination do not overlap), from the matrices below: additions where a coefficient
is 1 or -1, multiply-adds otherwise. Where a sample has few tiles (a 6x6 output's 9 fill 9 of a
panel's 16 lanes at n = 1), ``tile_rows_product`` takes the tiles as the rows of the products and
32 output channels as their vectors instead, from U packed per block of 32 channels
(``transform_weights_tile_rows``), and transposes its sums into M's usual layout, which the
output transforms read as ever. Numba caches the kernels on disk keyed on their own source
file: after editing this file, delete ``dynbatch/kernels/__pycache__``.
"""
import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import SCALAR_FUNCTION, SHARED_STEP
from .gemm import (WIDE_VECTORS, _activate, _branch, _branch_on_activation, _fma_and_accumulators, _float_pointer,
                   _splat, _store_lanes, _vector_at, NR, pack_weights, steps_not_unrolled)

#: The output tile sides m this module has transforms for.
TILES = (2, 4)
#: B^T ((m+2) x (m+2)), G ((m+2) x 3) and A^T (m x (m+2)) of F(m x m, 3x3), for each m.
B_T = {2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
       4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)}
G = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
     4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)}
A_T = {2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
       4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)}


@njit(**SCALAR_FUNCTION)
def tile_elements(tile):
    """Elements xi of the transformed matrices of a tile of side ``tile``, which reads tile + 2
    inputs along each side: the GEMMs per layer."""
    return (tile + 2) * (tile + 2)


@njit(**SCALAR_FUNCTION)
def sample_tiles(out_height, out_width, tile):
    """(tiles along an output row, tiles per sample) of an out_height x out_width output in tiles
    of side ``tile``, the last of a row or column overhanging it where the side does not divide."""
    tiles_wide = (out_width + tile - 1) // tile
    return tiles_wide, ((out_height + tile - 1) // tile) * tiles_wide


@njit(**SCALAR_FUNCTION)
def run_outputs(tile):
    """Outputs of one row of a panel's 16 tiles, ``tile`` columns each: the most one run of
    outputs has."""
    return tile * NR


#: The longest run of outputs of any tile side (``copy_vectors``).
MAX_RUN_OUTPUTS = max(TILES) * NR


def transformed_weights(weights: np.ndarray, tile: int) -> np.ndarray:
    """(K, C, 3, 3) weights -> U ((m+2)^2, K, C) in float64, U[(m+2)a + b] = (G g G^T)[a, b] for
    m = ``tile`` (rounded to float32 once, by the packings below)."""
    out_channels, channels = weights.shape[:2]
    g = G[tile]
    u = np.einsum("ai,kcij,bj->abkc", g, weights.astype(np.float64), g)
    return u.reshape(tile_elements(tile), out_channels, channels)


def transform_weights(weights: np.ndarray, tile: int) -> np.ndarray:
    """(K, C, 3, 3) weights -> ``gemm.pack_weights`` of U (``transformed_weights``): element xi's A
    panels are group xi of the packing."""
    return pack_weights(transformed_weights(weights, tile).astype(np.float32))


#: Output channels one call of ``tile_rows_product`` takes: two vectors of NR.
TILE_ROWS_CHANNELS = 2 * NR
#: The most tiles (rows) one call of it takes: 9 x 2 accumulators, 2 vectors of U and a broadcast
#: fill 21 of AVX-512's 32 registers. Nine, as many as a 6x6 output has 2x2 tiles.
TILE_ROWS_MAX = 9


def transform_weights_tile_rows(weights: np.ndarray, tile: int) -> np.ndarray:
    """(K, C, 3, 3) weights -> U (``transformed_weights``) for ``tile_rows_product``: for each
    element xi, blocks of TILE_ROWS_CHANNELS output channels (K padded with zero channels), each C
    rows of its channels side by side: u[((xi * blocks + block) * C + c) * TILE_ROWS_CHANNELS + j]
    = U[xi][TILE_ROWS_CHANNELS * block + j, c]."""
    out_channels, channels = weights.shape[:2]
    u = transformed_weights(weights, tile)
    blocks = -(-out_channels // TILE_ROWS_CHANNELS)
    padded = np.zeros((tile_elements(tile), blocks * TILE_ROWS_CHANNELS, channels))
    padded[:, :out_channels] = u
    padded = padded.reshape(tile_elements(tile), blocks, TILE_ROWS_CHANNELS, channels).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(padded, dtype=np.float32).reshape(-1)


def _transpose_16x16(builder, rows):
    """The 16 columns of the 16 x 16 matrix whose rows are ``rows`` (16-float vectors): four rounds
    of two-vector shuffles, each swapping the off-diagonal halves of every block of 2d x 2d (d = 8,
    4, 2, 1)."""
    lanes = ir.VectorType(ir.IntType(32), 16)
    for d in (8, 4, 2, 1):
        swapped = list(rows)
        for r in range(16):
            if r & d == 0:
                upper = [c if c & d == 0 else 16 + (c ^ d) for c in range(16)]
                lower = [c ^ d if c & d == 0 else 16 + c for c in range(16)]
                swapped[r] = builder.shuffle_vector(rows[r], rows[r | d], ir.Constant(lanes, upper))
                swapped[r | d] = builder.shuffle_vector(rows[r], rows[r | d], ir.Constant(lanes, lower))
        rows = swapped
    return rows


def _tile_rows_kernel(rows: int):
    """The intrinsic of ``tile_rows_product`` for ``rows`` tiles."""
    vector = ir.VectorType(ir.FloatType(), NR)

    @intrinsic
    def kernel(typingctx, kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes):
        sig = types.void(types.intp, v, types.intp, u, types.intp, m, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes = args
            v_ptr = _float_pointer(context, builder, signature.args[1], v, v_offset)
            u_ptr = _float_pointer(context, builder, signature.args[3], u, u_offset)
            m_ptr = _float_pointer(context, builder, signature.args[5], m, m_offset)
            fma, sums = _fma_and_accumulators(builder, 2 * rows, NR)
            with steps_not_unrolled(builder, kc) as loop:
                u_row = builder.gep(u_ptr, [builder.mul(loop.index, ir.Constant(kc.type, TILE_ROWS_CHANNELS))])
                u_vectors = [builder.load(_vector_at(builder, u_row, NR * h, NR), align=4) for h in range(2)]
                v_row = builder.gep(v_ptr, [builder.mul(loop.index, ir.Constant(kc.type, NR))])
                for i in range(rows):
                    tile_value = _splat(builder, builder.load(builder.gep(v_row, [ir.Constant(kc.type, i)])), NR)
                    for h, u_vector in enumerate(u_vectors):
                        builder.store(builder.call(fma, [tile_value, u_vector, builder.load(sums[2 * i + h])]),
                                      sums[2 * i + h])
            # Each vector of 16 channels' sums over the rows tiles, turned into 16 rows of M (one
            # per channel) of the tiles side by side, zeros past them.
            zero = ir.Constant(vector, [0.0] * NR)
            for h in range(2):
                columns = _transpose_16x16(builder, [builder.load(sums[2 * i + h]) for i in range(rows)]
                                           + [zero] * (NR - rows))
                for j, column in enumerate(columns):
                    row = builder.gep(m_ptr, [builder.mul(ldm, ir.Constant(ldm.type, NR * h + j))])
                    _store_lanes(builder, column, row, lanes)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_TILE_ROWS_KERNELS = [_tile_rows_kernel(rows) for rows in range(1, TILE_ROWS_MAX + 1)]
(tile_rows_kernel_1, tile_rows_kernel_2, tile_rows_kernel_3, tile_rows_kernel_4, tile_rows_kernel_5,
 tile_rows_kernel_6, tile_rows_kernel_7, tile_rows_kernel_8, tile_rows_kernel_9) = _TILE_ROWS_KERNELS


@njit(**SHARED_STEP)
def tile_rows_product(rows, kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes):
    """M[xi] for ``rows`` tiles (1 to TILE_ROWS_MAX) and TILE_ROWS_CHANNELS output channels, the
    tiles as the rows of the product and the channels as its vectors (so a panel of fewer than 16
    tiles costs only its tiles): for r < rows and j < TILE_ROWS_CHANNELS,
    m[m_offset + j * ldm + r] = sum_{p < kc} v[v_offset + p * NR + r] * u[u_offset + p *
    TILE_ROWS_CHANNELS + j], and zeros in lanes rows <= r < ``lanes`` (at most NR) of each of those
    rows of m; lanes past ``lanes`` are left as they were. v: a panel of V in ``gemm``'s B layout
    (the tiles in lanes, from the first of them on); u: a block of
    ``transform_weights_tile_rows``. No bounds checks. (One branch per row count, as
    ``gemm.narrow_product``.)"""
    if rows == 1:
        tile_rows_kernel_1(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 2:
        tile_rows_kernel_2(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 3:
        tile_rows_kernel_3(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 4:
        tile_rows_kernel_4(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 5:
        tile_rows_kernel_5(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 6:
        tile_rows_kernel_6(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 7:
        tile_rows_kernel_7(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    elif rows == 8:
        tile_rows_kernel_8(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)
    else:
        tile_rows_kernel_9(kc, v, v_offset, u, u_offset, m, m_offset, ldm, lanes)


#: Tiles (lanes of a panel's 16) a transform's vectors hold: all 16 with AVX-512; on AVX2 8, in
#: two passes (a 16-wide vector there is two registers, and a 6x6 tile's 36 of them would spill).
WIDTH = 16 if WIDE_VECTORS else 8


def _lanes(builder, row_pointer, h):
    """Lanes WIDTH*h to WIDTH*h + WIDTH - 1 of a 16-lane row."""
    return builder.load(_vector_at(builder, row_pointer, WIDTH * h, WIDTH), align=4)


def _combine(builder, coefficients, values):
    """sum_i coefficients[i] * values[i] (vectors of WIDTH) over the non-zero coefficients, a
    positive one first: an addition or subtraction per coefficient of 1 or -1, a multiply-add
    (or a product, first) per other one."""
    vector = ir.VectorType(ir.FloatType(), WIDTH)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                         f"llvm.fma.v{WIDTH}f32")
    terms = sorted(((float(c), v) for c, v in zip(coefficients, values) if c != 0), key=lambda term: term[0] < 0)
    total = None
    for coefficient, value in terms:
        if total is None:
            total = value if coefficient == 1 else builder.fmul(value, ir.Constant(vector, [coefficient] * WIDTH))
        elif abs(coefficient) == 1:
            total = builder.fadd(total, value) if coefficient > 0 else builder.fsub(total, value)
        else:
            total = builder.call(fma, [value, ir.Constant(vector, [coefficient] * WIDTH), total])
    return total


def _input_transform(tile: int):
    """The intrinsic input_transform(source, source_offset, destination, destination_offset,
    destination_stride) for tiles of side ``tile`` (s = tile + 2 inputs a side): V = B^T d B for
    16 tiles, d[i][j] = source[source_offset + (s*i + j) * 16 + lane] (the s*s rows of one
    channel in a packed B panel of the tiles' inputs), written as destination[destination_offset
    + xi * destination_stride + lane] = V[xi], xi = s*a + b. No bounds checks."""
    side, b_t = tile + 2, B_T[tile]

    @intrinsic
    def input_transform(typingctx, source, source_offset, destination, destination_offset, destination_stride):
        sig = types.void(source, types.intp, destination, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            source_ptr = _float_pointer(context, builder, signature.args[0], args[0], args[1])
            destination_ptr = _float_pointer(context, builder, signature.args[2], args[2], args[3])
            stride = args[4]
            for h in range(NR // WIDTH):
                d = [[_lanes(builder, builder.gep(source_ptr, [ir.Constant(ir.IntType(64), (side * i + j) * NR)]), h)
                      for j in range(side)] for i in range(side)]
                columns = [[_combine(builder, b_t[a], [d[i][j] for i in range(side)]) for a in range(side)]
                           for j in range(side)]  # (B^T d)[a][j] as columns[j][a]
                for a in range(side):
                    for b in range(side):
                        value = _combine(builder, b_t[b], [columns[j][a] for j in range(side)])  # ((B^T d) B)[a][b]
                        at = builder.add(builder.mul(stride, ir.Constant(stride.type, side * a + b)),
                                         ir.Constant(stride.type, WIDTH * h))
                        builder.store(value, _vector_at(builder, destination_ptr, at, WIDTH), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return input_transform


def _output_transform(tile: int):
    """The intrinsic output_transform(source, source_offset, source_stride, destination,
    destination_offset, finish, bias, activation, alpha, beta) for tiles of side ``tile`` (s =
    tile + 2): Y = A^T M A (tile x tile) for 16 tiles, M[xi] = source[source_offset + xi *
    source_stride + lane], written as ``tile`` output rows of the 16 tiles side by side:
    destination[destination_offset + run_outputs(tile) * r + tile * lane + c] = Y[r][c], or where
    ``finish`` f(Y[r][c] + bias), f the ``epilogue``'s activation code (relu, relu6, clamp or
    none) and its alpha, beta. No bounds checks."""
    side, a_t, run = tile + 2, A_T[tile], tile * NR
    lane = ir.IntType(32)
    # Y[r][c] of each lane side by side: output lane * tile + c from vector c's lane.
    interleave = ir.Constant(ir.VectorType(lane, WIDTH * tile),
                             [WIDTH * c + j for j in range(WIDTH) for c in range(tile)])

    @intrinsic
    def output_transform(typingctx, source, source_offset, source_stride, destination, destination_offset, finish,
                         bias, activation, alpha, beta):
        sig = types.void(source, types.intp, types.intp, destination, types.intp, types.boolean, types.float32,
                         types.intp, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            source, source_offset, stride, destination, destination_offset, finish, bias, activation, alpha, beta = args
            source_ptr = _float_pointer(context, builder, signature.args[0], source, source_offset)
            destination_ptr = _float_pointer(context, builder, signature.args[3], destination, destination_offset)

            def emit(code):
                for h in range(NR // WIDTH):
                    m = [_lanes(builder, builder.gep(source_ptr, [builder.mul(stride, ir.Constant(stride.type, xi))]),
                                h) for xi in range(side * side)]
                    columns = [[_combine(builder, a_t[r], [m[side * a + b] for a in range(side)]) for r in range(tile)]
                               for b in range(side)]  # (A^T M)[r][b] as columns[b][r]
                    for r in range(tile):
                        y = [_combine(builder, a_t[c], [columns[b][r] for b in range(side)]) for c in range(tile)]
                        if code is not False:
                            y = [_activate(builder, builder.fadd(value, _splat(builder, bias, WIDTH)), code, alpha,
                                           beta) for value in y]
                        while len(y) > 1:  # side by side in one vector of WIDTH * tile lanes
                            width = y[0].type.count
                            both = ir.Constant(ir.VectorType(lane, 2 * width), list(range(2 * width)))
                            y = [builder.shuffle_vector(y[i], y[i + 1], both) for i in range(0, len(y), 2)]
                        row = builder.shuffle_vector(y[0], ir.Constant(y[0].type, ir.Undefined), interleave)
                        for q in range(tile):
                            lanes = ir.Constant(ir.VectorType(lane, WIDTH), list(range(WIDTH * q, WIDTH * q + WIDTH)))
                            piece = builder.shuffle_vector(row, ir.Constant(row.type, ir.Undefined), lanes)
                            at = run * r + WIDTH * tile * h + WIDTH * q
                            builder.store(piece, _vector_at(builder, destination_ptr, at, WIDTH), align=4)

            _branch(builder, finish, lambda finishing: _branch_on_activation(builder, activation, emit)
                    if finishing else emit(False))
            return context.get_dummy_value()

        return sig, codegen

    return output_transform


#: ``_input_transform`` and ``_output_transform`` for tiles of 2x2 and 4x4 outputs.
input_transform_2, input_transform_4 = _input_transform(2), _input_transform(4)
output_transform_2, output_transform_4 = _output_transform(2), _output_transform(4)


@intrinsic
def copy_vectors(typingctx, source, source_offset, destination, destination_offset, length):
    """copy_vectors(source, source_offset, destination, destination_offset, length):
    destination[destination_offset + i] = source[source_offset + i] for i < length, 8 <= length
    <= MAX_RUN_OUTPUTS, in whole 8-wide vectors, no loop: those from 0 on, then one ending at length
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

        for q in range(MAX_RUN_OUTPUTS // 8):
            with builder.if_then(builder.icmp_signed("<=", ir.Constant(length.type, 8 * q + 8), length)):
                copy(8 * q)
        ragged = builder.icmp_signed("!=", builder.and_(length, ir.Constant(length.type, 7)), ir.Constant(length.type, 0))
        with builder.if_then(ragged):
            copy(builder.sub(length, ir.Constant(length.type, 8)))
        return context.get_dummy_value()

    return sig, codegen
