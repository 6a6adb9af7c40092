"""Fixtures shared by the scoring-server tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge_module.test_server_support import make_mlp


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "azureml-models" / "mlp" / "1" / "mlp.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_mlp())
    return path
