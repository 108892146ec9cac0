"""``Core`` loads a network for a device; ``ExecutableNetwork`` holds the compiled plan and the
weights; each ``InferRequest`` owns its buffers and runs the bound kernel steps for a batch n.

One inference, start to end: ``InferRequest.infer`` validates and copies the inputs into the
first n rows of the request's input buffers, then ``_run_steps`` calls ``kernel(n, *args)`` for each
layer (``dynbatch.graph.compiler.BoundStep``; the kernel's machine code, compiled at load, called
past Numba's dispatcher), and the outputs are the first n rows of the output buffers. Nothing is
compiled on that path, and no tensor buffer is allocated.

On "GPU" (``dynbatch.gpu``) the request's buffers are device memory and its input and output
buffers are pinned host rows: ``_run_steps`` queues the copy of the n input rows, every layer's
kernel and the copy of the n output rows on the request's CUDA stream, then waits for that stream.
"""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from . import gpu
from .compile_helper import compile_steps
from .errors import BatchSizeError, ConfigError, DynBatchError, InputError, RequestBusyError
from .graph.compiler import CompiledNetwork, compile_network
from .graph.network import Network
from .graph.topology import check_topology

KEY_DYN_BATCH_ENABLED = "DYN_BATCH_ENABLED"
YES = "YES"
NO = "NO"
KNOWN_CONFIG_KEYS = (KEY_DYN_BATCH_ENABLED,)
DEVICES = ("CPU", "GPU")


def _yes_no(key: str, value) -> bool:
    if value in (YES, True):
        return True
    if value in (NO, False):
        return False
    raise ConfigError(f"config {key} must be '{YES}' or '{NO}', got {value!r}")


