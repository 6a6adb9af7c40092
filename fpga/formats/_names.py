"""Splitting format names such as ``ap_fixed<16,6,AP_RND,AP_SAT>`` into a prefix and arguments."""

from __future__ import annotations

import re

from .base import FormatError

_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:<(.*)>)?\s*$", re.DOTALL)


def split_name(text: object) -> tuple[str, list[str] | None]:
    """``"ap_fixed<16, 6>"`` → ``("ap_fixed", ["16", "6"])``; ``"int8"`` → ``("int8", None)``."""
    if not isinstance(text, str):
        raise FormatError(f"a number format name must be a string, got {type(text).__name__}")
    match = _NAME.match(text)
    if not match:
        raise FormatError(f"{text!r} is not a format name: expected NAME or NAME<ARG,...> such as fixed<16,6>")
    args = match.group(2)
    if args is None:
        return match.group(1).lower(), None
    parts = [part.strip() for part in args.split(",")]
    if any(not part for part in parts):
        raise FormatError(f"{text!r} has an empty argument between < and >")
    return match.group(1).lower(), parts


def as_int(text: str, what: str, name: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise FormatError(f"{name!r}: {what} {text!r} is not an integer") from None
