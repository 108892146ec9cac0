"""The liveness buffer plan against its lower bound: ``BufferPlan.peak_live_bytes`` is the most
(aligned) bytes of tensors alive at one step, computed by hand on small chains; the greedy plan
stays within 1.2x of it on the reference models and on ONNX models of real architectures (before
and after fusion), and never lets two tensors alive at the same step overlap."""
import gc
import os

import numpy as np
import pytest
from hypothesis import given, settings

import dynbatch as db
from dynbatch import memory
from dynbatch.graph.compiler import ALIGNMENT, compile_network, plan_buffers
from dynbatch.graph.network import Network
from dynbatch.kernels import deconvolution
from dynbatch.memory import HUGE_PAGE, on_huge_pages, transparent_huge_pages, zeroed_floats
from dynbatch.models import inception, lenet

from .network_strategies import networks


def _bytes(elements: int) -> int:
    assert elements % ALIGNMENT == 0, "hand-computed sizes below are already aligned"
    return elements * 4


def test_peak_of_a_chain_with_unaligned_sizes():
    # x (2,3,5,5) = 150 -> 160 aligned; relu a = 160; concat [a, a] b (2,6,5,5) = 300 -> 304;
    # max pool 2/2 c (2,6,2,2) = 48; relu d = 48, the output.
    net = Network("chain")
    x = net.add_input("x", (2, 3, 5, 5))
    a = net.add_layer("Activation", [x], name="a", type="relu")
    b = net.add_layer("Concatenation", [a, a], name="b", axis=1)
    c = net.add_layer("Pooling", [b], name="c", pool_method="max", kernel=2, strides=2)
    net.add_output(net.add_layer("Activation", [c], name="d", type="relu"))
    plan = plan_buffers(net)

    # Alive from the step that writes a tensor to the last step that reads it; the input from
    # step -1, the output to the end of the run (step 4).
    assert plan.lifetimes == {"x": (-1, 0), "a": (0, 1), "b": (1, 2), "c": (2, 3), "d": (3, 4)}
    # Alive per step: -1: x 160; 0: x + a 320; 1: a + b 464; 2: b + c 352; 3: c + d 96; 4: d 48.
    assert plan.peak_live_bytes == _bytes(160 + 304)
    assert plan.naive_bytes == _bytes(160 + 160 + 304 + 48 + 48)
    assert plan.peak_live_bytes <= plan.planned_bytes <= plan.naive_bytes


def test_peak_with_a_skip_connection_is_in_the_middle():
    # x (1,64); a = relu(x); b = fc(a) (1,256); c = fc(b) (1,64); d = a + c, the output.
    # a stays alive until d reads it, so the peak is at step 2: a + b + c = 384 elements.
    rng = np.random.default_rng(0)
    net = Network("skip")
    x = net.add_input("x", (1, 64))
    a = net.add_layer("Activation", [x], name="a", type="relu")
    b = net.add_layer("FullyConnected", [a], name="b", weights=rng.standard_normal((256, 64)))
    c = net.add_layer("FullyConnected", [b], name="c", weights=rng.standard_normal((64, 256)))
    net.add_output(net.add_layer("Eltwise", [a, c], name="d", operation="sum"))
    plan = plan_buffers(net)

    assert plan.lifetimes == {"x": (-1, 0), "a": (0, 3), "b": (1, 2), "c": (2, 3), "d": (3, 4)}
    assert plan.peak_live_bytes == _bytes(64 + 256 + 64)
    assert plan.planned_bytes == plan.peak_live_bytes  # the greedy plan meets the bound here


