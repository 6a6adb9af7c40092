"""V2 Open Inference Protocol: Triton's client over JSON and binary tensors, errors, adaptive batching."""

from __future__ import annotations

import gzip
import json
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from edge_module.scoring import OnnxScoringApp
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.support.scorers import FunctionApp, OnnxRuntime, make_mlp

X = np.random.default_rng(2).random((3, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(mlp_path: Path) -> OnnxRuntime:
    rt = OnnxRuntime(mlp_path)
    rt.load()
    return rt


@pytest.fixture(scope="module")
def server(mlp_path: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(OnnxScoringApp(mlp_path.parent, intra_op_threads=1), Settings(port=0)) as srv:
        assert srv.wait_ready()
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


def test_health_and_metadata_with_tritons_client(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    meta = client.get_server_metadata()
    assert meta["name"] == "edgepack" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("mlp")
    assert model["name"] == "mlp" and model["versions"] == ["1"] and model["platform"] == "onnxruntime"
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert model["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata("mlp", "1") == model
    assert client.get_model_repository_index() == [{"name": "mlp", "version": "1", "state": "READY"}]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_json_and_binary_tensors(
    client: triton.InferenceServerClient, reference: OnnxRuntime, binary_in: bool, binary_out: bool
) -> None:
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary_in)
    out = triton.InferRequestedOutput("output", binary_data=binary_out)
    result = client.infer("mlp", [inp], outputs=[out], request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("output"), reference.predict({"input": X})["output"], rtol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "mlp" and response["model_version"] == "1" and response["id"] == "req-7"


def test_infer_default_outputs_and_versioned_route(
    client: triton.InferenceServerClient, reference: OnnxRuntime
) -> None:
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer("mlp", [inp], model_version="1")  # no outputs named: all, in binary
    np.testing.assert_allclose(result.as_numpy("output"), reference.predict({"input": X})["output"], rtol=1e-5)


def test_infer_compressed_request(client: triton.InferenceServerClient, reference: OnnxRuntime) -> None:
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("mlp", [inp], request_compression_algorithm=algorithm)
        np.testing.assert_allclose(result.as_numpy("output"), reference.predict({"input": X})["output"], rtol=1e-5)


def test_unknown_model_and_version_are_404(client: triton.InferenceServerClient, server: BackgroundServer) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [inp])
    assert err.value.status() == "404"
    r = requests.get(server.url + "/v2/models/mlp/versions/9")
    assert r.status_code == 404 and "no version '9'" in r.json()["error"]
    assert not client.is_model_ready("nope")


def test_wrong_shape_or_datatype_is_400_naming_the_input(server: BackgroundServer) -> None:
    url = server.url + "/v2/models/mlp/infer"
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]}
    r = requests.post(url, json=bad_shape)
    assert r.status_code == 400
    assert "input 'input'" in r.json()["error"] and "64" in r.json()["error"]
    bad_type = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}]}
    r = requests.post(url, json=bad_type)
    assert r.status_code == 400 and "expected datatype FP32" in r.json()["error"]
    short = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    r = requests.post(url, json=short)
    assert r.status_code == 400 and "64 values do not fill shape [2, 64]" in r.json()["error"]
    unknown = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    r = requests.post(url, json=unknown)
    assert r.status_code == 400 and "unknown input 'x'" in r.json()["error"]
    r = requests.post(url, data=b'{"inputs": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = requests.post(url, data=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_binary_extension_by_hand(server: BackgroundServer, reference: OnnxRuntime) -> None:
    x = X[:1]
    head = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = requests.post(
        server.url + "/v2/models/mlp/infer",
        data=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 40
    y = np.frombuffer(r.content[n:], dtype=np.float32).reshape(1, 10)
    np.testing.assert_allclose(y, reference.predict({"input": x})["output"], rtol=1e-5)
    # the binary part must be exactly what the inputs claim
    r = requests.post(
        server.url + "/v2/models/mlp/infer",
        data=head + x.tobytes()[:-4],
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]


def test_v2_before_ready_is_503() -> None:
    release = threading.Event()
    app = FunctionApp(lambda req: {}, load_fn=lambda: release.wait(10))
    with BackgroundServer(app, Settings(port=0)) as srv:
        r = requests.get(srv.url + "/v2/models/mlp")
        assert r.status_code == 503 and "loading" in r.json()["error"]
        assert requests.get(srv.url + "/v2/health/ready").status_code == 503
        assert requests.get(srv.url + "/v2/health/live").status_code == 200
        release.set()
        srv.wait_ready()


def test_bytes_tensors_round_trip() -> None:
    """A runtime with string input and output, through JSON and the binary form."""
    from edge_module.runtime import ModelRuntime, TensorSpec

    class Upper(ModelRuntime):
        name, version = "upper", None

        def load(self) -> None:
            pass

        @property
        def inputs(self) -> list[TensorSpec]:
            return [TensorSpec("text", "BYTES", (-1,))]

        @property
        def outputs(self) -> list[TensorSpec]:
            return [TensorSpec("upper", "BYTES", (-1,))]

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            return {"upper": np.array([v.upper() for v in inputs["text"]], dtype=object)}

    with BackgroundServer(FunctionApp(lambda r: {}, runtimes=[Upper()]), Settings(port=0)) as srv:
        srv.wait_ready()
        c = triton.InferenceServerClient(srv.url.removeprefix("http://"))
        data = np.array([b"abc", "héllo".encode()], dtype=object)
        for binary in (True, False):
            inp = triton.InferInput("text", [2], "BYTES")
            inp.set_data_from_numpy(data, binary_data=binary)
            out = triton.InferRequestedOutput("upper", binary_data=binary)
            got = c.infer("upper", [inp], outputs=[out]).as_numpy("upper")
            assert [bytes(v) if not isinstance(v, str) else v.encode() for v in got] == [b"ABC", "HéLLO".encode()]
        c.close()
        body = struct.pack("<I", 2) + b"hi"
        head = json.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
        ).encode()
        r = requests.post(
            srv.url + "/v2/models/upper/infer",
            data=gzip.compress(head + body),
            headers={"Inference-Header-Content-Length": str(len(head)), "Content-Encoding": "gzip"},
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["HI"]


def test_adaptive_batching_groups_concurrent_requests(mlp_path: Path, reference: OnnxRuntime) -> None:
    """Requests that arrive while the model is busy share model calls (deterministic: the first call
    is held until the server has received every request)."""
    slow = OnnxRuntime(mlp_path)
    slow.inline_safe = False  # a heavier model: scored on the scoring thread
    gate = threading.Event()
    original = slow.predict

    def held_predict(inputs):  # type: ignore[no-untyped-def]
        assert gate.wait(30), "the test never released the first call"
        return original(inputs)

    slow.predict = held_predict  # type: ignore[method-assign]
    app = FunctionApp(lambda r: {}, runtimes=[slow])
    settings = Settings(port=0, max_batch_size=16, max_batch_wait_ms=60_000)
    rng = np.random.default_rng(5)
    xs = [rng.random((1 + i % 2, 64)).astype(np.float32) for i in range(24)]
    results: dict[int, np.ndarray] = {}
    with BackgroundServer(app, settings) as srv:
        srv.wait_ready()

        def call(i: int) -> None:
            doc = {
                "inputs": [
                    {"name": "input", "shape": list(xs[i].shape), "datatype": "FP32", "data": xs[i].ravel().tolist()}
                ]
            }
            r = requests.post(srv.url + "/v2/models/mlp/infer", json=doc, timeout=60)
            assert r.status_code == 200, r.text
            out = r.json()["outputs"][0]
            results[i] = np.array(out["data"], dtype=np.float32).reshape(out["shape"])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        wait_in_flight(srv.url, len(xs))
        gate.set()
        for t in threads:
            t.join(30)
        metrics = requests.get(srv.url + "/metrics").text
    assert sorted(results) == list(range(len(xs)))
    for i, x in enumerate(xs):
        np.testing.assert_allclose(results[i], reference.predict({"input": x})["output"], rtol=1e-5)
    calls = int(re.search(r'edgepack_batch_size_count\{model="mlp"\} (\d+)', metrics).group(1))
    rows = float(re.search(r'edgepack_batch_size_sum\{model="mlp"\} ([0-9.]+)', metrics).group(1))
    assert rows == sum(x.shape[0] for x in xs)
    # 36 rows in calls of at most 16 rows, the first call alone or with what arrived beside it: 3-5, not 24
    assert 3 <= calls <= 5, calls


def wait_in_flight(url: str, n: int) -> None:
    """Wait until the server holds ``n`` requests (its in-flight gauge, less the GET /metrics itself)."""
    deadline = time.monotonic() + 30
    held = 0
    while held < n and time.monotonic() < deadline:
        metrics = requests.get(url + "/metrics").text
        held = int(re.search(r"^edgepack_requests_in_flight (\d+)", metrics, re.M).group(1)) - 1
        time.sleep(0.01)
    assert held == n, f"the server holds {held} of {n} requests"


def test_adaptive_batching_on_score_with_the_onnx_app(mlp_path: Path, reference: OnnxRuntime) -> None:
    """/score batches too when the app splits into parse/respond (edgepack's ONNX app does).

    Deterministic: the first model run is held until the server has received every other request
    (its in-flight gauge says so); they wait for the busy scoring thread and go out as one batch.
    """
    app = OnnxScoringApp(mlp_path.parent, intra_op_threads=1)
    settings = Settings(port=0, max_batch_size=32, max_batch_wait_ms=60_000)
    rng = np.random.default_rng(6)
    xs = [rng.random((1, 64)).astype(np.float32) for _ in range(24)]
    results: dict[int, np.ndarray] = {}
    gate = threading.Event()
    with BackgroundServer(app, settings) as srv:
        srv.wait_ready()
        runtime = app.models()[0]
        original = runtime.run

        def held_run(feeds):  # type: ignore[no-untyped-def]
            assert gate.wait(30), "the test never released the first run"
            return original(feeds)

        runtime.run = held_run  # type: ignore[method-assign]

        def call(i: int) -> None:
            r = requests.post(srv.url + "/score", json={"data": xs[i].tolist()}, timeout=60)
            assert r.status_code == 200, r.text
            results[i] = np.asarray(r.json()["output"], dtype=np.float32)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        wait_in_flight(srv.url, len(xs))
        gate.set()
        for t in threads:
            t.join(30)
        metrics = requests.get(srv.url + "/metrics").text
        bad = requests.post(srv.url + "/score", json={"data": [[1.0, 2.0]]})
        assert bad.status_code == 400 and "'input'" in bad.json()["message"]
    assert sorted(results) == list(range(len(xs)))
    for i, x in enumerate(xs):
        np.testing.assert_allclose(results[i], reference.predict({"input": x})["output"], rtol=1e-5)
    calls = int(re.search(r'edgepack_batch_size_count\{model="mlp"\} (\d+)', metrics).group(1))
    assert calls == 2  # the first request alone, then the 23 that waited for it in one batch


def test_several_versions_of_a_model(tmp_path: Path, reference: OnnxRuntime) -> None:
    root = tmp_path / "azureml-models"
    for version, seed in (("1", 0), ("2", 7)):
        (root / "mlp" / version).mkdir(parents=True)
        (root / "mlp" / version / "mlp.onnx").write_bytes(make_mlp(seed=seed))
    with BackgroundServer(OnnxScoringApp(root, intra_op_threads=1), Settings(port=0)) as srv:
        assert srv.wait_ready()
        c = triton.InferenceServerClient(srv.url.removeprefix("http://"))
        assert c.get_model_metadata("mlp")["versions"] == ["1", "2"]
        inp = triton.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        v1 = c.infer("mlp", [inp], model_version="1").as_numpy("output")
        v2_ = c.infer("mlp", [inp], model_version="2").as_numpy("output")
        latest = c.infer("mlp", [inp]).as_numpy("output")
        c.close()
        np.testing.assert_allclose(v1, reference.predict({"input": X})["output"], rtol=1e-5)
        np.testing.assert_allclose(latest, v2_)
        assert not np.allclose(v1, v2_)
        r = requests.get(srv.url + "/v2/models/mlp/versions/3")
        assert r.status_code == 404 and "(served: 1, 2)" in r.json()["error"]
