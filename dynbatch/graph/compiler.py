"""From a checked network to a runnable plan: buffers planned by liveness, kernels bound to them.

``compile_network`` runs once per ``load_network``. It gives every tensor an offset in one float32
arena sized for the maximum batch, letting tensors whose lifetimes do not overlap share memory.
``CompiledNetwork.bind`` then runs once per infer request: given that request's arena, it asks
each layer's kernel module for ``(kernel, args)`` over views of it, so an inference is just
``kernel(n, *args)`` for each step, in order, with nothing looked up or allocated. On the GPU the
arena is device memory (``dynbatch.gpu``) and the steps come from each module's ``gpu_step``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..kernels import KERNELS
from .network import Layer, Network

# Tensors start on 64-byte boundaries (16 float32) so that vector loads stay aligned.
ALIGNMENT = 16


@dataclass(frozen=True)
class BufferPlan:
    """Where each tensor lives in a request's arena (offsets and sizes in float32 elements)."""

    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, int]
    arena_elements: int

    @property
    def planned_bytes(self) -> int:
        return self.arena_elements * 4

    @property
    def naive_bytes(self) -> int:
        """What one buffer per tensor would take."""
        return sum(_aligned(math.prod(shape)) for shape in self.shapes.values()) * 4

    def allocate(self) -> dict[str, np.ndarray]:
        """A fresh arena and a C-contiguous max-batch view of it per tensor."""
        arena = np.zeros(self.arena_elements, np.float32)
        return {
            name: arena[offset: offset + math.prod(shape)].reshape(shape)
            for name, (offset, shape) in ((n, (self.offsets[n], self.shapes[n])) for n in self.shapes)
        }


@dataclass(frozen=True)
class BoundStep:
    """One layer ready to run: ``kernel(n, *args)`` computes rows < n."""

    layer: Layer
    kernel: object
    args: tuple

    @property
    def exec_type(self) -> str:
        return getattr(self.kernel, "__name__", type(self.kernel).__name__)


@dataclass(frozen=True)
class CompiledNetwork:
    name: str
    layers: tuple[Layer, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    plan: BufferPlan

    def bind(self, buffers: dict[str, np.ndarray], device: str = "CPU") -> list[BoundStep]:
        """Each layer's kernel and arguments over ``buffers``: its module's ``cpu_step`` over
        NumPy views, or on "GPU" its ``gpu_step`` over device views."""
        steps = []
        for layer in self.layers:
            module = KERNELS[layer.type]
            step = module.gpu_step if device == "GPU" else module.cpu_step
            kernel, args = step(
                layer.normalized,
                [buffers[name] for name in layer.inputs],
                [buffers[name] for name in layer.outputs],
            )
            steps.append(BoundStep(layer, kernel, args))
        return steps


def _aligned(elements: int) -> int:
    return -(-elements // ALIGNMENT) * ALIGNMENT


def plan_buffers(network: Network) -> BufferPlan:
    """Greedy-by-size offset assignment over tensor lifetimes.

    A tensor lives from the step that writes it (inputs: before step 0) to the last step that
    reads it (outputs: past the last step). Largest tensors are placed first, each at the lowest
    offset that does not overlap a placed tensor whose lifetime overlaps its own. A layer's
    outputs never share memory with its inputs, because both are alive at that step.
    """
    end_of_run = len(network.layers)
    first_write = {name: -1 for name in network.inputs}
    last_read = {name: -1 for name in network.inputs}
    shapes = dict(network.inputs)
    for step, layer in enumerate(network.layers):
        for name in layer.inputs:
            last_read[name] = step
        for name, shape in zip(layer.outputs, layer.output_shapes):
            first_write[name], last_read[name], shapes[name] = step, step, shape
    for name in network.outputs:
        last_read[name] = end_of_run

    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first_write, last_read)
    offsets = {}
    for name in sorted(shapes, key=lambda t: (-math.prod(shapes[t]), first_write[t])):
        size, start, end = _aligned(math.prod(shapes[name])), first_write[name], last_read[name]
        offset = 0
        for other_offset, other_size, other_start, other_end in sorted(placed):
            if other_start <= end and start <= other_end:  # alive at the same time
                if other_offset - offset >= size:
                    break
                offset = max(offset, other_offset + other_size)
        offsets[name] = offset
        placed.append((offset, size, start, end))
    arena = max((offset + size for offset, size, _, _ in placed), default=0)
    return BufferPlan(shapes, offsets, arena)


def compile_network(network: Network) -> CompiledNetwork:
    """Plan the buffers of a network that passed ``check_topology``."""
    return CompiledNetwork(
        name=network.name,
        layers=tuple(network.layers),
        input_names=tuple(network.inputs),
        output_names=tuple(network.outputs),
        plan=plan_buffers(network),
    )
