"""Fixed point ``ap_fixed<W,I,Q,O>`` (and ``ap_ufixed``), the type HLS and hls4ml use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge_module.numerics import fixed as kernels

from ._names import as_int, split_name
from .base import FormatError, NumberFormat, QuantizedTensor

DEFAULT_ROUNDING, DEFAULT_OVERFLOW = "AP_TRN", "AP_WRAP"  # ap_fixed's own defaults


@dataclass(frozen=True, eq=False, repr=False)
class FixedPoint(NumberFormat):
    """``ap_fixed<width, integer, rounding, overflow>``: ``width`` bits, ``integer`` of them left of the
    binary point (sign included; may be negative or exceed ``width``). Defaults are ap_fixed's:
    ``AP_TRN`` (floor) and ``AP_WRAP``, so ``fixed<16,6>`` is hls4ml's default ``ap_fixed<16,6>``."""

    width: int
    integer: int
    rounding: str = DEFAULT_ROUNDING
    overflow: str = DEFAULT_OVERFLOW
    signed: bool = True

    prefixes: ClassVar[tuple[str, ...]] = ("fixed", "ufixed", "ap_fixed", "ap_ufixed")
    examples: ClassVar[tuple[str, ...]] = ("fixed<16,6>", "ap_fixed<16,6,AP_RND,AP_SAT>", "ufixed<8,0>")

    def __post_init__(self) -> None:
        try:
            kernels.check_params(self.width, self.integer, self.rounding, self.overflow, self.signed)
        except ValueError as exc:
            raise FormatError(f"{self._spell()}: {exc}") from None

    def _spell(self) -> str:
        return f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    @classmethod
    def parse(cls, text: str) -> FixedPoint:
        """``fixed<W,I>``, ``ufixed<W,I>``, ``ap_fixed<W,I,Q,O>``, ``ap_ufixed<...>``; modes with or without
        ``AP_`` (hls4ml writes ``fixed<16,6,RND,SAT,0>``), case-insensitive; a 5th argument N must be 0."""
        prefix, args = split_name(text)
        accepted = "fixed<W,I>, ufixed<W,I>, ap_fixed<W,I[,Q[,O[,0]]]> or ap_ufixed<...>"
        if prefix not in cls.prefixes or not args or not 2 <= len(args) <= 5:
            raise FormatError(f"{text!r} is not a fixed point type: use {accepted}, e.g. ap_fixed<16,6,AP_RND,AP_SAT>")
        width, integer = as_int(args[0], "width W", text), as_int(args[1], "integer bits I", text)
        rounding = _mode(args[2]) if len(args) > 2 else DEFAULT_ROUNDING
        overflow = _mode(args[3]) if len(args) > 3 else DEFAULT_OVERFLOW
        if len(args) == 5 and as_int(args[4], "saturation bits N", text) != 0:
            raise FormatError(f"{text!r}: saturation bits N other than 0 are not supported")
        try:
            return cls(width, integer, rounding, overflow, signed=not prefix.endswith("ufixed"))
        except FormatError as exc:
            raise FormatError(f"{text!r}: {str(exc).split(': ', 1)[1]}") from None

    def __str__(self) -> str:
        if (self.rounding, self.overflow) == (DEFAULT_ROUNDING, DEFAULT_OVERFLOW):
            return f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer}>"
        return self._spell()

    def to_hls_precision(self) -> str:
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        if (self.rounding, self.overflow) == (DEFAULT_ROUNDING, DEFAULT_OVERFLOW):
            return f"{kind}<{self.width},{self.integer}>"
        return f"{kind}<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    @property
    def bits_per_value(self) -> float:
        return float(self.width)

    @property
    def lsb(self) -> float:
        """The value of one code step, ``2**-(W-I)``."""
        return float(np.ldexp(1.0, self.integer - self.width))

    @property
    def max_value(self) -> float:
        return float(np.ldexp(float(kernels.code_range(self.width, self.signed, self.overflow)[1]), -self._frac))

    @property
    def min_value(self) -> float:
        return float(np.ldexp(float(kernels.code_range(self.width, self.signed, self.overflow)[0]), -self._frac))

    @property
    def _frac(self) -> int:
        return self.width - self.integer

    def quantize(self, x: object, name: str = "tensor") -> QuantizedTensor:
        codes = kernels.quantize(x, self.width, self.integer, self.rounding, self.overflow, self.signed, name)
        return QuantizedTensor(self, codes)

    def quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> QuantizedTensor:
        return self.quantize(w, name)

    def quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> QuantizedTensor:
        _no_params(params, self)
        return self.quantize(x, name)

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        return kernels.dequantize(q.codes, self.width, self.integer)

    def fake_quantize(self, x: object, name: str = "tensor") -> np.ndarray:
        """``x`` as the hardware sees it, as float32 (exact for ``width <= 24`` in float32's range)."""
        return kernels.fake_quantize(
            x, self.width, self.integer, self.rounding, self.overflow, self.signed, name, np.float32
        )

    def fake_quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> np.ndarray:
        return self.fake_quantize(w, name)

    def fake_quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> np.ndarray:
        _no_params(params, self)
        return self.fake_quantize(x, name)


def _mode(text: str) -> str:
    mode = text.strip().upper()
    return mode if mode.startswith("AP_") else f"AP_{mode}"


def _no_params(params: dict, fmt: NumberFormat) -> None:
    if params:
        raise FormatError(f"{fmt} takes no activation parameters (got {', '.join(sorted(params))})")
