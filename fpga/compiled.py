"""Write the accelerator part as an emulator program (``edge_module.numerics.emulate``): layers, tensor
formats and quantized weights (codes plus their parameters), serialisable to JSON + npz so a runtime
image needs neither onnx nor fpga/ to run it."""

from __future__ import annotations

import numpy as np

from edge_module.numerics.emulate import FORMAT_VERSION, Program

from .calibrate import FLOAT, LayerPlan, Plan
from .formats import BlockFloatingPoint, FixedPoint, Int8
from .graph import Layer
from .partition import Partition

OPS = {
    "Conv": "conv",
    "Dense": "dense",
    "Relu": "relu",
    "MaxPool": "maxpool",
    "AveragePool": "avgpool",
    "GlobalAveragePool": "gap",
    "Add": "add",
    "Concat": "concat",
    "Flatten": "flatten",
    "Reshape": "reshape",
}


def float_plan(part: Partition) -> Plan:
    """Every tensor and layer in float32 (for calibration and as a reference)."""
    plan = Plan({name: dict(FLOAT) for name in part.graph.inputs})
    for layer in part.accelerator:
        plan.tensors[layer.output] = dict(FLOAT)
        plan.layers[layer.name] = LayerPlan("float")
    return plan


def weight_matrix(layer: Layer) -> np.ndarray:
    """Weights as ``(M, K)``: Dense ``(K, M)`` transposed; Conv ``(M, C, kh, kw)`` in ``(kh, kw, C)`` order."""
    w = layer.weights["weight"].astype(np.float32)
    if layer.op == "Dense":
        return np.ascontiguousarray(w.T)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def _attrs(layer: Layer) -> dict:
    a = layer.attrs
    if layer.op == "Conv":
        kernel = list(layer.weights["weight"].shape[2:])
        return {
            "kernel_shape": kernel,
            "pads": [int(v) for v in a.get("pads", [0, 0, 0, 0])],
            "strides": [int(v) for v in a.get("strides", [1, 1])],
            "dilations": [int(v) for v in a.get("dilations", [1, 1])],
        }
    if layer.op in ("MaxPool", "AveragePool"):
        return {
            "kernel_shape": [int(v) for v in a["kernel_shape"]],
            "pads": [int(v) for v in a.get("pads", [0, 0, 0, 0])],
            "strides": [int(v) for v in a.get("strides", [1, 1])],
            "count_include_pad": int(a.get("count_include_pad", 0)),
        }
    if layer.op == "Concat":
        return {"axis": int(a.get("axis", 1))}
    if layer.op == "Reshape":
        return {"shape": [int(v) for v in a["shape"]]}
    return {}


def _weights(layer: Layer, entry: LayerPlan, plan: Plan, key: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The layer's format fields and arrays (stored under ``key.role``)."""
    w = weight_matrix(layer)
    b = layer.weights["bias"].astype(np.float32)
    fields: dict = {}
    arrays: dict[str, np.ndarray] = {}
    if entry.scheme == "float":
        arrays = {"weight": w, "bias": b}
    elif entry.scheme == "bfp":
        fmt = BlockFloatingPoint(**entry.bfp)
        q = fmt.quantize(w, axis=1, name=f"{layer.name} weight")
        arrays = {"weight": q.codes.astype(np.int32), "weight_exponent": q.exponents.astype(np.int16), "bias": b}
        fields["bfp"] = entry.bfp
    elif entry.scheme == "fixed":
        w_fmt, b_fmt = (FixedPoint(**{k: v for k, v in f.items() if k != "kind"}) for f in (entry.weight, entry.bias))
        arrays = {
            "weight": w_fmt.quantize(w, f"{layer.name} weight").codes,
            "bias": b_fmt.quantize(b, f"{layer.name} bias").codes,
        }
        fields.update(weight=entry.weight, bias=entry.bias, accum=entry.accum)
    elif entry.scheme == "int8":
        q = Int8().quantize_weights(w, channel_axis=0, name=f"{layer.name} weight")
        x_scale = np.float64(np.float32(plan.tensors[layer.inputs[0]]["scale"]))
        bias = np.rint(b.astype(np.float64) / (x_scale * q.scale.astype(np.float64)))
        arrays = {
            "weight": q.codes,
            "weight_scale": q.scale,
            "bias": np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32),
        }
    else:
        raise ValueError(f"layer {layer.name}: unknown scheme {entry.scheme!r}")
    fields["arrays"] = {role: f"{key}.{role}" for role in arrays}
    return fields, {f"{key}.{role}": value for role, value in arrays.items()}


def build_program(part: Partition, plan: Plan) -> Program:
    """The emulator program of the accelerator part with the formats of ``plan``."""
    if not part.accelerator:
        raise ValueError("nothing runs on the accelerator: see the partition report for why each op is on the host")
    layers: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    for index, layer in enumerate(part.accelerator):
        entry = plan.layers[layer.name]
        spec = {
            "name": layer.name,
            "op": OPS[layer.op],
            "inputs": list(layer.inputs),
            "output": layer.output,
            "attrs": _attrs(layer),
            "scheme": entry.scheme,
        }
        if layer.op in ("Conv", "Dense"):
            fields, data = _weights(layer, entry, plan, f"{index}")
            spec.update(fields)
            arrays.update(data)
        layers.append(spec)
    used = set(part.graph.inputs) | {lay.output for lay in part.accelerator}
    spec = {
        "format_version": FORMAT_VERSION,
        "inputs": list(part.graph.inputs),
        "outputs": list(part.boundary),
        "tensors": {name: fmt for name, fmt in plan.tensors.items() if name in used},
        "layers": layers,
    }
    return Program(spec, arrays)
