"""Float ONNX + per-tensor fixed-point formats -> QONNX: ``Quant`` nodes on weights and activations.

A fixed-point ``ap_fixed<W,I,Q,O>`` is QONNX ``Quant(x, scale=2**-(W-I), zeropt=0, bitwidth=W)``,
``signed`` (0 for ``ap_ufixed``), ``narrow=0``. Quant always saturates, so ``AP_SAT`` is exact and
``AP_WRAP`` agrees only while nothing overflows (noted). Rounding: ``AP_TRN``->FLOOR,
``AP_RND_CONV``->ROUND (half even), ``AP_TRN_ZERO``->DOWN, ``AP_RND_INF``->HALF_UP (half away from 0),
``AP_RND_ZERO``->HALF_DOWN; ``AP_RND`` (half towards +inf) and ``AP_RND_MIN_INF`` have no QONNX mode
and are refused. hls4ml reads only FLOOR and ROUND. Per-tensor fixed point only: per-channel scales
(qonnx's ``QCDQToQuant`` fails on per-channel QDQ here) are not produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fpga.formats import FixedPoint, FormatError, get_format

from ._graph import WEIGHTED_OPS, ExportError, float_outputs, graph_input, load

QONNX_DOMAIN = "qonnx.custom_op.general"
ROUNDING = {
    "AP_TRN": "FLOOR",
    "AP_RND_CONV": "ROUND",
    "AP_TRN_ZERO": "DOWN",
    "AP_RND_INF": "HALF_UP",
    "AP_RND_ZERO": "HALF_DOWN",
}
HLS4ML_ROUNDING = ("FLOOR", "ROUND")
HOST_OPS = ("Softmax",)  # the host runs these in float: no Quant on their outputs by default


@dataclass
class QonnxExport:
    """The QONNX model, the format of every quantized tensor, and what the reader should know."""

    model: onnx.ModelProto
    formats: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        onnx.save(self.model, str(path))
        return Path(path)


def _fixed(text: str, where: str) -> FixedPoint:
    try:
        fmt = get_format(text) if isinstance(text, str) else text
    except FormatError as exc:
        raise ExportError(f"{where}: {exc}") from None
    if not isinstance(fmt, FixedPoint):
        raise ExportError(f"{where}: QONNX export takes fixed point formats, not {fmt}; use export_qdq for int8")
    if fmt.rounding not in ROUNDING:
        raise ExportError(
            f"{where}: {fmt.rounding} has no QONNX rounding mode; use one of {', '.join(ROUNDING)} "
            "(AP_RND_CONV or AP_TRN for hls4ml)"
        )
    return fmt


def _tensor_formats(
    model: onnx.ModelProto, formats: Mapping[str, object], default: str | None, input_format: str | None
) -> dict[str, FixedPoint]:
    """Tensor name -> format from node-name keys (weight/bias/result), tensor-name keys and the default."""
    inits = {t.name for t in model.graph.initializer}
    floats = float_outputs(model)
    nodes = {n.name: n for n in model.graph.node}
    tensors = inits | floats | {graph_input(model)}
    out: dict[str, FixedPoint] = {}
    if default is not None:
        for node in model.graph.node:
            if node.op_type in WEIGHTED_OPS:
                for t in node.input[1:3]:
                    if t in inits:
                        out[t] = _fixed(default, "default")
            if node.op_type not in HOST_OPS and node.output[0] in floats:
                out[node.output[0]] = _fixed(default, "default")
    if input_format or default:
        out[graph_input(model)] = _fixed(input_format or default, "input_format")
    for key, value in formats.items():
        if key in nodes:
            node = nodes[key]
            spec = {"weight": value, "bias": value, "result": value} if isinstance(value, str) else dict(value)
            unknown = set(spec) - {"weight", "bias", "result"}
            if unknown:
                raise ExportError(f"layer {key!r}: unknown keys {sorted(unknown)}; use weight, bias, result")
            for role, t in zip(("weight", "bias"), node.input[1:3], strict=False):
                if role in spec and t in inits:
                    out[t] = _fixed(spec[role], f"layer {key!r} {role}")
            if "result" in spec:
                out[node.output[0]] = _fixed(spec["result"], f"layer {key!r} result")
        elif key in tensors:
            out[key] = _fixed(value, f"tensor {key!r}")
        else:
            raise ExportError(f"{key!r} is neither a node nor a float tensor of the model")
    return out


def export_qonnx(
    model: object,
    formats: Mapping[str, object] | None = None,
    default: str | None = None,
    input_format: str | None = None,
) -> QonnxExport:
    """Insert a ``Quant`` node after every tensor given a fixed-point format.

    ``formats`` keys: node names (a format for the node's weight, bias and output, or a dict of
    ``weight``/``bias``/``result``) or tensor names. ``default``: weights and biases of Conv/Gemm/MatMul
    and every node output except the softmax's; ``input_format`` (else ``default``) for the graph input.
    Float initializers stay float (the Quant node quantizes them); every weight gets a shape annotation.
    """
    proto = load(model)
    chosen = _tensor_formats(proto, formats or {}, default, input_format)
    if not chosen:
        raise ExportError("no tensor to quantize: give formats= or default=")
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    source = graph_input(proto)
    notes: list[str] = []
    new_nodes = []
    for name, fmt in chosen.items():
        raw = f"{name}_float"
        if name == source:  # keep the input's name: rewire its consumers to the quantized copy
            quantized = f"{name}_quant"
            for node in graph.node:
                node.input[:] = [quantized if t == name else t for t in node.input]
            q_in, q_out = name, quantized
        else:
            q_in, q_out = raw, name
            if name in inits:
                inits[name].name = raw
            else:
                for node in graph.node:
                    node.output[:] = [raw if t == name else t for t in node.output]
        params = [f"{name}_scale", f"{name}_zeropt", f"{name}_bitwidth"]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(fmt.lsb, np.float32), params[0]),
                numpy_helper.from_array(np.array(0.0, np.float32), params[1]),
                numpy_helper.from_array(np.array(float(fmt.width), np.float32), params[2]),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "Quant",
                [q_in, *params],
                [q_out],
                name=f"Quant_{name}".replace("/", "_"),
                domain=QONNX_DOMAIN,
                signed=int(fmt.signed),
                narrow=0,
                rounding_mode=ROUNDING[fmt.rounding],
            )
        )
        if name in inits:
            graph.value_info.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(inits[name].dims)))
            graph.value_info.append(helper.make_tensor_value_info(raw, onnx.TensorProto.FLOAT, list(inits[name].dims)))
    _insert_sorted(graph, new_nodes)
    if not any(o.domain == QONNX_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(QONNX_DOMAIN, 1))
    modes = {f.overflow for f in chosen.values()}
    if "AP_WRAP" in modes:
        notes.append("QONNX Quant saturates: tensors in AP_WRAP formats match ap_fixed only while they do not overflow")
    if {ROUNDING[f.rounding] for f in chosen.values()} - set(HLS4ML_ROUNDING):
        notes.append("hls4ml reads only FLOOR (AP_TRN) and ROUND (AP_RND_CONV) Quant nodes")
    return QonnxExport(_infer_shapes(proto), {k: str(v) for k, v in chosen.items()}, notes)


def _infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes on every tensor (qonnx's InferShapes knows the Quant op), as qonnx's executor requires."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    return ModelWrapper(proto).transform(InferShapes()).model


def _insert_sorted(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Add nodes and re-sort the graph topologically (ONNX requires producers before consumers)."""
    nodes = list(graph.node) + new_nodes
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        ready = [n for n in pending if all(t in available for t in n.input)]
        if not ready:
            raise ExportError("the graph has a cycle or a tensor nothing produces; cannot insert Quant nodes")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def run_qonnx(model: object, x: np.ndarray) -> np.ndarray:
    """Run a (Q)ONNX model with qonnx's executor (``execute_onnx``) on a batch (the batch size is fixed
    to ``len(x)`` first: the executor needs every shape known)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize

    x = np.asarray(x, np.float32)
    wrapper = ModelWrapper(load(model)).transform(ChangeBatchSize(len(x)))
    wrapper = ModelWrapper(_infer_shapes(wrapper.model))
    name, out = graph_input(wrapper.model), wrapper.model.graph.output[0].name
    return execute_onnx(wrapper, {name: x})[out]
