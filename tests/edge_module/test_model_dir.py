"""Model paths in the AZUREML_MODEL_DIR layouts, one model or several."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from edge_module.model_dir import (
    InvalidModelNameError,
    ModelPathNotFoundError,
    check_model_name,
    model_dir_for,
    resolve_model_path,
    version_dir,
    write_model_dir,
)


def deploy(root: Path, name: str, version: int, entry: str = "model.onnx") -> Path:
    d = root / name / str(version)
    d.mkdir(parents=True)
    (d / entry).write_bytes(b"x")
    return d / entry


def test_several_models_pick_version_or_latest(tmp_path: Path) -> None:
    a1 = deploy(tmp_path, "a", 1)
    a10 = deploy(tmp_path, "a", 10, "folder")
    b2 = deploy(tmp_path, "b", 2)
    assert resolve_model_path("a", model_dir=tmp_path) == a10  # numeric, not lexical, latest
    assert resolve_model_path("a", 1, model_dir=tmp_path) == a1
    assert resolve_model_path("b", model_dir=tmp_path) == b2
    with pytest.raises(ModelPathNotFoundError, match=r"version 3 is not deployed.*\[1, 10\]"):
        resolve_model_path("a", 3, model_dir=tmp_path)
    with pytest.raises(ModelPathNotFoundError, match="'c' is not deployed"):
        resolve_model_path("c", model_dir=tmp_path)


def test_one_model_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = deploy(tmp_path, "digits", 4)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(path.parent))
    assert resolve_model_path("digits") == path
    assert resolve_model_path("digits", 4) == path
    with pytest.raises(ModelPathNotFoundError, match="holds version 4"):
        resolve_model_path("digits", 5)
    with pytest.raises(ModelPathNotFoundError, match="'other' is not deployed"):
        resolve_model_path("other")


def test_version_folder_must_hold_one_entry(tmp_path: Path) -> None:
    path = deploy(tmp_path, "m", 1)
    (path.parent / "extra.txt").write_text("x")
    with pytest.raises(ModelPathNotFoundError, match="exactly one"):
        resolve_model_path("m", model_dir=tmp_path)


def test_not_in_a_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(ModelPathNotFoundError, match="not set"):
        resolve_model_path("m")
    with pytest.raises(TypeError):
        resolve_model_path("m", "1", model_dir="/")  # type: ignore[arg-type]


def _writer(entry: str) -> Callable[[Path], int]:
    return lambda target: (target / entry).write_bytes(b"x")


def test_written_layouts_are_the_ones_read(tmp_path: Path) -> None:
    one = write_model_dir(tmp_path / "a", {("digits", 3): _writer("model.onnx")})
    assert one == tmp_path / "a" / "azureml-models" / "digits" / "3"
    assert resolve_model_path("digits", model_dir=one) == one / "model.onnx"
    several = write_model_dir(tmp_path / "b", {("digits", 3): _writer("d.onnx"), ("other", 1): _writer("o.onnx")})
    assert several == tmp_path / "b" / "azureml-models"
    assert resolve_model_path("digits", 3, model_dir=several).name == "d.onnx"
    assert resolve_model_path("other", model_dir=several).name == "o.onnx"


def test_model_dir_for_image_paths() -> None:
    root = PurePosixPath("/var/azureml-app/azureml-models")
    assert str(model_dir_for(root, [("m", 2), ("m", 2)])) == "/var/azureml-app/azureml-models/m/2"
    assert model_dir_for(root, [("m", 2), ("m", 3)]) == root
    assert model_dir_for(root, []) == root


@pytest.mark.parametrize("how", ["dotdot", "absolute", "nested"])
def test_names_that_leave_the_model_dir_are_refused(tmp_path: Path, how: str) -> None:
    """``get_model_path`` answers only for model names (as the registry allows them), never for paths."""
    models = tmp_path / "models"
    deploy(models, "digits", 1)
    outside = deploy(tmp_path / "secret" / "keys", "1", 1, "id_rsa").parents[1]  # <tmp>/secret/keys/1/1/id_rsa
    name = {"dotdot": "../secret/keys/1", "absolute": str(outside), "nested": "digits/../../secret/keys/1"}[how]
    with pytest.raises(InvalidModelNameError, match=r"invalid model name .*letters, digits"):
        resolve_model_path(name, model_dir=models)
    with pytest.raises(ValueError, match="invalid model name"):  # what it is, for callers that catch ValueError
        resolve_model_path(name, 1, model_dir=models)


@pytest.mark.parametrize("name", ["", ".", "..", "-x", "a b", "a\nb", "a" * 256, "é"])
def test_model_name_rule(name: str) -> None:
    with pytest.raises(InvalidModelNameError):
        check_model_name(name)
    with pytest.raises(InvalidModelNameError):
        version_dir(PurePosixPath("/m"), name, 1)


def test_valid_model_names() -> None:
    for name in ("a", "Model_1.2-x", "9lives", "a..b", "a" * 255):
        assert check_model_name(name) == name
