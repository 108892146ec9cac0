"""Activation, Power, Eltwise and BatchNormalization kernels against the naive references.

Every buffer is allocated at the maximum batch; input rows >= n and every output element start as
NaN, so reading a row >= n spoils a checked value. Outputs hold a NaN of their own bit pattern, so
that even a kernel carrying a poisoned input row into an output row >= n is caught.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynbatch.kernels import activation, batch_normalization, eltwise, power
from tests.naive import REFERENCES
from tests.poison import poisoned_output, untouched

SPATIAL = st.integers(1, 12)
CHANNELS = st.integers(1, 8)
# Inputs where exp overflows in float32 (|x| > 88.7) or float64 (|x| > 709), and NaN.
EXTREME_VALUES = [-1e4, -1e3, -710.0, -100.0, -89.0, -88.0, -20.0, -1e-3, 0.0, 1e-3, 20.0,
                  88.0, 89.0, 100.0, 710.0, 1e3, 1e4, np.nan]


def draw_batches(data):
    max_batch = data.draw(st.integers(1, 5), label="max_batch")
    n = data.draw(st.one_of(st.just(1), st.just(max_batch), st.integers(1, max_batch)), label="n")
    return max_batch, n


def draw_sample_shape(data, rank, label="sample_shape"):
    """Non-batch dims of a rank-``rank`` tensor: channels, then spatial dims."""
    return data.draw(st.tuples(CHANNELS, *([SPATIAL] * (rank - 2))), label=label)


def draw_rng(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def poison_rows(x, n):
    x[n:] = np.nan
    return x


def run_step(module, attrs, inputs, outputs, n):
    kernel, args = module.cpu_step(attrs, inputs, outputs)
    kernel(n, *args)
    return kernel, args


def check_outputs(outputs, expected, n, rtol=1e-4, atol=1e-5):
    """Rows < n match the float64 reference rounded to float32 (so that a value beyond float32's
    range is inf on both sides); rows >= n still hold the output poison."""
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got[:n].shape == want.shape
        with np.errstate(over="ignore"):
            want = want.astype(np.float32)
        np.testing.assert_allclose(got[:n], want, rtol=rtol, atol=atol)
        assert untouched(got[n:]), "a row >= n was written"


def check_one_signature(kernel, args, max_batch, same_types=lambda signature: True):
    """Running at several n compiles nothing, and exactly one compiled signature of the kernel
    has the argument types selected by ``same_types`` (every test passes those same types)."""
    kernel(max_batch, *args)
    compiled = list(kernel.signatures)
    for n in (1, max(1, max_batch // 2), max_batch, 1):
        kernel(n, *args)
    assert list(kernel.signatures) == compiled
    assert len([s for s in kernel.signatures if same_types(s)]) == 1


# Activation

ACTIVATION_TYPES = sorted(activation.ACTIVATION_CODES)


def draw_activation_attrs(data, activation_type):
    alpha = beta = 0.0
    if activation_type == "relu":
        alpha = data.draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)), label="negative_slope")
    elif activation_type == "elu":
        alpha = data.draw(st.floats(0.1, 2.0), label="alpha")
    elif activation_type == "clamp":
        alpha = data.draw(st.floats(-3.0, 1.0), label="min")
        beta = alpha + data.draw(st.floats(0.0, 4.0), label="max - min")
    return {"type": activation_type, "alpha": alpha, "beta": beta}


def activation_case(attrs, x, max_batch, n):
    """x: the real rows (n, ...); returns the max-batch input and output buffers."""
    source = np.full((max_batch,) + x.shape[1:], np.nan, dtype=np.float32)
    source[:n] = x
    return [source], [poisoned_output(source.shape)]


@given(data=st.data())
def test_activation_matches_reference(data):
    activation_type = data.draw(st.sampled_from(ACTIVATION_TYPES), label="type")
    attrs = draw_activation_attrs(data, activation_type)
    rank = data.draw(st.integers(2, 4), label="rank")
    sample_shape = draw_sample_shape(data, rank)
    max_batch, n = draw_batches(data)
    rng = draw_rng(data)
    magnitude = data.draw(st.sampled_from([1.0, 10.0, 100.0]), label="magnitude")
    x = (rng.standard_normal((n,) + sample_shape) * magnitude).astype(np.float32)
    if data.draw(st.booleans(), label="with_extremes"):
        flat = x.reshape(-1)
        positions = rng.choice(flat.size, size=min(flat.size, 6), replace=False)
        flat[positions] = rng.choice(EXTREME_VALUES, size=positions.size)
    inputs, outputs = activation_case(attrs, x, max_batch, n)
    run_step(activation, attrs, inputs, outputs, n)
    check_outputs(outputs, REFERENCES["Activation"]([inputs[0][:n]], attrs), n)


@pytest.mark.parametrize("activation_type", ACTIVATION_TYPES)
def test_activation_extreme_inputs(activation_type):
    """Overflowing exp (softplus, sigmoid, elu, exp, gelu) still gives the limit, NaN stays NaN."""
    x = np.array([EXTREME_VALUES, EXTREME_VALUES[::-1]], dtype=np.float32)
    attrs = {"type": activation_type, "alpha": 0.0, "beta": 0.0}
    if activation_type in ("relu", "elu"):
        attrs["alpha"] = 0.5
    elif activation_type == "clamp":
        attrs.update(alpha=-2.0, beta=3.0)
    inputs, outputs = activation_case(attrs, x, max_batch=3, n=2)
    run_step(activation, attrs, inputs, outputs, 2)
    check_outputs(outputs, REFERENCES["Activation"]([x], attrs), 2)


def test_activation_compiles_once():
    """Every type, rank and n goes through the one signature of activation_cpu."""
    for rank, activation_type in enumerate(ACTIVATION_TYPES):
        shape = (4, 3, 5, 2)[: 2 + rank % 3]
        attrs = {"type": activation_type, "alpha": 0.5, "beta": 1.0}
        x = np.ones(shape, dtype=np.float32)
        kernel, args = activation.cpu_step(attrs, [x], [np.empty_like(x)])
        check_one_signature(kernel, args, max_batch=4)


# Power

@given(data=st.data())
def test_power_matches_reference(data):
    # Scales whose product with a float32 is exact in float64, so that the kernel and the
    # reference raise exactly the same base (a base near 0 makes a negative power ill-conditioned;
    # the kernel's float32 shift + scale * x is one fused multiply-add, rounded once). Powers are
    # float32 values, as the kernel takes them: a float64 power such as 1e-49 or 2 - 1e-16 would
    # round to an integer, which raises a negative base where the reference gives NaN.
    attrs = {
        "power": data.draw(st.one_of(st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, -0.5, -1.0, -2.0]),
                                     st.floats(-3.0, 3.0, width=32)), label="power"),
        "scale": data.draw(st.sampled_from([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]), label="scale"),
        "shift": data.draw(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]), label="shift"),
    }
    rank = data.draw(st.integers(2, 4), label="rank")
    sample_shape = draw_sample_shape(data, rank)
    max_batch, n = draw_batches(data)
    rng = draw_rng(data)
    x = poison_rows(rng.uniform(-2.0, 2.0, (max_batch,) + sample_shape).astype(np.float32), n)
    outputs = [poisoned_output(x.shape)]
    run_step(power, attrs, [x], outputs, n)
    check_outputs(outputs, REFERENCES["Power"]([x[:n]], attrs), n)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0, 0.5, 2.5, -0.5, -1.0, -2.0])
def test_power_every_special_case(exponent):
    """Each power the kernel may special-case, on negative, zero and positive bases."""
    x = np.array([[-3.0, -1.0, -0.25, 0.0], [0.25, 0.5, 1.0, 4.0], [np.nan] * 4], dtype=np.float32)
    attrs = {"power": exponent, "scale": 2.0, "shift": -0.5}
    outputs = [poisoned_output(x.shape)]
    run_step(power, attrs, [x], outputs, 2)
    check_outputs(outputs, REFERENCES["Power"]([x[:2]], attrs), 2)


def test_power_compiles_once():
    for shape, exponent in (((4, 3), 2.0), ((4, 3, 5), 0.5), ((4, 3, 5, 2), -1.0)):
        x = np.ones(shape, dtype=np.float32)
        attrs = {"power": exponent, "scale": 1.0, "shift": 0.0}
        kernel, args = power.cpu_step(attrs, [x], [np.empty_like(x)])
        check_one_signature(kernel, args, max_batch=4)


# Eltwise

ELTWISE_OPERATIONS = sorted(eltwise.ELTWISE_CODES)


def eltwise_inputs(rng, operation, shapes, n):
    """Max-batch inputs with values that keep every operation finite: nonzero divisors and a
    positive base for pow."""
    inputs = []
    for index, shape in enumerate(shapes):
        if operation == "div" and index > 0:
            x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        elif operation == "pow":
            x = rng.uniform(0.5, 2.0, shape) if index == 0 else rng.uniform(-2.0, 2.0, shape)
        else:
            x = rng.standard_normal(shape)
        inputs.append(poison_rows(x.astype(np.float32), n))
    return inputs


def check_eltwise(rng, operation, coeff, shapes, n):
    output_shape = np.broadcast_shapes(*shapes)
    attrs = {"operation": operation, "coeff": tuple(coeff)}
    inputs = eltwise_inputs(rng, operation, shapes, n)
    outputs = [poisoned_output(output_shape)]
    kernel, _ = run_step(eltwise, attrs, inputs, outputs, n)
    check_outputs(outputs, REFERENCES["Eltwise"]([x[:n] for x in inputs], attrs), n)
    return kernel


@given(data=st.data())
def test_eltwise_matches_reference(data):
    operation = data.draw(st.sampled_from(ELTWISE_OPERATIONS), label="operation")
    count = data.draw(st.integers(2, 3), label="inputs")
    rank = data.draw(st.integers(2, 4), label="rank")
    sample_shape = draw_sample_shape(data, rank, label="output_sample_shape")
    max_batch, n = draw_batches(data)
    shapes = []
    for index in range(count):
        broadcast = data.draw(st.lists(st.booleans(), min_size=rank - 1, max_size=rank - 1),
                              label=f"broadcast_dims_{index}")
        dims = tuple(1 if flag else size for flag, size in zip(broadcast, sample_shape))
        shapes.append((max_batch,) + dims)
    # Coefficients other than 1 are drawn for every operation: only sum may use them.
    coeff = data.draw(st.lists(st.sampled_from([1.0, -1.0, 0.5, 2.0, -0.25]),
                               min_size=count, max_size=count), label="coeff")
    check_eltwise(draw_rng(data), operation, coeff, shapes, n)


@pytest.mark.parametrize("operation", ELTWISE_OPERATIONS)
@pytest.mark.parametrize("broadcast_shape", [(3, 4, 5), (3, 1, 1), (1, 4, 5), (3, 4, 1), (1, 1, 1)],
                         ids=["same", "per_channel", "per_pixel", "per_row", "scalar"])
def test_eltwise_broadcast_patterns(operation, broadcast_shape):
    rng = np.random.default_rng(0)
    max_batch, full = 4, (4, 3, 4, 5)
    for shapes in ([full, (max_batch,) + broadcast_shape],
                   [(max_batch,) + broadcast_shape, full, full]):
        for n in (1, 3, max_batch):
            check_eltwise(rng, operation, [2.0, -1.0, 0.5][: len(shapes)], shapes, n)


@pytest.mark.parametrize("count", [2, 3])
def test_eltwise_compiles_once_per_input_count(count):
    """Both kernels (flat and broadcasting) have one signature per number of inputs, whatever
    the operation, rank and n."""
    for operation, shapes in (("sum", [(4, 3, 5, 2)] * count),
                              ("max", [(4, 6)] * count),
                              ("mul", [(4, 3, 5, 2)] + [(4, 3, 1, 1)] * (count - 1)),
                              ("pow", [(4, 1, 5)] + [(4, 3, 5)] * (count - 1))):
        inputs = [np.ones(shape, dtype=np.float32) for shape in shapes]
        output = np.empty(np.broadcast_shapes(*shapes), dtype=np.float32)
        attrs = {"operation": operation, "coeff": (1,) * count}  # ints must not add a signature
        kernel, args = eltwise.cpu_step(attrs, inputs, [output])
        check_one_signature(kernel, args, max_batch=4,
                            same_types=lambda signature: signature[1].count == count)


@pytest.mark.parametrize("operation", ELTWISE_OPERATIONS)
@pytest.mark.parametrize("second_shape", [(2, 2, 3), (2, 1, 3)], ids=["same", "broadcast"])
def test_eltwise_propagates_nan(operation, second_shape):
    """A NaN on either side gives NaN, as in NumPy (max and min included)."""
    # No 1.0 in the first operand: 1 ** NaN is 1.
    first = np.array([[[np.nan, 2.0, 3.0], [2.0, 2.0, 2.0]]] * 2, dtype=np.float32)
    second = np.ones(second_shape, dtype=np.float32)
    second[1, 0, 1] = np.nan
    attrs = {"operation": operation, "coeff": (1.0, 1.0)}
    outputs = [poisoned_output(first.shape)]
    run_step(eltwise, attrs, [first, second], outputs, 2)
    check_outputs(outputs, REFERENCES["Eltwise"]([first, second], attrs), 2)
    assert np.isnan(outputs[0][0, 0, 0]) and np.isnan(outputs[0][1, 0, 1])


def test_eltwise_in_place():
    """The output may share its buffer with an input of the output's shape, first or not."""
    rng = np.random.default_rng(1)
    attrs = {"operation": "sub", "coeff": (1.0, 1.0)}
    for shapes, aliased in (([(3, 2, 4, 4), (3, 2, 4, 4)], 1), ([(3, 2, 4, 4), (3, 2, 1, 1)], 0),
                            ([(3, 2, 1, 4), (3, 2, 4, 4)], 1)):
        inputs = eltwise_inputs(rng, "sub", shapes, n=2)
        expected = REFERENCES["Eltwise"]([x[:2] for x in inputs], attrs)[0]
        run_step(eltwise, attrs, inputs, [inputs[aliased]], 2)
        np.testing.assert_allclose(inputs[aliased][:2], expected, rtol=1e-6)
        assert np.isnan(inputs[aliased][2:]).all()


