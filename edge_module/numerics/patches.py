"""Convolution and pooling geometry on NCHW tensors (numpy only): ONNX ``pads``, output sizes and the
im2col copies (``windows``, patch ``rows`` and ``columns`` in ``(kh, kw, C)`` order) that the emulator's
convolution and pooling layers read. A ``geometry`` is ``(kernel, pads, strides, dilations)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

COLUMN_CHANNELS = 4  # convolutions of at most this many input channels take im2col in columns


def pads(attrs: Mapping) -> tuple[int, int, int, int]:
    values = list(attrs.get("pads", [0, 0, 0, 0]))
    return int(values[0]), int(values[1]), int(values[2]), int(values[3])


def geometry(attrs: Mapping) -> tuple:
    """A convolution layer's ``(kernel, pads, strides, dilations)``."""
    return (tuple(attrs["kernel_shape"]), pads(attrs), tuple(attrs["strides"]), tuple(attrs["dilations"]))


def out_hw(h: int, w: int, geometry: tuple) -> tuple[int, int]:
    (kh, kw), (top, left, bottom, right), (sh, sw), (dh, dw) = geometry
    return (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1


def windows(
    x: np.ndarray,
    kernel: tuple[int, int],
    pads: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int] = (1, 1),
    pad_value: float = 0.0,
) -> np.ndarray:
    """Patches ``(N, OH, OW, kh, kw, C)`` of an NCHW tensor (ONNX ``pads``: top, left, bottom, right): one
    copy of a strided view of the padded channels-last tensor."""
    return np.ascontiguousarray(window_view(x, kernel, pads, strides, dilations, pad_value))


def window_view(
    x: np.ndarray,
    kernel: tuple[int, int],
    pads: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int] = (1, 1),
    pad_value: float = 0.0,
) -> np.ndarray:
    """The read-only strided view ``windows`` copies."""
    n, c, h, w = x.shape
    kh, kw = kernel
    top, left, bottom, right = pads
    sh, sw = strides
    dh, dw = dilations
    oh, ow = out_hw(h, w, (kernel, pads, strides, dilations))
    if any(pads):
        xp = np.full((n, h + top + bottom, w + left + right, c), pad_value, x.dtype)
        xp[:, top : top + h, left : left + w, :] = x.transpose(0, 2, 3, 1)
    else:
        xp = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    s0, s1, s2, s3 = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False
    )


