"""dynbatch: run convolutional networks at any batch n <= a maximum, on buffers planned once and
kernels compiled once (OpenVINO's Dynamic Batching on hand-written Numba kernels).

    net = dynbatch.Network("tiny"); x = net.add_input("data", (16, 3, 32, 32)); ...
    exe = dynbatch.Core().load_network(net, "CPU", {dynbatch.KEY_DYN_BATCH_ENABLED: dynbatch.YES})
    req = exe.create_infer_request(); req.set_batch(5); out = req.infer({"data": x5})
"""
from . import config  # noqa: F401  (selects Numba's thread-safe threading layer before any kernel runs)
from .errors import (
    BatchSizeError,
    ConfigError,
    DynBatchError,
    InputError,
    NetworkDefinitionError,
    RequestBusyError,
    UnsupportedTopologyError,
)
from .graph.layers import SUPPORTED_LAYERS
from .graph.network import Network
from .graph.topology import analyse
from .onnx_import import OnnxImportError, read_network
from .runtime import KEY_DYN_BATCH_ENABLED, NO, YES, Core, ExecutableNetwork, InferRequest
from .serving import AsyncInferQueue, BatcherClosedError, BatcherStatistics, DynamicBatcher

SUPPORTED_LAYER_TYPES = tuple(SUPPORTED_LAYERS)

__all__ = [
    "Network", "Core", "ExecutableNetwork", "InferRequest", "KEY_DYN_BATCH_ENABLED", "YES", "NO",
    "DynBatchError", "UnsupportedTopologyError", "BatchSizeError", "InputError", "ConfigError",
    "NetworkDefinitionError", "RequestBusyError", "SUPPORTED_LAYER_TYPES", "analyse",
    "read_network", "OnnxImportError",
    "AsyncInferQueue", "DynamicBatcher", "BatcherStatistics", "BatcherClosedError",
]
__version__ = "0.1.0"
