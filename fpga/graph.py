"""One small graph model read from ONNX: the front end every FPGA step (partition, calibrate, emulate,
export) works on, as hls4ml's ModelGraph sits between its front ends and back ends.

``load_graph(model)`` runs ONNX shape inference and turns each node into a :class:`Layer` (op type,
activation inputs, one output, attributes as Python values, constant inputs as numpy arrays), in
topological order, then normalises it:

- ``Gemm`` (``transA=0``, constant ``B``) and ``MatMul`` with a constant 2-D right operand become
  ``Dense`` layers (``weight`` ``(K, M)``, ``bias`` ``(M,)``; ``alpha``/``beta`` folded in); an ``Add`` of
  a constant that only follows a ``MatMul`` becomes its bias;
- ``BatchNormalization`` that only follows a ``Conv`` or ``Dense`` is folded into its weights and bias
  (``w * s``, ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``, in float64, rounded once
  to float32);
- ``Constant`` nodes become constants of the layers that read them; Identity, inference Dropout and
  float-to-float Cast nodes are dropped (their readers read their input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference


@dataclass(eq=False)
class Layer:
    """One operation. ``inputs``: activation tensor names; ``output``: the tensor it produces;
    ``weights``: constant operands by role (``weight``, ``bias``...) or by input index; ``source``: the
    ONNX nodes folded into it."""

    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, object] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    extra_outputs: list[str] = field(default_factory=list)  # outputs beyond the first (never on the accelerator)


@dataclass
class Graph:
    """Layers in topological order plus the model's inputs, outputs and inferred tensor shapes; ``model``:
    the ONNX model with its inferred value infos (which cutting it into parts needs)."""

    layers: list[Layer]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int | str | None, ...]]
    model: onnx.ModelProto

    def producer(self) -> dict[str, Layer]:
        """Tensor name -> the layer producing it."""
        return {out: layer for layer in self.layers for out in (layer.output, *layer.extra_outputs)}

    def consumers(self) -> dict[str, list[Layer]]:
        """Tensor name -> the layers reading it."""
        found: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for name in layer.inputs:
                found.setdefault(name, []).append(layer)
        return found

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(lay.name for lay in self.layers)}")


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """An ONNX model from a path or a proto, checked."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"the ONNX model is not valid ({exc}); re-export it or run onnx.checker on it") from None
    return proto


def load_graph(model: str | Path | onnx.ModelProto, fold: bool = True) -> Graph:
    """The graph model of an ONNX model (see the module docstring); ``fold=False`` keeps nodes as they are."""
    proto = load_model(model)
    inferred = shape_inference.infer_shapes(proto)
    shapes: dict[str, tuple[int | str | None, ...]] = {}
    types: dict[str, int] = {}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        types[info.name] = info.type.tensor_type.elem_type
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    layers: list[Layer] = []
    for index, node in enumerate(proto.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant" and len(node.output) == 1 and "value" in attrs:
            constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items() if not hasattr(v, "dims")}
        weights = {str(i): constants[name] for i, name in enumerate(node.input) if name in constants}
        inputs = [name for name in node.input if name and name not in constants]
        name = node.name or f"{node.op_type}_{index}"
        layers.append(Layer(name, node.op_type, inputs, node.output[0], attrs, weights, [name], list(node.output[1:])))
    for tensor in constants:
        shapes.setdefault(tensor, tuple(constants[tensor].shape))
    graph_inputs = [i.name for i in proto.graph.input if i.name not in constants]
    graph = Graph(layers, graph_inputs, [o.name for o in proto.graph.output], shapes, inferred)
    if fold:
        _drop_no_ops(graph, types)
        _to_dense(graph)
        _fold_bias_add(graph)
        _fold_batchnorm(graph)
    return graph


def _drop_no_ops(graph: Graph, types: dict[str, int]) -> None:
    """Remove Identity, inference Dropout and float-to-float Cast (skl2onnx starts with one), rewiring
    their readers to their input; nodes producing a model output stay."""
    float32 = onnx.TensorProto.FLOAT
    for layer in list(graph.layers):
        no_op = layer.op == "Identity" or (layer.op == "Dropout" and not layer.extra_outputs and len(layer.inputs) == 1)
        no_op |= layer.op == "Cast" and layer.attrs.get("to") == float32 and types.get(layer.inputs[0]) == float32
        if not no_op or len(layer.inputs) != 1 or layer.output in graph.outputs:
            continue
        for reader in graph.layers:
            reader.inputs = [layer.inputs[0] if name == layer.output else name for name in reader.inputs]
        graph.layers.remove(layer)


