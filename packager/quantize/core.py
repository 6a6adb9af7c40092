"""INT8 quantization of a registered ONNX model with onnxruntime.quantization, measured and registered.

``quantize_model`` downloads the model, pre-processes it (``quant_pre_process``), quantizes it
(static QDQ with calibration, or dynamic), compares it with the FP32 model on the evaluation data
(output differences, accuracy with labels, latency at batch 1 and 64) and registers it as a new
model whose properties record where it came from.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from packager.errors import EdgepackError, InvalidInputError
from packager.fs import publish_file
from packager.quantize import data as qdata
from packager.quantize import measure
from packager.quantize.measure import OutputDiff
from packager.registry import Model
from packager.registry.names import validate_name
from packager.workspace import Workspace

FORMATS = ("qdq", "dynamic")
METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("int8", "uint8")
LATENCY_BATCHES = (1, 64)

# Ops onnxruntime can give int8 weights or kernels; a model with none of them has nothing to quantize.
QUANTIZABLE_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM", "Attention", "EmbedLayerNormalization", "Einsum"}
)
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_INT_KERNELS = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QGemm"})

# progress(stage, done, total): stages "preprocess", "calibrate" (one step per batch), "quantize",
# "evaluate", "latency", "register".
Progress = Callable[[str, int, int | None], None]


class QuantizationError(EdgepackError):
    """onnxruntime could not quantize the model, or the quantized model does not run."""


class QuantizeWarning(UserWarning):
    """Something degraded but quantization went on (e.g. pre-processing failed)."""


@dataclass(frozen=True)
class Latency:
    """Best-of-N time of one ``run`` at a batch size, FP32 and INT8, same feeds and thread count."""

    batch: int
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


@dataclass
class QuantizeReport:
    """What quantization did and what it cost. Accuracies are fractions (0.97), sizes bytes."""

    source: str
    target: str | None
    format: str
    per_channel: bool
    calibration_method: str | None  # None for dynamic quantization
    activation_type: str
    weight_type: str
    preprocessed: bool
    quantized_nodes: int
    total_nodes: int
    calibration_rows: int | None
    eval_rows: int
    size_before: int
    size_after: int
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_output: str | None = None
    latency: list[Latency] = field(default_factory=list)
    threads: int = 1
    outputs: list[OutputDiff] = field(default_factory=list)
    quantizer: str = "onnxruntime"
    quantizer_version: str = ort.__version__
    warnings: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before if self.size_before else float("nan")

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_before - self.accuracy_after

    @property
    def max_abs_diff(self) -> float | None:
        """Largest difference over the float outputs (scores, probabilities); None if there are none."""
        floats = [d.max_abs_diff for d in self.outputs if d.max_abs_diff is not None and d.mismatch_rate is None]
        return max(floats) if floats else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("latency", "outputs", "warnings")}
        out.update(
            size_ratio=self.size_ratio,
            accuracy_drop=self.accuracy_drop,
            max_abs_diff=self.max_abs_diff,
            latency=[lat.to_dict() for lat in self.latency],
            outputs=[d.to_dict() for d in self.outputs],
            warnings=list(self.warnings),
        )
        return out


@dataclass
class QuantizeResult:
    model: Model  # the registered INT8 model
    report: QuantizeReport


# -- helpers -------------------------------------------------------------------------------------------


class _Reader:
    """A ``CalibrationDataReader`` over prepared batches, reporting each batch to ``progress``."""

    def __init__(self, batches: list[qdata.Dataset], progress: Progress | None):
        self.batches = batches
        self.progress = progress
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        feeds = self.batches[self.index]
        self.index += 1
        if self.progress:
            self.progress("calibrate", self.index, len(self.batches))
        return feeds

    def rewind(self) -> None:
        self.index = 0

    def __len__(self) -> int:
        return len(self.batches)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"onnxruntime: {record.getMessage().strip()}"
        if msg not in self.sink:
            self.sink.append(msg)


@contextlib.contextmanager
def _quiet(sink: list[str]) -> Iterator[None]:
    """Keep onnxruntime.quantization's prints off stdout (``--json``) and collect its logged warnings."""
    handler = _Collect(sink)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeHandler(handler)


