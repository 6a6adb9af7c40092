"""Formats by name: ``get_format("fixed<16,6>")``, ``"int8"``, ``"msfp12"``, ``"bfp<k=16,m=5,e=8>"``."""

from __future__ import annotations

from ._names import split_name
from .base import FormatError, NumberFormat
from .bfp import BlockFloatingPoint
from .fixed import FixedPoint
from .int8 import Int8

_FORMATS: dict[str, type[NumberFormat]] = {}


def register_format(cls: type[NumberFormat]) -> type[NumberFormat]:
    """Make ``get_format`` hand names starting with one of ``cls.prefixes`` to ``cls.parse``."""
    for prefix in cls.prefixes:
        owner = _FORMATS.get(prefix)
        if owner is not None and owner is not cls:
            raise ValueError(f"format prefix {prefix!r} is already taken by {owner.__name__}")
        _FORMATS[prefix] = cls
    return cls


for _cls in (FixedPoint, Int8, BlockFloatingPoint):
    register_format(_cls)


def available_formats() -> list[str]:
    """Example names of every registered format."""
    seen: list[str] = []
    for cls in _FORMATS.values():
        seen.extend(example for example in cls.examples if example not in seen)
    return seen


def get_format(name: str | NumberFormat) -> NumberFormat:
    """The format a name describes (a format object passes through); FormatError saying what is accepted."""
    if isinstance(name, NumberFormat):
        return name
    prefix, _ = split_name(name)
    cls = _FORMATS.get(prefix)
    if cls is None:
        raise FormatError(f"unknown number format {name!r}: use one of {', '.join(available_formats())}")
    return cls.parse(name)