class Core:
    """Entry point, like OpenVINO's ``InferenceEngine::Core``."""

    @property
    def available_devices(self) -> list[str]:
        """["CPU"], and "GPU" when numba.cuda finds a CUDA GPU (or runs its simulator)."""
        return ["CPU", "GPU"] if gpu.is_available() else ["CPU"]

    def load_network(self, network: Network, device_name: str = "CPU", config: dict | None = None) -> ExecutableNetwork:
        """Check the topology, plan buffers and compile every kernel for ``network`` on ``device_name``.

        ``config={KEY_DYN_BATCH_ENABLED: YES}`` allows ``set_batch(n)`` for ``1 <= n <= network.batch_size``
        on every infer request; without it, every inference runs the full batch.
        """
        if not isinstance(network, Network):
            raise ConfigError(f"load_network expects a dynbatch.Network, got {type(network).__name__}")
        if device_name not in DEVICES:
            raise ConfigError(f"device {device_name!r} is not available; available devices: {self.available_devices}")
        if device_name == "GPU" and not gpu.is_available():
            raise ConfigError(f"device 'GPU' is not available: {gpu.unavailable_reason()}; "
                              f"available devices: {self.available_devices}")
        config = dict(config or {})
        unknown = sorted(set(config) - set(KNOWN_CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {list(KNOWN_CONFIG_KEYS)}")
        dynamic_batch = _yes_no(KEY_DYN_BATCH_ENABLED, config.get(KEY_DYN_BATCH_ENABLED, NO))
        check_topology(network, dynamic_batch)
        return ExecutableNetwork(compile_network(network, device_name), device_name, dynamic_batch)


class ExecutableNetwork:
    """A network loaded on a device: the compiled plan and the weights every request shares."""

    def __init__(self, compiled: CompiledNetwork, device: str, dynamic_batch: bool):
        self._compiled = compiled
        self.name = compiled.name
        self.device = device
        self.dynamic_batch = dynamic_batch
        shapes = compiled.plan.shapes
        self.inputs = {name: shapes[name] for name in compiled.input_names}
        self.outputs = {name: shapes[name] for name in compiled.output_names}
        self.max_batch = next(iter(self.inputs.values()))[0]
        # GPU: the device copies of the weights, made once (by _compile_kernels), shared by requests.
        self._device_weights = gpu.DeviceWeights() if device == "GPU" else None
        self._compile_kernels()

    def _compile_kernels(self):
        # Compile (or load from Numba's cache) every kernel now, so the first inference is as
        # fast as the rest: a call with n = 0 compiles the signature and touches no data.
        if self.device == "GPU":
            gpu.compile_kernels(self._compiled, self._device_weights)
            return
        compile_steps(self._compiled.bind(self._compiled.plan.allocate(), link_tasks=False))

    @property
    def memory(self) -> dict[str, int]:
        """Bytes per request: the activations as planned by liveness, with one buffer per tensor,
        and the most bytes of tensors alive at one step (the lower bound any plan has to meet);
        and the scratch the CPU Deconvolution kernels that call BLAS share (none on GPU; the
        other kernels take scratch of their own per parallel task instead, a few KB to a few
        hundred KB while the task runs)."""
        plan = self._compiled.plan
        return {"planned_bytes": plan.planned_bytes, "naive_bytes": plan.naive_bytes,
                "peak_live_bytes": plan.peak_live_bytes,
                "scratch_bytes": 4 * self._compiled.scratch_elements if self.device == "CPU" else 0}

    def create_infer_request(self) -> InferRequest:
        return InferRequest(self)

    def __repr__(self):
        return (f"ExecutableNetwork({self.name!r}, device={self.device!r}, max_batch={self.max_batch}, "
                f"dynamic_batch={self.dynamic_batch})")


class InferRequest:
    """Owns one set of max-batch activation buffers; runs inferences of batch ``n`` on them.

    A request serves one inference at a time. Use one request per thread; using one from two
    threads at once raises ``RequestBusyError`` instead of mixing data.
    """

    def __init__(self, network: ExecutableNetwork):
        self._network = network
        compiled = network._compiled
        if network.device == "GPU":
            # Device buffers, a stream and timing events; the host buffers are pinned staging rows.
            self._device = gpu.DeviceRequest(compiled, network._device_weights)
            self._steps = self._device.steps
            self._input_buffers = self._device.host_inputs
            self._output_buffers = self._device.host_outputs
            self._calls = []
        else:
            self._device = None
            self._buffers = compiled.plan.allocate()
            self._steps = compiled.bind(self._buffers)
            self._input_buffers = {name: self._buffers[name] for name in compiled.input_names}
            self._output_buffers = {name: self._buffers[name] for name in compiled.output_names}
            # (kernel's compiled code, args) per step: what _run_steps calls (the kernels were
            # compiled by ExecutableNetwork._compile_kernels for these very argument types).
            self._calls = [(step.compiled_call(), step.args) for step in self._steps]
        self._batch = network.max_batch
        self._times = [None] * len(self._steps)
        self._busy = threading.Lock()
        # What start_async left running: a thread (CPU) or the request's queued stream (GPU),
        # both waited for with join(timeout) and is_alive().
        self._pending: threading.Thread | gpu.DeviceRequest | None = None
        self._async_error: BaseException | None = None

    # -- batch -----------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        """The batch the next inference runs (the maximum until ``set_batch`` is called)."""
        return self._batch

    def set_batch(self, n: int) -> None:
        """Run the following inferences on ``n`` rows, ``1 <= n <= max_batch``. Compiles nothing."""
        if not self._network.dynamic_batch:
            raise DynBatchError(
                f"dynamic batch is not enabled for network '{self._network.name}'; load it with "
                f"config={{'{KEY_DYN_BATCH_ENABLED}': '{YES}'}} to call set_batch"
            )
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise BatchSizeError(f"batch size must be an int, got {n!r}")
        if not 1 <= n <= self._network.max_batch:
            raise BatchSizeError(f"batch size {n} is out of range: expected 1 to {self._network.max_batch} (the maximum batch)")
        with self._exclusive("set_batch"):
            self._batch = int(n)

    # -- inference -------------------------------------------------------------------------------
    def infer(self, inputs=None) -> dict[str, np.ndarray]:
        """Run one inference on the first ``batch`` rows of ``inputs`` ({input name: array}).

        Each array has ``batch`` rows, or ``max_batch`` rows of which only the first ``batch`` are
        read. Returns {output name: array of ``batch`` rows}, copies the caller owns, in the
        order of the network's outputs.
        """
        with self._exclusive("infer"):
            self._write_inputs(inputs)
            self._run_steps(self._batch)
            return {name: buffer[: self._batch].copy() for name, buffer in self._output_buffers.items()}

    def start_async(self, inputs=None) -> None:
        """Copy ``inputs`` in (errors are raised here), then run in the background; see ``wait``.
        On GPU it returns once the inference is queued on the request's CUDA stream."""
        if not self._busy.acquire(blocking=False):
            raise self._busy_error("start_async")
        try:
            self._write_inputs(inputs)
            if self._device is not None:
                self._device.enqueue(self._batch)
        except BaseException:
            self._busy.release()
            raise
        self._async_error = None
        if self._device is not None:
            self._pending = self._device
            return
        self._pending = threading.Thread(target=self._run_async, args=(self._batch,), daemon=True)
        self._pending.start()

    def _run_async(self, n: int):
        try:
            self._run_steps(n)
        except BaseException as error:  # re-raised by wait() in the caller's thread
            self._async_error = error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the inference started by ``start_async`` ends; True when it has ended
        (re-raising its error, if any), False when ``timeout`` seconds passed first. On GPU it
        synchronizes this request's stream only."""
        pending = self._pending
        if pending is None:
            return True
        try:
            pending.join(timeout)
        except BaseException:  # a CUDA error, reported when the stream is synchronized
            self._pending = None
            self._busy.release()
            raise
        if pending.is_alive():
            return False
        self._pending = None
        self._busy.release()
        if self._async_error is not None:
            error, self._async_error = self._async_error, None
            raise error
        return True

    def _run_steps(self, n: int):
        if self._device is not None:  # GPU: queue rows in, kernels and rows out; wait for them
            self._device.enqueue(n)
            self._device.join()
            return
        times = self._times
        clock = time.perf_counter
        for index, (call, args) in enumerate(self._calls):
            start = clock()
            call(n, *args)
            times[index] = clock() - start

    # -- results ---------------------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """Read-only views of the first ``batch`` rows of each output: no copy, valid until the
        next inference on this request."""
        if self._pending is not None:
            raise self._busy_error("outputs (call wait() first)")
        views = {}
        for name, buffer in self._output_buffers.items():
            view = buffer[: self._batch]
            view.flags.writeable = False
            views[name] = view
        return views

    def get_performance_counts(self) -> dict[str, dict]:
        """{layer name: {"layer_type", "exec_type", "status", "real_time_us"}} of the last inference,
        for every layer of the network in order (on GPU: each layer's device time, from CUDA
        events; for a convolution run in a chain, its part of the chain's time, from the CPU's
        time-stamp counter). A layer merged into its producer at load (``dynbatch.graph.fusion``)
        has status "OPTIMIZED_OUT", exec_type "fused into <producer>" and no time of its own; so
        has a Concatenation whose inputs are written into its output in place ("written in place
        by <producers>")."""
        times = self._device.layer_seconds() if self._device is not None else self._times
        run = {
            step.layer.name: {
                "layer_type": step.layer.type,
                "exec_type": step.exec_type,
                "status": "NOT_RUN" if seconds is None else "EXECUTED",
                "real_time_us": 0.0 if seconds is None else seconds * 1e6,
            }
            for bound, bound_seconds in zip(self._steps, times)
            for step, seconds in bound.layer_seconds(bound_seconds)
        }
        compiled = self._network._compiled

        def optimized_out(layer):
            if layer.name in compiled.in_place:
                return f"written in place by {', '.join(compiled.in_place[layer.name])}"
            return f"fused into {compiled.fused_into[layer.name]}"

        return {
            layer.name: run.get(layer.name) or {
                "layer_type": layer.type,
                "exec_type": optimized_out(layer),
                "status": "OPTIMIZED_OUT",
                "real_time_us": 0.0,
            }
            for layer in compiled.all_layers
        }

    # -- input checks ----------------------------------------------------------------------------
    def _write_inputs(self, inputs):
        """Validate every input first, then copy: a bad input leaves the request as it was."""
        if inputs is None:
            inputs = {}
        if isinstance(inputs, np.ndarray) and len(self._input_buffers) == 1:
            inputs = {next(iter(self._input_buffers)): inputs}
        if not isinstance(inputs, dict):
            raise InputError(f"inputs must be a dict {{input name: array}}, got {type(inputs).__name__}")
        unknown = sorted(set(inputs) - set(self._input_buffers))
        missing = sorted(set(self._input_buffers) - set(inputs))
        if unknown or missing:
            raise InputError(
                f"inputs {sorted(inputs)} do not match the network's inputs {list(self._input_buffers)}"
                + (f"; unknown: {unknown}" if unknown else "") + (f"; missing: {missing}" if missing else "")
            )
        n = self._batch
        checked = {name: self._checked_input(name, value, n) for name, value in inputs.items()}
        for name, array in checked.items():
            np.copyto(self._input_buffers[name][:n], array[:n], casting="same_kind")

    def _checked_input(self, name: str, value, n: int) -> np.ndarray:
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if array.dtype.kind != "f":
            raise InputError(
                f"input '{name}' has dtype {array.dtype}; expected float32 (other float types are cast; "
                f"integer, boolean and object arrays are refused)"
            )
        sample_shape = self._input_buffers[name].shape[1:]
        max_batch = self._network.max_batch
        if array.shape[1:] != sample_shape or array.shape[0] not in (n, max_batch):
            accepted = f"({n}, {', '.join(map(str, sample_shape))})"
            if n != max_batch:
                accepted += f" (batch {n}, set by set_batch) or ({max_batch}, {', '.join(map(str, sample_shape))}) (the maximum batch)"
            raise InputError(f"input '{name}' has shape {array.shape}; expected {accepted}")
        return array

    # -- one user at a time ------------------------------------------------------------------------
    def _busy_error(self, action: str) -> RequestBusyError:
        return RequestBusyError(
            f"{action}: this infer request is busy (an inference started by start_async has not "
            f"been waited for, or another thread is using it); use one request per thread"
        )

    @contextlib.contextmanager
    def _exclusive(self, action: str):
        if not self._busy.acquire(blocking=False):
            raise self._busy_error(action)
        try:
            yield
        finally:
            self._busy.release()
