"""The interface every number format implements, and the quantized tensor it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


class FormatError(ValueError):
    """A format name or parameter is not valid; the message says what is wrong and what is accepted."""


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Integer codes plus what it takes to read them back.

    ``codes``: fixed-point codes (int64), int8 codes, or BFP signed mantissas (int32). ``scale`` and
    ``zero_point``: int8's (per ``axis`` or per tensor). ``exponents``: BFP's shared exponents per block
    along ``axis``.
    """

    format: NumberFormat
    codes: np.ndarray
    axis: int | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    exponents: np.ndarray | None = None

    def dequantize(self, dtype: object = np.float32) -> np.ndarray:
        """The values the codes stand for."""
        return self.format.dequantize(self).astype(dtype, copy=False)


class NumberFormat(ABC):
    """A number format users name (``fixed<16,6>``, ``int8``, ``msfp12``...)."""

    prefixes: ClassVar[tuple[str, ...]] = ()  # the name prefixes ``parse`` accepts
    examples: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def parse(cls, text: str) -> NumberFormat:
        """The format a name describes; FormatError saying what is wrong otherwise."""

    @abstractmethod
    def __str__(self) -> str:
        """The canonical name; ``parse(str(f)) == f``."""

    @property
    @abstractmethod
    def bits_per_value(self) -> float:
        """Storage bits per value, shared bits (scales, exponents) spread over the values they serve."""

    @abstractmethod
    def quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> QuantizedTensor:
        """Quantize a weight tensor. ``channel_axis``: output channels (per-channel scales);
        ``block_axis``: the dot-product dimension (BFP blocks)."""

    @abstractmethod
    def quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> QuantizedTensor:
        """Quantize an activation tensor (``block_axis``: the dot-product dimension for BFP)."""

    @abstractmethod
    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        """The values of a tensor this format quantized (float64 or float32)."""

    def to_hls_precision(self) -> str | None:
        """The hls4ml precision string (``ap_fixed<16,6>``), or None when hls4ml has no such type."""
        return None

    def fake_quantize_weights(
        self, w: object, channel_axis: int = 0, block_axis: int = 1, name: str = "weight"
    ) -> np.ndarray:
        """Weights as the hardware sees them, as float32."""
        return self.quantize_weights(w, channel_axis, block_axis, name).dequantize()

    def fake_quantize_activations(
        self, x: object, block_axis: int = 1, name: str = "activation", **params: object
    ) -> np.ndarray:
        """Activations as the hardware sees them, as float32."""
        return self.quantize_activations(x, block_axis, name, **params).dequantize()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, str(self)))
