"""No-code ONNX scoring: OnnxRuntime and OnnxScoringApp called directly (no server)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_module.runtime import (
    BadInputError,
    NotReadyError,
    Request,
    ScoringError,
    TensorSpec,
    UnsupportedMediaTypeError,
)
from edge_module.scoring import (
    EntryScriptApp,
    ModelDirError,
    OnnxRuntime,
    OnnxScoringApp,
    build_app,
    discover_onnx_models,
)


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def mlp(path: Path, seed: int = 0) -> Path:
    """input [N, 64] float → Gemm → Softmax → output [N, 10]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32) / 8, "W")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["h"]), helper.make_node("Softmax", ["h"], ["output"], axis=1)],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [w, b],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def two_inputs(path: Path) -> Path:
    """a [N, 3] float, b [N, 3] int64 → total = a + b (float), doubled = 2b (int64)."""
    two = numpy_helper.from_array(np.array(2, np.int64), "two")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "bf"], ["total"]),
            helper.make_node("Mul", ["b", "two"], ["doubled"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", 3]),
        ],
        [two],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def post(body: object, content_type: str = "application/json") -> Request:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Request(raw, content_type=content_type)


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxScoringApp, Path]:
    root = tmp_path_factory.mktemp("single") / "azureml-models"
    path = mlp(root / "digits" / "3" / "digits.onnx")
    app = OnnxScoringApp(root / "digits" / "3", intra_op_threads=1)
    app.load()
    return app, path


@pytest.fixture(scope="module")
def several(tmp_path_factory: pytest.TempPathFactory) -> OnnxScoringApp:
    root = tmp_path_factory.mktemp("several") / "azureml-models"
    mlp(root / "mlp" / "1" / "mlp.onnx", seed=1)
    mlp(root / "mlp" / "2" / "folder" / "model.onnx", seed=2)  # a registered folder
    two_inputs(root / "pair" / "1" / "pair.onnx")
    app = OnnxScoringApp(root)
    app.load()
    return app


X = np.random.default_rng(7).random((1, 64)).astype(np.float32).round(4)


def test_single_model_data_and_inputs_forms(single: tuple[OnnxScoringApp, Path]) -> None:
    app, path = single
    expected = reference(path, X)
    response = app.score(post({"data": X.tolist()}))
    assert response.status == 200 and response.content_type == "application/json"
    assert float(response.headers["x-ms-run-fn-exec-ms"]) >= 0
    got = orjson.loads(response.body)
    assert list(got) == ["output"]
    np.testing.assert_allclose(got["output"], expected, rtol=1e-6)

    same = orjson.loads(app.score(post({"inputs": {"input": X.tolist()}})).body)
    np.testing.assert_allclose(same["output"], expected, rtol=1e-6)

    batch = np.vstack([X, X * 0.5, X * 2])
    out = orjson.loads(app.score(post({"data": batch.tolist()})).body)["output"]
    np.testing.assert_allclose(out, reference(path, batch), rtol=1e-6)


def test_metadata_and_predict(single: tuple[OnnxScoringApp, Path]) -> None:
    app, _ = single
    (rt,) = app.models()
    assert isinstance(rt, OnnxRuntime) and (rt.name, rt.version, rt.platform) == ("digits", "3", "onnxruntime")
    assert rt.inputs == [TensorSpec("input", "FP32", (-1, 64))]
    assert rt.outputs == [TensorSpec("output", "FP32", (-1, 10))]
    out = rt.predict({"input": X.astype(np.float64)})  # float64 arrays are cast
    assert out["output"].shape == (1, 10) and out["output"].dtype == np.float32
    with pytest.raises(BadInputError, match=r"unknown input 'x'.*missing input 'input'.*'input' \(FP32 \[-1, 64\]\)"):
        rt.predict({"x": X})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": [[0.5] * 63]}, r"^input 'input' has shape \[1, 63\], expected \[-1, 64\]$"),
        ({"data": [0.5] * 64}, r"^input 'input' has shape \[64\], expected \[-1, 64\]$"),
        ({"data": [["0.5"] * 64]}, r"input 'input' expects FP32 values, got text"),
        ({"data": [[None] * 64]}, r"input 'input' expects FP32 values, got null"),
        ({"data": [[0.5] * 64, [0.5] * 3]}, r"input 'input' is not a rectangular array.*expected FP32 \[-1, 64\]"),
        ({"inputs": {"image": [[0.5] * 64]}}, r"unknown input 'image'.*missing input 'input'"),
        ({"inputs": [[0.5] * 64]}, r'"inputs" must be an object'),
        ({"input": [[0.5] * 64]}, r"unknown key 'input'.*send \{\"data\": \[\.\.\.\]\}"),
        ({}, r'no "data" or "inputs"'),
        ([[0.5] * 64], r"expected a JSON object"),
        (b'{"data": [[0.5, 0.5,', r"^malformed JSON body: Expecting value: line 1 column 21"),
        (b"", r"malformed JSON body: the body is empty"),
    ],
)
def test_bad_input_names_the_input(single: tuple[OnnxScoringApp, Path], body: object, message: str) -> None:
    app, _ = single
    with pytest.raises(BadInputError, match=message) as info:
        app.score(post(body))
    assert info.value.status == 400


