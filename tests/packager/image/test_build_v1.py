"""Azure ML v1 files in images: score.py + inferenceconfig.json + a conda file, unchanged.

Also the Docker backend through the CLI (``extraDockerfileSteps``) and ``edgepack package -o DIR``.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.packager.image.support import DIGITS, X, docker, edgepack, edgepack_json, expected, score, serving_container

pytestmark = pytest.mark.slow

# A v1 entry script as users wrote them: Model.get_model_path, init()/run(raw_data), json in and out.
SCORE_PY = """
import json
import os

import numpy as np
import onnxruntime
from azureml.core.model import Model


def init():
    global session
    path = Model.get_model_path("digits")
    if os.path.isdir(path):
        path = os.path.join(path, os.listdir(path)[0])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"], dtype=np.float32)
    probabilities = session.run(None, {"input": data})[0]
    return {"classes": probabilities.argmax(axis=1).tolist(), "probabilities": probabilities.tolist()}
"""

CONDA_YML = """
name: digits-env
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
      - azureml-defaults
"""


@pytest.fixture
def v1_app(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text(SCORE_PY)
    (tmp_path / "env.yml").write_text(CONDA_YML)
    config = {"entryScript": "score.py", "runtime": "python", "sourceDirectory": "src", "condaFile": "env.yml"}
    (tmp_path / "inferenceconfig.json").write_text(json.dumps(config))
    return tmp_path


def test_v1_entry_script_and_inference_config_run_unchanged(ws: Path, base: str, v1_app: Path, tmp_path: Path):
    archive = tmp_path / "digits.tar"
    tag = f"edgepack-test/digits-v1:{uuid.uuid4().hex[:8]}"
    out = edgepack_json(
        ws, "build", "-m", "digits:1", "--inference-config", str(v1_app / "inferenceconfig.json"),
        "--base", base, "--platform", "linux/amd64", "--output", f"docker-archive:{archive}", "-t", tag,
    )  # fmt: skip
    assert [la["name"] for la in out["platforms"]["linux/amd64"]["layers"]] == [
        "dependencies",
        "edge_module",
        "models",
        "app",
    ]
    docker("load", "-i", str(archive))
    try:
        with serving_container(tag, "linux/amd64") as (url, cid):
            got, want = score(url, X), expected(DIGITS, X)
            assert got["classes"] == want.argmax(axis=1).tolist()
            np.testing.assert_allclose(got["probabilities"], want, rtol=1e-5, atol=1e-6)
            env = docker("exec", cid, "env").stdout
            assert "AZUREML_ENTRY_SCRIPT=score.py" in env and "AZUREML_MODEL_DIR=" in env
            # azureml-defaults was dropped (edge_module provides azureml.core.model), not installed
            pip_list = docker("exec", cid, "ls", "/opt/edgepack/site-packages").stdout
            assert "azureml" not in pip_list
    finally:
        docker("rmi", "-f", tag, check=False)


def test_docker_backend_runs_extra_dockerfile_steps(
    ws: Path,
    base: str,
    registry: str,
    v1_app: Path,
) -> None:
    (v1_app / "steps.txt").write_text("RUN echo built-by-docker > /etc/edgepack-extra\n")
    config = json.loads((v1_app / "inferenceconfig.json").read_text())
    (v1_app / "inferenceconfig.json").write_text(json.dumps({**config, "extraDockerfileSteps": "steps.txt"}))
    # the daemonless builder cannot run RUN steps, and says which backend can
    res = edgepack(
        ws, "build-and-push", "-m", "digits:1", "--inference-config", str(v1_app / "inferenceconfig.json"),
        "--base", base, "-t", f"{registry}/test/x:1", expect=2,
    )  # fmt: skip
    assert "--backend docker" in res.output
    repo = f"{registry}/test/digits-docker-{uuid.uuid4().hex[:8]}"
    out = edgepack_json(
        ws, "build-and-push", "--backend", "docker", "-m", "digits:1",
        "--inference-config", str(v1_app / "inferenceconfig.json"), "--base", base,
        "--platform", "linux/amd64", "-t", f"{repo}:1",
    )  # fmt: skip
    digest = out["platforms"]["linux/amd64"]["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", out["index_digest"])
    index = requests.get(
        f"http://{repo.split('/', 1)[0]}/v2/{repo.split('/', 1)[1]}/manifests/1",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=10,
    ).json()
    assert [m["digest"] for m in index["manifests"]] == [digest]
    ref = f"{repo}@{digest}"
    docker("pull", "--platform", "linux/amd64", ref)
    try:
        with serving_container(ref, "linux/amd64") as (url, cid):
            assert docker("exec", cid, "cat", "/etc/edgepack-extra").stdout.strip() == "built-by-docker"
            assert score(url, X)["classes"] == expected(DIGITS, X).argmax(axis=1).tolist()
    finally:
        docker("rmi", "-f", ref, f"{repo}:1-amd64", check=False)


def test_package_writes_a_dockerfile_and_context_per_platform(ws: Path, base: str, v1_app: Path, tmp_path: Path):
    out_dir = tmp_path / "pkg"
    out = edgepack_json(
        ws, "package", "-m", "digits:1", "--inference-config", str(v1_app / "inferenceconfig.json"),
        "--base", base, "-o", str(out_dir),
    )  # fmt: skip
    assert set(out["contexts"]) == {"linux/amd64", "linux/arm64"}
    for platform, path in out["contexts"].items():
        dockerfile = (Path(path) / "Dockerfile").read_text()
        assert re.search(r"^FROM \S+@sha256:[0-9a-f]{64}$", dockerfile, re.M), dockerfile
        assert dockerfile.count("COPY") == 4
        assert (Path(path) / "README.txt").read_text().count(f"--platform {platform}") >= 1
    arm = Path(out["contexts"]["linux/arm64"])
    assert any(arm.rglob("score.py")) and any(arm.rglob("digits-linear.onnx"))
