"""Winograd F(2x2, 3x3) and F(4x4, 3x3)'s transforms (``dynbatch.kernels.winograd``) against the
matrices of Lavin and Gray's paper, written out here independently, and against a direct 3x3
correlation."""
from fractions import Fraction as Q

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from dynbatch.kernels import winograd
from dynbatch.kernels.activation import ACTIVATION_CODES
from dynbatch.kernels.epilogue import NO_ACTIVATION
from dynbatch.kernels.gemm import NR
from dynbatch.kernels.winograd import (MAX_RUN_OUTPUTS, TILE_ROWS_CHANNELS, TILE_ROWS_MAX, copy_vectors,
                                       input_transform_2, input_transform_4, output_transform_2, output_transform_4,
                                       tile_rows_product, transform_weights, transform_weights_tile_rows)
from tests.naive import REFERENCES

B_T = {2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
       4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)}
G = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
     4: np.array([[Q(1, 4), 0, 0], [Q(-1, 6), Q(-1, 6), Q(-1, 6)], [Q(-1, 6), Q(1, 6), Q(-1, 6)],
                  [Q(1, 24), Q(1, 12), Q(1, 6)], [Q(1, 24), Q(-1, 12), Q(1, 6)], [0, 0, 1]], np.float64)}
A_T = {2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
       4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)}
TILES = [2, 4]


@njit
def call_input_transform(tile, source, destination, stride):
    if tile == 2:
        input_transform_2(source, 0, destination, 3, stride)
    else:
        input_transform_4(source, 0, destination, 3, stride)


@njit
def call_output_transform(tile, source, stride, destination, finish, bias, activation, alpha, beta):
    if tile == 2:
        output_transform_2(source, 5, stride, destination, 2, finish, bias, activation, alpha, beta)
    else:
        output_transform_4(source, 5, stride, destination, 2, finish, bias, activation, alpha, beta)


@njit
def call_copy_vectors(source, destination, at, length):
    copy_vectors(source, 1, destination, at, length)