def test_nan_and_content_type_and_method(single: tuple[OnnxScoringApp, Path]) -> None:
    app, _ = single
    # Python's json.dumps writes NaN; v1 clients send it and it reaches the model.
    body = b'{"data": [[NaN' + b", 0.5" * 63 + b"]]}"
    assert orjson.loads(app.score(post(body)).body)["output"][0][0] is None  # NaN out, JSON null
    assert app.score(post({"data": X.tolist()}, "application/json; charset=utf-8")).status == 200
    assert app.score(post({"data": X.tolist()}, "")).status == 200
    with pytest.raises(UnsupportedMediaTypeError, match="text/plain"):
        app.score(post({"data": X.tolist()}, "text/plain"))
    with pytest.raises(ScoringError) as info:
        app.score(Request(b"", method="GET"))
    assert info.value.status == 405
    assert app.score(Request(b"", method="OPTIONS")).status == 200


def test_not_ready_before_load(tmp_path: Path) -> None:
    mlp(tmp_path / "m.onnx")
    app = OnnxScoringApp(tmp_path / "m.onnx")
    with pytest.raises(NotReadyError):
        app.score(post({"data": X.tolist()}))
    with pytest.raises(NotReadyError):
        app.models()[0].inputs  # noqa: B018 - the property raises
    app.load()
    assert app.models()[0].name == "m" and app.score(post({"data": X.tolist()})).status == 200


def test_several_models(several: OnnxScoringApp) -> None:
    assert sorted((m.name, m.version) for m in several.models()) == [("mlp", "1"), ("mlp", "2"), ("pair", "1")]
    with pytest.raises(BadInputError, match=r'several models are served.*"model".*models: mlp, pair'):
        several.score(post({"data": X.tolist()}))
    with pytest.raises(BadInputError, match=r"unknown model 'nope'; models: mlp, pair"):
        several.score(post({"model": "nope", "data": X.tolist()}))
    with pytest.raises(BadInputError, match=r"no version '7'; versions: 1, 2"):
        several.score(post({"model": "mlp", "version": "7", "data": X.tolist()}))

    latest = orjson.loads(several.score(post({"model": "mlp", "data": X.tolist()})).body)["output"]
    v2 = orjson.loads(several.score(post({"model": "mlp", "version": 2, "data": X.tolist()})).body)["output"]
    v1 = orjson.loads(several.score(post({"model": "mlp", "version": "1", "data": X.tolist()})).body)["output"]
    assert latest == v2 and v1 != v2

    pair = {"a": [[0.5, 1.5, 2.5]], "b": [[1, 2, 3]]}
    got = orjson.loads(several.score(post({"model": "pair", "inputs": pair})).body)
    assert got == {"total": [[1.5, 3.5, 5.5]], "doubled": [[2, 4, 6]]}
    # integral floats are fine for an int64 input, fractions are not
    ok = orjson.loads(several.score(post({"model": "pair", "inputs": {**pair, "b": [[1.0, 2.0, 3.0]]}})).body)
    assert ok["doubled"] == [[2, 4, 6]]
    with pytest.raises(BadInputError, match=r"input 'b' expects integers \(INT64\), got fractional numbers"):
        several.score(post({"model": "pair", "inputs": {**pair, "b": [[1.5, 2, 3]]}}))
    with pytest.raises(BadInputError, match=r"input 'a' has shape \[1, 2\], expected \[-1, 3\]"):
        several.score(post({"model": "pair", "inputs": {**pair, "a": [[1.0, 2.0]]}}))
    with pytest.raises(BadInputError, match=r"'pair' has 2 inputs: send \{\"inputs\": \{\"a\": \[\.\.\.\], \"b\""):
        several.score(post({"model": "pair", "data": [[1.0, 2.0, 3.0]]}))


def _validate(document: dict) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    orjson.dumps(document)  # plain JSON
    validator.validate(document)


