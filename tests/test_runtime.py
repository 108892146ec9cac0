"""The public API: Core, ExecutableNetwork, InferRequest; bad input gives a clear error and leaves
the request usable with its earlier batch. Every test runs on each device (conftest.device); on GPU
with smaller images, since CI runs the GPU kernels on numba's (slow) CUDA simulator."""
import re
import threading

import numpy as np
import pytest

import dynbatch as db
from dynbatch import gpu

from .reference_network import run_reference

MAX = 6
#: Image side per device, and rounds of the multi-threaded tests.
SIZES = {"CPU": 8, "GPU": 4}
ROUNDS = {"CPU": 1.0, "GPU": 0.2}


def small_network(max_batch=MAX, size=8):
    rng = np.random.default_rng(1)
    net = db.Network("small")
    x = net.add_input("data", (max_batch, 3, size, size))
    y = net.add_layer("Convolution", [x], name="conv1", weights=rng.standard_normal((4, 3, 3, 3)) * 0.3,
                      biases=rng.standard_normal(4), strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1))
    y = net.add_layer("Activation", [y], name="relu1", type="relu")
    y = net.add_layer("Pooling", [y], name="pool1", pool_method="max", kernel=2, strides=2)
    features = 4 * (size // 2) ** 2
    y = net.add_layer("FullyConnected", [y], name="fc", weights=rng.standard_normal((5, features)) * 0.1, biases=np.zeros(5))
    prob = net.add_layer("SoftMax", [y], name="prob")
    net.add_output(prob)
    net.add_output(y)
    return net


@pytest.fixture(scope="module")
def size(device):
    return SIZES[device]


@pytest.fixture(scope="module")
def network(size):
    return small_network(size=size)


@pytest.fixture(scope="module")
def executable(network, device):
    return db.Core().load_network(network, device, config={db.KEY_DYN_BATCH_ENABLED: db.YES})


@pytest.fixture
def request_(executable):
    return executable.create_infer_request()


def samples(n, size, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def rounds(device, count):
    return max(2, int(count * ROUNDS[device]))


def expected(network, x):
    return run_reference(network, {"data": x})


def test_api_tour(network, executable, request_, device, size):
    assert db.KEY_DYN_BATCH_ENABLED == "DYN_BATCH_ENABLED" and db.YES == "YES" and db.NO == "NO"
    assert db.Core().available_devices[0] == "CPU" and device in db.Core().available_devices
    assert network.batch_size == MAX
    assert executable.max_batch == MAX and executable.device == device
    assert executable.inputs == {"data": (MAX, 3, size, size)}
    assert list(executable.outputs) == ["prob", "fc"]
    assert executable.outputs == {"prob": (MAX, 5), "fc": (MAX, 5)}
    assert request_.batch == MAX
    request_.set_batch(5)
    assert request_.batch == 5
    x = samples(5, size)
    out = request_.infer({"data": x})
    assert list(out) == ["prob", "fc"]
    reference = expected(network, x)
    for name in out:
        assert out[name].shape == (5, 5)
        np.testing.assert_allclose(out[name], reference[name], rtol=1e-4, atol=1e-5)


def test_inputs_with_max_rows_read_only_the_first_n(network, request_, size):
    request_.set_batch(2)
    x = samples(MAX, size)
    x[2:] = np.nan
    out = request_.infer({"data": x})
    np.testing.assert_allclose(out["prob"], expected(network, x[:2])["prob"], rtol=1e-4, atol=1e-5)


def test_outputs_are_owned_copies_and_request_outputs_are_views(request_, size):
    request_.set_batch(3)
    out = request_.infer({"data": samples(3, size)})
    view = request_.outputs["prob"]
    assert view.shape == (3, 5) and not view.flags.writeable
    np.testing.assert_array_equal(view, out["prob"])
    before = out["prob"].copy()
    request_.infer({"data": samples(3, size, seed=7)})
    np.testing.assert_array_equal(out["prob"], before)  # the returned copy did not change
    assert not np.array_equal(request_.outputs["prob"], before)  # the view follows the buffer


def test_start_async_and_wait(network, request_, size):
    request_.set_batch(4)
    x = samples(4, size, seed=3)
    request_.start_async({"data": x})
    assert request_.wait() is True
    np.testing.assert_allclose(request_.outputs["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)
    assert request_.wait() is True  # nothing running: returns at once


def test_request_busy_while_async_runs(request_, size):
    request_.set_batch(1)
    request_.start_async({"data": samples(1, size)})
    with pytest.raises(db.RequestBusyError):
        request_.infer({"data": samples(1, size)})
    with pytest.raises(db.RequestBusyError):
        request_.outputs
    request_.wait()
    assert request_.infer({"data": samples(1, size)})["prob"].shape == (1, 5)


def test_batch_changes_in_any_order_compile_nothing(network, executable, device, size):
    request = executable.create_infer_request()
    for n in [MAX, 1, 3, MAX, 2, 1, MAX]:
        request.set_batch(n)
        x = samples(n, size, seed=n)
        np.testing.assert_allclose(request.infer({"data": x})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)
    compiled = 0 if device == "GPU" and gpu.is_simulator() else 1  # the CUDA simulator compiles nothing
    for step in request._steps:
        assert len(step.kernel.signatures) == compiled, step.layer.name


def test_cpu_steps_call_their_compiled_code_past_the_dispatcher():
    """Each CPU step calls the machine code compiled at load for its arguments, not Numba's
    dispatcher (which would type every argument again per call), with the same results."""
    network = small_network()
    request = db.Core().load_network(network, "CPU", config={db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
    for (call, _), step in zip(request._calls, request._steps):
        assert call is not step.kernel and call is step.kernel.overloads[step.kernel.signatures[0]].entry_point
    request.set_batch(3)
    x = samples(3, SIZES["CPU"])
    np.testing.assert_allclose(request.infer({"data": x})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)


def test_requests_own_their_buffers(network, executable, size):
    a, b = executable.create_infer_request(), executable.create_infer_request()
    a.set_batch(2)
    b.set_batch(3)
    xa, xb = samples(2, size, seed=1), samples(3, size, seed=2)
    a.infer({"data": xa})
    b.infer({"data": xb})
    np.testing.assert_allclose(a.outputs["prob"], expected(network, xa)["prob"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.outputs["prob"], expected(network, xb)["prob"], rtol=1e-4, atol=1e-5)


def test_performance_counts(request_, device, size):
    counts = request_.get_performance_counts()
    assert list(counts) == ["conv1", "relu1", "pool1", "fc", "prob"]
    # relu1 is computed by conv1's epilogue (dynbatch.graph.fusion): reported, never run.
    fused = {"relu1": {"layer_type": "Activation", "exec_type": "fused into conv1", "status": "OPTIMIZED_OUT",
                       "real_time_us": 0.0}}
    assert counts["relu1"] == fused["relu1"]
    assert all(c["status"] == "NOT_RUN" for name, c in counts.items() if name not in fused)
    request_.infer({"data": samples(MAX, size)})
    counts = request_.get_performance_counts()
    assert counts["conv1"]["layer_type"] == "Convolution"
    assert counts["conv1"]["exec_type"] == ("convolution_cpu" if device == "CPU" else "convolution_cuda")
    assert counts["relu1"] == fused["relu1"]
    timed = not (device == "GPU" and gpu.is_simulator())  # GPU: CUDA events, which the simulator leaves at 0
    assert all(c["status"] == "EXECUTED" and (c["real_time_us"] > 0 or not timed)
               for name, c in counts.items() if name not in fused)


def test_float64_and_non_contiguous_inputs_are_accepted(network, request_, size):
    request_.set_batch(2)
    x = samples(2, size)
    np.testing.assert_allclose(request_.infer({"data": x.astype(np.float64)})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)
    strided = np.repeat(x, 2, axis=3)[..., ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_allclose(request_.infer({"data": strided})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)


def assert_still_usable(request, network, batch):
    assert request.batch == batch
    x = samples(batch, network.shape("data")[-1], seed=11)
    np.testing.assert_allclose(request.infer({"data": x})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)


# Each case is a function of the image side s; "{s}" and "{w}" (s + 1) in a message stand for them.
@pytest.mark.parametrize("bad_inputs, message", [
    (lambda s: {"data": np.zeros((3, 3, s, s + 1), np.float32)}, r"has shape \(3, 3, {s}, {w}\); expected \(3, 3, {s}, {s}\)"),
    (lambda s: {"data": np.zeros((4, 3, s, s), np.float32)}, r"expected \(3, 3, {s}, {s}\) \(batch 3, set by set_batch\) or \(6, 3, {s}, {s}\)"),
    (lambda s: {"data": np.zeros((3, 3, s, s), np.int32)}, r"dtype int32; expected float32"),
    (lambda s: {"data": np.zeros((3, 3, s, s), object)}, r"dtype object"),
    (lambda s: {"data": np.zeros((3, 3, s, s), bool)}, r"dtype bool"),
    (lambda s: {}, r"missing: \['data'\]"),
    (lambda s: {"data": np.zeros((3, 3, s, s), np.float32), "extra": np.zeros(3)}, r"unknown: \['extra'\]"),
    (lambda s: {"image": np.zeros((3, 3, s, s), np.float32)}, r"unknown: \['image'\].*missing: \['data'\]"),
    (lambda s: [1, 2, 3], r"inputs must be a dict"),
], ids=["shape", "batch", "int32", "object", "bool", "missing", "unknown", "renamed", "not a dict"])
def test_bad_inputs_are_refused_and_the_request_stays_usable(network, request_, size, bad_inputs, message):
    bad_inputs, message = bad_inputs(size), message.format(s=size, w=size + 1)
    request_.set_batch(3)
    with pytest.raises(db.InputError, match=message) as caught:
        request_.infer(bad_inputs)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, db.DynBatchError)
    with pytest.raises(db.InputError):
        request_.start_async(bad_inputs)
    assert_still_usable(request_, network, 3)


@pytest.mark.parametrize("bad_batch, error", [
    (0, db.BatchSizeError), (MAX + 1, db.BatchSizeError), (-1, db.BatchSizeError),
    (2.0, db.BatchSizeError), ("3", db.BatchSizeError), (True, db.BatchSizeError),
])
def test_bad_batch_sizes_are_refused_and_the_earlier_batch_kept(network, request_, bad_batch, error):
    request_.set_batch(2)
    with pytest.raises(error, match="batch size"):
        request_.set_batch(bad_batch)
    assert_still_usable(request_, network, 2)


def test_numpy_integer_batch_is_accepted(request_):
    request_.set_batch(np.int64(4))
    assert request_.batch == 4 and type(request_.batch) is int


def test_without_dynamic_batch_the_full_batch_always_runs(network, device, size):
    for config in (None, {db.KEY_DYN_BATCH_ENABLED: db.NO}):
        request = db.Core().load_network(network, device, config).create_infer_request()
        with pytest.raises(db.DynBatchError, match="dynamic batch is not enabled"):
            request.set_batch(2)
        assert request.batch == MAX
        x = samples(MAX, size)
        np.testing.assert_allclose(request.infer({"data": x})["prob"], expected(network, x)["prob"], rtol=1e-4, atol=1e-5)


def test_config_and_device_errors(network, device):
    core = db.Core()
    with pytest.raises(db.ConfigError, match=r"unknown config key\(s\) \['DYN_BATCH'\]; known keys: \['DYN_BATCH_ENABLED'\]"):
        core.load_network(network, device, {"DYN_BATCH": "YES"})
    with pytest.raises(db.ConfigError, match="must be 'YES' or 'NO'"):
        core.load_network(network, device, {db.KEY_DYN_BATCH_ENABLED: "maybe"})
    available = re.escape(str(core.available_devices))
    with pytest.raises(db.ConfigError, match=rf"device 'TPU' is not available; available devices: {available}"):
        core.load_network(network, "TPU")


def test_gpu_without_a_gpu_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "numba.cuda finds no usable CUDA GPU")
    core = db.Core()
    assert core.available_devices == ["CPU"]
    with pytest.raises(db.ConfigError, match=r"device 'GPU' is not available: numba.cuda finds no usable CUDA GPU; "
                                             r"available devices: \['CPU'\]"):
        core.load_network(small_network(), "GPU")


def test_network_batch_size_is_assignable(device, size):
    net = small_network(max_batch=4, size=size)
    net.batch_size = 9
    assert net.batch_size == 9 and net.shape("prob") == (9, 5)
    exe = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    assert exe.max_batch == 9
    request = exe.create_infer_request()
    request.set_batch(9)
    x = samples(9, size)
    np.testing.assert_allclose(request.infer({"data": x})["prob"], expected(net, x)["prob"], rtol=1e-4, atol=1e-5)


class HeldInput:
    """An input whose reading (``np.asarray``) waits until ``release`` is set: the request that
    reads it stays busy meanwhile."""

    def __init__(self, array):
        self.array, self.entered, self.release = array, threading.Event(), threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.entered.set()
        assert self.release.wait(60), "the test never released the held input"
        return self.array if dtype is None else self.array.astype(dtype)


def test_one_request_from_two_threads_raises_instead_of_mixing(network, executable, device, size):
    """While one thread is inside infer (still reading its input), another thread's infer on the
    same request raises RequestBusyError; the first finishes with its own data, and the request
    stays usable. (Two threads calling in a loop only overlapped by chance: once in a CI run
    they never did.)"""
    request = executable.create_infer_request()
    x, other = samples(MAX, size), samples(MAX, size) + 1.0
    held, results = HeldInput(x), {}
    first = threading.Thread(target=lambda: results.update(first=request.infer({"data": held})))
    first.start()
    try:
        assert held.entered.wait(60)
        with pytest.raises(db.RequestBusyError, match="use one request per thread"):
            request.infer({"data": other})
    finally:
        held.release.set()
        first.join(60)
    want = expected(network, x)["prob"]
    np.testing.assert_allclose(results["first"]["prob"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(request.infer({"data": other})["prob"], expected(network, other)["prob"],
                               rtol=1e-4, atol=1e-5)


def test_liveness_plan_reuses_memory(executable):
    memory = executable.memory
    assert memory["planned_bytes"] < memory["naive_bytes"]


def test_requests_of_one_network_run_concurrently_from_threads(network, executable, device, size):
    failures = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        request = executable.create_infer_request()
        for _ in range(rounds(device, 15)):
            n = int(rng.integers(1, MAX + 1))
            request.set_batch(n)
            x = samples(n, size, seed=int(rng.integers(1000)))
            got = request.infer({"data": x})["prob"]
            if not np.allclose(got, expected(network, x)["prob"], rtol=1e-4, atol=1e-5):
                failures.append((seed, n))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
