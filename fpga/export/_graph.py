"""Small ONNX graph helpers shared by the exporters."""

from __future__ import annotations

from pathlib import Path

import onnx

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
FLOAT = onnx.TensorProto.FLOAT


class ExportError(ValueError):
    """A model or format the exporter cannot take; the message says why and what to do."""


def load(model: object) -> onnx.ModelProto:
    """A copy of an ONNX model given as ModelProto, qonnx ModelWrapper or path."""
    if isinstance(model, onnx.ModelProto):
        return onnx.ModelProto.FromString(model.SerializeToString())
    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise ExportError(f"ONNX model {model} does not exist")
        return onnx.load(str(model))
    inner = getattr(model, "model", None)  # qonnx ModelWrapper
    if isinstance(inner, onnx.ModelProto):
        return onnx.ModelProto.FromString(inner.SerializeToString())
    raise ExportError(f"expected an ONNX model (ModelProto, ModelWrapper or a .onnx path), got {type(model).__name__}")


def graph_input(model: onnx.ModelProto) -> str:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ExportError(f"the exporters take a graph with one input, this one has {names}")
    return names[0]


def float_outputs(model: onnx.ModelProto) -> set[str]:
    """Names of float tensors that nodes produce (shape inference decides; unknown types count as float)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
    return {o for n in model.graph.node for o in n.output if types.get(o, FLOAT) == FLOAT}


def weight_channel_axis(node: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of a weighted node's weight (input 1)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1  # MatMul: [..., in, out]
