"""``edgepack quickstart --json``: the whole pipeline on embedded defaults, asserted on its report."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from packager.cli import cli
from packager.errors import InvalidInputError
from packager.quickstart import base as qbase
from packager.quickstart.services import reachable
from tests.support.net import free_port

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("jsonschema")

MQTT_UP = reachable("127.0.0.1", 1883)


def _run(args: list[str], code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["quickstart", "--json", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def _steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["steps"]}


def _check_models_and_serving(doc: dict[str, Any]) -> None:
    steps = _steps(doc)
    acc = doc["accuracy"]
    assert acc["float"] > 0.9
    assert abs(acc["int8"] - acc["float"]) <= 0.02
    assert abs(acc["fpga_emulated"] - acc["float"]) <= 0.02
    assert steps["train"]["details"]["accuracy"] == acc["float"]
    assert steps["convert"]["details"]["parity_max_abs_diff"] < 1e-4
    assert steps["convert"]["artefact"] == "digits-onnx:1"
    http = steps["serve"]["details"]["http"]
    assert http["equal_to_onnx"] and http["samples"] == 32 and http["max_abs_diff"] < 1e-5
    assert http["url"].startswith("http://127.0.0.1:")


def _no_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No base anywhere: no env, no cached layout, nothing listening where the dev registry would be."""
    monkeypatch.delenv(qbase.ENV_BASE, raising=False)
    monkeypatch.setattr(qbase, "cached_layout", lambda: tmp_path / "no-base-oci")
    monkeypatch.setattr(qbase, "DEV_REGISTRY_BASE", f"127.0.0.1:{free_port()}/library/python:3.11-slim")


def test_quickstart_without_the_image_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_services(monkeypatch, tmp_path)
    directory = tmp_path / "qs"
    doc = _run(["--dir", str(directory), "--skip", "build", "--no-mqtt"])
    steps = _steps(doc)
    assert doc["ok"] and doc["directory"] == str(directory)
    assert {n: s["status"] for n, s in steps.items()} == {
        "train": "ok", "convert": "ok", "quantize": "ok", "fpga": "ok", "build": "skipped", "manifest": "ok",
        "serve": "ok",
    }  # fmt: skip
    _check_models_and_serving(doc)
    manifest = steps["manifest"]["details"]
    assert manifest["valid"] and manifest["problems"] == {"tag": []}
    assert Path(manifest["files"]["tag"]).is_file()
    assert steps["serve"]["details"]["mqtt"] == {"status": "skipped", "reason": "--no-mqtt"}
    assert doc["services"]["mqtt"] == "not used (--no-mqtt)"
    # a second run clears the folder it made, and refuses a folder it did not make
    again = _run(["--dir", str(directory), "--skip", "build", "--skip", "fpga", "--skip", "quantize", "--no-mqtt"])
    assert _steps(again)["train"]["artefact"] == "digits:1"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["quickstart", "--json", "--dir", str(other)])
    assert isinstance(result.exception, InvalidInputError) and "not empty" in str(result.exception)
    assert (other / "notes.txt").read_text() == "keep me"


def test_no_base_fails_the_image_step_and_the_rest_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_services(monkeypatch, tmp_path)
    doc = _run(["--dir", str(tmp_path / "qs"), "--skip", "quantize", "--skip", "fpga", "--no-mqtt"], code=1)
    steps = _steps(doc)
    assert not doc["ok"]
    assert steps["build"]["status"] == "failed"
    assert "no base image found" in steps["build"]["error"]
    assert "scripts/dev-services.sh start base-images" in steps["build"]["error"]
    assert steps["manifest"]["status"] == "ok" and steps["serve"]["status"] == "ok"
    assert steps["manifest"]["details"]["valid"]
    assert doc["services"]["base"] == "none found"
    # people get the table and the error line
    result = CliRunner().invoke(cli, ["quickstart", "--dir", str(tmp_path / "qs"), "--skip", "quantize",
                                      "--skip", "fpga", "--no-mqtt"])  # fmt: skip
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "no base image found" in result.stdout


