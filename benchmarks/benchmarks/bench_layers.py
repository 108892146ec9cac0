"""Per-layer benchmarks: one layer's CPU kernel on shapes from the benchmark networks, over the
runtime batch n, with buffers allocated for a maximum batch of 16 (what a loaded network binds).

Each case is a one-layer network, compiled and bound as ``load_network`` and ``InferRequest`` do
(``dynbatch.graph.compiler``), so the kernel, its algorithm and its arguments are the runtime's;
only the kernel call is timed, without the input copy of ``infer``.
"""
import numpy as np

import dynbatch as db
from dynbatch.graph.compiler import compile_network

MAX_BATCH = 16
BATCHES = [1, 4, 16]


def _weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[1:]))


def _case(name):
    """(input shape without the batch, layer type, attributes) of a named case."""
    rng = np.random.default_rng(0)
    cases = {
        "conv3x3_64x28": ((64, 28, 28), "Convolution", dict(weights=_weights(rng, 64, 64, 3, 3), biases=np.zeros(64),
                                                             pads_begin=1, pads_end=1)),
        "conv1x1_256to64x28": ((256, 28, 28), "Convolution", dict(weights=_weights(rng, 64, 256, 1, 1),
                                                                  biases=np.zeros(64))),
        "conv3x3_96to208x7": ((96, 7, 7), "Convolution", dict(weights=_weights(rng, 208, 96, 3, 3), biases=np.zeros(208),
                                                              pads_begin=1, pads_end=1)),
        # AlexNet's 6x6 layer: 9 tiles a sample, the tiles as the rows of Winograd's products
        "conv3x3_192to384x6": ((192, 6, 6), "Convolution", dict(weights=_weights(rng, 384, 192, 3, 3),
                                                               biases=np.zeros(384), pads_begin=1, pads_end=1)),
        "conv7x7s2_stem": ((3, 112, 112), "Convolution", dict(weights=_weights(rng, 64, 3, 7, 7), biases=np.zeros(64),
                                                              strides=2, pads_begin=3, pads_end=3)),
        "deconv8x8s4_21x16": ((21, 16, 16), "Deconvolution", dict(weights=_weights(rng, 21, 21, 8, 8), biases=np.zeros(21),
                                                                  strides=4, pads_begin=2, pads_end=2)),
        "maxpool3x3s2_64x56": ((64, 56, 56), "Pooling", dict(pool_method="max", kernel=3, strides=2)),
        "global_avgpool_512x7": ((512, 7, 7), "Pooling", dict(pool_method="avg", global_pool=True)),
        "lrn5_192x28": ((192, 28, 28), "LRN", dict(local_size=5, alpha=1e-4, beta=0.75)),
        "fc_2304to1024": ((256, 3, 3), "FullyConnected", dict(weights=_weights(rng, 1024, 2304), biases=np.zeros(1024))),
        "relu_64x56": ((64, 56, 56), "Activation", dict(type="relu")),
        "batchnorm_64x56": ((64, 56, 56), "BatchNormalization", dict(mean=np.zeros(64), variance=np.ones(64),
                                                                     gamma=np.ones(64), beta=np.zeros(64))),
        "softmax_1000": ((1000,), "SoftMax", {}),
    }
    return cases[name]


CASES = ["conv3x3_64x28", "conv1x1_256to64x28", "conv3x3_96to208x7", "conv3x3_192to384x6", "conv7x7s2_stem",
         "deconv8x8s4_21x16", "maxpool3x3s2_64x56", "global_avgpool_512x7", "lrn5_192x28", "fc_2304to1024",
         "relu_64x56", "batchnorm_64x56", "softmax_1000"]


class Layer:
    """One kernel call of n rows; the bound kernel's name is the layer's algorithm."""

    params = (CASES, BATCHES)
    param_names = ["layer", "batch"]

    def setup(self, layer, batch):
        shape, layer_type, attrs = _case(layer)
        net = db.Network(layer)
        x = net.add_input("data", (MAX_BATCH,) + shape)
        net.add_output(net.add_layer(layer_type, [x], name=layer, **attrs))
        compiled = compile_network(net)
        buffers = compiled.plan.allocate()
        buffers["data"][:] = np.random.default_rng(1).standard_normal(buffers["data"].shape)
        (self.step,) = compiled.bind(buffers)
        self.step.kernel(batch, *self.step.args)  # compile, or load from Numba's cache
        self.call = self.step.compiled_call()  # what InferRequest calls: past Numba's dispatcher

    def time_kernel(self, layer, batch):
        self.call(batch, *self.step.args)
