"""The runtime contract (edge_module.runtime) with a runtime that is not onnxruntime: a small numpy model.

What the server and the transports need is declared on ModelRuntime / ScoringApp / BatchableApp, so
any runtime gets ``/score`` batching, V2 infer with batching, the transports' micro-batches and
``cancel()`` on a scoring timeout, the same as the built-in ONNX scorer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest
import requests

from edge_module.runtime import (
    BadInputError,
    BatchableApp,
    ModelRuntime,
    Request,
    Response,
    ScoringApp,
    ScoringError,
    TensorSpec,
)
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from edge_module.transports.batch_scoring import score_requests

W = np.arange(8, dtype=np.float32).reshape(4, 2)


class Linear(ModelRuntime):
    """``y = x @ W`` on numpy. Refuses rows holding -1 (a value that breaks a merged batch); records the
    rows of every call; ``delay`` makes it slow, and ``cancel()`` stops a slow call."""

    def __init__(self, delay: float = 0.0, inline: bool = False):
        self.name = "linear"
        self.version = "1"
        self.delay = delay
        self.inline_safe = inline
        self.calls: list[int] = []
        self.cancelled = 0
        self._stop = threading.Event()

    def load(self) -> None:
        pass

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("x", "FP32", (-1, 4))]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec("y", "FP32", (-1, 2))]

    @property
    def platform(self) -> str:
        return "numpy"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(len(x))
        if (x == -1).any():
            raise BadInputError("input 'x' holds -1, which the model refuses")
        if self.delay and self._stop.wait(self.delay):
            self._stop.clear()
            raise ScoringError("the run was cancelled", 504)
        return {"y": x @ W}

    def cancel(self) -> None:
        self.cancelled += 1
        self._stop.set()


class LinearApp(BatchableApp):
    """``{"data": [[4 numbers], ...]}`` → ``{"y": [[2 numbers], ...]}``."""

    def __init__(self, runtime: Linear):
        self.runtime = runtime
        self.inline_safe = runtime.inline_safe

    def load(self) -> None:
        self.runtime.load()

    def models(self) -> list[ModelRuntime]:
        return [self.runtime]

    def swagger(self, version: int | str = 2) -> dict[str, Any]:
        return {}

    def cancel(self) -> None:
        self.runtime.cancel()

    def parse(self, request: Request) -> tuple[ModelRuntime, dict[str, np.ndarray]]:
        x = np.asarray(orjson.loads(request.body)["data"], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != 4:
            raise BadInputError(f"input 'x' has shape {list(x.shape)}, expected [-1, 4]")
        return self.runtime, {"x": x}

    def respond(self, runtime: ModelRuntime, outputs: Mapping[str, Any], run_ms: float | None = None) -> Response:
        return Response(orjson.dumps({"y": outputs["y"]}, option=orjson.OPT_SERIALIZE_NUMPY))

    def score(self, request: Request) -> Response:
        runtime, feeds = self.parse(request)
        return self.respond(runtime, runtime.predict(feeds))


def rows_for(i: int) -> np.ndarray:
    return np.full((1 + i % 2, 4), float(i), np.float32)


def concurrently(n: int, call: Any) -> dict[int, Any]:
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_the_contract_is_declared_with_defaults() -> None:
    class Plain(ModelRuntime):
        name = "plain"
        load = inputs = outputs = predict = None  # type: ignore[assignment]

    plain = Plain()
    assert plain.inline_safe is False and plain.supports_cancel is False
    assert plain.cancel() is None  # a no-op
    assert Linear().supports_cancel and LinearApp(Linear()).supports_cancel
    assert isinstance(LinearApp(Linear()), ScoringApp)


def test_score_batching_with_a_numpy_runtime() -> None:
    runtime = Linear(delay=0.05)
    settings = Settings(port=0, max_batch_size=32, max_batch_wait_ms=5)
    with BackgroundServer(LinearApp(runtime), settings) as srv:
        assert srv.wait_ready() and srv.service.score_batching

        def call(i: int) -> Any:
            poison = i == 7  # breaks the merged call: answered alone, the others are not affected
            data = np.full((1, 4), -1.0) if poison else rows_for(i)
            return requests.post(srv.url + "/score", json={"data": data.tolist()}, timeout=20)

        results = concurrently(16, call)
    for i, r in results.items():
        if i == 7:
            assert r.status_code == 400 and "refuses" in r.json()["message"]
        else:
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["y"], rows_for(i) @ W)
    assert max(runtime.calls) > 2  # requests shared calls


def test_v2_infer_with_batching_with_a_numpy_runtime() -> None:
    runtime = Linear(delay=0.05)
    settings = Settings(port=0, max_batch_size=32, max_batch_wait_ms=5)
    with BackgroundServer(LinearApp(runtime), settings) as srv:
        assert srv.wait_ready()
        meta = requests.get(srv.url + "/v2/models/linear").json()
        assert meta["platform"] == "numpy" and meta["inputs"][0]["shape"] == [-1, 4]

        def call(i: int) -> Any:
            x = np.full((1, 4), -1.0, np.float32) if i == 5 else rows_for(i)
            tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
            return requests.post(srv.url + "/v2/models/linear/infer", json={"inputs": [tensor]}, timeout=20)

        results = concurrently(16, call)
    for i, r in results.items():
        if i == 5:
            assert r.status_code == 400 and "refuses" in r.json()["error"]
        else:
            assert r.status_code == 200, r.text
            out = r.json()["outputs"][0]
            np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), rows_for(i) @ W)
    assert max(runtime.calls) > 2


def test_transport_micro_batches_with_a_numpy_runtime() -> None:
    runtime = Linear()
    app = LinearApp(runtime)
    bodies = [orjson.dumps({"data": rows_for(i).tolist()}) for i in range(4)]
    bodies.insert(2, b'{"data": [[1, 2]]}')  # refused by parse
    bodies.insert(4, orjson.dumps({"data": [[-1.0] * 4]}))  # breaks the merged call
    outcomes = score_requests(app, [Request(body) for body in bodies])
    assert runtime.calls == [7, 1, 2, 1, 1, 2]  # one merged call (5 requests, 7 rows) failed: each alone
    assert isinstance(outcomes[2], BadInputError) and "expected [-1, 4]" in str(outcomes[2])
    assert isinstance(outcomes[4], ScoringError) and outcomes[4].status == 400
    scored = [o for i, o in enumerate(outcomes) if i not in (2, 4)]
    for i, response in enumerate(scored):
        assert isinstance(response, Response)
        np.testing.assert_allclose(orjson.loads(response.body)["y"], rows_for(i) @ W)
    runtime.calls.clear()
    score_requests(app, [Request(body) for body in bodies[:2]])
    assert runtime.calls == [3]  # one call for both


@pytest.mark.parametrize(
    ("route", "batching"),
    [("/score", False), ("/v2/models/linear/infer", False), ("/score", True), ("/v2/models/linear/infer", True)],
)
def test_a_runtime_is_cancelled_on_the_scoring_timeout(route: str, batching: bool) -> None:
    """Inline (no batching: the watchdog) or on a scoring thread (batching: the timeout sweep)."""
    runtime = Linear(inline=not batching)
    settings = Settings(port=0, scoring_timeout=0.3, max_batch_size=8 if batching else 1)
    with BackgroundServer(LinearApp(runtime), settings) as srv:
        assert srv.wait_ready() and srv.service.score_inline is not batching
        x = rows_for(1)
        if route == "/score":
            body: dict[str, Any] = {"data": x.tolist()}
        else:
            body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        runtime.delay = 10.0  # far past the timeout: only cancel() ends it
        r = requests.post(srv.url + route, json=body, timeout=10)
        assert r.status_code == 504 and runtime.cancelled == 1
        assert r.elapsed.total_seconds() < 5
        runtime.delay = 0.0
        r = requests.post(srv.url + route, json=body, timeout=10)
        assert r.status_code == 200
