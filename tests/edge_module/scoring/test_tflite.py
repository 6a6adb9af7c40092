"""TFLite models (``convert --to tflite``, float and INT8) served by the LiteRT runtime: outputs equal the
interpreter's own and are close to Keras's; ``edgepack serve`` answers /score and V2 with them; batch
sizes alternate; concurrent requests on several scoring threads stay correct."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

for _module in ("tensorflow", "keras", "ai_edge_litert", "sklearn"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed: pip install -e '.[tensorflow,sklearn]'", allow_module_level=True)

from edge_module.scoring import ModelScoringApp, build_app  # noqa: E402
from edge_module.scoring.tflite_runtime import TfliteRuntime  # noqa: E402
from edge_module.server.lifecycle import BackgroundServer  # noqa: E402
from edge_module.settings import Settings  # noqa: E402
from packager import Model, Workspace  # noqa: E402
from packager.convert import convert_model  # noqa: E402
from packager.convert.base import ConvertOptions  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import Proc  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def models(digits, tmp_path_factory) -> dict[str, Any]:
    """A small Keras MLP trained on digits, registered and converted to TFLite float and INT8."""
    import keras

    x_train, x_test, y_train, _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("tflite")
    model.save(root / "digits.keras")
    ws = Workspace.from_path(root / "ws", create=True)
    Model.register(ws, root / "digits.keras", "digits", sample_input=x_train[:300])
    float_model = convert_model(ws, "digits", options=ConvertOptions(target="tflite")).model
    int8_model = convert_model(
        ws, "digits", output_name="digits-int8", options=ConvertOptions(target="tflite", int8=True)
    )
    paths = {
        "float": Path(float_model.download(root / "dl-float")),
        "int8": Path(int8_model.model.download(root / "dl-int8")),
    }
    keras_probs = model(x_test, training=False).numpy()
    return {"ws": root / "ws", "paths": paths, "keras": keras_probs, "names": (float_model.name, "digits-int8")}


def v2_tensor(x: np.ndarray) -> dict[str, Any]:
    return {"name": "pixels", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}


def interpreter_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """What LiteRT itself answers, row by row (its signature runner; INT8 quantized and dequantized by hand)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    ind, outd = runner.get_input_details()["pixels"], runner.get_output_details()["probs"]
    rows = []
    for row in x:
        feed = row[None, :]
        if ind["dtype"] == np.int8:
            scale, zero = ind["quantization"]
            feed = np.clip(np.round(feed / scale + zero), -128, 127).astype(np.int8)
        out = runner(pixels=feed)["probs"]
        if outd["dtype"] == np.int8:
            scale, zero = outd["quantization"]
            out = (out.astype(np.float32) - zero) * np.float32(scale)
        rows.append(out)
    return np.concatenate(rows)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_runtime_matches_the_interpreter_and_keras(models, digits, kind: str) -> None:
    _, x_test, _, y_test = digits
    path = models["paths"][kind]
    rt = TfliteRuntime(path, "digits", "1")
    rt.load()
    assert [s.to_dict() for s in rt.inputs] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert [s.to_dict() for s in rt.outputs] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    reference = interpreter_outputs(path, x_test)
    for batch in (1, 5, 1, 5, 450):  # alternating batch sizes: resized each time, same answers
        got = rt.predict({"pixels": x_test[:batch]})["probs"]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, reference[:batch], atol=1e-6)
    probs = rt.predict({"pixels": x_test.astype(np.float64).tolist()})["probs"]  # JSON-like values
    keras_probs = models["keras"]
    if kind == "float":
        np.testing.assert_allclose(probs, keras_probs, atol=1e-5)
    else:  # int8: floats in, floats out, the same predictions nearly everywhere
        assert np.abs(probs - keras_probs).max() < 0.1
        assert float(np.mean(probs.argmax(1) == keras_probs.argmax(1))) >= 0.97
        accuracy = float(np.mean(probs.argmax(1) == y_test))
        assert accuracy >= float(np.mean(keras_probs.argmax(1) == y_test)) - 0.02


