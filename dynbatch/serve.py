"""A Ray Serve deployment of one dynbatch network: scale callers out over replicas and machines.

Each replica loads the network once, with dynamic batch, and feeds it through Ray Serve's
``@serve.batch`` with ``max_batch_size`` = the network's maximum batch: the k requests Ray Serve
gathers run as one ``set_batch(k)`` inference, with no padding. Needs the ``serve`` extra
(``pip install "dynbatch[serve]"``).

    from ray import serve
    from dynbatch.serve import build_app
    handle = serve.run(build_app(functools.partial(dynbatch.models.lenet, 16), num_replicas=2))
    outputs = handle.remote(sample).result()     # {output name: array}, sample without batch axis

From the command line (``serve run`` calls ``app_builder`` with the key=value arguments)::

    serve run dynbatch.serve:app_builder network=dynbatch.models:lenet max_batch=16 num_replicas=4
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import importlib
from typing import Callable

import numba
import numpy as np

try:
    import ray
    from ray import serve
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dynbatch.serve needs Ray Serve, which is an optional extra: pip install \"dynbatch[serve]\""
    ) from error

from .graph.network import Network
from .errors import InputError
from .runtime import KEY_DYN_BATCH_ENABLED, YES, Core
from .serving import checked_sample

#: How long a replica waits for more requests once it holds one (Ray Serve's batch_wait_timeout_s).
DEFAULT_BATCH_WAIT_S = 0.002


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class NetworkDeployment:
    """One replica: one loaded network and one infer request, fed by ``@serve.batch``.

    ``network``: a ``dynbatch.Network``, or a callable returning one (built on the replica, so its
    weights need not travel). ``device``: "CPU", or "GPU" for replicas that reserve a GPU
    (``build_app(..., num_gpus=1)``). ``threads``: Numba threads per CPU inference; None uses the
    CPUs Ray assigned to the replica, so that replicas sharing a machine do not oversubscribe it.

    Called with one sample without the batch axis (an array for a one-input network, else
    ``{input name: array}``), it returns ``{output name: array}``; a malformed sample raises
    ``InputError`` to its caller only. Over HTTP it takes JSON ``{"sample": ...}`` (or
    ``{"inputs": {name: ...}}``) and answers ``{output name: nested list}``.
    """

    def __init__(self, network: Network | Callable[[], Network], threads: int | None = None,
                 batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S, device: str = "CPU"):
        if not isinstance(network, Network):
            network = network()
        self._exe = Core().load_network(network, device, {KEY_DYN_BATCH_ENABLED: YES})
        self._request = self._exe.create_infer_request()
        self._batch_inputs = {name: np.empty(shape, np.float32) for name, shape in self._exe.inputs.items()}
        if threads is None:
            threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)) or 1
        threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
        # Numba's thread count is per calling thread, so inferences run in one thread set up for it;
        # one thread also means one inference at a time on the one request.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dynbatch-replica", initializer=numba.set_num_threads, initargs=(threads,))
        self._threads = threads
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self.infer_batch.set_max_batch_size(self._exe.max_batch)
        self.infer_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def __call__(self, sample):
        if _is_http_request(sample):
            return await self._http(sample)
        outputs, _ = await self.infer_batch(checked_sample(self._exe, sample))
        return outputs

    async def infer_with_details(self, sample) -> dict:
        """``{"outputs": what __call__ returns, "batch_size": k of the inference that ran it,
        "replica": this replica's id}``: shows how requests were batched and spread."""
        outputs, k = await self.infer_batch(checked_sample(self._exe, sample))
        return {"outputs": outputs, "batch_size": k, "replica": serve.get_replica_context().replica_tag}

    async def _http(self, request):
        from starlette.responses import JSONResponse

        try:
            body = await request.json()
            sample = body.get("inputs", body.get("sample")) if isinstance(body, dict) else body
            # JSON has numbers, not dtypes: a sample written as integers is still a float sample.
            if isinstance(sample, dict):
                sample = {name: np.asarray(value, dtype=np.float32) for name, value in sample.items()}
            else:
                sample = np.asarray(sample, dtype=np.float32)
            arrays = checked_sample(self._exe, sample)
        except (InputError, ValueError) as error:  # the caller's mistake: 400 with the reason
            return JSONResponse({"error": str(error)}, status_code=400)
        outputs, _ = await self.infer_batch(arrays)
        return {name: array.tolist() for name, array in outputs.items()}

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)  # sizes set in __init__
    async def infer_batch(self, samples: list[dict[str, np.ndarray]]) -> list[tuple[dict[str, np.ndarray], int]]:
        """Checked samples in, one ``set_batch(k = len(samples))`` inference, (each sample's rows, k) out."""
        # The inference runs off the event loop, so that Ray Serve keeps gathering the next batch.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, samples)

    def _run(self, samples):
        k = len(samples)
        for row, arrays in enumerate(samples):
            for name, array in arrays.items():
                self._batch_inputs[name][row] = array
        self._request.set_batch(k)
        outputs = self._request.infer(self._batch_inputs)
        self._batch_sizes[k] += 1
        return [({name: array[row] for name, array in outputs.items()}, k) for row in range(k)]

    def statistics(self) -> dict:
        """{"replica": id, "max_batch", "threads", "batch_sizes": {k: inferences}, "samples"}."""
        return {
            "replica": serve.get_replica_context().replica_tag,
            "device": self._exe.device,
            "max_batch": self._exe.max_batch,
            "threads": self._threads,
            "batch_sizes": dict(sorted(self._batch_sizes.items())),
            "samples": sum(k * count for k, count in self._batch_sizes.items()),
        }


