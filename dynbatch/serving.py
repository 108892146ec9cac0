"""Serving many callers with one loaded network.

- ``AsyncInferQueue``: a pool of infer requests fed with ``start_async`` and drained by a callback,
  like OpenVINO's ``AsyncInferQueue``. The caller forms the batches.
- ``DynamicBatcher``: callers hand in single samples, from any thread or from asyncio; a background
  thread gathers them into one ``set_batch(k)`` inference (Triton's dynamic batcher, Ray Serve's
  ``@serve.batch``). dynbatch runs any ``k <= max_batch`` with no padding, so a small batch costs
  only its own rows.

Both only use the public ``InferRequest`` API: every request is used by one thread at a time.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, DynBatchError, InputError
from .runtime import ExecutableNetwork, InferRequest


class BatcherClosedError(DynBatchError, RuntimeError):
    """``DynamicBatcher.submit`` (or ``infer``) called after ``close()``."""


def _check_network(network, who: str) -> None:
    if not isinstance(network, ExecutableNetwork):
        raise ConfigError(f"{who} expects a dynbatch.ExecutableNetwork (from Core.load_network), "
                          f"got {type(network).__name__}")


def checked_sample(network: ExecutableNetwork, sample) -> dict[str, np.ndarray]:
    """{input name: float32 copy} of one sample (no batch axis), or ``InputError`` naming what is
    wrong. A one-input network takes a bare array; the copy lets the caller reuse its arrays."""
    shapes = {name: tuple(shape[1:]) for name, shape in network.inputs.items()}
    if not isinstance(sample, dict):
        if len(shapes) != 1:
            raise InputError(f"network '{network.name}' has inputs {list(shapes)}: a sample must be "
                             f"a dict {{input name: array}}, got {type(sample).__name__}")
        sample = {next(iter(shapes)): sample}
    if set(sample) != set(shapes):
        raise InputError(f"sample inputs {sorted(sample)} do not match the network's inputs {list(shapes)}")
    checked = {}
    for name, value in sample.items():
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as error:
            raise InputError(f"sample input '{name}' is not an array: {error}") from None
        if array.dtype.kind != "f":
            raise InputError(f"sample input '{name}' has dtype {array.dtype}; expected float32 (other float "
                             f"types are cast; integer, boolean and object arrays are refused)")
        expected = shapes[name]
        if array.shape != expected:
            hint = " (a sample has no batch axis)" if array.shape[1:] == expected else ""
            raise InputError(f"sample input '{name}' has shape {array.shape}; expected {expected}{hint}")
        checked[name] = np.array(array, dtype=np.float32)  # a copy
    return checked


# -- AsyncInferQueue ---------------------------------------------------------------------------------
class AsyncInferQueue:
    """A pool of ``jobs`` infer requests of one network, like OpenVINO's ``AsyncInferQueue``.

    ``start_async(inputs, userdata)`` blocks until a request is idle, checks and copies ``inputs``
    into it (errors are raised there, and the request stays idle), then runs it in the background.
    When it ends, the callback set by ``set_callback`` is called as ``callback(request, userdata)``
    in a background thread; ``request.outputs`` and ``request.batch`` hold that job's results until
    the callback returns, and the request is reused only after that.

    The batch of a job: with ``batch=None`` it is the number of rows of the inputs (every input must
    have the same); ``batch=n`` sets it explicitly (inputs then have ``n`` or ``max_batch`` rows).

    An error of an inference, or one raised by the callback, is kept and re-raised by ``wait_all()``
    (the callback is not called for a failed inference). A callback may call ``start_async`` when
    ``jobs > 1``; with one job it would wait forever for the request it is holding.
    """

    def __init__(self, network: ExecutableNetwork, jobs: int = 0):
        """``jobs`` requests; 0 picks 2, so that one job's inputs are copied and its callback runs
        while another infers (each inference already uses every core)."""
        _check_network(network, "AsyncInferQueue")
        if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 0:
            raise ConfigError(f"AsyncInferQueue: jobs must be an int >= 0 (0 picks 2), got {jobs!r}")
        jobs = int(jobs) or 2
        self._network = network
        self._requests = [network.create_infer_request() for _ in range(jobs)]
        self._userdata: list[Any] = [None] * jobs
        self._idle = collections.deque(range(jobs))
        self._running = 0
        self._errors: list[BaseException] = []
        self._callback: Callable[[InferRequest, Any], None] | None = None
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._requests)

    def __getitem__(self, index: int) -> InferRequest:
        return self._requests[index]

    def __iter__(self):
        return iter(self._requests)

    @property
    def userdata(self) -> list:
        """The userdata of the last job started on each request, by request id."""
        return list(self._userdata)

    def set_callback(self, callback: Callable[[InferRequest, Any], None] | None) -> None:
        """Call ``callback(request, userdata)`` after each job that ends well (None: no callback)."""
        if callback is not None and not callable(callback):
            raise TypeError(f"set_callback expects a callable (request, userdata) or None, got {type(callback).__name__}")
        self._callback = callback

    def is_ready(self) -> bool:
        """True when a request is idle, i.e. ``start_async`` would not block."""
        with self._changed:
            return bool(self._idle)

    def get_idle_request_id(self) -> int:
        """Block until a request is idle; return its id (the next ``start_async`` may take another)."""
        with self._changed:
            self._changed.wait_for(lambda: self._idle)
            return self._idle[0]

    def start_async(self, inputs=None, userdata: Any = None, batch: int | None = None) -> int:
        """Start one job on an idle request (blocking until one is); return the request id.

        ``inputs`` as for ``InferRequest.infer``. Bad inputs or batch raise here, as ``InputError``
        or ``BatchSizeError``, and start nothing.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._idle)
            request_id = self._idle.popleft()
            self._running += 1
        request = self._requests[request_id]
        try:
            n = self._batch_of(inputs) if batch is None else batch
            if n is not None and n != request.batch:
                request.set_batch(n)
            request.start_async(inputs)
        except BaseException:
            self._release(request_id)
            raise
        self._userdata[request_id] = userdata
        # One short-lived thread per job waits for it and runs the callback: no threads outlive
        # the queue, and a slow callback delays only its own request.
        threading.Thread(target=self._finish, args=(request_id, userdata), daemon=True,
                         name=f"dynbatch-queue-{request_id}").start()
        return request_id

    def wait_all(self, timeout: float | None = None) -> bool:
        """Block until every started job and its callback have ended; False if ``timeout`` seconds
        passed first. Then re-raises the first error of a job or callback since the last
        ``wait_all`` (the count of others is in its notes)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._running == 0, timeout):
                return False
            errors, self._errors = self._errors, []
        if errors:
            first = errors[0]
            if len(errors) > 1:
                first.add_note(f"AsyncInferQueue: {len(errors) - 1} more job(s) failed since the last wait_all")
            raise first
        return True

    def _batch_of(self, inputs) -> int | None:
        """The number of rows of the inputs; None when it cannot be read (the request then reports
        what is wrong with them)."""
        arrays = inputs.values() if isinstance(inputs, dict) else [inputs] if inputs is not None else []
        rows = {np.shape(array)[0] for array in arrays if np.ndim(array) >= 1}
        if len(rows) > 1:
            raise InputError(f"AsyncInferQueue.start_async: the inputs have different numbers of rows "
                             f"{sorted(rows)}; every input needs the same batch (or pass batch=n)")
        return rows.pop() if rows else None

    def _finish(self, request_id: int, userdata: Any) -> None:
        request = self._requests[request_id]
        try:
            request.wait()
            callback = self._callback
            if callback is not None:
                callback(request, userdata)
        except BaseException as error:  # re-raised by wait_all in the caller's thread
            with self._changed:
                self._errors.append(error)
        finally:
            self._release(request_id)

    def _release(self, request_id: int) -> None:
        with self._changed:
            self._idle.append(request_id)
            self._running -= 1
            self._changed.notify_all()


# -- DynamicBatcher ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BatcherStatistics:
    """A snapshot of a ``DynamicBatcher``'s work since it was created."""

    batches: int                 #: inferences run
    samples: int                 #: samples inferred (cancelled ones excluded)
    rejected: int                #: malformed samples, failed at submit
    failed: int                  #: samples whose inference raised
    pending: int                 #: samples waiting now
    batch_sizes: dict[int, int]  #: {batch size: number of inferences of that size}
    mean_batch_size: float
    mean_queue_wait_ms: float    #: from submit to the start of the sample's inference
    max_queue_wait_ms: float
    mean_inference_ms: float     #: one set_batch(k) inference, outputs included