def _to_dense(graph: Graph) -> None:
    """Gemm/MatMul with a constant 2-D weight -> Dense (weight ``(K, M)``, bias ``(M,)``); Conv constants
    named ``weight`` ``(M, C, kh, kw)`` and ``bias`` ``(M,)``."""
    for layer in graph.layers:
        if layer.op == "Gemm" and "1" in layer.weights and len(layer.inputs) == 1 and not layer.attrs.get("transA", 0):
            b = layer.weights["1"].astype(np.float32)
            if b.ndim != 2 or "0" in layer.weights:
                continue
            w = (b.T if layer.attrs.get("transB", 0) else b) * np.float32(layer.attrs.get("alpha", 1.0))
            c = layer.weights.get("2")
            bias = np.zeros(w.shape[1], np.float32)
            if c is not None:
                try:
                    bias = np.broadcast_to(
                        c.astype(np.float32) * np.float32(layer.attrs.get("beta", 1.0)), (w.shape[1],)
                    )
                except ValueError:
                    continue  # a bias depending on the row stays a Gemm (host)
            layer.op, layer.attrs = "Dense", {}
            layer.weights = {"weight": np.ascontiguousarray(w, np.float32), "bias": np.array(bias, np.float32)}
        elif (
            layer.op == "Conv" and set(layer.weights) <= {"1", "2"} and "1" in layer.weights and len(layer.inputs) == 1
        ):
            w = layer.weights["1"].astype(np.float32)
            bias = layer.weights.get("2", np.zeros(w.shape[0], np.float32)).astype(np.float32)
            layer.weights = {"weight": w, "bias": bias}
        elif layer.op == "MatMul" and set(layer.weights) == {"1"} and layer.weights["1"].ndim == 2:
            w = layer.weights["1"].astype(np.float32)
            layer.op, layer.attrs = "Dense", {}
            layer.weights = {"weight": w, "bias": np.zeros(w.shape[1], np.float32)}


def _only_consumer(graph: Graph, layer: Layer, op: str) -> Layer | None:
    """The one layer reading ``layer``'s output when it has type ``op`` and the output is not a graph output."""
    readers = graph.consumers().get(layer.output, [])
    if len(readers) == 1 and readers[0].op == op and layer.output not in graph.outputs and not layer.extra_outputs:
        return readers[0]
    return None


def _absorb(graph: Graph, layer: Layer, follower: Layer) -> None:
    layer.output = follower.output
    layer.source.extend(follower.source)
    graph.layers.remove(follower)


def _fold_bias_add(graph: Graph) -> None:
    for layer in list(graph.layers):
        if layer.op != "Dense":
            continue
        add = _only_consumer(graph, layer, "Add")
        if add is None or len(add.inputs) != 1 or len(add.weights) != 1:
            continue
        constant = next(iter(add.weights.values())).astype(np.float32)
        m = layer.weights["weight"].shape[1]
        if constant.size not in (1, m) or constant.ndim > 2 or (constant.ndim == 2 and constant.shape[0] != 1):
            continue
        layer.weights["bias"] = (layer.weights["bias"] + np.broadcast_to(constant.reshape(-1), (m,))).astype(np.float32)
        _absorb(graph, layer, add)


def fold_batchnorm(
    weight: np.ndarray,
    bias: np.ndarray,
    gamma: object,
    beta: object,
    mean: object,
    var: object,
    eps: float,
    out_axis: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a Conv (``out_axis=0``) or Dense (``out_axis=1``) followed by BatchNormalization:
    computed in float64, rounded once to float32."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shape = [1] * weight.ndim
    shape[out_axis] = -1
    w = weight.astype(np.float64) * scale.reshape(shape)
    b = (bias.astype(np.float64) - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def _fold_batchnorm(graph: Graph) -> None:
    for layer in list(graph.layers):
        if layer.op not in ("Conv", "Dense"):
            continue
        bn = _only_consumer(graph, layer, "BatchNormalization")
        if bn is None or set(bn.weights) != {"1", "2", "3", "4"} or bn.extra_outputs:
            continue
        if "weight" not in layer.weights:
            continue
        weight, bias = layer.weights["weight"], layer.weights["bias"]
        gamma, beta, mean, var = (bn.weights[k] for k in ("1", "2", "3", "4"))
        if np.size(gamma) != bias.shape[0]:
            continue
        w, b = fold_batchnorm(
            weight, bias, gamma, beta, mean, var, float(bn.attrs.get("epsilon", 1e-5)), 0 if layer.op == "Conv" else 1
        )
        layer.weights["weight"], layer.weights["bias"] = w, b
        _absorb(graph, layer, bn)