def _is_http_request(value) -> bool:
    try:
        from starlette.requests import Request
    except ImportError:  # pragma: no cover - starlette comes with ray[serve]
        return False
    return isinstance(value, Request)


def build_app(network: Network | Callable[[], Network], num_replicas: int = 1, *, threads: int | None = None,
              batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S, num_cpus: float = 1, device: str = "CPU",
              num_gpus: float = 0, max_ongoing_requests: int | None = None) -> serve.Application:
    """The deployment, bound and ready for ``serve.run``: ``num_replicas`` replicas of ``network``
    (or of what the callable builds) on ``device``, each reserving ``num_cpus`` CPUs and
    ``num_gpus`` GPUs. ``max_ongoing_requests`` per replica defaults to 4x the maximum batch when
    known (else 64), so that full batches can form."""
    if max_ongoing_requests is None:
        max_ongoing_requests = 4 * network.batch_size if isinstance(network, Network) else 64
    deployment = NetworkDeployment.options(
        num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    return deployment.bind(network, threads=threads, batch_wait_timeout_s=batch_wait_timeout_s, device=device)


def app_builder(args: dict) -> serve.Application:
    """For ``serve run dynbatch.serve:app_builder network=module:function [max_batch=16]
    [num_replicas=1] [num_cpus=1] [threads=N] [batch_wait_timeout_s=0.002] [device=GPU num_gpus=1]``:
    the function is called on each replica (with ``max_batch`` when given) and returns a
    ``dynbatch.Network``."""
    known = {"network", "max_batch", "num_replicas", "num_cpus", "threads", "batch_wait_timeout_s", "device", "num_gpus"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"app_builder: unknown argument(s) {unknown}; known: {sorted(known)}")
    if "network" not in args:
        raise ValueError("app_builder: give network=module:function, e.g. network=dynbatch.models:lenet")
    module_name, _, function_name = str(args["network"]).partition(":")
    if not function_name:
        raise ValueError(f"app_builder: network={args['network']!r} must be module:function, e.g. dynbatch.models:lenet")
    factory = getattr(importlib.import_module(module_name), function_name)
    if "max_batch" in args:
        factory = functools.partial(factory, int(args["max_batch"]))
    return build_app(
        factory,
        num_replicas=int(args.get("num_replicas", 1)),
        threads=int(args["threads"]) if "threads" in args else None,
        batch_wait_timeout_s=float(args.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S)),
        num_cpus=float(args.get("num_cpus", 1)),
        device=str(args.get("device", "CPU")),
        num_gpus=float(args.get("num_gpus", 0)),
        max_ongoing_requests=4 * int(args["max_batch"]) if "max_batch" in args else None,
    )
