"""The GEMM building blocks of the convolution kernel (dynbatch/kernels/gemm.py) against NumPy:
the LLVM-IR micro-kernels with every store option, the masked panel-row copies, and the weight
packing's layout."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from dynbatch.kernels.activation import ACTIVATION_CODES, CLAMP, RELU, RELU6
from dynbatch.kernels.epilogue import NO_ACTIVATION
from dynbatch.kernels.gemm import (KC, MAX_TRANSPOSE_COLUMNS, MAX_VECTOR_STRIDE, MR, NR, masked_copy_panel_row,
                                   masked_copy_panel_row_two_runs, micro_kernel_4, micro_kernel_6,
                                   micro_kernel_10, micro_kernel_12, micro_kernel_12x8_product, micro_kernel_16,
                                   micro_kernel_24, micro_kernel_panels, micro_kernel_6x32, micro_kernel_10x32,
                                   micro_kernel_12x32, micro_kernel_pair_panels, PANELS_PER_CALL, WIDE_VECTORS,
                                   NARROW_COLUMNS, pack_weights, panel_rows, rows_product, short_panel_product,
                                   SHORT_PANEL_COLUMNS, transpose_copy_panel_rows)
from tests.naive import REFERENCES


def micro_kernel_caller(kernel):
    """A jitted call of one micro-kernel intrinsic (an intrinsic is called from Numba code only)."""
    @njit
    def call(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish, biases, bias_offset,
             residual, has_residual, activation, alpha, beta):
        kernel(kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate, finish, biases, bias_offset,
               residual, has_residual, activation, alpha, beta)
    return call


CALL_MICRO_KERNEL = {mr: micro_kernel_caller(kernel) for mr, kernel in (
    (4, micro_kernel_4), (6, micro_kernel_6), (10, micro_kernel_10), (12, micro_kernel_12), (16, micro_kernel_16),
    (24, micro_kernel_24))}


@njit
def call_short_panel_product(valid, pair, full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows, accumulate):
    return short_panel_product(valid, pair, full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows,
                               accumulate)


@njit
def call_masked_copies(destination, source, source_offset, mask):
    masked_copy_panel_row(destination, 0, source, source_offset, 1, mask, 0)
    masked_copy_panel_row(destination, NR, source, source_offset, 2, mask, NR)


def activate(values, code, alpha, beta):
    """The activation of ``code`` (or none), by the naive reference of the Activation layer."""
    if code == NO_ACTIVATION:
        return values
    name = next(name for name, named_code in ACTIVATION_CODES.items() if named_code == code)
    return REFERENCES["Activation"]([values], {"type": name, "alpha": alpha, "beta": beta})[0]


# Every combination of the store flags, each a store sequence of its own in the micro-kernel.
@pytest.mark.parametrize("accumulate,finish,has_residual,activation",
                         list(itertools.product([False, True], [False, True], [False, True],
                                                [NO_ACTIVATION, RELU, RELU6, CLAMP])))
@settings(deadline=None, max_examples=12)
@given(mr=st.sampled_from(sorted(CALL_MICRO_KERNEL)), kc=st.integers(1, 40), ldb_extra=st.integers(0, 5),
       ldc_extra=st.integers(0, 7), rows_missing=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_micro_kernel_matches_numpy(mr, kc, ldb_extra, ldc_extra, rows_missing, accumulate, finish, has_residual,
                                    activation, seed):
    rng = np.random.default_rng(seed)
    ldb, ldc = NR + ldb_extra, NR + ldc_extra
    b_offset = 5
    b = rng.uniform(-1, 1, b_offset + kc * ldb).astype(np.float32)
    block = BlockCase(rng, mr, kc, ldc, NR, max(1, mr - rows_missing), activation)
    CALL_MICRO_KERNEL[mr](kc, block.a, block.a_offset, b, b_offset, ldb, block.c, block.c_offset, ldc, block.rows,
                          accumulate, finish, block.biases, block.bias_offset, block.residual, has_residual,
                          activation, block.alpha, block.beta)
    block.check(b[b_offset:].reshape(kc, ldb)[:, :NR], accumulate, finish, has_residual)


class BlockCase:
    """The A panels, c, residual and biases of one micro-kernel call on random data, and the
    check of what it stored: rows < ``rows`` of c (``width`` columns each, ldc apart) hold the
    reference product (through the epilogue where ``finish``); every other float of c is as it
    was."""
    a_offset, c_offset, bias_offset = 3, 7, 2

    def __init__(self, rng, mr, kc, ldc, width, rows, activation):
        self.mr, self.kc, self.ldc, self.width, self.rows, self.activation = mr, kc, ldc, width, rows, activation
        self.a = rng.uniform(-1, 1, self.a_offset + kc * mr).astype(np.float32)
        self.c = rng.uniform(-1, 1, self.c_offset + mr * ldc + NR).astype(np.float32)
        self.residual = rng.uniform(-1, 1, self.c.shape).astype(np.float32)
        self.biases = rng.uniform(-1, 1, self.bias_offset + mr).astype(np.float32)
        self.alpha, self.beta = np.float32(0.1 if activation == RELU else -0.3), np.float32(0.4)
        self.before = self.c.copy()

    def check(self, columns, accumulate, finish, has_residual):
        """columns: (kc, width) of B as the kernel should have read them."""
        # (mr, kc): mr // 6 panels of 6 rows one after the other, a[p * 6 + i] each, then one
        # of the mr % 6 others (a[p * (mr % 6) + i])
        parts = np.split(self.a[self.a_offset:], [self.kc * MR * (p + 1) for p in range(self.mr // MR)])
        panel = np.concatenate([part.reshape(self.kc, -1).T for part in parts if part.size]).astype(np.float64)
        expected = self.before.copy()
        for i in range(self.rows):
            at = slice(self.c_offset + i * self.ldc, self.c_offset + i * self.ldc + self.width)
            value = panel[i] @ columns.astype(np.float64) + (self.before[at] if accumulate else 0.0)
            if finish:
                value = value + (self.residual[at] if has_residual else 0.0) + self.biases[self.bias_offset + i]
                value = activate(value, self.activation, self.alpha, self.beta)
            expected[at] = value
        np.testing.assert_allclose(self.c, expected, rtol=1e-5, atol=1e-5)  # rows >= rows and the gaps untouched


def pair_kernel_caller(kernel):
    """A jitted call of one two-panel micro-kernel intrinsic (``micro_kernel_12x32``'s arguments)."""
    @njit
    def call(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, rows, accumulate, finish, biases,
             bias_offset, residual, has_residual, activation, alpha, beta):
        kernel(kc, a, a_offset, b, b_offset, b_second, ldb, c, c_offset, ldc, rows, accumulate, finish, biases,
               bias_offset, residual, has_residual, activation, alpha, beta)
    return call


CALL_PAIR_KERNEL = {mr: pair_kernel_caller(kernel) for mr, kernel in (
    (6, micro_kernel_6x32), (10, micro_kernel_10x32), (12, micro_kernel_12x32))}


@pytest.mark.parametrize("accumulate,finish,has_residual,activation",
                         list(itertools.product([False, True], [False, True], [False, True],
                                                [NO_ACTIVATION, RELU, CLAMP])))
@settings(deadline=None, max_examples=10)
@given(mr=st.sampled_from(sorted(CALL_PAIR_KERNEL)), kc=st.integers(1, 40), in_place=st.booleans(),
       ldb_extra=st.integers(0, 5), ldc_extra=st.integers(0, 7), rows_missing=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1))
