"""Whole networks: random DAGs of the 14 layers, loaded once, run at several batch sizes in any
order, must equal the naive reference network run on exactly those n samples, on every device
(conftest.device). On GPU the networks are smaller and fewer, since CI runs the GPU kernels on
numba's (slow) CUDA simulator."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import dynbatch as db

from .network_strategies import networks
from .reference_network import run_reference

#: Network size limits and the share of the profile's examples, per device.
NETWORKS = {"CPU": networks(), "GPU": networks(max_layers=5, max_batch=4, max_channels=3, max_side=5)}
EXAMPLES = {"CPU": 1.0, "GPU": 0.5}


def assert_close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=2e-3, atol=2e-4 * scale)


def test_random_network_matches_reference_at_every_batch(device):
    # Hypothesis runs inside the test, so that the device picks the network sizes and example count.
    @settings(max_examples=max(1, int(settings.default.max_examples * EXAMPLES[device])))
    @given(built=NETWORKS[device], data=st.data())
    def check(built, data):
        check_random_network(device, built, data)

    check()


def check_random_network(device, built, data):
    net, max_batch = built
    exe = db.Core().load_network(net, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    # On GPU, the same network on the CPU too: the two devices agree within float32 tolerance.
    cpu_request = None
    if device != "CPU":
        cpu_request = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
    batches = data.draw(
        st.lists(st.integers(1, max_batch), min_size=1, max_size=4).map(lambda b: [max_batch, 1] + b + [max_batch]),
        label="batch sequence",
    )
    rng = np.random.default_rng(0)
    samples = rng.standard_normal(exe.inputs["data"]).astype(np.float32)
    for n in batches:
        request.set_batch(n)
        # Rows >= n are poison: if any kernel read them, NaN would reach the outputs.
        feed = samples.copy()
        feed[n:] = np.nan
        outputs = request.infer({"data": feed})
        expected = run_reference(net, {"data": samples[:n]})
        assert list(outputs) == net.outputs
        for name in net.outputs:
            assert outputs[name].shape == (n,) + exe.outputs[name][1:]
            assert_close(outputs[name], expected[name])
            np.testing.assert_array_equal(request.outputs[name], outputs[name])
        if cpu_request is not None:
            cpu_request.set_batch(n)
            for name, cpu_output in cpu_request.infer({"data": feed}).items():
                assert_close(outputs[name], cpu_output)
