"""Convolution, Deconvolution, Pooling and LRN kernels against the naive references.

Every buffer is allocated at the maximum batch; input rows >= n and every output element start as
NaN, so reading a row >= n spoils a checked value. Outputs hold a NaN of their own bit pattern, so
that writing a row >= n shows, even from a poisoned input row (whose NaN pools, sums and
multiplies into the plain NaN).
"""
import inspect
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dynbatch.kernels import convolution, deconvolution, lrn, pooling
from dynbatch.kernels.gemm import NR, PANELS_PER_BLOCK
from dynbatch.kernels.stem import STEM_CHANNELS, STEM_PIXELS
from dynbatch.memory import HUGE_PAGE, transparent_huge_pages, zeroed_floats
from tests.naive import REFERENCES
from tests.poison import poisoned_output, untouched

SPATIAL = st.integers(1, 10)
KERNEL_SIDE = st.integers(1, 3)
STRIDE = st.integers(1, 3)
DILATION = st.integers(1, 2)
PAD = st.integers(0, 2)


def draw_batches(data):
    max_batch = data.draw(st.integers(1, 5), label="max_batch")
    n = data.draw(st.one_of(st.just(1), st.just(max_batch), st.integers(1, max_batch)), label="n")
    return max_batch, n


def draw_pair(data, strategy, label):
    return data.draw(st.tuples(strategy, strategy), label=label)


def draw_groups(data):
    """(group, channels per group in, channels per group out): group 1, C (depthwise) and between."""
    group = data.draw(st.integers(1, 4), label="group")
    group_in = data.draw(st.integers(1, max(1, 8 // group)), label="channels_per_group_in")
    group_out = data.draw(st.integers(1, max(1, 8 // group)), label="channels_per_group_out")
    return group, group_in, group_out


def poisoned_input(rng, shape, n):
    x = rng.uniform(-2.0, 2.0, size=shape).astype(np.float32)
    x[n:] = np.nan
    return x


def run_step(module, attrs, inputs, outputs, n, **options):
    kernel, args = module.cpu_step(attrs, inputs, outputs, **options)
    kernel(n, *args)
    # Shapes and attributes vary across examples; the argument types never do.
    assert len(kernel.signatures) == 1
    return kernel, args


def check_outputs(outputs, expected, n, rtol=1e-4, atol=1e-5, scale=None):
    """Each output's rows < n close to ``expected`` (atol relative to ``scale``, by default the
    largest finite expected value, at least 1; NaN and infinities where expected), and its rows
    >= n untouched (NaN)."""
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got[:n].shape == want.shape
        scale = scale or max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
        np.testing.assert_allclose(got[:n], want, rtol=rtol, atol=atol * scale)
        assert untouched(got[n:]), "a row >= n was written"


def check_compiles_once(kernel, args, max_batch):
    for n in (max_batch, 1, max(1, max_batch // 2), max_batch):
        kernel(n, *args)
    assert len(kernel.signatures) == 1


# Convolution

def gemm_columns(data, module):
    """Patch the columns a batched GEMM aims for small enough that the tiny test images take every
    path: one sample per GEMM, several, and a last group of one."""
    columns = data.draw(st.sampled_from([1, 7, 20, 64, module.GEMM_TARGET_COLUMNS]), label="gemm_target_columns")
    return mock.patch.object(module, "GEMM_TARGET_COLUMNS", columns)


def gemm_split(data):
    """How the convolution GEMM splits its work, drawn so that tiny images still take every path:
    a task's columns spanning samples or ending inside a panel, and the output channels split."""
    return {"columns_per_task": data.draw(st.sampled_from([16, 32, 64]), label="columns_per_task"),
            "min_tasks": data.draw(st.integers(1, 8), label="min_tasks")}


def expected_convolution(inputs, attrs, n, residual=None):
    """(rows < n of the reference convolution, plus ``residual`` and through the fused activation;
    the largest magnitude before the activation, at least 1, which the tolerance scales with)."""
    expected = REFERENCES["Convolution"]([inputs[0][:n]], attrs)[0]
    if residual is not None:
        expected = expected + residual
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if attrs.get("activation") is not None:
        expected = REFERENCES["Activation"]([expected], attrs["activation"])[0]
    return expected, scale


def convolution_case(rng, max_batch, n, group, group_in, group_out, size, kernel, strides, dilations,
                     pads_begin, pads_end):
    channels, out_channels = group * group_in, group * group_out
    attrs = {
        "weights": rng.uniform(-1.0, 1.0, size=(out_channels, group_in) + kernel).astype(np.float32),
        "biases": rng.uniform(-1.0, 1.0, size=out_channels).astype(np.float32),
        "strides": strides, "dilations": dilations, "pads_begin": pads_begin, "pads_end": pads_end,
        "group": group,
    }
    out_size = tuple((size[a] + pads_begin[a] + pads_end[a] - dilations[a] * (kernel[a] - 1) - 1)
                     // strides[a] + 1 for a in range(2))
    inputs = [poisoned_input(rng, (max_batch, channels) + size, n)]
    outputs = [poisoned_output((max_batch, out_channels) + out_size)]
    return attrs, inputs, outputs


@pytest.mark.parametrize("algorithm", ["direct", "gemm"])
@given(data=st.data())
def test_convolution_matches_reference(algorithm, data):
    max_batch, n = draw_batches(data)
    group, group_in, group_out = draw_groups(data)
    size = draw_pair(data, SPATIAL, "size")
    kernel = draw_pair(data, KERNEL_SIDE, "kernel")
    strides = draw_pair(data, STRIDE, "strides")
    dilations = draw_pair(data, DILATION, "dilations")
    pads_begin = draw_pair(data, PAD, "pads_begin")
    pads_end = draw_pair(data, PAD, "pads_end")
    for a in range(2):
        assume(size[a] + pads_begin[a] + pads_end[a] >= dilations[a] * (kernel[a] - 1) + 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, group, group_in, group_out, size,
                                              kernel, strides, dilations, pads_begin, pads_end)
    options = gemm_split(data) if algorithm == "gemm" else {}
    run_step(convolution, attrs, inputs, outputs, n, algorithm=algorithm, **options)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:n]], attrs), n)


@pytest.mark.parametrize("size, strides, dilations, by_planes", [
    ((200, 180), (1, 1), (1, 1), False),  # 202 x 182 padded floats: past DIRECT_PLANE_FLOATS, by lines
    ((56, 56), (2, 2), (1, 1), True),     # MobileNet's stride-2 depthwise layer: four phase planes
    ((30, 41), (2, 3), (2, 1), True),     # other strides and dilations per axis
    ((9, 8), (3, 1), (1, 2), True),
    ((14, 14), (1, 1), (1, 1), True),     # 3x3 at stride 1: the taps summed in registers (nine_taps)
    ((7, 5), (1, 1), (1, 1), True),       # rows under 8 long: copied in and out by masked vectors
])
@pytest.mark.parametrize("group_in, with_residual", [(1, False), (2, True), (2, False)])
def test_direct_convolution_by_planes_and_by_lines(size, strides, dilations, by_planes, group_in, with_residual):
    """The direct kernel (depthwise layers, and groups of 2 channels here) takes a plane per task,
    through the input split into phase planes, where those fit DIRECT_PLANE_FLOATS; else lines.
    Padding of 1 before and 2 after (more after than the window reaches at some strides), a
    fused leaky ReLU and residual, rows >= n untouched."""
    rng = np.random.default_rng(12)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 3, group_in, 1, size, (3, 3), strides, dilations,
                                              (1, 1), (2, 2))
    out_height, out_width = outputs[0].shape[2:]
    _, _, phase_floats = convolution.phase_layout(out_height, out_width, 3, 3, *strides, *dilations)
    assert (strides[0] * strides[1] * phase_floats <= convolution.DIRECT_PLANE_FLOATS) == by_planes
    attrs["activation"] = {"type": "relu", "alpha": 0.1, "beta": 0.0}
    residual = [poisoned_input(rng, outputs[0].shape, 2)] if with_residual else []
    run_step(convolution, attrs, inputs + residual, outputs, 2, algorithm="direct")
    expected = REFERENCES["Convolution"]([inputs[0][:2]], attrs)[0] + (residual[0][:2] if with_residual else 0)
    check_outputs(outputs, [REFERENCES["Activation"]([expected], attrs["activation"])[0]], 2)


@given(data=st.data())
def test_pointwise_convolution_matches_reference(data):
    max_batch, n = draw_batches(data)
    channels = data.draw(st.integers(1, 8), label="channels")
    out_channels = data.draw(st.integers(1, 8), label="out_channels")
    size = draw_pair(data, SPATIAL, "size")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, 1, channels, out_channels, size, (1, 1), (1, 1),
                                              (1, 1), (0, 0), (0, 0))
    # Whole 16-column panels of x are read in place, the rest packed.
    run_step(convolution, attrs, inputs, outputs, n, algorithm="gemm", **gemm_split(data))
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:n]], attrs), n)


@pytest.mark.parametrize("pads_end", [(2, 0), (0, 3), (1, 1)])
def test_pointwise_convolution_with_end_padding_reads_no_input_past_the_image(pads_end):
    """A 1x1, stride-1 convolution padded at the end only (found by hypothesis): its output is
    larger than its input, so its panels of x cannot be read in place (they would run into the
    next sample, poisoned with NaN here); the padding rows and columns are the bias alone."""
    rng = np.random.default_rng(9)
    attrs, inputs, outputs = convolution_case(rng, 2, 1, 1, 1, 1, (1, 6), (1, 1), (1, 1), (1, 1), (0, 0), pads_end)
    run_step(convolution, attrs, inputs, outputs, 1, algorithm="gemm", columns_per_task=16, min_tasks=1)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:1]], attrs), 1)


@pytest.mark.parametrize("size, in_place", [
    ((7, 9), True), ((16, 16), True), ((28, 28), True),  # planes of 252 B, 1 KB, 3136 B
    ((16, 32), False), ((32, 32), False),               # 2 KB, 4 KB: packed
])
def test_pointwise_convolution_packs_x_where_its_rows_would_share_l1_sets(size, in_place):
    """A 1x1 convolution reads its 16-column panels of x in place, its rows a plane apart, except
    where a plane is a multiple of 2 KB: those rows would fall in one or two sets of the L1 cache,
    so the kernel packs them. Either way, the reference."""
    rng = np.random.default_rng(11)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 24, 20, size, (1, 1), (1, 1), (1, 1), (0, 0), (0, 0))
    kernel, args = run_step(convolution, attrs, inputs, outputs, 2, algorithm="gemm", min_tasks=2)
    parameters = list(inspect.signature(kernel.py_func).parameters)
    assert args[parameters.index("in_place") - 1] is in_place  # (args leave out n)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:2]], attrs), 2)


