"""Small reference architectures with random weights, for examples and benchmarks (they measure
time and check equivalence; they classify nothing). Each returns a ``Network`` at ``max_batch``."""
import numpy as np

from .graph.network import Network


def _conv(net, x, name, rng, in_channels, out_channels, kernel, **attrs):
    scale = np.sqrt(2.0 / (in_channels * kernel * kernel))
    y = net.add_layer("Convolution", [x], name=name,
                      weights=rng.standard_normal((out_channels, in_channels, kernel, kernel)) * scale,
                      biases=rng.standard_normal(out_channels) * 0.01, **attrs)
    return net.add_layer("Activation", [y], name=f"{name}_relu", type="relu")


def lenet(max_batch: int, seed: int = 0) -> Network:
    """LeNet-style classifier of 3x32x32 crops: conv-relu-pool x2, fully connected, softmax."""
    rng = np.random.default_rng(seed)
    net = Network("lenet")
    x = net.add_input("crops", (max_batch, 3, 32, 32))
    y = _conv(net, x, "conv1", rng, 3, 16, 5, pads_begin=2, pads_end=2)
    y = net.add_layer("Pooling", [y], name="pool1", pool_method="max", kernel=2, strides=2)
    y = _conv(net, y, "conv2", rng, 16, 32, 3, pads_begin=1, pads_end=1)
    y = net.add_layer("Pooling", [y], name="pool2", pool_method="max", kernel=2, strides=2)
    y = net.add_layer("FullyConnected", [y], name="fc", weights=rng.standard_normal((10, 32 * 8 * 8)) * 0.02,
                      biases=np.zeros(10))
    net.add_output(net.add_layer("SoftMax", [y], name="prob"))
    return net


def inception(max_batch: int, size: int = 28, seed: int = 0) -> Network:
    """GoogLeNet-style stem (conv, pool, LRN) and one inception block (1x1, 3x3, 5x5 and pool
    branches joined by Concatenation), global average pooling and a classifier."""
    rng = np.random.default_rng(seed)
    net = Network("inception")
    x = net.add_input("data", (max_batch, 3, size, size))
    stem = _conv(net, x, "stem", rng, 3, 32, 3, pads_begin=1, pads_end=1)
    stem = net.add_layer("Pooling", [stem], name="stem_pool", pool_method="max", kernel=3, strides=2,
                         rounding_type="ceil")
    stem = net.add_layer("LRN", [stem], name="stem_lrn", local_size=5, alpha=1e-4, beta=0.75)
    b1 = _conv(net, stem, "b1_1x1", rng, 32, 16, 1)
    b2 = _conv(net, stem, "b2_reduce", rng, 32, 16, 1)
    b2 = _conv(net, b2, "b2_3x3", rng, 16, 24, 3, pads_begin=1, pads_end=1)
    b3 = _conv(net, stem, "b3_reduce", rng, 32, 4, 1)
    b3 = _conv(net, b3, "b3_5x5", rng, 4, 8, 5, pads_begin=2, pads_end=2)
    b4 = net.add_layer("Pooling", [stem], name="b4_pool", pool_method="max", kernel=3, strides=1, pads_begin=1, pads_end=1)
    b4 = _conv(net, b4, "b4_proj", rng, 32, 8, 1)
    y = net.add_layer("Concatenation", [b1, b2, b3, b4], name="inception_concat", axis=1)
    y = net.add_layer("Pooling", [y], name="gap", pool_method="avg", global_pool=True)
    y = net.add_layer("FullyConnected", [y], name="fc", weights=rng.standard_normal((10, 56)) * 0.1, biases=np.zeros(10))
    net.add_output(net.add_layer("SoftMax", [y], name="prob"))
    return net
