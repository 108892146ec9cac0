"""ONNX import: ``read_network(model, batch=None) -> Network``.

The graph is read node by node, in its (topological) order:

1. *constant folding*: a node whose inputs are all constants (initializers, ``Constant`` nodes,
   earlier folds) is evaluated now with ONNX's reference evaluator; ``Shape`` and ``Size`` of a
   tensor fold too, since every tensor here has a static shape (dim 0 = the maximum batch);
2. *conversion*: every other node goes to its converter in ``CONVERTERS`` (ONNX op type ->
   function), which adds at most one dynbatch layer, folds a per-channel affine into the layer
   before it, or maps the node's outputs onto tensors that already exist (Identity, Dropout, and
   reshapes that keep every sample's data in its own row, such as a flatten before Gemm);
3. *rejection*: a node no layer can run faithfully is recorded with the reason and the import
   goes on, so that one ``UnsupportedTopologyError`` names every offending node. Nodes fed by a
   rejected node are skipped, unless their op type is unsupported anyway.

Layers are collected first and added to the ``Network`` at the end, so that a per-channel Mul/Add
can still be folded into the Convolution, FullyConnected or BatchNormalization before it, and so
that the layer producing a graph output can take the output's name.

A reshape (Reshape, Flatten, Squeeze, Unsqueeze, or a Transpose that only moves axes of size 1)
that keeps dim 0 and each sample's data order becomes a *view*: the ONNX tensor keeps its ONNX
shape, and its data stays in the producer's dynbatch tensor. Gemm/MatMul (FullyConnected flattens
each sample anyway), Softmax over trailing axes and elementwise ops read a view directly; any other
reader needs the reshaped layout, which dynbatch has no layer for, so the reshape node is rejected.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import BatchSizeError, NetworkDefinitionError, OnnxImportError, UnsupportedTopologyError
from .graph.layers import Shape, infer_layer
from .graph.network import Network

ONNX_DOMAINS = ("", "ai.onnx")
OLDEST_OPSET = 6
FLOAT_TYPES = {1: "float", 10: "float16", 11: "double", 16: "bfloat16"}  # TensorProto element types
FLOAT_LOWEST = float(np.finfo(np.float32).min)  # Clip's default bounds before opset 11
FLOAT_MAX = float(np.finfo(np.float32).max)


class _Reject(Exception):
    """Raised by a converter: the node cannot be imported; the message is the reason."""


@dataclass(frozen=True)
class _Value:
    """What one ONNX tensor is in the network being built.

    ``tensor`` is the dynbatch tensor holding its data; ``shape`` is the ONNX shape at the maximum
    batch. They differ only for a view, made by the reshape node ``reshaped_by`` (its index)."""

    tensor: str
    shape: Shape
    reshaped_by: int | None = None


class _BlameReshape(Exception):
    """A node needs the layout a reshape would have produced: the reshape node is rejected."""

    def __init__(self, value: _Value, reader: _Node):
        super().__init__(value.reshaped_by)
        self.value = value
        self.reader = reader


@dataclass
class _PendingLayer:
    """A dynbatch layer waiting to be added to the Network (its attrs may still be folded into)."""

    name: str
    type: str
    inputs: list[str]
    attrs: dict
    outputs: list[str]


def read_network(model, batch: int | None = None, name: str | None = None) -> Network:
    """Read an ONNX model (a path, the serialized bytes, or an ``onnx.ModelProto``) as a Network.

    ``batch`` replaces dim 0 of every network input (symbolic like "N" or fixed like 1) and becomes
    the maximum batch; left out, a fixed dim 0 is kept and a symbolic one raises
    ``OnnxImportError``. Network inputs are the graph inputs that are not initializers (and that
    some node reads); output names are the ONNX output names.

    Raises ``UnsupportedTopologyError`` whose ``layers`` lists every offending
    ``(node name, op type, reason)``, or ``OnnxImportError`` for a file that is not an ONNX model.
    """
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise BatchSizeError(f"read_network: batch must be a positive int, got {batch!r}")
    proto, source = _load(model)
    return _Importer(proto, source, None if batch is None else int(batch), name).run()


def _load(model):
    """(ModelProto, a description of where it came from for messages)."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError as error:  # onnx is an optional extra
        raise ImportError("read_network needs the onnx package: pip install 'dynbatch[onnx]'") from error
    if isinstance(model, onnx.ModelProto):
        proto, source = model, "the ModelProto given"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto, source = onnx.ModelProto(), "the bytes given"
        try:
            proto.ParseFromString(bytes(model))
        except (DecodeError, ValueError) as error:
            raise OnnxImportError(f"{source} are not an ONNX model: {error}") from None
    elif isinstance(model, (str, os.PathLike)):
        source = f"file '{os.fspath(model)}'"
        if not os.path.isfile(model):
            raise FileNotFoundError(f"read_network: no such file: '{os.fspath(model)}'")
        try:  # onnx.load also reads weights stored as external data next to the file
            proto = onnx.load(os.fspath(model))
        except (DecodeError, ValueError, UnicodeDecodeError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise OnnxImportError(f"{source} is not an ONNX model: {first_line}") from None
    else:
        raise TypeError(f"read_network expects a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    if not proto.HasField("graph") or not proto.graph.output:
        raise OnnxImportError(f"{source} is not an ONNX model: it has no graph with outputs")
    return proto, source


# ----------------------------------------------------------------------------------------------
# The importer: walks the graph, folds constants, calls the converters, then builds the Network.


class _Importer:
    def __init__(self, proto, source: str, batch: int | None, name: str | None):
        from onnx import numpy_helper

        self.source = source
        self.graph = graph = proto.graph
        self.name = name or graph.name or "onnx_model"
        versions = [o.version for o in proto.opset_import if o.domain in ONNX_DOMAINS]
        if not versions:
            imports = [(o.domain, o.version) for o in proto.opset_import]
            raise OnnxImportError(f"{source} is not an ONNX model: it imports no ONNX opset (opset_import is {imports})")
        self.opset = versions[0]
        if self.opset < OLDEST_OPSET:
            raise OnnxImportError(f"{source} uses ONNX opset {self.opset}; read_network reads opset {OLDEST_OPSET} and later")
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.values: dict[str, _Value] = {}
        self.shapes: dict[str, Shape] = {}  # dynbatch tensor -> shape at the maximum batch
        self.layers: list[_PendingLayer] = []
        self.producer: dict[str, _PendingLayer] = {}  # dynbatch tensor -> the layer writing it
        self.aliases: Counter[str] = Counter()  # dynbatch tensor -> how many ONNX names read it
        self.poisoned: set[str] = set()  # ONNX tensors downstream of a rejected node
        self.rejected: dict[tuple[int, int], tuple[str, str, str]] = {}  # sorted: inputs, nodes, outputs
        self.output_names = list(dict.fromkeys(o.name for o in graph.output))
        self.nodes = _live_nodes(graph, self.output_names)
        self.consumers: Counter[str] = Counter(i for node in self.nodes for i in node.input if i)
        self.consumers.update(self.output_names)
        # Layer names become tensor names: they must not take an input's name, nor an output's
        # (the layer producing an output is renamed to it at the end).
        self.reserved_names = {v.name for v in graph.input} | set(self.output_names)
        self.layer_names: set[str] = set()
        self.batch = batch
        self.traced_batches: set[int] = set()  # fixed dims 0 of the model's inputs (hard-coded by exporters)
        self.input_shapes: dict[str, Shape] = {}

    # -- inputs ----------------------------------------------------------------------------------
    def read_inputs(self):
        """Network inputs: graph inputs that are not initializers and that a live node reads."""
        read = set(self.consumers)
        declared = [v for v in self.graph.input if v.name not in self.consts and v.name in read]
        dims0 = []
        for info in declared:
            dims = info.type.tensor_type.shape.dim if info.type.HasField("tensor_type") else []
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                self.traced_batches.add(dims[0].dim_value)
        for index, info in enumerate(declared):
            try:
                shape = self._input_shape(info)
            except _Reject as reason:
                self.reject_input(index, info.name, f"input '{info.name}' {reason}")
                continue
            dims0.append((info.name, shape[0]))
            if shape[0] != dims0[0][1]:
                first, batch = dims0[0]
                self.reject_input(index, info.name, f"input '{info.name}': dim 0 is {shape[0]} but input '{first}' has "
                                  f"{batch}; all inputs share the batch (pass batch= to set it)")
                continue
            self.input_shapes[info.name] = shape
            self.shapes[info.name] = shape
            self.set_value(info.name, _Value(info.name, shape))
        if self.batch is None:
            self.batch = dims0[0][1] if dims0 else 1

    def _input_shape(self, info) -> Shape:
        if not info.type.HasField("tensor_type"):
            raise _Reject("is not a tensor")
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type not in FLOAT_TYPES:
            raise _Reject(f"has element type {tensor_type.elem_type} (TensorProto enum); dynbatch runs float tensors "
                          f"({', '.join(FLOAT_TYPES.values())})")
        if not tensor_type.HasField("shape"):
            raise _Reject("has no shape; dynbatch needs the rank and every dim but the batch")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
        if not 2 <= len(dims) <= 4:
            raise _Reject(f"has shape {dims} (rank {len(dims)}); dynbatch tensors have rank 2 to 4, the batch first")
        if self.batch is None and not (isinstance(dims[0], int) and dims[0] > 0):
            raise OnnxImportError(f"input '{info.name}' has a symbolic batch dim {dims[0]!r} (shape {dims}); "
                                  f"pass batch= to read_network to set the maximum batch")
        rest = dims[1:]
        if any(not isinstance(d, int) or d < 1 for d in rest):
            raise _Reject(f"has shape {dims}; every dim but dim 0 (the batch) must be a fixed positive size")
        return (self.batch if self.batch is not None else dims[0], *rest)

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Network:
        self.read_inputs()
        for index, proto in enumerate(self.nodes):
            self.visit(index, proto)
        self.check_outputs()
        if self.rejected:
            entries = [self.rejected[key] for key in sorted(self.rejected)]
            lines = "\n".join(f"  - {name} ({op}): {reason}" for name, op, reason in entries)
            raise UnsupportedTopologyError(
                f"ONNX model '{self.name}' ({self.source}, opset {self.opset}) cannot run on dynbatch: "
                f"{len(entries)} node(s) rejected\n{lines}\nSupported ONNX ops: {', '.join(sorted(CONVERTERS))}.",
                entries,
            )
        return self.build()

    def visit(self, index: int, proto):
        node_name = _node_name(proto)
        inputs = [i for i in proto.input if i]
        if proto.domain not in ONNX_DOMAINS:
            self.reject(index, node_name, proto.op_type, f"op of the custom domain '{proto.domain}'; dynbatch reads "
                        f"the standard ONNX domain only", proto)
            return
        unknown = [i for i in inputs if i not in self.consts and i not in self.values and i not in self.poisoned]
        if unknown:
            raise OnnxImportError(f"{self.source}: node '{node_name}' ({proto.op_type}) reads {unknown}, which no input, "
                                  f"initializer or earlier node produces (the graph is malformed or not sorted)")
        if any(i in self.poisoned for i in inputs):
            if proto.op_type not in CONVERTERS and proto.op_type not in FOLDED_FROM_SHAPES:
                self.reject(index, node_name, proto.op_type, _unsupported_reason(proto.op_type, self.opset), proto)
            self.poison(proto)
            return
        has_subgraph = any(a.type in (5, 10) for a in proto.attribute)  # GRAPH, GRAPHS: control flow
        try:
            if all(i in self.consts for i in inputs) and not has_subgraph:
                self.fold(proto)
            elif proto.op_type in FOLDED_FROM_SHAPES:
                FOLDED_FROM_SHAPES[proto.op_type](_Node(self, index, proto))
            elif proto.op_type in CONVERTERS:
                node = _Node(self, index, proto)
                CONVERTERS[proto.op_type](node)
                node.check_outputs_set()
            else:
                raise _Reject(_unsupported_reason(proto.op_type, self.opset))
        except _Reject as reason:
            self.reject(index, node_name, proto.op_type, str(reason), proto)
        except NetworkDefinitionError as error:  # a layer refused the attributes the node maps to
            self.reject(index, node_name, proto.op_type, str(error), proto)
        except _BlameReshape as blame:
            self.blame_reshape(blame.value, f"{blame.reader.op} '{blame.reader.name}' reads in that layout")
            self.poison(proto)

    def blame_reshape(self, value: _Value, why: str):
        """Reject the node that made the view ``value``: something needs its layout."""
        reshape = self.nodes[value.reshaped_by]
        self.reject(value.reshaped_by, _node_name(reshape), reshape.op_type,
                    f"reshapes to {value.shape} (dynbatch tensor {self.shapes[value.tensor]}), which {why}; dynbatch "
                    f"has no reshape layer, so a reshape is absorbed only before Gemm/MatMul, Softmax over trailing "
                    f"axes and elementwise ops", reshape)

    def fold(self, proto):
        """Evaluate a node whose inputs are all constants."""
        from onnx import NodeProto
        from onnx.reference import ReferenceEvaluator

        if proto.domain:  # "ai.onnx": the standard domain, spelled out
            proto, original = NodeProto(), proto
            proto.CopyFrom(original)
            proto.domain = ""
        try:
            evaluator = ReferenceEvaluator(proto, opsets={"": self.opset})
            results = evaluator.run(None, {i: self.consts[i] for i in proto.input if i})
        except Exception as error:  # the reference evaluator raises many types
            raise _Reject(f"all its inputs are constant, but evaluating it at import failed: "
                          f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
        for output, result in zip(proto.output, results):
            if output:
                self.consts[output] = np.asarray(result)

    def reject(self, index: int, name: str, op_type: str, reason: str, proto):
        self.rejected.setdefault((1, index), (name, op_type, reason))
        if proto is not None:
            self.poison(proto)

    def reject_input(self, index: int, name: str, reason: str):
        self.rejected[(0, index)] = (name, "Input", reason)
        self.poisoned.add(name)

    def poison(self, proto):
        self.poisoned.update(o for o in proto.output if o)

    def set_value(self, onnx_name: str, value: _Value):
        self.values[onnx_name] = value
        self.aliases[value.tensor] += 1

    def check_outputs(self):
        for index, output in enumerate(self.output_names):
            key = (2, index)
            if output in self.poisoned:
                continue
            if output in self.consts:
                self.rejected[key] = (output, "Output", f"graph output '{output}' is a constant (shape {self.consts[output].shape}) "
                                      f"computed at import; dynbatch outputs are computed from the inputs")
            elif output not in self.values:
                raise OnnxImportError(f"{self.source}: graph output '{output}' is produced by no node or input")
            elif self.values[output].reshaped_by is not None:
                self.blame_reshape(self.values[output], f"graph output '{output}' has")

    # -- layers ----------------------------------------------------------------------------------
    def add_layer(self, base_name: str, layer_type: str, inputs: list[str], attrs: dict) -> list[str]:
        """Validate one layer (shape inference raises NetworkDefinitionError) and queue it."""
        _, output_shapes = infer_layer(layer_type, base_name, [self.shapes[t] for t in inputs], attrs)
        name = self._unique_name(base_name, len(output_shapes) if layer_type == "Split" else 0)
        outputs = [name] if layer_type != "Split" else [f"{name}.{i}" for i in range(len(output_shapes))]
        layer = _PendingLayer(name, layer_type, list(inputs), dict(attrs), outputs)
        self.layers.append(layer)
        self.layer_names.add(name)
        for output, shape in zip(outputs, output_shapes):
            self.shapes[output] = tuple(shape)
            self.producer[output] = layer
        return outputs

    def _unique_name(self, base: str, split_outputs: int) -> str:
        """``base`` (the node name), or ``base_2``, ``base_3``... when that tensor name is taken
        (Split also names its outputs ``<name>.0``, ``<name>.1``...)."""
        def free(name: str) -> bool:
            names = [name] + [f"{name}.{i}" for i in range(split_outputs)]
            return not any(n in self.reserved_names or n in self.shapes or n in self.layer_names for n in names)

        name, counter = base, 1
        while not free(name):
            counter += 1
            name = f"{base}_{counter}"
        return name

    def build(self) -> Network:
        """Add the queued layers; the layer producing a graph output takes the output's name
        (a Copy named after the output where it cannot: an input, a Split output, a shared tensor)."""
        rename: dict[str, str] = {}
        copies: list[tuple[str, str]] = []
        for output in self.output_names:
            tensor = self.values[output].tensor
            layer = self.producer.get(tensor)
            if tensor == output:
                continue
            if layer is not None and layer.type != "Split" and tensor not in rename:
                rename[tensor] = output
            else:
                copies.append((output, rename.get(tensor, tensor)))
        network = Network(self.name)
        for name, shape in self.input_shapes.items():
            network.add_input(name, shape)
        for layer in self.layers:
            inputs = [rename.get(t, t) for t in layer.inputs]
            network.add_layer(layer.type, inputs, name=rename.get(layer.name, layer.name), **layer.attrs)
        for output, tensor in copies:
            network.add_layer("Copy", [tensor], name=output)
        for output in self.output_names:
            network.add_output(output)
        return network


def _node_name(proto) -> str:
    """How errors name a node: its name, else its first output's."""
    return proto.name or (proto.output[0] if proto.output else proto.op_type)


def _live_nodes(graph, outputs: list[str]) -> list:
    """The nodes some graph output depends on, in graph order (exporters leave dead Shape chains)."""
    needed = set(outputs)
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]


# ----------------------------------------------------------------------------------------------
# The converters' view of one node.


class _Node:
    """One ONNX node being converted: its attributes, its inputs as constants or values, and the
    calls that queue a layer or map its outputs. Errors raised here name the node."""

    def __init__(self, importer: _Importer, index: int, proto):
        from onnx import helper

        self.importer = importer
        self.index = index
        self.proto = proto
        self.op = proto.op_type
        self.name = _node_name(proto)
        self.opset = importer.opset
        self.inputs = list(proto.input)
        self.attrs = {a.name: _decode(helper.get_attribute_value(a)) for a in proto.attribute}

    # -- attributes and inputs --------------------------------------------------------------------
    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def ints(self, key: str, count: int, default: int) -> tuple[int, ...]:
        """An attribute holding one int per spatial axis (``count`` of them)."""
        value = self.attrs.get(key)
        if value is None:
            return (default,) * count
        if len(value) != count:
            raise _Reject(f"{key} {list(value)} has {len(value)} values; dynbatch runs 2-d (H, W) windows, so {count} "
                          f"are expected")
        return tuple(int(v) for v in value)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] != ""

    def is_const(self, i: int) -> bool:
        return self.has_input(i) and self.inputs[i] in self.importer.consts

    def const(self, i: int, what: str) -> np.ndarray:
        if not self.has_input(i):
            raise _Reject(f"input {i} ({what}) is missing")
        if not self.is_const(i):
            raise _Reject(f"{what} (input '{self.inputs[i]}') must be a constant (an initializer or computed from "
                          f"constants); dynbatch layers take fixed weights and attributes")
        return self.importer.consts[self.inputs[i]]

    def optional_const(self, i: int, what: str) -> np.ndarray | None:
        return self.const(i, what) if self.has_input(i) else None

    def value(self, i: int) -> _Value:
        """Input ``i`` as a tensor computed from the network inputs; reshape views allowed."""
        if self.is_const(i):
            raise _Reject(f"input {i} ('{self.inputs[i]}') is a constant of shape {self.importer.consts[self.inputs[i]].shape}; "
                          f"dynbatch layers read tensors computed from the network inputs there")
        return self.importer.values[self.inputs[i]]

    def tensor(self, i: int) -> _Value:
        """Input ``i`` in its own layout: a reshape view here gets the reshape node rejected."""
        value = self.value(i)
        if value.reshaped_by is not None:
            raise _BlameReshape(value, self)
        return value

    # -- outputs ----------------------------------------------------------------------------------
    def add(self, layer_type: str, inputs: list[str], **attrs) -> list[str]:
        """Queue one layer named after this node; returns its output tensors."""
        attrs = {key: value for key, value in attrs.items() if value is not None}
        return self.importer.add_layer(self.name, layer_type, inputs, attrs)

    def new_tensor(self, layer_type: str, inputs: list[str], **attrs):
        """Output 0 = the output of a new layer, in its own layout."""
        tensor = self.add(layer_type, inputs, **attrs)[0]
        self.set_output(0, _Value(tensor, self.importer.shapes[tensor]))

    def set_output(self, i: int, value: _Value):
        self.importer.set_value(self.proto.output[i], value)

    def elementwise(self, value: _Value, layer_type: str, **attrs):
        """Output 0 = a shape-keeping layer applied to ``value`` (a view stays a view)."""
        tensor = self.add(layer_type, [value.tensor], **attrs)[0]
        self.set_output(0, _Value(tensor, value.shape, value.reshaped_by))

    def check_outputs_set(self):
        importer = self.importer
        for i, output in enumerate(self.proto.output):
            if output and output not in importer.values and importer.consumers[output]:
                raise _Reject(f"output {i} ('{output}') is used, but dynbatch has no equivalent for it")


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Converters: one function per ONNX op, each taking a _Node.


def _auto_pad(node: _Node) -> str:
    mode = node.attr("auto_pad", "NOTSET")
    modes = {"NOTSET": "explicit", "SAME_UPPER": "same_upper", "SAME_LOWER": "same_lower", "VALID": "valid"}
    if mode not in modes:
        raise _Reject(f"auto_pad {mode!r} is not one of {list(modes)}")
    return modes[mode]


def _window(node: _Node, kernel: tuple[int, int]) -> dict:
    """strides, pads and auto_pad of a 2-d window op (Conv, ConvTranspose, pooling)."""
    kernel_shape = node.attr("kernel_shape")
    if kernel_shape is not None and tuple(kernel_shape) != tuple(kernel):
        raise _Reject(f"kernel_shape {list(kernel_shape)} differs from the weights' spatial shape {list(kernel)}")
    pads = node.ints("pads", 4, 0)
    return dict(strides=node.ints("strides", 2, 1), pads_begin=pads[:2], pads_end=pads[2:], auto_pad=_auto_pad(node))


def _require_4d(node: _Node, value: _Value, what: str):
    if len(value.shape) != 4:
        raise _Reject(f"input has shape {value.shape}; dynbatch runs 2-d {what} on 4-d (N, C, H, W) tensors only")


def convert_conv(node: _Node):
    x = node.tensor(0)
    _require_4d(node, x, "convolution")
    weights = node.const(1, "weights W")
    if weights.ndim != 4:
        raise _Reject(f"weights W have shape {weights.shape}; 2-d convolution takes (K, C/group, kH, kW)")
    node.new_tensor("Convolution", [x.tensor], weights=weights, biases=node.optional_const(2, "bias B"),
                     group=int(node.attr("group", 1)), dilations=node.ints("dilations", 2, 1),
                     **_window(node, weights.shape[2:]))


def convert_conv_transpose(node: _Node):
    x = node.tensor(0)
    _require_4d(node, x, "transposed convolution")
    weights = node.const(1, "weights W")
    if weights.ndim != 4:
        raise _Reject(f"weights W have shape {weights.shape}; 2-d ConvTranspose takes (C, K/group, kH, kW)")
    window = _window(node, weights.shape[2:])
    strides, dilations = window["strides"], node.ints("dilations", 2, 1)
    output_padding = node.ints("output_padding", 2, 0)
    output_shape = node.attr("output_shape")
    if output_shape is not None:
        # The ONNX spec: the pads follow from the requested size; SAME_UPPER puts the odd one at
        # the end, every other mode at the beginning (onnxruntime does the same).
        target = tuple(int(d) for d in output_shape)[-2:]
        begin, end = [], []
        axes = zip(x.shape[2:], strides, output_padding, weights.shape[2:], dilations, target)
        for size, stride, pad, k, dilation, out in axes:
            total = stride * (size - 1) + pad + ((k - 1) * dilation + 1) - out
            if total < 0:
                raise _Reject(f"output_shape {list(output_shape)} is larger than the full transposed convolution "
                              f"(input {x.shape}, kernel {weights.shape[2:]}, strides {strides}); it would need negative pads")
            small, large = total // 2, total - total // 2
            begin.append(small if window["auto_pad"] == "same_upper" else large)
            end.append(large if window["auto_pad"] == "same_upper" else small)
        window.update(pads_begin=tuple(begin), pads_end=tuple(end), auto_pad="explicit")
    node.new_tensor("Deconvolution", [x.tensor], weights=weights, biases=node.optional_const(2, "bias B"),
                     group=int(node.attr("group", 1)), dilations=dilations, output_padding=output_padding, **window)


def _pool(node: _Node, method: str):
    x = node.tensor(0)
    _require_4d(node, x, "pooling")
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) != 2:
        raise _Reject(f"kernel_shape {kernel} must hold 2 values (kH, kW); dynbatch pools 2-d windows")
    dilations = node.ints("dilations", 2, 1)
    if dilations != (1, 1):
        raise _Reject(f"dilations {list(dilations)}: dynbatch's Pooling has no dilation")
    attrs = dict(pool_method=method, kernel=tuple(kernel), rounding_type="ceil" if node.attr("ceil_mode", 0) else "floor",
                 **_window(node, tuple(kernel)))
    if method == "max":
        if node.attr("storage_order", 0) != 0:
            raise _Reject(f"storage_order {node.attr('storage_order')} (column-major Indices) is not supported")
    else:
        attrs["exclude_pad"] = not node.attr("count_include_pad", 0)
    node.new_tensor("Pooling", [x.tensor], **attrs)


