"""Topology analysis at load: can every layer run on any batch ``n <= max`` doing only ``n`` rows?

A layer qualifies when its type is one of the 14 supported ones and nothing it does mixes samples,
that is, no attribute touches axis 0. ``analyse`` returns one row per layer so that a caller (the
``check`` command, ``load_network``) can show all of them; ``check_topology`` raises one
``UnsupportedTopologyError`` that names every offending layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetworkDefinitionError, UnsupportedTopologyError
from .layers import SUPPORTED_LAYERS
from .network import Network

SHAPE_CHANGING_TYPES = {"Flatten", "Permute", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Tile", "Gather"}
DETECTION_TYPES = {"ROIPooling", "PriorBox", "PriorBoxClustered", "DetectionOutput", "Proposal", "RegionYolo", "PSROIPooling"}


@dataclass(frozen=True)
class LayerVerdict:
    name: str
    type: str
    reason: str | None  # None: the layer can run with dynamic batch

    @property
    def supported(self) -> bool:
        return self.reason is None


def _type_reason(layer_type: str) -> str | None:
    if layer_type in SUPPORTED_LAYERS:
        return None
    if layer_type in SHAPE_CHANGING_TYPES:
        return f"{layer_type} may change the tensor shape arbitrarily, moving data across the batch axis"
    if layer_type in DETECTION_TYPES:
        return f"{layer_type} is specific to object detection topologies and not supported with dynamic batch"
    return f"'{layer_type}' is a custom or unknown layer type"


def _batch_axis_reason(layer, shapes) -> str | None:
    """Why a supported layer's attributes touch axis 0, or None."""
    attrs = layer.normalized
    if attrs is None:
        return None
    if layer.type in ("Concatenation", "Split", "SoftMax") and attrs["axis"] == 0:
        return f"{layer.type} on axis 0 (the batch axis) mixes samples"
    if layer.type == "Crop":
        input_shape, output_shape = shapes[layer.inputs[0]], layer.output_shapes[0]
        if attrs["offsets"][0] != 0 or output_shape[0] != input_shape[0]:
            return f"Crop on axis 0 (the batch axis): offset {attrs['offsets'][0]}, size {output_shape[0]} of {input_shape[0]}"
    if layer.type == "Eltwise":
        batches = [shapes[name][0] for name in layer.inputs]
        if len(set(batches)) > 1:
            return f"Eltwise broadcasts along the batch axis (input dims 0: {batches})"
    return None


def analyse(network: Network) -> list[LayerVerdict]:
    """One verdict per network input whose batch differs from the others, then one per layer."""
    if not network.inputs:
        raise NetworkDefinitionError(f"network '{network.name}' has no inputs")
    verdicts = []
    batch = network.batch_size
    first_input = next(iter(network.inputs))
    for name, shape in network.inputs.items():
        if shape[0] != batch:
            verdicts.append(LayerVerdict(name, "Input", f"dim 0 is {shape[0]} but input '{first_input}' has {batch}; all inputs must share the batch"))
    shapes = {name: shape for name, shape in network.inputs.items()}
    for layer in network.layers:
        reason = _type_reason(layer.type) or _batch_axis_reason(layer, shapes)
        inputs_batched = all(shapes[name] is not None and shapes[name][0] == batch for name in layer.inputs)
        if reason is None and layer.normalized is not None and inputs_batched:
            wrong = [s for s in layer.output_shapes if s[0] != batch]
            if wrong:
                reason = f"output dim 0 is {wrong[0][0]}, not the batch {batch}"
        verdicts.append(LayerVerdict(layer.name, layer.type, reason))
        shapes.update(zip(layer.outputs, layer.output_shapes))
    return verdicts


def check_topology(network: Network, dynamic_batch: bool = True) -> list[LayerVerdict]:
    """Raise ``UnsupportedTopologyError`` listing every layer that cannot run; else return the verdicts."""
    verdicts = analyse(network)
    rejected = [v for v in verdicts if not v.supported]
    if rejected:
        purpose = "with dynamic batch" if dynamic_batch else "on dynbatch's kernels"
        lines = "\n".join(f"  - {v.name} ({v.type}): {v.reason}" for v in rejected)
        raise UnsupportedTopologyError(
            f"network '{network.name}' cannot run {purpose}: {len(rejected)} layer(s) rejected\n{lines}\n"
            f"Supported layer types: {', '.join(SUPPORTED_LAYERS)}.",
            [(v.name, v.type, v.reason) for v in rejected],
        )
    if not network.outputs:
        raise NetworkDefinitionError(f"network '{network.name}' has no outputs; call add_output")
    return verdicts
