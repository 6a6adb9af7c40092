"""onnxruntime as the emulator's engine for exact products: the same bits as numpy, on every path that
uses it (int8 and fixed dense/conv products, BFP block products), and the graphs it ships."""

from __future__ import annotations

import numpy as np
import pytest

from edge_module.numerics import bfp, dot
from edge_module.numerics.emulate import Program
from edge_module.scoring import ort_matmul


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.setattr(dot, "BACKEND_MIN_PRODUCTS", 0)  # every product on the backend
    calls = []
    engine = ort_matmul.OrtMatmul(1)
    for name in ("matmul", "block_products"):
        method = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda *a, m=method, n=name: calls.append(n) or m(*a))
    yield engine, calls
    dot.set_backend(None)


def test_the_shipped_graphs_are_what_they_say() -> None:
    onnx = pytest.importorskip("onnx")
    for data, ops in ((ort_matmul.MATMUL, ["MatMul"]), (ort_matmul.BLOCK_PRODUCTS, ["Transpose", "MatMul"])):
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
        assert [node.op_type for node in model.graph.node] == ops
    transpose = onnx.load_from_string(ort_matmul.BLOCK_PRODUCTS).graph.node[0]
    assert list(transpose.attribute[0].ints) == [1, 0, 2]


def test_products_equal_numpy_bit_for_bit(backend) -> None:
    engine, _ = backend
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (300, 70)).astype(np.float32)
    b = rng.integers(-127, 128, (70, 9)).astype(np.float32)
    assert np.array_equal(engine.matmul(a, b), a @ b)
    x = np.ldexp(rng.integers(-127, 128, (200, 5, 16)), rng.integers(-20, 20, (200, 5, 1))).astype(np.float32)
    w = np.ldexp(rng.integers(-127, 128, (5, 16, 7)), rng.integers(-20, 20, (5, 1, 7))).astype(np.float32)
    assert np.array_equal(engine.block_products(x, w), np.matmul(x.transpose(1, 0, 2), w))


def _dense_program(scheme: str, rng: np.random.Generator) -> tuple[Program, np.ndarray]:
    layer = {"name": "d", "op": "dense", "inputs": ["x"], "output": "y", "scheme": scheme, "attrs": {}}
    if scheme == "int8":
        arrays = {
            "w": rng.integers(-127, 128, (12, 40)).astype(np.int8),
            "ws": rng.uniform(0.001, 0.01, 12).astype(np.float32),
            "b": rng.integers(-500, 500, 12).astype(np.int32),
        }
        layer["arrays"] = {"weight": "w", "weight_scale": "ws", "bias": "b"}
        tensors = {
            "x": {"kind": "int8", "scale": 0.02, "zero_point": 3},
            "y": {"kind": "int8", "scale": 0.05, "zero_point": -1},
        }
    elif scheme == "fixed":
        arrays = {"w": rng.integers(-100, 100, (12, 40)), "b": rng.integers(-100, 100, 12)}
        layer["arrays"] = {"weight": "w", "bias": "b"}
        fmt = {"kind": "fixed", "rounding": "AP_RND_CONV", "overflow": "AP_SAT", "signed": True}
        layer.update({"weight": {**fmt, "width": 8, "integer": 1}, "bias": {**fmt, "width": 8, "integer": 1}})
        tensors = {"x": {**fmt, "width": 10, "integer": 4}, "y": {**fmt, "width": 9, "integer": 5}}
    else:  # bfp, a partial block: the row path's block products
        params = {"block_size": 16, "mantissa_bits": 5, "exponent_bits": 8, "rounding": "nearest_even"}
        w_mant, w_exp = bfp.quantize(rng.standard_normal((12, 40)), 1, 16, 5)
        arrays = {"w": w_mant, "e": w_exp, "b": rng.standard_normal(12).astype(np.float32)}
        layer.update({"bfp": params, "arrays": {"weight": "w", "weight_exponent": "e", "bias": "b"}})
        tensors = {"x": {"kind": "float"}, "y": {"kind": "float"}}
    spec = {"format_version": 1, "inputs": ["x"], "outputs": ["y"], "layers": [layer], "tensors": tensors}
    x = (rng.standard_normal((500, 40)) * np.exp2(rng.uniform(-4, 4, (500, 40)))).astype(np.float32)
    return Program(spec, arrays), x


@pytest.mark.parametrize("scheme", ["int8", "fixed", "bfp"])
def test_programs_give_the_same_bits_on_either_engine(scheme, backend) -> None:
    engine, calls = backend
    program, x = _dense_program(scheme, np.random.default_rng(len(scheme)))
    want = program.run(x)["y"]
    assert dot.set_backend(engine) is None
    got = program.run(x)["y"]
    assert calls == (["block_products"] if scheme == "bfp" else ["matmul"])
    assert np.array_equal(got, want) and len(np.unique(want)) > 20


def test_column_block_sums_take_the_engine_block_by_block(backend) -> None:
    """``dot.column_block_sum`` (BFP dense columns, a CIFAR-sized first convolution): the exact block
    products one by one on the engine, summed in block order: the bits of numpy's one matmul and
    ``dot.block_sum``, wherever rounding happens between blocks; one block stays on numpy."""
    engine, calls = backend
    rng = np.random.default_rng(7)
    w = np.ldexp(rng.integers(-127, 128, (4, 9, 16)), rng.integers(-30, 30, (4, 9, 1))).astype(np.float32)
    codes = np.ldexp(rng.integers(-127, 128, (4, 16, 300)), rng.integers(-30, 30, (4, 1, 300))).astype(np.float32)
    want = dot.column_block_sum(w, codes)
    assert calls == []
    assert dot.set_backend(engine) is None
    got = dot.column_block_sum(w, codes)
    assert calls == ["matmul"] * 4
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert not np.array_equal(want, np.matmul(w, codes).sum(axis=0, dtype=np.float64).astype(np.float32))
    calls.clear()
    assert np.array_equal(dot.column_block_sum(w[:1], codes[:1]), w[0] @ codes[0]) and calls == []


def test_install_and_uninstall() -> None:
    engine = ort_matmul.install(1)
    try:
        assert dot.set_backend(engine) is engine
    finally:
        ort_matmul.uninstall()
    assert dot.set_backend(None) is None
