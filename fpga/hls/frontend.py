"""The ONNX front end hls4ml needs: qonnx cleanup, channels-last, Gemm -> MatMul, shape annotations.

hls4ml's ONNX converter reads a *cleaned* graph: batch size 1, unique readable names, constants folded,
4D tensors channels-last, ``Gemm`` as ``MatMul`` + ``Add``, and a shape on every tensor (weights
included: QONNX into hls4ml is bit-exact only once every weight tensor has a shape annotation).

Models from tf2onnx: convert with ``inputs_as_nchw=[<input name>]`` (the graph then takes NCHW like a
torch export) and MaxPool nodes with ``auto_pad`` get explicit ``pads`` here (hls4ml reads only ``pads``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import onnx
from onnx import helper

CHAIN = ("cleanup_model", "ConvertToChannelsLastAndClean", "GemmToMatMul", "cleanup_model")
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


class HlsError(RuntimeError):
    """A model or setting hls4ml cannot take; the message says why and what to do."""


def _load(model: object) -> onnx.ModelProto:
    from qonnx.core.modelwrapper import ModelWrapper

    if isinstance(model, ModelWrapper):
        return onnx.ModelProto.FromString(model.model.SerializeToString())
    if isinstance(model, onnx.ModelProto):
        return onnx.ModelProto.FromString(model.SerializeToString())
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise HlsError(f"ONNX model {path} does not exist")
        return onnx.load(str(path))
    raise HlsError(f"expected an ONNX model (ModelProto, ModelWrapper or a .onnx path), got {type(model).__name__}")


def explicit_maxpool_pads(model: onnx.ModelProto) -> int:
    """Replace ``auto_pad`` on MaxPool/AveragePool with explicit ``pads`` (as tf2onnx writes SAME/VALID);
    needs inferred shapes. Returns how many nodes changed."""
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input})
    changed = 0
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type not in ("MaxPool", "AveragePool") or "auto_pad" not in attrs:
            continue
        mode = helper.get_attribute_value(attrs["auto_pad"]).decode()
        if mode == "NOTSET":
            continue
        kernel = list(helper.get_attribute_value(attrs["kernel_shape"]))
        strides = list(helper.get_attribute_value(attrs["strides"])) if "strides" in attrs else [1] * len(kernel)
        spatial = shapes.get(node.input[0], [])[2:]
        if mode == "VALID":
            pads = [0] * (2 * len(kernel))
        elif len(spatial) == len(kernel) and all(spatial):
            steps = zip(spatial, kernel, strides, strict=True)
            total = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n, k, s in steps]
            first = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in total]
            pads = first + [t - f for t, f in zip(total, first, strict=True)]
        else:
            raise HlsError(f"{node.op_type} {node.name!r} uses auto_pad={mode} but its input shape is unknown")
        node.attribute.remove(attrs["auto_pad"])
        node.attribute.append(helper.make_attribute("pads", pads))
        changed += 1
    return changed


def annotate_initializers(model: onnx.ModelProto) -> int:
    """Add a ``value_info`` shape annotation for every initializer that lacks one; returns how many."""
    known = {v.name for v in model.graph.value_info} | {v.name for v in model.graph.input}
    added = 0
    for init in model.graph.initializer:
        if init.name not in known:
            model.graph.value_info.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            added += 1
    return added


def prepare_onnx(model: object, channels_last_input: bool = True) -> object:
    """A float or QONNX model -> the cleaned ``qonnx`` ``ModelWrapper`` hls4ml's ONNX converter takes.

    Runs qonnx ``cleanup_model`` (batch size 1) -> ``ConvertToChannelsLastAndClean`` -> ``GemmToMatMul``
    -> ``cleanup_model`` and annotates every initializer's shape. With ``channels_last_input`` a 4D
    NCHW input becomes NHWC (no Transpose left at the input; ``HlsProject.predict`` still takes NCHW).
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    proto = _load(model)
    if len([i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]) != 1:
        raise HlsError("hls4ml export takes a graph with exactly one input; split the model first")
    wrapper = cleanup_model(ModelWrapper(proto), override_inpsize=1)
    wrapper = wrapper.transform(InferShapes())
    if explicit_maxpool_pads(wrapper.model):
        wrapper = cleanup_model(wrapper)
    try:
        wrapper = wrapper.transform(ConvertToChannelsLastAndClean(make_input_channels_last=channels_last_input))
        with warnings.catch_warnings():  # it warns for any Gemm past opset 9; the tests check the numbers
            warnings.filterwarnings("ignore", message="The GemmToMatMul transformation only offers")
            wrapper = wrapper.transform(GemmToMatMul())
    except Exception as exc:  # qonnx raises AssertionError/ValueError with terse messages
        raise HlsError(f"qonnx could not bring the graph to channels-last/MatMul form: {exc}") from exc
    wrapper = cleanup_model(wrapper)
    annotate_initializers(wrapper.model)
    return wrapper


def layer_name_map(original: object, prepared: object) -> dict[str, str]:
    """Original node names -> names in the prepared graph, matched by op kind and topological order
    (cleanup renames nodes ``MatMul_0``...; Gemm becomes MatMul + Add, which the Gemm's name maps to the
    MatMul of). Nodes the chain removed (Transpose, Identity...) are absent."""

    def kind(op: str) -> str:
        return "MatMul" if op in ("Gemm", "MatMul") else op

    orig = _load(original).graph.node
    prep = _load(prepared).graph.node
    by_kind: dict[str, list[str]] = {}
    for node in prep:
        by_kind.setdefault(kind(node.op_type), []).append(node.name)
    seen: dict[str, int] = {}
    names = {}
    for node in orig:
        k = kind(node.op_type)
        if k in ("Add", "Transpose", "Identity", "Reshape", "Constant"):
            continue  # Gemm -> MatMul + Add and layout changes shift these; match only layers
        i = seen.get(k, 0)
        seen[k] = i + 1
        if node.name and i < len(by_kind.get(k, [])):
            names[node.name] = by_kind[k][i]
    return names
