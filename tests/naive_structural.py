"""Obviously-correct references for FullyConnected, SoftMax, Split, Concatenation and Crop.

Each takes exactly the n real rows of each input and the normalized attrs, computes in float64
from the layer's definition, and returns the list of outputs.
"""
import numpy as np


def fully_connected(inputs, attrs):
    """y = x_flat @ weights.T + biases, x_flat the samples flattened to rows."""
    x = inputs[0].astype(np.float64)
    rows = x.reshape(x.shape[0], -1)
    weights = attrs["weights"].astype(np.float64)
    biases = attrs["biases"].astype(np.float64)
    out = np.zeros((rows.shape[0], weights.shape[0]))
    for b in range(rows.shape[0]):
        for o in range(weights.shape[0]):
            out[b, o] = biases[o] + np.sum(rows[b] * weights[o])
    return [out]


def softmax(inputs, attrs):
    """exp(x) / sum(exp(x)) along attrs["axis"], shifted by the maximum for stability."""
    x = inputs[0].astype(np.float64)
    axis = attrs["axis"]
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return [shifted / shifted.sum(axis=axis, keepdims=True)]


def split(inputs, attrs):
    """Consecutive pieces of attrs["sizes"] along attrs["axis"]."""
    x = inputs[0].astype(np.float64)
    axis = attrs["axis"]
    pieces = []
    start = 0
    for size in attrs["sizes"]:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(x[tuple(index)].copy())
        start += size
    return pieces


def concatenation(inputs, attrs):
    """The inputs joined along attrs["axis"]."""
    return [np.concatenate([x.astype(np.float64) for x in inputs], axis=attrs["axis"])]


def crop(inputs, attrs):
    """out[b, i1, ...] = x[b, i1 + offsets[1], ...], of non-batch shape attrs["dims"]."""
    x = inputs[0].astype(np.float64)
    offsets = attrs["offsets"]
    dims = attrs["dims"]
    out = np.empty((x.shape[0],) + tuple(dims))
    for index in np.ndindex(*out.shape):
        out[index] = x[tuple(i + offset for i, offset in zip(index, offsets))]
    return [out]


REFERENCES = {
    "FullyConnected": fully_connected,
    "SoftMax": softmax,
    "Split": split,
    "Concatenation": concatenation,
    "Crop": crop,
}
