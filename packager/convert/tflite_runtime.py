"""Run a .tflite file with LiteRT (``ai_edge_litert``, else ``tf.lite``): the parity check's TFLite runner.

Inputs are resized to the feeds' shapes (dynamic batch), float feeds are quantized for integer
(INT8/UINT8/INT16) inputs with the input's scale and zero point, and integer outputs are
dequantized, so a quantized model is compared on the same float scale as its source.
Outputs come back in a stable order (see ``output_names``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_module.scoring.tflite_runtime import (
    clean_name,
    dequantize,
    interpreter_class,
    io_details,
    ordered_outputs,
    quantize,
)
from packager.convert.base import require
from packager.errors import InvalidInputError

# The names this module had; the code is edge_module's (the scoring module serves .tflite files too).
_io = io_details
_ordered = ordered_outputs
_dequantize = dequantize


def _interpreter(path: Path) -> Any:
    try:
        Interpreter = interpreter_class()
    except ImportError:
        Interpreter = require("tensorflow", "tensorflow", "Running a TFLite model").lite.Interpreter
    try:
        return Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"cannot load the TFLite model {path}: {exc}") from None


def io_names(path: Path) -> tuple[list[str], list[str]]:
    """Input names and output names of a .tflite file, outputs in the order ``run_tflite`` returns them."""
    interp = _interpreter(path)
    ins, outs, runner = _io(interp)
    return list(ins), _ordered(outs, runner)


def _quantize(name: str, array: np.ndarray, detail: dict) -> np.ndarray:
    try:
        return quantize(name, array, detail)
    except ValueError as exc:
        raise InvalidInputError(f"{exc}; give integer sample data") from None


def _match(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The feeds by the model's input names (exact, without ``:0``, or by position when the counts match)."""
    cleaned = {clean_name(k): v for k, v in feeds.items()}
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
