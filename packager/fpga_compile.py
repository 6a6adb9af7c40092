"""Compile a registered model for an FPGA (``fpga.compile_onnx``), measure it and register the package.

``compile_registered(ws, "digits", format="int8", calibration="cal.npz", labels="test.npz")`` loads
the model (a non-ONNX model is first converted with ``packager.convert`` and registered as
``<name>-onnx``), compiles it, compares float onnxruntime with the emulated accelerator on the
evaluation rows (accuracy with labels, prediction agreement always) and registers ``<name>-fpga``
(framework ``fpga``) as a folder the serving runtime (``edge_module.scoring.fpga_runtime``) serves::

    fpga.json, program.json, program.npz, host.onnx, accelerator.onnx   the package
    report.json                                                         this module's report
    export/   QONNX / QDQ files (when ``fpga.export`` is available)
    hls/      the HLS project (``--hls``; ``fpga.hls.export_hls``)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import EdgepackError, InvalidInputError
from packager.quantize import data as qdata
from packager.quantize import measure
from packager.registry import Model
from packager.registry.names import validate_name
from packager.workspace import Workspace

HLS_BACKENDS = ("vivado", "vitis")
IO_TYPES = ("parallel", "stream")
REPORT_JSON = "report.json"
EVAL_BATCH = 256

Progress = Callable[[str], None]


@dataclass
class FpgaCompileResult:
    model: Model  # the registered <name>-fpga package
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.serialize(), "report": self.report}


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["fc1=fixed<18,8>", ...]`` → ``{"fc1": "fixed<18,8>"}``."""
    found: dict[str, str] = {}
    for item in items:
        layer, sep, fmt = item.partition("=")
        if not sep or not layer.strip() or not fmt.strip():
            raise InvalidInputError(f"invalid --override {item!r}: use LAYER=FORMAT, e.g. fc1=fixed<18,8>")
        found[layer.strip()] = fmt.strip()
    return found


def _onnx_source(workspace: Workspace, name: str, version: int | None, notes: list[str]) -> Model:
    """The registered model, or its ONNX conversion (registered as ``<name>-onnx``) for other frameworks."""
    source = Model(workspace, name, version=version)
    framework = source.model_framework
    if framework == Model.Framework.FPGA:
        raise InvalidInputError(f"model {source.id} is already an FPGA package; compile the model it came from")
    if framework == Model.Framework.ONNX:
        return source
    from packager.convert import ConvertOptions, convert_model

    try:
        converted = convert_model(workspace, source.name, source.version, options=ConvertOptions(target="onnx"))
    except EdgepackError as exc:
        raise type(exc)(
            f"model {source.id} is a {framework} model and converting it to ONNX failed ({exc}); run "
            f"`edgepack convert {source.id} --to onnx` with the options it needs (--input-shape, --sample), then "
            f"compile the ONNX model it registers"
        ) from None
    notes.append(f"{source.id} ({framework}) was converted to ONNX first: registered {converted.model.id}")
    return converted.model


def _find_onnx(model: Model) -> str:
    paths = [f.path for f in model.files if f.path.lower().endswith(".onnx")]
    if len(paths) != 1:
        raise InvalidInputError(
            f"model {model.id} has {len(paths)} .onnx files ({', '.join(paths) or 'none'}); register the ONNX "
            "model to compile on its own"
        )
    return paths[0]


def _batched(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], data: qdata.Dataset) -> list[list[np.ndarray]]:
    n = qdata.rows(data)
    return [run({k: v[i : i + EVAL_BATCH] for k, v in data.items()}) for i in range(0, n, EVAL_BATCH)]


Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _evaluate(
    runs: Mapping[str, Run], outputs: list[str], data: qdata.Dataset, labels: np.ndarray | None, what: str
) -> dict[str, Any]:
    """Float vs emulated (vs C-sim when ``runs`` has ``csim``) on ``data``: accuracy with labels, how often
    the predictions agree, the emulated outputs' differences from float."""
    results = {name: _batched(run, data) for name, run in runs.items()}
    ref = results["float"]
    result: dict[str, Any] = {"rows": qdata.rows(data), "data": what, "float": None, "emulated": None, "csim": None}
    index = measure.class_output(outputs, ref[0])
    if index is not None:
        pred = {name: measure.predictions(got, index) for name, got in results.items()}
        result["output"] = outputs[index]
        result["agreement"] = float(np.mean(pred["emulated"] == pred["float"]))
        if "csim" in pred:
            result["csim_agreement_float"] = float(np.mean(pred["csim"] == pred["float"]))
            result["csim_agreement_emulated"] = float(np.mean(pred["csim"] == pred["emulated"]))
        if labels is not None:
            for name, p in pred.items():
                result[name] = measure.accuracy(p, labels)
    result["outputs"] = [d.to_dict() for d in measure.output_diffs(outputs, ref, results["emulated"])]
    return result