def test_peak_is_a_lower_bound_of_every_step():
    """No step has more bytes alive than peak_live_bytes, and one step has exactly that many."""
    plan = plan_buffers(inception(4))
    sizes = {name: -(-int(np.prod(shape)) // ALIGNMENT) * ALIGNMENT for name, shape in plan.shapes.items()}
    steps = range(min(s for s, _ in plan.lifetimes.values()), max(e for _, e in plan.lifetimes.values()) + 1)
    alive = [sum(sizes[t] for t, (s, e) in plan.lifetimes.items() if s <= step <= e) * 4 for step in steps]
    assert max(alive) == plan.peak_live_bytes
    # Tensors alive at the same step never overlap in the arena, so the arena holds them all.
    assert plan.planned_bytes >= plan.peak_live_bytes


def test_memory_of_an_executable_network_reports_the_peak():
    executable = db.Core().load_network(lenet(2), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    memory = executable.memory
    assert set(memory) == {"planned_bytes", "naive_bytes", "peak_live_bytes", "scratch_bytes"}
    # Only Deconvolution's GEMM takes the shared scratch; convolutions pack their patches per task.
    assert memory["scratch_bytes"] == 4 * executable._compiled.scratch_elements == 0
    assert memory["peak_live_bytes"] == executable._compiled.plan.peak_live_bytes
    assert 0 < memory["peak_live_bytes"] <= memory["planned_bytes"] <= memory["naive_bytes"]


ONNX_MODELS = {  # name in tests/onnx_models.py: its arguments
    "alexnet": (), "inception": (), "squeezenet": (), "resnet": (), "vgg": (), "fcn_head": (),
    "split_concat": (13,), "transposed_convolutions": (),
}


@pytest.mark.parametrize("name", ["lenet", "inception"])
@pytest.mark.parametrize("max_batch", [1, 16])
def test_plan_within_1_2x_of_the_peak_reference_models(name, max_batch):
    network = {"lenet": lenet, "inception": inception}[name](max_batch)
    for plan in (plan_buffers(network), compile_network(network).plan):  # as built, and as run (fused)
        assert plan.peak_live_bytes <= plan.planned_bytes <= 1.2 * plan.peak_live_bytes


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_plan_within_1_2x_of_the_peak_onnx_models(name):
    pytest.importorskip("onnx")
    from . import onnx_models

    network = db.read_network(getattr(onnx_models, name)(*ONNX_MODELS[name]), batch=4)
    for plan in (plan_buffers(network), compile_network(network).plan):  # as imported, and as run (fused)
        assert plan.peak_live_bytes <= plan.planned_bytes <= 1.2 * plan.peak_live_bytes


@settings(max_examples=200, deadline=None)
@given(pair=networks(max_layers=12))
def test_tensors_alive_together_never_overlap_in_the_arena(pair):
    network, _ = pair
    # As built, and as run on the CPU: fused, with Concatenations written in place, whose inputs
    # are aliases of their output's channels.
    for plan in (plan_buffers(network), compile_network(network).plan):
        sizes = {name: -(-int(np.prod(shape)) // ALIGNMENT) * ALIGNMENT for name, shape in plan.shapes.items()}
        names = sorted(plan.shapes)
        for index, a in enumerate(names):
            assert 0 <= plan.offsets[a] and plan.offsets[a] + sizes[a] <= plan.arena_elements
            for b in names[index + 1:]:
                (sa, ea), (sb, eb) = plan.lifetimes[a], plan.lifetimes[b]
                if sa <= eb and sb <= ea:
                    assert plan.offsets[a] + sizes[a] <= plan.offsets[b] or plan.offsets[b] + sizes[b] <= plan.offsets[a], (a, b)
        for alias, (whole, first, shape) in plan.aliases.items():
            assert alias not in plan.shapes and whole in plan.shapes
            assert first + shape[1] <= plan.shapes[whole][1] and shape[2:] == plan.shapes[whole][2:]
        assert plan.peak_live_bytes <= plan.planned_bytes


def test_scratch_is_the_largest_any_layer_needs():
    # Deconvolutions that take the BLAS GEMM algorithm, the one that needs scratch: fewer taps
    # than a micro-kernel panel's rows, on more input than the packed algorithm keeps in cache.
    shape = (2, 80, 32, 32)
    network = Network("upsample")
    x = network.add_input("x", shape)
    for side in (1, 2):
        network.add_layer("Deconvolution", [x], weights=np.ones((80, 3, side, side), np.float32),
                          biases=np.zeros(3, np.float32), strides=2)
    compiled = compile_network(network)
    assert [deconvolution.choose_algorithm(layer.normalized, shape) for layer in compiled.layers] == ["gemm"] * 2
    needs = [sum(deconvolution.scratch_elements(layer.normalized, [shape], layer.output_shapes))
             for layer in compiled.layers]
    assert 0 < needs[0] < needs[1]
    assert compiled.scratch_elements == max(needs)


@pytest.mark.parametrize("count", [100, HUGE_PAGE // 4, 3 * HUGE_PAGE // 4 + 5])
def test_zeroed_floats_are_zero_writable_and_private(count):
    """An arena is zero, float32 and writable; from 2 MB on (where Linux advises huge pages) it
    starts on a 2 MB boundary, and a forked child's writes (a serving worker) stay its own."""
    floats = zeroed_floats(count)
    assert floats.dtype == np.float32 and floats.shape == (count,) and floats.flags.writeable
    assert not floats.any()
    floats[-1] = 1.0
    if count * 4 >= HUGE_PAGE and transparent_huge_pages():
        assert floats.ctypes.data % HUGE_PAGE == 0
        assert on_huge_pages(floats) and on_huge_pages(floats[-7:]) and on_huge_pages(floats[::-3])
    else:
        assert not on_huge_pages(floats)
    if hasattr(os, "fork"):
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # (the child only writes and exits: no pytest, no Numba)
            floats[0] = 7.0
            os.write(write, b"1")
            os._exit(0)
        os.read(read, 1)
        os.waitpid(child, 0)
        os.close(read)
        os.close(write)
        assert floats[0] == 0.0 and floats[-1] == 1.0


@pytest.mark.skipif(not transparent_huge_pages(), reason="no transparent huge pages on this system")
def test_on_huge_pages_knows_the_advised_memory_and_forgets_it():
    """Views of an advised arena are on huge pages (reversed and strided ones too); a copy, an
    array of its own, or a view of the arena reaching past its end are not; once the arena is
    gone, its range no longer counts."""
    floats = zeroed_floats(HUGE_PAGE // 4 + 100)
    planes = floats[: 6 * 1000].reshape(6, 10, 100)
    assert on_huge_pages(planes) and on_huge_pages(planes[:, 2:5, ::-1]) and on_huge_pages(planes[::-2])
    assert not on_huge_pages(planes.copy()) and not on_huge_pages(np.zeros(10, np.float32))
    past_the_end = np.lib.stride_tricks.as_strided(floats[-10:], shape=(20,), strides=(4,))
    assert not on_huge_pages(past_the_end)
    address = floats.ctypes.data
    assert address in memory._advised
    del floats, planes, past_the_end
    gc.collect()
    assert address not in memory._advised
