"""Hand-written Numba kernels, one file per layer type (see copy.py for the contract).

``KERNELS`` maps each supported layer type to its module; the compiler calls the module's
``cpu_step(attrs, inputs, outputs)`` (device "CPU") or ``gpu_step(attrs, inputs, outputs)``
(device "GPU", see launch.py) to bind a layer to its max-batch buffers. A module whose CPU kernel
needs scratch (the BLAS GEMM algorithm of deconvolution) also has
``scratch_elements(attrs, input_shapes, output_shapes)``; the compiler sizes one buffer for the
largest such need and passes it as ``cpu_step(..., scratch=...)``.
"""
from . import (
    activation,
    batch_normalization,
    concatenation,
    convolution,
    copy,
    crop,
    deconvolution,
    eltwise,
    fully_connected,
    lrn,
    pooling,
    power,
    softmax,
    split,
)

KERNELS = {
    "Convolution": convolution,
    "Deconvolution": deconvolution,
    "Activation": activation,
    "LRN": lrn,
    "Pooling": pooling,
    "FullyConnected": fully_connected,
    "SoftMax": softmax,
    "Split": split,
    "Concatenation": concatenation,
    "Power": power,
    "Eltwise": eltwise,
    "Crop": crop,
    "BatchNormalization": batch_normalization,
    "Copy": copy,
}