@dataclasses.dataclass
class _Pending:
    arrays: dict[str, np.ndarray]
    future: Future
    submitted: float


class DynamicBatcher:
    """Gathers single samples from many callers into batched inferences of one network.

    ``submit(sample)`` returns a ``concurrent.futures.Future``; ``await batcher.infer(sample)`` does
    the same from asyncio. A sample is one item without the batch axis: an array of the input's
    shape without dim 0 for a one-input network, else ``{input name: array}``. A background
    thread takes up to ``max_batch`` samples, or fewer once the oldest has waited
    ``max_delay_ms``, runs them as one ``set_batch(k)`` inference on its own request, and resolves
    each future with ``{output name: that sample's row}``. Batches are taken in submission order;
    with ``workers > 1``, that many threads (each with its own request) run batches at once.

    Each sample is checked when submitted: a malformed one (wrong shape, non-float dtype, unknown
    or missing input) gets a future failed with ``InputError`` and never reaches a batch.
    ``close()`` refuses new samples, runs every pending one, then stops the threads; use the batcher
    as a context manager to close it. Future callbacks run in a batcher thread: keep them short.
    """

    def __init__(self, network: ExecutableNetwork, max_delay_ms: float = 2.0, max_batch: int | None = None,
                 workers: int = 1):
        """``max_batch``: the largest batch to form, ``1..network.max_batch`` (None: the network's).
        ``workers``: batches run at once, each on its own request (1: one after the other)."""
        _check_network(network, "DynamicBatcher")
        if not network.dynamic_batch:
            raise ConfigError(f"DynamicBatcher needs network '{network.name}' loaded with "
                              f"config={{'DYN_BATCH_ENABLED': 'YES'}}, so that it can run any batch size")
        if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)) or not max_delay_ms >= 0:
            raise ConfigError(f"DynamicBatcher: max_delay_ms must be a number >= 0, got {max_delay_ms!r}")
        if max_batch is None:
            max_batch = network.max_batch
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) \
                or not 1 <= max_batch <= network.max_batch:
            raise ConfigError(f"DynamicBatcher: max_batch must be an int from 1 to {network.max_batch} "
                              f"(the network's maximum batch), got {max_batch!r}")
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ConfigError(f"DynamicBatcher: workers must be an int >= 1, got {workers!r}")
        self._network = network
        self.max_delay_ms = float(max_delay_ms)
        self.max_batch = int(max_batch)
        self._pending: collections.deque[_Pending] = collections.deque()
        self._changed = threading.Condition()
        self._closed = False
        self._stats_lock = threading.Lock()
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._samples = self._rejected = self._failed = 0
        self._wait_total = self._wait_max = self._infer_total = 0.0
        self._threads = [threading.Thread(target=self._serve, args=(network.create_infer_request(),), daemon=True,
                                          name=f"dynbatch-batcher-{network.name}-{i}") for i in range(int(workers))]
        for thread in self._threads:
            thread.start()

    # -- callers -----------------------------------------------------------------------------------
    def submit(self, sample) -> Future:
        """Queue one sample; the future resolves to ``{output name: array}`` (no batch axis) or
        fails with ``InputError`` if the sample is malformed. Raises ``BatcherClosedError`` after
        ``close()``."""
        if self._closed:
            raise BatcherClosedError("DynamicBatcher is closed; submit before close()")
        future: Future = Future()
        try:
            arrays = checked_sample(self._network, sample)
        except InputError as error:
            with self._stats_lock:
                self._rejected += 1
            future.set_exception(error)
            return future
        with self._changed:
            if self._closed:
                raise BatcherClosedError("DynamicBatcher is closed; submit before close()")
            self._pending.append(_Pending(arrays, future, time.perf_counter()))
            # Wake the thread only when it has something new to decide: a first sample starts
            # the delay, a full batch ends it.
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
                self._changed.notify()
        return future

    async def infer(self, sample) -> dict[str, np.ndarray]:
        """``submit`` for asyncio: the outputs of ``sample``, without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(sample))

    def close(self, timeout: float | None = None) -> None:
        """Refuse new samples, run every pending one (without waiting for ``max_delay_ms``), and
        stop the background threads (``timeout``: seconds to wait for each). Idempotent."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def statistics(self) -> BatcherStatistics:
        """A snapshot of the counters (batches run, mean batch size, queue wait, ...)."""
        with self._changed:
            pending = len(self._pending)
        with self._stats_lock:
            batches = sum(self._batch_sizes.values())
            return BatcherStatistics(
                batches=batches,
                samples=self._samples,
                rejected=self._rejected,
                failed=self._failed,
                pending=pending,
                batch_sizes=dict(sorted(self._batch_sizes.items())),
                mean_batch_size=self._samples / batches if batches else 0.0,
                mean_queue_wait_ms=1e3 * self._wait_total / self._samples if self._samples else 0.0,
                max_queue_wait_ms=1e3 * self._wait_max,
                mean_inference_ms=1e3 * self._infer_total / batches if batches else 0.0,
            )

    def __repr__(self):
        return (f"DynamicBatcher({self._network.name!r}, max_batch={self.max_batch}, "
                f"max_delay_ms={self.max_delay_ms}, workers={len(self._threads)}, closed={self._closed})")

    # -- the batching threads ------------------------------------------------------------------------
    def _serve(self, request: InferRequest) -> None:
        # Samples are gathered here, then handed to the request as max-batch arrays of which it
        # reads the first k rows: no per-batch allocation.
        inputs = {name: np.empty(shape, dtype=np.float32) for name, shape in self._network.inputs.items()}
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(request, inputs, batch)

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for samples; take up to max_batch once the batch is full, the oldest sample has
        waited max_delay_ms, or the batcher is closing. None when closed and drained."""
        with self._changed:
            while True:
                if not self._pending:
                    if self._closed:
                        return None
                    self._changed.wait()
                    continue
                remaining = self._pending[0].submitted + self.max_delay_ms / 1e3 - time.perf_counter()
                if len(self._pending) >= self.max_batch or self._closed or remaining <= 0:
                    break
                self._changed.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            if self._pending:  # more than one batch waits: another worker may take the rest
                self._changed.notify()
            return batch

    def _run(self, request: InferRequest, inputs: dict[str, np.ndarray], batch: list[_Pending]) -> None:
        # A future cancelled while waiting is dropped; the others cannot be cancelled from here on.
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        k = len(batch)
        start = time.perf_counter()
        try:
            for row, item in enumerate(batch):
                for name, array in item.arrays.items():
                    inputs[name][row] = array
            request.set_batch(k)
            outputs = request.infer(inputs)
        except BaseException as error:  # every future of the batch learns why
            with self._stats_lock:
                self._failed += k
            for item in batch:
                item.future.set_exception(error)
            return
        end = time.perf_counter()
        waits = [start - item.submitted for item in batch]
        with self._stats_lock:
            self._batch_sizes[k] += 1
            self._samples += k
            self._wait_total += sum(waits)
            self._wait_max = max(self._wait_max, max(waits))
            self._infer_total += end - start
        # Row i of each output is sample i's: views of arrays that infer() made for this batch
        # alone, so every caller owns its rows.
        for row, item in enumerate(batch):
            item.future.set_result({name: array[row] for name, array in outputs.items()})