def test_pointwise_convolution_reads_x_in_place_for_more_outputs_on_huge_pages():
    """Up to 96 outputs a 1x1 layer reads x in place; where x lies on 2 MB pages (a request's
    arena), up to 512."""
    unit = ((1, 1), (1, 1), (0, 0), (0, 0))
    assert convolution.reads_in_place(*unit, 96, 63) and not convolution.reads_in_place(*unit, 97, 63)
    assert convolution.reads_in_place(*unit, 512, 63, huge_pages=True)
    assert not convolution.reads_in_place(*unit, 513, 63, huge_pages=True)
    assert not convolution.reads_in_place(*unit, 200, 512, huge_pages=True)  # (a 2 KB plane: packed)


@pytest.mark.skipif(not transparent_huge_pages(), reason="no transparent huge pages on this system")
def test_pointwise_convolution_on_huge_pages_reads_x_in_place_block_after_block():
    """200 outputs (three blocks of A panels, the last short) from 300 channels (two reduction
    blocks): packed from an array of its own, read in place from memory advised for huge pages,
    each 16-column panel of x read again for each block of A. Both the reference; and so with the
    global average fused (with a residual)."""
    rng = np.random.default_rng(12)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 300, 200, (7, 9), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0))
    x_on_huge_pages = zeroed_floats(max(inputs[0].size, HUGE_PAGE // 4))[: inputs[0].size].reshape(inputs[0].shape)
    x_on_huge_pages[...] = inputs[0]  # (its rows >= n poisoned too)
    expected = REFERENCES["Convolution"]([inputs[0][:2]], attrs)
    for x, in_place in ((inputs[0], False), (x_on_huge_pages, True)):
        outputs = [poisoned_output(outputs[0].shape)]
        kernel, args = run_step(convolution, attrs, [x], outputs, 2, algorithm="gemm", min_tasks=2)
        parameters = list(inspect.signature(kernel.py_func).parameters)
        assert args[parameters.index("in_place") - 1] is in_place
        check_outputs(outputs, expected, 2)
        kernel, args = convolution.cpu_step({**attrs, "global_average": (7, 9)}, [x],
                                            [poisoned_output((3, 200, 1, 1))], algorithm="gemm")
        assert args[list(inspect.signature(kernel.py_func).parameters).index("in_place") - 1] is in_place
        averaged, expected_means = run_averaged(rng, attrs, [x], outputs, 2, True, min_tasks=2)
        check_outputs(averaged, expected_means, 2)


@pytest.mark.parametrize("algorithm, kernel, pads, strides, size", [
    ("gemm", (3, 3), (1, 1), (1, 1), (5, 6)),     # 16-column panels spanning output rows, read contiguously
    ("gemm", (1, 1), (0, 0), (1, 1), (5, 6)),     # panels read in place
    ("gemm", (3, 3), (1, 1), (2, 2), (5, 40)),    # 20 outputs per row: panels read every other input
    ("gemm", (3, 3), (1, 1), (3, 3), (5, 60)),    # 20 outputs per row, inputs 3 apart
    ("gemm", (5, 5), (2, 2), (4, 4), (6, 30)),    # 8 outputs per row: two runs, inputs 4 apart
    ("gemm", (1, 1), (0, 0), (1, 1), (7, 7)),     # 98 columns: a last panel of 2 (the narrow kernel)
    ("gemm", (3, 3), (1, 1), (1, 1), (6, 6)),     # 72 columns: a last panel of 8 (the 12 x 8 kernel)
    ("winograd", (3, 3), (1, 1), (1, 1), (5, 6)),   # 2x2 tiles, half of the last row's outside
    ("winograd", (3, 3), (1, 1), (1, 1), (6, 40)),  # 20 tiles per row: panels of one run
])
def test_convolution_long_reduction_and_padding(algorithm, kernel, pads, strides, size):
    """More reduction rows than one packed block (KC), a last panel of 1 channel padded to 4, and
    inf in the input: padding must read as zero, never as 0 * (whatever lies beside the image).
    Winograd's transforms mix each 4x4 input tile, but an inf still reaches exactly the outputs
    whose 3x3 windows hold it (each row and column of B^T meets those of A^T where they do)."""
    rng = np.random.default_rng(3)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 300, 13, size, kernel, strides, (1, 1), pads, pads)
    inputs[0][0, 7, 2, -1] = np.inf  # the last column: the next row's left padding lies beside it
    inputs[0][1, 299, 4, 0] = -np.inf
    run_step(convolution, attrs, inputs, outputs, 2, algorithm=algorithm, min_tasks=3)
    with np.errstate(invalid="ignore"):
        expected = REFERENCES["Convolution"]([inputs[0][:2]], attrs)[0]
    got, finite = outputs[0][:2], np.isfinite(expected)
    assert finite.any() and not finite.all()
    np.testing.assert_array_equal(np.isfinite(got), finite)  # inf spreads exactly as far as its windows
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-5 * np.abs(expected[finite]).max())
    assert untouched(outputs[0][2:]), "a row >= n was written"


@pytest.mark.parametrize("algorithm, kernel, pads", [
    ("gemm", (1, 1), (0, 0)), ("gemm", (3, 3), (1, 1)), ("winograd", (3, 3), (1, 1))])
def test_convolution_written_over_its_residual_with_a_long_reduction(algorithm, kernel, pads):
    """An output that is its own residual's buffer, with more reduction rows than one packed
    block: the GEMM's panels written straight into it accumulate onto the residual from the first
    block on, and must not add it again at the end; panels spanning two samples (30 outputs a
    sample) go through the product and read it there. Rows >= n keep the output's poison."""
    rng = np.random.default_rng(5)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 300, 13, (5, 6), kernel, (1, 1), (1, 1), pads, pads)
    attrs["activation"] = {"type": "relu", "alpha": 0.1, "beta": 0.0}
    residual = poisoned_input(rng, outputs[0].shape, 2)
    residual[2:] = poisoned_output(residual[2:].shape)  # (the output's rows too)
    expected = REFERENCES["Activation"](
        [REFERENCES["Convolution"]([inputs[0][:2]], attrs)[0] + residual[:2]], attrs["activation"])[0]
    run_step(convolution, attrs, inputs + [residual], [residual], 2, algorithm=algorithm, min_tasks=3)
    check_outputs([residual], [expected], 2)


#: Normalized epilogue activations (as the fusion pass stores them) the averaged kernel is drawn with.
EPILOGUE_ACTIVATIONS = [None, {"type": "relu", "alpha": 0.1, "beta": 0.0}, {"type": "relu6", "alpha": 0.0, "beta": 0.0},
                        {"type": "clamp", "alpha": -0.5, "beta": 0.25}]


def averaged_reference(attrs, x, residual, n):
    """The reference convolution of rows < n, plus the residual, through the activation, then
    each output plane's mean: (n, K, 1, 1)."""
    y = REFERENCES["Convolution"]([x[:n]], attrs)[0]
    if residual is not None:
        y = y + residual[:n]
    if attrs.get("activation") is not None:
        y = REFERENCES["Activation"]([y], attrs["activation"])[0]
    return y.mean(axis=(2, 3), keepdims=True)


def run_averaged(rng, attrs, inputs, outputs, n, with_residual, **options):
    """Bind and run the convolution with its global average fused (``global_average``), writing
    (max_batch, K, 1, 1); returns the reference."""
    out_size = outputs[0].shape[2:]
    residual = poisoned_input(rng, outputs[0].shape, n) if with_residual else None
    averaged = [poisoned_output(outputs[0].shape[:2] + (1, 1))]
    residuals = [residual] if with_residual else []
    kernel, _ = run_step(convolution, {**attrs, "global_average": out_size}, inputs + residuals, averaged, n,
                         algorithm="gemm", **options)
    assert kernel is convolution.convolution_gemm_average_cpu
    return averaged, [averaged_reference(attrs, inputs[0], residual, n)]


@given(data=st.data())
def test_convolution_with_global_average_matches_reference(data):
    """A one-group GEMM convolution whose output only a global average pooling reads: each plane's
    mean of f(conv + residual), the convolution's output never written."""
    max_batch, n = draw_batches(data)
    channels = data.draw(st.integers(1, 12), label="channels")
    out_channels = data.draw(st.integers(1, 20), label="out_channels")
    size = draw_pair(data, SPATIAL, "size")
    kernel = draw_pair(data, KERNEL_SIDE, "kernel")
    strides = draw_pair(data, STRIDE, "strides")
    dilations = draw_pair(data, DILATION, "dilations")
    pads = draw_pair(data, PAD, "pads")
    for a in range(2):
        assume(size[a] + 2 * pads[a] >= dilations[a] * (kernel[a] - 1) + 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, 1, channels, out_channels, size, kernel, strides,
                                              dilations, pads, pads)
    attrs["activation"] = data.draw(st.sampled_from(EPILOGUE_ACTIVATIONS), label="activation")
    averaged, expected = run_averaged(rng, attrs, inputs, outputs, n, data.draw(st.booleans(), label="residual"),
                                      **gemm_split(data))
    check_outputs(averaged, expected, n)


@pytest.mark.parametrize("kernel, pads, size, out_channels, columns_per_task, min_tasks", [
    ((1, 1), (0, 0), (5, 6), 13, 16, 3),    # 30 columns a sample: panels of 16 and 14, in chunks of one
    ((3, 3), (1, 1), (7, 14), 13, 64, 2),   # 98: chunks of 3 and 4 panels, a last panel of 2 (the narrow kernel)
    ((1, 1), (0, 0), (6, 12), 13, 256, 1),  # 72: one chunk, a last panel of 8 (the 12 x 8 kernel)
    ((1, 1), (0, 0), (5, 6), 100, 16, 1),   # two blocks of A panels, the second of one panel of 4 rows
])
def test_convolution_with_global_average_over_a_long_reduction(kernel, pads, size, out_channels, columns_per_task,
                                                                min_tasks):
    """More reduction rows than one packed block (KC): the products of all the task's panels are
    kept across blocks. 13 outputs (a last A panel of 1) or 100, a residual and a leaky ReLU;
    panels short and whole, tasks splitting the outputs or not."""
    rng = np.random.default_rng(6)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 300, out_channels, size, kernel, (1, 1), (1, 1), pads,
                                              pads)
    attrs["activation"] = EPILOGUE_ACTIVATIONS[1]
    averaged, expected = run_averaged(rng, attrs, inputs, outputs, 2, True, columns_per_task=columns_per_task,
                                      min_tasks=min_tasks)
    check_outputs(averaged, expected, 2)


def test_convolution_with_global_average_many_outputs():
    """More A panels than one block (PANELS_PER_BLOCK): each block's rows are summed when it is
    done; 1x1 with few outputs reads x in place."""
    rng = np.random.default_rng(7)
    for out_channels in (6 * PANELS_PER_BLOCK + 5, 40):
        attrs, inputs, outputs = convolution_case(rng, 4, 3, 1, 20, out_channels, (13, 13), (1, 1), (1, 1), (1, 1),
                                                  (0, 0), (0, 0))
        averaged, expected = run_averaged(rng, attrs, inputs, outputs, 3, out_channels == 40, min_tasks=2)
        check_outputs(averaged, expected, 3)


