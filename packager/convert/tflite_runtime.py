"""Run a .tflite file with LiteRT (``ai_edge_litert``, else ``tf.lite``): the parity check's TFLite runner.

Inputs are resized to the feeds' shapes (dynamic batch), float feeds are quantized for integer
(INT8/UINT8/INT16) inputs with the input's scale and zero point, and integer outputs are
dequantized, so a quantized model is compared on the same float scale as its source.
Outputs come back in a stable order (see ``output_names``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from packager.convert.base import require
from packager.errors import InvalidInputError

_INTEGER_IO = (np.int8, np.uint8, np.int16)


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = require("tensorflow", "tensorflow", "Running a TFLite model").lite.Interpreter
    try:
        return Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"cannot load the TFLite model {path}: {exc}") from None


def _natural(name: str) -> list[Any]:
    """Sort key: ``output_2`` before ``output_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _clean(name: str) -> str:
    """``serving_default_pixels:0`` → ``pixels`` (tensor names of models without signatures)."""
    name = name.removeprefix("serving_default_")
    return name[:-2] if name.endswith(":0") else name


def _signature_key(interp: Any) -> str | None:
    sigs = interp.get_signature_list()
    if "serving_default" in sigs:
        return "serving_default"
    return next(iter(sigs)) if len(sigs) == 1 else None


def _io(interp: Any) -> tuple[dict[str, dict], dict[str, dict], Any]:
    """Input and output details by name, and the signature runner (None: plain tensor indices)."""
    key = _signature_key(interp)
    if key is not None:
        runner = interp.get_signature_runner(key)
        return runner.get_input_details(), runner.get_output_details(), runner
    ins = {_clean(d["name"]): d for d in interp.get_input_details()}
    outs = {_clean(d["name"]): d for d in interp.get_output_details()}
    return ins, outs, None


def _ordered(outs: dict[str, dict], runner: Any) -> list[str]:
    if runner is not None:
        return sorted(outs, key=_natural)
    return [n for n, _ in sorted(outs.items(), key=lambda item: item[1]["index"])]


def io_names(path: Path) -> tuple[list[str], list[str]]:
    """Input names and output names of a .tflite file, outputs in the order ``run_tflite`` returns them."""
    interp = _interpreter(path)
    ins, outs, runner = _io(interp)
    return list(ins), _ordered(outs, runner)


def _quantize(name: str, array: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    array = np.asarray(array)
    if dtype.type in _INTEGER_IO and array.dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        if not scale:
            raise InvalidInputError(
                f"TFLite input {name!r} is {dtype.name} without quantization parameters; give integer sample data"
            )
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).type in _INTEGER_IO and scale:
        return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return array


def _match(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The feeds by the model's input names (exact, without ``:0``, or by position when the counts match)."""
    cleaned = {_clean(k): v for k, v in feeds.items()}
    if set(cleaned) == set(names):
        return {n: cleaned[n] for n in names}
    if len(feeds) == len(names):
        return dict(zip(names, feeds.values(), strict=True))
    raise InvalidInputError(
        f"the TFLite model takes input(s) {', '.join(names)}; the feeds have {', '.join(feeds) or 'nothing'}"
    )


def run_tflite(path: Path, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """Run ``path`` on ``feeds`` (arrays by input name); return output names and (dequantized) arrays."""
    interp = _interpreter(Path(path))
    ins, outs, runner = _io(interp)
    inputs = {n: _quantize(n, a, ins[n]) for n, a in _match(feeds, list(ins)).items()}
    if runner is not None:
        results = runner(**inputs)
    else:
        for name, array in inputs.items():
            if tuple(ins[name]["shape"]) != array.shape:
                interp.resize_tensor_input(ins[name]["index"], list(array.shape), strict=False)
        interp.allocate_tensors()
        for name, array in inputs.items():
            interp.set_tensor(ins[name]["index"], array)
        interp.invoke()
        results = {n: interp.get_tensor(d["index"]) for n, d in outs.items()}
    names = _ordered(outs, runner)
    return names, [_dequantize(np.asarray(results[n]), outs[n]) for n in names]