def convert_max_pool(node: _Node):
    _pool(node, "max")


def convert_average_pool(node: _Node):
    _pool(node, "avg")


def _global_pool(node: _Node, method: str):
    x = node.tensor(0)
    _require_4d(node, x, "pooling")
    node.new_tensor("Pooling", [x.tensor], pool_method=method, global_pool=True)


def convert_global_max_pool(node: _Node):
    _global_pool(node, "max")


def convert_global_average_pool(node: _Node):
    _global_pool(node, "avg")


def convert_lrn(node: _Node):
    x = node.tensor(0)
    if node.attr("size") is None:
        raise _Reject("attribute 'size' is required")
    node.elementwise(x, "LRN", local_size=int(node.attr("size")), alpha=float(node.attr("alpha", 1e-4)),
                     beta=float(node.attr("beta", 0.75)), k=float(node.attr("bias", 1.0)), region="across")


def convert_batch_normalization(node: _Node):
    x = node.tensor(0)
    if node.opset < 9 and node.attr("spatial", 1) == 0:
        raise _Reject("spatial=0 (statistics per element, not per channel) is not supported")
    if node.attr("training_mode", 0):
        raise _Reject("training_mode=1 computes the statistics of the batch, which mixes samples")
    scale, bias, mean, variance = (node.const(i, what) for i, what in enumerate(("scale", "B", "input_mean", "input_var"), 1))
    node.elementwise(x, "BatchNormalization", gamma=scale, beta=bias, mean=mean, variance=variance,
                     epsilon=float(node.attr("epsilon", 1e-5)))