@pytest.mark.parametrize("tile", TILES)
def test_transforms_compute_a_3x3_correlation(tile):
    """The three matrices together: A^T [(G g G^T) * (B^T d B)] A is the tile x tile valid
    correlation; the module's matrices are this file's."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((tile + 2, tile + 2)), rng.standard_normal((3, 3))
    y = A_T[tile] @ ((G[tile] @ g @ G[tile].T) * (B_T[tile] @ d @ B_T[tile].T)) @ A_T[tile].T
    direct = np.array([[np.sum(d[r:r + 3, c:c + 3] * g) for c in range(tile)] for r in range(tile)])
    np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-12)
    for mine, theirs in ((B_T, winograd.B_T), (G, winograd.G), (A_T, winograd.A_T)):
        np.testing.assert_array_equal(mine[tile], theirs[tile])


@pytest.mark.parametrize("tile", TILES)
def test_input_transform_is_bt_d_b_per_lane(tile):
    side = tile + 2
    rng = np.random.default_rng(1)
    d = rng.standard_normal((side, side, NR)).astype(np.float32)  # d[i, j, lane]
    stride = 3 * NR + 5
    destination = np.full(3 + side * side * stride, np.nan, np.float32)
    call_input_transform(tile, d.reshape(-1), destination, stride)
    for lane in range(NR):
        want = B_T[tile] @ d[:, :, lane].astype(np.float64) @ B_T[tile].T
        got = np.array([destination[3 + xi * stride + lane] for xi in range(side * side)]).reshape(side, side)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 if tile == 2 else 1e-5)  # (4x4: coefficients to 5)
    untouched = np.ones(destination.shape, bool)
    for xi in range(side * side):
        untouched[3 + xi * stride:3 + xi * stride + NR] = False
    assert np.isnan(destination[untouched]).all()


@pytest.mark.parametrize("activation", [None, {"type": "relu", "alpha": 0.0, "beta": 0.0},
                                        {"type": "relu", "alpha": 0.25, "beta": 0.0},
                                        {"type": "relu6", "alpha": 0.0, "beta": 0.0},
                                        {"type": "clamp", "alpha": -0.5, "beta": 0.75}])
@pytest.mark.parametrize("finish", [False, True])
@pytest.mark.parametrize("tile", TILES)
def test_output_transform_is_at_m_a_per_lane(tile, finish, activation):
    side, run = tile + 2, tile * NR
    rng = np.random.default_rng(2)
    stride = 2 * NR + 3
    m = rng.standard_normal(5 + side * side * stride).astype(np.float32) * 4
    destination = np.full(2 + tile * run + 4, np.nan, np.float32)
    code = NO_ACTIVATION if activation is None else ACTIVATION_CODES[activation["type"]]
    alpha, beta = (0.0, 0.0) if activation is None else (activation["alpha"], activation["beta"])
    bias = np.float32(0.5)
    call_output_transform(tile, m, stride, destination, finish, bias, code, np.float32(alpha), np.float32(beta))
    for lane in range(NR):
        matrix = np.array([m[5 + xi * stride + lane] for xi in range(side * side)], np.float64).reshape(side, side)
        want = A_T[tile] @ matrix @ A_T[tile].T
        if finish:
            want = want + bias
            if activation is not None:
                want = REFERENCES["Activation"]([want.astype(np.float32)], activation)[0]
        got = np.array([[destination[2 + run * r + tile * lane + c] for c in range(tile)] for r in range(tile)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 if tile == 2 else 1e-4)  # (4x4: coefficients to 8)
    assert np.isnan(destination[:2]).all() and np.isnan(destination[2 + tile * run:]).all()


@given(length=st.integers(8, MAX_RUN_OUTPUTS), at=st.integers(0, 7))
def test_copy_vectors_copies_exactly_length_elements(length, at):
    source = np.arange(1 + MAX_RUN_OUTPUTS, dtype=np.float32)
    destination = np.full(MAX_RUN_OUTPUTS + 16, -1.0, np.float32)
    call_copy_vectors(source, destination, at, length)
    np.testing.assert_array_equal(destination[at:at + length], source[1:1 + length])
    assert (destination[:at] == -1).all() and (destination[at + length:] == -1).all()


@pytest.mark.parametrize("tile", TILES)
def test_transform_weights_packs_g_g_gt_by_element(tile):
    side = tile + 2
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    packed = transform_weights(weights, tile)
    # pack_weights layout, group xi: panels of 6 then a last one of 4 (7 channels -> 6 + 4 rows),
    # each p-major over the 3 input channels.
    padded_rows, reduction = 10, 3
    assert packed.shape == (side * side * padded_rows * reduction,)
    for xi in range(side * side):
        a, b = divmod(xi, side)
        for k in range(7):
            panel_start, height = (0, 6) if k < 6 else (6, 4)
            for c in range(3):
                at = xi * padded_rows * reduction + panel_start * reduction + c * height + (k - panel_start)
                want = (G[tile] @ weights[k, c].astype(np.float64) @ G[tile].T)[a, b]
                assert packed[at] == pytest.approx(want, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("tile", TILES)
def test_transform_weights_tile_rows_packs_blocks_of_output_channels(tile):
    """U[xi][k, c] = (G g[k, c] G^T)[a, b] at ((xi * blocks + k // 32) * C + c) * 32 + k % 32, the
    37 output channels padded to two blocks of 32 with zeros."""
    side = tile + 2
    weights = np.random.default_rng(8).standard_normal((37, 5, 3, 3)).astype(np.float32)
    packed = transform_weights_tile_rows(weights, tile)
    assert packed.shape == (side * side * 2 * 5 * TILE_ROWS_CHANNELS,)
    blocks = packed.reshape(side * side, 2, 5, TILE_ROWS_CHANNELS)
    for xi in range(side * side):
        a, b = divmod(xi, side)
        for k in range(2 * TILE_ROWS_CHANNELS):
            for c in range(5):
                want = (G[tile] @ weights[k, c].astype(np.float64) @ G[tile].T)[a, b] if k < 37 else 0.0
                assert blocks[xi, k // TILE_ROWS_CHANNELS, c, k % TILE_ROWS_CHANNELS] == pytest.approx(
                    float(want), rel=1e-6, abs=1e-6)


@njit
def call_tile_rows_product(rows, kc, v, u, m, ldm, lanes):
    tile_rows_product(rows, kc, v, 3, u, 1, m, 2, ldm, lanes)


@pytest.mark.parametrize("rows", range(1, TILE_ROWS_MAX + 1))
def test_tile_rows_product_stores_the_product_transposed(rows):
    """m[2 + j * ldm + r] = sum_p v[3 + p * 16 + r] * u[1 + p * 32 + j] for the call's rows tiles
    and 32 channels, zeros in lanes rows.. < lanes of each of those rows of m, and nothing else
    written."""
    rng = np.random.default_rng(rows)
    kc, ldm = 7, 21
    v = rng.standard_normal(3 + kc * NR + NR).astype(np.float32)
    u = rng.standard_normal(1 + kc * TILE_ROWS_CHANNELS).astype(np.float32)
    for lanes in sorted({rows, NR - 3}):
        if lanes < rows:
            continue
        m = np.full(2 + TILE_ROWS_CHANNELS * ldm + NR, np.nan, np.float32)
        call_tile_rows_product(rows, kc, v, u, m, ldm, lanes)
        tiles = v[3:3 + kc * NR].reshape(kc, NR)[:, :rows].astype(np.float64)
        want = (u[1:].reshape(kc, TILE_ROWS_CHANNELS).astype(np.float64).T @ tiles)  # (32, rows)
        got = np.stack([m[2 + j * ldm:2 + j * ldm + NR] for j in range(TILE_ROWS_CHANNELS)])
        np.testing.assert_allclose(got[:, :rows], want, rtol=1e-5, atol=1e-5)
        assert (got[:, rows:lanes] == 0).all() and np.isnan(got[:, lanes:]).all()
        written = np.zeros(m.size, bool)
        for j in range(TILE_ROWS_CHANNELS):
            written[2 + j * ldm:2 + j * ldm + lanes] = True
        assert np.isnan(m[~written]).all()
