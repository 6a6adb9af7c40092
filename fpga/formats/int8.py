"""INT8: symmetric per-channel weights, per-tensor activations (ONNX QuantizeLinear semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge_module.numerics import int8 as kernels

from ._names import split_name
from .base import FormatError, NumberFormat, QuantizedTensor

ACTIVATION_MODES = ("symmetric", "asymmetric")


@dataclass(frozen=True, eq=False, repr=False)
class Int8(NumberFormat):
    """Weights: int8 codes in [-127, 127] with one float32 scale per output channel. Activations: one
    scale per tensor, symmetric (zero point 0) or asymmetric (int8 zero point)."""

    activations: str = "symmetric"

    prefixes: ClassVar[tuple[str, ...]] = ("int8",)
    examples: ClassVar[tuple[str, ...]] = ("int8", "int8<act=asymmetric>")

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_MODES:
            raise FormatError(
                f"int8 activations {self.activations!r} are not supported: use {' or '.join(ACTIVATION_MODES)}"
            )

    @classmethod
    def parse(cls, text: str) -> Int8:
        prefix, args = split_name(text)
        usage = "use int8, int8<act=symmetric> or int8<act=asymmetric>"
        if prefix != "int8":
            raise FormatError(f"{text!r} is not int8: {usage}")
        if args is None:
            return cls()
        key, sep, value = args[0].partition("=")
        if len(args) != 1 or not sep or key.strip().lower() != "act":
            raise FormatError(f"{text!r}: {usage}")
        return cls(value.strip().lower())

    def __str__(self) -> str:
        return "int8" if self.activations == "symmetric" else f"int8<act={self.activations}>"

    @property
    def bits_per_value(self) -> float:
        return 8.0

    def quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> QuantizedTensor:
        codes, scales = kernels.quantize_weights(w, channel_axis, name)
        return QuantizedTensor(self, codes, axis=channel_axis, scale=scales, zero_point=np.zeros_like(scales, np.int8))

    def activation_params(
        self, x: object | None = None, lo: float | None = None, hi: float | None = None, name: str = "activation"
    ) -> tuple[np.float32, np.int8]:
        """``(scale, zero_point)`` for a tensor or a calibrated range."""
        return kernels.activation_params(x, self.activations == "symmetric", name, lo, hi)

    def quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> QuantizedTensor:
        """Per-tensor codes with ``scale=``/``zero_point=`` given (calibrated), else taken from ``x``'s range."""
        unknown = set(params) - {"scale", "zero_point"}
        if unknown:
            raise FormatError(f"int8 activations take scale= and zero_point=, not {', '.join(sorted(unknown))}")
        if params.get("scale") is None:
            scale, zero_point = self.activation_params(x, name=name)
        else:
            scale, zero_point = np.float32(params["scale"]), np.int8(params.get("zero_point", 0))
        codes = kernels.quantize(x, scale, zero_point, name=name)
        return QuantizedTensor(self, codes, scale=np.asarray(scale), zero_point=np.asarray(zero_point))

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        return kernels.dequantize(q.codes, q.scale, q.zero_point, q.axis)
