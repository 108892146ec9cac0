"""The exceptions dynbatch raises. Every one is a ``DynBatchError``; those caused by a bad argument
are also ``ValueError`` so that generic callers can catch them as such."""


class DynBatchError(Exception):
    """Base class of every dynbatch error."""


class NetworkDefinitionError(DynBatchError, ValueError):
    """A layer, attribute, weight or tensor given to ``Network`` is invalid; the message names the layer."""


class UnsupportedTopologyError(DynBatchError, ValueError):
    """The network cannot run with dynamic batch. ``layers`` lists every offending
    ``(layer name, layer type, reason)``."""

    def __init__(self, message: str, layers: list[tuple[str, str, str]]):
        super().__init__(message)
        self.layers = layers


class BatchSizeError(DynBatchError, ValueError):
    """A batch size outside ``1..max_batch``, or not an integer."""


class InputError(DynBatchError, ValueError):
    """Inference inputs with a missing or unknown name, a wrong shape or an unusable dtype."""


class ConfigError(DynBatchError, ValueError):
    """An unknown device, an unknown configuration key or a bad value for one."""


class RequestBusyError(DynBatchError, RuntimeError):
    """One infer request used from two threads at once, or read while it runs asynchronously."""


class OnnxImportError(DynBatchError, ValueError):
    """``read_network`` got something that is not a readable ONNX model, or an input whose
    symbolic batch needs ``batch=``; the message is one line."""
