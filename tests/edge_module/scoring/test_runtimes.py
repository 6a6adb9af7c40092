"""Any ModelRuntime serves through every route: a second (numpy) runtime on /score, V2, swagger and the
MQTT/IoT Edge batching core; the runtime registry picks runtimes from model files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests

from edge_module.runtime import BadInputError, ModelRuntime, Request, Response, TensorSpec
from edge_module.scoring import ModelDirError, ModelScoringApp, OnnxScoringApp, build_app
from edge_module.scoring.model_app import discover_models
from edge_module.scoring.onnx_runtime import OnnxRuntime
from edge_module.scoring.registry import (
    RuntimeOptions,
    find_model,
    register_runtime,
    registered,
    runtime_for,
    unregister_runtime,
)
from edge_module.scoring.tflite_runtime import TfliteRuntime
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from edge_module.transports.batch_scoring import score_requests
from tests.support.scorers import LinearRuntime, make_mlp

ROWS = np.random.default_rng(3).standard_normal((7, 6)).astype(np.float32)


def post(doc: object) -> Request:
    return Request(orjson.dumps(doc))


def expected(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    logits = x.astype(np.float32) @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"logits": logits, "probs": e / e.sum(axis=1, keepdims=True)}


@pytest.fixture
def linear(tmp_path: Path) -> tuple[LinearRuntime, np.ndarray, np.ndarray]:
    w, b = LinearRuntime.save(tmp_path / "lin.npz")
    return LinearRuntime(tmp_path / "lin.npz", "lin", "1"), w, b


@pytest.fixture
def linear_plugin() -> Iterator[None]:
    """The linear runtime registered for ``*.linear.npz`` files, as a plug-in (the FPGA runtime) would."""
    register_runtime(
        "linear", lambda path, name, version, options: LinearRuntime(path, name, version), suffixes=(".linear.npz",)
    )
    try:
        yield
    finally:
        unregister_runtime("linear")


# -- the interface: nothing OnnxRuntime-specific --------------------------------------------------------------
def test_the_base_class_supplies_what_the_routes_use(linear) -> None:
    rt, w, b = linear
    assert not any(m in vars(LinearRuntime) for m in ("prepare", "prepare_single", "predict_prepared", "input_names"))
    assert not rt.loaded and not rt.supports_cancel and rt.output_kind("probs") is None
    rt.load()
    assert (rt.input_names, rt.output_names, rt.platform) == (["x"], ["logits", "probs"], "edgepack")
    feeds = rt.prepare({"x": ROWS.astype(np.float64).tolist()})  # JSON numbers: cast to FP32
    assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (7, 6)
    np.testing.assert_allclose(rt.predict_prepared(feeds)["logits"], expected(w, b, ROWS)["logits"], rtol=1e-6)
    assert rt.prepare_single(ROWS[:1])["x"].shape == (1, 6)
    with pytest.raises(BadInputError, match=r"input 'x' has shape \[1, 5\], expected \[-1, 6\]"):
        rt.prepare({"x": [[0.0] * 5]})
    with pytest.raises(BadInputError, match=r"unknown input 'y'; missing input 'x': model 'lin' expects 'x' \(FP32"):
        rt.prepare({"y": ROWS})
    with pytest.raises(BadInputError, match=r"input 'x' expects FP32 values, got text"):
        rt.prepare({"x": [["a"] * 6]})


def test_score_swagger_and_versions_through_a_second_runtime(linear) -> None:
    rt, w, b = linear
    app = ModelScoringApp(runtimes=[rt])
    app.load()
    assert app.inline_safe is False and app.supports_cancel is False  # what the runtime declares, not ONNX's
    ref = expected(w, b, ROWS)
    for body in ({"data": ROWS.tolist()}, {"inputs": {"x": ROWS.tolist()}}):
        response = app.score(post(body))
        assert response.status == 200 and "x-ms-run-fn-exec-ms" in response.headers
        doc = orjson.loads(response.body)
        np.testing.assert_allclose(doc["probs"], ref["probs"], rtol=1e-5)
    with pytest.raises(BadInputError, match=r"input 'x' has shape \[1, 2\], expected \[-1, 6\]"):
        app.score(post({"data": [[1.0, 2.0]]}))
    swagger = app.swagger(3)
    schemas = swagger["components"]["schemas"]
    assert schemas["ServiceInput"]["properties"]["data"]["items"]["items"] == {"type": "number", "format": "float"}
    example_out = schemas["ServiceOutput"]["example"]  # computed by the runtime from the input example
    np.testing.assert_allclose(example_out["logits"], b[None, :], rtol=1e-6)
    assert "No-code scoring of lin:1" in swagger["info"]["description"]
    assert app.versions() == {"lin": ["1"]} and app.served() == {"lin": "1"}


def test_mqtt_and_iotedge_batches_merge_requests_of_a_second_runtime(linear) -> None:
    """The transports' batching core (score_requests): one predict for requests that fit together."""
    rt, w, b = linear
    app = ModelScoringApp(runtimes=[rt])
    app.load()
    parts = [ROWS[:1], ROWS[1:4], ROWS[4:5], ROWS[5:]]
    bodies = [post({"data": p.tolist()}) for p in parts]
    bodies.insert(2, post({"data": [[1.0, 2.0]]}))  # a bad one gets its own error; the rest still merge
    rt.calls.clear()
    outcomes = score_requests(app, bodies)
    assert rt.calls == [7]  # the four good requests in one call
    assert outcomes[2].status == 400 and "expected [-1, 6]" in str(outcomes[2])
    good = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(o, Response) for o in good)
    got = np.concatenate([np.asarray(orjson.loads(o.body)["probs"]) for o in good])
    np.testing.assert_allclose(got, expected(w, b, ROWS)["probs"], rtol=1e-5)


