"""Keras 3 (``.keras``/``.h5``) and TensorFlow SavedModel → ONNX (tf2onnx) and TFLite (TFLiteConverter).

Both sources become one ``tf.function`` with a named input signature (batch dimension dynamic)
that returns a dict of named outputs, run in inference mode (Dropout off, BatchNorm on its moving
statistics). tf2onnx converts that function; the TFLite converter reads a SavedModel (the
registered one, or one exported from the Keras model into a temporary folder). The same function
computes the expected outputs on the feeds.

Output names: a SavedModel keeps its serving signature's names (``output_0``...); a Keras model's
outputs are named after their layers (``dense``), or after its dict keys when it returns a dict.
TensorFlow is imported inside ``convert`` only, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packager.convert.base import (
    Conversion,
    Converter,
    ConvertOptions,
    Sample,
    as_feeds,
    check_shape,
    random_sample,
    register_converter,
    require,
)
from packager.convert.files import find_model_file
from packager.errors import EdgepackError, InvalidInputError

log = logging.getLogger(__name__)

_EXTRA = "tensorflow"
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_SIGNATURE = "serving_default"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Representative rows used for INT8 calibration when no sample is given (random data: poor calibration).
_CALIBRATION_ROWS = 64
_MAX_CALIBRATION_ROWS = 1000


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines
    return require("tensorflow", _EXTRA, "Keras/TensorFlow conversion")


@dataclass
class _Source:
    """A loaded model as one traced function: named inputs in, dict of named outputs out."""

    fn: Any  # tf.function with input_signature=specs, returning {output name: tensor}
    specs: list[Any]  # tf.TensorSpec per input, named, batch dimension None
    keep: list[Any] = field(default_factory=list)  # objects that own the variables (keep them alive)
    saved_model: Path | None = None  # the registered SavedModel folder, if any
    signature: str = _SIGNATURE  # the SavedModel's signature the TFLite converter reads
    export: Callable[[Path], None] | None = None  # writes a SavedModel with signature serving_default

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def shape(self, name: str) -> tuple[int | None, ...]:
        return tuple(next(s for s in self.specs if s.name == name).shape.as_list())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = _tf()
        out = self.fn(*[tf.constant(feeds[n]) for n in self.names])
        return {k: np.asarray(v) for k, v in out.items()}


# --- locating and loading the model -----------------------------------------------------------


def _saved_model_folder(src: Path) -> Path:
    """The folder holding ``saved_model.pb``: ``src`` itself or the one SavedModel inside it."""
    if src.is_file() and src.name == "saved_model.pb":
        src = src.parent
    if not src.exists():
        raise InvalidInputError(f"model path {src} does not exist")
    if src.is_file():
        raise InvalidInputError(f"{src.name} is a file; a TensorFlow SavedModel is a folder holding saved_model.pb")
    if (src / "saved_model.pb").is_file():
        return src
    found = sorted(p.parent for p in src.rglob("saved_model.pb") if p.is_file())
    if not found:
        raise InvalidInputError(f"no SavedModel (saved_model.pb) in the registered folder {src.name}")
    if len(found) > 1:
        listing = ", ".join(str(p.relative_to(src)) for p in found)
        raise InvalidInputError(
            f"the registered folder {src.name} holds several SavedModels ({listing}); register the one to convert"
        )
    return found[0]


def _input_specs(tf: Any, inputs: list[tuple[str, Any, Any]], options: ConvertOptions) -> list[Any]:
    """TensorSpecs from ``(name, shape, dtype)``; ``options.input_shape`` overrides a single input's shape."""
    if options.input_shape is not None:
        if len(inputs) != 1:
            names = ", ".join(n for n, _, _ in inputs)
            raise InvalidInputError(
                f"--input-shape applies to single-input models; this one has {len(inputs)} inputs ({names})"
            )
        name, shape, dtype = inputs[0]
        wanted = tf.TensorShape(list(options.input_shape))
        if shape is not None and not tf.TensorShape(shape).is_compatible_with(wanted):
            raise InvalidInputError(
                f"--input-shape {list(options.input_shape)} does not fit input {name!r} of shape "
                f"{tf.TensorShape(shape).as_list()}"
            )
        inputs = [(name, list(options.input_shape), dtype)]
    specs = []
    for name, shape, dtype in inputs:
        shape = tf.TensorShape(shape)
        if shape.rank is None:
            raise InvalidInputError(f"input {name!r} has no known shape: give it with --input-shape")
        dims = shape.as_list()
        if dims:
            dims[0] = None  # dynamic batch
        specs.append(tf.TensorSpec(dims, tf.as_dtype(dtype), name=name))
    return specs


def _output_names(model: Any, count: int) -> list[str]:
    """Layer names of a Keras model's outputs (``output_<i>`` when unknown or not unique)."""
    names: list[str] = []
    try:
        for tensor in model.outputs or []:
            history = getattr(tensor, "_keras_history", None)
            names.append(history[0].name if history else "")
    except (AttributeError, ValueError, TypeError):
        names = []
    if len(names) != count or len(set(names)) != count or not all(names):
        names = [f"output_{i}" for i in range(count)]
    return names


