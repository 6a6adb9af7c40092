"""Input checks shared by the kernels."""

from __future__ import annotations

import numpy as np


def finite_float64(x: object, name: str) -> np.ndarray:
    """``x`` as a float64 array; ValueError naming ``name`` when it holds NaN or infinity."""
    array = np.asarray(x)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN/inf value(s) (first {float(array[first])} at index {first}); "
            "quantization needs finite numbers: clean or clip the tensor first"
        )
    return array


def block_axis(ndim: int, axis: int, name: str) -> int:
    """``axis`` normalised to ``0..ndim-1``; ValueError naming ``name`` when out of range."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim
