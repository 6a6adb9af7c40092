"""scikit-learn estimators and pipelines (pickle / joblib) → ONNX with skl2onnx."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from packager.convert.base import (
    Conversion,
    Converter,
    ConvertOptions,
    Sample,
    check_shape,
    random_sample,
    register_converter,
    require,
)
from packager.convert.files import find_model_file
from packager.errors import InvalidInputError

SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav")
INPUT = "input"
# Emit plain ONNX (MatMul, Add, ...) instead of these ai.onnx.ml operators where skl2onnx can: plain ops
# quantize to INT8 (onnxruntime has no int8 kernels for the ML ops) and run on more runtimes.
ML_OPS_TO_AVOID = frozenset({"LinearClassifier", "LinearRegressor", "Scaler", "Normalizer"})


def load_estimator(path: Path) -> Any:
    joblib = require("joblib", "sklearn", "scikit-learn conversion")
    try:
        return joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise InvalidInputError(
            f"cannot unpickle {path.name}: {exc}; install the package that defines the model's classes"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable pickle/joblib file: {exc}") from None


def _final_step(est: Any) -> Any:
    return est.steps[-1][1] if hasattr(est, "steps") else est


def _sample_matrix(est: Any, sample: Sample | None, options: ConvertOptions) -> np.ndarray:
    n_features = getattr(est, "n_features_in_", None)
    if sample is None:
        if options.input_shape is not None:
            return random_sample(options.input_shape)
        if n_features is None:
            raise InvalidInputError(
                "cannot tell the model's input width: register it with a sample input or pass --input-shape N,F"
            )
        return random_sample((None, int(n_features)))
    if not isinstance(sample, np.ndarray):
        if len(sample) != 1:
            raise InvalidInputError("scikit-learn models take one input matrix; give the sample as one array")
        sample = next(iter(sample.values()))
    x = np.asarray(sample, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    check_shape(INPUT, x, (None, int(n_features)) if n_features is not None else (None, x.shape[1]))
    return x


@register_converter
class SklearnToOnnx(Converter):
    framework, target = "scikitlearn", "onnx"

    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        skl2onnx = require("skl2onnx", "sklearn", "scikit-learn conversion")
        from skl2onnx.common.data_types import FloatTensorType

        path = find_model_file(src, SUFFIXES, "pickle/joblib")
        est = load_estimator(path)
        if not hasattr(est, "predict") and not hasattr(est, "transform"):
            raise InvalidInputError(f"{path.name} holds a {type(est).__name__}, not a scikit-learn estimator")
        x = _sample_matrix(est, sample, options)
        final = _final_step(est)
        is_classifier = hasattr(final, "predict_proba") and hasattr(final, "classes_")
        options_map = {id(final): {"zipmap": False}} if is_classifier else None
        kwargs = {
            "initial_types": [(INPUT, FloatTensorType([None, x.shape[1]]))],
            "target_opset": {"": options.opset, "ai.onnx.ml": 3} if options.opset else None,
            "options": options_map,
            "name": path.stem,  # skl2onnx names the graph with a fresh UUID otherwise: same input, same bytes
        }
        try:
            try:
                onx = skl2onnx.convert_sklearn(est, black_op=set(ML_OPS_TO_AVOID), **kwargs)
            except Exception:  # some converter needs the ML operator: use skl2onnx's defaults
                onx = skl2onnx.convert_sklearn(est, **kwargs)
        except Exception as exc:
            raise InvalidInputError(f"skl2onnx cannot convert {type(est).__name__}: {exc}") from None
        out = workdir / (path.stem + ".onnx")
        out.write_bytes(onx.SerializeToString())

        # The source sees the same float32 values the ONNX model sees.
        x64 = x.astype(np.float64)
        if is_classifier:
            expected = [np.asarray(est.predict(x64)), np.asarray(est.predict_proba(x64), dtype=np.float32)]
        elif hasattr(est, "predict"):
            expected = [np.asarray(est.predict(x64), dtype=np.float32)]
        else:
            expected = [np.asarray(est.transform(x64), dtype=np.float32)]
        opset = next((o.version for o in onx.opset_import if o.domain in ("", "ai.onnx")), None)
        return Conversion(out, "skl2onnx", skl2onnx.__version__, {INPUT: x}, expected, opset)
