"""Switching model versions while serving: the app's VersionSelection, the twin's model_version forms,
the hub transport's desired-property handling, and HTTP (/score, V2) following a switch."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from edge_module.runtime import ModelNotFoundError, NotReadyError, Request, VersionSelection
from edge_module.scoring.onnx_app import OnnxScoringApp
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from edge_module.transports.iotedge import IotEdgeTransport, _Desired
from edge_module.transports.model_switch import (
    ModelVersionError,
    cannot_switch_reason,
    parse_model_version,
    version_hook,
)
from edge_module.transports.settings import IotEdgeSettings
from tests.support.scorers import FunctionApp, make_mlp

ROWS = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32).tolist()


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``azureml-models/mlp/{1,2}/mlp.onnx`` with different weights, and ``cnn/1`` for a second name."""
    root = tmp_path_factory.mktemp("switch") / "azureml-models"
    for name, version, seed in (("mlp", 1, 1), ("mlp", 2, 2)):
        path = root / name / str(version) / f"{name}.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(make_mlp(seed=seed))
    return root


@pytest.fixture(scope="module")
def two_names(two_versions: Path) -> Path:
    root = two_versions.parent / "two-names"
    for name, version, seed in (("mlp", 1, 1), ("mlp", 2, 2), ("cnn.v", 1, 3)):
        path = root / name / str(version) / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(make_mlp(seed=seed))
    return root


def _score(app: OnnxScoringApp, **extra: Any) -> list[list[float]]:
    body = json.dumps({"data": ROWS, **extra}).encode()
    return json.loads(app.score(Request(body)).body)["output"]


def _loaded(path: Path) -> OnnxScoringApp:
    app = OnnxScoringApp(path)
    app.load()
    return app


# parsing the twin's value -----------------------------------------------------------------------------
def test_model_version_forms() -> None:
    one = {"mlp": ["1", "2"]}
    assert parse_model_version("2", one) == {"mlp": "2"}
    assert parse_model_version(2, one) == {"mlp": "2"}
    assert parse_model_version("mlp:1", one) == {"mlp": "1"}
    assert parse_model_version({"mlp": 2}, one) == {"mlp": "2"}
    assert parse_model_version(None, one) == {}
    two = {"mlp": ["1", "2"], "cnn.v": ["1"]}
    assert parse_model_version("mlp:2, cnn.v:1", two) == {"mlp": "2", "cnn.v": "1"}
    assert parse_model_version({"cnn_v": "1"}, two) == {"cnn.v": "1"}  # twin keys cannot hold '.'
    with pytest.raises(ModelVersionError, match="several are served"):
        parse_model_version("2", two)
    with pytest.raises(ModelVersionError, match="'other'"):
        parse_model_version("other:1", two)
    with pytest.raises(ModelVersionError, match='not "<name>:<version>"'):
        parse_model_version("mlp:2,cnn.v", two)
    with pytest.raises(ModelVersionError, match="must be a version"):
        parse_model_version([1], one)
    with pytest.raises(ModelVersionError, match="over the limit"):
        parse_model_version({f"m{i}": "1" for i in range(100)}, one)


def test_who_can_switch(two_versions: Path) -> None:
    assert isinstance(OnnxScoringApp(two_versions), VersionSelection)
    assert cannot_switch_reason(OnnxScoringApp(two_versions)) is None
    assert "entry script" in (cannot_switch_reason(FunctionApp(lambda r: {})) or "")
    assert "worker 0 only" in (cannot_switch_reason(OnnxScoringApp(two_versions), workers=2) or "")


# the app ------------------------------------------------------------------------------------------------
def test_select_switches_what_score_serves_and_keeps_every_version(two_versions: Path) -> None:
    app = OnnxScoringApp(two_versions)
    with pytest.raises(NotReadyError):
        app.select({"mlp": "1"})
    app.load()
    assert app.versions() == {"mlp": ["1", "2"]} and app.served() == {"mlp": "2"}  # the latest by default
    v1, v2 = _score(app, version="1"), _score(app, version="2")
    assert not np.allclose(v1, v2)
    assert _score(app) == v2
    swagger_v2 = app.swagger(3)

    assert app.select({"mlp": "1"}) == {"mlp": "1"}
    assert _score(app) == v1
    assert _score(app, version="2") == v2  # a request naming a version still gets it
    assert app.swagger(3)["paths"] == swagger_v2["paths"]  # same shapes; rebuilt for the versions served

    with pytest.raises(ModelNotFoundError, match="no version '9'; versions: 1, 2"):
        app.select({"mlp": "9"})
    with pytest.raises(ModelNotFoundError, match="no model 'cnn'"):
        app.select({"cnn": "1"})
    assert app.served() == {"mlp": "1"} and _score(app) == v1  # nothing changed

    assert app.select({}) == {"mlp": "2"}  # nothing named: the latest
    assert _score(app) == v2


def test_a_request_parsed_before_a_switch_is_scored_by_its_version(two_versions: Path) -> None:
    app = _loaded(two_versions)
    body = json.dumps({"data": ROWS}).encode()
    runtime, feeds = app.parse(Request(body))
    app.select({"mlp": "1"})
    after, _ = app.parse(Request(body))
    assert (runtime.version, after.version) == ("2", "1")
    before = app.respond(runtime, runtime.predict(feeds))
    assert json.loads(before.body)["output"] == _score(app, version="2")


def test_several_names_switch_independently(two_names: Path) -> None:
    app = _loaded(two_names)
    assert app.served() == {"mlp": "2", "cnn.v": "1"}
    hook = version_hook(app)
    hook({"model_version": "mlp:1"})
    assert app.served() == {"mlp": "1", "cnn.v": "1"}
    hook({"model_version": {"mlp": "2"}})
    assert app.served() == {"mlp": "2", "cnn.v": "1"}
    with pytest.raises(ModelVersionError):
        hook({"model_version": "1"})
    assert app.served() == {"mlp": "2", "cnn.v": "1"}