# BatchNormalization

def batch_normalization_case(rng, channels, epsilon):
    return {
        "mean": rng.uniform(-1.0, 1.0, channels).astype(np.float32),
        # Half the variances are 0: epsilon alone keeps the division finite.
        "variance": (rng.uniform(0.0, 2.0, channels) * rng.integers(0, 2, channels)).astype(
            np.float32
        ),
        "gamma": rng.uniform(-2.0, 2.0, channels).astype(np.float32),
        "beta": rng.uniform(-1.0, 1.0, channels).astype(np.float32),
        "epsilon": epsilon,
    }


@given(data=st.data())
def test_batch_normalization_matches_reference(data):
    rank = data.draw(st.integers(2, 4), label="rank")
    sample_shape = draw_sample_shape(data, rank)
    max_batch, n = draw_batches(data)
    epsilon = data.draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0]), label="epsilon")
    rng = draw_rng(data)
    attrs = batch_normalization_case(rng, sample_shape[0], epsilon)
    x = poison_rows(rng.uniform(-2.0, 2.0, (max_batch,) + sample_shape).astype(np.float32), n)
    outputs = [poisoned_output(x.shape)]
    run_step(batch_normalization, attrs, [x], outputs, n)
    # gamma / sqrt(epsilon) reaches 600: the folded scale * x + shift may cancel, so the
    # tolerance follows the size of its terms rather than of the result.
    scale = np.abs(attrs["gamma"]) / np.sqrt(attrs["variance"].astype(np.float64) + epsilon)
    magnitude = float(np.max(scale * (2.0 + np.abs(attrs["mean"])) + np.abs(attrs["beta"])))
    check_outputs(outputs, REFERENCES["BatchNormalization"]([x[:n]], attrs), n,
                  atol=1e-6 * magnitude)