@pytest.mark.parametrize("kernel, dilations, width", [
    ((3, 3), (1, 1), 3), ((5, 5), (1, 1), 5), ((1, 8), (1, 1), 8), ((6, 6), (1, 1), 6),
    ((1, 1), (1, 1), 0),   # one tap a row: nothing to transpose
    ((3, 1), (1, 1), 0),
    ((3, 3), (1, 2), 0),   # dilated: a kernel row's taps are not consecutive inputs
    ((2, 9), (1, 1), 0),   # wider than one 8-wide load
])
def test_window_columns_counts_a_kernel_rows_consecutive_taps(kernel, dilations, width):
    """The reduction rows packed by one transposed copy: a kernel row's taps, where they read
    consecutive input columns and fit one 8-wide load (Winograd's 6x6 windows included)."""
    *_, tap_dy, tap_dx = convolution.window_rows((1, 2, 20, 20), (1, 2, *kernel), dilations)
    assert convolution.window_columns.py_func(tap_dy, tap_dx) == width


def check_share(share, columns, panels, threads, group=1):
    """``task_share``'s tasks of a (tasks, column_panels, chunks, splits, panels_per_split) share
    cover each column of each output panel of each group once; an even-tailed one (negative
    splits) gives each thread's run of tasks (the chain's, and Numba's) the same work but for
    a piece of each tail panel."""
    tasks, column_panels, chunks, splits, per_split = share
    if splits < 0:
        assert group == 1 and -splits == threads and tasks % threads == 0
    else:
        assert tasks == group * chunks * splits
    covered = np.zeros((group, columns, panels), np.int64)
    work = np.zeros(threads)
    shares = [convolution.task_share.py_func(task, columns, panels, column_panels, chunks, splits, per_split)
              for task in range(tasks)]
    for task, (g, first_panel, end_panel, first, count) in enumerate(shares):
        covered[g, first:first + count, first_panel:end_panel] += 1
        work[task * threads // tasks] += -(-count // convolution.NR) * (end_panel - first_panel) / panels
    assert (covered == 1).all()
    if splits < 0:  # (the tail's pieces, none empty, may differ by one panel of A each)
        tail = column_panels - chunks * (column_panels // chunks)
        assert 0 < tail <= threads and work.max() - work.min() <= tail / panels + 1e-12
        assert all(share[2] > share[1] for share in shares)


def test_convolution_gemm_evens_out_the_threads_runs():
    """ResNet's 3x3 stride-2 layer at n = 2 (392 columns, 25 panels) in 8 chunks of 3 or 4
    panels gave one of 2 threads 12 panels and the other 13: the other waited out a whole chunk.
    Even-tailed, each takes 4 chunks of 3 and half the outputs of the 25th. Where the runs are
    even already (98 panels in 26 chunks), or the layer is grouped, the split stays."""
    assert convolution.gemm_split.py_func(2, 128, 1, 64, 2, 196) == (10, 25, 8, -2, 11)
    assert convolution.gemm_split.py_func(8, 128, 1, 64, 2, 196)[3] == 1
    assert convolution.gemm_split.py_func(2, 128, 2, 64, 2, 196)[3] == 1
    for n in range(1, 12):
        for out_channels, pixels, task_columns, group in ((128, 196, 64, 1), (512, 196, 64, 1), (64, 784, 64, 1),
                                                          (256, 169, 64, 1), (96, 169, 64, 2), (1000, 169, 128, 1),
                                                          (28, 196, 64, 1)):
            for threads in (1, 2, 3, 4):
                check_share(convolution.gemm_split.py_func(n, out_channels, group, task_columns, threads, pixels),
                            n * pixels, convolution.panel_layout.py_func(out_channels // group)[0], threads, group)
    rng = np.random.default_rng(10)
    # (28 outputs are 5 panels of A, which 4 threads' pieces of a tail panel share as 1 + 1 + 1 + 2)
    for out_channels, threads in ((40, 2), (28, 4)):
        attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 24, out_channels, (28, 28), (3, 3), (2, 2), (1, 1),
                                                  (1, 1), (1, 1))
        run_step(convolution, attrs, inputs, outputs, 2, algorithm="gemm", columns_per_task=64, min_tasks=threads)
        check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:2]], attrs), 2)


@pytest.mark.parametrize("kernel, pads", [((1, 1), (0, 0)), ((3, 3), (1, 1))])
def test_convolution_gemm_splits_uneven_columns_by_output_channels(kernel, pads):
    """11 panels of columns (a 13x13 image) over 2 threads: whole panels would give one thread 6
    and the other 5, so each takes half of the 34 panels of output channels over all the columns
    instead (a split that the hypothesis tests' few channels rarely reach)."""
    assert convolution.split_tasks.py_func(169, 64, 2, 34, 1, True)[2:] == (2, 17)
    assert convolution.split_tasks.py_func(169, 64, 2, 34, 1, False)[2] == 1  # (Winograd: by columns)
    assert convolution.split_tasks.py_func(169, 64, 2, 10, 1, True)[2] == 1  # too few outputs to pay for it
    assert convolution.split_tasks.py_func(0, 64, 2, 34, 1, True)[1] == 0  # n = 0: no tasks
    rng = np.random.default_rng(8)
    attrs, inputs, outputs = convolution_case(rng, 2, 1, 1, 8, 200, (13, 13), kernel, (1, 1), (1, 1), pads, pads)
    run_step(convolution, attrs, inputs, outputs, 1, algorithm="gemm", columns_per_task=64, min_tasks=2)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:1]], attrs), 1)


def with_residual(data, rng, inputs, outputs, n):
    """Draws none, a residual of its own, or one the output is written over (the output's own
    buffer, as ``graph.compiler.residuals_in_place`` plans it): appends it to inputs and returns a
    copy of its rows < n, or None."""
    kind = data.draw(st.sampled_from(["none", "separate", "written over"]), label="residual")
    if kind == "none":
        return None
    residual = poisoned_input(rng, outputs[0].shape, n)
    if kind == "written over":
        residual[n:] = poisoned_output(residual[n:].shape)  # (its rows >= n are the output's too)
        outputs[0] = residual
    inputs.append(residual)
    return residual[:n].copy()


EPILOGUES = [None, {"type": "relu", "alpha": 0.0, "beta": 0.0}, {"type": "relu", "alpha": 0.1, "beta": 0.0},
             {"type": "relu6", "alpha": 0.0, "beta": 0.0}, {"type": "clamp", "alpha": -0.5, "beta": 0.75}]


@given(data=st.data())
def test_convolution_gemm_epilogue_matches_reference(data):
    """The fused residual and activation (``graph.fusion``), both where the micro-kernel writes
    whole panels into the output itself and where a panel goes through the product first."""
    max_batch, n = draw_batches(data)
    size = draw_pair(data, st.integers(3, 10), "size")
    kernel = data.draw(st.sampled_from([(1, 1), (3, 3)]), label="kernel")
    out_channels = data.draw(st.integers(8, 20), label="out_channels")
    activation = data.draw(st.sampled_from(EPILOGUES), label="activation")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    pads = (kernel[0] // 2, kernel[1] // 2)
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, 1, 6, out_channels, size, kernel, (1, 1), (1, 1),
                                              pads, pads)
    residual = with_residual(data, rng, inputs, outputs, n)
    attrs["activation"] = activation
    run_step(convolution, attrs, inputs, outputs, n, algorithm="gemm", **gemm_split(data))
    expected = REFERENCES["Convolution"]([inputs[0][:n]], attrs)[0]
    if residual is not None:
        expected = expected + residual
    if activation is not None:
        expected = REFERENCES["Activation"]([expected], activation)[0]
    check_outputs(outputs, [expected], n)


@given(data=st.data())
def test_winograd_convolution_matches_reference(data):
    """F(2x2, 3x3) and F(4x4, 3x3) on any sizes (a last tile overhanging the output by 1 to 3),
    any padding on each side (tiles reading past the image), more channels than one packed block
    (16 or 7), a last panel of 1 to 4 output channels, tasks of several panels or split by output
    channels, and the fused residual and activation, with the tiles in panels' lanes or as the
    rows of the products (``tile_rows``: 1 to 16 tiles a panel, in calls of up to 9). The
    tolerance is relative to the largest sum before the activation, which F(4x4, 3x3)'s rounding
    scales with."""
    max_batch, n = draw_batches(data)
    tile = data.draw(st.sampled_from([2, 4]), label="tile")
    tile_rows = data.draw(st.booleans(), label="tile_rows")
    channels = data.draw(st.integers(1, 40), label="channels")
    out_channels = data.draw(st.integers(1, 20), label="out_channels")
    size = draw_pair(data, st.integers(1, 12), "size")
    pads_begin = draw_pair(data, PAD, "pads_begin")
    pads_end = draw_pair(data, PAD, "pads_end")
    for a in range(2):
        assume(size[a] + pads_begin[a] + pads_end[a] >= 3)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, 1, channels, out_channels, size, (3, 3), (1, 1),
                                              (1, 1), pads_begin, pads_end)
    residual = with_residual(data, rng, inputs, outputs, n)
    attrs["activation"] = data.draw(st.sampled_from(EPILOGUES), label="activation")
    run_step(convolution, attrs, inputs, outputs, n, algorithm="winograd", tile=tile, tile_rows=tile_rows,
             **gemm_split(data))
    expected, scale = expected_convolution(inputs, attrs, n, residual)
    check_outputs(outputs, [expected], n, atol=1e-5 if tile == 2 else 3e-5, scale=scale)


@pytest.mark.parametrize("n, side, min_tasks", [(1, 6, 2), (3, 6, 3), (2, 9, 1), (3, 9, 4)])
def test_winograd_tile_rows_take_blocks_of_output_channels(n, side, min_tasks):
    """The tiles as the rows of the products (``tile_rows``), with more output channels than a
    block of three of TILE_ROWS_CHANNELS (101: the last block padded with zero weights) and more
    channels than one packed block: n samples of 9 tiles (6x6) or 25 (9x9), in panels of 16 (calls
    of 8 + 8) and a last one of 9 (one call), 11 (8 + 3) or 2, tasks split by blocks of output
    channels (min_tasks 2 to 4: a split starting past block 0)."""
    rng = np.random.default_rng(21)
    attrs, inputs, outputs = convolution_case(rng, 3, n, 1, 300, 101, (side, side), (3, 3), (1, 1), (1, 1), (1, 1),
                                              (1, 1))
    kernel, args = run_step(convolution, attrs, inputs, outputs, n, algorithm="winograd", tile=2, tile_rows=True,
                            min_tasks=min_tasks)
    assert args[7] is True  # (tile_rows)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:n]], attrs), n, atol=1e-5)