def find_onnx(model: Model, use: str = "quantize") -> str:
    """The path of the one ``.onnx`` file of ``model`` (to ``use`` it: quantize, compile), else a clear error."""
    paths = [f.path for f in model.files if f.path.lower().endswith(".onnx")]
    if len(paths) == 1:
        return paths[0]
    if not paths:
        raise InvalidInputError(f"model {model.id} has no .onnx file; register the ONNX model file or folder")
    raise InvalidInputError(
        f"model {model.id} has {len(paths)} .onnx files ({', '.join(paths)}); register the one to {use} on its own"
    )


_SYMBOLIC_LITTER = "sym_shape_infer_temp.onnx"


@contextlib.contextmanager
def _no_symbolic_litter() -> Iterator[None]:
    """Remove what onnxruntime's symbolic shape inference leaves in the *current directory* when it fails:
    ``sym_shape_infer_temp.onnx`` and its external data (``<uuid>.data``, for tensors of 1 kB or more)."""
    temp = Path.cwd() / _SYMBOLIC_LITTER
    before = temp.stat().st_mtime_ns if temp.exists() else None
    try:
        yield
    finally:
        if temp.exists() and temp.stat().st_mtime_ns != before:
            with contextlib.suppress(Exception):
                litter = onnx.load(str(temp), load_external_data=False)
                for t in litter.graph.initializer:
                    if t.data_location == onnx.TensorProto.EXTERNAL:
                        loc = next((e.value for e in t.external_data if e.key == "location"), "")
                        if loc and Path(loc).name == loc:  # a bare file name, beside the temp model
                            (temp.parent / loc).unlink(missing_ok=True)
            temp.unlink(missing_ok=True)


def _preprocess(src: Path, dst: Path, notes: list[str]) -> Path | None:
    """``quant_pre_process`` (shape inference and graph optimisation); falls back to ONNX shape inference
    only when symbolic shape inference fails, and returns None when pre-processing fails altogether."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    first_error = None
    for skip_symbolic in (False, True):
        try:
            with _quiet([]), _no_symbolic_litter():
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
        except Exception as exc:  # onnxruntime raises bare Exceptions here
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        if skip_symbolic:
            notes.append(
                f"symbolic shape inference failed ({first_error}); pre-processed with ONNX shape inference only"
            )
        return dst
    notes.append(f"pre-processing (quant_pre_process) failed ({first_error}); quantizing the model as registered")
    return None


def _flatten_gemm_bias(path: Path, dst: Path) -> Path:
    """Give Gemm biases stored as ``[1, N]`` (skl2onnx does) the shape ``[N]``.

    Same result (C broadcasts either way), but per-channel QDQ quantizes the bias along axis 0
    and fails on ``[1, N]`` (``ValueError: The truth value of an array...`` at quantization,
    or a DequantizeLinear scale-shape error at run time).
    """
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    changed = False
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        t = inits[node.input[2]]
        if len(t.dims) == 2 and t.dims[0] == 1 and uses.get(t.name) == 1:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(-1), t.name))
            changed = True
    if not changed:
        return path
    onnx.save(model, str(dst))
    return dst


def _node_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(quantized compute nodes, compute nodes): compute nodes are all but Q/DQ; a node is quantized
    when it is an integer kernel or reads a DequantizeLinear output (QDQ)."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    total = quantized = 0
    for n in model.graph.node:
        if n.op_type in _QDQ_OPS:
            continue
        total += 1
        if n.op_type in _INT_KERNELS or n.op_type.startswith("QLinear") or any(i in dq_outputs for i in n.input):
            quantized += 1
    return quantized, total


def _check_quantizable(model: onnx.ModelProto, model_id: str) -> None:
    graph = model.graph
    ops = {n.op_type for n in graph.node if n.domain in ("", "ai.onnx")}
    if ops & QUANTIZABLE_OPS:
        return
    found = sorted({n.op_type + (f" ({n.domain})" if n.domain not in ("", "ai.onnx") else "") for n in graph.node})
    raise InvalidInputError(
        f"model {model_id} has nothing onnxruntime can quantize to int8: no {'/'.join(sorted(QUANTIZABLE_OPS))} "
        f"operators (it has {', '.join(found) or 'no operators'}); for scikit-learn models, convert so that linear "
        "layers are MatMul/Gemm rather than ai.onnx.ml operators"
    )


def _warn(report_warnings: list[str], message: str) -> None:
    report_warnings.append(message)
    warnings.warn(message, QuantizeWarning, stacklevel=3)


# -- the API -------------------------------------------------------------------------------------------


def quantize_model(
    workspace: Workspace,
    name: str,
    version: int | None = None,
    *,
    format: str = "qdq",
    per_channel: bool = False,
    calibration: qdata.DataSource | None = None,
    method: str | None = None,
    labels: str | os.PathLike | np.ndarray | None = None,
    output_name: str | None = None,
    threads: int = 1,
    repeats: int = 20,
    activation_type: str = "int8",
    batch_size: int = 32,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize registered ONNX model ``name`` (latest version unless ``version``) to INT8 and register it.

    - ``format``: ``"qdq"`` (static: calibrated activations, QuantizeLinear/DequantizeLinear pairs,
      int8 symmetric weights) or ``"dynamic"`` (int8 weights, activations quantized at run time).
    - ``calibration``: an .npz (one array per input name, or one array), a .npy, a folder of
      .npy/.npz files (stacked along the batch axis), an array or a dict of arrays. Default: the
      model's registered sample input. It is also the evaluation data for the report.
    - ``method``: calibration method for ``qdq``: ``minmax`` (default), ``entropy``, ``percentile``.
    - ``labels``: class labels for the evaluation rows (.npy or array), or an .npz with ``y`` and
      ``x`` (the evaluation inputs, instead of the calibration data): adds accuracy before/after.
    - ``threads``: ``intra_op_num_threads`` for the latency sessions; ``repeats``: best of how many
      runs (0 skips latency).

    Registers ``output_name`` (default ``<name>-int8``) with lineage properties; nothing is
    registered when anything fails.
    """
    if format not in FORMATS:
        raise InvalidInputError(f"unknown quantization format {format!r}: choose one of {', '.join(FORMATS)}")
    if method is not None and method not in METHODS:
        raise InvalidInputError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if method is not None and format == "dynamic":
        raise InvalidInputError("a calibration method applies to --format qdq only; dynamic quantization has none")
    if activation_type not in ACTIVATION_TYPES:
        raise InvalidInputError(f"unknown activation type {activation_type!r}: choose int8 or uint8")
    if threads < 1 or repeats < 0 or batch_size < 1:
        raise InvalidInputError("threads and batch_size must be at least 1, repeats at least 0")
    method = (method or "minmax") if format == "qdq" else None

    source = Model(workspace, name, version=version)
    target_name = output_name or f"{source.name}-int8"
    validate_name(target_name)
    if source.model_framework != Model.Framework.ONNX:
        raise InvalidInputError(
            f"model {source.id} is a {source.model_framework} model; quantization needs ONNX: run "
            f"`edgepack convert {source.id} --to onnx` first, then quantize the ONNX model it registers"
        )
    onnx_rel = find_onnx(source)
    step = progress or (lambda stage, done, total: None)
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="edgepack-quantize-") as tmp:
        work = Path(tmp)
        staging = work / "stage"
        source.download(staging)
        size_before = (staging / onnx_rel).stat().st_size
        try:
            fp32 = measure.session(staging / onnx_rel, threads)
        except Exception as exc:
            raise InvalidInputError(f"model {source.id}: onnxruntime cannot load {onnx_rel}: {exc}") from None
        specs = [qdata.InputSpec.from_ort(i) for i in fp32.get_inputs()]
        output_names = [o.name for o in fp32.get_outputs()]

        # Data: calibration (also the evaluation data), labels.
        calibration_given = calibration is not None
        if calibration is None:
            calibration = qdata.sample_to_source(source.load_sample_input())
            if calibration is None:
                expected = ", ".join(f"{s.name} {s.describe()}" for s in specs)
                raise InvalidInputError(
                    f"model {source.id} has no registered sample input to calibrate and evaluate with: give "
                    f"--calibration FILE.npz or a folder of .npy/.npz files with inputs {expected}"
                )
            cal_data = qdata.to_dataset(calibration, specs, "registered sample input")
        else:
            cal_data = qdata.to_dataset(calibration, specs, "calibration")
        eval_data = cal_data
        y = None
        if labels is not None:
            y, labelled = qdata.load_labels(labels, specs)
            if labelled is not None:
                eval_data = labelled
            if len(y) != qdata.rows(eval_data):
                what = (
                    "the inputs (x) in the labels file"
                    if labelled is not None
                    else ("the calibration data" if calibration_given else "the registered sample input")
                )
                raise InvalidInputError(
                    f"labels have {len(y)} rows but {what} has {qdata.rows(eval_data)}; give one label per row"
                )

        # The FP32 outputs (before spending time on quantization: a data problem shows here first).
        eval_batches = qdata.batches(eval_data, specs, 64)
        step("evaluate", 0, 2)
        try:
            ref_runs = measure.run(fp32, eval_batches)
        except Exception as exc:
            raise InvalidInputError(
                f"model {source.id} does not run on the evaluation data ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:400]})"
            ) from None
        step("evaluate", 1, 2)

        # Pre-process, quantize.
        step("preprocess", 0, 1)
        prepared = _preprocess(staging / onnx_rel, work / "preprocessed.onnx", notes) or (staging / onnx_rel)
        step("preprocess", 1, 1)
        prepared = _flatten_gemm_bias(prepared, work / "prepared.onnx")
        prepared_proto = onnx.load(str(prepared), load_external_data=False)
        _check_quantizable(prepared_proto, source.id)
        out_path = work / "int8.onnx"
        _quantize(
            prepared,
            out_path,
            format,
            per_channel,
            method,
            activation_type,
            cal_data,
            specs,
            batch_size,
            step,
            notes,
            source.id,
        )
        quantized, total = _node_counts(onnx.load(str(out_path), load_external_data=False))
        if quantized == 0:
            raise QuantizationError(
                f"onnxruntime quantized no operator of model {source.id} ({format}); nothing was registered"
            )

        # Measure.
        try:
            int8 = measure.session(out_path, threads)
            int8_runs = measure.run(int8, eval_batches)
            step("evaluate", 2, 2)
        except Exception as exc:
            hint = "; try without --per-channel" if per_channel else ""
            raise QuantizationError(
                f"the quantized model of {source.id} does not run in onnxruntime ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:400]}); nothing was registered{hint}"
            ) from None
        diffs = measure.output_diffs(output_names, ref_runs, int8_runs)
        acc_before = acc_after = None
        acc_output = None
        if y is not None:
            index = measure.class_output(output_names, ref_runs[0])
            if index is None:
                notes.append("no output looks like class scores or labels: accuracy not measured")
            else:
                acc_output = output_names[index]
                n = len(y)
                acc_before = measure.accuracy(measure.predictions(ref_runs, index)[:n], y)
                acc_after = measure.accuracy(measure.predictions(int8_runs, index)[:n], y)
        latencies = []
        if repeats:
            fixed = {s.batch for s in specs if s.batch is not None}
            sizes = sorted(fixed) if fixed else list(LATENCY_BATCHES)
            for i, b in enumerate(sizes):
                step("latency", i, len(sizes))
                feeds = qdata.take_rows(eval_data, b)
                fp32_ms, int8_ms = measure.best_latency([fp32, int8], feeds, repeats=repeats)
                latencies.append(Latency(b, fp32_ms, int8_ms))
            step("latency", len(sizes), len(sizes))
        del fp32, int8

        report = QuantizeReport(
            source=source.id,
            target=None,
            format=format,
            per_channel=per_channel,
            calibration_method=method,
            activation_type=activation_type if format == "qdq" else "uint8",
            weight_type="int8",
            preprocessed=prepared != staging / onnx_rel,
            quantized_nodes=quantized,
            total_nodes=total,
            calibration_rows=qdata.rows(cal_data) if format == "qdq" else None,
            eval_rows=qdata.rows(eval_data),
            size_before=size_before,
            size_after=out_path.stat().st_size,
            accuracy_before=acc_before,
            accuracy_after=acc_after,
            accuracy_output=acc_output,
            latency=latencies,
            threads=threads,
            outputs=diffs,
        )
        for note in notes:
            _warn(report.warnings, note)

        # Register: the model's file or folder, with the .onnx replaced by its INT8 version.
        step("register", 0, 1)
        publish_file(out_path, staging / onnx_rel)
        properties = {
            "derived_from": source.id,
            "quantization": format,
            "per_channel": str(per_channel).lower(),
            "calibration_method": method or "none",
            "activation_type": report.activation_type,
            "weight_type": report.weight_type,
            "quantizer": report.quantizer,
            "quantizer_version": report.quantizer_version,
            "size_ratio": f"{report.size_ratio:.4f}",
        }
        if report.max_abs_diff is not None:
            properties["max_abs_diff"] = f"{report.max_abs_diff:.3g}"
        if acc_before is not None and acc_after is not None:
            properties["accuracy_before"] = f"{acc_before:.4f}"
            properties["accuracy_after"] = f"{acc_after:.4f}"
        sample = source.load_sample_input()
        registered = Model.register(
            workspace,
            staging / source.root,
            target_name,
            tags=dict(source.tags),
            properties=properties,
            description=f"int8 {format} quantization of {source.id} (onnxruntime {ort.__version__})",
            model_framework=Model.Framework.ONNX,
            model_framework_version=source.model_framework_version,
            sample_input=sample if sample is not None and not isinstance(sample, bytes) else None,
        )
        step("register", 1, 1)
    report.target = registered.id
    return QuantizeResult(registered, report)


