"""BFP convolutions on the paths that derive block maxima from pixel maxima against the other paths, bit
for bit: one-block patches (``kh * kw * C <= k``, ``bfp_conv._one_block_conv``) and blocks of whole kernel
positions (``k % C == 0``, ``bfp_conv._position_block_conv``); strides, dilations, asymmetric pads,
all-zero windows, -0.0, ties, saturating maxima, ReLUs folded in on either side of numpy's clip/maximum
switch, and batches that leave the plan's bounds (the other paths decide)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_module.numerics import bfp, bfp_conv, dot, patches
from edge_module.numerics.emulate import Program

GEOMETRIES = [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1]},
    {"kernel_shape": [3, 2], "pads": [1, 0, 1, 2], "strides": [2, 1], "dilations": [1, 2]},
    {"kernel_shape": [2, 2], "pads": [0, 0, 0, 0], "strides": [2, 2], "dilations": [1, 1]},
]


def conv_relu_program(
    attrs: dict, channels: int, m: int, k: int, relu: bool, seed: int, outputs: int = 5, weight_scale: float = 1.0
) -> Program:
    rng = np.random.default_rng(seed)
    kh, kw = attrs["kernel_shape"]
    w_mant, w_exp = bfp.quantize(rng.standard_normal((outputs, kh * kw * channels)) * weight_scale, 1, k, m)
    bias = rng.standard_normal(outputs).astype(np.float32)
    bias[1] = -0.0
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    layers = [
        {
            "name": "conv",
            "op": "conv",
            "inputs": ["x"],
            "output": "c",
            "scheme": "bfp",
            "bfp": params,
            "attrs": attrs,
            "arrays": {"weight": "w", "weight_exponent": "e", "bias": "b"},
        }
    ]
    if relu:
        layers.append({"name": "relu", "op": "relu", "inputs": ["c"], "output": "y", "scheme": "float", "attrs": {}})
    spec = {
        "format_version": 1,
        "inputs": ["x"],
        "outputs": ["y" if relu else "c"],
        "layers": layers,
        "tensors": {name: {"kind": "float"} for name in ("x", "c", "y")},
    }
    return Program(spec, {"w": w_mant, "e": w_exp, "b": bias})


def hard_inputs(shape: tuple[int, ...], m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-4, 4, shape))).astype(np.float32)
    x[0, :, : shape[2] // 2] = 0  # all-zero windows
    x[0, :, -1] = -0.0
    x[-1, :, 1] = np.float32(2.0**-3 * 1.5)  # halfway between steps next to values of 2**-1 (m = 3)
    x[-1, :, 2] = np.float32(0.5)
    x[-1, :, 3, ::2] = np.ldexp(np.float32(2**m - 0.5), -m + 1)  # block maxima rounding up to 2**m: saturate
    return x


PATHS = ("_one_block_conv", "_position_block_conv")


def spy_taken(monkeypatch, name: str) -> list[bool]:
    """Record, per call of ``bfp_conv.<name>``, whether it took the batch (returned something)."""
    taken: list[bool] = []
    path = getattr(bfp_conv, name)
    monkeypatch.setattr(bfp_conv, name, lambda *a: taken.append((y := path(*a)) is not None) or y)
    return taken


def both_paths(
    program: Program, x: np.ndarray, monkeypatch, path: str = "_one_block_conv"
) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """The output with ``path`` (recording whether it took the batch) and with neither fast path."""
    taken = spy_taken(monkeypatch, path)
    got = program.run(x)[program.outputs[0]]
    for name in PATHS:
        monkeypatch.setattr(bfp_conv, name, lambda *a: None)
    want = program.run(x)[program.outputs[0]]
    monkeypatch.undo()
    return got, want, taken


ONE_BLOCK_CASES = [
    (attrs, channels, m, k)
    for attrs in GEOMETRIES
    for channels, m, k in [(1, 7, 16), (1, 3, 16), (2, 3, 8), (4, 7, 16), (1, 4, 8)]
    if np.prod(attrs["kernel_shape"]) * channels <= k
]


@pytest.mark.parametrize(("attrs", "channels", "m", "k"), ONE_BLOCK_CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_one_block_convolutions_equal_the_other_paths(attrs, channels, m, k, relu, monkeypatch) -> None:
    program = conv_relu_program(attrs, channels, m, k, relu, seed=channels * 7 + m)
    assert [layer["op"] for layer in program._fused] == ["conv"]  # the ReLU folded into the convolution
    assert program._fused[0].get("relu", False) is relu
    x = hard_inputs((3, channels, 9, 8), m, seed=m)
    got, want, taken = both_paths(program, x, monkeypatch)
    assert taken == [True]
    assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32))
    assert len(np.unique(want)) > 20


@pytest.mark.parametrize("batch", [1, 40, 80])  # 5 x 8 x 8 outputs per image: both sides of RELU_CLIP_ELEMENTS
def test_folded_relus_keep_numpy_s_choice_for_the_picked_size(batch, monkeypatch) -> None:
    """The ReLU runs on every padded pixel but chooses clip or maximum (they differ on -0.0) as the
    unfused ReLU does for the picked outputs' size."""
    calls: list[int | None] = []
    relu_in_place = dot.relu_in_place
    monkeypatch.setattr(dot, "relu_in_place", lambda y, size=None: calls.append(size) or relu_in_place(y, size))
    program = conv_relu_program(GEOMETRIES[0], 1, 7, 16, True, seed=3)
    x = hard_inputs((batch, 1, 8, 8), 7, seed=batch)
    got, want, taken = both_paths(program, x, monkeypatch)
    assert taken == [True] and calls == [batch * 5 * 8 * 8]
    assert np.array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize(
    "value", [np.float32(2.0**-140), np.float32(1e36), np.float32(np.inf), np.float32(np.nan)]
)  # a subnormal or huge block: outside the plan's bounds; inf/NaN: the other paths raise
def test_batches_outside_the_bounds_take_the_other_paths(value, monkeypatch) -> None:
    program = conv_relu_program(GEOMETRIES[2], 2, 3, 8, True, seed=5)  # 2 x 2 x 2: one block of 8
    x = hard_inputs((2, 2, 9, 8), 3, seed=1)
    if np.isfinite(value):
        x[1] = value  # whole windows of it
    else:
        x[1, 1, 4, 4] = value
    taken = spy_taken(monkeypatch, "_one_block_conv")
    if not np.isfinite(value):
        with pytest.raises(ValueError, match="NaN/inf"):
            program.run(x)
        assert taken == [False]
        return
    got = program.run(x)["y"]
    assert taken == [False]
    x[1] = 1.0
    program.run(x)
    assert taken == [False, True]  # it declined for the value, not the geometry
    x[1] = value
    monkeypatch.setattr(bfp_conv, "_one_block_conv", lambda *a: None)
    assert np.array_equal(got.view(np.int32), program.run(x)["y"].view(np.int32))


