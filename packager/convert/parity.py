"""Numerical parity: run the converted artifact on the sample and compare with the source's outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from packager.convert.base import ParityError


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs_diff: float
    max_rel_diff: float
    within_tolerance: bool

    def to_dict(self) -> dict:
        return asdict(self)


def run_artifact(path: Path, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """Run an .onnx (onnxruntime) or .tflite (LiteRT) file; return output names and arrays."""
    if path.suffix == ".tflite":
        from packager.convert.tflite_runtime import run_tflite

        return run_tflite(path, feeds)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feeds)


def _as_numeric(a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind in "OUS":  # string labels: equal or not
        return arr
    return arr.astype(np.float64)


def compare(
    names: list[str], expected: list[np.ndarray], actual: list[np.ndarray], atol: float, rtol: float
) -> list[OutputDiff]:
    """Per-output max |a-b| and max |a-b|/|b|; within tolerance when |a-b| <= atol + rtol*|b| everywhere."""
    if len(expected) != len(actual):
        raise ParityError(f"the converted model has {len(actual)} outputs, the source {len(expected)}")
    diffs = []
    for name, want, got in zip(names, expected, actual, strict=True):
        want, got = _as_numeric(want), _as_numeric(got)
        if want.shape != got.shape and want.size == got.size:
            got = got.reshape(want.shape)
        if want.shape != got.shape:
            raise ParityError(f"output {name!r}: converted shape {list(got.shape)} != source shape {list(want.shape)}")
        if want.dtype.kind in "OUS" or got.dtype.kind in "OUS":
            same = bool(np.all(want == got))
            diffs.append(OutputDiff(name, 0.0 if same else float("inf"), 0.0 if same else float("inf"), same))
            continue
        abs_diff = np.abs(got - want)
        rel = abs_diff / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
        max_abs = float(abs_diff.max(initial=0.0))
        max_rel = float(rel.max(initial=0.0))
        ok = bool(np.all(abs_diff <= atol + rtol * np.abs(want)))
        diffs.append(OutputDiff(name, max_abs, max_rel, ok))
    return diffs


def check(diffs: list[OutputDiff], atol: float, rtol: float) -> None:
    bad = [d for d in diffs if not d.within_tolerance]
    if bad:
        detail = "; ".join(
            f"output {d.name!r} max abs diff {d.max_abs_diff:.3g}, max rel diff {d.max_rel_diff:.3g}" for d in bad
        )
        raise ParityError(
            f"converted model differs from the source beyond atol={atol:g}, rtol={rtol:g}: {detail}. "
            "Nothing was registered; check the sample and opset, or loosen --atol/--rtol if the difference is expected"
        )
