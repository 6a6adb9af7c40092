"""From a compiled model to the open toolchains, and back to a comparison.

``hls_for(compiled, out_dir, ...)`` writes the hls4ml project of the compiled model's accelerator part
with every layer in the fixed-point formats the emulator uses (input, weights, biases, results,
accumulators), so the C simulation computes what the emulator computes. ``qonnx_for(compiled)`` and
``qdq_for(compiled, calibration)`` export the same part with the same formats or int8 scales.
``compare(compiled, x, y, hls=..., qonnx=..., qdq=...)`` runs them all (the host part, e.g. softmax,
in onnxruntime after each) and reports top-1 agreement, bit-exact fractions of the accelerator outputs,
accuracy, and why any two differ.

Only the accelerator part goes to the exports: the host part (softmax...) stays in float on the host,
as it does in the emulated model, so the accelerator outputs can be compared bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import onnx

from .calibrate import describe
from .export._graph import ExportError
from .formats import FixedPoint
from .hls.frontend import HlsError

RND_AS = "AP_RND_INF"  # QONNX has no AP_RND (ties towards +inf); HALF_UP differs only on negative ties


def accelerator_model(compiled: object) -> onnx.ModelProto:
    """The float accelerator part of a compiled model as a clean ONNX model: no Identity or float-to-float
    Cast (skl2onnx starts with one; the compiler folds them, hls4ml refuses them) and one value info per
    tensor (qonnx refuses duplicates, which the extractor leaves for the inputs)."""
    if compiled.accelerator_bytes is None:
        raise ValueError("the compiled model has no accelerator ONNX part: recompile it with compile_onnx")
    model = _without_no_ops(onnx.load_from_string(compiled.accelerator_bytes))
    io_names = {v.name for v in (*model.graph.input, *model.graph.output)}
    seen: set[str] = set()
    keep = []
    for info in model.graph.value_info:
        if info.name not in io_names and info.name not in seen:
            seen.add(info.name)
            keep.append(info)
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return model


def _without_no_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        to = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
        no_op = node.op_type == "Identity" or (node.op_type == "Cast" and to == onnx.TensorProto.FLOAT)
        if not no_op or node.output[0] in outputs:
            continue
        for other in graph.node:
            other.input[:] = [node.input[0] if t == node.output[0] else t for t in other.input]
        graph.node.remove(node)
    return model


def _fixed(fmt: Mapping | None, where: str, fix: str = "recompile with --format fixed<16,6>") -> FixedPoint:
    if fmt is None or fmt.get("kind") != "fixed":
        raise HlsError(
            f"{where} is in {describe(fmt) or 'no format'}: HLS and QONNX export need fixed-point formats "
            f"(hls4ml has no int8-with-float-scale or block floating point type); {fix}"
        )
    return FixedPoint(fmt["width"], fmt["integer"], fmt["rounding"], fmt["overflow"], fmt.get("signed", True))


def _layer_nodes(compiled: object, model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Emulator layer name -> the ONNX nodes of the accelerator part folded into it."""
    nodes = {n.name: n for n in model.graph.node}
    return {
        entry["name"]: [nodes[name] for name in entry["nodes"] if name in nodes]
        for entry in compiled.report["accelerator"]
    }


def _check_exact_ops(compiled: object, model: onnx.ModelProto) -> None:
    for layer, nodes in _layer_nodes(compiled, model).items():
        for node in nodes:
            if node.op_type == "BatchNormalization":
                raise ExportError(
                    f"layer {layer} folds BatchNormalization {node.name} into its weights; the ONNX graph keeps "
                    "them apart, so the export would not compute what the emulator does: export the model "
                    "with BatchNormalization folded (torch: model.eval() + torch.ao fuse, or onnxsim)"
                )
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
                raise ExportError(f"Gemm {node.name} has alpha/beta != 1, which the emulator folds into its weights")


# ---------------------------------------------------------------- hls4ml


