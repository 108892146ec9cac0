"""Run a ``dynbatch.Network`` layer by layer on the naive references, on exactly the samples given.

This is the oracle of the whole-network tests: it shares nothing with the runtime but the network's
normalized attributes (shape inference is tested on its own in test_layers.py).
"""
import numpy as np

from .naive import REFERENCES


def run_reference(network, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """inputs: {input name: array of n rows}; returns {output name: array of n rows} (float64)."""
    values = {name: np.asarray(array, dtype=np.float64) for name, array in inputs.items()}
    for layer in network.layers:
        results = REFERENCES[layer.type]([values[name] for name in layer.inputs], layer.normalized)
        values.update(zip(layer.outputs, results))
    return {name: values[name] for name in network.outputs}
