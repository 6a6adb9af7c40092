"""Compile a registered model for an FPGA (``fpga.compile_onnx``), measure it and register the package.

``compile_registered(ws, "digits", format="int8", calibration="cal.npz", labels="test.npz")`` loads
the model (a non-ONNX model is first converted with ``packager.convert`` and registered as
``<name>-onnx``), compiles it, compares float onnxruntime with the emulated accelerator on the
evaluation rows (accuracy with labels, prediction agreement always) and registers ``<name>-fpga``
(framework ``fpga``) as a folder the serving runtime (``edge_module.scoring.fpga_runtime``) serves::

    fpga.json, program.json, program.npz, host.onnx, accelerator.onnx   the package
    report.json                                                         this module's report
    export/   the accelerator part as QONNX (fixed point) or QDQ (int8): ``fpga.toolchain``
    hls/      the HLS project (``--hls``; ``fpga.toolchain.hls_for``)

The comparison (float, emulated, C simulation, QONNX, QDQ) is ``fpga.toolchain.compare``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import EdgepackError, InvalidInputError
from packager.quantize import data as qdata
from packager.quantize import measure
from packager.quantize.core import find_onnx
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


def _evaluate(
    compiled: Any, data: qdata.Dataset, labels: np.ndarray | None, what: str, exported: Mapping[str, Any]
) -> dict[str, Any]:
    """Float vs emulated (vs the C simulation, QONNX and QDQ in ``exported``) on ``data`` through
    ``fpga.toolchain.compare``: accuracy with labels, how often the predictions agree, how many
    accelerator outputs are bit-exact with the emulator, and why any two differ."""
    from fpga.toolchain import compare

    x = next(iter(data.values()))
    found = compare(compiled, x, labels, batch=EVAL_BATCH, **exported)
    pairs, accuracy = found["pairs"], found.get("accuracy") or {}
    result: dict[str, Any] = {"rows": qdata.rows(data), "data": what, "output": found["output"]}
    for kind in ("float", "emulated", "csim", "qonnx", "qdq"):
        result[kind] = accuracy.get(kind)
    result["agreement"] = pairs["float vs emulated"]["top1_agreement"]
    if "emulated vs csim" in pairs:
        result["csim_agreement_float"] = pairs["float vs csim"]["top1_agreement"]
        result["csim_agreement_emulated"] = pairs["emulated vs csim"]["top1_agreement"]
    result["bit_exact"] = {
        kind.removeprefix("emulated vs "): pair["bit_exact_fraction"]
        for kind, pair in pairs.items()
        if kind.startswith("emulated vs ")
    }
    result["pairs"] = pairs
    if "qonnx_differences" in found:
        result["qonnx_differences"] = found["qonnx_differences"]
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


def _exports(compiled: Any, cal: qdata.Dataset | None, target: Path, notes: list[str]) -> tuple[dict, dict]:
    """The accelerator part as QONNX (fixed point, the per-layer formats; ``fpga.toolchain.qonnx_for``)
    or QDQ (int8, the compiled scales; ``qdq_for``) in ``target``: the report's entry and the exports
    by kind for ``compare``. A failed export is a note, not a failure of the package."""
    try:
        from fpga.toolchain import qdq_for, qonnx_for
    except ImportError:
        return {"available": False}, {}
    family = str(compiled.report.get("format", "")).split("<")[0]
    x = next(iter(cal.values())) if cal else None
    jobs = {
        "qonnx": ("model.qonnx.onnx", lambda: qonnx_for(compiled)) if "fixed" in family else None,
        "qdq": ("model.qdq.onnx", lambda: qdq_for(compiled, x)) if family == "int8" else None,
    }
    done: dict[str, Any] = {"available": True, "part": "accelerator (the host part runs in float on the host)"}
    made: dict[str, Any] = {}
    for kind, job in jobs.items():
        if job is None:
            continue
        filename, make = job
        try:
            exported = make()
            target.mkdir(parents=True, exist_ok=True)
            exported.save(target / filename)
        except Exception as exc:
            notes.append(f"{kind} export failed: {type(exc).__name__}: {exc}")
            done[kind] = None
            continue
        done[kind], made[kind] = f"{target.name}/{filename}", exported
        done[f"{kind}_notes"] = list(exported.notes)
    return done, made


def _hls(compiled: Any, target: Path, backend: str, io: str, reuse: int, simulate: bool) -> tuple[dict, Any]:
    """The accelerator part as an hls4ml project in the compiled per-layer formats (``fpga.toolchain.
    hls_for``) in ``target``, its C simulation compiled when ``simulate``: its report (the estimates among
    it) and the project for ``compare`` (None without simulation). A format or layer hls4ml cannot take
    bit-exactly is refused (exit 2) with the reason; a missing hls4ml is a clear error."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hls4ml imports TensorFlow: keep its banner off stderr
    try:
        from fpga.export import ExportError
        from fpga.hls import HlsError
        from fpga.toolchain import hls_for
    except ImportError as exc:
        raise EdgepackError(
            f"--hls {backend}: this install has no HLS export ({exc}); install hls4ml (pip install 'edgepack[fpga]') "
            "or compile without --hls"
        ) from None
    try:
        project = hls_for(compiled, target, backend=backend, io_type=f"io_{io}", reuse_factor=reuse)
    except ImportError as exc:
        raise EdgepackError(f"--hls {backend} needs hls4ml: pip install 'edgepack[fpga]' ({exc})") from None
    except (HlsError, ExportError) as exc:
        raise InvalidInputError(f"--hls {backend}: {exc}") from None
    try:
        project.write()
        if simulate:
            project.compile()
    except HlsError as exc:
        raise EdgepackError(f"--hls {backend}: {exc}") from None
    report = project.report()
    report["files"] = target.name
    if simulate and len(compiled.program.outputs) != 1:
        report["notes"].append("C simulation not compared: the accelerator part has several outputs")
        simulate = False
    return report, project if simulate else None


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
    onnx_rel = find_onnx(source, "compile")

    with tempfile.TemporaryDirectory(prefix="edgepack-fpga-") as tmp:
        work = Path(tmp)
        source.download(work / "src")
        model_path = work / "src" / onnx_rel
        try:
            float_session = measure.session(model_path, 1)
        except Exception as exc:
            raise InvalidInputError(f"model {source.id}: onnxruntime cannot load {onnx_rel}: {exc}") from None
        specs = [qdata.InputSpec.from_ort(i) for i in float_session.get_inputs()]

        registered_sample = source.load_sample_input()  # calibration by default, and the package's sample
        cal: qdata.Dataset | None = None
        if calibration is not None:
            cal = qdata.to_dataset(calibration, specs, "calibration")
        else:
            sample = qdata.sample_to_source(registered_sample)
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
        hls_report, project = None, None
        evaluable = eval_data is not None and len(compiled.inputs) == 1
        if hls is not None:
            step("hls")
            hls_report, project = _hls(compiled, package / "hls", hls, io, reuse, evaluable)
        step("export")
        exports, exported = _exports(compiled, cal, package / "export", notes)
        step("evaluate")
        evaluation = None
        if evaluable:
            evaluation = _evaluate(compiled, eval_data, y, what, {"hls": project, **exported})
        elif eval_data is not None:
            notes.append(f"not evaluated: the model takes {len(compiled.inputs)} inputs; compare takes one")
        else:
            notes.append("no evaluation data: give --calibration (and --labels) to compare float and emulated")
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
        registered = Model.register(
            workspace,
            package,
            target_name,
            tags=dict(source.tags),
            properties=properties,
            description=f"FPGA package of {source.id} ({report['format']}, emulated bit-accurately)",
            model_framework=Model.Framework.FPGA,
            sample_input=registered_sample if not isinstance(registered_sample, bytes) else None,
        )
    report["target"] = registered.id
    return FpgaCompileResult(registered, report)
