"""Fuzz the server with schemathesis against its own OpenAPI document (GET /openapi.json).

Every operation gets generated valid and invalid requests; the checks: no 5xx, only documented
status codes and content types, responses matching their schemas. Afterwards the server still
answers (no crash, no wedged connection).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from edge_module.scoring import OnnxScoringApp
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.support.scorers import make_mlp

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    path = tmp_path_factory.mktemp("fuzz") / "azureml-models" / "mlp" / "1" / "mlp.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_mlp())
    app = OnnxScoringApp(Path(path).parent, intra_op_threads=1)
    with BackgroundServer(app, Settings(port=0, max_body_size=1_000_000)) as srv:
        assert srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: BackgroundServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_operations(case: schemathesis.Case, fuzzed_server: BackgroundServer) -> None:
    case.call_and_validate(checks=CHECKS, timeout=10)


def test_server_survives_the_fuzzing(fuzzed_server: BackgroundServer) -> None:
    assert requests.get(fuzzed_server.url + "/v2/health/ready", timeout=5).status_code == 200
    r = requests.post(fuzzed_server.url + "/score", json={"data": [[0.0] * 64]}, timeout=5)
    assert r.status_code == 200
    metrics = requests.get(fuzzed_server.url + "/metrics", timeout=5).text
    assert 'status="500"' not in metrics and 'status="503"' not in metrics
