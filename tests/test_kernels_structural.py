"""FullyConnected, SoftMax, Split, Concatenation and Crop kernels against the naive references.

Every buffer is allocated at the maximum batch; input rows >= n and every output element start as
NaN, so reading a row >= n spoils a checked value. Outputs hold a NaN of their own bit pattern, so
that even a kernel copying a poisoned input row into an output row >= n is caught.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dynbatch.kernels import concatenation, crop, fully_connected, softmax, split
from tests.naive import REFERENCES
from tests.poison import poisoned_output, untouched

SPATIAL = st.integers(1, 12)
CHANNELS = st.integers(1, 8)


def draw_batches(data):
    max_batch = data.draw(st.integers(1, 5), label="max_batch")
    n = data.draw(st.one_of(st.just(1), st.just(max_batch), st.integers(1, max_batch)), label="n")
    return max_batch, n


def draw_sample_shape(data, rank, label="sample_shape"):
    """Non-batch dims of a rank-``rank`` tensor: channels, then spatial dims."""
    return data.draw(st.tuples(CHANNELS, *([SPATIAL] * (rank - 2))), label=label)


def poisoned_input(rng, shape, n):
    x = rng.uniform(-2.0, 2.0, size=shape).astype(np.float32)
    x[n:] = np.nan
    return x


def run_step(module, attrs, inputs, outputs, n):
    kernel, args = module.cpu_step(attrs, inputs, outputs)
    kernel(n, *args)
    return kernel, args


def check_outputs(outputs, expected, n, rtol=1e-4, atol=1e-5):
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got[:n].shape == want.shape
        np.testing.assert_allclose(got[:n], want, rtol=rtol, atol=atol)
        assert untouched(got[n:]), "a row >= n was written"


def check_one_signature_per_layer(kernel, args, max_batch, *, alone_in_kernel=True):
    """Running at several n compiles nothing after the first call. Where every test of the kernel
    passes the same types (``alone_in_kernel``), the kernel has exactly one signature."""
    kernel(max_batch, *args)
    compiled = list(kernel.signatures)
    for n in (1, max(1, max_batch // 2), max_batch, 1):
        kernel(n, *args)
    assert list(kernel.signatures) == compiled
    if alone_in_kernel:
        assert len(kernel.signatures) == 1


# FullyConnected

def fully_connected_case(rng, max_batch, n, sample_shape, out_features):
    in_features = int(np.prod(sample_shape))
    attrs = {
        "weights": rng.uniform(-1.0, 1.0, size=(out_features, in_features)).astype(np.float32),
        "biases": rng.uniform(-1.0, 1.0, size=out_features).astype(np.float32),
    }
    inputs = [poisoned_input(rng, (max_batch,) + sample_shape, n)]
    outputs = [poisoned_output((max_batch, out_features))]
    return attrs, inputs, outputs


@pytest.mark.parametrize("rank", [2, 3, 4])
@given(data=st.data())
def test_fully_connected_matches_reference(rank, data):
    max_batch, n = draw_batches(data)
    sample_shape = draw_sample_shape(data, rank)
    out_features = data.draw(st.integers(1, 10), label="out_features")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = fully_connected_case(rng, max_batch, n, sample_shape, out_features)
    run_step(fully_connected, attrs, inputs, outputs, n)
    expected = REFERENCES["FullyConnected"]([x[:n] for x in inputs], attrs)
    # The error of a float32 dot product grows with its length and the magnitude of its terms.
    magnitude = np.abs(inputs[0][:n].reshape(n, -1)) @ np.abs(attrs["weights"]).T
    check_outputs(outputs, expected, n, atol=1e-5 * (1.0 + magnitude.max()))


@pytest.mark.parametrize("n", [1, 5, 7, 13])
@pytest.mark.parametrize("activation", [None, {"type": "relu", "alpha": 0.1, "beta": 0.0}])
def test_fully_connected_blocks_match_reference(n, activation):
    """Sizes past every block of the kernel: rows in several micro-kernel panels (the last of 4
    rows or fewer), more inputs than a packed reduction block (gemm.KC) and outputs ending in a
    partial panel of NR, with and without a fused activation."""
    rng = np.random.default_rng(n)
    attrs, inputs, outputs = fully_connected_case(rng, 16, n, (3, 10, 10), 37)
    if activation is not None:
        attrs["activation"] = activation
    run_step(fully_connected, attrs, inputs, outputs, n)
    expected = REFERENCES["FullyConnected"]([inputs[0][:n]], {k: v for k, v in attrs.items() if k != "activation"})[0]
    if activation is not None:
        expected = np.where(expected > 0, expected, np.float32(0.1) * expected)
    magnitude = np.abs(inputs[0][:n].reshape(n, -1)) @ np.abs(attrs["weights"]).T
    check_outputs(outputs, [expected], n, atol=1e-5 * (1.0 + magnitude.max()))


def test_fully_connected_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = fully_connected_case(rng, 5, 5, (3, 4, 5), 7)
    kernel, args = fully_connected.cpu_step(attrs, inputs, outputs)
    check_one_signature_per_layer(kernel, args, 5)


# SoftMax

@pytest.mark.parametrize("rank, axis", [(rank, axis) for rank in (2, 3, 4) for axis in range(1, rank)])
@given(data=st.data())
def test_softmax_matches_reference(rank, axis, data):
    max_batch, n = draw_batches(data)
    sample_shape = draw_sample_shape(data, rank)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    # Large logits check the max-subtraction: exp(60) overflows float32 without it.
    scale = data.draw(st.sampled_from([1.0, 60.0]), label="scale")
    inputs = [poisoned_input(rng, (max_batch,) + sample_shape, n) * np.float32(scale)]
    outputs = [poisoned_output(inputs[0].shape)]
    attrs = {"axis": axis, "flatten": data.draw(st.booleans(), label="flatten")}
    run_step(softmax, attrs, inputs, outputs, n)
    check_outputs(outputs, REFERENCES["SoftMax"]([inputs[0][:n]], attrs), n)


@pytest.mark.parametrize("sample_shape, axis, flatten", [
    ((1500,), 1, False),        # classes, contiguous: softmax_run
    ((21, 13, 31), 1, False),   # per pixel over channels, inner 403 (no multiple of 8): softmax_lanes
    ((5, 12, 40), 2, True),     # over all the axes from 2 on
])
def test_softmax_over_the_serial_limit_matches_reference(sample_shape, axis, flatten):
    """Rows whose elements pass SERIAL_ELEMENTS run as parallel tasks (the drawn shapes above
    never do); n = 1 stays under it where a row does."""
    max_batch = 6
    rng = np.random.default_rng(1)
    inputs = [poisoned_input(rng, (max_batch,) + sample_shape, max_batch) * np.float32(30.0)]
    assert max_batch * np.prod(sample_shape) > softmax.SERIAL_ELEMENTS
    attrs = {"axis": axis, "flatten": flatten}
    for n in (1, 4, max_batch):
        x = inputs[0].copy()
        x[n:] = np.nan
        outputs = [poisoned_output(x.shape)]
        run_step(softmax, attrs, [x], outputs, n)
        check_outputs(outputs, REFERENCES["SoftMax"]([x[:n]], attrs), n)


@pytest.mark.parametrize("inner", [1, 3, 8, 11])
def test_softmax_special_values_stay_in_their_vector(inner):
    """-inf gives 0 and leaves the rest a softmax; a NaN makes its own vector NaN and no other
    (the lanes of softmax_lanes are separate vectors); logits 1000 apart give exact 0 and 1."""
    length = 19
    x = np.random.default_rng(2).uniform(-2, 2, (3, 1, length, inner)).astype(np.float32)
    x[0, 0, 3, 0] = -np.inf
    x[1, 0, :, :] = -500.0
    x[1, 0, 5, :] = 500.0
    x[2, 0, 17, inner - 1] = np.nan
    got = poisoned_output(x.shape)
    softmax.softmax_cpu(3, x, got)
    want = REFERENCES["SoftMax"]([x], {"axis": 2})[0].astype(np.float32)
    assert got[0, 0, 3, 0] == 0.0
    assert (got[1, 0, 5] == 1.0).all() and (np.delete(got[1, 0], 5, axis=0) == 0.0).all()
    assert np.isnan(got[2, 0, :, inner - 1]).all()
    assert not np.isnan(got[:2]).any() and not np.isnan(got[2, :, :, :inner - 1]).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_softmax_exponentials_within_2_ulps():
    """softmax([0, t]) for t <= -17.4 stores exp(t) unscaled (1 + exp(t) rounds to 1 in float32):
    the kernel's vector exp against float64's, down to the smallest normal float."""
    t = np.linspace(-87.3, -17.4, 100_003).astype(np.float32)
    x = np.stack([np.zeros_like(t), t], axis=1).reshape(-1, 1, 2, 1)
    got = np.empty_like(x)
    softmax.softmax_cpu(len(t), x, got)
    want = np.exp(t.astype(np.float64))
    ulps = np.abs(got[:, 0, 1, 0] - want) / np.spacing(want.astype(np.float32))
    assert ulps.max() <= 2.0, ulps.max()
    assert (got[:, 0, 0, 0] == 1.0).all()


def test_softmax_compiles_once():
    rng = np.random.default_rng(0)
    inputs = [poisoned_input(rng, (4, 3, 5, 6), 4)]
    kernel, args = softmax.cpu_step({"axis": 2, "flatten": False}, inputs, [poisoned_output(inputs[0].shape)])
    check_one_signature_per_layer(kernel, args, 4)


# Split

def draw_split_sizes(data, length):
    if data.draw(st.booleans(), label="equal_parts"):
        parts = data.draw(st.sampled_from([p for p in range(1, length + 1) if length % p == 0]), label="parts")
        return (length // parts,) * parts
    cuts = data.draw(st.lists(st.integers(1, length - 1), unique=True, max_size=4), label="cuts") if length > 1 else []
    bounds = [0] + sorted(cuts) + [length]
    return tuple(end - start for start, end in zip(bounds, bounds[1:]))


def split_case(rng, max_batch, n, shape, axis, sizes):
    inputs = [poisoned_input(rng, shape, n)]
    outputs = [poisoned_output(shape[:axis] + (size,) + shape[axis + 1:]) for size in sizes]
    return {"axis": axis, "sizes": sizes}, inputs, outputs


@given(data=st.data())
def test_split_matches_reference(data):
    max_batch, n = draw_batches(data)
    rank = data.draw(st.integers(2, 4), label="rank")
    axis = data.draw(st.integers(1, rank - 1), label="axis")
    shape = (max_batch,) + draw_sample_shape(data, rank)
    sizes = draw_split_sizes(data, shape[axis])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = split_case(rng, max_batch, n, shape, axis, sizes)
    run_step(split, attrs, inputs, outputs, n)
    check_outputs(outputs, REFERENCES["Split"]([inputs[0][:n]], attrs), n, rtol=0, atol=0)


def test_split_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = split_case(rng, 4, 4, (4, 3, 7, 5), 2, (2, 4, 1))
    kernel, args = split.cpu_step(attrs, inputs, outputs)
    # The tuple of pieces types the kernel, so other tests' piece counts add signatures of their own.
    check_one_signature_per_layer(kernel, args, 4, alone_in_kernel=False)


# Concatenation

def concatenation_case(rng, max_batch, n, shape, axis, sizes):
    inputs = [poisoned_input(rng, shape[:axis] + (size,) + shape[axis + 1:], n) for size in sizes]
    outputs = [poisoned_output(shape[:axis] + (sum(sizes),) + shape[axis + 1:])]
    return {"axis": axis}, inputs, outputs


@given(data=st.data())
def test_concatenation_matches_reference(data):
    max_batch, n = draw_batches(data)
    rank = data.draw(st.integers(2, 4), label="rank")
    axis = data.draw(st.integers(1, rank - 1), label="axis")
    shape = (max_batch,) + draw_sample_shape(data, rank)
    limit = 8 if axis == 1 else 12
    sizes = tuple(data.draw(st.lists(st.integers(1, limit), min_size=2, max_size=4), label="sizes"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = concatenation_case(rng, max_batch, n, shape, axis, sizes)
    run_step(concatenation, attrs, inputs, outputs, n)
    expected = REFERENCES["Concatenation"]([x[:n] for x in inputs], attrs)
    check_outputs(outputs, expected, n, rtol=0, atol=0)


def test_concatenation_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = concatenation_case(rng, 4, 4, (4, 3, 7, 5), 3, (2, 4, 1))
    kernel, args = concatenation.cpu_step(attrs, inputs, outputs)
    check_one_signature_per_layer(kernel, args, 4, alone_in_kernel=False)


# Crop

def crop_case(rng, max_batch, n, shape, offsets, dims):
    inputs = [poisoned_input(rng, shape, n)]
    outputs = [poisoned_output((max_batch,) + dims)]
    return {"offsets": offsets, "dims": dims}, inputs, outputs


@pytest.mark.parametrize("rank", [2, 3, 4])
@given(data=st.data())
def test_crop_matches_reference(rank, data):
    max_batch, n = draw_batches(data)
    shape = (max_batch,) + draw_sample_shape(data, rank)
    offsets = (0,) + tuple(
        data.draw(st.integers(0, size - 1), label=f"offset{axis}") for axis, size in enumerate(shape[1:], 1)
    )
    dims = tuple(
        data.draw(st.integers(1, size - offset), label=f"dim{axis}")
        for axis, (size, offset) in enumerate(zip(shape[1:], offsets[1:]), 1)
    )
    assume(dims != shape[1:] or any(offsets))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = crop_case(rng, max_batch, n, shape, offsets, dims)
    run_step(crop, attrs, inputs, outputs, n)
    expected = REFERENCES["Crop"]([inputs[0][:n]], attrs)
    check_outputs(outputs, expected, n, rtol=0, atol=0)


def test_crop_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = crop_case(rng, 5, 5, (5, 6, 9, 8), (0, 1, 2, 3), (4, 5, 5))
    kernel, args = crop.cpu_step(attrs, inputs, outputs)
    check_one_signature_per_layer(kernel, args, 5)