def _split(compile_report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "accelerator": [{"name": lay["name"], "op": lay["op"]} for lay in compile_report.get("accelerator", [])],
        "host": [
            {"name": op["name"], "op": op["op"], "reason": op.get("reason", "")}
            for op in compile_report.get("host", [])
        ],
        "boundary": list(compile_report.get("boundary", [])),
    }


def _exports(model_path: Path, fmt: str, cal: qdata.Dataset | None, target: Path, notes: list[str]) -> dict[str, Any]:
    """QONNX (fixed point) and QDQ (int8) files through ``fpga.export`` when this version has it; a
    failed export is a note, not a failure of the package."""
    try:
        export = import_module("fpga.export")
    except ImportError:
        return {"available": False}
    done: dict[str, Any] = {"available": True}
    x = next(iter(cal.values())) if cal else None
    jobs = []
    if fmt.startswith(("fixed<", "ap_fixed<", "ufixed<")):
        jobs.append(("qonnx", "model.qonnx.onnx", lambda: export.export_qonnx(str(model_path), default=fmt)))
        done["qonnx_formats"] = f"{fmt} on every tensor (the calibrated per-layer precisions are in the HLS project)"
    if fmt.startswith("int8") and x is not None:
        jobs.append(("qdq", "model.qdq.onnx", lambda: export.export_qdq(str(model_path), x, fmt)))
    for kind, filename, make in jobs:
        try:
            target.mkdir(parents=True, exist_ok=True)
            make().save(target / filename)
            done[kind] = f"{target.name}/{filename}"
        except Exception as exc:
            notes.append(f"{kind} export failed: {type(exc).__name__}: {exc}")
            done[kind] = None
    return done


class _CsimAccelerator:
    """The hls4ml C simulation in the accelerator's place (one input, one boundary tensor)."""

    def __init__(self, project: Any, program: Any) -> None:
        self.project, self.inputs, self.outputs = project, list(program.inputs), list(program.outputs)
        self.program = program

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.inputs[0]]
        shape = self.program.run({self.inputs[0]: x[:1]})[self.outputs[0]].shape[1:]
        return {self.outputs[0]: np.asarray(self.project.predict(x), np.float32).reshape(len(x), *shape)}


