"""BFP MLPs whose dense layers run as one ``dense_chain.DenseChain``: bit for bit the per-layer path
(``run(keep_all=True)``), including the inputs the chain declines (then run layer by layer)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from edge_module.numerics import bfp, dense_chain
from edge_module.numerics.emulate import Program

SIZES = [32, 64, 32, 16, 10]  # 200 rows of 32 values still take the column path (emulate.DENSE_COPY)


def mlp(k: int, m: int, seed: int = 0, bias_shift: float = 0.0, outputs: tuple[str, ...] = ()) -> Program:
    """Dense layers of ``SIZES``, a ReLU after each but the last; ``outputs`` more program outputs."""
    rng = np.random.default_rng(seed)
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    arrays, layers, tensors, prev = {}, [], {"x": {"kind": "float"}}, "x"
    for i, (k_in, k_out) in enumerate(itertools.pairwise(SIZES)):
        w_mant, w_exp = bfp.quantize(rng.standard_normal((k_out, k_in)) * 0.3, 1, k, m, 8)
        bias = (rng.standard_normal(k_out) + bias_shift).astype(np.float32)
        bias[0] = -0.0
        arrays.update({f"w{i}": w_mant, f"e{i}": w_exp, f"b{i}": bias})
        roles = {"weight": f"w{i}", "weight_exponent": f"e{i}", "bias": f"b{i}"}
        layers.append(
            {"name": f"d{i}", "op": "dense", "inputs": [prev], "output": f"d{i}", "scheme": "bfp", "bfp": params}
            | {"attrs": {}, "arrays": roles}
        )
        tensors[f"d{i}"] = {"kind": "float"}
        prev = f"d{i}"
        if i < len(SIZES) - 2:
            layers.append({"name": f"r{i}", "op": "relu", "inputs": [prev], "output": f"r{i}", "scheme": "float"})
            tensors[f"r{i}"] = {"kind": "float"}
            prev = f"r{i}"
    spec = {"format_version": 1, "inputs": ["x"], "outputs": [*outputs, prev], "layers": layers, "tensors": tensors}
    return Program(spec, arrays)


def inputs(rows: int, k: int, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Named input batches: random of several scales, all-zero blocks (of +-0.0), ties, saturating blocks,
    blocks below the plans' bounds and above them."""
    shape = (rows, SIZES[0])
    normal = rng.standard_normal(shape).astype(np.float32)
    zeros = normal.copy()
    zeros[:, :k] = np.copysign(np.float32(0), rng.standard_normal((rows, k)))
    zeros[1::2, k:] = 0  # every other row all zero
    step = np.float32(2.0 ** (1 - m))  # blocks with maximum 1.5: E = 0
    ties = ((rng.integers(-(1 << m), 1 << m, shape) + np.float32(0.5)) * step).astype(np.float32)
    ties[:, ::k] = 1.5
    saturating = normal.copy()
    saturating[:, ::k] = np.float32(2 - 2.0**-m) * np.exp2(rng.integers(-3, 4, (rows, SIZES[0] // k)))  # rounds up
    tiny, huge = normal.copy(), normal.copy()
    tiny[:, :k] *= np.float32(2.0**-125)
    huge[-1, -1] = 1e36
    return {
        "small": normal * np.float32(1e-3),
        "normal": normal,
        "large": normal * np.float32(1e3),
        "wide": (normal * np.exp2(rng.uniform(-20, 20, shape))).astype(np.float32),
        "zeros": zeros,
        "ties": ties,
        "saturating": saturating,
        "tiny": tiny,
        "huge": huge,
    }


@pytest.mark.parametrize("rows", [1, 3, 64, 200, 256])  # 256: the first ReLU clips (RELU_CLIP_ELEMENTS)
@pytest.mark.parametrize("k", [8, 16])
@pytest.mark.parametrize("m", [3, 7], ids=["msfp12", "msfp16"])
def test_a_chain_equals_the_layers_one_by_one(m, k, rows, monkeypatch) -> None:
    program = mlp(k, m, seed=rows)
    assert [layer["op"] for layer in program._chained] == ["chain"]
    assert [layer["name"] for layer in program._chained[0]["layers"]] == ["d0", "d1", "d2", "d3"]
    results = []
    run = dense_chain.DenseChain.run
    monkeypatch.setattr(dense_chain.DenseChain, "run", lambda *a: (y := run(*a), results.append(y is not None))[0])
    taken = {}
    for name, x in inputs(rows, k, m, np.random.default_rng(rows + k + m)).items():
        results.clear()
        want = program.run(x, keep_all=True)["d3"]
        got = program.run(x)["d3"]
        assert got.flags.c_contiguous and np.array_equal(got.view(np.int32), want.view(np.int32)), name
        taken[name] = results == [True]
    assert not taken["tiny"] and not taken["huge"]  # below and above the first plan's bounds: layer by layer
    assert all(taken[name] for name in ("small", "normal", "large", "zeros", "ties", "saturating")), taken


def test_a_later_layer_declining_runs_the_chain_layer_by_layer(monkeypatch) -> None:
    """Negative biases leave a ReLU's outputs all zero (but the -0.0 bias's): the layer after it declines."""
    program = mlp(16, 7, bias_shift=-1e3)
    x = np.random.default_rng(1).standard_normal((64, SIZES[0])).astype(np.float32)
    calls = []
    run = dense_chain.DenseChain._quantize
    spy = staticmethod(lambda *a: (ok := run(*a), calls.append(ok))[0])
    monkeypatch.setattr(dense_chain.DenseChain, "_quantize", spy)
    got = program.run(x)["d3"]
    assert calls[0] and not calls[-1]
    assert np.array_equal(got.view(np.int32), program.run(x, keep_all=True)["d3"].view(np.int32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_behave_as_layer_by_layer(bad) -> None:
    program = mlp(16, 3)
    x = np.random.default_rng(2).standard_normal((64, SIZES[0])).astype(np.float32)
    x[5, 7] = bad
    try:
        want = program.run(x, keep_all=True)["d3"]
    except ValueError as error:
        with pytest.raises(ValueError, match=re.escape(str(error))):
            program.run(x)
    else:
        assert np.array_equal(program.run(x)["d3"].view(np.int32), want.view(np.int32))


def test_chains_end_at_tensors_read_elsewhere() -> None:
    """An intermediate program output splits the chain; a single layer stays a dense layer."""
    program = mlp(16, 7, outputs=("r1",))
    assert [layer["op"] for layer in program._chained] == ["chain", "chain"]
    assert [[inner["name"] for inner in layer["layers"]] for layer in program._chained] == [["d0", "d1"], ["d2", "d3"]]
    program = mlp(16, 7, outputs=("r2",))
    assert [layer["op"] for layer in program._chained] == ["chain", "dense"]
    x = np.random.default_rng(3).standard_normal((3, SIZES[0])).astype(np.float32)
    got, want = program.run(x), program.run(x, keep_all=True)
    for name in ("r2", "d3"):
        assert np.array_equal(got[name].view(np.int32), want[name].view(np.int32))


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_the_int32_relu_equals_numpy_s_float_maximum(size) -> None:
    """What the chain's ReLU relies on: ``np.maximum(y, 0)`` gives +0.0 for -0.0 (as the int32 maximum)."""
    y = np.tile(np.array([-0.0, 0.0, -1.5, 2.0, -np.inf, np.inf, 1e-45, -1e-45], np.float32), size)
    bits = y.view(np.int32).copy()
    np.maximum(bits, np.zeros_like(bits), out=bits)
    assert np.array_equal(bits, np.maximum(y, np.float32(0)).view(np.int32))


def test_interleaving_puts_the_blocks_along_the_first_axis() -> None:
    y = np.arange(12)[dense_chain.interleaving(3, 4)]  # values b * 4 + j in the interleaved row order
    assert np.array_equal(y.reshape(4, 3).T, np.arange(12).reshape(3, 4))


@pytest.mark.parametrize("rows", [2, 64])
@pytest.mark.parametrize("order", ["F", "C-strided"])
def test_fortran_ordered_and_strided_inputs_equal_the_layers_one_by_one(order, rows) -> None:
    """Columns read as they are (Fortran order) or copied once interleaved (a strided view)."""
    program = mlp(16, 7, seed=rows)
    for name, x in inputs(rows, 16, 7, np.random.default_rng(rows)).items():
        x = np.asfortranarray(x) if order == "F" else np.repeat(x, 2, axis=0)[::2]
        want = program.run(x, keep_all=True)["d3"]
        got = program.run(x)["d3"]
        assert got.flags.c_contiguous and np.array_equal(got.view(np.int32), want.view(np.int32)), name


def test_a_last_layer_with_a_relu_equals_the_layers_one_by_one() -> None:
    """The chain's last layer (products as rows) with a folded ReLU."""
    program = mlp(8, 3, seed=5)
    spec = dict(program.spec)
    spec["layers"] = [
        *spec["layers"],
        {"name": "r3", "op": "relu", "inputs": ["d3"], "output": "r3", "scheme": "float"},
    ]
    spec["tensors"] = {**spec["tensors"], "r3": {"kind": "float"}}
    spec["outputs"] = ["r3"]
    program = Program(spec, program.arrays)
    assert [layer["op"] for layer in program._chained] == ["chain"] and program._chained[0]["layers"][-1]["relu"]
    for name, x in inputs(64, 8, 3, np.random.default_rng(7)).items():
        want = program.run(x, keep_all=True)["r3"]
        assert np.array_equal(program.run(x)["r3"].view(np.int32), want.view(np.int32)), name


def test_a_chain_with_a_fixed_point_result_converts_it_as_the_last_layer_does() -> None:
    program = mlp(16, 7, seed=9)
    spec = dict(program.spec)
    fmt = {"kind": "fixed", "width": 12, "integer": 4, "rounding": "AP_RND", "overflow": "AP_SAT", "signed": True}
    spec["tensors"] = {**spec["tensors"], "d3": fmt}
    program = Program(spec, program.arrays)
    assert [layer["op"] for layer in program._chained] == ["chain"] and not program._chained[0]["float_out"]
    for name, x in inputs(64, 16, 7, np.random.default_rng(11)).items():
        want = program.run(x, keep_all=True)["d3"]
        assert np.array_equal(program.run(x)["d3"].view(np.int32), want.view(np.int32)), name


class _Sub(np.ndarray):
    """An ndarray subclass."""


def test_inputs_of_any_array_kind_run_as_their_float32_values() -> None:
    """``run``'s input conversion: lists, float64, byte-swapped float32 and subclasses as float32 arrays."""
    program = mlp(16, 7, seed=4)
    x = np.random.default_rng(4).standard_normal((5, SIZES[0])).astype(np.float32)
    want = program.run(x, keep_all=True)["d3"]
    for given in (x.tolist(), x.astype(np.float64), x.astype(">f4"), x.view(_Sub), {"x": x}):
        got = program.run(given)["d3"]
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert np.array_equal(got.view(np.int32), want.view(np.int32))
    with pytest.raises(ValueError, match="missing program input"):
        program.run({"y": x})


def test_each_result_is_a_new_array_while_the_buffers_are_reused() -> None:
    program = mlp(16, 7)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((64, SIZES[0])).astype(np.float32) for _ in range(3)]
    wants = [program.run(x, keep_all=True)["d3"] for x in xs]
    gots = [program.run(x)["d3"] for x in xs]  # the same batch size: the same buffers each time
    for got, want in zip(gots, wants, strict=True):
        assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert len({id(g) for g in gots}) == 3 and not np.shares_memory(gots[0], gots[1])


def test_threads_keep_their_own_buffers() -> None:
    """Threads running one chain at once, at several batch sizes, each get their own inputs' bits."""
    from concurrent.futures import ThreadPoolExecutor

    program = mlp(16, 7)
    rng = np.random.default_rng(4)
    xs = [
        rng.standard_normal((rows, SIZES[0])).astype(np.float32) * 10.0 ** (i % 3)
        for i, rows in enumerate([64] * 6 + [5, 33])
    ]
    wants = [program.run(x, keep_all=True)["d3"] for x in xs]

    def check(i: int) -> bool:
        return all(np.array_equal(program.run(xs[i])["d3"].view(np.int32), wants[i].view(np.int32)) for _ in range(30))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, range(len(xs))))


def test_batch_sizes_past_the_kept_buffers_and_columns(monkeypatch) -> None:
    """More batch sizes than a thread keeps, batches larger than it keeps buffers for, and F-contiguous
    columns (read as they are): the same bits, and at most WORK_CACHE_ENTRIES kept."""
    monkeypatch.setattr(dense_chain, "WORK_CACHE_BYTES", 200_000)
    program = mlp(16, 3)
    chain = program._chained[0]["chain"]
    rng = np.random.default_rng(5)
    for rows in [1, 2, 3, 4, 5, 6, 7, 180, 2]:
        x = rng.standard_normal((rows, SIZES[0])).astype(np.float32)
        want = program.run(x, keep_all=True)["d3"].view(np.int32)
        assert np.array_equal(chain.run(x).view(np.int32), want), rows
        assert np.array_equal(chain.run(np.asfortranarray(x)).view(np.int32), want), rows
    kept = chain._local.work
    assert len(kept) == dense_chain.WORK_CACHE_ENTRIES and all(w.nbytes <= 200_000 for w in kept.values())
