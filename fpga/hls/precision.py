"""Our format names -> hls4ml precision strings, per layer (weight, bias, result, accum)."""

from __future__ import annotations

from collections.abc import Mapping

from fpga.formats import FormatError, get_format

from .frontend import HlsError

KEYS = ("weight", "bias", "result", "accum")
# What the layer feeding a fixed-point softmax must produce: hls4ml's softmax indexes its exp table with
# the input's bits, and a wide "auto" type (39 bits after a Dense) silently gives ~10 % accuracy.
SOFTMAX_INPUT = "ap_fixed<16,6,AP_RND,AP_SAT>"
SOFTMAX_TABLE = {"exp_table": "ap_fixed<18,8,AP_RND,AP_SAT>", "inv_table": "ap_fixed<18,8,AP_RND,AP_SAT>"}
SOFTMAX_MAX_INPUT_WIDTH = 18


def hls_precision(text: str) -> str:
    """``fixed<16,6>`` / ``ap_fixed<8,3,AP_RND,AP_SAT>`` / ``auto`` -> hls4ml's string (``ap_fixed<16,6>``)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        fmt = get_format(text)
    except FormatError as exc:
        raise HlsError(f"precision {text!r}: {exc}") from None
    hls = fmt.to_hls_precision()
    if hls is None:
        raise HlsError(
            f"hls4ml has no type for {fmt} (only fixed point): give the layer a fixed<W,I> precision, "
            "e.g. the one calibration chose, or emulate this format instead"
        )
    return hls


def layer_spec(value: str | Mapping[str, str], layer: str) -> dict[str, str]:
    """A layer's precision: one format for weight, bias and result (accumulator left to hls4ml's exact
    ``auto``), or a dict with any of ``weight``, ``bias``, ``result``, ``accum``."""
    if isinstance(value, str):
        p = hls_precision(value)
        return {"weight": p, "bias": p, "result": p}
    if not isinstance(value, Mapping):
        raise HlsError(f"layer {layer!r}: precision must be a format name or a dict of {', '.join(KEYS)}")
    unknown = set(value) - set(KEYS)
    if unknown:
        raise HlsError(f"layer {layer!r}: unknown precision keys {sorted(unknown)}; use {', '.join(KEYS)}")
    return {k: hls_precision(v) for k, v in value.items()}


def width_of(hls: str) -> int | None:
    """The total width of an ``ap_fixed<W,...>``/``fixed<W,...>`` string, None for ``auto``."""
    if "<" not in hls:
        return None
    return int(hls.split("<", 1)[1].split(",")[0].split(">")[0])
