"""Convert registered models to ONNX or TFLite, checked numerically against the source.

Public surface::

    from packager.convert import convert_model, ConvertOptions
    result = convert_model(ws, "digits", options=ConvertOptions(target="onnx"))
    result.model            # the registered <name>-onnx model
    result.diffs            # per-output max abs / rel difference

Converters are registered per (framework, target) in :mod:`packager.convert.base`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packager.convert.base import (
    Conversion,
    Converter,
    ConvertOptions,
    MissingDependencyError,
    ParityError,
    UnsupportedConversionError,
    get_converter,
    register_converter,
)
from packager.convert.parity import OutputDiff, check, compare, run_artifact
from packager.errors import InvalidInputError
from packager.registry import Model
from packager.registry.names import validate_name
from packager.workspace import Workspace

__all__ = [
    "Conversion",
    "ConvertOptions",
    "ConvertResult",
    "Converter",
    "MissingDependencyError",
    "ParityError",
    "UnsupportedConversionError",
    "convert_model",
    "get_converter",
    "load_sample",
    "register_converter",
]


@dataclass
class ConvertResult:
    model: Model  # the registered converted model
    source: Model
    conversion: Conversion
    diffs: list[OutputDiff] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.id,
            "model": self.model.serialize(),
            "converter": self.conversion.converter,
            "converterVersion": self.conversion.converter_version,
            "opset": self.conversion.opset,
            "parity": [d.to_dict() for d in self.diffs],
        }


def load_sample(path: str | os.PathLike) -> np.ndarray | dict[str, np.ndarray]:
    """A sample file: .npy (one array), .npz (arrays by input name), .json (a list, or an object of lists;
    ``{"data": ...}`` and ``{"inputs": {...}}`` request bodies work too)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"sample file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            if isinstance(data, dict) and set(data) == {"data"}:
                data = data["data"]
            elif isinstance(data, dict) and set(data) == {"inputs"}:
                data = data["inputs"]
            if isinstance(data, dict):
                return {k: np.asarray(v) for k, v in data.items()}
            return np.asarray(data)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"cannot read sample file {p.name}: {exc}") from None
    raise InvalidInputError(f"sample file {p.name} must be .npy, .npz or .json")


def _sample_to_register(feeds: dict[str, np.ndarray], work: Path) -> Any:
    """One array for single-input models, else an .npz of arrays by input name."""
    if len(feeds) == 1:
        return next(iter(feeds.values()))
    path = work / "sample_input.npz"
    np.savez(path, **feeds)
    return path


def convert_model(
    workspace: Workspace,
    name: str,
    version: int | None = None,
    options: ConvertOptions | None = None,
    output_name: str | None = None,
    sample: str | os.PathLike | np.ndarray | dict[str, np.ndarray] | None = None,
) -> ConvertResult:
    """Convert a registered model, check parity on a sample, register the result.

    The sample is ``sample`` (array, dict or file), else the model's registered sample input,
    else one generated from the input signature. Nothing is registered if parity fails.
    """
    options = options or ConvertOptions()
    source = Model(workspace, name, version=version)
    target_name = output_name or f"{source.name}-{options.target}"
    validate_name(target_name)
    converter = get_converter(source.model_framework, options.target)
    if isinstance(sample, str | os.PathLike):
        sample = load_sample(sample)
    elif sample is None:
        sample = source.load_sample_input()
        if sample is not None and not isinstance(sample, np.ndarray | dict):
            sample = np.asarray(sample)

    with tempfile.TemporaryDirectory(prefix="edgepack-convert-") as tmp:
        work = Path(tmp)
        src = Path(source.download(work / "source"))
        out_dir = work / "out"
        out_dir.mkdir()
        conversion = converter.convert(src, sample, options, out_dir)
        names, actual = run_artifact(conversion.path, conversion.feeds)
        atol, rtol = options.tolerances()
        diffs = compare(names, conversion.expected, actual, atol, rtol)
        check(diffs, atol, rtol)
        max_abs = max((d.max_abs_diff for d in diffs), default=0.0)
        properties = {
            "derived_from": source.id,
            "converter": conversion.converter,
            "converter_version": conversion.converter_version,
            "max_abs_diff": f"{max_abs:.3g}",
            "target": options.target,
        }
        if conversion.opset is not None:
            properties["opset"] = str(conversion.opset)
        if options.inputs_as_nchw:
            properties["inputs_as_nchw"] = ",".join(options.inputs_as_nchw)
        if options.int8:
            properties["quantization"] = "int8"
        registered = Model.register(
            workspace,
            conversion.path,
            target_name,
            properties=properties,
            tags=dict(source.tags),
            description=f"{options.target} conversion of {source.id}",
            model_framework=options.target,
            sample_input=_sample_to_register(conversion.feeds, work),
        )
    return ConvertResult(registered, source, conversion, diffs)