def test_swagger_single(single: tuple[OnnxScoringApp, Path]) -> None:
    app, _ = single
    v2 = app.swagger(2)
    _validate(v2)
    assert v2["swagger"] == "2.0" and "/score" in v2["paths"]
    service_input = v2["definitions"]["ServiceInput"]
    data = service_input["properties"]["data"]
    assert data["type"] == "array" and "minItems" not in data
    assert data["items"] == {
        "type": "array",
        "items": {"type": "number", "format": "float"},
        "minItems": 64,
        "maxItems": 64,
    }
    example = service_input["example"]["data"]
    assert np.asarray(example).shape == (1, 64)
    out = v2["definitions"]["ServiceOutput"]
    assert np.asarray(out["example"]["output"]).shape == (1, 10)  # the model's answer to the example
    assert app.score(post(service_input["example"])).status == 200

    v3 = app.swagger(3)
    _validate(v3)
    assert v3["openapi"].startswith("3.0") and v3["components"]["schemas"]["ServiceInput"] == service_input
    assert app.swagger("3.1")["openapi"] == "3.1.0"
    with pytest.raises(ScoringError, match=r"Swagger version \[4\] is not valid") as info:
        app.swagger(4)
    assert info.value.status == 404


def test_swagger_several(several: OnnxScoringApp) -> None:
    v2, v3 = several.swagger(2), several.swagger(3)
    _validate(v2)
    _validate(v3)
    assert v2["definitions"]["ServiceInput"]["properties"]["model"]["enum"] == ["mlp", "pair"]
    one_of = v3["components"]["schemas"]["ServiceInput"]["oneOf"]
    pair = next(s for s in one_of if s["properties"]["model"]["enum"] == ["pair"])
    assert pair["properties"]["inputs"]["properties"]["b"]["items"]["items"] == {"type": "integer", "format": "int64"}
    for schema in one_of:  # every example scores
        assert several.score(post(schema["example"])).status == 200


def test_discovery_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "azureml-models"
    mlp(root / "a" / "1" / "a.onnx")
    (root / "b" / "1").mkdir(parents=True)
    (root / "b" / "1" / "model.pkl").write_bytes(b"not onnx")
    assert [(n, v) for n, v, _ in discover_onnx_models(root)] == [("a", "1")]  # b is skipped (logged)

    with pytest.raises(
        ModelDirError,
        match=r"'b' version 1 .* is not a model file edgepack serves without code \(ONNX \(\*.onnx\), TFLite.*script",
    ):
        OnnxScoringApp(root / "b" / "1").load()
    with pytest.raises(ModelDirError, match="does not exist"):
        OnnxScoringApp(tmp_path / "missing").load()
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(ModelDirError, match="AZUREML_MODEL_DIR"):
        OnnxScoringApp().load()
    mlp(tmp_path / "two" / "x.onnx")
    mlp(tmp_path / "two" / "sub" / "y.onnx")
    (tmp_path / "c" / "1").mkdir(parents=True)
    (tmp_path / "two").rename(tmp_path / "c" / "1" / "two")
    with pytest.raises(ModelDirError, match=r"several ONNX files \['sub/y.onnx', 'x.onnx'\]"):
        OnnxScoringApp(tmp_path / "c" / "1").load()


def test_build_app_picks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlp(tmp_path / "models" / "m" / "1" / "m.onnx")
    monkeypatch.delenv("AZUREML_ENTRY_SCRIPT", raising=False)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "models" / "m" / "1"))
    app = build_app()
    assert isinstance(app, OnnxScoringApp)
    app.load()
    assert app.score(post({"data": X.tolist()})).status == 200
    assert isinstance(build_app("score.py", str(tmp_path)), EntryScriptApp)
    monkeypatch.setenv("AZUREML_ENTRY_SCRIPT", "score.py")
    assert isinstance(build_app(), EntryScriptApp)


def test_cancel_stops_a_run_and_the_next_one_works(tmp_path: Path) -> None:
    """A transport's scoring timeout calls cancel(): the run in progress raises a 504, later runs are fine."""
    eye = numpy_helper.from_array(np.eye(256, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", "W"], [f"h{i}"]) for i in range(200)]
    nodes.append(helper.make_node("Identity", ["h199"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])],
        [eye],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "slow.onnx")
    app = OnnxScoringApp(path, intra_op_threads=1)
    app.load()
    (runtime,) = app.models()
    x = np.ones((256, 256), np.float32)
    outcome: list[BaseException] = []

    def score() -> None:
        try:
            runtime.predict({"x": x})
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=score)
    worker.start()
    while worker.is_alive():  # until the run has started and been stopped
        app.cancel()
        worker.join(0.005)
    assert len(outcome) == 1 and isinstance(outcome[0], ScoringError) and outcome[0].status == 504
    np.testing.assert_array_equal(runtime.predict({"x": x})["y"], x)


def test_versions_of_one_model_default_to_the_latest(tmp_path: Path) -> None:
    mlp(tmp_path / "m" / "1" / "m.onnx", seed=1)
    mlp(tmp_path / "m" / "10" / "m.onnx", seed=2)
    app = OnnxScoringApp(tmp_path)
    app.load()
    latest = app.score(post({"data": X.tolist()})).body
    assert latest == app.score(post({"version": 10, "data": X.tolist()})).body
    assert latest != app.score(post({"version": 1, "data": X.tolist()})).body
