"""INT8 quantization as ONNX QuantizeLinear/DequantizeLinear compute it (float32, round half to even).

``q = saturate(round_half_even(x / scale) + zero_point)`` and ``x' = (q - zero_point) * scale``, in
float32 with float32 scales, so codes match onnxruntime's QDQ nodes and qonnx's ``Quant`` bit for bit.

- weights: symmetric, one scale per output channel (``axis``, default 0), codes in [-127, 127];
- activations: one scale per tensor, symmetric (zero point 0, codes in [-128, 127] as
  QuantizeLinear saturates) or asymmetric (int8 with a zero point, the range widened to hold 0).
"""

from __future__ import annotations

import numpy as np

from ._checks import block_axis, finite_float64

WEIGHT_QMAX = 127
QMIN, QMAX = -128, 127


def _finite_float32(x: object, name: str) -> np.ndarray:
    limit = np.finfo(np.float32).max  # larger float64 values saturate anyway; clip them before the cast
    return np.clip(finite_float64(x, name), -limit, limit).astype(np.float32)


def _scale_of(amax: np.ndarray, levels: float) -> np.ndarray:
    """float32 scales ``amax / levels``; 1.0 where ``amax`` is 0 (any scale codes zeros as 0)."""
    scale = (np.asarray(amax, dtype=np.float64) / levels).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = param.shape[0]
    return param.reshape(shape)


def weight_scales(w: object, axis: int = 0, name: str = "weight") -> np.ndarray:
    """Symmetric per-channel scales (float32, one per index of ``axis``): ``max|w| / 127``."""
    values = _finite_float32(w, name)
    axis = block_axis(values.ndim, axis, name)
    others = tuple(i for i in range(values.ndim) if i != axis)
    return _scale_of(np.abs(values).max(axis=others) if values.size else np.zeros(values.shape[axis]), WEIGHT_QMAX)


def activation_params(
    x: object | None = None,
    symmetric: bool = True,
    name: str = "activation",
    lo: float | None = None,
    hi: float | None = None,
) -> tuple[np.float32, np.int8]:
    """Per-tensor ``(scale, zero_point)`` from the tensor ``x`` or a calibrated range ``lo..hi``.

    Symmetric: ``scale = max(|lo|, |hi|) / 127``, zero point 0. Asymmetric (as onnxruntime's
    MinMax calibration): the range widened to contain 0, ``scale = (hi - lo) / 255``,
    ``zero_point = round_half_even(-128 - lo / scale)`` clipped to int8.
    """
    if x is not None:
        values = _finite_float32(x, name)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo is None or hi is None:
        raise ValueError(f"{name}: give the tensor or both lo and hi")
    finite_float64([lo, hi], f"{name} range")
    if lo > hi:
        raise ValueError(f"{name}: range lo={lo} is above hi={hi}")
    if symmetric:
        return np.float32(_scale_of(np.float64(max(abs(lo), abs(hi))), WEIGHT_QMAX)), np.int8(0)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32(_scale_of(np.float64(hi - lo), QMAX - QMIN))
    zero_point = np.clip(np.rint(QMIN - np.float32(lo) / scale), QMIN, QMAX)
    return scale, np.int8(zero_point)


def quantize(
    x: object,
    scale: object,
    zero_point: object = 0,
    axis: int | None = None,
    qmin: int = QMIN,
    qmax: int = QMAX,
    name: str = "tensor",
) -> np.ndarray:
    """int8 codes of ``x`` (QuantizeLinear); ``scale``/``zero_point`` per tensor, or per index of ``axis``."""
    values = _finite_float32(x, name)
    scale_arr = np.asarray(scale, dtype=np.float32)
    if not (np.isfinite(scale_arr).all() and (scale_arr > 0).all()):
        raise ValueError(f"{name}: scales must be finite and positive")
    if axis is not None:
        axis = block_axis(values.ndim, axis, name)
    scale_b = _broadcast(scale_arr, values.ndim, axis)
    zp_b = _broadcast(np.asarray(zero_point, dtype=np.int32), values.ndim, axis)
    with np.errstate(over="ignore"):  # values beyond scale * 2**127 become inf, then saturate
        codes = np.rint(values / scale_b) + zp_b.astype(np.float32)
    return np.clip(codes, qmin, qmax).astype(np.int8)


def dequantize(codes: object, scale: object, zero_point: object = 0, axis: int | None = None) -> np.ndarray:
    """float32 values of int8 ``codes`` (DequantizeLinear)."""
    q = np.asarray(codes)
    if axis is not None:
        axis = block_axis(q.ndim, axis, "codes")
    scale_b = _broadcast(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    zp_b = _broadcast(np.asarray(zero_point, dtype=np.int32), q.ndim, axis)
    return ((q.astype(np.int32) - zp_b).astype(np.float32) * scale_b).astype(np.float32)


def fake_quantize(
    x: object,
    scale: object,
    zero_point: object = 0,
    axis: int | None = None,
    qmin: int = QMIN,
    qmax: int = QMAX,
    name: str = "tensor",
) -> np.ndarray:
    """``x`` through QuantizeLinear then DequantizeLinear (float32)."""
    return dequantize(quantize(x, scale, zero_point, axis, qmin, qmax, name), scale, zero_point, axis)


def quantize_weights(w: object, axis: int = 0, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel ``(codes int8 in [-127, 127], scales float32)``."""
    scales = weight_scales(w, axis, name)
    return quantize(w, scales, 0, axis, -WEIGHT_QMAX, WEIGHT_QMAX, name), scales
