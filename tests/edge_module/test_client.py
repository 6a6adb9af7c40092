"""The HTTP scoring client (``edge_module.client``, behind ``edgepack score``): URLs, bodies, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_module.client import HttpError, load_body, score_request, score_url
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.support.net import free_port


def test_score_url() -> None:
    assert score_url("127.0.0.1:5001") == "http://127.0.0.1:5001/score"
    assert score_url("http://h:1/custom/") == "http://h:1/custom"
    assert score_url("http://h:1", "my model") == "http://h:1/v2/models/my%20model/infer"
    assert score_url("https://h/v2/models/m/infer", "m") == "https://h/v2/models/m/infer"
    with pytest.raises(ValueError, match="invalid URL"):
        score_url("ftp://h/x")


def test_load_body(tmp_path: Path) -> None:
    assert load_body('{"data": [1]}') == (b'{"data": [1]}', {"data": [1]})
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"\xff\x00")
    assert load_body(str(blob)) == (b"\xff\x00", None)
    with pytest.raises(ValueError, match="neither a file nor valid JSON"):
        load_body("{nope")


def test_unreachable_server_names_the_cause() -> None:
    with pytest.raises(ConnectionError, match=r"cannot reach http://127\.0\.0\.1:\d+/score: \[Errno 111\]"):
        score_request(f"http://127.0.0.1:{free_port()}", {"data": [1]}, timeout=5)


def test_scores_and_reports_errors(mlp_path: Path) -> None:
    settings = Settings(host="127.0.0.1", port=0, model_dir=str(mlp_path.parent))
    from edge_module.scoring import build_app

    x = np.random.default_rng(0).random((1, 64)).astype(np.float32)
    with BackgroundServer(build_app(None, None, settings.model_dir), settings) as server:
        server.wait_ready(30)
        resp = score_request(server.url, {"data": x.tolist()})
        assert np.asarray(resp.json()["output"]).shape == (1, 10)
        v2 = score_request(server.url, json.dumps(x.tolist()), v2_model=mlp_path.stem)
        assert v2.json()["outputs"][0]["shape"] == [1, 10]
        with pytest.raises(HttpError, match="HTTP 400") as info:
            score_request(server.url, {"data": [[1, 2]]})
        assert info.value.status == 400
