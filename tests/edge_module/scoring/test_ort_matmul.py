"""onnxruntime as the emulator's engine for exact products: the same bits as numpy, on every path that
uses it (int8 and fixed dense/conv products, BFP block products, block products summed in block order in
the Scan graph, a channel-block convolution's block-major path), and the graphs it ships."""

from __future__ import annotations

import numpy as np
import pytest

from edge_module.numerics import bfp, bfp_conv, dot, patches
from edge_module.numerics.emulate import Program
from edge_module.scoring import ort_matmul
from tests.edge_module.numerics.test_bfp_conv_paths import GEOMETRIES, conv_relu_program, hard_inputs, spy_taken


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.setattr(dot, "BACKEND_MIN_PRODUCTS", 0)  # every product on the backend
    calls = []
    engine = ort_matmul.OrtMatmul(1)
    for name in ("matmul", "block_products", "ordered_block_sum"):
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
    model = onnx.load_from_string(ort_matmul.ORDERED_BLOCK_SUM)
    onnx.checker.check_model(model, full_check=True)  # dynamic shapes: zeros (r, m), x (n, r, k), w (n, k, m)
    (scan,) = model.graph.node
    assert scan.op_type == "Scan" and list(scan.input) == ["zeros", "x", "w"] and list(scan.output) == ["y"]
    attributes = {a.name: a for a in scan.attribute}
    assert attributes["num_scan_inputs"].i == 2 and set(attributes) == {"body", "num_scan_inputs"}
    body = attributes["body"].g
    (gemm,) = body.node
    assert [i.name for i in body.input] == ["acc_in", "xb", "wb"] and [o.name for o in body.output] == ["acc_out"]
    assert gemm.op_type == "Gemm" and list(gemm.input) == ["xb", "wb", "acc_in"] and list(gemm.output) == ["acc_out"]
    # alpha 1 and no transposes by default
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute} == {"beta": 1.0}


def test_products_equal_numpy_bit_for_bit(backend) -> None:
    engine, _ = backend
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (300, 70)).astype(np.float32)
    b = rng.integers(-127, 128, (70, 9)).astype(np.float32)
    assert np.array_equal(engine.matmul(a, b), a @ b)
    x = np.ldexp(rng.integers(-127, 128, (200, 5, 16)), rng.integers(-20, 20, (200, 5, 1))).astype(np.float32)
    w = np.ldexp(rng.integers(-127, 128, (5, 16, 7)), rng.integers(-20, 20, (5, 1, 7))).astype(np.float32)
    assert np.array_equal(engine.block_products(x, w), np.matmul(x.transpose(1, 0, 2), w))