def test_served_on_http_score_v2_and_swagger(linear) -> None:
    rt, w, b = linear
    settings = Settings(port=0, max_batch_size=8, max_batch_wait_ms=5)
    with BackgroundServer(ModelScoringApp(runtimes=[rt]), settings) as srv:
        srv.wait_ready()
        ref = expected(w, b, ROWS)
        r = requests.post(srv.url + "/score", json={"data": ROWS.tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["logits"], ref["logits"], rtol=1e-5)
        meta = requests.get(srv.url + "/v2/models/lin", timeout=10).json()
        assert meta["platform"] == "edgepack"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 6]}]
        doc = {"inputs": [{"name": "x", "shape": [7, 6], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
        r = requests.post(srv.url + "/v2/models/lin/versions/1/infer", json=doc, timeout=10)
        assert r.status_code == 200, r.text
        outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in r.json()["outputs"]}
        np.testing.assert_allclose(outputs["probs"], ref["probs"], rtol=1e-5)
        bad = requests.post(srv.url + "/score", json={"data": [[1.0]]}, timeout=10)
        assert bad.status_code == 400 and "'x'" in bad.json()["message"]
        swagger = requests.get(srv.url + "/swagger.json", timeout=10).json()
        assert swagger["info"]["title"] == "lin"

        results: dict[int, np.ndarray] = {}

        def call(i: int) -> None:  # concurrent requests through the adaptive batcher
            res = requests.post(srv.url + "/score", json={"data": ROWS[i : i + 1].tolist()}, timeout=10)
            results[i] = np.asarray(res.json()["probs"])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(ROWS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert sorted(results) == list(range(len(ROWS)))
    for i, got in results.items():
        np.testing.assert_allclose(got, ref["probs"][i : i + 1], rtol=1e-5)


# -- the registry ----------------------------------------------------------------------------------------------
def test_registry_picks_runtimes_by_file(tmp_path: Path) -> None:
    assert [k.name for k in registered()][:2] == ["onnx", "tflite"]
    assert runtime_for(tmp_path / "m.onnx").name == "onnx"  # by name: the file need not exist yet
    (tmp_path / "a.tflite").write_bytes(b"")
    assert runtime_for(tmp_path / "a.tflite").name == "tflite"
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.tflite").write_bytes(b"")
    (folder / "labels.txt").write_text("a\n")
    kind, path = find_model(folder)  # type: ignore[misc]
    assert kind.name == "tflite" and path == folder / "sub" / "model.tflite"
    (tmp_path / "m.pkl").write_bytes(b"")
    with pytest.raises(ModelDirError, match=r"no runtime serves .*m\.pkl: supported are ONNX \(\*\.onnx\), TFLite "):
        runtime_for(tmp_path / "m.pkl")
    assert find_model(tmp_path / "m.pkl") is None
    runtime = runtime_for(tmp_path / "a.tflite").create(tmp_path / "a.tflite", "a", "2", RuntimeOptions(threads=2))
    assert isinstance(runtime, TfliteRuntime) and (runtime.name, runtime.version, runtime.num_threads) == ("a", "2", 2)
    onnx = runtime_for(tmp_path / "m.onnx").create(tmp_path / "m.onnx", "m", None, RuntimeOptions(threads=1))
    assert isinstance(onnx, OnnxRuntime) and onnx.intra_op_threads == 1


def test_registration_match_functions_and_frameworks(tmp_path: Path, linear_plugin: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_runtime("onnx", lambda *a: None, suffixes=(".onnx",))  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match=r"suffixes .* or a match function"):
        register_runtime("nothing", lambda *a: None)  # type: ignore[arg-type, return-value]
    assert runtime_for(tmp_path / "m.linear.npz").name == "linear"
    # A package folder its runtime recognises wins over the .onnx files inside it (the FPGA package's case).
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "host.onnx").write_bytes(make_mlp())
    (package / "package.json").write_text("{}")

    def match(entry: Path) -> Path | None:
        return entry if (entry / "package.json").is_file() else None

    register_runtime("pkg", lambda p, n, v, o: LinearRuntime(p, n, v), match=match, frameworks=("fpga",))
    try:
        assert runtime_for(package).name == "pkg" and runtime_for(package / "host.onnx").name == "onnx"
        assert find_model(package, framework="onnx")[0].name == "onnx"  # type: ignore[index]
        assert find_model(package, framework="fpga")[0].name == "pkg"  # type: ignore[index]
        assert [(m.name, m.kind.name) for m in discover_models(package)] == [("pkg", "pkg")]  # AZUREML_MODEL_DIR
        with pytest.raises(ModelDirError, match="framework tflite"):
            runtime_for(tmp_path / "x.bin", framework="tflite")
    finally:
        unregister_runtime("pkg")


def test_the_app_loads_whatever_runtime_the_files_need(tmp_path: Path, linear_plugin: None) -> None:
    root = tmp_path / "azureml-models"
    w, b = LinearRuntime.save(root / "lin" / "1" / "m.linear.npz")
    (root / "mlp" / "2").mkdir(parents=True)
    (root / "mlp" / "2" / "mlp.onnx").write_bytes(make_mlp())
    (root / "pkl" / "1").mkdir(parents=True)
    (root / "pkl" / "1" / "model.pkl").write_bytes(b"")  # skipped: no runtime serves it
    found = discover_models(root)
    assert [(m.name, m.version, m.kind.name) for m in found] == [("lin", "1", "linear"), ("mlp", "2", "onnx")]
    app = build_app(model_dir=str(root), intra_op_threads=1)
    assert isinstance(app, ModelScoringApp) and ModelScoringApp is OnnxScoringApp
    app.load()
    assert sorted(type(rt).__name__ for rt in app.models()) == ["LinearRuntime", "OnnxRuntime"]
    assert app.inline_safe is False  # the linear runtime is not declared inline-safe
    doc = orjson.loads(app.score(post({"model": "lin", "data": ROWS[:2].tolist()})).body)
    np.testing.assert_allclose(doc["probs"], expected(w, b, ROWS[:2])["probs"], rtol=1e-5)
    doc = orjson.loads(app.score(post({"model": "mlp", "data": [[0.1] * 64]})).body)
    assert np.asarray(doc["output"]).shape == (1, 10)

    with pytest.raises(ModelDirError, match=r"not a model file .*ONNX \(\*\.onnx\), TFLite \(\*\.tflite\).*script"):
        ModelScoringApp(root / "pkl" / "1").load()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("")
    with pytest.raises(ModelDirError, match=r"no servable model under .*served without code: ONNX"):
        ModelScoringApp(tmp_path / "junk").load()


def test_the_old_import_names_still_work() -> None:
    from edge_module.scoring import onnx_app

    assert onnx_app.OnnxScoringApp is ModelScoringApp and onnx_app.ModelDirError is ModelDirError
    assert callable(onnx_app.discover_onnx_models) and callable(onnx_app.tensor_schema)
    assert issubclass(LinearRuntime, ModelRuntime) and TensorSpec("x", "FP32", (1,)).to_dict()["shape"] == [1]
