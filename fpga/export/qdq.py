"""Float ONNX + calibration data -> ONNX QDQ int8 (QuantizeLinear/DequantizeLinear), for onnxruntime & co.

Weights of Conv/Gemm/MatMul: int8 initializers with symmetric per-output-channel scales (``max|w|/127``,
``fpga.formats.Int8``) behind a per-channel ``DequantizeLinear``; biases stay float. Activations (the
input and every node output but the softmax's): a QuantizeLinear/DequantizeLinear pair per tensor with
the scale ``Int8.activation_params`` gives for the range seen on the calibration data. The numbers are
the ones our int8 emulation uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fpga.formats import Int8, get_format

from ._graph import WEIGHTED_OPS, ExportError, float_outputs, graph_input, load, weight_channel_axis
from .qonnx import HOST_OPS, _insert_sorted


@dataclass
class QdqExport:
    model: onnx.ModelProto
    activation_ranges: dict[str, tuple[float, float]]
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        onnx.save(self.model, str(path))
        return Path(path)


def activation_ranges(model: onnx.ModelProto, calibration: np.ndarray, names: list[str]) -> dict[str, tuple]:
    """(min, max) of each named tensor over the calibration batch, from onnxruntime."""
    import onnxruntime as ort

    probe = load(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.asarray(calibration, np.float32)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {graph_input(probe): x}), strict=True))
    values[graph_input(probe)] = x
    return {n: (float(values[n].min()), float(values[n].max())) for n in names}


def export_qdq(model: object, calibration: np.ndarray, fmt: str | Int8 = "int8") -> QdqExport:
    """Quantize weights per channel and activations per tensor as QDQ pairs; runs in onnxruntime."""
    int8 = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(int8, Int8):
        raise ExportError(f"QDQ export takes int8 formats, not {int8}; use export_qonnx for fixed point")
    proto = load(model)
    if max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise ExportError("per-channel DequantizeLinear needs opset >= 13: re-export the model with opset 13+")
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    source = graph_input(proto)
    floats = float_outputs(proto)
    outputs = {o.name for o in graph.output}  # left float: the host reads them
    acts = [source] + [n.output[0] for n in graph.node if n.op_type not in HOST_OPS and n.output[0] in floats - outputs]
    ranges = activation_ranges(proto, calibration, acts)
    new_nodes = []
    for node in list(graph.node):
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w_init = inits[node.input[1]]
        w = numpy_helper.to_array(w_init)
        axis = weight_channel_axis(node, w.ndim)
        q = int8.quantize_weights(w, channel_axis=axis, name=w_init.name)
        base = w_init.name
        graph.initializer.remove(w_init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q.codes.astype(np.int8), f"{base}_int8"),
                numpy_helper.from_array(np.asarray(q.scale, np.float32), f"{base}_scale"),
                numpy_helper.from_array(np.zeros(len(q.scale), np.int8), f"{base}_zero_point"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"],
                [base],
                name=f"DequantizeLinear_{base}".replace("/", "_"),
                axis=axis,
            )
        )
    for name in acts:
        scale, zero_point = int8.activation_params(lo=ranges[name][0], hi=ranges[name][1], name=name)
        tag = name.replace("/", "_")
        q_name, dq_name = f"{name}_quantized", f"{name}_dequantized"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, np.float32), f"{name}_act_scale"),
                numpy_helper.from_array(np.array(zero_point, np.int8), f"{name}_act_zero_point"),
            ]
        )
        for node in graph.node:
            node.input[:] = [dq_name if t == name else t for t in node.input]
        params = [f"{name}_act_scale", f"{name}_act_zero_point"]
        new_nodes.append(helper.make_node("QuantizeLinear", [name, *params], [q_name], name=f"QuantizeLinear_{tag}"))
        new_nodes.append(
            helper.make_node("DequantizeLinear", [q_name, *params], [dq_name], name=f"DequantizeLinear_{tag}")
        )
    _insert_sorted(graph, new_nodes)
    return QdqExport(proto, ranges, ["weights int8 per output channel (symmetric), biases float"])