# the hub transport's desired properties, without a hub ---------------------------------------------------
def _transport(app: Any, **kw: Any) -> IotEdgeTransport:
    transport = IotEdgeTransport(app, IotEdgeSettings(), load=False, **kw)
    transport._load_app()
    return transport


def _desire(transport: IotEdgeTransport, doc: dict[str, Any], version: int, full: bool = False) -> dict[str, Any]:
    transport._apply_desired(_Desired({**doc, "$version": version}, full=full))
    return transport.reported


def test_desired_model_version_switches_the_app_and_reports_it(two_versions: Path) -> None:
    app = _loaded(two_versions)
    transport = _transport(app)
    assert transport.reported["models"] == {"mlp": {"version": "2"}}

    reported = _desire(transport, {"model_version": "1", "threshold": 0.5}, 1, full=True)
    assert app.served() == {"mlp": "1"}
    assert reported["models"] == {"mlp": {"version": "1"}} and reported.get("error") is None
    assert reported["settings"]["model_version"] == "1" and reported["ignored"] == {}

    reported = _desire(transport, {"model_version": 9}, 2)
    assert app.served() == {"mlp": "1"}  # the old version keeps serving
    assert "no version '9'" in reported["error"] and reported["status"] == "ready"
    assert reported["settings"]["model_version"] == "1" and reported["models"] == {"mlp": {"version": "1"}}

    reported = _desire(transport, {"model_version": {"mlp": "2"}}, 3)
    assert app.served() == {"mlp": "2"} and reported.get("error") is None
    assert reported["settings"]["model_version"] == {"mlp": "2"}

    reported = _desire(transport, {"model_version": None}, 4)  # removed: the latest
    assert app.served() == {"mlp": "2"} and reported["settings"]["model_version"] is None
    assert reported["settings"]["threshold"] == 0.5  # the patch left the other settings alone


def test_desired_patches_merge_objects_like_the_hub(two_names: Path) -> None:
    app = _loaded(two_names)
    transport = _transport(app)
    _desire(transport, {"model_version": {"mlp": "1", "cnn_v": "1"}}, 1, full=True)
    assert app.served() == {"mlp": "1", "cnn.v": "1"}
    reported = _desire(transport, {"model_version": {"mlp": "2"}}, 2)  # a patch of one key of the object
    assert reported["settings"]["model_version"] == {"mlp": "2", "cnn_v": "1"}
    assert app.served() == {"mlp": "2", "cnn.v": "1"}
    reported = _desire(transport, {"model_version": {"mlp": None}}, 3)  # null removes that key only
    assert reported["settings"]["model_version"] == {"cnn_v": "1"} and app.served()["mlp"] == "2"


def test_an_entry_script_reports_model_version_as_ignored() -> None:
    transport = _transport(FunctionApp(lambda r: {"ok": True}))
    reported = _desire(transport, {"model_version": "2", "max_batch_size": 4}, 1, full=True)
    assert reported["settings"]["model_version"] is None and reported["settings"]["max_batch_size"] == 4
    assert "entry script" in reported["ignored"]["model_version"]


def test_bad_model_version_values_are_ignored_with_the_reason(two_versions: Path) -> None:
    transport = _transport(_loaded(two_versions))
    reported = _desire(transport, {"model_version": [1, 2]}, 1, full=True)
    assert "expected a version" in reported["ignored"]["model_version"]


# HTTP follows a switch --------------------------------------------------------------------------------------
def test_http_score_and_v2_follow_a_switch_without_a_restart(two_versions: Path) -> None:
    app = OnnxScoringApp(two_versions)
    with BackgroundServer(app, Settings(port=0)) as srv:
        assert srv.wait_ready()
        server = srv.server
        url = srv.url

        def score(**extra: Any) -> list[list[float]]:
            response = requests.post(url + "/score", json={"data": ROWS, **extra}, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()["output"]

        def infer(path: str) -> tuple[str, list[float]]:
            inp = {"name": "input", "datatype": "FP32", "shape": [2, 64], "data": np.ravel(ROWS).tolist()}
            doc = requests.post(url + path, json={"inputs": [inp]}, timeout=10).json()
            return doc["model_version"], doc["outputs"][0]["data"]

        v1, v2 = score(version="1"), score(version="2")
        assert score() == v2 and infer("/v2/models/mlp/infer")[0] == "2"

        hook = version_hook(app, server._versions_switched)  # what the hosted hub transport is given
        hook({"model_version": "1"})
        assert score() == v1
        assert infer("/v2/models/mlp/infer")[0] == "1"
        assert requests.get(url + "/v2/models/mlp", timeout=5).json()["versions"] == ["1", "2"]
        assert infer("/v2/models/mlp/versions/2/infer")[0] == "2"  # every version by its explicit path
        index = requests.post(url + "/v2/repository/index", json={}, timeout=5).json()
        assert index == [{"name": "mlp", "version": "1", "state": "READY"}]

        with pytest.raises(ModelNotFoundError):
            hook({"model_version": "9"})
        assert score() == v1 and infer("/v2/models/mlp/infer")[0] == "1"

        # switching under load: every answer is one version's, none fails
        results: list[Any] = []
        stop = threading.Event()

        def client() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    r = session.post(url + "/score", json={"data": ROWS}, timeout=10)
                    results.append(r.json()["output"] if r.status_code == 200 else r.text)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(20):
            hook({"model_version": str(1 + i % 2)})
        stop.set()
        for t in threads:
            t.join(10)
        assert results and all(r in (v1, v2) for r in results)
        assert srv.server is server  # the same server all along
