"""From a checked network to a runnable plan: buffers planned by liveness, kernels bound to them.

``compile_network`` runs once per ``load_network``. It merges layers into their producers where a
kernel can compute both (``fusion``; on the CPU also a global average pooling into the GEMM
convolution before it, ``averages_fused``, and a max pooling into the output-channel-vector
convolution before it, a first layer's most often, ``max_poolings_fused``), lets the
convolutions that feed a channel Concatenation write straight into its output
(``concatenations_in_place``, CPU) and a convolution with a residual write over the residual
where nothing reads it after (``residuals_in_place``, CPU), then gives every tensor an offset
in one float32 arena sized for the maximum batch, letting tensors whose lifetimes do not overlap
share memory.
``CompiledNetwork.bind`` then runs once per infer request: given that request's arena (and one
scratch buffer its BLAS-based Deconvolution kernels share), it asks each layer's kernel module
for ``(kernel, args)`` over views of it, so an inference is just ``kernel(n, *args)`` for each
step, in order, with nothing looked up and no tensor buffer allocated. On the CPU each run of
consecutive convolutions, poolings and FullyConnected layers of the kinds ``kernels.chain``
takes is one step (``chain_convolutions``). On the GPU the arena is device memory
(``dynbatch.gpu``) and the steps come from each module's ``gpu_step``.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field

import numba
import numpy as np

from ..kernels import KERNELS
from ..kernels.chain import chain_step, chainable, step_seconds
from ..kernels.convolution import WRITES_DESTINATION, choose_algorithm as choose_convolution
from ..memory import zeroed_floats
from .fusion import FusedGraph, fuse
from .network import Layer, Network

# Tensors start on 64-byte boundaries (16 float32) so that vector loads stay aligned.
ALIGNMENT = 16


@dataclass(frozen=True)
class BufferPlan:
    """Where each tensor lives in a request's arena (offsets and sizes in float32 elements)."""

    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, int]
    arena_elements: int
    #: {tensor: (first step alive, last step alive)}, both inclusive, as ``plan_buffers`` reckons
    #: them (network inputs from step -1, network outputs to ``len(layers)``).
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Tensors without memory of their own: {tensor: (the tensor it is part of, first channel,
    #: its shape)}, the inputs of a Concatenation written in place, and the outputs of
    #: convolutions written over their residual (all of its channels).
    aliases: dict[str, tuple[str, int, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def planned_bytes(self) -> int:
        return self.arena_elements * 4

    @property
    def peak_live_bytes(self) -> int:
        """The most bytes (aligned sizes) of tensors alive at one step: a lower bound for any
        plan with these lifetimes, which ``planned_bytes`` can only meet or exceed."""
        if not self.lifetimes:
            return 0
        first = min(start for start, _ in self.lifetimes.values())
        last = max(end for _, end in self.lifetimes.values())
        change = [0] * (last - first + 2)  # live elements change at each step boundary
        for name, (start, end) in self.lifetimes.items():
            size = _aligned(math.prod(self.shapes[name]))
            change[start - first] += size
            change[end - first + 1] -= size
        live = peak = 0
        for delta in change:
            live += delta
            peak = max(peak, live)
        return peak * 4

    @property
    def naive_bytes(self) -> int:
        """What one buffer per tensor would take (the aliased ones too)."""
        shapes = list(self.shapes.values()) + [shape for _, _, shape in self.aliases.values()]
        return sum(_aligned(math.prod(shape)) for shape in shapes) * 4

    def allocate(self) -> dict[str, np.ndarray]:
        """A fresh arena (``zeroed_floats``) and a C-contiguous max-batch view of it per tensor; an
        aliased tensor is its channels of the tensor it is part of (a strided view)."""
        arena = zeroed_floats(self.arena_elements)
        buffers = {
            name: arena[offset: offset + math.prod(shape)].reshape(shape)
            for name, (offset, shape) in ((n, (self.offsets[n], self.shapes[n])) for n in self.shapes)
        }
        for name, (whole, first, shape) in self.aliases.items():
            buffers[name] = buffers[whole][:, first:first + shape[1]]
        return buffers


@dataclass(frozen=True)
class BoundStep:
    """One layer ready to run: ``kernel(n, *args)`` computes rows < n. Or, with ``members``, a
    run of convolution layers in one parallel loop (``chain_convolutions``): ``layer`` is the
    first member's, and ``members`` the steps each would be alone."""

    layer: Layer
    kernel: object
    args: tuple
    members: tuple["BoundStep", ...] = ()

    def layer_seconds(self, seconds):
        """[(step, seconds)] of each layer this step runs, given the step's own time of its last
        call (None: not run): for a chain, each member's from the chain's cycle counter (where
        there is none, the first member's is the whole chain's and the others' 0)."""
        if not self.members:
            return [(self, seconds)]
        if seconds is None:
            return [(member, None) for member in self.members]
        split = step_seconds(self.args)
        if split is None:
            split = [seconds] + [0.0] * (len(self.members) - 1)
        return list(zip(self.members, split))

    @property
    def exec_type(self) -> str:
        return getattr(self.kernel, "__name__", type(self.kernel).__name__)

    def compiled_call(self):
        """The machine code ``kernel`` compiled for these arguments (n an int), called without
        Numba's dispatcher, which would type all of them again on every call (2-3 us for a
        convolution's 23, as much as a small layer's work at n = 1); ``kernel`` itself where no
        such code is compiled yet or ``kernel`` is not a Numba CPU dispatcher."""
        overloads = getattr(self.kernel, "overloads", None)
        typeof = getattr(self.kernel, "typeof_pyval", None)
        if not overloads or typeof is None:
            return self.kernel
        compiled = overloads.get(tuple(typeof(value) for value in (0, *self.args)))
        return getattr(compiled, "entry_point", None) or self.kernel


@dataclass(frozen=True)
class CompiledNetwork:
    """The layers to run after fusion (``dynbatch.graph.fusion``), their buffer plan and the
    scratch the Deconvolution GEMM kernels share. ``all_layers``: every layer of the network, fused
    or not; ``fused_into``: {absorbed layer: the layer that computes it}; ``in_place``:
    {Concatenation written in place: the layers writing its inputs}."""

    name: str
    layers: tuple[Layer, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    plan: BufferPlan
    all_layers: tuple[Layer, ...] = ()
    fused_into: dict[str, str] = field(default_factory=dict)
    in_place: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Float32 elements of the one scratch buffer a request's CPU kernels share (they run one
    #: after the other): the largest any layer asks for through its module's ``scratch_elements``.
    scratch_elements: int = 0
    #: {convolution: the residual tensor its output is written over} (``residuals_in_place``).
    residuals_in_place: dict[str, str] = field(default_factory=dict)

    def bind(self, buffers: dict[str, np.ndarray], device: str = "CPU", link_tasks: bool = True) -> list[BoundStep]:
        """Each layer's kernel and arguments over ``buffers``: its module's ``cpu_step`` over
        NumPy views, or on "GPU" its ``gpu_step`` over device views. link_tasks=False: steps
        only to compile the kernels with (``chain.chain_step``)."""
        scratch = zeroed_floats(self.scratch_elements) if device == "CPU" else None
        steps = []
        for layer in self.layers:
            module = KERNELS[layer.type]
            inputs = [buffers[name] for name in layer.inputs]
            outputs = [buffers[name] for name in layer.outputs]
            if device == "GPU":
                kernel, args = module.gpu_step(layer.normalized, inputs, outputs)
            elif layer.outputs[0] in self.plan.aliases and layer.name not in self.residuals_in_place:
                # into its channels of a Concatenation
                whole, first, _ = self.plan.aliases[layer.outputs[0]]
                kernel, args = module.cpu_step(layer.normalized, inputs, outputs, destination=(buffers[whole], first))
            elif hasattr(module, "scratch_elements"):
                kernel, args = module.cpu_step(layer.normalized, inputs, outputs, scratch=scratch)
            else:
                kernel, args = module.cpu_step(layer.normalized, inputs, outputs)
            steps.append(BoundStep(layer, kernel, args))
        return chain_convolutions(steps, link_tasks) if device == "CPU" else steps


def chain_convolutions(steps: list[BoundStep], link_tasks: bool = True) -> list[BoundStep]:
    """``steps`` with each run of consecutive steps that ``chain.chainable`` takes (GEMM,
    Winograd, depthwise, stem and averaged convolutions, max pooling over 3-wide windows, global
    pooling, LRN across channels, FullyConnected; one step alone too) made one step of
    ``chain.convolution_chain_cpu``: one parallel loop for the run, which Numba's worker thread
    joins once rather than at every layer (7-18 us each time)."""
    threads = numba.get_num_threads()
    chained, run = [], []

    def close_run():
        if run:
            kernel, args = chain_step([(step.kernel, step.args) for step in run], threads, link_tasks)
            chained.append(BoundStep(run[0].layer, kernel, args, tuple(run)))
            run.clear()

    for step in steps:
        if chainable(step.kernel, step.args):
            run.append(step)
        else:
            close_run()
            chained.append(step)
    close_run()
    return chained


def _aligned(elements: int) -> int:
    return -(-elements // ALIGNMENT) * ALIGNMENT


def _tensor_shapes(inputs: dict, layers) -> dict[str, tuple[int, ...]]:
    """{tensor: shape} of the network inputs and of every output of ``layers``."""
    return dict(inputs) | {name: shape for layer in layers for name, shape in zip(layer.outputs, layer.output_shapes)}


def plan_buffers(network: Network | FusedGraph, concatenations: tuple[Layer, ...] = (),
                 residuals: tuple[Layer, ...] = ()) -> BufferPlan:
    """Greedy offset assignment over the tensor lifetimes of ``network``'s layers (after fusion,
    a ``FusedGraph``), the best of a few orders. ``concatenations``: Concatenation layers taken
    out of ``network`` because their inputs are written in place (``concatenations_in_place``):
    each input becomes an alias of its channels of the output, which lives from the first step
    that writes one of them. ``residuals``: convolutions of ``network`` whose output is written
    over their residual (``residuals_in_place``): the output becomes an alias of the residual's
    memory (of the tensor that memory belongs to, where the residual is such an output itself),
    which lives on as long as the output does.

    A tensor lives from the step that writes it (inputs: before step 0) to the last step that
    reads it (outputs: past the last step). Tensors are placed one by one, each at the lowest
    offset that does not overlap a placed tensor whose lifetime overlaps its own; a layer's
    outputs never share memory with its inputs, because both are alive at that step. The order
    of placement decides the arena: largest first, longest-lived first, largest size x lifetime
    first and first written first are each tried, and the smallest arena kept (the first order
    on a tie). ``BufferPlan.peak_live_bytes`` is the lower bound no order can beat.
    """
    end_of_run = len(network.layers)
    first_write = {name: -1 for name in network.inputs}
    last_read = {name: -1 for name in network.inputs}
    shapes = dict(network.inputs)
    written = _tensor_shapes(network.inputs, network.layers)
    aliases, whole_shapes = {}, {}
    for concatenation in concatenations:
        whole = concatenation.outputs[0]
        whole_shapes[whole] = concatenation.output_shapes[0]
        first = 0
        for name in concatenation.inputs:
            aliases[name] = (whole, first, written[name])
            first += written[name][1]
    for layer in residuals:  # (in the order they run: a residual may be an earlier one's output)
        output, residual = layer.outputs[0], layer.inputs[1]
        whole = aliases[residual][0] if residual in aliases else residual
        aliases[output] = (whole, 0, written[output])
        if whole not in whole_shapes:  # (a Concatenation's output is there already)
            whole_shapes[whole] = written[whole]

    def memory_of(name):
        return aliases[name][0] if name in aliases else name

    for step, layer in enumerate(network.layers):
        for name in layer.inputs:
            last_read[memory_of(name)] = step
        for name, shape in zip(layer.outputs, layer.output_shapes):
            if name in aliases:
                name, shape = aliases[name][0], whole_shapes[aliases[name][0]]
                if name in shapes:  # written before, by another of its inputs' layers or as a residual
                    last_read[name] = max(last_read[name], step)
                    continue
            first_write[name], last_read[name], shapes[name] = step, step, shape
    for name in network.outputs:
        last_read[memory_of(name)] = end_of_run

    lifetimes = {name: (first_write[name], last_read[name]) for name in shapes}
    sizes = {name: _aligned(math.prod(shape)) for name, shape in shapes.items()}
    steps = {name: end - start + 1 for name, (start, end) in lifetimes.items()}
    orders = (
        lambda t: (-math.prod(shapes[t]), first_write[t]),    # largest first
        lambda t: (-steps[t], -sizes[t], first_write[t]),     # longest-lived first
        lambda t: (-sizes[t] * steps[t], first_write[t]),     # largest size x lifetime first
        lambda t: (first_write[t], -sizes[t]),                # first written first
    )
    best = None
    for order in orders:
        offsets, arena = _place(sorted(shapes, key=order), sizes, lifetimes)
        if best is None or arena < best[1]:
            best = offsets, arena
    return BufferPlan(shapes, best[0], best[1], lifetimes, aliases)


def _place(names, sizes: dict[str, int], lifetimes: dict[str, tuple[int, int]]) -> tuple[dict[str, int], int]:
    """Offsets (in elements) for ``names`` placed in that order at the lowest free offset, and the arena."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first_write, last_read)
    offsets = {}
    for name in names:
        size, (start, end) = sizes[name], lifetimes[name]
        offset = 0
        for other_offset, other_size, other_start, other_end in sorted(placed):
            if other_start <= end and start <= other_end:  # alive at the same time
                if other_offset - offset >= size:
                    break
                offset = max(offset, other_offset + other_size)
        offsets[name] = offset
        placed.append((offset, size, start, end))
    return offsets, max((offset + size for offset, size, _, _ in placed), default=0)


def concatenations_in_place(graph: FusedGraph) -> tuple[Layer, ...]:
    """The Concatenation layers of ``graph`` that need not run: those along channels (axis 1) of
    4-d tensors whose every input is written by a GEMM or Winograd Convolution without residual,
    read by nothing else and not a network output. Each such convolution can write its output straight
    into its channels of the Concatenation's (``convolution.cpu_step``'s ``destination``), which
    saves the copy: SqueezeNet's fire modules and GoogLeNet's inception modules end this way."""
    readers = Counter(name for layer in graph.layers for name in layer.inputs)
    writer = {name: layer for layer in graph.layers for name in layer.outputs}
    shapes = _tensor_shapes(graph.inputs, graph.layers)
    outputs = set(graph.outputs)

    def written_in_place(tensor):
        layer = writer.get(tensor)
        return (layer is not None and layer.type == "Convolution" and layer.normalized is not None
                and len(layer.inputs) == 1 and len(layer.outputs) == 1 and readers[tensor] == 1
                and tensor not in outputs
                and choose_convolution(layer.normalized, shapes[layer.inputs[0]]) in WRITES_DESTINATION)

    return tuple(
        layer for layer in graph.layers
        if layer.type == "Concatenation" and layer.normalized is not None and layer.normalized["axis"] == 1
        and len(layer.output_shapes[0]) == 4 and len(set(layer.inputs)) == len(layer.inputs)
        and all(written_in_place(name) for name in layer.inputs)
    )


def residuals_in_place(graph: FusedGraph) -> tuple[Layer, ...]:
    """The convolutions of ``graph`` (as fused, its Concatenations written in place still there:
    their outputs may be residuals) whose output can be written over their residual: GEMM or
    Winograd convolutions whose residual is a tensor of the plan's own (not their input x, not a
    network input or output) that no later layer reads, and whose output is not a network output.
    The kernel then reads each residual element where it writes that output element
    (``convolution.gemm_task``): the residual's memory is read once, where a separate output
    would be fetched too, for the stores. ResNet's 64 -> 256 1x1 layers at n = 8 took 0.67x-0.83x
    the time this way."""
    last_reader = {name: layer.name for layer in graph.layers for name in layer.inputs}
    shapes = _tensor_shapes(graph.inputs, graph.layers)
    outputs = set(graph.outputs)
    return tuple(
        layer for layer in graph.layers
        if layer.type == "Convolution" and layer.normalized is not None and len(layer.inputs) == 2
        and len(layer.outputs) == 1 and layer.inputs[1] != layer.inputs[0]
        and layer.inputs[1] not in graph.inputs and layer.inputs[1] not in outputs and layer.outputs[0] not in outputs
        and last_reader[layer.inputs[1]] == layer.name and shapes[layer.inputs[1]] == layer.output_shapes[0]
        and choose_convolution(layer.normalized, shapes[layer.inputs[0]]) in WRITES_DESTINATION
    )


def _poolings_merged(graph: FusedGraph, method: str, attribute: str, value) -> FusedGraph:
    """``graph`` with each Pooling of ``method`` merged into the Convolution that writes its input,
    where the pooling alone reads that input and it is not a network output, and ``value(pool,
    conv, shapes)`` (the tensors' shapes) is not None: the merged convolution takes the pooling's
    output, and that value as its ``attribute``, and the pooling reports as fused into it."""
    readers = Counter(name for layer in graph.layers for name in layer.inputs)
    shapes = _tensor_shapes(graph.inputs, graph.layers)
    writer = {name: index for index, layer in enumerate(graph.layers) for name in layer.outputs}
    layers, fused_into, merged = list(graph.layers), dict(graph.fused_into), set()
    for pool in graph.layers:
        if (pool.type != "Pooling" or pool.normalized is None or pool.normalized["pool_method"] != method
                or len(pool.inputs) != 1 or pool.inputs[0] not in writer or readers[pool.inputs[0]] != 1
                or pool.inputs[0] in graph.outputs):
            continue
        index = writer[pool.inputs[0]]
        conv = layers[index]
        if conv.type != "Convolution" or conv.normalized is None or len(conv.outputs) != 1:
            continue
        merged_value = value(pool, conv, shapes)
        if merged_value is None:
            continue
        layers[index] = dataclasses.replace(conv, outputs=pool.outputs, output_shapes=pool.output_shapes,
                                            normalized={**conv.normalized, attribute: merged_value})
        merged.add(pool.name)
        fused_into[pool.name] = conv.name
    if not merged:
        return graph
    return dataclasses.replace(graph, layers=tuple(layer for layer in layers if layer.name not in merged),
                               fused_into=fused_into)


def _global_average(pool, conv, shapes):
    """The plane (OH, OW) that ``pool`` averages whole, without padding, where ``conv`` is a
    one-group GEMM convolution; else None."""
    attrs, plane = pool.normalized, shapes[pool.inputs[0]][2:]
    if (len(plane) != 2 or tuple(attrs["kernel"]) != tuple(plane) or any(attrs["pads_begin"])
            or any(attrs["pads_end"]) or conv.normalized["group"] != 1
            or choose_convolution(conv.normalized, shapes[conv.inputs[0]]) != "gemm"):
        return None
    return tuple(plane)


def averages_fused(graph: FusedGraph) -> FusedGraph:
    """``graph`` with each global average pooling merged into the convolution whose output it
    alone reads (CPU): a one-group GEMM convolution, its output not a network output, then a
    Pooling that averages each whole plane without padding. The merged convolution takes the
    pooling's output and ``global_average`` (the plane's size) among its attributes, and
    ``convolution.convolution_gemm_average_cpu`` sums each output plane while it is in cache,
    never writing it: SqueezeNet's last 1x1 layer (256 -> 1000 on 13x13) and ResNet's last
    bottleneck end this way."""
    return _poolings_merged(graph, "avg", "global_average", _global_average)


def _never_decreasing(activation) -> bool:
    """Whether a fused activation (None, or relu, relu6, clamp) keeps the order of its inputs, so
    that a max taken before it is the max of its outputs: all but a relu whose leak is negative."""
    return activation is None or activation["type"] != "relu" or activation["alpha"] >= 0.0


def _max_pool(pool, conv, shapes):
    """``max_pool`` (the pooling's window, strides, leading pads, and the convolution's output
    size) where ``conv`` is a stem layer without a residual whose activation keeps its inputs'
    order, and each of the pooling's windows starts inside that output; else None."""
    attrs, conv_size, out_size = pool.normalized, shapes[pool.inputs[0]][2:], pool.output_shapes[0][2:]
    if (len(conv_size) != 2 or len(conv.inputs) != 1
            or any((out_size[a] - 1) * attrs["strides"][a] - attrs["pads_begin"][a] >= conv_size[a]
                   or attrs["pads_begin"][a] >= attrs["kernel"][a] for a in range(2))
            or choose_convolution(conv.normalized, shapes[conv.inputs[0]]) != "stem"
            or not _never_decreasing(conv.normalized.get("activation"))):
        return None
    return {"kernel": tuple(attrs["kernel"]), "strides": tuple(attrs["strides"]),
            "pads_begin": tuple(attrs["pads_begin"]), "conv_size": tuple(conv_size)}


def max_poolings_fused(graph: FusedGraph) -> FusedGraph:
    """``graph`` with each max pooling merged into the convolution whose output it alone reads
    (CPU): a layer that ``convolution.convolution_stem_cpu`` takes (a first layer on the image, a
    strided one with a window, or groups with a window: ``convolution.choose_algorithm``), without
    a residual, its activation one that keeps the order of its inputs (so that pooling its sums and
    then activating is the same), its output not a network output; a pooling whose windows each
    start inside that output. The merged convolution takes the pooling's output and ``max_pool`` (its
    window, strides, leading pads and the convolution's own output size), and pools each band of
    its output while it is in cache, never writing it: the stem and max pooling of SqueezeNet,
    ResNet, GoogLeNet and FCN end this way."""
    return _poolings_merged(graph, "max", "max_pool", _max_pool)


def compile_network(network: Network, device: str = "CPU") -> CompiledNetwork:
    """Fuse, then plan the buffers of a network that passed ``check_topology`` (on the CPU, with
    the ``averages_fused`` and ``max_poolings_fused``, and the ``concatenations_in_place`` and
    ``residuals_in_place`` written in place)."""
    fused = fuse(network)
    if device == "CPU":
        fused = max_poolings_fused(averages_fused(fused))
    in_place = concatenations_in_place(fused) if device == "CPU" else ()
    overwriting = residuals_in_place(fused) if device == "CPU" else ()
    if in_place:
        skipped = {layer.name for layer in in_place}
        fused = dataclasses.replace(fused, layers=tuple(layer for layer in fused.layers if layer.name not in skipped))
    writers = {name: layer.name for layer in fused.layers for name in layer.outputs}
    shapes = _tensor_shapes(network.inputs, network.layers)  # (those of the layers fusion merged too)
    scratch = 0
    for layer in fused.layers:
        module = KERNELS[layer.type]
        if hasattr(module, "scratch_elements"):
            needed = module.scratch_elements(layer.normalized, [shapes[name] for name in layer.inputs], layer.output_shapes)
            scratch = max(scratch, sum(needed))
    return CompiledNetwork(
        name=network.name,
        layers=fused.layers,
        input_names=tuple(network.inputs),
        output_names=tuple(network.outputs),
        plan=plan_buffers(fused, in_place, overwriting),
        all_layers=tuple(network.layers),
        fused_into=fused.fused_into,
        in_place={layer.name: tuple(writers[name] for name in layer.inputs) for layer in in_place},
        scratch_elements=scratch,
        residuals_in_place={layer.name: layer.inputs[1] for layer in overwriting},
    )
