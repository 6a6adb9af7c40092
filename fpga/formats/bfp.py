"""Block floating point in the MSFP family: ``msfp12``, ``msfp16``, ``bfp<k=16,m=5,e=8>``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge_module.numerics import bfp as kernels

from ._names import as_int, split_name
from .base import FormatError, NumberFormat, QuantizedTensor

# MSFP: 1 sign bit + m mantissa bits + one 8-bit exponent per block of 16 (NeurIPS 2020).
ALIASES = {"msfp12": (16, 3, 8), "msfp16": (16, 7, 8)}
_ROUND_NAMES = {"nearest_even": "nearest_even", "rne": "nearest_even", "truncate": "truncate", "trunc": "truncate"}


@dataclass(frozen=True, eq=False, repr=False)
class BlockFloatingPoint(NumberFormat):
    """Blocks of ``block_size`` values along the dot-product axis share an ``exponent_bits`` exponent;
    each value keeps a sign and a ``mantissa_bits`` magnitude (see ``edge_module.numerics.bfp``)."""

    block_size: int = 16
    mantissa_bits: int = 7
    exponent_bits: int = 8
    rounding: str = "nearest_even"

    prefixes: ClassVar[tuple[str, ...]] = ("bfp", "msfp12", "msfp16")
    examples: ClassVar[tuple[str, ...]] = ("msfp12", "msfp16", "bfp<k=16,m=5,e=8>", "bfp<k=32,m=4,e=8,round=truncate>")

    def __post_init__(self) -> None:
        try:
            kernels.check_params(self.block_size, self.mantissa_bits, self.exponent_bits, self.rounding)
        except ValueError as exc:
            raise FormatError(str(exc)) from None

    @classmethod
    def parse(cls, text: str) -> BlockFloatingPoint:
        prefix, args = split_name(text)
        usage = "use msfp12, msfp16 or bfp<k=K,m=M,e=E[,round=nearest_even|truncate]> (defaults k=16, e=8)"
        if prefix in ALIASES and args is None:
            return cls(*ALIASES[prefix])
        if prefix != "bfp" or not args:
            raise FormatError(f"{text!r} is not a block floating point format: {usage}")
        values: dict[str, str] = {}
        for arg in args:
            key, sep, value = arg.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("k", "m", "e", "round") or key in values:
                raise FormatError(f"{text!r}: bad argument {arg!r}: {usage}")
            values[key] = value.strip()
        if "m" not in values:
            raise FormatError(f"{text!r}: the mantissa bits m are required: {usage}")
        rounding = _ROUND_NAMES.get(values.get("round", "nearest_even").lower())
        if rounding is None:
            raise FormatError(f"{text!r}: unknown rounding {values['round']!r}: use nearest_even or truncate")
        try:
            return cls(
                as_int(values.get("k", "16"), "block size k", text),
                as_int(values["m"], "mantissa bits m", text),
                as_int(values.get("e", "8"), "exponent bits e", text),
                rounding,
            )
        except FormatError as exc:
            raise FormatError(f"{text!r}: {exc}") from None

    def __str__(self) -> str:
        for alias, params in ALIASES.items():
            if (self.block_size, self.mantissa_bits, self.exponent_bits) == params and self.rounding == "nearest_even":
                return alias
        text = f"bfp<k={self.block_size},m={self.mantissa_bits},e={self.exponent_bits}"
        return text + (">" if self.rounding == "nearest_even" else f",round={self.rounding}>")

    @property
    def bits_per_value(self) -> float:
        return 1 + self.mantissa_bits + self.exponent_bits / self.block_size

    def quantize(self, x: object, axis: int, name: str = "tensor") -> QuantizedTensor:
        mantissas, exponents = kernels.quantize(
            x, axis, self.block_size, self.mantissa_bits, self.exponent_bits, self.rounding, name
        )
        return QuantizedTensor(self, mantissas, axis=axis, exponents=exponents)

    def quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> QuantizedTensor:
        return self.quantize(w, block_axis, name)

    def quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> QuantizedTensor:
        if params:
            raise FormatError(f"{self} takes no activation parameters (got {', '.join(sorted(params))})")
        return self.quantize(x, block_axis, name)

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        return kernels.dequantize(q.codes, q.exponents, q.axis, self.block_size, self.mantissa_bits)

    def fake_quantize(self, x: object, axis: int, name: str = "tensor") -> np.ndarray:
        """``x`` as the hardware sees it, as float32 (exact for ``mantissa_bits <= 23``, 8 exponent bits)."""
        return kernels.fake_quantize(
            x, axis, self.block_size, self.mantissa_bits, self.exponent_bits, self.rounding, name, np.float32
        )

    def fake_quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> np.ndarray:
        return self.fake_quantize(w, block_axis, name)

    def fake_quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> np.ndarray:
        if params:
            raise FormatError(f"{self} takes no activation parameters (got {', '.join(sorted(params))})")
        return self.fake_quantize(x, block_axis, name)