def test_winograd_takes_tile_rows_for_few_tiles_of_enough_channels():
    """AlexNet's 6x6 layers (9 tiles of 2x2) of 192 and 256 channels take the tiles as rows, as
    does a 12x12 output in 4x4 tiles (9); not 7x7 (16 tiles of 2x2, a whole panel), 48 channels
    (their reductions too short for a call's transposes), nor any layer without AVX-512."""
    with mock.patch.object(convolution, "WIDE_VECTORS", True):
        assert convolution.winograd_tile_rows(192, 6, 6, 2) and convolution.winograd_tile_rows(256, 6, 6, 2)
        assert convolution.winograd_tile_rows(96, 12, 12, 4) and convolution.winograd_tile_rows(128, 5, 5, 2)
        assert not convolution.winograd_tile_rows(96, 7, 7, 2) and not convolution.winograd_tile_rows(128, 13, 13, 4)
        assert not convolution.winograd_tile_rows(48, 6, 6, 2)
    with mock.patch.object(convolution, "WIDE_VECTORS", False):
        assert not convolution.winograd_tile_rows(192, 6, 6, 2)
    if convolution.WIDE_VECTORS:  # cpu_step binds the choice and its packing of U
        rng = np.random.default_rng(2)
        attrs, inputs, outputs = convolution_case(rng, 1, 1, 1, 96, 40, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1),
                                                  (1, 1))
        _, args = convolution.cpu_step(attrs, inputs, outputs)
        assert args[7] is True and args[1].size == 16 * 96 * 64  # (40 channels padded to 2 blocks of 32)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("min_tasks", [1, 3])
def test_winograd_convolution_takes_output_channels_a_block_at_a_time(min_tasks, tile):
    """More output channels than one block of PANELS_PER_BLOCK panels, whose products the task
    keeps in cache one block at a time; with min_tasks 3, the blocks of a split that starts
    past panel 0."""
    rng = np.random.default_rng(6)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 20, 6 * PANELS_PER_BLOCK + 13, (5, 7), (3, 3), (1, 1),
                                              (1, 1), (1, 1), (1, 1))
    run_step(convolution, attrs, inputs, outputs, 2, algorithm="winograd", min_tasks=min_tasks, tile=tile)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:2]], attrs), 2, atol=1e-5 if tile == 2 else 3e-5)


@pytest.mark.parametrize("out_channels", [13, 30, 36])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_pairs_column_panels_over_a_long_reduction(tile, out_channels):
    """One task of three whole panels of tiles (48 columns), more channels than one reduction
    block: with AVX-512 its products take two column panels a call and the third alone, on the
    same A panels (accumulating over the blocks, a panel multiplied twice would count twice), with
    2 full A panels and the short one (13), 5 and the short one (30) or 6 (36)."""
    rng = np.random.default_rng(12)
    side = (2 * tile, 24 * tile)  # 2 x 24 tiles
    attrs, inputs, outputs = convolution_case(rng, 1, 1, 1, 300, out_channels, side, (3, 3), (1, 1), (1, 1),
                                              (1, 1), (1, 1))
    run_step(convolution, attrs, inputs, outputs, 1, algorithm="winograd", tile=tile, columns_per_task=48,
             min_tasks=1)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:1]], attrs), 1, atol=1e-5 if tile == 2 else 3e-5)


def test_winograd_split_gives_every_chunk_as_many_panels():
    """A 27x27 output in 4x4 tiles has 49 tiles a sample: at n = 2, 7 panels of 16 tiles. Four
    chunks of 1, 2, 2 and 2 panels gave one of 2 threads 3 panels and the other 4 (each a fixed
    cost of 36 short GEMMs); where the chunks do not share the panels evenly, each takes one
    panel, and the chain's threads even out by taking each other's. The tasks cover every tile
    once.

    Seven panels still left one of 2 threads a whole panel's time idle at the end (the two end a
    task apart): the seventh is split by output channels, half of it to each thread's run of
    tasks (``tail_share``), so that each run holds the same work."""
    assert convolution.winograd_split.py_func(2, 64, 27, 4, False, 48, 2, 729) == (8, 7, 6, -2, 6)
    assert convolution.winograd_split.py_func(1, 64, 27, 4, False, 48, 2, 729)[:4] == (2, 4, 2, 1)  # (2 + 2: kept)
    for n in range(1, 9):
        for out_channels, side, tile in ((64, 27, 4), (128, 13, 4), (192, 28, 4), (384, 6, 2), (16, 28, 4)):
            for threads in (1, 2, 3, 4):
                check_share(convolution.winograd_split.py_func(n, out_channels, side, tile, False, 48, threads,
                                                               side * side),
                            n * convolution.sample_tiles.py_func(side, side, tile)[1],
                            convolution.panel_layout.py_func(out_channels)[0], threads)
    rng = np.random.default_rng(9)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, 16, 24, (27, 27), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
    run_step(convolution, attrs, inputs, outputs, 2, algorithm="winograd", tile=4, min_tasks=2)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:2]], attrs), 2, atol=3e-5)


@given(data=st.data())
def test_convolution_by_output_channel_vectors_matches_reference(data):
    """``convolution_stem_cpu`` (a first layer on the image, a strided one with a window, or
    groups; STEM_CHANNELS output channels by 6 pixels a call: 16, or 32 with AVX-512, 16 of them
    padding for 16 channels): 1 to 4 channels in or a deep layer's 9 to 40, 16 to 96 out, or 2 to
    3 groups of 32 or 64 out, kernels 1 to 7 at strides 1 to 4, pads before and after, a band's
    last group of pixels under 6 (repeating its last pixel) and groups of pixels across output
    rows, bands of one row to a whole sample and chunks of the channels (``stem_split``,
    min_tasks), the fused residual and activation, rows >= n untouched."""
    max_batch, n = draw_batches(data)
    group = data.draw(st.sampled_from([1, 1, 2, 3]), label="group")
    channels = data.draw(st.integers(1, 4) | st.integers(9, 40), label="channels")  # (a group's)
    out_channels = data.draw(st.sampled_from([16, 32, 48, 96] if group == 1 else [32, 64]), label="out_channels")
    kernel = draw_pair(data, st.integers(1, 7), "kernel")
    strides = draw_pair(data, st.integers(1, 4), "strides")
    pads_begin, pads_end = draw_pair(data, PAD, "pads_begin"), draw_pair(data, PAD, "pads_end")
    size = draw_pair(data, st.integers(1, 20), "size")
    for a in range(2):
        assume(size[a] + pads_begin[a] + pads_end[a] >= kernel[a])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, group, channels, out_channels, size, kernel,
                                              strides, (1, 1), pads_begin, pads_end)
    residual = None
    if data.draw(st.booleans(), label="residual"):
        # (a buffer of its own: the last run of 8 pixels writes some outputs again, reading their
        # residual again, so the residual cannot be the output's own memory)
        residual = rng.standard_normal(outputs[0][:n].shape).astype(np.float32)
        inputs.append(np.concatenate([residual, np.full_like(outputs[0][n:], np.nan)]))
    attrs["activation"] = data.draw(st.sampled_from(EPILOGUES), label="activation")
    run_step(convolution, attrs, inputs, outputs, n, algorithm="stem",
             min_tasks=data.draw(st.integers(1, 16), label="min_tasks"))
    expected, scale = expected_convolution(inputs, attrs, n, residual)
    check_outputs(outputs, [expected], n, scale=scale)


@given(data=st.data())
def test_convolution_by_output_channel_vectors_with_max_pooling_matches_reference(data):
    """``convolution_stem_cpu`` with the max pooling of its output fused in (``max_pool``): windows
    1 to 4 (4: ``stem.max_run``'s loop) at strides 1 to 3, leading pads under the window, ceil
    rounding's last window past the convolution's output, windows overlapping two bands (whose
    shared row both compute), and the activation after the pooling: a pooling of the activated
    output; a first layer's few channels in, a deep layer's 9 to 24, or two groups of 32 out."""
    max_batch, n = draw_batches(data)
    group = data.draw(st.sampled_from([1, 1, 2]), label="group")
    channels = data.draw(st.integers(1, 4) | st.integers(9, 24), label="channels")  # (a group's)
    group_out = 16 if group == 1 else 32
    kernel = draw_pair(data, st.integers(1, 5), "kernel")
    strides = draw_pair(data, st.integers(1, 3), "strides")
    pads = draw_pair(data, st.integers(0, 2), "pads")
    size = draw_pair(data, st.integers(1, 20), "size")
    for a in range(2):
        assume(size[a] + 2 * pads[a] >= kernel[a])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, group, channels, group_out, size, kernel, strides,
                                              (1, 1), pads, pads)
    conv_size = outputs[0].shape[2:]
    pool_kernel = draw_pair(data, st.integers(1, 4), "pool_kernel")
    pool_strides = draw_pair(data, st.integers(1, 3), "pool_strides")
    pool_pads = tuple(data.draw(st.integers(0, pool_kernel[a] - 1), label="pool_pad") for a in range(2))
    ceil = data.draw(st.booleans(), label="ceil")
    pooled = []
    for a in range(2):
        span = conv_size[a] + pool_pads[a] - pool_kernel[a]
        assume(span >= 0)
        count = (-(-span // pool_strides[a]) if ceil else span // pool_strides[a]) + 1
        if (count - 1) * pool_strides[a] >= conv_size[a] + pool_pads[a]:  # (a last window wholly in padding)
            count -= 1
        pooled.append(count)
    pool = {"pool_method": "max", "kernel": pool_kernel, "strides": pool_strides, "pads_begin": pool_pads,
            "pads_end": pool_pads, "exclude_pad": False, "output_size": tuple(pooled)}
    attrs["activation"] = data.draw(st.sampled_from(EPILOGUES), label="activation")
    assume(attrs["activation"] is None or attrs["activation"].get("alpha", 0.0) >= 0.0)
    attrs["max_pool"] = {"kernel": pool_kernel, "strides": pool_strides, "pads_begin": pool_pads,
                         "conv_size": conv_size}
    outputs = [poisoned_output((max_batch, group * group_out) + tuple(pooled))]
    run_step(convolution, attrs, inputs, outputs, n, algorithm="stem",
             min_tasks=data.draw(st.integers(1, 16), label="min_tasks"))
    expected, scale = expected_convolution(inputs, attrs, n)
    expected = REFERENCES["Pooling"]([expected], pool)[0]
    check_outputs(outputs, [expected], n, scale=scale)


@pytest.mark.parametrize("weights, size, strides, pads, min_tasks", [
    ((64, 3, 11, 11), 67, 4, 2, 2),  # AlexNet's first layer: 363 taps, bands of a few rows
    ((32, 3, 3, 3), 5, 2, 1, 1),     # 3 x 3 outputs: a band of 9 pixels, groups across rows
    ((16, 1, 3, 3), 2, 1, 1, 8),     # 2 x 2 outputs: one group, under 8 pixels to write back
    ((48, 4, 7, 7), 40, 2, 3, 3),    # three blocks of 16 channels, bands of several rows
    ((128, 64, 3, 3), 14, 2, 1, 2),  # a deep stride-2 layer: 576 taps
    ((512, 48, 3, 3), 7, 2, 1, 4),   # 4 x 4 outputs of 16 blocks on 4 threads: chunks of the channels
])
def test_convolution_by_output_channel_vectors_fixed_cases(weights, size, strides, pads, min_tasks):
    if weights[0] == 512:  # (the case is here for its chunks)
        out_side = (size + 2 * pads - weights[2]) // strides + 1
        assert convolution.stem_split(2, weights[1], 1, weights[0], out_side, out_side, out_side, *weights[2:],
                                      strides, strides, 1, 1, min_tasks)[2] > 1
    rng = np.random.default_rng(15)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 1, weights[1], weights[0], (size, size), weights[2:],
                                              (strides, strides), (1, 1), (pads, pads), (pads, pads))
    attrs["activation"] = {"type": "relu", "alpha": 0.0, "beta": 0.0}
    run_step(convolution, attrs, inputs, outputs, 2, algorithm="stem", min_tasks=min_tasks)
    expected = REFERENCES["Activation"](REFERENCES["Convolution"]([inputs[0][:2]], attrs), attrs["activation"])
    check_outputs(outputs, expected, 2)


@pytest.mark.parametrize("group, group_in, group_out, kernel, size, strides, pads, min_tasks", [
    (2, 32, 96, 5, 13, 1, 2, 2),   # AlexNet's 5x5 64 -> 192 in two groups
    (2, 48, 64, 3, 6, 1, 1, 2),    # AlexNet's 3x3 384 -> 256 in two groups, narrower
    (4, 8, 32, 3, 9, 2, 1, 3),     # four groups at stride 2
    (2, 16, 128, 3, 5, 1, 1, 4),   # two groups of 4 blocks on 4 threads: chunks within a group
])
def test_convolution_by_output_channel_vectors_in_groups(group, group_in, group_out, kernel, size, strides, pads,
                                                         min_tasks):
    """Each group's blocks of output channels read that group's input planes only."""
    rng = np.random.default_rng(16)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, group, group_in, group_out, (size, size), (kernel, kernel),
                                              (strides, strides), (1, 1), (pads, pads), (pads, pads))
    attrs["activation"] = {"type": "relu", "alpha": 0.0, "beta": 0.0}
    kernel_fn, _ = run_step(convolution, attrs, inputs, outputs, 2, min_tasks=min_tasks)
    assert kernel_fn is convolution.convolution_stem_cpu  # (chosen: a window in groups of 32 or more)
    expected = REFERENCES["Activation"](REFERENCES["Convolution"]([inputs[0][:2]], attrs), attrs["activation"])
    check_outputs(outputs, expected, 2)