def _layer_precisions(report: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The compiled fixed-point formats per layer (and the input's), for hls4ml."""
    out: dict[str, dict[str, str]] = {}
    for lay in report.get("layers", []):
        if lay.get("scheme") != "fixed":
            return {}
        out[lay["name"]] = {k: lay[k] for k in ("weight", "bias", "result", "accum") if lay.get(k)}
    return out


def _without_no_ops(model: Any) -> Any:
    """The float accelerator part as hls4ml's ONNX front end takes it: no Identity, no float-to-float
    Cast (skl2onnx starts with one; the compiler folded them), no repeated value infos."""
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        no_op = node.op_type == "Identity" or (node.op_type == "Cast" and attrs.get("to") == TensorProto.FLOAT)
        if not no_op or node.output[0] in outputs:
            continue
        for other in graph.node:
            other.input[:] = [node.input[0] if t == node.output[0] else t for t in other.input]
        graph.node.remove(node)
    del graph.value_info[:]  # the extracted part repeats its inputs there, which qonnx refuses
    return model


def _hls(
    compiled: Any, work: Path, target: Path, backend: str, io: str, reuse: int, simulate: bool
) -> tuple[dict[str, Any], Run | None]:
    """The accelerator part as an hls4ml project (``fpga.hls.export_hls``) in ``target``: its report (the
    estimates among it) and, when ``simulate``, a run function of the model with the compiled C
    simulation in the accelerator's place. A clear error when hls4ml or ``fpga.hls`` is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hls4ml imports TensorFlow: keep its banner off stderr
    try:
        from fpga.hls import HlsError, export_hls
    except ImportError as exc:
        raise EdgepackError(
            f"--hls {backend}: this install has no HLS export ({exc}); install hls4ml (pip install 'edgepack[hls]') "
            "or compile without --hls"
        ) from None
    if compiled.accelerator_bytes is None:
        raise EdgepackError("--hls: the compiled model has no accelerator part to export")
    import onnx

    accelerator = _without_no_ops(onnx.load_from_string(compiled.accelerator_bytes))
    source = work / "accelerator.onnx"
    onnx.save(accelerator, str(source))
    fmt = str(compiled.report.get("format", ""))
    precisions = _layer_precisions(compiled.report)
    options: dict[str, Any] = {"layer_precision": precisions} if precisions else {}
    input_format = compiled.report.get("tensors", {}).get(compiled.inputs[0]) if precisions else None
    if isinstance(input_format, str) and "fixed<" in input_format:
        options["default_precision"] = input_format  # every layer is named: the default is the input's
    elif fmt.startswith(("fixed<", "ap_fixed<")):
        options["default_precision"] = fmt
    try:
        project = export_hls(str(source), target, backend=backend, io_type=f"io_{io}", reuse_factor=reuse, **options)
        project.write()
        if simulate:
            project.compile()
    except ImportError as exc:
        raise EdgepackError(f"--hls {backend} needs hls4ml: pip install 'edgepack[hls]' ({exc})") from None
    except HlsError as exc:
        raise EdgepackError(f"--hls {backend}: {exc}") from None
    report = project.report()
    report["files"] = target.name
    if not precisions:
        report["notes"] = [
            *report.get("notes", []),
            f"{fmt} has no fixed-point equivalent: the HLS project uses hls4ml's default fixed point, so the "
            "C simulation may differ from the emulator",
        ]
    run = None
    if simulate:
        if len(compiled.program.inputs) != 1 or len(compiled.program.outputs) != 1:
            report["notes"].append("C simulation not compared: the accelerator has several inputs or outputs")
        else:
            from edge_module.scoring.fpga_runtime import FpgaPipeline

            pipeline = FpgaPipeline(
                _CsimAccelerator(project, compiled.program), compiled.host_bytes, compiled.inputs, compiled.outputs
            )

            def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                result = pipeline.run(feeds)
                return [result[n] for n in compiled.outputs]

    return report, run


def compile_registered(
    workspace: Workspace,
    name: str,
    version: int | None = None,
    *,
    format: str = "fixed<16,6>",
    calibration: qdata.DataSource | None = None,
    labels: Any = None,
    overrides: Mapping[str, str] | None = None,
    hls: str | None = None,
    io: str = "parallel",
    reuse: int = 1,
    output_name: str | None = None,
    progress: Progress | None = None,
) -> FpgaCompileResult:
    """Compile registered model ``name`` for an FPGA and register ``<name>-fpga`` (see the module doc).

    ``calibration``: calibration (and, without labelled inputs, evaluation) rows as for ``edgepack
    quantize`` (default: the registered sample input); ``labels``: a .npy of labels for those rows or an
    .npz with ``x`` and ``y``. Format errors (``fpga.formats.FormatError``) raise :class:`InvalidInputError`."""
    import onnx

    from fpga import compile_onnx
    from fpga.formats import FormatError

    if hls is not None and hls not in HLS_BACKENDS:
        raise InvalidInputError(f"unknown HLS backend {hls!r}: choose {' or '.join(HLS_BACKENDS)}")
    if io not in IO_TYPES:
        raise InvalidInputError(f"unknown io type {io!r}: choose {' or '.join(IO_TYPES)}")
    if reuse < 1:
        raise InvalidInputError(f"invalid reuse factor {reuse}: use 1 or more")
    step = progress or (lambda stage: None)
    notes: list[str] = []
    source = _onnx_source(workspace, name, version, notes)
    target_name = output_name or f"{name}-fpga"
    validate_name(target_name)
    onnx_rel = _find_onnx(source)

    with tempfile.TemporaryDirectory(prefix="edgepack-fpga-") as tmp:
        work = Path(tmp)
        source.download(work / "src")
        model_path = work / "src" / onnx_rel
        try:
            float_session = measure.session(model_path, 1)
        except Exception as exc:
            raise InvalidInputError(f"model {source.id}: onnxruntime cannot load {onnx_rel}: {exc}") from None
        specs = [qdata.InputSpec.from_ort(i) for i in float_session.get_inputs()]
        outputs = [o.name for o in float_session.get_outputs()]

        cal: qdata.Dataset | None = None
        if calibration is not None:
            cal = qdata.to_dataset(calibration, specs, "calibration")
        else:
            sample = qdata.sample_to_source(source.load_sample_input())
            if sample is not None:
                cal = qdata.to_dataset(sample, specs, "registered sample input")
        eval_data, y, what = cal, None, "calibration data" if calibration is not None else "registered sample input"
        if labels is not None:
            y, labelled = qdata.load_labels(labels, specs)
            if labelled is not None:
                eval_data, what = labelled, "labels file"
            if eval_data is None:
                raise InvalidInputError("--labels without inputs: give --calibration FILE.npz, or an .npz with x and y")
            if len(y) != qdata.rows(eval_data):
                raise InvalidInputError(
                    f"labels have {len(y)} rows but the {what} has {qdata.rows(eval_data)}; give one label per row"
                )

        step("compile")
        try:
            compiled = compile_onnx(onnx.load(str(model_path)), format, calibration=cal, overrides=overrides)
        except FormatError as exc:
            hint = "; give --calibration FILE.npz" if cal is None and "calibration" in str(exc) else ""
            raise InvalidInputError(f"{exc}{hint}") from None
        except ValueError as exc:
            raise InvalidInputError(f"model {source.id} cannot be compiled for the FPGA: {exc}") from None

        package = work / target_name
        compiled.save(package)
        hls_report, csim_run = None, None
        if hls is not None:
            step("hls")
            hls_report, csim_run = _hls(compiled, work, package / "hls", hls, io, reuse, eval_data is not None)
        step("evaluate")
        evaluation = None
        if eval_data is not None:

            def float_run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                return float_session.run(outputs, feeds)

            def emulated_run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                result = compiled.run(feeds)
                return [result[n] for n in outputs]

            runs: dict[str, Run] = {"float": float_run, "emulated": emulated_run}
            if csim_run is not None:
                runs["csim"] = csim_run
            evaluation = _evaluate(runs, outputs, eval_data, y, what)
        else:
            notes.append("no evaluation data: give --calibration (and --labels) to compare float and emulated")
        step("export")
        exports = _exports(model_path, str(compiled.report.get("format", format)), cal, package / "export", notes)
        split = _split(compiled.report)
        if split["host"]:
            ops = ", ".join(f"{op['name']} ({op['op']})" for op in split["host"])
            notes.append(f"on the host (onnxruntime), not the accelerator: {ops}")
        report = {
            "source": source.id,
            "target": None,
            "format": compiled.report.get("format", format),
            "calibrated": cal is not None,
            "overrides": dict(overrides or {}),
            "accuracy": evaluation,
            "split": split,
            "layers": compiled.report.get("layers", []),
            "exports": exports,
            "hls": hls_report,
            "estimates": (hls_report or {}).get("estimates"),
            "notes": notes,
        }
        (package / REPORT_JSON).write_text(json.dumps(report, indent=1, default=str))

        step("register")
        properties = {
            "derived_from": source.id,
            "fpga_format": str(report["format"]),
            "accelerator_layers": str(len(split["accelerator"])),
            "host_ops": ",".join(op["op"] for op in split["host"]) or "none",
        }
        if evaluation and evaluation.get("float") is not None:
            properties["accuracy_float"] = f"{evaluation['float']:.4f}"
            properties["accuracy_emulated"] = f"{evaluation['emulated']:.4f}"
        sample = source.load_sample_input()
        registered = Model.register(
            workspace,
            package,
            target_name,
            tags=dict(source.tags),
            properties=properties,
            description=f"FPGA package of {source.id} ({report['format']}, emulated bit-accurately)",
            model_framework=Model.Framework.FPGA,
            sample_input=sample if sample is not None and not isinstance(sample, bytes) else None,
        )
    report["target"] = registered.id
    return FpgaCompileResult(registered, report)
