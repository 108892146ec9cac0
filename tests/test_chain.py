"""``chain.convolution_chain_cpu``: a run of convolution steps in one parallel loop computes what
the steps compute one after the other, whatever the batch, the thread count, and however many of
the loop's iterations get a thread of their own.

Each chain here is built from ``convolution.cpu_step`` bindings, as ``graph.compiler`` builds
them; the same steps called one by one (their own kernels) give the expected output, itself
checked against the naive reference. The input is NaN past row n and every written buffer starts
as a NaN of its own bit pattern: a chain that read or wrote a row >= n would show it.
"""
import numba
import numpy as np
import pytest

from dynbatch.kernels import convolution, fully_connected, lrn, pooling
from dynbatch.kernels.chain import (AVERAGE_STEP, CHAINED_KERNELS, FC_STEP, GLOBAL_POOL_STEP, HAS_CYCLE_COUNTER,
                                   LRN_STEP, MAX_POOL_STEP, STEM_STEP, chain_step, chainable, step_seconds)
from tests.naive import REFERENCES
from tests.poison import poison, untouched

MAX_BATCH = 4
RELU = {"type": "relu", "alpha": 0.0, "beta": 0.0}


def layer(rng, channels, out_channels, kernel, stride=1, group=1, activation=None):
    pad = kernel // 2
    attrs = {"weights": rng.uniform(-0.5, 0.5, (out_channels, channels // group, kernel, kernel)).astype(np.float32),
             "biases": rng.uniform(-0.5, 0.5, out_channels).astype(np.float32), "strides": (stride, stride),
             "dilations": (1, 1), "pads_begin": (pad, pad), "pads_end": (pad, pad), "group": group}
    if activation:
        attrs["activation"] = activation
    return attrs


def poisoned(shape, n, rng=None):
    """An input (``rng``: rows < n drawn, the others NaN) or an output (all the output poison)."""
    array = np.full(shape, np.nan, np.float32)
    if rng is not None:
        array[:n] = rng.uniform(-1.0, 1.0, (n,) + shape[1:])
    else:
        poison(array)
    return array


def fire_chain(rng, n, size=9):
    """SqueezeNet's fire module twice (a 1x1 squeeze, then a 1x1 and a 3x3 (Winograd, 4x4 tiles
    in the first, 2x2 in the second, whose 9 a sample are the rows of its products: ``tile_rows``)
    expand written into the channels of one output), a strided grouped 3x3 GEMM between, a 1x1
    step with a residual, then two depthwise 3x3 steps (one with a residual, one at stride 2): the
    step kinds and bindings a network's chains hold. Returns (steps, the input, every buffer the
    steps write, the final output)."""
    x = poisoned((MAX_BATCH, 24, size, size), n, rng)
    squeezed = poisoned((MAX_BATCH, 16, size, size), n)
    joined = poisoned((MAX_BATCH, 64, size, size), n)
    strided = poisoned((MAX_BATCH, 32, (size + 1) // 2, (size + 1) // 2), n)
    squeezed2 = poisoned((MAX_BATCH, 16, (size + 1) // 2, (size + 1) // 2), n)
    joined2 = poisoned((MAX_BATCH, 48, (size + 1) // 2, (size + 1) // 2), n)
    last = poisoned((MAX_BATCH, 48, (size + 1) // 2, (size + 1) // 2), n)
    depthwise = poisoned((MAX_BATCH, 48, (size + 1) // 2, (size + 1) // 2), n)
    depthwise2 = poisoned((MAX_BATCH, 48, (size + 3) // 4, (size + 3) // 4), n)
    first = layer(rng, 24, 16, 1, activation=RELU)
    steps = [
        convolution.cpu_step(first, [x], [squeezed]),
        convolution.cpu_step(layer(rng, 16, 32, 1, activation=RELU), [squeezed], [joined[:, :32]],
                             destination=(joined, 0)),
        convolution.cpu_step(layer(rng, 16, 32, 3, activation=RELU), [squeezed], [joined[:, 32:]],
                             destination=(joined, 32), tile=4),
        convolution.cpu_step(layer(rng, 64, 32, 3, stride=2, group=2), [joined], [strided]),
        convolution.cpu_step(layer(rng, 32, 16, 1, activation=RELU), [strided], [squeezed2]),
        convolution.cpu_step(layer(rng, 16, 24, 1), [squeezed2], [joined2[:, :24]], destination=(joined2, 0)),
        convolution.cpu_step(layer(rng, 16, 24, 3), [squeezed2], [joined2[:, 24:]], destination=(joined2, 24),
                             tile=2, tile_rows=True),
        convolution.cpu_step({**layer(rng, 48, 48, 1), "activation": RELU}, [joined2, joined2], [last]),
        convolution.cpu_step({**layer(rng, 48, 48, 3, group=48), "activation": RELU}, [last, joined2], [depthwise]),
        convolution.cpu_step(layer(rng, 48, 48, 3, stride=2, group=48), [depthwise], [depthwise2]),
    ]
    kinds = [CHAINED_KERNELS[kernel] for kernel, _ in steps]
    assert kinds == [0, 0, 1, 0, 0, 0, 1, 0, 2, 2], kinds  # (GEMM, Winograd and depthwise steps)
    return steps, first, x, [squeezed, joined, strided, squeezed2, joined2, last, depthwise, depthwise2], depthwise2


@pytest.mark.parametrize("n", [0, 1, 2, MAX_BATCH])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_computes_what_its_steps_compute_one_by_one(n, threads):
    rng = np.random.default_rng(n * 10 + threads)
    steps, first, x, written, last = fire_chain(rng, n)
    for kernel, args in steps:
        kernel(n, *args)
    expected = [buffer.copy() for buffer in written]
    # (the steps' own kernels are checked against the naive reference in test_kernels_spatial;
    # here the first one is, so that this test cannot pass on outputs that are all wrong)
    reference = REFERENCES["Activation"](REFERENCES["Convolution"]([x[:n]], first), RELU)[0]
    np.testing.assert_allclose(expected[0][:n], reference, rtol=1e-4, atol=1e-5)
    for buffer in written:
        poison(buffer)
    kernel, args = chain_step(steps, threads)
    kernel(n, *args)
    for got, want in zip(written, expected):
        # The chain and the steps' own kernels are separately compiled copies of the same tasks,
        # which may fuse different multiply-adds (fastmath "contract"): their roundings differ,
        # the 4x4 tiles' by up to a few 1e-6 of the output's scale (seen: 2.9e-6 on outputs up to 51).
        scale = max(1.0, float(np.abs(want[:n]).max())) if n else 1.0
        np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5, atol=1e-6 * scale)
        assert untouched(got[n:]), "a row >= n was written"
    assert np.isfinite(last[:n]).all()
    seconds = step_seconds(args)  # (None where there is no time-stamp counter to read)
    assert (seconds is None) == (not HAS_CYCLE_COUNTER)
    assert seconds is None or (len(seconds) == len(steps) and all(s >= 0.0 for s in seconds))


def stem_chain(rng, n, size=(21, 17)):
    """A first layer (3 -> 16 3x3 stride 2, its max pooling 3x3 stride 2 fused: a stem step whose
    bands share rows; a plane wider than high, so that no height stands for a width), a 1x1 GEMM
    step, then a 1x1 layer of 32 channels with its global average (an averaged step): what a
    network's first chain and last convolution hold. Returns (steps, the stem's attributes, the
    input, the buffers the steps write)."""
    x = poisoned((MAX_BATCH, 3) + size, n, rng)
    conv_size = tuple((side - 1) // 2 + 1 for side in size)
    pooled_size = tuple((side - 3) // 2 + 1 for side in conv_size)
    pooled = poisoned((MAX_BATCH, 16) + pooled_size, n)
    squeezed = poisoned((MAX_BATCH, 24) + pooled_size, n)
    averaged = poisoned((MAX_BATCH, 32, 1, 1), n)
    stem = {**layer(rng, 3, 16, 3, stride=2, activation=RELU),
            "max_pool": {"kernel": (3, 3), "strides": (2, 2), "pads_begin": (0, 0), "conv_size": conv_size}}
    steps = [
        convolution.cpu_step(stem, [x], [pooled]),
        convolution.cpu_step(layer(rng, 16, 24, 1, activation=RELU), [pooled], [squeezed]),
        convolution.cpu_step({**layer(rng, 24, 32, 1, activation=RELU), "global_average": pooled_size},
                             [squeezed], [averaged]),
    ]
    kinds = [CHAINED_KERNELS[kernel] for kernel, _ in steps]
    assert kinds == [STEM_STEP, 0, AVERAGE_STEP], kinds
    return steps, stem, x, [pooled, squeezed, averaged]


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_stem_and_averaged_steps(n, threads):
    """A chain's stem step (pooled) and averaged step compute what their kernels compute alone."""
    rng = np.random.default_rng(20 + n * 10 + threads)
    steps, stem, x, written = stem_chain(rng, n)
    for kernel, args in steps:
        kernel(n, *args)
    expected = [buffer.copy() for buffer in written]
    # (the stem's own kernel against the naive reference: this test cannot pass on outputs all wrong)
    pool = {"pool_method": "max", "kernel": (3, 3), "strides": (2, 2), "pads_begin": (0, 0), "pads_end": (0, 0),
            "exclude_pad": False, "output_size": written[0].shape[2:]}
    reference = REFERENCES["Pooling"](REFERENCES["Activation"](REFERENCES["Convolution"]([x[:n]], stem), RELU), pool)
    np.testing.assert_allclose(expected[0][:n], reference[0], rtol=1e-4, atol=1e-5)
    for buffer in written:
        poison(buffer)
    kernel, args = chain_step(steps, threads)
    kernel(n, *args)
    for got, want in zip(written, expected):
        scale = max(1.0, float(np.abs(want[:n]).max(initial=0.0)))
        np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5, atol=1e-6 * scale)
        assert untouched(got[n:]), "a row >= n was written"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_a_grouped_stem_step(n, threads):
    """A stem step in two groups (3x3, 64 -> 64, as ``choose_algorithm`` picks for groups of 32
    with a window) between two 1x1 GEMM steps: the chain reads each group's input planes as the
    kernel alone does."""
    rng = np.random.default_rng(40 + n * 10 + threads)
    x = poisoned((MAX_BATCH, 16, 9, 7), n, rng)
    widened, grouped, narrowed = (poisoned((MAX_BATCH, c, 9, 7), n) for c in (64, 64, 16))
    stem = layer(rng, 64, 64, 3, group=2, activation=RELU)
    steps = [convolution.cpu_step(layer(rng, 16, 64, 1, activation=RELU), [x], [widened]),
             convolution.cpu_step(stem, [widened], [grouped]),
             convolution.cpu_step(layer(rng, 64, 16, 1), [grouped], [narrowed])]
    assert [CHAINED_KERNELS[kernel] for kernel, _ in steps] == [0, STEM_STEP, 0]
    written = [widened, grouped, narrowed]
    expected = run_steps_alone(steps, written, n)
    # (the grouped stem alone against the naive reference: the chain cannot match outputs all wrong)
    reference = REFERENCES["Activation"](REFERENCES["Convolution"]([expected[0][:n]], stem), RELU)
    np.testing.assert_allclose(expected[1][:n], reference[0], rtol=1e-4, atol=1e-5)
    check_chain(steps, written, expected, n, threads)


def run_steps_alone(steps, written, n):
    """Each step by its own kernel, in order: copies of the buffers they wrote (the expected
    outputs), then every buffer poisoned again for the chain."""
    for kernel, args in steps:
        kernel(n, *args)
    expected = [buffer.copy() for buffer in written]
    for buffer in written:
        poison(buffer)
    return expected


def check_chain(steps, written, expected, n, threads):
    """The chain of ``steps`` writes the expected rows < n (as the steps' own kernels, apart from
    rounding) and no row >= n."""
    kernel, args = chain_step(steps, threads)
    kernel(n, *args)
    for got, want in zip(written, expected):
        np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5, atol=1e-6)
        assert untouched(got[n:]), "a row >= n was written"


def pooling_chain(rng, n, size=(13, 11)):
    """A 1x1 GEMM step, then two max poolings over 3-wide windows (``max_pooling_3_wide_cpu``):
    3x3 at stride 2 with a pad, and 3x3 at stride 1 padded (GoogLeNet's inception branch), then a
    1x1 GEMM step on that. Returns (steps, the pooling attributes, the buffers the steps write)."""
    def pool(kernel, stride, pad):
        return {"pool_method": "max", "kernel": (kernel, kernel), "strides": (stride, stride),
                "pads_begin": (pad, pad), "pads_end": (pad, pad), "exclude_pad": False}

    x = poisoned((MAX_BATCH, 16) + size, n, rng)
    sides = [size]
    pools = [pool(3, 2, 1), pool(3, 1, 1)]
    for attrs in pools:
        sides.append(tuple((side + 2 * attrs["pads_begin"][0] - attrs["kernel"][0]) // attrs["strides"][0] + 1
                           for side in sides[-1]))
    squeezed = poisoned((MAX_BATCH, 16) + size, n)
    pooled = [poisoned((MAX_BATCH, 16) + side, n) for side in sides[1:]]
    last = poisoned((MAX_BATCH, 8) + sides[-1], n)
    steps = [convolution.cpu_step(layer(rng, 16, 16, 1, activation=RELU), [x], [squeezed])]
    for attrs, source, target in zip(pools, [squeezed] + pooled[:-1], pooled):
        steps.append(pooling.cpu_step(attrs, [source], [target]))
    steps.append(convolution.cpu_step(layer(rng, 16, 8, 1), [pooled[-1]], [last]))
    kinds = [CHAINED_KERNELS[kernel] for kernel, _ in steps]
    assert kinds == [0, MAX_POOL_STEP, MAX_POOL_STEP, 0], kinds
    return steps, pools, [squeezed] + pooled + [last]


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_pooling_steps(n, threads):
    """A chain's pooling steps compute what their kernel computes alone, rows >= n untouched."""
    rng = np.random.default_rng(40 + n * 10 + threads)
    steps, pools, written = pooling_chain(rng, n)
    expected = run_steps_alone(steps, written, n)
    for attrs, source, target in zip(pools, expected, expected[1:]):  # (the kernels alone, against the reference)
        reference = REFERENCES["Pooling"]([source[:n]], {**attrs, "output_size": target.shape[2:]})[0]
        np.testing.assert_allclose(target[:n], reference, rtol=1e-6, atol=1e-6)
    check_chain(steps, written, expected, n, threads)


@pytest.mark.parametrize("n", [0, 1, 2, 7])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_fully_connected_steps(n, threads):
    """An averaged 1x1 convolution (N, 24) then two FullyConnected steps (24 -> 37 with a ReLU:
    a last panel of 5 features; 37 -> 16), as a network's head: the chain computes what the
    kernels compute alone (n = 7: a second block of rows), rows >= n untouched."""
    rng = np.random.default_rng(60 + n * 10 + threads)
    x = poisoned((MAX_BATCH * 2, 16, 5, 5), n, rng)
    averaged = poisoned((MAX_BATCH * 2, 24, 1, 1), n)
    hidden, last = poisoned((MAX_BATCH * 2, 37), n), poisoned((MAX_BATCH * 2, 16), n)
    steps = [convolution.cpu_step({**layer(rng, 16, 24, 1, activation=RELU), "global_average": (5, 5)}, [x],
                                  [averaged])]
    layers = []
    for source, target, activation in ((averaged, hidden, RELU), (hidden, last, None)):
        attrs = {"weights": rng.uniform(-0.5, 0.5, (target.shape[1], source[0].size)).astype(np.float32),
                 "biases": rng.uniform(-0.5, 0.5, target.shape[1]).astype(np.float32)}
        if activation:
            attrs["activation"] = activation
        layers.append(attrs)
        steps.append(fully_connected.cpu_step(attrs, [source], [target]))
    assert [CHAINED_KERNELS[kernel] for kernel, _ in steps] == [AVERAGE_STEP, FC_STEP, FC_STEP]
    written = [averaged, hidden, last]
    expected = run_steps_alone(steps, written, n)
    # (FC's own kernel, against numpy: this test cannot pass on outputs all wrong)
    reference = np.maximum(expected[0][:n].reshape(n, 24) @ layers[0]["weights"].T + layers[0]["biases"], 0.0)
    np.testing.assert_allclose(expected[1][:n], reference, rtol=1e-5, atol=1e-5)
    check_chain(steps, written, expected, n, threads)


def lrn_attrs(local_size, beta, region="across"):
    return {"local_size": local_size, "alpha": 0.5, "beta": beta, "k": 1.5, "region": region}


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_lrn_steps(n, threads):
    """AlexNet's order: a 3x3 GEMM step, an LRN across 5 channels (beta 0.75, its square roots),
    a max pooling, an LRN across 4 (beta 0.6: pow; a window of 1 before and 2 after) on planes of
    4200 pixels (two tasks a plane), then a 1x1 GEMM step: the chain computes what the kernels
    compute alone, and those the reference, rows >= n untouched."""
    rng = np.random.default_rng(80 + n * 10 + threads)
    x = poisoned((MAX_BATCH, 8, 60, 70), n, rng)
    conv, normed = poisoned((MAX_BATCH, 16, 60, 70), n), poisoned((MAX_BATCH, 16, 60, 70), n)
    pooled, normed2 = poisoned((MAX_BATCH, 16, 30, 35), n), poisoned((MAX_BATCH, 16, 30, 35), n)
    last = poisoned((MAX_BATCH, 8, 30, 35), n)
    norms = [lrn_attrs(5, 0.75), lrn_attrs(4, 0.6)]
    pool = {"pool_method": "max", "kernel": (3, 3), "strides": (2, 2), "pads_begin": (1, 1), "pads_end": (0, 0),
            "exclude_pad": False}
    steps = [convolution.cpu_step(layer(rng, 8, 16, 3, activation=RELU), [x], [conv]),
             lrn.cpu_step(norms[0], [conv], [normed]),
             pooling.cpu_step(pool, [normed], [pooled]),
             lrn.cpu_step(norms[1], [pooled], [normed2]),
             convolution.cpu_step(layer(rng, 16, 8, 1), [normed2], [last])]
    assert [CHAINED_KERNELS[kernel] for kernel, _ in steps][1:4] == [LRN_STEP, MAX_POOL_STEP, LRN_STEP]
    assert lrn.lrn_spans(60 * 70) == 2
    written = [conv, normed, pooled, normed2, last]
    expected = run_steps_alone(steps, written, n)
    for attrs, source, target in ((norms[0], expected[0], expected[1]), (norms[1], expected[2], expected[3])):
        reference = REFERENCES["LRN"]([source[:n]], attrs)[0]  # (the kernel alone, against the reference)
        np.testing.assert_allclose(target[:n], reference, rtol=1e-5, atol=1e-6)
    check_chain(steps, written, expected, n, threads)


def test_chain_takes_lrn_steps_across_channels_only():
    """An LRN over a window of pixels ("same") keeps its own kernel, as does one on arrays the
    chain cannot address."""
    source, target = np.zeros((MAX_BATCH, 6, 5, 5), np.float32), np.zeros((MAX_BATCH, 6, 5, 5), np.float32)
    kernel, args = lrn.cpu_step(lrn_attrs(3, 0.75), [source], [target])
    assert chainable(kernel, args)
    assert not chainable(*lrn.cpu_step(lrn_attrs(3, 0.75, "same"), [source], [target]))
    wide = np.zeros((MAX_BATCH, 12, 5, 5), np.float32)
    assert not chainable(*lrn.cpu_step(lrn_attrs(3, 0.75), [source], [wide[:, ::2]]))


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chain_runs_global_pooling_steps(n, threads):
    """GoogLeNet's head: a 1x1 GEMM step, a global average pooling (7x7, 128 channels: two tasks
    at n = 3), a FullyConnected step on its (N, 128) output; and a max pooling over windows of 3
    whole rows at stride 2 with a pad (``global_pooling_cpu`` too: 4 outputs a plane). The chain
    computes what the kernels compute alone, and those the reference, rows >= n untouched."""
    rng = np.random.default_rng(90 + n * 10 + threads)
    x = poisoned((MAX_BATCH, 16, 7, 7), n, rng)
    conv, averaged = poisoned((MAX_BATCH, 128, 7, 7), n), poisoned((MAX_BATCH, 128, 1, 1), n)
    rows, last = poisoned((MAX_BATCH, 128, 4, 1), n), poisoned((MAX_BATCH, 10), n)
    pools = [{"pool_method": "avg", "kernel": (7, 7), "strides": (1, 1), "pads_begin": (0, 0), "pads_end": (0, 0),
              "exclude_pad": True},
             {"pool_method": "max", "kernel": (3, 7), "strides": (2, 1), "pads_begin": (1, 0), "pads_end": (1, 0),
              "exclude_pad": False}]
    head = {"weights": rng.uniform(-0.5, 0.5, (10, 128)).astype(np.float32),
            "biases": rng.uniform(-0.5, 0.5, 10).astype(np.float32)}
    steps = [convolution.cpu_step(layer(rng, 16, 128, 1), [x], [conv]),
             pooling.cpu_step(pools[0], [conv], [averaged]),
             fully_connected.cpu_step(head, [averaged.reshape(MAX_BATCH, 128)], [last]),
             pooling.cpu_step(pools[1], [conv], [rows])]
    assert [CHAINED_KERNELS[kernel] for kernel, _ in steps][1:] == [GLOBAL_POOL_STEP, FC_STEP, GLOBAL_POOL_STEP]
    assert pooling.global_pool_share(3 * 128, 7, 7) == (2, 334)
    written = [conv, averaged, last, rows]
    expected = run_steps_alone(steps, written, n)
    for attrs, target in zip(pools, (expected[1], expected[3])):  # (the kernels alone, against the reference)
        reference = REFERENCES["Pooling"]([expected[0][:n]], {**attrs, "output_size": target.shape[2:]})[0]
        np.testing.assert_allclose(target[:n], reference, rtol=1e-6, atol=1e-6)
    check_chain(steps, written, expected, n, threads)


def test_chain_takes_no_pooling_step_on_strided_arrays_nor_other_pooling_kernels():
    """A pooling kernel takes any strides, a chain only arrays it can address: such a step is left
    out of the chain (``chainable``), and ``chain_step`` refuses it. Nor does a chain take the
    general max or the average pooling kernel."""
    rng = np.random.default_rng(6)
    steps, _, _ = pooling_chain(rng, 1)
    kernel, args = steps[1]
    assert chainable(kernel, args)
    wide = np.full((MAX_BATCH, 32) + args[-1].shape[2:], np.nan, np.float32)
    strided = (*args[:-1], wide[:, ::2])  # every other channel: not C-contiguous
    assert not chainable(kernel, strided)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        chain_step([(kernel, strided)], 2)
    for attrs in ({"pool_method": "max", "kernel": (2, 2), "strides": (2, 2)},
                  {"pool_method": "avg", "kernel": (3, 3), "strides": (1, 1)}):
        source = np.zeros((MAX_BATCH, 4, 8, 8), np.float32)
        target = np.zeros((MAX_BATCH, 4, 4 if attrs["strides"][0] == 2 else 6, 4 if attrs["strides"][0] == 2 else 6),
                          np.float32)
        other, other_args = pooling.cpu_step({**attrs, "pads_begin": (0, 0), "pads_end": (0, 0), "exclude_pad": False},
                                             [source], [target])
        assert other in (pooling.max_pooling_cpu, pooling.avg_pooling_cpu) and not chainable(other, other_args)


def test_chain_finishes_when_its_iterations_share_one_thread():
    """A chain bound for 3 threads run where Numba has 1: its iterations run one after the other,
    and the first takes every task (none waits for a thread that never comes)."""
    rng = np.random.default_rng(7)
    steps, _, _, written, _ = fire_chain(rng, 2)
    for kernel, args in steps:
        kernel(2, *args)
    expected = [buffer.copy() for buffer in written]
    kernel, args = chain_step(steps, 3)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        kernel(2, *args)
    finally:
        numba.set_num_threads(previous)
    for got, want in zip(written, expected):
        # (within the outputs' scale, as in test_chain_computes_what_its_steps_compute_one_by_one: seen 6.4e-6 on
        # outputs up to 9, the chain's task functions being compiled apart from the steps' kernels)
        scale = max(1.0, float(np.abs(want[:2]).max()))
        np.testing.assert_allclose(got[:2], want[:2], rtol=1e-5, atol=1e-6 * scale)


def test_chain_compiles_once_for_every_batch_and_chain():
    rng = np.random.default_rng(3)
    steps, _, _, _, _ = fire_chain(rng, MAX_BATCH)
    kernel, args = chain_step(steps, 2)
    other_kernel, other_args = chain_step(steps[3:5], 2)  # another length and mix
    for n in (MAX_BATCH, 1, 3, 0):
        kernel(n, *args)
        other_kernel(n, *other_args)
    assert other_kernel is kernel and len(kernel.signatures) == 1


def test_chain_rejects_arrays_it_cannot_address():
    rng = np.random.default_rng(4)
    steps, _, _, _, _ = fire_chain(rng, 1)
    kernel, args = steps[0]
    strided = list(args)
    strided[0] = np.asarray(args[0])[:, ::2]  # not C-contiguous: no address covers it
    with pytest.raises(ValueError, match="C-contiguous float32"):
        chain_step([(kernel, tuple(strided))], 2)


def test_network_runs_its_convolutions_as_chains_and_times_each_layer():
    """A network's consecutive GEMM, Winograd (12x12 outputs: 4x4 tiles) and depthwise convolutions
    and a max pooling bind as one chain step (an LRN layer over pixels between two runs ends the
    first: only an LRN across channels joins a chain); its
    outputs match the unchained steps' and the reference network's, and get_performance_counts
    times every layer of a chain on its own."""
    import dynbatch as db
    from dynbatch.graph import compiler
    from dynbatch.kernels.chain import (DEPTHWISE_STEP, GEMM_STEP, KIND, MAX_POOL_STEP, TILE,
                                       WINOGRAD_STEP)
    from tests.reference_network import run_reference

    rng = np.random.default_rng(5)
    net = db.Network("chained")
    y, channels = net.add_input("data", (MAX_BATCH, 16, 12, 12)), 16
    for index, (out_channels, side) in enumerate([(32, 1), (16, 3), (24, 3)]):  # GEMM, Winograd, Winograd
        y = net.add_layer("Convolution", [y], name=f"conv{index}",
                          weights=rng.standard_normal((out_channels, channels, side, side)) * 0.1,
                          biases=rng.standard_normal(out_channels), pads_begin=side // 2, pads_end=side // 2)
        channels = out_channels
    y = net.add_layer("Convolution", [y], name="dw", weights=rng.standard_normal((24, 1, 3, 3)) * 0.1,
                      biases=rng.standard_normal(24), pads_begin=1, pads_end=1, group=24)
    y = net.add_layer("Pooling", [y], name="pool", pool_method="max", kernel=3, strides=2, pads_begin=1, pads_end=1)
    y = net.add_layer("LRN", [y], name="norm", local_size=3, alpha=1e-2, beta=0.75, k=1.0, region="same")
    y = net.add_layer("Convolution", [y], name="last", weights=rng.standard_normal((16, 24, 1, 1)) * 0.1,
                      biases=rng.standard_normal(16))
    net.add_output(y)
    exe = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    steps = request._steps
    assert [[member.layer.name for member in step.members] for step in steps] == [
        ["conv0", "conv1", "conv2", "dw", "pool"], [], ["last"]]
    # (the chain's ints: GEMM, 4x4 tiles, depthwise, and a max pooling of 3x3 windows)
    assert list(steps[0].args[3][:, TILE]) == [0, 4, 4, 0, 0]
    assert list(steps[0].args[3][:, KIND]) == [GEMM_STEP, WINOGRAD_STEP, WINOGRAD_STEP, DEPTHWISE_STEP, MAX_POOL_STEP]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "chain_convolutions", lambda bound, link_tasks=True: bound)
        unchained = exe.create_infer_request()
    x = rng.uniform(-1.0, 1.0, (3, 16, 12, 12)).astype(np.float32)
    for n in (3, 1, 2):
        request.set_batch(n)
        unchained.set_batch(n)
        got = request.infer({"data": x[:n]})["last"]
        np.testing.assert_allclose(got, unchained.infer({"data": x[:n]})["last"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, run_reference(net, {"data": x[:n]})["last"], rtol=1e-4, atol=1e-5)
    counts = request.get_performance_counts()
    kernels = {"conv0": "convolution_gemm_cpu", "conv1": "convolution_winograd_cpu",
               "conv2": "convolution_winograd_cpu", "dw": "convolution_depthwise_cpu", "pool": "max_pooling_3_wide_cpu",
               "last": "convolution_gemm_cpu"}
    for name, kernel in kernels.items():
        assert counts[name]["status"] == "EXECUTED" and counts[name]["exec_type"] == kernel
        # (without a time-stamp counter, the chain's first layer takes all of its time)
        assert counts[name]["real_time_us"] > 0.0 or (not HAS_CYCLE_COUNTER and name in ("conv1", "conv2", "dw",
                                                                                         "pool"))