def test_concurrent_threads_each_get_an_interpreter(models, digits) -> None:
    _, x_test, _, _ = digits
    path = models["paths"]["float"]
    rt = TfliteRuntime(path, "digits")
    rt.load()
    reference = interpreter_outputs(path, x_test[:40])
    errors: list[str] = []
    slots: list[Any] = []  # the objects, not their ids: a finished thread's slot is freed
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        start.wait()
        for _ in range(60):
            i = int(rng.integers(0, 35))
            n = int(rng.choice([1, 5]))
            got = rt.predict({"pixels": x_test[i : i + n]})["probs"]
            if not np.allclose(got, reference[i : i + n], atol=1e-6):
                errors.append(f"thread {seed}: rows {i}..{i + n} differ")
        slots.append(rt._local.slot)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len({id(s) for s in slots}) == 8


def test_served_by_the_no_code_app_on_scoring_threads(models, digits, tmp_path: Path) -> None:
    """/score and V2 on the app the image runs, requests on 4 scoring threads, batch 1 and 5 interleaved."""
    _, x_test, _, _ = digits
    model_dir = tmp_path / "azureml-models" / "digits" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "model.tflite").write_bytes(models["paths"]["int8"].read_bytes())
    app = build_app(model_dir=str(model_dir))
    assert isinstance(app, ModelScoringApp)
    reference = interpreter_outputs(models["paths"]["int8"], x_test[:60])
    settings = Settings(port=0, execution="thread", scoring_threads=4)
    results: dict[tuple[str, int], np.ndarray] = {}
    with BackgroundServer(app, settings) as srv:
        srv.wait_ready()
        meta = requests.get(srv.url + "/v2/models/digits", timeout=10).json()
        assert meta["platform"] == "tflite" and meta["inputs"][0]["datatype"] == "FP32"

        def call(i: int) -> None:
            n = 1 if i % 2 else 5
            x = x_test[i : i + n]
            r = requests.post(srv.url + "/score", json={"data": x.tolist()}, timeout=30)
            results[("score", i)] = np.asarray(r.json()["probs"], np.float32)
            doc = {"inputs": [v2_tensor(x)]}
            r = requests.post(srv.url + "/v2/models/digits/infer", json=doc, timeout=30)
            out = r.json()["outputs"][0]
            results[("v2", i)] = np.reshape(np.asarray(out["data"], np.float32), out["shape"])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 80
    for (_, i), got in results.items():
        n = 1 if i % 2 else 5
        np.testing.assert_allclose(got, reference[i : i + n], atol=1e-6)


def test_edgepack_serve_a_converted_tflite_model(models, digits) -> None:
    _, x_test, _, _ = digits
    port = free_port()
    name = models["names"][0]
    proc = Proc(
        ["--workspace", str(models["ws"]), "serve", "--model", name, "--port", str(port), "--host", "127.0.0.1"]
    )
    try:
        proc.wait_for(rf"ready in [0-9.]+ s; V2 models: {name}", timeout=60)
        url = f"http://127.0.0.1:{port}"
        reference = interpreter_outputs(models["paths"]["float"], x_test[:6])
        for rows in (slice(0, 1), slice(1, 6), slice(0, 1)):
            x = x_test[rows]
            r = requests.post(url + "/score", data=json.dumps({"data": x.tolist()}), timeout=10)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["probs"], reference[rows], atol=1e-6)
            doc = {"inputs": [v2_tensor(x)]}
            r = requests.post(f"{url}/v2/models/{name}/infer", json=doc, timeout=10)
            out = r.json()["outputs"][0]
            np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), reference[rows], atol=1e-6)
        r = requests.post(url + "/score", json={"data": [[0.0] * 63]}, timeout=10)
        assert r.status_code == 400 and "expected [-1, 64]" in r.json()["message"]
        swagger = requests.get(url + "/swagger.json", timeout=10).json()
        assert swagger["definitions"]["ServiceInput"]["properties"]["data"]["items"]["maxItems"] == 64
    finally:
        assert proc.stop() == 0