def _exact_blocks(shape: tuple[int, int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n_blocks, R, k)`` and weights ``(n_blocks, k, M)`` whose block products are exact in float32
    (mantissas of 8 bits, one exponent per block row and per block column) and whose in-order sums round:
    exponents spread over 40 binades, whole blocks and single values zero or -0.0, saturated mantissas."""
    n_blocks, rows, k, m = shape
    rng = np.random.default_rng(seed)
    x_mant = rng.integers(-255, 256, (n_blocks, rows, k))
    w_mant = rng.integers(-255, 256, (n_blocks, k, m))
    x_mant[:, ::3, 0] = 255  # saturated block maxima
    w_mant[:, -1, ::2] = -255
    x = np.ldexp(x_mant, rng.integers(-30, 10, (n_blocks, rows, 1))).astype(np.float32)
    w = np.ldexp(w_mant, rng.integers(-30, 10, (n_blocks, 1, m))).astype(np.float32)
    x[-1, ::4] = 0  # all-zero blocks
    x[0, 1::5, :2] = -0.0
    w[n_blocks // 2, :, 1::3] = -0.0
    return x, w


ORDERED_SHAPES = [  # (n_blocks, R, k, M): one block, many, odd rows, one row, one output, K past MLAS's stride
    (1, 37, 16, 9),
    (18, 301, 16, 64),
    (40, 33, 16, 3),
    (18, 1, 16, 64),
    (5, 1, 8, 1),
    (6, 77, 8, 1),
    (4, 129, 32, 17),
    (2, 2, 128, 5),
    (3, 5, 200, 5),
]


@pytest.mark.parametrize("shape", ORDERED_SHAPES)
def test_ordered_block_sums_equal_numpy_bit_for_bit(shape) -> None:
    engine = ort_matmul.OrtMatmul(1)
    x, w = _exact_blocks(shape, seed=sum(shape))
    products = np.matmul(x, w)
    want = dot.sum_in_order(products, np.empty(products.shape[1:], np.float32))
    got = engine.ordered_block_sum(x, w)
    assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32))
    assert np.array_equal(engine.ordered_block_sum(x, w).view(np.int32), want.view(np.int32))  # the kept zeros
    if shape[0] > 1:  # the data exercise the order: some sums round, unlike their float64 sums
        assert (want != products.astype(np.float64).sum(axis=0)).any()


def test_ordered_block_sums_of_chunks_equal_the_whole() -> None:
    engine = ort_matmul.OrtMatmul(1)
    x, w = _exact_blocks((18, 300, 16, 64), seed=3)
    whole = engine.ordered_block_sum(x, w)
    for start, stop in ((0, 256), (256, 299), (299, 300)):
        part = engine.ordered_block_sum(np.ascontiguousarray(x[:, start:stop]), w)
        assert np.array_equal(part.view(np.int32), whole[start:stop].view(np.int32))


def test_dot_takes_the_ordered_sums_on_the_backend(backend) -> None:
    engine, calls = backend
    x, w = _exact_blocks((18, 50, 16, 8), seed=5)
    want = dot.ordered_block_sum(x, w)
    assert dot.set_backend(engine) is None
    got = dot.ordered_block_sum(x, w)
    assert calls == ["ordered_block_sum"] and np.array_equal(got.view(np.int32), want.view(np.int32))


def _channel_block_conv(attrs: dict, seed: int, weight_scale: float = 1.0) -> Program:
    return conv_relu_program(attrs, 32, 8, 16, relu=True, seed=seed, outputs=24, weight_scale=weight_scale)


def _channel_block_inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``hard_inputs`` with the second channel block 2**-12 times the first: the block sums round."""
    x = hard_inputs(shape, 8, seed=seed)
    x[:, 16:] *= np.float32(2.0**-12)
    return x


def _on_both_engines(program: Program, x: np.ndarray, engine, monkeypatch) -> tuple[np.ndarray, np.ndarray, list]:
    """The output on numpy, then on ``engine``, and whether each ``_block_major_dot`` call took the batch."""
    want = program.run(x)["y"]
    taken = spy_taken(monkeypatch, "_block_major_dot")
    dot.set_backend(engine)
    return want, program.run(x)["y"], taken


@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
@pytest.mark.parametrize("images", [10, 2, 0.4])  # output rows per chunk: all at once, 2 images, rows of one image
def test_channel_block_convolutions_give_the_same_bits_on_either_engine(geometry, images, backend, monkeypatch) -> None:
    engine, calls = backend
    oh, ow = patches.out_hw(9, 8, patches.geometry(GEOMETRIES[geometry]))
    n_blocks = int(np.prod(GEOMETRIES[geometry]["kernel_shape"])) * 2  # 32 channels in blocks of 16
    monkeypatch.setattr(bfp_conv, "BLOCK_MAJOR_CHUNK", int(images * oh) * n_blocks * ow * 16)
    program = _channel_block_conv(GEOMETRIES[geometry], seed=geometry)
    x = _channel_block_inputs((5, 32, 9, 8), seed=geometry)
    want, got, taken = _on_both_engines(program, x, engine, monkeypatch)
    assert taken == [True] and "ordered_block_sum" in calls
    assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32))
    assert len(np.unique(want)) > 100


def test_channel_block_convolutions_outside_the_bounds_fall_back(backend, monkeypatch) -> None:
    """Tiny inputs against tiny weights: block products below float32's normal range, so the block-major
    path declines (as the folded one does) and the channel-quantized path gives the same bits."""
    engine, calls = backend
    program = _channel_block_conv(GEOMETRIES[0], seed=7, weight_scale=2.0**-20)
    x = _channel_block_inputs((2, 32, 6, 6), seed=7)
    x[1] *= np.float32(2.0**-85)
    want, got, taken = _on_both_engines(program, x, engine, monkeypatch)
    assert taken == [False] and "ordered_block_sum" not in calls
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    program.run(x[:1])
    assert taken == [False, True]  # it declined for the values, not the layer


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
    ``dot.sum_in_order``, wherever rounding happens between blocks; one block stays on numpy."""
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
