"""Every layer's GPU kernel (``gpu_step``) against the naive reference and against the CPU kernel.

Runs on a CUDA GPU, or on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs kernels in
Python: shapes are small, and launch sizes are patched tiny (``conftest.gpu_test_launches``) so that
every case runs several blocks and several grid-stride rounds. Each case is one layer of a real
``Network``, so the kernels get the attributes the compiler gives them. As in the CPU tests, buffers
are allocated at the maximum batch, input rows >= n are NaN and every output element starts as a
NaN of its own bit pattern: reading a row >= n spoils a checked value, writing one is seen.
"""
import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import dynbatch as db
from dynbatch import config, gpu
from dynbatch.kernels import KERNELS, activation, eltwise
from dynbatch.kernels.launch import REGISTER_TILE
from tests.conftest import GPU_SKIP_REASON, gpu_test_launches
from tests.naive import REFERENCES
from tests.poison import poisoned_output, untouched

pytestmark = pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=GPU_SKIP_REASON or "")

# The simulator is slow: a third of the profile's examples (10 by default, 100 when thorough).
GPU_EXAMPLES = settings(max_examples=max(3, settings.default.max_examples // 3))
SIDE = st.integers(1, 5)
CHANNELS = st.integers(1, 4)


@pytest.fixture(scope="module", autouse=True)
def small_launches():
    with gpu_test_launches():
        yield


# -- running one layer ---------------------------------------------------------------------------

def one_layer(layer_type, input_shapes, **attrs):
    """(normalized attrs, output shapes) of the layer as a network builds it; rejects the example
    when the network refuses the combination drawn."""
    net = db.Network("one layer")
    names = [net.add_input(f"x{index}", shape) for index, shape in enumerate(input_shapes)]
    try:
        net.add_layer(layer_type, names, **attrs)
    except db.NetworkDefinitionError:
        reject()
    layer = net.layers[-1]
    return layer.normalized, layer.output_shapes


def draw_batches(data):
    """A maximum batch, and n among 1, the maximum and the middle."""
    max_batch = data.draw(st.integers(1, 4), label="max_batch")
    n = data.draw(st.sampled_from(sorted({1, (max_batch + 1) // 2, max_batch})), label="n")
    return max_batch, n


def draw_rng(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def poisoned_inputs(rng, shapes, n, low=-2.0, high=2.0):
    inputs = []
    for shape in shapes:
        x = rng.uniform(low, high, size=shape).astype(np.float32)
        x[n:] = np.nan
        inputs.append(x)
    return inputs


def run_gpu(layer_type, attrs, inputs, output_shapes, n):
    """gpu_step over device copies of ``inputs`` and poisoned outputs, launched for n rows on a
    stream; returns the outputs and the launched GpuKernel."""
    cuda = gpu.import_cuda()
    stream = cuda.stream()
    device_inputs = [cuda.to_device(x) for x in inputs]
    device_outputs = [cuda.to_device(poisoned_output(shape)) for shape in output_shapes]
    kernel, args = KERNELS[layer_type].gpu_step(attrs, device_inputs, device_outputs)
    kernel(n, *gpu.DeviceWeights().device_args(layer_type, args), stream=stream)
    stream.synchronize()
    return [output.copy_to_host() for output in device_outputs], kernel


def run_cpu(layer_type, attrs, inputs, output_shapes, n):
    outputs = [poisoned_output(shape) for shape in output_shapes]
    kernel, args = KERNELS[layer_type].cpu_step(attrs, [x.copy() for x in inputs], outputs)
    kernel(n, *args)
    return outputs


def check_layer(layer_type, attrs, inputs, output_shapes, n, rtol=1e-4, atol=1e-5):
    """The GPU kernel's rows < n equal the reference and the CPU kernel's; rows >= n keep the poison."""
    gpu_outputs, kernel = run_gpu(layer_type, attrs, inputs, output_shapes, n)
    cpu_outputs = run_cpu(layer_type, attrs, inputs, output_shapes, n)
    expected = REFERENCES[layer_type]([x[:n] for x in inputs], attrs)
    assert len(gpu_outputs) == len(expected)
    for got, cpu_got, want in zip(gpu_outputs, cpu_outputs, expected):
        with np.errstate(over="ignore"):
            want = want.astype(np.float32)
        scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
        np.testing.assert_allclose(got[:n], want, rtol=rtol, atol=atol * scale, err_msg="GPU vs reference")
        np.testing.assert_allclose(got[:n], cpu_got[:n], rtol=rtol, atol=atol * scale, err_msg="GPU vs CPU")
        assert untouched(got[n:]), "a row >= n was written"
    return kernel


# -- spatial layers ------------------------------------------------------------------------------

@GPU_EXAMPLES
@given(data=st.data())
def test_convolution(data):
    max_batch, n = draw_batches(data)
    depthwise = data.draw(st.booleans(), label="depthwise")
    if depthwise:
        group = data.draw(CHANNELS, label="channels")
        group_in, group_out = 1, 1
    else:
        group = data.draw(st.integers(1, 2), label="group")
        group_in = data.draw(st.integers(1, 3), label="channels_per_group_in")
        group_out = data.draw(st.integers(1, 5), label="channels_per_group_out")
    size = data.draw(st.tuples(SIDE, SIDE), label="size")
    kernel = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="kernel")
    rng = draw_rng(data)
    attrs, output_shapes = one_layer(
        "Convolution", [(max_batch, group * group_in) + size],
        weights=rng.uniform(-1, 1, (group * group_out, group_in) + kernel), biases=rng.uniform(-1, 1, group * group_out),
        group=group, strides=data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="strides"),
        dilations=data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilations"),
        pads_begin=data.draw(st.tuples(st.integers(0, 1), st.integers(0, 1)), label="pads_begin"),
        pads_end=data.draw(st.tuples(st.integers(0, 2), st.integers(0, 1)), label="pads_end"),
    )
    check_layer("Convolution", attrs, poisoned_inputs(rng, [(max_batch, group * group_in) + size], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_deconvolution(data):
    max_batch, n = draw_batches(data)
    group = data.draw(st.integers(1, 2), label="group")
    group_in = data.draw(st.integers(1, 2), label="channels_per_group_in")
    group_out = data.draw(st.integers(1, 3), label="channels_per_group_out")
    size = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)), label="size")
    kernel = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="kernel")
    rng = draw_rng(data)
    shape = (max_batch, group * group_in) + size
    attrs, output_shapes = one_layer(
        "Deconvolution", [shape],
        weights=rng.uniform(-1, 1, (group * group_in, group_out) + kernel), biases=rng.uniform(-1, 1, group * group_out),
        group=group, strides=data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="strides"),
        dilations=data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilations"),
        pads_begin=data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="pads_begin"),
        pads_end=data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="pads_end"),
        output_padding=data.draw(st.tuples(st.integers(0, 1), st.integers(0, 1)), label="output_padding"),
    )
    check_layer("Deconvolution", attrs, poisoned_inputs(rng, [shape], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_pooling(data):
    max_batch, n = draw_batches(data)
    shape = (max_batch, data.draw(CHANNELS, label="channels")) + data.draw(st.tuples(SIDE, SIDE), label="size")
    method = data.draw(st.sampled_from(["max", "avg"]), label="pool_method")
    exclude_pad = data.draw(st.booleans(), label="exclude_pad")
    if data.draw(st.booleans(), label="global_pool"):
        window = dict(global_pool=True)
    else:
        window = dict(
            kernel=data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="kernel"),
            strides=data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="strides"),
            pads_begin=data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="pads_begin"),
            pads_end=data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="pads_end"),
            rounding_type=data.draw(st.sampled_from(["floor", "ceil"]), label="rounding_type"),
        )
    attrs, output_shapes = one_layer("Pooling", [shape], pool_method=method, exclude_pad=exclude_pad, **window)
    check_layer("Pooling", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_lrn(data):
    max_batch, n = draw_batches(data)
    shape = (max_batch, data.draw(st.integers(1, 6), label="channels")) + data.draw(st.tuples(SIDE, SIDE), label="size")
    attrs, output_shapes = one_layer(
        "LRN", [shape], local_size=data.draw(st.integers(1, 5), label="local_size"),
        alpha=data.draw(st.sampled_from([1e-4, 0.1, 1.0]), label="alpha"),
        beta=data.draw(st.sampled_from([0.5, 0.75, 1.0]), label="beta"),
        k=data.draw(st.sampled_from([1.0, 2.0]), label="k"),
        region=data.draw(st.sampled_from(["across", "same"]), label="region"),
    )
    check_layer("LRN", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


# -- structural layers ---------------------------------------------------------------------------

def draw_shape(data, max_batch, label="shape"):
    """(max_batch, C[, H[, W]]) of rank 2 to 4."""
    rank = data.draw(st.integers(2, 4), label=f"{label}_rank")
    return (max_batch,) + data.draw(st.tuples(CHANNELS, *[SIDE] * (rank - 2)), label=label)


@GPU_EXAMPLES
@given(data=st.data())
def test_fully_connected(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    features = int(np.prod(shape[1:]))
    out_features = data.draw(st.integers(1, 9), label="out_features")
    rng = draw_rng(data)
    attrs, output_shapes = one_layer("FullyConnected", [shape], weights=rng.uniform(-1, 1, (out_features, features)),
                                     biases=rng.uniform(-1, 1, out_features))
    check_layer("FullyConnected", attrs, poisoned_inputs(rng, [shape], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_softmax(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    axis = data.draw(st.integers(1, len(shape) - 1), label="axis")
    attrs, output_shapes = one_layer("SoftMax", [shape], axis=axis, flatten=data.draw(st.booleans(), label="flatten"))
    check_layer("SoftMax", attrs, poisoned_inputs(draw_rng(data), [shape], n, -5.0, 5.0), output_shapes, n)


@pytest.mark.parametrize("axis, flatten, kernel_name", [
    (3, False, "softmax_rows_cuda"), (1, True, "softmax_rows_cuda"), (1, False, "softmax_cuda"), (2, False, "softmax_cuda"),
])
def test_softmax_uses_both_kernels(axis, flatten, kernel_name):
    """Along the innermost axis a block reduces each vector; elsewhere a thread walks one."""
    shape = (3, 2, 3, 40)  # vectors of 40 span several 12-thread rounds
    attrs, output_shapes = one_layer("SoftMax", [shape], axis=axis, flatten=flatten)
    rng = np.random.default_rng(axis)
    kernel = check_layer("SoftMax", attrs, poisoned_inputs(rng, [shape], 2, -5.0, 5.0), output_shapes, 2)
    assert kernel.__name__ == kernel_name


@GPU_EXAMPLES
@given(data=st.data())
def test_split(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    axis = data.draw(st.integers(1, len(shape) - 1), label="axis")
    length = shape[axis]
    cuts = sorted(data.draw(st.sets(st.integers(1, length - 1), max_size=2), label="cuts")) if length > 1 else []
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [length])]
    attrs, output_shapes = one_layer("Split", [shape], axis=axis, sizes=sizes)
    check_layer("Split", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_concatenation(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    axis = data.draw(st.integers(1, len(shape) - 1), label="axis")
    lengths = data.draw(st.lists(st.integers(1, 3), min_size=2, max_size=3), label="lengths")
    shapes = [shape[:axis] + (length,) + shape[axis + 1:] for length in lengths]
    attrs, output_shapes = one_layer("Concatenation", shapes, axis=axis)
    check_layer("Concatenation", attrs, poisoned_inputs(draw_rng(data), shapes, n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_crop(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    axes = data.draw(st.sets(st.integers(1, len(shape) - 1), min_size=1), label="axes")
    offsets, dims = [], []
    for axis in sorted(axes):
        dim = data.draw(st.integers(1, shape[axis]), label=f"dim_{axis}")
        offsets.append(data.draw(st.integers(0, shape[axis] - dim), label=f"offset_{axis}"))
        dims.append(dim)
    attrs, output_shapes = one_layer("Crop", [shape], axis=sorted(axes), offset=offsets, dim=dims)
    check_layer("Crop", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


# -- elementwise layers and Copy -----------------------------------------------------------------

@GPU_EXAMPLES
@given(data=st.data())
def test_activation(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    activation_type = data.draw(st.sampled_from(sorted(activation.ACTIVATION_CODES)), label="type")
    params = {"relu": dict(negative_slope=0.1), "clamp": dict(min=-0.5, max=1.5), "elu": dict(alpha=0.7)}
    attrs, output_shapes = one_layer("Activation", [shape], type=activation_type, **params.get(activation_type, {}))
    magnitude = data.draw(st.sampled_from([2.0, 100.0]), label="magnitude")  # 100: exp overflows float32
    inputs = poisoned_inputs(draw_rng(data), [shape], n, -magnitude, magnitude)
    check_layer("Activation", attrs, inputs, output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_power(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    attrs, output_shapes = one_layer(
        "Power", [shape], power=data.draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, -1.0]), label="power"),
        scale=data.draw(st.sampled_from([-1.0, 0.5, 2.0]), label="scale"),
        shift=data.draw(st.sampled_from([0.0, 0.5, 1.0]), label="shift"),
    )
    check_layer("Power", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


def test_power_zero_base_and_negative_power():
    """(0) ** -1 is inf and (-1) ** 0.5 is NaN, as in NumPy and on the CPU (no exception)."""
    x = np.array([[0.0, -1.0, 4.0], [np.nan] * 3], dtype=np.float32)
    for exponent in (-1.0, 0.5):
        attrs, output_shapes = one_layer("Power", [x.shape], power=exponent)
        check_layer("Power", attrs, [x], output_shapes, 1)


@GPU_EXAMPLES
@given(data=st.data())
def test_eltwise(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    operation = data.draw(st.sampled_from(sorted(eltwise.ELTWISE_CODES)), label="operation")
    shapes = []
    for index in range(data.draw(st.integers(2, 3), label="inputs")):
        broadcast = data.draw(st.lists(st.booleans(), min_size=len(shape) - 1, max_size=len(shape) - 1),
                              label=f"broadcast_dims_{index}")
        shapes.append((max_batch,) + tuple(1 if flag else size for flag, size in zip(broadcast, shape[1:])))
    coeff = {}
    if operation == "sum":
        coeff = dict(coeff=data.draw(st.lists(st.sampled_from([1.0, -1.0, 0.5, 2.0]), min_size=len(shapes),
                                              max_size=len(shapes)), label="coeff"))
    attrs, output_shapes = one_layer("Eltwise", shapes, operation=operation, **coeff)
    # Values that keep every operation finite: divisors away from 0, a positive base for pow.
    low = 0.5 if operation in ("div", "pow") else -2.0
    check_layer("Eltwise", attrs, poisoned_inputs(draw_rng(data), shapes, n, low, 2.0), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_batch_normalization(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    rng = draw_rng(data)
    channels = shape[1]
    attrs, output_shapes = one_layer(
        "BatchNormalization", [shape], mean=rng.uniform(-1, 1, channels), variance=rng.uniform(0.1, 2, channels),
        gamma=rng.uniform(-2, 2, channels), beta=rng.uniform(-1, 1, channels), epsilon=1e-3,
    )
    check_layer("BatchNormalization", attrs, poisoned_inputs(rng, [shape], n), output_shapes, n)


@GPU_EXAMPLES
@given(data=st.data())
def test_copy(data):
    max_batch, n = draw_batches(data)
    shape = draw_shape(data, max_batch)
    attrs, output_shapes = one_layer("Copy", [shape])
    check_layer("Copy", attrs, poisoned_inputs(draw_rng(data), [shape], n), output_shapes, n)


@pytest.mark.parametrize("layer_type, attrs", [
    ("Activation", dict(type="gelu")),
    ("Power", dict(power=3.0, scale=2.0, shift=0.5)),
    ("BatchNormalization", dict(mean=[0.1, -0.2, 0.3], variance=[1.0, 0.5, 2.0], gamma=[1.0, -1.0, 2.0])),
], ids=["Activation", "Power", "BatchNormalization"])
def test_single_input_layers_in_place(layer_type, attrs):
    """The output may be the input's own device buffer, as on the CPU."""
    shape = (3, 3, 4, 5)
    attrs, _ = one_layer(layer_type, [shape], **attrs)
    x = poisoned_inputs(np.random.default_rng(4), [shape], 2)[0]
    expected = REFERENCES[layer_type]([x[:2]], attrs)[0]
    cuda = gpu.import_cuda()
    buffer = cuda.to_device(x)
    kernel, args = KERNELS[layer_type].gpu_step(attrs, [buffer], [buffer])
    kernel(2, *gpu.DeviceWeights().device_args(layer_type, args))
    result = buffer.copy_to_host()
    np.testing.assert_allclose(result[:2], expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(result[2:]).all()


# -- launch geometry -------------------------------------------------------------------------------

def test_grid_is_sized_from_n():
    """The grid follows n, not the maximum batch, up to MAX_BLOCKS (grid-stride loops do the rest)."""
    assert (config.THREADS_PER_BLOCK, config.TILE, config.MAX_BLOCKS, config.MIN_BLOCKS) == (12, 4, 5, 4)
    shape = (40, 2, 3, 4)  # 24 elements per sample: 2 blocks of 12 threads per sample
    attrs, output_shapes = one_layer("Activation", [shape], type="relu")
    cuda = gpu.import_cuda()
    kernel, _ = KERNELS["Activation"].gpu_step(attrs, [cuda.device_array(shape, np.float32)],
                                              [cuda.device_array(shape, np.float32)])
    assert [kernel.blocks(n) for n in (0, 1, 2, 3, 40)] == [1, 2, 4, 5, 5]
    attrs, output_shapes = one_layer("FullyConnected", [(40, 10)], weights=np.ones((9, 10)))
    kernel, _ = KERNELS["FullyConnected"].gpu_step(attrs, [cuda.device_array((40, 10), np.float32)],
                                                  [cuda.device_array((40, 9), np.float32)])
    assert kernel.threads == (config.TILE, config.TILE)
    assert [kernel.blocks(n) for n in (1, 4, 5, 40)] == [3, 3, 5, 5]  # 3 tiles of features per 4 rows


def test_small_batches_of_a_convolution_run_one_output_per_thread():
    """Each thread of the convolution kernel computes R x R outputs; where that grid would have
    fewer than MIN_BLOCKS blocks (a small n), its R = 1 variant runs instead, 16 times the threads."""
    shape = (8, 3, 4, 4)  # 16 pixels per sample, 6 output channels
    attrs, output_shapes = one_layer("Convolution", [shape], weights=np.ones((6, 3, 1, 1)))
    cuda = gpu.import_cuda()
    kernel, _ = KERNELS["Convolution"].gpu_step(attrs, [cuda.device_array(shape, np.float32)],
                                               [cuda.device_array((8, 6, 4, 4), np.float32)])
    assert REGISTER_TILE == 4
    assert kernel.rows_per_block == config.TILE * REGISTER_TILE  # 16 pixels by 16 channels per block
    assert [kernel.blocks(n) for n in (1, 3, 4)] == [1, 3, 4]
    assert [kernel.for_batch(n).rows_per_block for n in (1, 3, 4, 8)] == [4, 4, 16, 16]
    assert kernel.for_batch(1).blocks(1) == 5  # 4 x 4 tiles: 4 of pixels by 2 of channels, at most MAX_BLOCKS
    assert kernel.for_batch(1).function is not kernel.function


@pytest.mark.skipif(GPU_SKIP_REASON is None and gpu.is_simulator(), reason="the CUDA simulator compiles nothing")
def test_kernels_compile_once_whatever_n():
    shape = (4, 3, 5, 6)
    attrs, output_shapes = one_layer("Convolution", [shape], weights=np.ones((2, 3, 3, 3)), pads_begin=1, pads_end=1)
    x = poisoned_inputs(np.random.default_rng(0), [shape], 4)
    _, kernel = run_gpu("Convolution", attrs, x, output_shapes, 4)
    for n in (1, 2, 4, 3):
        run_gpu("Convolution", attrs, x, output_shapes, n)
    assert len(kernel.signatures) == 1