def test_groups_take_the_stem_kernel_with_a_window_and_whole_blocks_only():
    attrs = {"weights": np.zeros((48, 8, 3, 3), np.float32), "biases": np.zeros(48, np.float32), "strides": (1, 1),
             "dilations": (1, 1), "group": 2, "pads_begin": (1, 1), "pads_end": (1, 1), "activation": None}
    x, out = np.zeros((2, 16, 6, 6), np.float32), np.zeros((2, 48, 6, 6), np.float32)
    assert convolution.choose_algorithm(attrs, x.shape) == "gemm"  # (24 a group)
    with pytest.raises(ValueError, match="groups of a multiple of"):
        convolution.cpu_step(attrs, [x], [out], algorithm="stem")
    pointwise = {**attrs, "weights": np.zeros((64, 8, 1, 1), np.float32), "biases": np.zeros(64, np.float32),
                 "pads_begin": (0, 0), "pads_end": (0, 0)}
    assert convolution.choose_algorithm(pointwise, x.shape) != "stem"  # (no window)
    assert convolution.choose_algorithm({**pointwise, "weights": np.zeros((64, 8, 3, 3), np.float32)},
                                        x.shape) == "stem"
    assert convolution.choose_algorithm({**pointwise, "weights": np.zeros((64, 8, 3, 3), np.float32),
                                         "dilations": (2, 2)}, x.shape) != "stem"