def block_window_view(x: np.ndarray, geometry: tuple, k: int) -> np.ndarray:
    """``windows(x, *geometry)`` for channels in whole blocks of ``k`` (``C % k == 0``), block-major: a
    read-only view ``(kh, kw, C // k, N, OH, OW, k)`` whose first three axes are the patch's blocks in
    ``windows``' order. It reads a zero-padded copy laid out ``(C // k, N, Hp, Wp, k)``, so a block's
    values for an image row of outputs are ``OW * k`` contiguous values when the width stride is 1 (a
    copy of the view runs long inner loops)."""
    (kh, kw), (top, left, bottom, right), (sh, sw), (dh, dw) = geometry
    n, c, h, w = x.shape
    if c % k:
        raise ValueError(f"{c} channels are not whole blocks of {k}")
    oh, ow = out_hw(h, w, geometry)
    xp = np.zeros((c // k, n, h + top + bottom, w + left + right, k), x.dtype)
    xp[:, :, top : top + h, left : left + w] = x.reshape(n, c // k, k, h, w).transpose(1, 0, 3, 4, 2)
    s0, s1, s2, s3, s4 = xp.strides
    shape, strides = (kh, kw, c // k, n, oh, ow, k), (s2 * dh, s3 * dw, s0, s1, s2 * sh, s3 * sw, s4)
    return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)


def rows(x: np.ndarray, geometry: tuple, length: int) -> np.ndarray:
    """``windows(x, *geometry)`` as rows ``(N * OH * OW, length)``, zero-padded at the end to ``length``
    (at least ``kh * kw * C``) in the same single copy."""
    view = window_view(x, *geometry)
    n, oh, ow, kh, kw, c = view.shape
    out = np.empty((n, oh, ow, length), x.dtype)
    out[..., kh * kw * c :] = 0
    if c == 1:  # one channel: one copy per kernel position is faster than the 1-element inner loops
        for i in range(kh):
            for j in range(kw):
                out[..., i * kw + j] = view[:, :, :, i, j, 0]
    else:
        np.copyto(out[..., : kh * kw * c].reshape(n, oh, ow, kh, kw, c), view)
    return out.reshape(n * oh * ow, length)


def columns(x: np.ndarray, geometry: tuple, length: int) -> np.ndarray:
    """The patches of an NCHW tensor as columns ``(length, N * OH * OW)``: row ``(i * kw + j) * C + c`` is
    channel ``c`` at kernel position ``(i, j)`` for every output pixel (``windows``' patch order,
    transposed), then zero rows up to ``length``. One copy per kernel position reading whole image rows
    (long inner loops, where ``windows`` copies runs of ``C`` values: faster for few channels)."""
    (kh, kw), (top, left, bottom, right), (sh, sw), (dh, dw) = geometry
    n, c, h, w = x.shape
    oh, ow = out_hw(h, w, geometry)
    if top or left or bottom or right:
        xp = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
        xp[:, :, top : top + h, left : left + w] = x
    else:
        xp = x
    cols = np.empty((length, n, oh, ow), x.dtype)
    cols[kh * kw * c :] = 0
    for i in range(kh):
        for j in range(kw):
            part = xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            np.copyto(cols[(i * kw + j) * c : (i * kw + j + 1) * c], part.transpose(1, 0, 2, 3))
    return cols.reshape(length, n * oh * ow)


class Flat(NamedTuple):
    """Images zero-padded and laid out flat by ``padded_flat``."""

    values: np.ndarray  # (..., N * Hp * Wp + slack)
    n: int
    hp: int  # the padded height and width
    wp: int

    @property
    def size(self) -> int:
        """The number of padded pixels, ``N * Hp * Wp``."""
        return self.n * self.hp * self.wp

    def shift(self, position: int, geometry: tuple) -> int:
        """How far kernel position ``position`` (``i * kw + j``) lies from its window's origin."""
        (_, kw), _, _, (dh, dw) = geometry
        return position // kw * dh * self.wp + position % kw * dw

    def origins(self, grid: np.ndarray, geometry: tuple) -> np.ndarray:
        """``grid (..., N * Hp * Wp)``, a value per padded pixel, at the output pixels' window origins: a
        view ``(..., N, OH, OW)``."""
        kernel, _, (sh, sw), dilations = geometry
        oh, ow = out_hw(self.hp, self.wp, (kernel, (0, 0, 0, 0), (sh, sw), dilations))  # the padding is in hp, wp
        view = grid.reshape(*grid.shape[:-1], self.n, self.hp, self.wp)
        return view[..., 0 : (oh - 1) * sh + 1 : sh, 0 : (ow - 1) * sw + 1 : sw]


def padded_flat(values: np.ndarray, geometry: tuple) -> Flat:
    """``values (..., N, H, W)`` zero-padded by ``geometry``'s pads, each ``(N, Hp, Wp)`` flattened, with
    zeros after it for the largest kernel shift: a kernel position's values for every padded pixel are
    then one contiguous slice, ``values[..., s : s + size]`` with ``s = Flat.shift(...)``."""
    (kh, kw), (top, left, bottom, right), _, (dh, dw) = geometry
    *lead, n, h, w = values.shape
    hp, wp = h + top + bottom, w + left + right
    flat = np.zeros((*lead, n * hp * wp + (kh - 1) * dh * wp + (kw - 1) * dw), values.dtype)
    flat[..., : n * hp * wp].reshape(*lead, n, hp, wp)[..., top : top + h, left : left + w] = values
    return Flat(flat, n, hp, wp)