def test_pair_micro_kernel_matches_numpy(mr, kc, in_place, ldb_extra, ldc_extra, rows_missing, accumulate, finish,
                                         has_residual, activation, seed):
    """The mr x 32 kernels: columns NR.. from B's second panel, b_second after the first (the next
    packed panel, kc * NR on, or the next NR columns of rows read in place), stored NR after the
    first panel's in each row of c, every store option as the one-panel kernels."""
    rng = np.random.default_rng(seed)
    b_offset = 5
    if in_place:  # one matrix of rows ldb long, the two panels side by side
        ldb, b_second = 2 * NR + ldb_extra, NR
        b = rng.uniform(-1, 1, b_offset + kc * ldb).astype(np.float32)
        columns = b[b_offset:].reshape(kc, ldb)[:, :2 * NR]
    else:  # two packed panels, each kc rows of NR (plus ldb_extra floats a row), one after the other
        ldb = NR + ldb_extra
        b_second = kc * ldb + ldb_extra
        b = rng.uniform(-1, 1, b_offset + b_second + kc * ldb).astype(np.float32)
        first = b[b_offset:b_offset + kc * ldb].reshape(kc, ldb)[:, :NR]
        second = b[b_offset + b_second:].reshape(kc, ldb)[:, :NR]
        columns = np.concatenate([first, second], axis=1)
    ldc = 2 * NR + ldc_extra
    block = BlockCase(rng, mr, kc, ldc, 2 * NR, max(1, mr - rows_missing), activation)
    CALL_PAIR_KERNEL[mr](kc, block.a, block.a_offset, b, b_offset, b_second, ldb, block.c, block.c_offset, ldc,
                         block.rows, accumulate, finish, block.biases, block.bias_offset, block.residual,
                         has_residual, activation, block.alpha, block.beta)
    block.check(columns, accumulate, finish, has_residual)