def hls_precisions(compiled: object, prepared: object, model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """hls4ml ``layer_precision`` (keys: the prepared graph's node names and input) from the compiled
    model's formats. Layers hls4ml adds (Transpose, Reshape...) keep their input's precision; a bias Add
    is part of its Dense."""
    from .hls.frontend import layer_name_map

    _check_exact_ops(compiled, model)
    program = compiled.program
    names = layer_name_map(model, prepared)
    by_prepared: dict[str, dict] = {}
    for layer in program.spec["layers"]:
        source = [names[n.name] for n in _layer_nodes(compiled, model).get(layer["name"], []) if n.name in names]
        if not source:
            continue
        by_prepared[source[0]] = layer
    graph = prepared.graph
    inits = {t.name for t in graph.initializer}
    source_input = program.inputs[0]
    tensor_prec: dict[str, str] = {
        graph.input[0].name: _fixed(program.tensors[source_input], f"input {source_input}").to_hls_precision()
    }
    specs: dict[str, dict[str, str]] = {graph.input[0].name: {"result": tensor_prec[graph.input[0].name]}}
    for node in graph.node:
        acts = [t for t in node.input if t not in inits and t in tensor_prec]
        layer = by_prepared.get(node.name)
        if layer is None:
            if node.op_type == "Add" and len(acts) == 1 and any(t in inits for t in node.input):
                tensor_prec[node.output[0]] = tensor_prec[acts[0]]  # the Dense's bias: its result is set there
                continue
            if not acts:
                raise HlsError(f"hls4ml node {node.name} ({node.op_type}) reads no layer this tool knows")
            if len({tensor_prec[t] for t in acts}) > 1 or node.op_type not in ("Transpose", "Reshape", "Flatten"):
                raise HlsError(
                    f"hls4ml node {node.name} ({node.op_type}) has no emulator layer to take its precision from"
                )
            tensor_prec[node.output[0]] = tensor_prec[acts[0]]
            specs[node.name] = {"result": tensor_prec[acts[0]]}
            continue
        where = f"layer {layer['name']}"
        result = _fixed(program.tensors[layer["output"]], f"{where} result").to_hls_precision()
        spec = {"result": result}
        if layer["op"] in ("dense", "conv"):
            spec["weight"] = _fixed(layer.get("weight"), f"{where} weight").to_hls_precision()
            spec["bias"] = _fixed(layer.get("bias"), f"{where} bias").to_hls_precision()
            if layer.get("accum"):
                spec["accum"] = _fixed(layer["accum"], f"{where} accumulator").to_hls_precision()
        elif layer["op"] not in ("relu", "maxpool", "flatten", "reshape"):
            raise HlsError(
                f"{where} ({layer['op']}): only dense, conv, relu, max pooling and reshapes are mapped onto hls4ml "
                "bit-exactly here (hls4ml computes average pooling and Add with its own intermediate types)"
            )
        specs[node.name] = spec
        tensor_prec[node.output[0]] = result
    return specs


def hls_for(
    compiled: object,
    out_dir: str | Path,
    backend: str = "Vitis",
    io_type: str = "io_parallel",
    reuse_factor: int = 1,
    **kwargs: object,
) -> object:
    """The hls4ml project (``fpga.hls.HlsProject``; ``write()``/``compile()`` it) of the compiled model's
    accelerator part, every layer in the emulator's fixed-point formats. Needs a fixed-point model
    (``compile_onnx(model, "fixed<16,6>", calibration=...)``); int8 and msfp models are refused with
    the reason. ``kwargs`` go to ``export_hls`` (part, clock_period, strategy)."""
    from .hls import export_hls, prepare_onnx

    if compiled.report.get("format", "").split("<")[0] not in ("fixed", "ufixed", "ap_fixed", "ap_ufixed"):
        raise HlsError(
            f"the model is compiled to {compiled.report.get('format')}: HLS export needs a fixed-point format "
            "(hls4ml has no type for int8 with float scales or for block floating point); compile with "
            "--format fixed<16,6> (Python: format='fixed<16,6>') and calibration data"
        )
    model = accelerator_model(compiled)
    precisions = hls_precisions(compiled, prepare_onnx(model), model)
    project = export_hls(
        model,
        out_dir,
        backend=backend,
        io_type=io_type,
        reuse_factor=reuse_factor,
        layer_precision=precisions,
        fix_softmax=False,
        **kwargs,
    )
    project.notes.append(
        "accelerator part only, in the emulator's formats (hls4ml's exact accumulators unless the model sets "
        "one); the host part (e.g. softmax) runs in float on the host"
    )
    return project


# ---------------------------------------------------------------- QONNX and QDQ


def qonnx_formats(compiled: object, model: onnx.ModelProto) -> tuple[dict[str, str], list[str]]:
    """Tensor name -> format for ``export_qonnx`` (inputs, weights, biases, layer outputs), and notes.
    ``AP_RND`` has no QONNX mode: it is written as HALF_UP (``AP_RND_INF``), noted."""
    _check_exact_ops(compiled, model)
    program = compiled.program
    inits = {t.name for t in model.graph.initializer}
    formats: dict[str, FixedPoint] = {}
    for name in program.inputs:
        formats[name] = _fixed(program.tensors[name], f"input {name}", "QONNX export needs fixed point")
    layer_nodes = _layer_nodes(compiled, model)
    for layer in program.spec["layers"]:
        where = f"layer {layer['name']}"
        formats[layer["output"]] = _fixed(program.tensors[layer["output"]], f"{where} result", "use qdq_for")
        if layer["op"] not in ("dense", "conv"):
            continue
        weighted = [n for n in layer_nodes[layer["name"]] if n.op_type in ("Conv", "Gemm", "MatMul")]
        if not weighted:
            raise ExportError(f"{where}: no Conv/Gemm/MatMul node found in the accelerator graph")
        node = weighted[0]
        weight = _fixed(layer.get("weight"), f"{where} weight", "use qdq_for")
        bias = _fixed(layer.get("bias"), f"{where} bias", "use qdq_for")
        formats[node.input[1]] = weight
        bias_inits = list(node.input[2:3]) + [
            t for n in layer_nodes[layer["name"]] if n.op_type == "Add" for t in n.input if t in inits
        ]
        for t in bias_inits:
            formats[t] = bias
        if layer.get("accum"):
            raise ExportError(f"{where}: QONNX has no accumulator type; export without an accumulator override")
    notes = []
    for name, fmt in list(formats.items()):
        if fmt.rounding == "AP_RND":
            formats[name] = replace(fmt, rounding=RND_AS)
            notes.append(
                f"{name}: AP_RND (ties towards +inf) has no QONNX rounding mode and is written as HALF_UP "
                "(ties away from zero): the two differ only on negative values exactly half-way between codes"
            )
    return {name: str(fmt) for name, fmt in formats.items()}, notes


def qonnx_for(compiled: object) -> object:
    """The accelerator part as QONNX (``fpga.export.QonnxExport``) with the emulator's formats."""
    from .export import export_qonnx

    model = accelerator_model(compiled)
    formats, notes = qonnx_formats(compiled, model)
    exported = export_qonnx(model, formats)
    exported.notes.extend(notes)
    return exported


def qdq_for(compiled: object, calibration: np.ndarray | None = None) -> object:
    """The accelerator part as ONNX QDQ (``fpga.export.QdqExport``) with the int8 model's own activation
    scales and zero points (every tensor the emulator holds, outputs included) and its per-channel weight
    scales; biases stay float (onnxruntime adds them in float). ``calibration`` only shapes a probe
    batch (the scales come from the compiled model)."""
    from .export import export_qdq
    from .export.qdq import QdqExport

    if compiled.report.get("format", "").split("<")[0] != "int8":
        raise ExportError(
            f"the model is compiled to {compiled.report.get('format')}: QDQ export takes int8 models "
            "(use qonnx_for or hls_for for fixed point)"
        )
    model = accelerator_model(compiled)
    _check_exact_ops(compiled, model)
    tensors = compiled.program.tensors
    probe = calibration if calibration is not None else _probe(model)
    exported = export_qdq(model, probe[:8])
    graph = exported.model.graph
    inits = {t.name: t for t in graph.initializer}
    for name, fmt in tensors.items():
        if f"{name}_act_scale" in inits:
            _set(inits[f"{name}_act_scale"], np.array(fmt["scale"], np.float32))
            _set(inits[f"{name}_act_zero_point"], np.array(fmt["zero_point"], np.int8))
    _quantize_outputs(exported.model, tensors)
    inside = sorted(n[: -len("_act_scale")] for n in inits if n.endswith("_act_scale") and n[:-10] not in tensors)
    _unquantize(exported.model, inside)
    notes = ["activation scales and zero points are the compiled model's"]
    if inside:
        notes.append(f"tensors inside an emulator layer (e.g. a MatMul before its bias Add), left float: {inside}")
    return QdqExport(exported.model, {}, exported.notes + notes)


def _unquantize(model: onnx.ModelProto, names: list[str]) -> None:
    """Drop the QuantizeLinear/DequantizeLinear pair ``export_qdq`` put on each of ``names``: the
    emulator keeps these tensors exact inside one layer, so the QDQ graph must not round them."""
    graph = model.graph
    for name in names:
        q_name, dq_name = f"{name}_quantized", f"{name}_dequantized"
        drop = [n for n in graph.node if n.output[0] in (q_name, dq_name)]
        for node in drop:
            graph.node.remove(node)
        for node in graph.node:
            node.input[:] = [name if t == dq_name else t for t in node.input]
        for init in [t for t in graph.initializer if t.name in (f"{name}_act_scale", f"{name}_act_zero_point")]:
            graph.initializer.remove(init)


def _probe(model: onnx.ModelProto) -> np.ndarray:
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.zeros([2, *dims[1:]], np.float32)


def _set(init: onnx.TensorProto, value: np.ndarray) -> None:
    init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))


