"""dynbatch.serve on a local Ray instance (2 CPUs, loopback only): two replicas answer 200 concurrent
requests, each with its own sample's outputs, in batches larger than 1."""
import functools
import json
import os
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

# Read by Ray when it is imported and inherited by every process it starts: keep the local instance
# on 127.0.0.1 (Ray otherwise advertises the machine's routable address, even for a one-node
# instance) and send no usage report.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: the Ray Serve test needs the serve extra, pip install -e \".[serve]\"")
serve = pytest.importorskip(
    "ray.serve", reason="Ray Serve is not installed: the Ray Serve test needs pip install -e \".[serve]\"")

import dynbatch as db  # noqa: E402
from dynbatch.models import lenet  # noqa: E402
from dynbatch.serve import build_app  # noqa: E402

MAX = 8
REQUESTS = 200


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_port():
    """A local Ray instance with Ray Serve (HTTP on 127.0.0.1 only); stopped after the module."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    port = _free_loopback_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def _post(port, payload):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/lenet", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_two_replicas_answer_200_concurrent_requests_in_batches(http_port):
    factory = functools.partial(lenet, MAX)  # built on each replica: the weights do not travel
    exe = db.Core().load_network(factory(), "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})
    x = np.random.default_rng(9).standard_normal((REQUESTS, 3, 32, 32)).astype(np.float32)
    request = exe.create_infer_request()
    request.set_batch(1)
    reference = [request.infer(x[i:i + 1])["prob"][0] for i in range(REQUESTS)]

    handle = serve.run(build_app(factory, num_replicas=2), name="dynbatch_lenet", route_prefix="/lenet")
    # All in flight at once; every other request also reports the batch and replica that ran it.
    responses = [handle.infer_with_details.remote(x[i]) if i % 2 else handle.remote(x[i]) for i in range(REQUESTS)]
    results = [response.result(timeout_s=120) for response in responses]
    details = results[1::2]
    for i, got in enumerate(results):
        got = got["outputs"] if i % 2 else got
        # Equal up to float32 rounding: a batch of k may sum in another order than a batch of 1
        # (BLAS blocking, thread count), while a mixed-up answer would differ by far more.
        assert list(got) == ["prob"]
        np.testing.assert_allclose(got["prob"], reference[i], rtol=1e-5, atol=1e-6, err_msg=f"request {i}")

    deployment = serve.status().applications["dynbatch_lenet"].deployments["NetworkDeployment"]
    assert deployment.replica_states.get("RUNNING") == 2, deployment
    sizes = [answer["batch_size"] for answer in details]
    assert max(sizes) > 1, f"no batch formed: batch sizes {sizes}"
    assert max(sizes) <= MAX
    stats = handle.statistics.remote().result(timeout_s=30)  # one replica's
    assert stats["max_batch"] == MAX and stats["device"] == "CPU" and stats["samples"] > 0

    # A malformed sample fails its own call only, and the replica goes on serving.
    with pytest.raises(db.InputError, match=r"shape \(3, 32\); expected \(3, 32, 32\)"):
        handle.remote(np.zeros((3, 32), np.float32)).result(timeout_s=30)

    # The same deployment over HTTP (JSON), on 127.0.0.1 only.
    status, body = _post(http_port, {"sample": x[0].tolist()})
    assert status == 200
    np.testing.assert_allclose(np.asarray(body["prob"], np.float32), reference[0], rtol=1e-5, atol=1e-6)
    status, body = _post(http_port, {"sample": [[1.0, 2.0]]})
    assert status == 400 and "expected (3, 32, 32)" in body["error"]
