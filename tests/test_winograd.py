"""Winograd F(2x2, 3x3)'s transforms (``dynbatch.kernels.winograd``) against the matrices of
Lavin and Gray's paper, written out here independently, and against a direct 3x3 correlation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from dynbatch.kernels.activation import ACTIVATION_CODES
from dynbatch.kernels.epilogue import NO_ACTIVATION
from dynbatch.kernels.gemm import NR
from dynbatch.kernels.winograd import RUN_OUTPUTS, copy_vectors, input_transform, output_transform, transform_weights
from tests.naive import REFERENCES

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


@njit
def call_input_transform(source, destination, stride):
    input_transform(source, 0, destination, 3, stride)


@njit
def call_output_transform(source, stride, destination, finish, bias, activation, alpha, beta):
    output_transform(source, 5, stride, destination, 2, finish, bias, activation, alpha, beta)


@njit
def call_copy_vectors(source, destination, at, length):
    copy_vectors(source, 1, destination, at, length)


def test_transforms_compute_a_3x3_correlation():
    """The three matrices together: A^T [(G g G^T) * (B^T d B)] A is the 2x2 valid correlation."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    y = A_T @ ((G @ g @ G.T) * (B_T @ d @ B_T.T)) @ A_T.T
    direct = np.array([[np.sum(d[r:r + 3, c:c + 3] * g) for c in range(2)] for r in range(2)])
    np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-12)


def test_input_transform_is_bt_d_b_per_lane():
    rng = np.random.default_rng(1)
    d = rng.standard_normal((4, 4, NR)).astype(np.float32)  # d[i, j, lane]
    stride = 3 * NR + 5
    destination = np.full(3 + 16 * stride, np.nan, np.float32)
    call_input_transform(d.reshape(-1), destination, stride)
    for lane in range(NR):
        want = B_T @ d[:, :, lane].astype(np.float64) @ B_T.T
        got = np.array([destination[3 + xi * stride + lane] for xi in range(16)]).reshape(4, 4)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    untouched = np.ones(destination.shape, bool)
    for xi in range(16):
        untouched[3 + xi * stride:3 + xi * stride + NR] = False
    assert np.isnan(destination[untouched]).all()


@pytest.mark.parametrize("activation", [None, {"type": "relu", "alpha": 0.0, "beta": 0.0},
                                        {"type": "relu", "alpha": 0.25, "beta": 0.0},
                                        {"type": "relu6", "alpha": 0.0, "beta": 0.0},
                                        {"type": "clamp", "alpha": -0.5, "beta": 0.75}])
@pytest.mark.parametrize("finish", [False, True])
def test_output_transform_is_at_m_a_per_lane(finish, activation):
    rng = np.random.default_rng(2)
    stride = 2 * NR + 3
    m = rng.standard_normal(5 + 16 * stride).astype(np.float32) * 4
    destination = np.full(2 + 2 * RUN_OUTPUTS + 4, np.nan, np.float32)
    code = NO_ACTIVATION if activation is None else ACTIVATION_CODES[activation["type"]]
    alpha, beta = (0.0, 0.0) if activation is None else (activation["alpha"], activation["beta"])
    bias = np.float32(0.5)
    call_output_transform(m, stride, destination, finish, bias, code, np.float32(alpha), np.float32(beta))
    for lane in range(NR):
        tile = np.array([m[5 + xi * stride + lane] for xi in range(16)], np.float64).reshape(4, 4)
        want = A_T @ tile @ A_T.T
        if finish:
            want = want + bias
            if activation is not None:
                want = REFERENCES["Activation"]([want.astype(np.float32)], activation)[0]
        got = np.array([[destination[2 + RUN_OUTPUTS * r + 2 * lane + c] for c in range(2)] for r in range(2)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isnan(destination[:2]).all() and np.isnan(destination[2 + 2 * RUN_OUTPUTS:]).all()


@given(length=st.integers(8, RUN_OUTPUTS), at=st.integers(0, 7))
def test_copy_vectors_copies_exactly_length_elements(length, at):
    source = np.arange(1 + RUN_OUTPUTS, dtype=np.float32)
    destination = np.full(RUN_OUTPUTS + 16, -1.0, np.float32)
    call_copy_vectors(source, destination, at, length)
    np.testing.assert_array_equal(destination[at:at + length], source[1:1 + length])
    assert (destination[:at] == -1).all() and (destination[at + length:] == -1).all()


def test_transform_weights_packs_g_g_gt_by_element():
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    packed = transform_weights(weights)
    # pack_weights layout, group xi: panels of 6 then a last one of 4 (7 channels -> 6 + 4 rows),
    # each p-major over the 3 input channels.
    padded_rows, reduction = 10, 3
    for xi in range(16):
        a, b = divmod(xi, 4)
        for k in range(7):
            panel_start, height = (0, 6) if k < 6 else (6, 4)
            for c in range(3):
                at = xi * padded_rows * reduction + panel_start * reduction + c * height + (k - panel_start)
                want = (G @ weights[k, c].astype(np.float64) @ G.T)[a, b]
                assert packed[at] == pytest.approx(want, rel=1e-6, abs=1e-6)
