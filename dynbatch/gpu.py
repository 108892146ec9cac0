"""The GPU device: what loading a network and running infer requests on "GPU" need beyond the CPU
path. numba.cuda is imported on first use only (asking for the available devices, or loading on
"GPU"), so CPU-only use never needs numba-cuda.

- ``unavailable_reason()``: why "GPU" cannot be used here, or None.
- ``DeviceWeights``: one per ``ExecutableNetwork``: the device copies of the layers' constant
  arrays (weights, biases, ...), made once at load and shared by every request.
- ``compile_kernels``: at load, compiles every layer's kernel and copies the weights over.
- ``DeviceRequest``: one per ``InferRequest``: a device arena planned like the host one, pinned
  host buffers for the input and output rows, a CUDA stream, and one CUDA event between layers.
  ``enqueue(n)`` queues one inference of n rows on the stream and returns; ``join``/``is_alive``
  wait for it like a thread's, synchronizing that stream only.

Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same code runs every kernel in
Python, synchronously; that is how the GPU path is tested without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
import time

import numpy as np

from .errors import ConfigError
from .graph.compiler import BoundStep, BufferPlan, CompiledNetwork
from .kernels.launch import import_cuda


@functools.cache
def unavailable_reason() -> str | None:
    """None when numba-cuda is installed and finds a CUDA GPU (or is the CUDA simulator)."""
    try:
        cuda = import_cuda()
    except ConfigError as error:
        return str(error)
    if not cuda.is_available():
        return ("numba.cuda finds no usable CUDA GPU (NUMBA_ENABLE_CUDASIM=1 runs the GPU kernels "
                "on numba's CUDA simulator instead)")
    return None


def is_available() -> bool:
    return unavailable_reason() is None


def is_simulator() -> bool:
    """True when numba.cuda is numba's CUDA simulator: kernels run in Python, synchronously."""
    return bool(import_cuda().config.ENABLE_CUDASIM)


# The simulator runs one kernel at a time in a process; a real GPU takes launches from any thread.
_SIMULATOR_LOCK = threading.Lock()


def _launch_guard():
    return _SIMULATOR_LOCK if is_simulator() else contextlib.nullcontext()


class DeviceWeights:
    """Device copies of the NumPy arrays that ``gpu_step`` leaves in a layer's args (weights,
    biases, BatchNormalization's folded scale and shift, Split's offsets), keyed by layer and
    argument position: copied the first time a layer is bound (at load), then reused by every
    request of the network."""

    def __init__(self):
        self._copies = {}
        self._lock = threading.Lock()

    def device_args(self, layer_name: str, args: tuple) -> tuple:
        with self._lock:
            return tuple(
                self._copy((layer_name, index), value) if isinstance(value, np.ndarray) else value
                for index, value in enumerate(args)
            )

    def _copy(self, key, array):
        if key not in self._copies:
            self._copies[key] = import_cuda().to_device(np.ascontiguousarray(array))
        return self._copies[key]


def allocate(plan: BufferPlan) -> dict:
    """A fresh device arena and a max-batch view of it per tensor (``BufferPlan.allocate`` on the
    device). Uninitialised: every row < n is written before it is read, and no kernel reads the others."""
    arena = import_cuda().device_array(plan.arena_elements, np.float32)
    return {
        name: arena[plan.offsets[name]: plan.offsets[name] + math.prod(shape)].reshape(*shape)
        for name, shape in plan.shapes.items()
    }


def bind(compiled: CompiledNetwork, buffers: dict, weights: DeviceWeights) -> list[BoundStep]:
    """Each layer's ``gpu_step`` over the device ``buffers``, its constant arrays on the device."""
    return [
        BoundStep(step.layer, step.kernel, weights.device_args(step.layer.name, step.args))
        for step in compiled.bind(buffers, "GPU")
    ]


def compile_kernels(compiled: CompiledNetwork, weights: DeviceWeights) -> None:
    """At load: compile every layer's kernel, each variant of it (launches with n = 0 touch no
    data), and copy the weights to the device, so that the first inference is as fast as the rest."""
    stream = import_cuda().stream()
    with _launch_guard():
        for step in bind(compiled, allocate(compiled.plan), weights):
            step.kernel.compile(*step.args, stream=stream)
    stream.synchronize()


class DeviceRequest:
    """One infer request's device side: its arena, steps, pinned host rows, stream and events."""

    def __init__(self, compiled: CompiledNetwork, weights: DeviceWeights):
        cuda = import_cuda()
        self.stream = cuda.stream()
        self._buffers = allocate(compiled.plan)
        self.steps = bind(compiled, self._buffers, weights)
        # Page-locked host buffers at the maximum batch, so that copies run asynchronously on
        # the stream. The request validates inputs into host_inputs and reads host_outputs.
        shapes = compiled.plan.shapes
        self.host_inputs = {name: cuda.pinned_array(shapes[name], np.float32) for name in compiled.input_names}
        self.host_outputs = {name: cuda.pinned_array(shapes[name], np.float32) for name in compiled.output_names}
        # events[i] and events[i + 1] frame step i on the stream; `finished` follows the copies out.
        # (Events record timing by default; the simulator's take no arguments.)
        self._events = [cuda.event() for _ in range(len(self.steps) + 1)]
        self._finished = cuda.event()
        self._has_run = False
        self._launching = _launch_guard()
        self._simulator = is_simulator()

    def enqueue(self, n: int) -> None:
        """Queue one inference of n rows on the stream and return: copy the n input rows in, run
        every layer between two timing events, copy the n output rows out."""
        stream, events = self.stream, self._events
        with self._launching:
            for name, host in self.host_inputs.items():
                self._buffers[name][:n].copy_to_device(host[:n], stream=stream)
            events[0].record(stream)
            for step, end in zip(self.steps, events[1:]):
                step.kernel(n, *step.args, stream=stream)
                end.record(stream)
            for name, host in self.host_outputs.items():
                self._buffers[name][:n].copy_to_host(host[:n], stream=stream)
            self._finished.record(stream)
        self._has_run = True

    def is_alive(self) -> bool:
        """True while the queued inference runs (the simulator has always finished)."""
        return not self._simulator and not self._finished.query()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the queued inference, as ``Thread.join``: synchronize this request's stream
        (a CUDA error surfaces here), or poll it until ``timeout`` seconds have passed."""
        if timeout is None:
            self.stream.synchronize()
            return
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(1e-4)

    def layer_seconds(self) -> list[float | None]:
        """Device time of each step in the last inference, from its CUDA events (None before the
        first inference; 0.0 under the simulator, which records no time)."""
        if not self._has_run:
            return [None] * len(self.steps)
        self._events[-1].synchronize()
        return [
            max(0.0, start.elapsed_time(end)) / 1e3
            for start, end in zip(self._events, self._events[1:])
        ]