def _layout_platforms(layout: Path) -> dict[str, str]:
    top = json.loads((layout / "index.json").read_text())
    (entry,) = top["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "quickstart"
    index = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())
    out = {}
    for m in index["manifests"]:
        manifest = json.loads((layout / "blobs" / "sha256" / m["digest"].split(":")[1]).read_bytes())
        for blob in [manifest["config"], *manifest["layers"]]:
            assert (layout / "blobs" / "sha256" / blob["digest"].split(":")[1]).stat().st_size == blob["size"]
        out[f"{m['platform']['os']}/{m['platform']['architecture']}"] = m["digest"]
    return out


@pytest.mark.slow
def test_quickstart_full_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs a base (the dev services' cached OCI layout or registry) and uses the broker when it is up."""
    monkeypatch.delenv(qbase.ENV_BASE, raising=False)
    try:
        found = qbase.find_base()
    except qbase.NoBaseError:
        pytest.skip("no base image: run scripts/dev-services.sh start base-images")
    doc = _run(["--dir", str(tmp_path / "qs")])
    steps = _steps(doc)
    assert doc["ok"], [s["error"] for s in doc["steps"] if s["error"]]
    assert all(s["status"] == "ok" for s in doc["steps"])
    _check_models_and_serving(doc)
    build = steps["build"]["details"]
    assert build["base"] == found.ref
    assert set(build["platforms"]) == {"linux/amd64", "linux/arm64"}
    layout = Path(build["oci_layout"])
    assert _layout_platforms(layout) == build["platforms"]
    manifest = steps["manifest"]["details"]
    assert manifest["valid"] and set(manifest["files"]) == {"amd64", "arm64"}
    assert manifest["images"]["amd64"].endswith("@" + build["platforms"]["linux/amd64"])
    mqtt = steps["serve"]["details"]["mqtt"]
    if MQTT_UP:
        assert mqtt["status"] == "ok" and mqtt["equal_to_onnx"]
        http = steps["serve"]["details"]["http"]
        assert mqtt["predictions"] == http["predictions"]
        assert np.allclose(mqtt["accuracy"], http["accuracy"])
    else:
        assert mqtt["status"] == "skipped"
    # reproducible by default: a second run in a fresh folder builds the same image, byte for byte
    again = _run(["--dir", str(tmp_path / "qs2"), "--skip", "quantize", "--skip", "fpga", "--skip", "serve"])
    assert _steps(again)["build"]["details"]["index_digest"] == build["index_digest"]


@pytest.mark.slow
def test_quickstart_pushes_with_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline base (OCI layout) pushed to a registry: base layers are uploaded from the layout."""
    layout = qbase.cached_layout()
    if not (layout / "oci-layout").is_file() or not reachable("127.0.0.1", 5000):
        pytest.skip("needs the dev registry and the cached base layout (scripts/dev-services.sh start base-images)")
    repo = f"127.0.0.1:5000/edgepack-test/quickstart-{secrets.token_hex(4)}:quickstart"
    doc = _run(["--dir", str(tmp_path / "qs"), "--registry", repo, "--base", f"oci:{layout}:3.11-slim", "--no-mqtt",
                "--skip", "quantize", "--skip", "fpga"])  # fmt: skip
    build = _steps(doc)["build"]["details"]
    assert build["reference"].startswith(repo + "@sha256:")
    from packager.image.reference import ImageRef
    from packager.image.registry import RegistryClient

    ref = ImageRef.parse(repo)
    with RegistryClient.for_ref(ref) as client:
        assert client.head_manifest(ref) == build["index_digest"]
        assert sorted(client.platforms(ref)) == ["linux/amd64", "linux/arm64"]
    images = _steps(doc)["manifest"]["details"]["images"]
    assert images["arm64"] == f"{ref.name}@{build['platforms']['linux/arm64']}"
