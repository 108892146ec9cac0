"""Whole networks: random DAGs of the 14 layers, loaded once, run at several batch sizes in any
order, must equal the naive reference network run on exactly those n samples."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import dynbatch as db

from .network_strategies import networks
from .reference_network import run_reference


def assert_close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=2e-3, atol=2e-4 * scale)


@given(built=networks(), data=st.data())
def test_random_network_matches_reference_at_every_batch(built, data):
    net, max_batch = built
    exe = db.Core().load_network(net, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
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