def test_batch_normalization_compiles_once():
    rng = np.random.default_rng(2)
    for shape in ((4, 3), (4, 3, 5), (4, 3, 5, 2)):
        x = np.ones(shape, dtype=np.float32)
        attrs = batch_normalization_case(rng, shape[1], 1e-5)
        kernel, args = batch_normalization.cpu_step(attrs, [x], [np.empty_like(x)])
        check_one_signature(kernel, args, max_batch=4)


# In place

@pytest.mark.parametrize("layer_type, module, attrs", [
    ("Activation", activation, {"type": "gelu", "alpha": 0.0, "beta": 0.0}),
    ("Power", power, {"power": 3.0, "scale": 2.0, "shift": 0.5}),
    ("BatchNormalization", batch_normalization,
     batch_normalization_case(np.random.default_rng(3), 4, 1e-3)),
], ids=lambda value: value if isinstance(value, str) else "")
def test_single_input_layers_in_place(layer_type, module, attrs):
    """The output may be the input's own buffer."""
    rng = np.random.default_rng(4)
    x = poison_rows(rng.uniform(-2.0, 2.0, (3, 4, 5, 6)).astype(np.float32), 2)
    expected = REFERENCES[layer_type]([x[:2]], attrs)[0]
    run_step(module, attrs, [x], [x], 2)
    np.testing.assert_allclose(x[:2], expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(x[2:]).all()
