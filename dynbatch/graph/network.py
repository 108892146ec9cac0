"""The network IR: named tensors, layers in the order they were added, and the network outputs.

Dim 0 of every tensor is the batch; the value given to ``add_input`` is the maximum batch the
network will be loaded for. Shapes are inferred, and attributes validated, as each layer is added.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..errors import NetworkDefinitionError
from .layers import Shape, infer_layer


@dataclass(frozen=True)
class Layer:
    """One layer. ``attrs`` is what the user gave (weights copied to float32); ``normalized`` is
    what the kernels receive (None for types dynbatch cannot run or after a layer of unknown shape)."""

    name: str
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict
    normalized: dict | None
    output_shapes: tuple[Shape | None, ...]


class Network:
    """A network under construction, like OpenVINO's ``CNNNetwork``."""

    def __init__(self, name: str = "network"):
        self.name = name
        self.layers: list[Layer] = []
        self._input_shapes: dict[str, Shape] = {}
        self._output_names: list[str] = []
        self._shapes: dict[str, Shape | None] = {}
        self._layer_names: set[str] = set()
        self._counter = itertools.count(1)

    # -- building ----------------------------------------------------------------------------
    def add_input(self, name: str, shape) -> str:
        """Declare a network input; dim 0 of ``shape`` is its maximum batch. Returns ``name``."""
        if not isinstance(name, str) or not name:
            raise NetworkDefinitionError(f"input name must be a non-empty string, got {name!r}")
        if name in self._shapes:
            raise NetworkDefinitionError(f"input '{name}': a tensor of that name already exists")
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise NetworkDefinitionError(f"input '{name}': shape must be a sequence of ints, got {shape!r}") from None
        if not 2 <= len(shape) <= 4 or min(shape) < 1:
            raise NetworkDefinitionError(
                f"input '{name}': shape {shape} must have rank 2 to 4 (batch first) and positive dims"
            )
        self._input_shapes[name] = shape
        self._shapes[name] = shape
        return name

    def add_layer(self, layer_type: str, inputs, /, name: str | None = None, **attrs):
        """Add a layer of ``layer_type`` reading the tensors named in ``inputs``.

        Returns the output tensor name (a list of names for ``Split``). Raises
        ``NetworkDefinitionError`` naming the layer when an input, attribute or weight is invalid.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        if name is None:
            name = self._generate_name(layer_type)
        elif name in self._layer_names or name in self._shapes:
            raise NetworkDefinitionError(f"{layer_type} layer '{name}': the name is already used")
        for tensor in inputs:
            if tensor not in self._shapes:
                known = sorted(self._shapes)
                raise NetworkDefinitionError(f"{layer_type} layer '{name}': input tensor '{tensor}' does not exist (known: {known})")
        normalized, output_shapes = infer_layer(layer_type, name, [self._shapes[t] for t in inputs], attrs)
        output_shapes = tuple(output_shapes) if output_shapes is not None else (None,)
        outputs = (name,) if len(output_shapes) == 1 and layer_type != "Split" else tuple(
            f"{name}.{index}" for index in range(len(output_shapes))
        )
        layer = Layer(name, layer_type, tuple(inputs), outputs, _owned_attrs(attrs, normalized), normalized, output_shapes)
        self.layers.append(layer)
        self._layer_names.add(name)
        self._shapes.update(zip(outputs, output_shapes))
        return list(outputs) if layer_type == "Split" else outputs[0]

    def add_output(self, tensor: str) -> str:
        """Mark a tensor as a network output (outputs keep the order they were added in)."""
        if tensor not in self._shapes:
            raise NetworkDefinitionError(f"output '{tensor}' is not a tensor of network '{self.name}'")
        if tensor not in self._output_names:
            self._output_names.append(tensor)
        return tensor

    def _generate_name(self, layer_type: str) -> str:
        while True:
            name = f"{layer_type.lower()}_{next(self._counter)}"
            if name not in self._layer_names and name not in self._shapes:
                return name

    # -- reading -----------------------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, Shape]:
        return dict(self._input_shapes)

    @property
    def outputs(self) -> list[str]:
        return list(self._output_names)

    def shape(self, tensor: str) -> Shape | None:
        """The shape of a tensor at the network's batch size (None when it cannot be inferred)."""
        return self._shapes[tensor]

    @property
    def batch_size(self) -> int:
        """Dim 0 of the (first) input: the maximum batch the network is loaded for."""
        if not self._input_shapes:
            raise NetworkDefinitionError(f"network '{self.name}' has no inputs yet")
        return next(iter(self._input_shapes.values()))[0]

    @batch_size.setter
    def batch_size(self, value: int):
        """Set dim 0 of every input and re-infer every layer, like ``CNNNetwork::setBatchSize``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NetworkDefinitionError(f"batch_size must be a positive int, got {value!r}")
        inputs = {name: (value,) + shape[1:] for name, shape in self._input_shapes.items()}
        shapes: dict[str, Shape | None] = dict(inputs)
        layers = []
        for layer in self.layers:
            normalized, output_shapes = infer_layer(layer.type, layer.name, [shapes[t] for t in layer.inputs], layer.attrs)
            output_shapes = tuple(output_shapes) if output_shapes is not None else (None,) * len(layer.outputs)
            shapes.update(zip(layer.outputs, output_shapes))
            layers.append(Layer(layer.name, layer.type, layer.inputs, layer.outputs, layer.attrs, normalized, output_shapes))
        # Only commit once every layer accepted the new batch.
        self._input_shapes, self._shapes, self.layers = inputs, shapes, layers

    def __repr__(self):
        return (f"Network({self.name!r}, inputs={self.inputs}, layers={len(self.layers)}, "
                f"outputs={self.outputs})")


def _owned_attrs(attrs: dict, normalized: dict | None) -> dict:
    """The user's attributes with each weight array replaced by the float32 copy the layer owns,
    so that changing the caller's array later changes nothing here."""
    owned = dict(attrs)
    for key, value in (normalized or {}).items():
        if key in owned and hasattr(value, "dtype"):
            owned[key] = value
    return owned