# -- activations ---------------------------------------------------------------------------------

#: ONNX activation ops that map onto an Activation type with no parameter.
PLAIN_ACTIVATIONS = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Abs": "abs", "Softplus": "softplus",
    "HardSwish": "hswish",
}


def convert_plain_activation(node: _Node):
    node.elementwise(node.value(0), "Activation", type=PLAIN_ACTIVATIONS[node.op])


def convert_leaky_relu(node: _Node):
    node.elementwise(node.value(0), "Activation", type="relu", negative_slope=float(node.attr("alpha", 0.01)))


def convert_prelu(node: _Node):
    x = node.value(0)
    slope = node.const(1, "slope")
    if slope.size == 0 or np.any(slope.reshape(-1) != slope.reshape(-1)[0]):
        raise _Reject(f"slope of shape {slope.shape} holds several values; dynbatch's Activation relu takes one negative slope")
    _scalar_broadcast(node, slope, x.shape)
    node.elementwise(x, "Activation", type="relu", negative_slope=float(slope.reshape(-1)[0]))


def convert_elu(node: _Node):
    node.elementwise(node.value(0), "Activation", type="elu", alpha=float(node.attr("alpha", 1.0)))


def convert_gelu(node: _Node):
    approximate = node.attr("approximate", "none")
    if approximate != "none":
        raise _Reject(f"approximate={approximate!r}; dynbatch's gelu is the exact erf form (approximate='none')")
    node.elementwise(node.value(0), "Activation", type="gelu")


