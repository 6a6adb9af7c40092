"""ONNX in: checked, shape-inferred, opset reported; moved to another opset when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from packager.convert.base import (
    Conversion,
    Converter,
    ConvertOptions,
    Sample,
    as_feeds,
    check_shape,
    random_sample,
    register_converter,
)
from packager.convert.files import find_model_file
from packager.errors import InvalidInputError


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def input_signature(model: onnx.ModelProto) -> dict[str, tuple[tuple[int | None, ...], np.dtype]]:
    """Graph inputs (initializers excluded) → (shape with None for dynamic dims, numpy dtype)."""
    inits = {i.name for i in model.graph.initializer}
    sig = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        sig[inp.name] = (shape, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return sig


def feeds_for(model: onnx.ModelProto, sample: Sample | None, options: ConvertOptions) -> dict[str, np.ndarray]:
    """The sample as feeds for ``model`` (checked against its signature), or a generated one."""
    sig = input_signature(model)
    if sample is None:
        if len(sig) == 1 and options.input_shape is not None:
            ((name, (_, dtype)),) = sig.items()
            return {name: random_sample(options.input_shape, dtype)}
        return {name: random_sample(shape, dtype) for name, (shape, dtype) in sig.items()}
    feeds = as_feeds(sample, list(sig), {n: dt for n, (_, dt) in sig.items()})
    for name, (shape, _) in sig.items():
        check_shape(name, feeds[name], shape)
    return feeds


@register_converter
class OnnxToOnnx(Converter):
    framework, target = "onnx", "onnx"

    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        import onnxruntime as ort

        path = find_model_file(src, (".onnx",), "ONNX")
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:
            raise InvalidInputError(f"{path.name} is not a valid ONNX model: {exc}") from None
        feeds = feeds_for(model, sample, options)
        source = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = source.run(None, feeds)

        opset = default_opset(model)
        if options.opset is not None and options.opset != opset:
            try:
                model = version_converter.convert_version(model, options.opset)
            except Exception as exc:
                raise InvalidInputError(
                    f"cannot move {path.name} from opset {opset} to {options.opset}: {exc}"
                ) from None
            opset = options.opset
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        out = workdir / path.name
        onnx.save(model, str(out))
        return Conversion(out, "onnx", onnx.__version__, feeds, expected, opset)
