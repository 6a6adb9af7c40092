"""Fixtures shared by the scoring-server tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from packager import Model, Workspace
from tests.support.scorers import make_mlp


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "azureml-models" / "mlp" / "1" / "mlp.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_mlp())
    return path


@pytest.fixture
def ws_with_model(tmp_path: Path) -> Path:
    """A workspace with the MLP registered as ``mlp`` (version 1)."""
    ws_dir = tmp_path / "ws"
    ws = Workspace.from_path(ws_dir, create=True)
    model_file = tmp_path / "mlp.onnx"
    model_file.write_bytes(make_mlp())
    Model.register(ws, model_path=str(model_file), model_name="mlp")
    return ws_dir