def convert_clip(node: _Node):
    x = node.value(0)
    if node.opset < 11:
        low, high = float(node.attr("min", FLOAT_LOWEST)), float(node.attr("max", FLOAT_MAX))
    else:
        bounds = [node.optional_const(i, what) for i, what in ((1, "min"), (2, "max"))]
        for bound, what in zip(bounds, ("min", "max")):
            if bound is not None and bound.size != 1:
                raise _Reject(f"{what} has shape {bound.shape}; Clip takes scalar bounds")
        low = -math.inf if bounds[0] is None else float(bounds[0].reshape(-1)[0])
        high = math.inf if bounds[1] is None else float(bounds[1].reshape(-1)[0])
    if low > high:
        raise _Reject(f"min {low} is greater than max {high}")
    if low == 0.0 and high == 6.0:
        node.elementwise(x, "Activation", type="relu6")
    elif low == 0.0 and high >= FLOAT_MAX:  # no upper bound (FLT_MAX: the default before opset 11)
        node.elementwise(x, "Activation", type="relu")
    else:
        node.elementwise(x, "Activation", type="clamp", min=low, max=high)


def convert_power_unary(node: _Node):
    """Neg, Reciprocal, Sqrt: y = (shift + scale * x) ** power."""
    power, scale = {"Neg": (1.0, -1.0), "Reciprocal": (-1.0, 1.0), "Sqrt": (0.5, 1.0)}[node.op]
    node.elementwise(node.value(0), "Power", power=power, scale=scale, shift=0.0)