def _quantize_outputs(model: onnx.ModelProto, tensors: Mapping[str, Mapping]) -> None:
    """A QuantizeLinear/DequantizeLinear pair on every graph output the emulator holds in int8."""
    from onnx import helper, numpy_helper

    graph = model.graph
    for output in graph.output:
        fmt = tensors.get(output.name)
        if fmt is None or fmt.get("kind") != "int8":
            continue
        raw = f"{output.name}_unquantized"
        for node in graph.node:
            node.output[:] = [raw if t == output.name else t for t in node.output]
        params = [f"{output.name}_out_scale", f"{output.name}_out_zero_point"]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(fmt["scale"], np.float32), params[0]),
                numpy_helper.from_array(np.array(fmt["zero_point"], np.int8), params[1]),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("QuantizeLinear", [raw, *params], [f"{output.name}_q"]),
                helper.make_node("DequantizeLinear", [f"{output.name}_q", *params], [output.name]),
            ]
        )


# ---------------------------------------------------------------- comparison


def _host(compiled: object, x: np.ndarray, boundary: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs from accelerator outputs: the host part (onnxruntime) when there is one."""
    values = {compiled.inputs[0]: x, **boundary}
    session = compiled.pipeline.session()
    if session is not None:
        host_in = {i.name: values[i.name] for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        values.update(zip(names, session.run(names, host_in), strict=True))
    return {name: np.asarray(values[name]) for name in compiled.outputs}


def _classes(out: np.ndarray) -> np.ndarray | None:
    """Predicted classes: argmax of scores ``[N, C]`` (C > 1), or labels ``[N]``/``[N, 1]``; else None."""
    if out.dtype.kind == "f" and out.ndim >= 2 and out.shape[-1] > 1:
        return out.argmax(-1)
    if out.dtype.kind in "iuOUS" and (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        return out.reshape(len(out))
    return None


def _class_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    """The first score output (argmax), else the first label output, else None (no classes)."""
    scores = [n for n, a in outputs.items() if a.dtype.kind == "f" and _classes(a) is not None]
    return next(iter(scores or [n for n, a in outputs.items() if _classes(a) is not None]), None)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))


def run_qonnx_context(qonnx: object, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of a QONNX model run by qonnx's executor on ``x`` (the pre-``Quant`` value of a
    quantized tensor ``t`` is ``t_float``, as ``export_qonnx`` names it)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize

    from .export._graph import graph_input
    from .export.qonnx import _infer_shapes

    x = np.asarray(x, np.float32)
    wrapper = ModelWrapper(qonnx.model).transform(ChangeBatchSize(len(x)))
    wrapper = ModelWrapper(_infer_shapes(wrapper.model))
    return execute_onnx(wrapper, {graph_input(wrapper.model): x}, return_full_exec_context=True)


def _exact_sum(compiled: object, name: str, emulated: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The exact float64 value a fixed-point Dense/Conv producing ``name`` sums before its result cast
    (inputs as the emulator held them; products and sums of 16-bit codes are exact in float64), or None
    for other layers."""
    from edge_module.numerics.emulate import windows

    layer = next((lay for lay in compiled.program.spec["layers"] if lay["output"] == name), None)
    if layer is None or layer["scheme"] != "fixed" or layer["op"] not in ("dense", "conv") or layer.get("accum"):
        return None
    arrays = compiled.program.arrays
    w = np.ldexp(
        arrays[layer["arrays"]["weight"]].astype(np.float64), -(layer["weight"]["width"] - layer["weight"]["integer"])
    )
    b = np.ldexp(
        arrays[layer["arrays"]["bias"]].astype(np.float64), -(layer["bias"]["width"] - layer["bias"]["integer"])
    )
    x = np.asarray(emulated[layer["inputs"][0]], np.float64)
    if layer["op"] == "dense":
        return x @ w.T + b
    a = layer["attrs"]
    pads = tuple(int(v) for v in a["pads"])
    patches = windows(x, tuple(a["kernel_shape"]), pads, tuple(a["strides"]), tuple(a["dilations"]))
    n, oh, ow = patches.shape[:3]
    return (patches.reshape(n * oh * ow, -1) @ w.T + b).reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def qonnx_differences(compiled: object, context: Mapping[str, np.ndarray], x: np.ndarray) -> dict | None:
    """Where and why qonnx's executor differs from the emulator: the first tensor (in layer order) that
    differs, how many values, by how many LSBs, and how far the executor's pre-``Quant`` value lay from
    a rounding boundary. None when every tensor matches bit for bit."""
    emulated = compiled.program.run(np.asarray(x, np.float32), keep_all=True)
    order = list(compiled.program.inputs) + [layer["output"] for layer in compiled.program.spec["layers"]]
    for name in order:
        if name not in context:
            continue
        got, want = np.asarray(context[name], np.float64), np.asarray(emulated[name], np.float64)
        bad = got != want
        if not bad.any():
            continue
        fmt = compiled.program.tensors[name]
        lsb = 2.0 ** (fmt["integer"] - fmt["width"])
        steps = np.abs(got - want)[bad] / lsb
        found = {"tensor": name, "count": int(bad.sum()), "total": int(bad.size), "max_lsb": float(steps.max())}
        raw = context.get(f"{name}_float")
        exact = _exact_sum(compiled, name, emulated)
        if raw is not None and exact is not None:
            raw_lsb, exact_lsb = np.asarray(raw, np.float64)[bad] / lsb, exact[bad] / lsb
            found["max_float32_error_lsb"] = float(np.abs(raw_lsb - exact_lsb).max())
            tie = (exact_lsb - np.floor(exact_lsb) == 0.5) & (exact_lsb < 0)
            if fmt["rounding"] == "AP_RND" and tie.all():
                found["cause"] = (
                    f"rounding mode: {found['count']} values of {name} are negative ties, which AP_RND rounds "
                    "towards +inf and QONNX's HALF_UP away from zero (QONNX has no AP_RND mode)"
                )
            elif found["max_lsb"] == 1.0 and not tie.any() and found["max_float32_error_lsb"] > 0:
                found["cause"] = (
                    f"float32 accumulation in qonnx's executor: {found['count']} of {found['total']} values of "
                    f"{name} differ by one LSB; for each, onnxruntime's float32 MatMul/Conv sum before the Quant "
                    f"node was off the exact sum by up to {found['max_float32_error_lsb']:.2g} LSB and crossed a "
                    "rounding boundary (products of 16-bit codes need up to 32 bits, float32 keeps 24; the "
                    "emulator and the C simulation sum exactly)"
                )
        if "cause" not in found:
            if fmt["overflow"] == "AP_WRAP" and found["max_lsb"] > 1.0:
                found["cause"] = f"{name} overflows its {describe(fmt)}: ap_fixed wraps, QONNX Quant saturates"
            else:
                found["cause"] = (
                    f"{found['count']} values of {name} differ (up to {found['max_lsb']:g} LSB): unexplained"
                )
        return found
    return None


WHY = {
    ("float", "emulated"): "quantization: the emulator holds every tensor, weight and bias in its format",
    ("float", "csim"): "quantization (the C simulation computes in the same formats as the emulator)",
    ("float", "qonnx"): "quantization (the QONNX graph quantizes with the same formats)",
    ("float", "qdq"): "quantization to int8 (QDQ with the compiled model's scales)",
}


def _explain(a: str, b: str, exact: float, compiled: object, extra: Mapping[str, list[str]]) -> str:
    if exact == 1.0:
        return "bit-exact"
    if (a, b) in WHY:
        return WHY[(a, b)]
    reasons = []
    kinds = {a, b}
    if "qonnx" in kinds and extra.get("qonnx_cause"):
        reasons += extra["qonnx_cause"]
    elif "qonnx" in kinds:
        reasons.append(
            "qonnx's executor runs MatMul/Conv in float32 (onnxruntime): products of two 16-bit codes need up to "
            "32 bits and their sums more, so float32 (24-bit mantissa) rounds them before the Quant node, and "
            "values that fall within that error of a rounding boundary land one code apart"
        )
        reasons.append("QONNX Quant saturates, so AP_WRAP tensors differ once a value overflows")
        reasons += extra.get("qonnx", [])
    if "csim" in kinds:
        reasons += [n for n in extra.get("csim", []) if "precision" in n.lower()]
        if "emulated" in kinds:
            reasons.append(
                "the C simulation and the emulator use the same formats and exact accumulators; a difference "
                "means a layer hls4ml computes with its own types (see the project's precisions)"
            )
    if "qdq" in kinds:
        reasons.append(
            "onnxruntime runs the QDQ graph with float biases and float (or fused integer) arithmetic, while the "
            "emulator adds an int32 bias rounded to the accumulator scale and requantizes in float32"
        )
    return "; ".join(reasons) or "unexplained difference"


def compare(
    compiled: object,
    x: np.ndarray,
    y: np.ndarray | None = None,
    hls: object | None = None,
    qonnx: object | None = None,
    qdq: object | None = None,
    batch: int = 256,
    output: str | None = None,
) -> dict:
    """Agreement of float, emulated, the hls4ml C simulation (``hls``: an HlsProject), the QONNX
    executor (``qonnx``: a QonnxExport) and onnxruntime on QDQ (``qdq``: a QdqExport) on ``x``.

    Returns ``{"n", "outputs": names, "output", "accuracy": {kind: acc} (when ``y``), "pairs": {"a vs b":
    {"top1_agreement", "bit_exact_fraction", "max_abs_difference", "explanation"}}}``. Bit-exact
    fractions compare the accelerator outputs (before the host part); top-1 the model output ``output``
    (default: the first score output, argmax, else the first label output; agreement and accuracy are
    None when the model has no class output). With ``qonnx``, ``"qonnx_differences"`` locates and
    explains any difference (``qonnx_differences``)."""
    x = np.asarray(x, np.float32)
    result_extra: dict = {}
    model = accelerator_model(compiled)
    boundary_names = list(compiled.program.outputs)
    accel: dict[str, dict[str, np.ndarray]] = {"float": {}, "emulated": {}}
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        for kind, values in (("float", _ort(model, part)), ("emulated", compiled.program.run(part))):
            for name in boundary_names:
                accel[kind].setdefault(name, []).append(np.asarray(values[name], np.float32))
    accel = {kind: {n: np.concatenate(v) for n, v in d.items()} for kind, d in accel.items()}
    extra: dict[str, list[str]] = {}
    if len(boundary_names) != 1 and (hls is not None or qonnx is not None):
        raise ValueError(f"the accelerator part has outputs {boundary_names}; compare takes one for hls/qonnx")
    shape = accel["emulated"][boundary_names[0]].shape
    if hls is not None:
        accel["csim"] = {boundary_names[0]: hls.predict(x).reshape(shape).astype(np.float32)}
        extra["csim"] = list(hls.notes)
    if qonnx is not None:
        context = run_qonnx_context(qonnx, x)
        out = qonnx.model.graph.output[0].name
        accel["qonnx"] = {boundary_names[0]: np.asarray(context[out], np.float32).reshape(shape)}
        extra["qonnx"] = list(qonnx.notes)
        found = qonnx_differences(compiled, context, x)
        if found is not None:
            extra["qonnx_cause"] = [found["cause"]]
        result_extra = {"qonnx_differences": found}
    if qdq is not None:
        accel["qdq"] = {n: v.astype(np.float32) for n, v in _ort(qdq.model, x).items() if n in boundary_names}
    models = {kind: _host(compiled, x, values) for kind, values in accel.items()}
    output = output or _class_output(models["emulated"])
    if output is not None and output not in models["emulated"]:
        raise ValueError(f"output {output!r} is not a model output; the model has {list(compiled.outputs)}")
    final = {kind: None if output is None else _classes(outs[output]) for kind, outs in models.items()}
    result: dict = {"n": len(x), "outputs": boundary_names, "output": output, "pairs": {}, **result_extra}
    if y is not None:
        y = np.asarray(y).reshape(len(x))
        result["accuracy"] = {kind: None if p is None else float((p == y).mean()) for kind, p in final.items()}
    for a, b in combinations(list(final), 2):
        exact = float(np.mean([np.mean(accel[a][n] == accel[b][n]) for n in boundary_names]))
        diff = max(float(np.abs(accel[a][n].astype(np.float64) - accel[b][n]).max()) for n in boundary_names)
        agree = None if final[a] is None else float((final[a] == final[b]).mean())
        result["pairs"][f"{a} vs {b}"] = {
            "top1_agreement": agree,
            "bit_exact_fraction": exact,
            "max_abs_difference": diff,
            "explanation": _explain(a, b, exact, compiled, extra),
        }
    return result