def _check_container(path: Path) -> None:
    """Fail early, and clearly, on a file that is not a zip (.keras) or HDF5 (.h5) container at all."""
    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise InvalidInputError(
                f"{path} is not a valid Keras .keras file (not a zip archive; truncated or corrupt?): "
                "re-save the model with model.save('model.keras') and register it again"
            )
        return
    with open(path, "rb") as f:  # the HDF5 signature sits at offset 0, 512, 1024, 2048... (user block)
        heads = []
        for offset in (0, 512, 1024, 2048):
            f.seek(offset)
            heads.append(f.read(8))
    if _HDF5_SIGNATURE not in heads:
        raise InvalidInputError(
            f"{path} is not a valid HDF5 (.h5) Keras file (no HDF5 signature; truncated or corrupt?): "
            "re-save the model with model.save('model.keras') and register it again"
        )


def _load_keras(src: Path, options: ConvertOptions) -> _Source:
    tf = _tf()
    keras = require("keras", _EXTRA, "Keras conversion")
    if not src.exists():
        raise InvalidInputError(f"model path {src} does not exist")
    path = find_model_file(src, _KERAS_SUFFIXES, "Keras model")
    _check_container(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise InvalidInputError(
            f"cannot load the Keras model {path}: {type(exc).__name__}: {exc}. Expected a Keras 3 .keras file or "
            "a legacy .h5 file written by model.save(); re-save the model or register the right file"
        ) from None
    try:
        declared = [(t.name, tuple(t.shape), t.dtype) for t in model.inputs]
    except (AttributeError, TypeError, ValueError):  # subclassed or never-built models have no symbolic inputs
        declared = []
    if not declared:
        if options.input_shape is None:
            raise InvalidInputError(f"the Keras model {path} does not declare its inputs: give --input-shape")
        declared = [("input", None, "float32")]
    specs = _input_specs(tf, declared, options)

    def call(*args: Any) -> dict[str, Any]:
        out = model(args[0] if len(args) == 1 else list(args), training=False)
        if isinstance(out, dict):
            return dict(out)
        flat = tf.nest.flatten(out)
        return dict(zip(_output_names(model, len(flat)), flat, strict=True))

    fn = tf.function(call, input_signature=specs, autograph=False)

    def export(folder: Path) -> None:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(_SIGNATURE, fn)
        archive.write_out(str(folder), verbose=False)

    return _Source(fn=fn, specs=specs, keep=[model], export=export)


def _load_saved_model(src: Path, options: ConvertOptions) -> _Source:
    tf = _tf()
    folder = _saved_model_folder(src)
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise InvalidInputError(
            f"cannot load the SavedModel {folder}: {type(exc).__name__}: {exc}. Expected a folder written by "
            "tf.saved_model.save or keras model.export()"
        ) from None
    signatures = dict(loaded.signatures)
    key = _SIGNATURE if _SIGNATURE in signatures else (next(iter(signatures)) if len(signatures) == 1 else None)
    if key is None:
        found = ", ".join(signatures) or "none"
        raise InvalidInputError(
            f"the SavedModel {folder} has no {_SIGNATURE!r} signature (signatures: {found}); re-export it with "
            f"tf.saved_model.save(obj, dir, signatures={{'{_SIGNATURE}': fn}})"
        )
    signature = signatures[key]
    args, kwargs = signature.structured_input_signature
    if args:
        raise InvalidInputError(f"signature {key!r} of {folder} takes positional inputs; name them in the signature")
    specs = _input_specs(tf, [(n, s.shape, s.dtype) for n, s in kwargs.items()], options)
    names = [s.name for s in specs]

    def call(*args: Any) -> dict[str, Any]:
        out = signature(**dict(zip(names, args, strict=True)))
        return dict(out) if isinstance(out, dict) else {f"output_{i}": t for i, t in enumerate(tf.nest.flatten(out))}

    fn = tf.function(call, input_signature=specs, autograph=False)
    return _Source(fn=fn, specs=specs, keep=[loaded, signature], saved_model=folder, signature=key)


def _load(framework: str, src: Path, options: ConvertOptions) -> _Source:
    return _load_keras(src, options) if framework == "tfkeras" else _load_saved_model(src, options)


# --- the sample ---------------------------------------------------------------------------------


def _feeds(source: _Source, sample: Sample | None, rows: int = 4) -> dict[str, np.ndarray]:
    """The sample by input name in the source model's layout (generated from the signature when None)."""
    dtypes = {s.name: np.dtype(s.dtype.as_numpy_dtype) for s in source.specs}
    if sample is None:
        feeds = {}
        for name, dtype in dtypes.items():
            array = random_sample(source.shape(name), np.dtype(np.float32), batch=rows)
            feeds[name] = np.abs(array).astype(dtype) if dtype.kind in "iub" else array.astype(dtype)
        return feeds
    feeds = as_feeds(sample, source.names, dtypes)
    for name, array in feeds.items():
        check_shape(name, array, source.shape(name))
    return feeds


def _nchw(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (0, array.ndim - 1, *range(1, array.ndim - 1)))


def _ordered(outputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Source outputs in the artifact's output order (by name; else the dict's sorted-key order)."""
    if all(n in outputs for n in names) and len(names) == len(outputs):
        return [outputs[n] for n in names]
    return [outputs[k] for k in sorted(outputs)]


# --- converters ---------------------------------------------------------------------------------


class _KerasToOnnx(Converter):
    target = "onnx"

    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        _tf()
        tf2onnx = require("tf2onnx", _EXTRA, "Keras/TensorFlow to ONNX conversion")
        source = _load(self.framework, Path(src), options)
        feeds = _feeds(source, sample)
        nchw = list(dict.fromkeys(n.removesuffix(":0") for n in options.inputs_as_nchw))
        for name in nchw:
            if name not in source.names:
                raise InvalidInputError(
                    f"--inputs-as-nchw names {name!r}, which is not an input; the inputs are {', '.join(source.names)}"
                )
            if len(source.shape(name)) < 3:
                raise InvalidInputError(
                    f"--inputs-as-nchw: input {name!r} has shape {list(source.shape(name))}; only inputs with a "
                    "channel axis (rank 3 or more, channels last) can be transposed"
                )
        out = Path(workdir) / "model.onnx"
        try:
            proto, _ = tf2onnx.convert.from_function(
                source.fn,
                input_signature=source.specs,
                opset=options.opset,
                inputs_as_nchw=nchw or None,
                output_path=str(out),
            )
        except Exception as exc:
            raise EdgepackError(f"tf2onnx could not convert {src}: {type(exc).__name__}: {exc}") from exc
        initializers = {i.name for i in proto.graph.initializer}
        onnx_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
        onnx_outputs = [o.name for o in proto.graph.output]
        expected = _ordered(source.run(feeds), onnx_outputs)
        artifact_feeds = {n: _nchw(a) if n in nchw else a for n, a in feeds.items()}
        artifact_feeds = as_feeds(artifact_feeds, onnx_inputs)  # by the ONNX names (checks the count)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), options.opset)
        return Conversion(
            path=out,
            converter="tf2onnx",
            converter_version=tf2onnx.__version__,
            feeds=artifact_feeds,
            expected=expected,
            opset=opset,
        )


class _KerasToTflite(Converter):
    target = "tflite"

    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        tf = _tf()
        from packager.convert.tflite_runtime import io_names

        if options.inputs_as_nchw:
            raise InvalidInputError("--inputs-as-nchw applies to ONNX (tf2onnx); TFLite models stay channels-last")
        source = _load(self.framework, Path(src), options)
        feeds = _feeds(source, sample)
        out = Path(workdir) / "model.tflite"
        with tempfile.TemporaryDirectory(prefix="edgepack-savedmodel-") as tmp:
            folder = source.saved_model
            if folder is None:
                folder = Path(tmp) / "saved_model"
                source.export(folder)  # type: ignore[misc]
            converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=[source.signature])
            if options.int8:
                self._full_integer(tf, converter, source, sample, feeds)
            try:
                with warnings.catch_warnings():  # INT8 calibration uses the deprecated tf.lite.Interpreter
                    warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated", UserWarning)
                    out.write_bytes(converter.convert())
            except Exception as exc:
                hint = " (with --int8 every op needs an INT8 kernel; try without --int8)" if options.int8 else ""
                raise EdgepackError(
                    f"the TFLite converter could not convert {src}{hint}: {type(exc).__name__}: {exc}"
                ) from exc
        input_names, output_names = io_names(out)
        expected = _ordered(source.run(feeds), output_names)
        return Conversion(
            path=out,
            converter="tflite-converter",
            converter_version=tf.__version__,
            feeds=as_feeds(feeds, input_names),
            expected=expected,
        )

    @staticmethod
    def _full_integer(tf: Any, converter: Any, source: _Source, sample: Sample | None, feeds: dict) -> None:
        """Full-integer quantization (INT8 kernels, INT8 inputs and outputs), calibrated on the sample."""
        if sample is None:
            log.warning(
                "INT8 calibration without a sample uses random data, which can cost accuracy: "
                "register the model with --sample-input (a few hundred representative rows)"
            )
            calibration = _feeds(source, None, rows=_CALIBRATION_ROWS)
        else:
            calibration = feeds
        rows = min(len(next(iter(calibration.values()))), _MAX_CALIBRATION_ROWS)

        def representative() -> Any:
            for i in range(rows):
                yield {n: a[i : i + 1] for n, a in calibration.items()}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


@register_converter
class KerasToOnnx(_KerasToOnnx):
    framework = "tfkeras"


@register_converter
class SavedModelToOnnx(_KerasToOnnx):
    framework = "tensorflow"


@register_converter
class KerasToTflite(_KerasToTflite):
    framework = "tfkeras"


@register_converter
class SavedModelToTflite(_KerasToTflite):
    framework = "tensorflow"
