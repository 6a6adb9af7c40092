"""The converter interface: one converter per (source framework, target format), found by a registry.

A converter loads the source model, writes the converted artifact into a work folder, and
runs the *source* model on the sample so the pipeline can check the artifact against it::

    @register_converter
    class SklearnToOnnx(Converter):
        framework, target = "scikitlearn", "onnx"
        def convert(self, src, sample, options, workdir) -> Conversion: ...
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from packager.errors import EdgepackError, InvalidInputError

# A sample: one array (single-input models) or arrays by input name.
Sample = np.ndarray | Mapping[str, np.ndarray]
TARGETS = ("onnx", "tflite")
DEFAULT_TOLERANCE = (1e-4, 1e-4)  # (atol, rtol) for float conversions
# Full-integer models step outputs in units of their quantization scale (1/256 for a softmax):
# measured 8-15 steps of difference on a digits CNN. Accuracy, not bit-parity, is their test.
INT8_TOLERANCE = (0.1, 0.0)


class MissingDependencyError(EdgepackError):
    """An optional dependency (an extra) is not installed."""


class UnsupportedConversionError(InvalidInputError):
    """No converter goes from this framework to this target."""


class ParityError(EdgepackError):
    """The converted model does not compute what the source computes, within tolerance."""


@dataclass
class ConvertOptions:
    """Everything ``edgepack convert`` can be told. Converters read what applies to them."""

    target: str = "onnx"
    opset: int | None = None  # ONNX opset; None = the converter's default
    input_shape: tuple[int | None, ...] | None = None  # None entries are dynamic (batch)
    inputs_as_nchw: list[str] = field(default_factory=list)  # tf2onnx: transpose these inputs to NCHW
    dynamo: bool = False  # torch: the dynamo exporter instead of the legacy (TorchScript) one
    int8: bool = False  # tflite: full-integer quantization with the sample as representative data
    atol: float | None = None  # None: DEFAULT_TOLERANCE, or INT8_TOLERANCE for int8 targets
    rtol: float | None = None

    def tolerances(self) -> tuple[float, float]:
        """(atol, rtol) for the parity check: given values win, else defaults for float or int8 targets."""
        atol, rtol = INT8_TOLERANCE if self.int8 else DEFAULT_TOLERANCE
        return (atol if self.atol is None else self.atol, rtol if self.rtol is None else self.rtol)


@dataclass
class Conversion:
    """What a converter produced."""

    path: Path  # the artifact (.onnx or .tflite) inside the work folder
    converter: str  # e.g. "skl2onnx"
    converter_version: str
    feeds: dict[str, np.ndarray]  # the sample, as the converted model's inputs by name
    expected: list[np.ndarray]  # the source model's outputs on that sample, in the artifact's output order
    opset: int | None = None


class Converter(ABC):
    """Subclass, set ``framework`` and ``target``, implement ``convert``, decorate with ``register_converter``."""

    framework: str
    target: str

    @abstractmethod
    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        """Convert the model at ``src`` (its registered file or folder) into ``workdir``."""


_REGISTRY: dict[tuple[str, str], type[Converter]] = {}

# Modules that register converters, imported on first lookup (so heavy frameworks load only when used).
_MODULES = (
    "packager.convert.onnx_in",
    "packager.convert.sklearn",
    "packager.convert.keras",
    "packager.convert.torch",
)


def register_converter(cls: type[Converter]) -> type[Converter]:
    _REGISTRY[(cls.framework, cls.target)] = cls
    return cls


def _load_all() -> None:
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but a dependency is missing: it registers nothing
                raise


def get_converter(framework: str, target: str) -> Converter:
    """The converter for ``framework`` → ``target``, or a clear error listing what exists."""
    if target not in TARGETS:
        raise InvalidInputError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    _load_all()
    cls = _REGISTRY.get((framework, target))
    if cls is None:
        sources = sorted(f for f, t in _REGISTRY if t == target)
        raise UnsupportedConversionError(
            f"no converter from {framework} to {target}; {target} can be made from: {', '.join(sources) or 'nothing'}"
        )
    return cls()


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency or raise a clear error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs {module.split('.')[0]}, which is not installed ({exc}): pip install 'edgepack[{extra}]'"
        ) from None


def as_feeds(
    sample: Sample, input_names: list[str], dtypes: Mapping[str, np.dtype] | None = None
) -> dict[str, np.ndarray]:
    """Name a sample's arrays after the model's inputs, checking count and casting to the input dtypes."""
    if isinstance(sample, np.ndarray):
        if len(input_names) != 1:
            raise InvalidInputError(
                f"the model has {len(input_names)} inputs ({', '.join(input_names)}); give the sample as an .npz "
                "or JSON object with one array per input name"
            )
        feeds = {input_names[0]: sample}
    else:
        missing = [n for n in input_names if n not in sample]
        if missing and len(sample) == len(input_names):
            feeds = dict(zip(input_names, sample.values(), strict=True))  # positional, e.g. npz arr_0
        elif missing:
            raise InvalidInputError(f"the sample lacks input(s) {', '.join(missing)}; it has {', '.join(sample)}")
        else:
            feeds = {n: np.asarray(sample[n]) for n in input_names}
    if dtypes:
        feeds = {n: np.asarray(a).astype(dtypes[n], copy=False) if n in dtypes else a for n, a in feeds.items()}
    return feeds


def check_shape(name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> None:
    """Raise a clear error when ``array`` does not fit ``expected`` (None = any size)."""
    ok = array.ndim == len(expected) and all(e is None or e == a for e, a in zip(expected, array.shape, strict=True))
    if not ok:
        want = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
        raise InvalidInputError(f"sample input {name!r} has shape {list(array.shape)}, the model expects {want}")


def random_sample(shape: tuple[int | None, ...], dtype: np.dtype | type = np.float32, batch: int = 4) -> np.ndarray:
    """A seeded sample for a signature (dynamic dims become ``batch``)."""
    rng = np.random.default_rng(0)
    dims = tuple(batch if d is None else d for d in shape)
    return rng.standard_normal(dims).astype(dtype)