@njit
def call_micro_kernel_pair_panels(following, remaining, kc, a, b, c, ldc, rows, biases):
    return micro_kernel_pair_panels(following, remaining, kc, a, 0, b, 0, kc * NR, NR, c, 0, ldc, rows, False, True,
                                    biases, 0, c, False, NO_ACTIVATION, np.float32(0.0), np.float32(0.0))


@pytest.mark.parametrize("following,short", [(f, s) for f in range(6) for s in (False, True) if f or s])
@pytest.mark.parametrize("rows", [1, 6, 7, 10, 12, 13, 30])
def test_micro_kernel_pair_panels_takes_one_or_two_a_panels(following, short, rows):
    """Of ``following`` full A panels, then (``short``) the 4-row last one, against two packed B
    panels: two full ones a call (12 x 32) unless that would leave the short one alone, the last
    full one with the short one (10 x 32), a lone full one (6 x 32), a lone short one (1); the
    rows of the panels taken (at most ``rows``) are the product plus the bias in all 32 columns,
    and no row past them is touched."""
    rng = np.random.default_rng(rows * 100 + following * 2 + short)
    remaining = following + short
    kc, ldc, most = 9, 2 * NR + 3, following * MR + 4 * short
    a = rng.uniform(-1, 1, most * kc).astype(np.float32)
    b = rng.uniform(-1, 1, 2 * kc * NR).astype(np.float32)
    biases = rng.uniform(-1, 1, most).astype(np.float32)
    c = rng.uniform(-1, 1, most * ldc + 1).astype(np.float32)
    before = c.copy()
    taken = call_micro_kernel_pair_panels(following, remaining, kc, a, b, c, ldc, rows, biases)
    assert taken == (2 if following >= 3 or (following == 2 and not short) or (following == 1 and short) else 1)
    panels = [a[p * MR * kc:(p + 1) * MR * kc].reshape(kc, MR).T for p in range(following)]
    weights = np.concatenate(panels + ([a[following * MR * kc:].reshape(kc, 4).T] if short else []))
    columns = np.concatenate([b[:kc * NR].reshape(kc, NR), b[kc * NR:].reshape(kc, NR)], axis=1)
    product = weights.astype(np.float64) @ columns.astype(np.float64) + biases[:, None]
    stored = min(rows, sum(len(panel) for panel in (panels + [[0] * 4])[:taken]))
    for i in range(most):
        line = slice(i * ldc, i * ldc + 2 * NR)
        if i < stored:
            np.testing.assert_allclose(c[line], product[i], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(c[line], before[line])


@njit
def call_micro_kernel_panels(following, remaining, kc, a, b, c, ldc, rows, biases):
    return micro_kernel_panels(following, remaining, kc, a, 0, b, 0, NR, c, 0, ldc, rows, False, True, biases, 0, c,
                               False, NO_ACTIVATION, np.float32(0.0), np.float32(0.0))


@pytest.mark.parametrize("following,short", [(f, s) for f in range(7) for s in (False, True) if f or s])
@pytest.mark.parametrize("rows", [1, 6, 7, 12, 13, 24, 30, 40])
def test_micro_kernel_panels_takes_several_panels_a_call_with_wide_vectors(following, short, rows):
    """Of ``following`` full A panels, then (``short``) the layer's 4-row last one: where the CPU
    has AVX-512, the short one and the one or two full ones before it go to one call (10 or 16
    rows), else four full ones to the 24 x 16 kernel (4 returned) unless only the short one
    would be left, else two to the 12 x 16 one (2), else the first alone (1, as always on AVX2);
    the rows of the panels taken (at most ``rows``) are the product plus the bias, and no row
    past them is touched."""
    rng = np.random.default_rng(rows * 100 + following * 2 + short)
    remaining = following + short
    kc, ldc, most = 9, NR + 3, following * MR + 4 * short
    a = rng.uniform(-1, 1, most * kc).astype(np.float32)
    b = rng.uniform(-1, 1, kc * NR).astype(np.float32)
    biases = rng.uniform(-1, 1, most).astype(np.float32)
    c = rng.uniform(-1, 1, most * ldc + 1).astype(np.float32)
    before = c.copy()
    taken = call_micro_kernel_panels(following, remaining, kc, a, b, c, ldc, rows, biases)
    if not WIDE_VECTORS:
        assert taken == 1
    elif short and following <= 2:
        assert taken == remaining
    else:
        assert taken == (4 if following >= 4 and (following, short) != (4, True) else 2 if following >= 2 else 1)
    assert PANELS_PER_CALL == (4 if WIDE_VECTORS else 1)
    panels = [a[p * MR * kc:(p + 1) * MR * kc].reshape(kc, MR).T for p in range(following)]
    weights = np.concatenate(panels + ([a[following * MR * kc:].reshape(kc, 4).T] if short else []))
    product = weights.astype(np.float64) @ b.reshape(kc, NR).astype(np.float64) + biases[:, None]
    stored = min(rows, sum(len(panel) for panel in (panels + [[0] * 4])[:taken]))
    for i in range(most):
        line = slice(i * ldc, i * ldc + NR)
        if i < stored:
            np.testing.assert_allclose(c[line], product[i], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(c[line], before[line])


@njit
def call_rows_product(kc, a, a_offset, lda, rows, b, ldb, c, c_offset, ldc, accumulate):
    rows_product(kc, a, a_offset, lda, rows, b, 0, ldb, c, c_offset, ldc, accumulate)


@settings(deadline=None, max_examples=60)
@given(rows=st.integers(1, MR), kc=st.integers(1, 40), lda_extra=st.integers(0, 5), ldb_extra=st.integers(0, 5),
       ldc_extra=st.integers(0, 7), accumulate=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_rows_product_matches_numpy(rows, kc, lda_extra, ldb_extra, ldc_extra, accumulate, seed):
    """A's rows read in place, lda apart (FullyConnected's input rows): 1 to 6 of them, each
    kernel (1, 2 and 6 rows) with rows past ``rows`` NaN in A (never used) and untouched in c."""
    rng = np.random.default_rng(seed)
    lda, ldb, ldc, a_offset, c_offset = kc + lda_extra, NR + ldb_extra, NR + ldc_extra, 3, 5
    a = np.full(a_offset + MR * lda, np.nan, np.float32)
    for i in range(rows):
        a[a_offset + i * lda:a_offset + i * lda + kc] = rng.uniform(-1, 1, kc)
    b = rng.uniform(-1, 1, kc * ldb).astype(np.float32)
    c = rng.uniform(-1, 1, c_offset + MR * ldc + NR).astype(np.float32)
    before = c.copy()
    call_rows_product(kc, a, a_offset, lda, rows, b, ldb, c, c_offset, ldc, accumulate)
    columns = b.reshape(kc, ldb)[:, :NR].astype(np.float64)
    expected = before.copy()
    for i in range(rows):
        at = c_offset + i * ldc
        expected[at:at + NR] = (a[a_offset + i * lda:a_offset + i * lda + kc].astype(np.float64) @ columns
                                + (before[at:at + NR] if accumulate else 0.0))
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)  # rows >= rows and the gaps untouched


@settings(deadline=None, max_examples=120)
@given(valid=st.integers(1, SHORT_PANEL_COLUMNS), pair=st.booleans(), full=st.booleans(), kc=st.integers(1, 40),
       ldb_extra=st.integers(0, 5), ldc_extra=st.integers(0, 7), rows=st.integers(1, 14), accumulate=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_short_panel_product_matches_numpy(valid, pair, full, kc, ldb_extra, ldc_extra, rows, accumulate, seed):
    """A panel of B with ``valid`` columns: the valid ones of every stored row are the product
    (plus c where accumulating); a column past them holds zero (the narrow kernel's), B's product
    there (the 6 x 16 and 12 x 8 kernels store whole vectors) or, past the 12 x 8 kernel's 8,
    what it held; no row at or past ``rows`` is touched."""
    full = full or pair  # (a pair is two full panels)
    rng = np.random.default_rng(seed)
    heights = [MR, MR] if pair else [MR if full else 4]
    ldb, ldc = NR + ldb_extra, NR + ldc_extra
    a_offset, b_offset, c_offset = 3, 5, 7
    # A ends the array: a masked load must not read past it.
    a = rng.uniform(-1, 1, a_offset + kc * sum(heights)).astype(np.float32)
    b = rng.uniform(-1, 1, b_offset + kc * ldb).astype(np.float32)
    c = rng.uniform(-1, 1, c_offset + 2 * MR * ldc + NR).astype(np.float32)
    before = c.copy()
    taken = call_short_panel_product(valid, pair, full, kc, a, a_offset, b, b_offset, ldb, c, c_offset, ldc, rows,
                                     accumulate)
    assert taken == len(heights)
    panels, at = [], a_offset
    for height in heights:
        panels.append(a[at:at + kc * height].reshape(kc, height).T)
        at += kc * height
    product = np.concatenate(panels).astype(np.float64) @ b[b_offset:].reshape(kc, ldb)[:, :NR].astype(np.float64)
    stored = min(rows, sum(heights))
    for i in range(2 * MR + 1):
        line = slice(c_offset + i * ldc, c_offset + i * ldc + NR)
        if i >= stored:
            np.testing.assert_array_equal(c[line], before[line])
            continue
        expected = product[i] + (before[line] if accumulate else 0.0)
        np.testing.assert_allclose(c[line][:valid], expected[:valid], rtol=1e-5, atol=1e-5)
        past = slice(valid, NR)
        got = c[line][past]
        if valid <= NARROW_COLUMNS:
            np.testing.assert_array_equal(got, 0.0)
        else:
            computed = np.isclose(got, expected[past], rtol=1e-5, atol=1e-5)
            left = (got == before[line][past]) & (np.arange(valid, NR) >= 8)
            assert np.all(computed | left)


def test_only_the_12x8_kernels_loop_is_kept_from_unrolling():
    """The 12 x 8 kernel's reduction loop carries llvm.loop.unroll.disable: unrolled by 2, LLVM
    loaded both steps' A ahead and kept 8 of the 12 accumulators on the stack (0.90x-0.94x the
    time of two 6 x 16 calls, 0.56x not unrolled). The 6 x 16 kernel's stays unrolled (whole
    layers took up to 1.13x the time without)."""
    @njit
    def twelve_by_eight(a, b, c):
        micro_kernel_12x8_product(8, a, 0, b, 0, NR, c, 0, NR, 12, False, False, c, 0, c, False, 0,
                                  np.float32(0.0), np.float32(0.0))

    @njit
    def six_by_sixteen(a, b, c):
        micro_kernel_6(8, a, 0, b, 0, NR, c, 0, NR, 6, False, False, c, 0, c, False, 0, np.float32(0.0),
                       np.float32(0.0))

    a, b, c = (np.ones(size, np.float32) for size in (12 * 8, 8 * NR, 12 * NR))
    twelve_by_eight(a, b, c)
    six_by_sixteen(a, b, c)
    assert (c[:8] == 8.0).all()
    ir_12x8 = next(iter(twelve_by_eight.inspect_llvm().values()))
    ir_6x16 = next(iter(six_by_sixteen.inspect_llvm().values()))
    assert '!"llvm.loop.unroll.disable"' in ir_12x8 and "!llvm.loop" in ir_12x8
    assert "llvm.loop.unroll.disable" not in ir_6x16


def test_masked_copies_select_and_never_multiply():
    """The mask selects: what lies under a 0 (inf, NaN) becomes 0, not 0 * inf = NaN."""
    source = np.arange(2 * NR + 3, dtype=np.float32)
    source[4], source[9] = np.inf, np.nan
    mask = np.ones(2 * NR, np.float32)
    mask[[4 - 3, 9 - 3]] = 0.0                       # the stride-1 row's lanes over inf and NaN
    mask[NR + (9 - 3) // 2] = 0.0                    # the stride-2 row's lane over NaN (source 9)
    destination = np.full(2 * NR, -1.0, np.float32)
    call_masked_copies(destination, source, 3, mask)
    expected_1 = np.where(mask[:NR] != 0, source[3:3 + NR], 0.0)
    expected_2 = np.where(mask[NR:] != 0, source[3:3 + 2 * NR:2], 0.0)
    np.testing.assert_array_equal(destination[:NR], expected_1)
    np.testing.assert_array_equal(destination[NR:], expected_2)


@njit
def call_strided_copy(destination, source, first, second, split, stride, mask, two_runs):
    if two_runs:
        masked_copy_panel_row_two_runs(destination, 0, source, first, second, split, stride, mask, 0)
    else:
        masked_copy_panel_row(destination, 0, source, first, stride, mask, 0)


@given(stride=st.integers(1, MAX_VECTOR_STRIDE), two_runs=st.booleans(), split=st.integers(1, NR - 1),
       first=st.integers(0, 20), second=st.integers(0, 20), seed=st.integers(0, 2**32 - 1))
def test_strided_copies_read_every_stride_th_input(stride, two_runs, split, first, second, seed):
    """Lane j reads offset + j * stride, from the first offset (every lane of one run; the lanes
    before the split of two runs) or the second (the others), and the mask still selects: NaN
    under a 0 becomes 0."""
    rng = np.random.default_rng(seed)
    source = rng.uniform(-1, 1, 20 + MAX_VECTOR_STRIDE * NR).astype(np.float32)
    source[rng.integers(0, source.size, 3)] = np.nan
    mask = (rng.random(NR) < 0.8).astype(np.float32)
    destination = np.full(NR, -1.0, np.float32)
    call_strided_copy(destination, source, first, second, split, stride, mask, two_runs)
    j = np.arange(NR)
    read = source[np.where((j < split) | (not two_runs), first, second) + stride * j]
    np.testing.assert_array_equal(destination, np.where(mask != 0, read, 0.0))


@njit
def call_transpose_copy(destination, destination_offset, source, offset, bases, bases_offset, mask, mask_offset,
                        mask_stride, columns):
    transpose_copy_panel_rows(destination, destination_offset, source, offset, bases, bases_offset, mask, mask_offset,
                              mask_stride, columns)


@given(columns=st.integers(1, MAX_TRANSPOSE_COLUMNS), offset=st.integers(0, 30), bases_offset=st.integers(0, 5),
       mask_stride=st.integers(NR, 2 * NR), seed=st.integers(0, 2**32 - 1))
def test_transposed_copy_packs_each_lanes_own_window_row(columns, offset, bases_offset, mask_stride, seed):
    """Row c, lane j reads source[bases[j] + offset + c], each lane from anywhere (a panel of
    windows over several image rows); the mask of row c starts c * mask_stride on and selects:
    NaN and inf under a 0 become 0. Rows past ``columns`` and elements past the destination's
    rows are not written."""
    rng = np.random.default_rng(seed)
    source = rng.uniform(-1, 1, 300).astype(np.float32)
    source[rng.integers(0, source.size, 6)] = np.nan
    source[rng.integers(0, source.size, 3)] = np.inf
    bases = rng.integers(0, source.size - offset - MAX_TRANSPOSE_COLUMNS + 1, bases_offset + NR + 3).astype(np.intp)
    mask = (rng.random(MAX_TRANSPOSE_COLUMNS * mask_stride + NR) < 0.7).astype(np.float32)
    mask_offset = int(rng.integers(0, NR))
    destination = np.full((MAX_TRANSPOSE_COLUMNS + 2) * NR, -7.0, np.float32)
    call_transpose_copy(destination, NR, source, offset, bases, bases_offset, mask, mask_offset, mask_stride, columns)
    lanes = bases[bases_offset:bases_offset + NR]
    c = np.arange(columns)[:, None]
    read = source[lanes[None, :] + offset + c]
    kept = mask[mask_offset + c * mask_stride + np.arange(NR)[None, :]] != 0
    rows = destination.reshape(-1, NR)
    np.testing.assert_array_equal(rows[1:1 + columns], np.where(kept, read, 0.0))
    np.testing.assert_array_equal(rows[0], -7.0)
    np.testing.assert_array_equal(rows[1 + columns:], -7.0)


@given(group=st.integers(1, 3), rows=st.integers(1, 20), reduction=st.integers(1, KC + 40))
def test_pack_weights_layout(group, rows, reduction):
    weights = np.random.default_rng(rows).standard_normal((group, rows, reduction)).astype(np.float32)
    packed = pack_weights(weights)
    heights = panel_rows(rows)
    padded_rows = sum(heights)
    assert all(h in (4, MR) for h in heights) and padded_rows - rows < MR
    assert packed.shape == (group * padded_rows * reduction,)
    for g in range(group):
        for pc in range(0, reduction, KC):
            kc = min(KC, reduction - pc)
            m0 = 0
            for height in heights:
                at = g * padded_rows * reduction + pc * padded_rows + m0 * kc   # the docstring's offset
                block = packed[at:at + height * kc].reshape(kc, height).T
                real = min(height, rows - m0)
                np.testing.assert_array_equal(block[:real], weights[g, m0:m0 + real, pc:pc + kc])
                assert not block[real:].any()  # padding rows are zero
                m0 += height