def test_patches_of_several_blocks_are_not_taken() -> None:
    program = conv_relu_program(GEOMETRIES[0], 2, 7, 16, False, seed=1)  # 3 x 3 x 2 = 18 > 16
    x = hard_inputs((2, 2, 6, 6), 7, seed=2)
    layer = program._fused[0]
    geometry = ((3, 3), (1, 1, 1, 1), (1, 1), (1, 1))
    assert bfp_conv._one_block_conv(x, geometry, layer["data"]["conv_plan"]) is None


POSITION_BLOCK_CASES = [
    (attrs, channels, m, k)
    for attrs in GEOMETRIES
    for channels, m, k in [(8, 7, 16), (8, 3, 16), (4, 7, 16), (2, 3, 8), (4, 4, 8), (2, 7, 16)]
    if np.prod(attrs["kernel_shape"]) * channels > k
]


@pytest.mark.parametrize(("attrs", "channels", "m", "k"), POSITION_BLOCK_CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_blocks_of_whole_kernel_positions_equal_the_other_paths(attrs, channels, m, k, relu, monkeypatch) -> None:
    program = conv_relu_program(attrs, channels, m, k, relu, seed=channels * 5 + m)
    x = hard_inputs((3, channels, 9, 8), m, seed=m + 1)
    x[1, : channels // 2] = 0  # blocks zero in some of their positions only
    got, want, taken = both_paths(program, x, monkeypatch, "_position_block_conv")
    assert taken == [True]
    assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32))
    assert len(np.unique(want)) > 20


@pytest.mark.parametrize(
    "value", [np.float32(2.0**-140), np.float32(1e36), np.float32(np.nan)]
)  # outside the plan's bounds (the other paths decide; NaN: they raise)
def test_position_blocks_outside_the_bounds_take_the_other_paths(value, monkeypatch) -> None:
    program = conv_relu_program(GEOMETRIES[0], 4, 7, 16, False, seed=9)
    x = hard_inputs((2, 4, 6, 7), 7, seed=4)
    if np.isnan(value):
        x[1, 2, 3, 3] = value
    else:
        x[1] = value  # whole blocks of it
    taken = spy_taken(monkeypatch, "_position_block_conv")
    if np.isnan(value):
        with pytest.raises(ValueError, match="NaN/inf"):
            program.run(x)
        assert taken == [False]
        return
    got = program.run(x)["c"]
    assert taken == [False]
    program.run(np.ones_like(x))
    assert taken == [False, True]  # it declined for the value, not the geometry
    monkeypatch.setattr(bfp_conv, "_position_block_conv", lambda *a: None)
    assert np.array_equal(got.view(np.int32), program.run(x)["c"].view(np.int32))


def test_channels_that_do_not_divide_the_block_are_not_taken() -> None:
    program = conv_relu_program(GEOMETRIES[0], 3, 7, 16, False, seed=1)  # 16 % 3 != 0
    layer = program._fused[0]
    x = hard_inputs((2, 3, 6, 6), 7, seed=2)
    assert bfp_conv._position_block_conv(x, ((3, 3), (1, 1, 1, 1), (1, 1), (1, 1)), layer["data"]["conv_plan"]) is None


def test_few_channels_in_columns_fold_the_relu_in() -> None:
    """A 3-channel 3x3 convolution on a batch of ``BFP_COLUMN_PIXELS`` pixels takes the column path; its
    folded ReLU gives the bits of the ReLU layer run after the convolution (ties, -0.0 bias, zeros)."""
    folded = conv_relu_program(GEOMETRIES[0], 3, 7, 16, True, seed=11)
    plain = conv_relu_program(GEOMETRIES[0], 3, 7, 16, False, seed=11)
    assert [layer["op"] for layer in folded._fused] == ["conv"] and folded._fused[0]["relu"]
    x = hard_inputs((16, 3, 32, 32), 7, seed=4)
    assert x.shape[0] * x.shape[2] * x.shape[3] >= bfp_conv.BFP_COLUMN_PIXELS
    layer = folded._fused[0]
    result = bfp_conv._bfp_conv_folded(layer, x, patches.geometry(layer["attrs"]), True)
    assert result is not None and result.relu_applied and result.grid is None
    want = dot.relu_values(plain.run(x)["c"])
    got = folded.run(x)["y"]
    assert np.array_equal(got.view(np.int32), want.view(np.int32)) and (got == 0).mean() > 0.2
