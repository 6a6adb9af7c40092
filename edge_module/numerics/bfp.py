"""Block floating point in the MSFP family (Microsoft Floating Point, Brainwave; OCP MX-like).

Blocks of ``block_size`` consecutive values along ``axis`` (the dot-product dimension) share one
exponent ``E``: the largest ``floor(log2|x|)`` in the block, clipped to the signed range of
``exponent_bits`` (8 bits: -127..127, as OCP MX's E8M0 scale). Each value keeps a sign and an
``mantissa_bits``-bit magnitude ``M`` (no hidden bit): ``x' = ±M * 2**(E - mantissa_bits + 1)``, so
the block's largest value keeps ``mantissa_bits`` significant bits and smaller ones fewer.

- rounding: ``"nearest_even"`` (default) or ``"truncate"`` (magnitude toward zero);
- a rounded magnitude of ``2**mantissa_bits`` (the block maximum rounding up) saturates to
  ``2**mantissa_bits - 1``, as do values of blocks whose exponent was clipped at the top;
- a last partial block is padded with zeros (which never raise the shared exponent);
- an all-zero block gets the smallest exponent.

``msfp12`` is ``mantissa_bits=3`` (1 sign + 3 mantissa + 8 shared exponent bits), ``msfp16`` is
``mantissa_bits=7``, both with ``block_size=16``. Arithmetic is float64 ``ldexp``/``rint`` on exact
binary values, so results are exact and deterministic.
"""

from __future__ import annotations

import numpy as np

from ._checks import block_axis, finite_float64

ROUNDINGS = ("nearest_even", "truncate")


def check_params(block_size: int, mantissa_bits: int, exponent_bits: int, rounding: str = "nearest_even") -> None:
    """ValueError saying what is wrong with a BFP configuration and what is accepted."""
    for label, value, low, high in (
        ("block size k", block_size, 1, 1 << 16),
        ("mantissa bits m", mantissa_bits, 1, 30),
        ("exponent bits e", exponent_bits, 2, 16),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
            raise ValueError(f"block floating point {label}={value!r} is not supported: use an integer {low}..{high}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown block floating point rounding {rounding!r}: use one of {', '.join(ROUNDINGS)}")


def exponent_range(exponent_bits: int) -> tuple[int, int]:
    """Smallest and largest shared exponent: ``±(2**(e-1) - 1)``."""
    top = (1 << (exponent_bits - 1)) - 1
    return -top, top


def _blocks(values: np.ndarray, axis: int, block_size: int) -> tuple[np.ndarray, int]:
    """``values`` with ``axis`` last, zero-padded and split to ``(..., n_blocks, block_size)``."""
    moved = np.moveaxis(values, axis, -1)
    n = moved.shape[-1]
    n_blocks = -(-n // block_size)
    pad = n_blocks * block_size - n
    if pad:
        moved = np.concatenate([moved, np.zeros((*moved.shape[:-1], pad), moved.dtype)], axis=-1)
    return moved.reshape(*moved.shape[:-1], n_blocks, block_size), n


def _unblocks(blocks: np.ndarray, n: int, axis: int) -> np.ndarray:
    flat = blocks.reshape(*blocks.shape[:-2], -1)[..., :n]
    return np.moveaxis(flat, -1, axis)


def _rounded(
    x: object, axis: int, block_size: int, mantissa_bits: int, exponent_bits: int, rounding: str, name: str
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Signed rounded mantissas as float64 ``(..., n_blocks, block_size)``, the shared exponents
    ``(..., n_blocks)``, the axis and its length. Scaling by powers of two is exact in float64 here (a
    product that underflows is far below half a step, so it rounds to 0 either way)."""
    check_params(block_size, mantissa_bits, exponent_bits, rounding)
    values = finite_float64(x, name)
    if values.ndim == 0:
        values, axis = values.reshape(1), 0
    axis = block_axis(values.ndim, axis, name)
    blocks, n = _blocks(values, axis, block_size)
    block_max = np.abs(blocks).max(axis=-1)
    e_min, e_max = exponent_range(exponent_bits)
    shared = np.where(block_max > 0, np.frexp(block_max)[1] - 1, e_min)  # floor(log2 max|x|), exact
    shared = np.clip(shared, e_min, e_max)
    scaled = blocks * np.ldexp(1.0, mantissa_bits - 1 - shared)[..., None]
    if rounding == "nearest_even":
        np.rint(scaled, out=scaled)  # half to even on the magnitude: rint is symmetric
    else:
        np.trunc(scaled, out=scaled)
    limit = float((1 << mantissa_bits) - 1)  # a block maximum rounding up to 2**m saturates
    np.clip(scaled, -limit, limit, out=scaled)
    return scaled, shared, axis, n


def quantize(
    x: object,
    axis: int = -1,
    block_size: int = 16,
    mantissa_bits: int = 7,
    exponent_bits: int = 8,
    rounding: str = "nearest_even",
    name: str = "tensor",
) -> tuple[np.ndarray, np.ndarray]:
    """``(mantissas, exponents)``: signed magnitudes (int32, ``x``'s shape) and shared exponents (int16,
    ``x``'s shape with ``axis`` cut to the number of blocks)."""
    scaled, shared, axis, n = _rounded(x, axis, block_size, mantissa_bits, exponent_bits, rounding, name)
    mantissas = _unblocks(scaled.astype(np.int32), n, axis).reshape(np.shape(x) or (1,))
    exponents = np.moveaxis(shared, -1, axis).astype(np.int16)
    return (mantissas.reshape(()) if np.ndim(x) == 0 else mantissas), exponents


def dequantize(
    mantissas: object, exponents: object, axis: int = -1, block_size: int = 16, mantissa_bits: int = 7
) -> np.ndarray:
    """float64 values ``mantissa * 2**(exponent - mantissa_bits + 1)`` (exact)."""
    check_params(block_size, mantissa_bits, 8)
    mant = np.asarray(mantissas, dtype=np.int64)
    shape = mant.shape
    if mant.ndim == 0:
        mant = mant.reshape(1)
        axis = 0
    axis = block_axis(mant.ndim, axis, "mantissas")
    exps = np.asarray(exponents, dtype=np.int64)
    if exps.ndim != mant.ndim:
        raise ValueError(f"exponents of shape {exps.shape} do not match mantissas of shape {shape}")
    exps = np.moveaxis(exps, axis, -1)
    blocks, n = _blocks(mant.astype(np.float64), axis, block_size)
    if exps.shape != blocks.shape[:-1]:
        raise ValueError(f"exponents of shape {np.shape(exponents)} do not match {shape} in blocks of {block_size}")
    values = np.ldexp(blocks, (exps - mantissa_bits + 1)[..., None])
    return _unblocks(values, n, axis).reshape(shape)


def fake_quantize(
    x: object,
    axis: int = -1,
    block_size: int = 16,
    mantissa_bits: int = 7,
    exponent_bits: int = 8,
    rounding: str = "nearest_even",
    name: str = "tensor",
    dtype: object = None,
) -> np.ndarray:
    """``x`` quantized and dequantized, as ``dtype`` (default: ``x``'s float dtype; float32 is exact for
    ``mantissa_bits <= 23`` with 8 exponent bits)."""
    scaled, shared, axis, n = _rounded(x, axis, block_size, mantissa_bits, exponent_bits, rounding, name)
    scaled *= np.ldexp(1.0, shared - mantissa_bits + 1)[..., None]
    if dtype is None:
        kind = np.asarray(x).dtype
        dtype = kind if kind.kind == "f" else np.float64
    return _unblocks(scaled, n, axis).reshape(np.shape(x)).astype(dtype, copy=False)