def _quantize(
    prepared: Path,
    out_path: Path,
    format: str,
    per_channel: bool,
    method: str | None,
    activation_type: str,
    cal_data: qdata.Dataset,
    specs: list[qdata.InputSpec],
    batch_size: int,
    step: Progress,
    notes: list[str],
    model_id: str,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    logged: list[str] = []
    try:
        with _quiet(logged):
            if format == "qdq":
                cal_batches = qdata.batches(cal_data, specs, batch_size, pad=True)
                extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
                if per_channel:  # avoids a crash in the int32-bias weight-scale adjustment (Gemm)
                    extra["QDQDisableWeightAdjustForInt32Bias"] = True
                quantize_static(
                    str(prepared),
                    str(out_path),
                    _Reader(cal_batches, step),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method={
                        "minmax": CalibrationMethod.MinMax,
                        "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile,
                    }[method or "minmax"],
                    extra_options=extra,
                )
            else:
                step("quantize", 0, 1)
                quantize_dynamic(str(prepared), str(out_path), per_channel=per_channel, weight_type=QuantType.QInt8)
            step("quantize", 1, 1)
    except EdgepackError:
        raise
    except Exception as exc:
        raise QuantizationError(
            f"onnxruntime could not quantize model {model_id} ({format}{', per-channel' if per_channel else ''}): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}; nothing was registered"
        ) from exc
    # "Please consider pre-processing" repeats our own note when pre-processing failed.
    notes.extend(m for m in logged if m not in notes and "Please consider" not in m)
