"""Graph passes that merge a layer into the one that produces its input, before buffers are planned.

- A BatchNormalization after a Convolution is folded into the convolution's weights and biases:
  ``scale * (w * x + b) + shift == (scale * w) * x + (scale * b + shift)`` per output channel.
- An Eltwise sum (coefficients 1, no broadcasting) of a Convolution's output and another tensor
  becomes the convolution's residual, added in its epilogue (ResNet's shortcut additions). The
  merged convolution runs where the Eltwise ran, after both of its inputs exist.
- An Activation of a type the GEMM epilogue computes (``kernels.epilogue.FUSABLE_ACTIVATIONS``:
  relu with its leak, relu6, clamp) after a Convolution or FullyConnected becomes that layer's
  epilogue: the kernel applies it while writing its output.

Either merge happens only where the tensor between the two layers is read by that one layer alone
and is not a network output, so no other reader misses the unfused value. The merged layer keeps
the producer's name and takes over the consumer's output tensor; the intermediate tensor is never
planned. ``FusedGraph.fused_into`` records each absorbed layer, which performance counts report
as OPTIMIZED_OUT (as OpenVINO does).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..kernels.activation import ACTIVATION_CODES
from ..kernels.batch_normalization import folded_affine
from ..kernels.epilogue import FUSABLE_ACTIVATIONS
from .network import Layer, Network


@dataclass(frozen=True)
class FusedGraph:
    """The layers left to run, in order; ``fused_into``: {absorbed layer name: the layer running it}."""

    layers: tuple[Layer, ...]
    inputs: dict
    outputs: tuple[str, ...]
    fused_into: dict[str, str]


def fuse(network: Network) -> FusedGraph:
    """Merge every BatchNormalization, residual Eltwise sum and fusable Activation into its producer
    where allowed (see the module docstring)."""
    readers = Counter(name for layer in network.layers for name in layer.inputs)
    network_outputs = set(network.outputs)
    shapes = dict(network.inputs)
    kept: list[Layer | None] = []  # None: a layer moved later by a residual merge
    producer_of: dict[str, int] = {}  # tensor name -> index in ``kept`` of the layer writing it
    fused_into: dict[str, str] = {}

    def mergeable(tensor):
        """The index in ``kept`` of the producer of ``tensor`` if nothing else can see it."""
        if readers[tensor] == 1 and tensor not in network_outputs:
            return producer_of.get(tensor)
        return None

    for layer in network.layers:
        shapes.update(zip(layer.outputs, layer.output_shapes))
        merged = None
        if len(layer.inputs) == 1 and (index := mergeable(layer.inputs[0])) is not None:
            merged = _merge(kept[index], layer)
            if merged is not None:
                kept[index] = merged
        elif _is_residual_sum(layer, shapes):
            for tensor, other in (layer.inputs, layer.inputs[::-1]):
                index = mergeable(tensor)
                if index is not None and (merged := _merge_residual(kept[index], layer, other)) is not None:
                    kept[index] = None  # runs at the Eltwise's place instead, once `other` exists
                    kept.append(merged)
                    index = len(kept) - 1
                    break
        if merged is not None:
            producer_of[layer.outputs[0]] = index
            fused_into[layer.name] = merged.name
            continue
        kept.append(layer)
        for name in layer.outputs:
            producer_of[name] = len(kept) - 1
    layers = tuple(layer for layer in kept if layer is not None)
    return FusedGraph(layers, dict(network.inputs), tuple(network.outputs), fused_into)


def _is_residual_sum(layer: Layer, shapes: dict) -> bool:
    """An Eltwise a + b with equal shapes and two distinct tensors."""
    attrs = layer.normalized
    return (layer.type == "Eltwise" and attrs is not None and len(layer.inputs) == 2
            and layer.inputs[0] != layer.inputs[1] and attrs["operation"] == "sum"
            and tuple(attrs["coeff"]) == (1.0, 1.0)
            and shapes[layer.inputs[0]] == shapes[layer.inputs[1]] == layer.output_shapes[0])


def _merge_residual(producer: Layer, eltwise: Layer, residual: str) -> Layer | None:
    """``producer`` (a Convolution without epilogue) adding ``residual`` to its output, or None."""
    if (producer.type != "Convolution" or producer.normalized is None or len(producer.inputs) != 1
            or "activation" in producer.normalized):
        return None
    return dataclasses.replace(producer, inputs=producer.inputs + (residual,), outputs=eltwise.outputs,
                               output_shapes=eltwise.output_shapes)


def _merge(producer: Layer, consumer: Layer) -> Layer | None:
    """``producer`` computing ``consumer`` too, or None where they cannot merge."""
    attrs = producer.normalized
    if attrs is None or consumer.normalized is None or "activation" in attrs:
        return None  # nothing merges after an epilogue activation: it would change the order
    if producer.type == "Convolution" and consumer.type == "BatchNormalization" and len(producer.inputs) == 1:
        # (after a residual merge the scale would apply to the residual too: not foldable)
        scale, shift = (v.astype(np.float64) for v in folded_affine(consumer.normalized))
        weights = np.asarray(attrs["weights"], np.float64) * scale[:, None, None, None]
        biases = np.asarray(attrs["biases"], np.float64) * scale + shift
        attrs = {**attrs, "weights": weights.astype(np.float32), "biases": biases.astype(np.float32)}
    elif (producer.type in ("Convolution", "FullyConnected") and consumer.type == "Activation"
          and ACTIVATION_CODES[consumer.normalized["type"]] in FUSABLE_ACTIVATIONS):
        attrs = {**attrs, "activation": dict(consumer.normalized)}
    else:
        return None
    return dataclasses.replace(producer, outputs=consumer.outputs, output_shapes=consumer.output_shapes,
                               normalized=attrs)