def stem_share_cost(n, share, channels, group, out_channels, out_height, conv_height, conv_width, kernel, strides,
                    pool, pool_stride, threads):
    """The work of the thread that works longest under a share (rows, bands, chunks) of
    ``convolution_stem_cpu``, as ``stem_split``'s docstring counts it."""
    rows, bands, chunks = share
    blocks = -(-out_channels // STEM_CHANNELS)
    read_rows = min(conv_height, (rows - 1) * pool_stride + pool)
    slots = -(-read_rows * conv_width // STEM_PIXELS) * STEM_PIXELS
    copied = channels * ((read_rows - 1) * strides[0] + kernel[0]) * ((conv_width - 1) * strides[1] + kernel[1])
    taps = channels // group * kernel[0] * kernel[1]
    weights = -(-blocks // chunks) * STEM_CHANNELS * taps
    task = (slots * -(-blocks // chunks) * taps + convolution.STEM_COPY_COST * copied + convolution.STEM_TASK_COST
            + convolution.STEM_WEIGHT_COST * weights)
    return -(-max(1, n) * bands * chunks // threads) * task


@pytest.mark.parametrize(
    "n, channels, out_channels, out_height, conv_size, kernel, strides, pool, pool_stride, threads, group", [
    (1, 3, 32, 56, (56, 56), (3, 3), (2, 2), 1, 1, 2, 1),       # MobileNet's first layer
    (1, 3, 32, 56, (56, 56), (3, 3), (2, 2), 1, 1, 6, 1),       # ... on 6 threads: a band each
    (2, 3, 64, 55, (55, 55), (3, 3), (2, 2), 1, 1, 2, 1),
    (32, 3, 64, 56, (112, 112), (7, 7), (2, 2), 1, 1, 2, 1),
    (1, 1, 16, 1, (1, 1), (3, 3), (1, 1), 1, 1, 16, 1),         # one output pixel, more threads than rows
    (3, 4, 48, 7, (7, 300), (5, 5), (1, 1), 1, 1, 4, 1),
    (2, 3, 64, 27, (55, 55), (3, 3), (2, 2), 3, 2, 2, 1),       # SqueezeNet's first layer, its pooling fused
    (32, 3, 64, 56, (112, 112), (7, 7), (2, 2), 3, 2, 2, 1),    # ResNet's, pooled
    (8, 3, 32, 32, (64, 64), (3, 3), (1, 1), 2, 2, 2, 1),
    (1, 3, 16, 3, (7, 500), (3, 3), (1, 1), 5, 1, 1, 1),        # a pool 5 high over 7 rows: bands share rows
    (1, 128, 128, 14, (14, 14), (3, 3), (2, 2), 1, 1, 2, 1),    # ResNet's stride-2 3x3: bands of whole rows
    (1, 512, 512, 7, (7, 7), (3, 3), (2, 2), 1, 1, 2, 1),       # 7 rows of 7 pixels: chunks of channels
    (8, 512, 512, 7, (7, 7), (3, 3), (2, 2), 1, 1, 2, 1),
    (1, 256, 1024, 112, (112, 112), (3, 3), (2, 2), 1, 1, 4, 1),  # the products' budget bounds the rows
    (0, 3, 64, 27, (55, 55), (3, 3), (2, 2), 3, 2, 2, 1),       # (n = 0, the call that only compiles the kernel)
    (1, 384, 256, 6, (6, 6), (3, 3), (1, 1), 1, 1, 2, 2),       # AlexNet's 3x3 in two groups: half the taps
    (1, 64, 128, 14, (14, 14), (3, 3), (1, 1), 1, 1, 2, 2),     # two groups: bands (ungrouped: chunks)
])
def test_stem_split_is_the_cheapest_share_of_whole_rows(n, channels, out_channels, out_height, conv_size, kernel,
                                                        strides, pool, pool_stride, threads, group):
    """Bands cover the output rows once, the convolution rows each reads fit the products'
    budget (but bands of one row), and no share of at most STEM_TASKS_PER_THREAD tasks per thread
    within that budget costs less (``stem_share_cost``, every bands and chunks counted here)."""
    args = (channels, group, out_channels, out_height, *conv_size, *kernel, *strides, pool, pool_stride)
    rows, bands, chunks = convolution.stem_split(n, *args, threads)
    assert (bands - 1) * rows < out_height <= bands * rows
    blocks = -(-out_channels // STEM_CHANNELS)
    assert 1 <= chunks <= blocks

    def within_budget(rows, chunks):
        read_rows = (rows - 1) * pool_stride + pool
        products = read_rows * conv_size[1] * -(-blocks // chunks) * STEM_CHANNELS
        return rows == 1 or products <= convolution.STEM_SUMS_FLOATS

    assert within_budget(rows, chunks)
    cost = stem_share_cost(n, (rows, bands, chunks), channels, group, out_channels, out_height, *conv_size, kernel,
                           strides, pool, pool_stride, threads)
    wanted = threads * convolution.STEM_TASKS_PER_THREAD
    for other_chunks in range(1, blocks + 1):
        for other_bands in range(1, out_height + 1):
            other_rows = -(-out_height // other_bands)
            if max(1, n) * other_bands * other_chunks > wanted or not within_budget(other_rows, other_chunks):
                continue
            share = (other_rows, -(-out_height // other_rows), other_chunks)
            assert cost <= stem_share_cost(n, share, channels, group, out_channels, out_height, *conv_size, kernel,
                                           strides, pool, pool_stride, threads), share


@pytest.mark.parametrize("height, width, channels", [(3, 3, 2), (1, 7, 1), (2, 8, 3), (27, 27, 2)])
def test_pointwise_patches_match_the_general_loops(height, width, channels):
    """The short cut of 1x1, stride-1, unpadded layers (``pointwise_patches``) gives what the
    general loops give (``window_patches``) for every task's columns: a panel split where a
    sample ends inside it (and element by element where two end inside it, samples under 16
    pixels), one run across samples that lie end to end (one channel), a last short panel,
    columns past the batch; from a group's first channel or a later one."""
    pixels, taps = height * width, np.zeros(1, np.intp)
    for n in (1, 2, 5):
        for first in range(0, n * pixels, NR):
            for chunk in range(1, min(n * pixels - first, 3 * NR + 3) + 1):
                panel_columns = -(-chunk // NR) * NR
                for first_offset in (0, pixels):
                    args = (first, chunk, panel_columns, pixels, width, 1, 1, 0, 0, channels * pixels, first_offset,
                            height, width, taps, taps)
                    short_cut = convolution.pointwise_patches(first, chunk, panel_columns, pixels, channels * pixels,
                                                              first_offset)
                    for got, want in zip(short_cut, convolution.window_patches(*args)):
                        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("weights, size, strides, pads, algorithm", [
    ((64, 3, 7, 7), 112, 2, 3, "stem"),    # ResNet's and GoogLeNet's first layer
    ((32, 3, 3, 3), 64, 1, 1, "stem"),     # FCN's
    ((32, 3, 3, 3), 112, 2, 1, "stem"),    # MobileNet's
    ((64, 3, 3, 3), 112, 2, 0, "stem"),    # SqueezeNet's
    ((64, 3, 11, 11), 112, 4, 2, "stem"),  # AlexNet's
    ((32, 1, 3, 3), 28, 1, 1, "stem"),     # one channel in
    ((24, 3, 3, 3), 112, 2, 1, "gemm"),    # 24 channels out: a third of the last 16 padding
    ((64, 5, 7, 7), 112, 1, 3, "gemm"),    # 5 channels in, unit stride
    ((64, 5, 7, 7), 112, 2, 3, "stem"),    # 5 channels in, strided: a window at any channels
    ((128, 128, 3, 3), 28, 2, 1, "stem"),  # ResNet's stride-2 3x3
    ((512, 256, 1, 1), 28, 2, 0, "gemm"),  # a strided 1x1: no window
    ((24, 128, 3, 3), 28, 2, 1, "gemm"),   # 24 channels out
])
def test_convolution_chooses_output_channel_vectors_for_first_and_strided_layers(weights, size, strides, pads,
                                                                                 algorithm):
    attrs = {"weights": np.zeros(weights, np.float32), "biases": np.zeros(weights[0], np.float32),
             "strides": (strides, strides), "dilations": (1, 1), "group": 1, "pads_begin": (pads, pads),
             "pads_end": (pads, pads), "activation": None}
    shape = (2, weights[1], size, size)
    assert convolution.choose_algorithm(attrs, shape) == algorithm
    assert convolution.choose_algorithm({**attrs, "dilations": (2, 2)}, shape) != "stem"
    x = np.zeros(shape, np.float32)
    out = np.zeros((2, weights[0]) + convolution.out_size(attrs, shape), np.float32)
    kernel, _ = convolution.cpu_step(attrs, [x], [out])
    assert kernel.__name__ == f"convolution_{algorithm}_cpu"


def test_only_the_stem_kernel_takes_a_fused_max_pooling():
    """A convolution bound with ``max_pool`` (``compiler.max_poolings_fused``) by any other kernel
    would compute the convolution's output into the pooling's buffer: an error says so."""
    attrs = {"weights": np.zeros((64, 64, 3, 3), np.float32), "biases": np.zeros(64, np.float32), "strides": (1, 1),
             "dilations": (1, 1), "group": 1, "pads_begin": (1, 1), "pads_end": (1, 1), "activation": None,
             "max_pool": {"kernel": (2, 2), "strides": (2, 2), "pads_begin": (0, 0), "conv_size": (8, 8)}}
    for algorithm in (None, "gemm", "direct"):
        with pytest.raises(ValueError, match="only the stem convolution computes a max pooling"):
            convolution.cpu_step(attrs, [np.zeros((1, 64, 8, 8), np.float32)], [np.zeros((1, 64, 4, 4), np.float32)],
                                 algorithm=algorithm)


@pytest.mark.parametrize("shape, algorithm", [
    ((64, 64, 3, 3), "winograd"), ((16, 16, 3, 3), "winograd"),
    ((64, 15, 3, 3), "gemm"),      # too few input channels for Winograd's short GEMMs
    ((8, 64, 3, 3), "gemm"),       # too few output channels
    ((64, 64, 5, 5), "gemm"), ((64, 64, 1, 1), "gemm"),
])
def test_convolution_chooses_winograd_for_3x3_stride_1(shape, algorithm):
    attrs = {"weights": np.zeros(shape, np.float32), "strides": (1, 1), "dilations": (1, 1), "group": 1}
    assert convolution.choose_algorithm(attrs, (1, shape[1], 8, 8)) == algorithm
    for other in ({"strides": (2, 2)}, {"dilations": (1, 2)}, {"group": 2}):
        assert convolution.choose_algorithm({**attrs, **other}, (1, shape[1], 8, 8)) != "winograd"


@pytest.mark.parametrize("side, tile", [
    (28, 4), (27, 4), (14, 4), (13, 4), (11, 4),
    (10, 2),  # nine 4x4 tiles, one panel: 36 x 16 element-columns against 16 x 32 for 25 2x2 tiles
    (6, 2),   # four 4x4 tiles fill a quarter of a 16-tile panel: 36 x 16 against 16 x 16
    (7, 2), (4, 2), (1, 2),
])
def test_winograd_takes_4x4_tiles_unless_one_sample_would_make_more_work(side, tile):
    assert convolution.winograd_tile(side, side) == tile


def test_depthwise_convolution_matches_reference():
    rng = np.random.default_rng(1)
    attrs, inputs, outputs = convolution_case(rng, 3, 2, 6, 1, 1, (9, 7), (3, 3), (1, 2), (1, 1),
                                              (1, 0), (2, 1))
    run_step(convolution, attrs, inputs, outputs, 2)
    check_outputs(outputs, REFERENCES["Convolution"]([inputs[0][:2]], attrs), 2)


def depthwise_case(data, rng, max_batch, n, channels, size, strides):
    """A depthwise 3x3 or 5x5 convolution for ``convolution_depthwise_cpu``: pads before and after
    drawn, a fused activation, and no residual, a residual of its own, or none."""
    side = data.draw(st.sampled_from([3, 5]), label="side")
    pads_begin = draw_pair(data, st.integers(0, side - 1), "pads_begin")
    pads_end = draw_pair(data, st.integers(0, side - 1), "pads_end")
    for a in range(2):
        assume(size[a] + pads_begin[a] + pads_end[a] >= side)
    attrs, inputs, outputs = convolution_case(rng, max_batch, n, channels, 1, 1, size, (side, side), strides, (1, 1),
                                              pads_begin, pads_end)
    attrs["activation"] = data.draw(st.sampled_from(EPILOGUES), label="activation")
    residual = None
    if data.draw(st.booleans(), label="residual"):  # (never the output's own memory: not planned so)
        inputs.append(poisoned_input(rng, outputs[0].shape, n))
        residual = inputs[1][:n].copy()
    return attrs, inputs, outputs, residual


def check_depthwise(attrs, inputs, outputs, residual, n, **options):
    run_step(convolution, attrs, inputs, outputs, n, algorithm="depthwise", **options)
    expected = REFERENCES["Convolution"]([inputs[0][:n]], attrs)[0]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if residual is not None:
        expected = expected + residual
    if attrs["activation"] is not None:
        expected = REFERENCES["Activation"]([expected], attrs["activation"])[0]
    check_outputs(outputs, [expected], n, scale=scale)


@given(data=st.data())
def test_depthwise_convolution_by_channel_vectors_matches_reference(data):
    """``convolution_depthwise_cpu`` (8 channels to a vector): 3x3 and 5x5 kernels, 1 to 20
    channels (a last vector of 1 to 8), planes 1 to 20 a side (runs of 8 pixels, a last shorter
    one, rows under 8), strides 1 to 3, pads before and after, fused activations and residuals,
    rows >= n untouched, and min_tasks from one task per band to several bands of one plane."""
    max_batch, n = draw_batches(data)
    channels = data.draw(st.integers(1, 20), label="channels")
    size = draw_pair(data, st.integers(1, 20), "size")
    strides = draw_pair(data, STRIDE, "strides")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs, residual = depthwise_case(data, rng, max_batch, n, channels, size, strides)
    check_depthwise(attrs, inputs, outputs, residual, n, min_tasks=data.draw(st.integers(1, 16), label="min_tasks"))


@pytest.mark.parametrize("side, channels, size, strides, pads, min_tasks", [
    (3, 16, (40, 300), (1, 1), (1, 1), 1),  # 40 rows of 300: four bands, each a run of rows back to back
    (3, 9, (3, 2), (1, 1), (1, 1), 1),     # 6 pixels a plane: the masked store; two planes of 8
    (3, 20, (7, 7), (2, 2), (1, 1), 2),    # several planes per task, the last of 4 channels
    (3, 8, (14, 14), (1, 1), (0, 0), 2),   # no padding: only the border past the image is zero
    (3, 3, (30, 33), (2, 1), (2, 0), 5),   # pads past the kernel's reach on top
    (5, 12, (14, 14), (1, 1), (2, 2), 2),  # 5x5 (MobileNet v3's), its pads of 2
    (5, 24, (17, 11), (2, 2), (1, 3), 3),  # 5x5 at stride 2, uneven pads
])
def test_depthwise_convolution_by_channel_vectors_fixed_cases(side, channels, size, strides, pads, min_tasks):
    rng = np.random.default_rng(7)
    for n, activation in ((3, None), (1, EPILOGUES[2])):
        attrs, inputs, outputs = convolution_case(rng, 3, n, channels, 1, 1, size, (side, side), strides, (1, 1),
                                                  pads, pads)
        attrs["activation"] = activation
        check_depthwise(attrs, inputs, outputs, None, n, min_tasks=min_tasks)


@pytest.mark.parametrize("n, octets, out_height, max_rows, min_tasks", [
    (1, 4, 56, 68, 2), (1, 4, 112, 33, 2), (2, 128, 7, 16, 2), (8, 64, 14, 16, 2), (1, 1, 3, 16, 8),
    (3, 2, 40, 16, 1), (1, 128, 4, 16, 16), (0, 4, 14, 16, 2),
])
def test_depthwise_split_covers_every_row_and_plane_in_a_few_tasks(n, octets, out_height, max_rows, min_tasks):
    tasks, band_rows, planes_per_task, chunks = convolution.depthwise_split(n, octets, out_height, max_rows,
                                                                            min_tasks)
    bands = -(-out_height // band_rows)
    assert tasks == bands * chunks
    assert band_rows <= max_rows
    assert (bands - 1) * band_rows < out_height <= bands * band_rows
    assert (chunks - 1) * planes_per_task < n * octets <= chunks * planes_per_task
    # as many tasks as min_tasks threads want, where the rows and planes allow
    assert tasks >= min(convolution.DEPTHWISE_TASKS_PER_THREAD * min_tasks, out_height * n * octets)


@pytest.mark.parametrize("out_width, strides, side, rows", [
    (56, (1, 1), 3, 68), (56, (2, 2), 3, 17), (112, (1, 1), 3, 33), (300, (1, 1), 3, 11), (14, (1, 1), 5, 223),
    (5000, (1, 1), 3, 1),
])
def test_depthwise_band_rows_keep_the_padded_input_within_its_budget(out_width, strides, side, rows):
    assert convolution.depthwise_band_rows(out_width, *strides, side) == rows
    row_floats = ((out_width - 1) * strides[1] + side) * 8
    assert rows == 1 or ((rows - 1) * strides[0] + side) * row_floats <= convolution.DEPTHWISE_SCRATCH_FLOATS


@pytest.mark.parametrize("weights, group, dilations, algorithm", [
    ((32, 1, 3, 3), 32, (1, 1), "depthwise"),
    ((5, 1, 3, 3), 5, (1, 1), "depthwise"),
    ((32, 1, 5, 5), 32, (1, 1), "depthwise"),
    ((32, 1, 7, 7), 32, (1, 1), "direct"),   # 7x7
    ((32, 1, 3, 5), 32, (1, 1), "direct"),   # not square
    ((32, 1, 3, 3), 32, (2, 2), "direct"),   # dilated
    ((64, 1, 3, 3), 32, (1, 1), "direct"),   # two outputs per input channel
    ((32, 2, 3, 3), 16, (1, 1), "direct"),   # groups of two channels
])
def test_convolution_chooses_channel_vectors_for_depthwise_3x3_and_5x5(weights, group, dilations, algorithm):
    attrs = {"weights": np.zeros(weights, np.float32), "biases": np.zeros(weights[0], np.float32),
             "strides": (2, 2), "dilations": dilations, "group": group, "pads_begin": (1, 1), "pads_end": (1, 1),
             "activation": None}
    shape = (2, weights[1] * group, 14, 14)
    assert convolution.choose_algorithm(attrs, shape) == algorithm
    out = np.zeros((2, weights[0]) + convolution.out_size(attrs, shape), np.float32)
    kernel, args = convolution.cpu_step(attrs, [np.zeros(shape, np.float32)], [out])
    kernels = {"depthwise": convolution.convolution_depthwise_cpu, "direct": convolution.convolution_cpu}
    assert kernel is kernels[algorithm]
    check_compiles_once(kernel, args, 2)


def test_convolution_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = convolution_case(rng, 5, 5, 2, 3, 2, (8, 9), (3, 2), (1, 2), (2, 1),
                                              (1, 0), (0, 2))
    for algorithm in ("direct", "gemm"):
        kernel, args = convolution.cpu_step(attrs, inputs, outputs, algorithm=algorithm)
        check_compiles_once(kernel, args, 5)


# Deconvolution

def deconvolution_case(rng, max_batch, n, group, group_in, group_out, size, kernel, strides,
                       dilations, pads_begin, pads_end, output_padding):
    channels, out_channels = group * group_in, group * group_out
    attrs = {
        "weights": rng.uniform(-1.0, 1.0, size=(channels, group_out) + kernel).astype(np.float32),
        "biases": rng.uniform(-1.0, 1.0, size=out_channels).astype(np.float32),
        "strides": strides, "dilations": dilations, "pads_begin": pads_begin, "pads_end": pads_end,
        "output_padding": output_padding, "group": group,
    }
    out_size = tuple((size[a] - 1) * strides[a] - pads_begin[a] - pads_end[a]
                     + dilations[a] * (kernel[a] - 1) + output_padding[a] + 1 for a in range(2))
    inputs = [poisoned_input(rng, (max_batch, channels) + size, n)]
    outputs = [poisoned_output((max_batch, out_channels) + out_size)]
    return attrs, inputs, outputs


@pytest.mark.parametrize("algorithm", ["direct", "gemm", "packed"])
@given(data=st.data())
def test_deconvolution_matches_reference(algorithm, data):
    max_batch, n = draw_batches(data)
    group, group_in, group_out = draw_groups(data)
    size = draw_pair(data, st.integers(1, 6), "size")
    kernel = draw_pair(data, KERNEL_SIDE, "kernel")
    strides = draw_pair(data, STRIDE, "strides")
    dilations = draw_pair(data, DILATION, "dilations")
    pads_begin = draw_pair(data, PAD, "pads_begin")
    pads_end = draw_pair(data, PAD, "pads_end")
    output_padding = draw_pair(data, st.integers(0, 2), "output_padding")
    for a in range(2):
        # ONNX: output padding must be smaller than the stride or the dilation.
        assume(output_padding[a] < max(strides[a], dilations[a]))
        assume((size[a] - 1) * strides[a] - pads_begin[a] - pads_end[a]
               + dilations[a] * (kernel[a] - 1) + output_padding[a] + 1 >= 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    attrs, inputs, outputs = deconvolution_case(rng, max_batch, n, group, group_in, group_out, size,
                                                kernel, strides, dilations, pads_begin, pads_end,
                                                output_padding)
    with gemm_columns(data, deconvolution):
        run_step(deconvolution, attrs, inputs, outputs, n, algorithm=algorithm)
    check_outputs(outputs, REFERENCES["Deconvolution"]([inputs[0][:n]], attrs), n)


def test_deconvolution_compiles_once():
    rng = np.random.default_rng(0)
    attrs, inputs, outputs = deconvolution_case(rng, 5, 5, 2, 2, 3, (5, 4), (3, 2), (2, 3), (1, 2),
                                                (1, 0), (0, 2), (1, 1))
    for algorithm in ("direct", "gemm", "packed"):
        kernel, args = deconvolution.cpu_step(attrs, inputs, outputs, algorithm=algorithm)
        check_compiles_once(kernel, args, 5)


def test_packed_deconvolution_splits_long_reductions():
    """More input channels per group than a packed reduction block (gemm.KC): the blocks after the
    first accumulate onto the product; 7x7 pixels end in a partial panel, copied out with zeros."""
    rng = np.random.default_rng(4)
    attrs, inputs, outputs = deconvolution_case(rng, 3, 2, 2, 300, 3, (7, 7), (3, 3), (2, 2), (1, 1),
                                                (1, 1), (0, 1), (1, 0))
    run_step(deconvolution, attrs, inputs, outputs, 2, algorithm="packed")
    check_outputs(outputs, REFERENCES["Deconvolution"]([inputs[0][:2]], attrs), 2)


@pytest.mark.parametrize("size", [(16, 32), (17, 31)])
def test_packed_deconvolution_copies_panels_of_planes_that_would_share_l1_sets(size):
    """An 8x8 kernel (11 panels of taps) on 16x32 planes (2 KB long) copies each panel of x
    out before the micro-kernel reads it; 17x31 reads them in place. The reference either way,
    across 300 input channels (two reduction blocks)."""
    assert deconvolution.COPIED_MIN_PANELS <= 11 and 16 * 32 * 4 % convolution.IN_PLACE_PLANE_ALIASING == 0
    rng = np.random.default_rng(6)
    attrs, inputs, outputs = deconvolution_case(rng, 3, 2, 1, 300, 3, size, (8, 8), (4, 4), (1, 1),
                                                (2, 2), (2, 2), (0, 0))
    assert deconvolution.choose_algorithm(attrs, inputs[0].shape) == "packed"
    run_step(deconvolution, attrs, inputs, outputs, 2, algorithm="packed")
    check_outputs(outputs, REFERENCES["Deconvolution"]([inputs[0][:2]], attrs), 2)


# Pooling

def pooled_extent(size, kernel, stride, pad_begin, pad_end, ceil):
    """Output length under floor or ceil rounding, as the graph layer resolves it."""
    span = size + pad_begin + pad_end - kernel
    count = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (count - 1) * stride >= size + pad_begin:
        count -= 1
    return count


def pooling_case(rng, max_batch, n, channels, size, out_size):
    inputs = [poisoned_input(rng, (max_batch, channels) + size, n)]
    outputs = [poisoned_output((max_batch, channels) + out_size)]
    return inputs, outputs


# Pooling windows up to 5 high: the kernel pools the rows of a window one by one above 3.
POOL_KERNEL_SIDE = st.integers(1, 5)


def with_nan_cells(data, rng, x, n):
    """x with a few of its real cells (rows < n) set to NaN, when drawn so."""
    if data.draw(st.booleans(), label="with_nan"):
        real = x[:n].reshape(-1)
        real[rng.choice(real.size, size=min(real.size, 3), replace=False)] = np.nan
    return x


# Each method x divisor x rounding gets its own examples: the ceil-rounded windows that run past
# the end padding are where avg divisors differ.
@pytest.mark.parametrize("rounding", ["floor", "ceil", "global"])
@pytest.mark.parametrize("method, exclude_pad", [("max", False), ("avg", False), ("avg", True)])
@given(data=st.data())
def test_pooling_matches_reference(method, exclude_pad, rounding, data):
    max_batch, n = draw_batches(data)
    channels = data.draw(st.integers(1, 8), label="channels")
    size = draw_pair(data, SPATIAL, "size")
    if rounding == "global":
        kernel, strides, pads_begin, pads_end, out_size = size, (1, 1), (0, 0), (0, 0), (1, 1)
    else:
        kernel = draw_pair(data, POOL_KERNEL_SIDE, "kernel")
        strides = draw_pair(data, STRIDE, "strides")
        # The graph rejects pads as large as the kernel (a window would hold only padding).
        pads_begin = tuple(data.draw(st.integers(0, min(2, k - 1)), label="pad_begin") for k in kernel)
        pads_end = tuple(data.draw(st.integers(0, min(2, k - 1)), label="pad_end") for k in kernel)
        ceil = rounding == "ceil"
        for a in range(2):
            assume(size[a] + pads_begin[a] + pads_end[a] >= kernel[a])
        out_size = tuple(pooled_extent(size[a], kernel[a], strides[a], pads_begin[a], pads_end[a], ceil)
                         for a in range(2))
    attrs = {"pool_method": method, "kernel": kernel, "strides": strides, "pads_begin": pads_begin,
             "pads_end": pads_end, "exclude_pad": exclude_pad}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    inputs, outputs = pooling_case(rng, max_batch, n, channels, size, out_size)
    with_nan_cells(data, rng, inputs[0], n)
    run_step(pooling, attrs, inputs, outputs, n)
    expected = REFERENCES["Pooling"]([inputs[0][:n]], {**attrs, "output_size": out_size})
    check_outputs(outputs, expected, n)


# The kernel has a path for windows spanning whole rows (global pooling among them), literal
# window sizes for 2 or 3 columns at stride 1 or 2, and a general path: each against the
# reference, at sizes where the vector loops run full vectors as well as a remainder (13: 6 or 7
# outputs a row; 37: 18 or 19).
@pytest.mark.parametrize("window", [
    dict(kernel=(13, 13), strides=(1, 1), pads_begin=(0, 0), pads_end=(0, 0)),  # global
    dict(kernel=(3, 15), strides=(2, 1), pads_begin=(1, 1), pads_end=(1, 1)),  # whole rows, 7 lines
    dict(kernel=(3, 3), strides=(2, 2), pads_begin=(0, 0), pads_end=(1, 1)),
    dict(kernel=(3, 3), strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1)),
    dict(kernel=(2, 2), strides=(2, 2), pads_begin=(0, 1), pads_end=(0, 0)),
    dict(kernel=(5, 4), strides=(3, 2), pads_begin=(2, 3), pads_end=(1, 2)),
], ids=["global", "whole_rows", "3x3s2", "3x3s1", "2x2s2", "5x4s3x2"])
@pytest.mark.parametrize("method, exclude_pad", [("max", False), ("avg", False), ("avg", True)])
@pytest.mark.parametrize("side", [13, 37])
def test_pooling_paths_match_reference(window, method, exclude_pad, side):
    rng = np.random.default_rng(5)
    size = (side, side)
    out_size = tuple(pooled_extent(size[a], window["kernel"][a], window["strides"][a],
                                   window["pads_begin"][a], window["pads_end"][a], True) for a in range(2))
    attrs = {"pool_method": method, "exclude_pad": exclude_pad, **window}
    for n in (1, 3):
        inputs, outputs = pooling_case(rng, 3, n, 4, size, out_size)
        x = inputs[0]
        x[0, 1, 6, 5] = np.nan  # in the middle of windows
        x[n - 1, 2, side - 1, side - 1] = np.nan  # in the last window of the plane
        x[n - 1, 1, side // 2, 17 % side] = np.nan  # (37: an odd column, in the second 8 outputs' windows)
        x[0, 3, :2, :] = -np.inf  # a max over these cells alone is -inf: padding must not win it
        x[n - 1, 0, 4, 7] = np.inf
        run_step(pooling, attrs, inputs, outputs, n)
        expected = REFERENCES["Pooling"]([x[:n]], {**attrs, "output_size": out_size})
        np.testing.assert_allclose(outputs[0][:n], expected[0], rtol=1e-5, atol=1e-5)
        assert untouched(outputs[0][n:]), "a row >= n was written"


@given(data=st.data())
def test_max_pooling_3_wide_matches_reference(data):
    """The vector kernel for 3-wide max windows (``max_pooling_3_wide_cpu``): rows of 1 to 40
    outputs (under 8: masked loads and stores; else whole vectors and a ragged last one; with
    AVX-512, rows of up to 16 inputs in one 16-wide vector), windows 1 to 3 high clipped by the
    padding, strides 1 and 2 across, NaN and infinities among the inputs."""
    max_batch, n = draw_batches(data)
    stride_w = data.draw(st.integers(1, 2), label="stride_w")
    kernel = (data.draw(st.integers(1, 3), label="kernel_h"), 3)
    strides = (data.draw(STRIDE, label="stride_h"), stride_w)
    pads_begin = tuple(data.draw(st.integers(0, min(2, k - 1)), label="pad_begin") for k in kernel)
    pads_end = tuple(data.draw(st.integers(0, min(2, k - 1)), label="pad_end") for k in kernel)
    ceil = data.draw(st.booleans(), label="ceil")
    width = data.draw(st.integers(1, 40 * stride_w + 2), label="width")
    height = data.draw(st.integers(1, 12), label="height")
    for a, side in enumerate((height, width)):
        assume(side + pads_begin[a] + pads_end[a] >= kernel[a])
    size = (height, width)
    out_size = tuple(pooled_extent(size[a], kernel[a], strides[a], pads_begin[a], pads_end[a], ceil) for a in range(2))
    assume(not (out_size[1] == 1 and 3 - pads_begin[1] >= width))  # (a window spanning whole rows: global)
    attrs = {"pool_method": "max", "kernel": kernel, "strides": strides, "pads_begin": pads_begin,
             "pads_end": pads_end, "exclude_pad": False}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    inputs, outputs = pooling_case(rng, max_batch, n, data.draw(st.integers(1, 4), label="channels"), size,
                                   out_size)
    real = inputs[0][:n].reshape(-1)
    special = min(3, real.size)
    real[rng.choice(real.size, size=special, replace=False)] = [np.nan, np.inf, -np.inf][:special]
    kernel_fn, _ = run_step(pooling, attrs, inputs, outputs, n)
    assert kernel_fn is pooling.max_pooling_3_wide_cpu
    expected = REFERENCES["Pooling"]([inputs[0][:n]], {**attrs, "output_size": out_size})
    check_outputs(outputs, expected, n)


@pytest.mark.parametrize("method, exclude_pad, kernel, strides, pads", [
    ("max", False, (3, 3), (2, 2), (0, 1)),  # max_pooling_3_wide_cpu
    ("max", False, (3, 3), (1, 1), (1, 1)),
    ("max", False, (2, 2), (2, 2), (0, 0)),  # max_pooling_cpu
    ("avg", True, (3, 3), (2, 2), (1, 1)),  # avg_pooling_cpu
])
def test_pooling_takes_small_planes_several_to_a_task(method, exclude_pad, kernel, strides, pads):
    """14x14 planes go several to a task (``pool_split``), 37 channels at n = 2 of 4 leaving the
    last task fewer planes: every plane < n * channels pooled as the reference pools it, none of
    row n written."""
    size, channels, n = (14, 14), 37, 2
    out_size = tuple(pooled_extent(size[a], kernel[a], strides[a], pads[0], pads[1], True) for a in range(2))
    line_work = kernel[0] * size[1] + kernel[1] * out_size[1]
    tasks, tasks_per_plane, _, planes_per_task = pooling.pool_split(n * channels, out_size[0], line_work)
    assert tasks_per_plane == 1 and 1 < planes_per_task < n * channels
    assert (n * channels) % planes_per_task != 0 and tasks == -(-n * channels // planes_per_task)
    attrs = {"pool_method": method, "kernel": kernel, "strides": strides, "pads_begin": (pads[0],) * 2,
             "pads_end": (pads[1],) * 2, "exclude_pad": exclude_pad}
    rng = np.random.default_rng(11)
    inputs, outputs = pooling_case(rng, 4, n, channels, size, out_size)
    inputs[0][n - 1, channels - 1, 13, 13] = np.inf  # in the last plane, which the last task takes
    run_step(pooling, attrs, inputs, outputs, n)
    expected = REFERENCES["Pooling"]([inputs[0][:n]], {**attrs, "output_size": out_size})
    check_outputs(outputs, expected, n)


def test_ceil_rounded_avg_pooling_counts_the_clipped_window():
    """H = 6, kernel 3, stride 2, pads 1/1, ceil: 4 windows, the last covering rows 5..7 of which
    only row 5 is data and row 6 is padding: it divides by 2 (or by 1 with exclude_pad)."""
    rng = np.random.default_rng(2)
    out_size = (pooled_extent(6, 3, 2, 1, 1, True),) * 2
    assert out_size == (4, 4)
    for exclude_pad in (False, True):
        attrs = {"pool_method": "avg", "kernel": (3, 3), "strides": (2, 2), "pads_begin": (1, 1),
                 "pads_end": (1, 1), "exclude_pad": exclude_pad}
        inputs, outputs = pooling_case(rng, 2, 1, 3, (6, 6), out_size)
        run_step(pooling, attrs, inputs, outputs, 1)
        expected = REFERENCES["Pooling"]([inputs[0][:1]], {**attrs, "output_size": out_size})
        check_outputs(outputs, expected, 1)
        x = inputs[0][0].astype(np.float64)
        divisor = 1 if exclude_pad else 2
        np.testing.assert_allclose(outputs[0][0, :, 3, 3], x[:, 5, 5] / divisor / divisor, rtol=1e-5)


def test_max_pooling_propagates_nan_and_ignores_padding():
    """A NaN in a window gives NaN (as np.max); an all-negative window at the border stays
    negative (padding is not a zero that wins)."""
    x = np.full((2, 1, 4, 4), -3.0, dtype=np.float32)
    x[0, 0, 1, 1] = np.nan  # first of the four data cells of window (1, 1)
    attrs = {"pool_method": "max", "kernel": (2, 2), "strides": (2, 2), "pads_begin": (1, 1),
             "pads_end": (1, 1), "exclude_pad": False}
    outputs = [poisoned_output((2, 1, 3, 3))]
    run_step(pooling, attrs, [x], outputs, 2)
    nan_cells = np.zeros((3, 3), dtype=bool)
    nan_cells[1, 1] = True
    assert (np.isnan(outputs[0][0, 0]) == nan_cells).all()
    assert (outputs[0][0, 0][~nan_cells] == -3.0).all()
    assert (outputs[0][1] == -3.0).all()


def test_pooling_compiles_once():
    """Each of the four CPU kernels (max, max over 3-wide windows, avg, and windows spanning whole
    rows) has one signature."""
    rng = np.random.default_rng(0)
    kernels = set()
    for method in ("max", "avg"):
        for kernel_size, pads_end, out_size in (((3, 2), (2, 1), (5, 8)), ((3, 8), (2, 0), (5, 1)),
                                                ((3, 3), (2, 2), (5, 8))):
            attrs = {"pool_method": method, "kernel": kernel_size, "strides": (2, 1), "pads_begin": (1, 0),
                     "pads_end": pads_end, "exclude_pad": method == "avg"}
            inputs, outputs = pooling_case(rng, 5, 5, 4, (9, 8), out_size)
            kernel, args = pooling.cpu_step(attrs, inputs, outputs)
            check_compiles_once(kernel, args, 5)
            kernels.add(kernel)
    assert kernels == {pooling.max_pooling_cpu, pooling.max_pooling_3_wide_cpu, pooling.avg_pooling_cpu,
                       pooling.global_pooling_cpu}


# LRN

def lrn_case(rng, max_batch, n, shape):
    return [poisoned_input(rng, (max_batch,) + shape, n)], [poisoned_output((max_batch,) + shape)]


@given(data=st.data())
def test_lrn_matches_reference(data):
    max_batch, n = draw_batches(data)
    shape = data.draw(st.tuples(st.integers(1, 8), SPATIAL, SPATIAL), label="sample_shape")
    attrs = {
        "local_size": data.draw(st.integers(1, 6), label="local_size"),
        "alpha": data.draw(st.sampled_from([1e-4, 0.1, 1.0]), label="alpha"),
        "beta": data.draw(st.sampled_from([0.5, 0.75, 1.0]), label="beta"),
        "k": data.draw(st.sampled_from([1.0, 2.0]), label="k"),
        "region": data.draw(st.sampled_from(["across", "same"]), label="region"),
    }
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    inputs, outputs = lrn_case(rng, max_batch, n, shape)
    run_step(lrn, attrs, inputs, outputs, n)
    check_outputs(outputs, REFERENCES["LRN"]([inputs[0][:n]], attrs), n)


def test_lrn_compiles_once():
    rng = np.random.default_rng(0)
    for region in ("across", "same"):
        attrs = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0, "region": region}
        inputs, outputs = lrn_case(rng, 5, 5, (6, 7, 8))
        kernel, args = lrn.cpu_step(attrs, inputs, outputs)
        check_compiles_once(kernel, args, 5)