# -- arithmetic ----------------------------------------------------------------------------------

#: Binary ONNX op -> Eltwise operation between two tensors.
ELTWISE_OPS = {"Add": "sum", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow"}


def _scalar_broadcast(node: _Node, constant: np.ndarray, shape: Shape):
    """Reject a constant whose rank would grow the tensor's when broadcast."""
    if constant.ndim > len(shape):
        raise _Reject(f"the constant of shape {constant.shape} has a higher rank than the tensor {shape}; "
                      f"broadcasting would add axes")


def _channel_vector(constant: np.ndarray, shape: Shape) -> np.ndarray | None:
    """``constant`` as one value per channel (axis 1) of a tensor of ``shape``, or None when it
    varies along another axis or would broadcast the tensor to a larger shape."""
    if constant.ndim > len(shape):
        return None
    full = constant.reshape((1,) * (len(shape) - constant.ndim) + constant.shape)
    if any(d not in (1, s) for d, s in zip(full.shape, shape)):
        return None
    if any(full.shape[axis] != 1 for axis in range(len(shape)) if axis != 1):
        return None
    return np.broadcast_to(full.reshape(-1), (shape[1],)).astype(np.float64)


def convert_arithmetic(node: _Node):
    """Add, Sub, Mul, Div, Pow: between tensors -> Eltwise; with a scalar constant -> Power;
    with a per-channel constant -> folded into the layer before, or BatchNormalization."""
    if len(node.inputs) != 2:
        raise _Reject(f"takes 2 inputs, got {len(node.inputs)}")
    if not node.is_const(0) and not node.is_const(1):
        _eltwise(node, [node.value(0), node.value(1)], ELTWISE_OPS[node.op])
        return
    constant_first = node.is_const(0)
    i = 1 if constant_first else 0
    x = node.value(i)
    constant = np.asarray(node.const(1 - i, "the constant operand"), dtype=np.float64)
    if not constant_first:
        constant = _legacy_broadcast(node, constant, len(x.shape))
    if constant.size == 1:
        _scalar_broadcast(node, constant, x.shape)
        c = float(constant.reshape(-1)[0])
        power = _scalar_power(node, c, constant_first)
        node.elementwise(x, "Power", **dict(zip(("power", "scale", "shift"), power)))
        return
    channels = _channel_vector(constant, x.shape)
    if channels is None:
        raise _Reject(f"{node.op} by a constant of shape {constant.shape} on a tensor of shape {x.shape}: dynbatch folds "
                      f"scalar constants (Power) and per-channel constants (axis 1), not ones that vary along other axes")
    x = node.tensor(i)
    ones, zeros = np.ones_like(channels), np.zeros_like(channels)
    if node.op == "Mul":
        gamma, beta = channels, zeros
    elif node.op == "Add":
        gamma, beta = ones, channels
    elif node.op == "Sub":
        gamma, beta = (-ones, channels) if constant_first else (ones, -channels)
    elif node.op == "Div" and not constant_first:
        if np.any(channels == 0):
            raise _Reject(f"division by a per-channel constant holding zeros ({channels.tolist()})")
        gamma, beta = 1.0 / channels, zeros
    else:  # c / x, and Pow with a per-channel exponent or base
        role = "numerator" if node.op == "Div" else ("base" if constant_first else "exponent")
        raise _Reject(f"{node.op} with a per-channel constant {role} of shape {constant.shape} has no dynbatch layer")
    _channel_affine(node, i, x, gamma, beta)


def _legacy_broadcast(node: _Node, constant: np.ndarray, rank: int) -> np.ndarray:
    """Before opset 7, B broadcasts only with ``broadcast=1``, its dims matched from ``axis`` on
    (by default against the trailing dims): B of shape (C,) at axis 1 is per channel. Returns B
    reshaped to ``rank`` so that the numpy rules used afterwards give the same result."""
    if node.opset >= 7 or not node.attr("broadcast", 0) or constant.ndim in (0, rank):
        return constant
    axis = int(node.attr("axis", rank - constant.ndim))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank - constant.ndim:
        raise _Reject(f"broadcast axis {node.attr('axis')} does not fit B of shape {constant.shape} against rank {rank}")
    return constant.reshape((1,) * axis + constant.shape + (1,) * (rank - axis - constant.ndim))


def _scalar_power(node: _Node, c: float, constant_first: bool) -> tuple[float, float, float]:
    """(power, scale, shift) of Power for ``x op c`` (or ``c op x`` when ``constant_first``)."""
    if node.op == "Add":
        return 1.0, 1.0, c
    if node.op == "Mul":
        return 1.0, c, 0.0
    if node.op == "Sub":
        return (1.0, -1.0, c) if constant_first else (1.0, 1.0, -c)
    if node.op == "Div":
        if c == 0.0:
            raise _Reject("division by the constant 0")
        return (-1.0, 1.0 / c, 0.0) if constant_first else (1.0, 1.0 / c, 0.0)  # c / x = (x / c) ** -1
    if constant_first:  # Pow(c, x): the exponent varies
        raise _Reject(f"Pow with a constant base {c} and a tensor exponent has no dynbatch layer")
    return c, 1.0, 0.0


#: Layers a per-channel y = gamma * x + beta can be folded into.
FOLDABLE_LAYERS = ("Convolution", "FullyConnected", "BatchNormalization")


def _channel_affine(node: _Node, i: int, x: _Value, gamma: np.ndarray, beta: np.ndarray):
    """Output 0 = gamma[c] * x + beta[c] along axis 1: folded into the layer that wrote ``x``
    when nothing else reads that tensor, else a BatchNormalization layer (mean 0, variance 1)."""
    importer = node.importer
    layer = importer.producer.get(x.tensor)
    source = node.inputs[i]
    if (layer is not None and layer.type in FOLDABLE_LAYERS and importer.consumers[source] == 1
            and importer.aliases[x.tensor] == 1 and source not in importer.output_names):
        attrs = layer.attrs
        if layer.type == "BatchNormalization":
            attrs["gamma"] = (np.asarray(attrs.get("gamma", 1.0), np.float64) * gamma).astype(np.float32)
            attrs["beta"] = (np.asarray(attrs.get("beta", 0.0), np.float64) * gamma + beta).astype(np.float32)
        else:
            weights = np.asarray(attrs["weights"], np.float64)
            biases = np.asarray(attrs.get("biases", np.zeros(weights.shape[0])), np.float64)
            attrs["weights"] = (weights * gamma.reshape((-1,) + (1,) * (weights.ndim - 1))).astype(np.float32)
            attrs["biases"] = (biases * gamma + beta).astype(np.float32)
        importer.aliases[x.tensor] -= 1  # the folded tensor's only reader is this node
        node.set_output(0, x)
        return
    channels = x.shape[1]
    node.elementwise(x, "BatchNormalization", mean=np.zeros(channels, np.float32), variance=np.ones(channels, np.float32),
                     epsilon=0.0, gamma=gamma.astype(np.float32), beta=beta.astype(np.float32))


def _eltwise(node: _Node, values: list[_Value], operation: str, coeff=None):
    """Output 0 = an Eltwise layer over tensors of equal rank, broadcast over non-batch axes."""
    if any(v.reshaped_by is not None for v in values):
        # Views of equally shaped tensors, reshaped alike, combine element by element as they are.
        first = values[0]
        if not all(v.shape == first.shape and v.reshaped_by is not None
                   and node.importer.shapes[v.tensor] == node.importer.shapes[first.tensor] for v in values):
            raise _BlameReshape(next(v for v in values if v.reshaped_by is not None), node)
    shapes = [v.shape for v in values]
    if len({len(s) for s in shapes}) > 1:
        raise _Reject(f"inputs of shapes {shapes} have different ranks; dynbatch's Eltwise broadcasts equal ranks only")
    if len({s[0] for s in shapes}) > 1:
        raise _Reject(f"inputs of shapes {shapes} broadcast along axis 0 (the batch), which mixes samples")
    tensor = node.add("Eltwise", [v.tensor for v in values], operation=operation, coeff=coeff)[0]
    view = values[0].reshaped_by is not None  # then every input is the same view: so is the output
    node.set_output(0, _Value(tensor, values[0].shape if view else node.importer.shapes[tensor], values[0].reshaped_by))


def convert_variadic(node: _Node):
    """Sum, Mean, Max, Min over one or more inputs."""
    present = [i for i in range(len(node.inputs)) if node.has_input(i)]
    tensors = [i for i in present if not node.is_const(i)]
    constants = [np.asarray(node.const(i, "constant operand"), np.float64) for i in present if node.is_const(i)]
    if len(present) == 1:
        node.set_output(0, node.value(present[0]))
        return
    if not constants:
        operation = {"Sum": "sum", "Mean": "sum", "Max": "max", "Min": "min"}[node.op]
        coeff = (1.0 / len(tensors),) * len(tensors) if node.op == "Mean" else None
        _eltwise(node, [node.value(i) for i in tensors], operation, coeff)
        return
    if len(tensors) != 1 or any(c.size != 1 for c in constants):
        raise _Reject(f"{node.op} of {len(tensors)} tensor(s) and constants of shapes {[c.shape for c in constants]}: "
                      f"dynbatch folds scalar constants beside one tensor only")
    x = node.value(tensors[0])
    for c in constants:
        _scalar_broadcast(node, c, x.shape)
    scalars = [float(c.reshape(-1)[0]) for c in constants]
    if node.op == "Max":
        node.elementwise(x, "Activation", type="clamp", min=max(scalars), max=math.inf)
    elif node.op == "Min":
        node.elementwise(x, "Activation", type="clamp", min=-math.inf, max=min(scalars))
    else:
        count = len(present) if node.op == "Mean" else 1
        node.elementwise(x, "Power", power=1.0, scale=1.0 / count, shift=sum(scalars) / count)


# -- fully connected -----------------------------------------------------------------------------


def convert_gemm(node: _Node):
    """Y = alpha * A' B' + beta * C with B (and C) constant -> FullyConnected on A's samples."""
    a = node.value(0)
    if node.attr("transA", 0):
        raise _Reject("transA=1 transposes the batch axis into the features")
    if len(a.shape) != 2:
        raise _Reject(f"A has shape {a.shape}; Gemm takes a 2-d A")
    b = np.asarray(node.const(1, "B"), np.float64)
    if b.ndim != 2:
        raise _Reject(f"B has shape {b.shape}; Gemm takes a 2-d B")
    weights = b if node.attr("transB", 0) else b.T  # (out, in)
    if weights.shape[1] != a.shape[1]:
        raise _Reject(f"A has {a.shape[1]} features but B (shape {b.shape}, transB={node.attr('transB', 0)}) "
                      f"takes {weights.shape[1]}")
    out_features = weights.shape[0]
    biases = np.zeros(out_features)
    if node.has_input(2):
        c = np.asarray(node.const(2, "C"), np.float64)
        if c.ndim > 2:
            raise _Reject(f"C has shape {c.shape}; Gemm takes C of rank 0 to 2")
        c2 = c.reshape((1,) * (2 - c.ndim) + c.shape)
        if c2.shape[0] != 1 or c2.shape[1] not in (1, out_features):
            raise _Reject(f"C of shape {c.shape} does not broadcast to one bias row of {out_features} "
                          f"(a C with one row per sample ties the model to one batch)")
        biases = float(node.attr("beta", 1.0)) * np.broadcast_to(c2[0], (out_features,))
    weights = float(node.attr("alpha", 1.0)) * weights
    node.new_tensor("FullyConnected", [a.tensor], weights=weights.astype(np.float32), biases=biases.astype(np.float32))


def convert_matmul(node: _Node):
    """A (N, K) @ B (K, M) with B constant -> FullyConnected, weights B.T."""
    if node.is_const(0) or not node.is_const(1):
        raise _Reject("MatMul runs as a fully connected layer only with a tensor on the left and a constant on the right")
    a = node.value(0)
    b = node.const(1, "B")
    if len(a.shape) != 2 or b.ndim != 2:
        raise _Reject(f"A {a.shape} @ B {b.shape}: dynbatch runs MatMul of a 2-d A by a 2-d constant B (a fully "
                      f"connected layer); other ranks multiply within each sample")
    if b.shape[0] != a.shape[1]:
        raise _Reject(f"A has {a.shape[1]} features but B has shape {b.shape}")
    node.new_tensor("FullyConnected", [a.tensor], weights=np.ascontiguousarray(b.T))


# -- softmax -------------------------------------------------------------------------------------


def convert_softmax(node: _Node):
    """Before opset 13, one softmax over all axes from ``axis`` on (default 1); from 13, over
    ``axis`` alone (default -1)."""
    x = node.value(0)
    rank = len(x.shape)
    flatten = node.opset < 13
    axis = int(node.attr("axis", 1 if flatten else -1))
    if not -rank <= axis < rank:
        raise _Reject(f"axis {axis} is out of range for input rank {rank}")
    axis %= rank
    if axis == 0:
        raise _Reject(f"Softmax on axis 0 (the batch axis) of {x.shape} mixes samples")
    if x.reshaped_by is None:
        node.elementwise(x, "SoftMax", axis=axis, flatten=flatten and axis < rank - 1)
        return
    # A view: the softmax runs over the trailing elements of each sample, which must be the
    # trailing axes of the tensor holding the data.
    stored = node.importer.shapes[x.tensor]
    span = math.prod(x.shape[axis:])
    matches = [k for k in range(1, len(stored)) if math.prod(stored[k:]) == span]
    if (not flatten and axis != rank - 1) or not matches:
        raise _BlameReshape(x, node)
    node.elementwise(x, "SoftMax", axis=matches[-1], flatten=True)


# -- structure -----------------------------------------------------------------------------------


def _axis(node: _Node, axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise _Reject(f"axis {axis} is out of range for input rank {rank}")
    axis %= rank
    if axis == 0:
        raise _Reject(f"{what} on axis 0 (the batch axis) mixes samples or ties the model to one batch")
    return axis


def convert_concat(node: _Node):
    present = [i for i in range(len(node.inputs)) if node.has_input(i)]
    values = [node.tensor(i) for i in present]
    if len(values) == 1:
        node.set_output(0, values[0])
        return
    if node.attr("axis") is None:
        raise _Reject("attribute 'axis' is required")
    axis = _axis(node, int(node.attr("axis")), len(values[0].shape), "Concat")
    node.new_tensor("Concatenation", [v.tensor for v in values], axis=axis)


def convert_split(node: _Node):
    x = node.tensor(0)
    axis = _axis(node, int(node.attr("axis", 0)), len(x.shape), "Split")
    length, count = x.shape[axis], len(node.proto.output)
    sizes = node.attr("split") if node.opset < 13 else node.optional_const(1, "split")
    if sizes is not None and len(sizes):
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    elif node.attr("num_outputs") is not None:  # opset 18: the last part is smaller when uneven
        parts = int(node.attr("num_outputs"))
        size = -(-length // parts)
        sizes = [size] * (parts - 1) + [length - size * (parts - 1)]
    else:
        if length % count:
            raise _Reject(f"axis {axis} of length {length} does not split into {count} equal parts")
        sizes = [length // count] * count
    if len(sizes) != count:
        raise _Reject(f"split sizes {sizes} give {len(sizes)} parts for {count} outputs")
    tensors = node.add("Split", [x.tensor], axis=axis, sizes=sizes)
    for i, tensor in enumerate(tensors):
        if node.proto.output[i]:
            node.set_output(i, _Value(tensor, node.importer.shapes[tensor]))


def convert_slice(node: _Node):
    """Slice with constant starts/ends on non-batch axes, step 1 -> Crop."""
    x = node.tensor(0)
    if node.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
        if starts is None or ends is None:
            raise _Reject("attributes 'starts' and 'ends' are required")
    else:
        starts, ends = node.const(1, "starts"), node.const(2, "ends")
        axes, steps = node.optional_const(3, "axes"), node.optional_const(4, "steps")
    starts, ends = [int(v) for v in np.reshape(starts, -1)], [int(v) for v in np.reshape(ends, -1)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.reshape(axes, -1)]
    if steps is not None and np.any(np.asarray(steps) != 1):
        raise _Reject(f"steps {np.asarray(steps).tolist()}: dynbatch's Crop takes contiguous ranges (step 1)")
    rank = len(x.shape)
    crop_axes, offsets, dims = [], [], []
    for axis, start, end in zip(axes, starts, ends):
        if not -rank <= axis < rank:
            raise _Reject(f"axis {axis} is out of range for input rank {rank}")
        axis %= rank
        size = x.shape[axis]
        begin = min(max(start + size if start < 0 else start, 0), size)
        stop = min(max(end + size if end < 0 else end, 0), size)
        if axis == 0:
            if begin == 0 and stop == size:  # every row, whatever the batch
                continue
            raise _Reject(f"slices rows [{start}, {end}) of axis 0 (the batch axis); only the whole batch can be kept")
        if stop <= begin:
            raise _Reject(f"slice [{start}, {end}) of axis {axis} (length {size}) is empty")
        if (begin, stop) != (0, size):
            crop_axes.append(axis)
            offsets.append(begin)
            dims.append(stop - begin)
    if not crop_axes:
        node.set_output(0, x)
        return
    node.new_tensor("Crop", [x.tensor], axis=crop_axes, offset=offsets, dim=dims)


def convert_identity(node: _Node):
    """Identity, and Dropout at inference: the output is the input."""
    if node.op == "Dropout" and node.has_input(2):
        training = node.const(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise _Reject("training_mode is true: dropout would drop values at random")
    node.set_output(0, node.value(0))


# -- reshapes: views of the same data -----------------------------------------------------------


def _view(node: _Node, x: _Value, shape: Shape):
    """Output 0 = ``x``'s data read with ``shape``: dim 0 and every sample's data order kept."""
    stored = node.importer.shapes[x.tensor]
    shape = tuple(int(d) for d in shape)
    if shape == stored:
        node.set_output(0, _Value(x.tensor, stored))
    elif len(shape) >= 1 and shape[0] == stored[0] and math.prod(shape[1:]) == math.prod(stored[1:]):
        node.set_output(0, _Value(x.tensor, shape, node.index))
    else:
        raise _Reject(f"reshapes {x.shape} to {shape}, moving data across the batch axis (dim 0 = the batch)")


def convert_reshape(node: _Node):
    x = node.value(0)
    target = [int(d) for d in np.reshape(node.const(1, "shape"), -1)]
    allow_zero = node.attr("allowzero", 0)
    for i, d in enumerate(target):
        if d == 0 and not allow_zero:
            if i >= len(x.shape):
                raise _Reject(f"shape {target} copies dim {i} (0) of an input of rank {len(x.shape)}")
            target[i] = x.shape[i]
    if target.count(-1) > 1:
        raise _Reject(f"shape {target} has more than one -1")
    batch = node.importer.batch
    per_sample = math.prod(x.shape[1:])
    known_rest = math.prod(d for d in target[1:] if d != -1)
    rest_fits = per_sample % max(known_rest, 1) == 0 if -1 in target[1:] else known_rest == per_sample
    if target and target[0] != batch and target[0] in node.importer.traced_batches and rest_fits:
        target[0] = batch  # the batch the exporter traced with, hard-coded: it means "the batch"
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if known == 0 or math.prod(x.shape) % known:
            raise _Reject(f"cannot reshape {x.shape} to {target}")
        target[target.index(-1)] = math.prod(x.shape) // known
    if math.prod(target) != math.prod(x.shape):
        raise _Reject(f"cannot reshape {x.shape} ({math.prod(x.shape)} elements) to {target}")
    _view(node, x, tuple(target))


def convert_flatten(node: _Node):
    x = node.value(0)
    rank = len(x.shape)
    axis = int(node.attr("axis", 1))
    if not -rank <= axis <= rank:
        raise _Reject(f"axis {axis} is out of range for input rank {rank}")
    axis = axis + rank if axis < 0 else axis
    _view(node, x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _axes(node: _Node, rank_of) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze (an attribute before opset 13, an input from 13), made
    non-negative for the rank ``rank_of(count of axes)``; None when absent."""
    axes = node.attr("axes") if node.opset < 13 else node.optional_const(1, "axes")
    if axes is None:
        return None
    axes = [int(a) for a in np.reshape(axes, -1)]
    rank = rank_of(len(axes))
    if any(not -rank <= a < rank for a in axes):
        raise _Reject(f"axes {axes} are out of range for rank {rank}")
    return sorted(a % rank for a in axes)


def convert_squeeze(node: _Node):
    x = node.value(0)
    axes = _axes(node, lambda count: len(x.shape))
    if axes is None:
        axes = [a for a, d in enumerate(x.shape) if d == 1]
    if any(x.shape[a] != 1 for a in axes):
        raise _Reject(f"axes {axes} of {x.shape} are not all of size 1")
    _view(node, x, tuple(d for a, d in enumerate(x.shape) if a not in axes))


def convert_unsqueeze(node: _Node):
    x = node.value(0)
    axes = _axes(node, lambda count: len(x.shape) + count)
    if axes is None:
        raise _Reject("axes are required")
    shape = list(x.shape)
    for axis in axes:
        shape.insert(axis, 1)
    _view(node, x, tuple(shape))


def convert_transpose(node: _Node):
    """A Transpose that only moves axes of size 1 keeps the data order: a view."""
    x = node.value(0)
    rank = len(x.shape)
    perm = [int(p) for p in node.attr("perm", list(range(rank))[::-1])]
    if sorted(perm) != list(range(rank)):
        raise _Reject(f"perm {perm} is not a permutation of the {rank} axes")
    moved = [p for p in perm if x.shape[p] != 1]
    if moved != sorted(moved):
        raise _Reject(f"perm {perm} reorders the data of shape {x.shape}; dynbatch has no transpose layer")
    _view(node, x, tuple(x.shape[p] for p in perm))


# -- shape queries, folded: every tensor has a static shape ---------------------------------------


def fold_shape(node: _Node):
    shape = node.value(0).shape
    start, end = node.attr("start", 0), node.attr("end")
    node.importer.consts[node.proto.output[0]] = np.array(shape[start:end], dtype=np.int64)


def fold_size(node: _Node):
    node.importer.consts[node.proto.output[0]] = np.array(math.prod(node.value(0).shape), dtype=np.int64)


FOLDED_FROM_SHAPES: dict[str, Callable[[_Node], None]] = {"Shape": fold_shape, "Size": fold_size}

#: ONNX op type -> converter. Ops whose inputs are all constants are folded before this is asked.
CONVERTERS: dict[str, Callable[[_Node], None]] = {
    "Conv": convert_conv,
    "ConvTranspose": convert_conv_transpose,
    "Relu": convert_plain_activation,
    "Sigmoid": convert_plain_activation,
    "Tanh": convert_plain_activation,
    "Exp": convert_plain_activation,
    "Abs": convert_plain_activation,
    "Softplus": convert_plain_activation,
    "HardSwish": convert_plain_activation,
    "LeakyRelu": convert_leaky_relu,
    "PRelu": convert_prelu,
    "Elu": convert_elu,
    "Gelu": convert_gelu,
    "Clip": convert_clip,
    "Neg": convert_power_unary,
    "Reciprocal": convert_power_unary,
    "Sqrt": convert_power_unary,
    "LRN": convert_lrn,
    "MaxPool": convert_max_pool,
    "AveragePool": convert_average_pool,
    "GlobalMaxPool": convert_global_max_pool,
    "GlobalAveragePool": convert_global_average_pool,
    "Gemm": convert_gemm,
    "MatMul": convert_matmul,
    "Softmax": convert_softmax,
    "Split": convert_split,
    "Concat": convert_concat,
    "Add": convert_arithmetic,
    "Sub": convert_arithmetic,
    "Mul": convert_arithmetic,
    "Div": convert_arithmetic,
    "Pow": convert_arithmetic,
    "Sum": convert_variadic,
    "Mean": convert_variadic,
    "Max": convert_variadic,
    "Min": convert_variadic,
    "Slice": convert_slice,
    "BatchNormalization": convert_batch_normalization,
    "Identity": convert_identity,
    "Dropout": convert_identity,
    "Reshape": convert_reshape,
    "Flatten": convert_flatten,
    "Squeeze": convert_squeeze,
    "Unsqueeze": convert_unsqueeze,
    "Transpose": convert_transpose,
}

#: Why well-known unsupported ops are rejected (the default names the op and the opset).
UNSUPPORTED_REASONS = {
    "Resize": "resizing has no dynbatch layer (no Interpolate/Resample kernel)",
    "Upsample": "resizing has no dynbatch layer (no Interpolate/Resample kernel)",
    "NonMaxSuppression": "its output size depends on the data (detection post-processing)",
    "RoiAlign": "region pooling reads boxes that index into the batch (detection)",
    "MaxRoiPool": "region pooling reads boxes that index into the batch (detection)",
    "TopK": "its output depends on the data across a whole axis (detection post-processing)",
    "Loop": "control flow (Loop, If, Scan) has no dynbatch equivalent",
    "If": "control flow (Loop, If, Scan) has no dynbatch equivalent",
    "Scan": "control flow (Loop, If, Scan) has no dynbatch equivalent",
    "Gather": "gathering from a tensor computed at run time has no dynbatch layer (only constants are folded)",
    "Expand": "broadcasting a tensor to a larger shape has no dynbatch layer",
    "Tile": "tiling a tensor has no dynbatch layer",
    "Pad": "explicit padding has no dynbatch layer (only the pads of Conv and pooling)",
}


def _unsupported_reason(op_type: str, opset: int) -> str:
    return UNSUPPORTED_REASONS.get(op_type, f"op '{op_type}' (opset {opset}) has no dynbatch layer")
