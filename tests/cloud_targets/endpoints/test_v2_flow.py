"""The Azure ML v2 guide's managed online endpoint flow, locally, through ``edgepack endpoint``.

endpoint create --local, blue deployment (all traffic), invoke, green deployment, 90/10 split, invoke many
times (both answer), all traffic to green, delete blue, delete the endpoint: nothing left running. The
scoring script is a v2 one (``init()`` reads ``AZUREML_MODEL_DIR``, ``run(raw_data)``) and runs unchanged;
the deployments run in process mode on two tiny scikit-learn models that answer differently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager import Workspace
from tests.cloud_targets.cli_support import Run
from tests.support.workspaces import user_workspace

pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")

SCORE_PY = """\
import json
import logging
import os

import joblib
import numpy


def init():
    global model
    # AZUREML_MODEL_DIR is the path to the model folder (./azureml-models/$MODEL_NAME/$VERSION)
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/sklearn_regression_model.pkl")
    model = joblib.load(model_path)
    logging.info("Init complete")


def run(raw_data):
    logging.info("model: request received")
    data = numpy.array(json.loads(raw_data)["data"])
    result = model.predict(data)
    logging.info("Request processed")
    return result.tolist()
"""
CONDA = """\
name: model-env
channels:
  - conda-forge
dependencies:
  - python=3.11
  - numpy
  - pip
  - scikit-learn
  - pip:
    - joblib
"""
ENDPOINT = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
name: my-endpoint
auth_mode: key
"""
DEPLOYMENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: {name}
endpoint_name: my-endpoint
model:
  path: ../../{model}/model/
code_configuration:
  code: ../../{model}/onlinescoring/
  scoring_script: score.py
environment:
  conda_file: ../../{model}/environment/conda.yml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
instance_type: Standard_DS3_v2
instance_count: 1
"""
REQUEST = {"data": [[1.0, 2.0], [3.0, 4.0]]}


def _model(root: Path, name: str, offset: float) -> None:
    """``root/name/{model,onlinescoring,environment}``: y = x0 + x1 + offset."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model = LinearRegression().fit(x, x.sum(axis=1) + offset)
    (root / name / "model").mkdir(parents=True)
    joblib.dump(model, root / name / "model" / "sklearn_regression_model.pkl")
    (root / name / "onlinescoring").mkdir()
    (root / name / "onlinescoring" / "score.py").write_text(SCORE_PY)
    (root / name / "environment").mkdir()
    (root / name / "environment" / "conda.yml").write_text(CONDA)


@pytest.fixture
def guide(tmp_path: Path) -> Path:
    """azureml-examples' cli/endpoints/online layout: model-1, model-2 and managed/sample/*.yml."""
    root = tmp_path / "online"
    _model(root, "model-1", 0.0)
    _model(root, "model-2", 100.0)
    sample = root / "managed" / "sample"
    sample.mkdir(parents=True)
    (sample / "endpoint.yml").write_text(ENDPOINT)
    (sample / "blue-deployment.yml").write_text(DEPLOYMENT.format(name="blue", model="model-1"))
    (sample / "green-deployment.yml").write_text(DEPLOYMENT.format(name="green", model="model-2"))
    (root / "model-1" / "sample-request.json").write_text(json.dumps(REQUEST))
    return sample


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    yield from user_workspace(tmp_path, monkeypatch)


def running_under(folder: Path) -> set[int]:
    """Live (not zombie) processes whose working folder or command line is inside ``folder``."""
    found = set()
    root = str(folder.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(root) or root in cmdline):
            found.add(int(entry.name))
    return found


def answer(run: Run, request: Path, *extra: str) -> list[float]:
    result = run("endpoint", "invoke", "-n", "my-endpoint", "--request-file", request, *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_v2_guide_flow_locally(ws: Workspace, guide: Path, run: Run) -> None:
    request = guide.parent.parent / "model-1" / "sample-request.json"
    blue_answer, green_answer = [3.0, 7.0], [103.0, 107.0]

    created = run("endpoint", "create", "-f", guide / "endpoint.yml", "--local", "--json")
    assert created.code == 0, created.err
    assert created.json()["name"] == "my-endpoint"

    blue = run("endpoint", "deployment", "create", "-f", guide / "blue-deployment.yml", "--all-traffic", "--local")
    assert blue.code == 0, blue.err
    assert "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest" in blue.err  # not pulled: said once
    assert "instance_type Standard_DS3_v2 is not used locally" in blue.err
    assert answer(run, request) == pytest.approx(blue_answer)

    green = run("endpoint", "deployment", "create", "-f", guide / "green-deployment.yml", "--local", "--json")
    assert green.code == 0, green.err
    assert green.json()["traffic"] == 0
    assert answer(run, request) == pytest.approx(blue_answer)  # green takes no traffic yet
    assert answer(run, request, "--deployment-name", "green") == pytest.approx(green_answer)

    split = run("endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=90 green=10", "--json")
    assert split.code == 0, split.err
    assert split.json()["traffic"] == {"blue": 90, "green": 10}
    answers = [answer(run, request) for _ in range(200)]
    greens = sum(a == pytest.approx(green_answer) for a in answers)
    blues = sum(a == pytest.approx(blue_answer) for a in answers)
    assert greens + blues == 200
    assert 4 <= greens <= 45, greens  # ~10 %: 20 expected

    logs = run("endpoint", "get-logs", "-n", "my-endpoint", "--deployment", "green", "--lines", "50")
    assert logs.code == 0 and logs.out.strip(), logs.err
    listed = run("endpoint", "deployment", "list", "-e", "my-endpoint", "--json")
    assert {d["name"]: d["traffic"] for d in listed.json()} == {"blue": 90, "green": 10}

    pids = running_under(Path(ws.path))
    assert len(pids) >= 3  # blue, green and the router

    refused = run("endpoint", "deployment", "delete", "-n", "blue", "-e", "my-endpoint", "--yes")
    assert refused.code != 0 and "takes 90%" in refused.err
    shifted = run("endpoint", "update", "-n", "my-endpoint", "--traffic", "green=100", "--json")
    assert shifted.code == 0, shifted.err
    assert shifted.json()["traffic"] == {"blue": 0, "green": 100}
    assert all(answer(run, request) == pytest.approx(green_answer) for _ in range(20))

    deleted = run("endpoint", "deployment", "delete", "-n", "blue", "-e", "my-endpoint", "--yes")
    assert deleted.code == 0, deleted.err
    listed = run("endpoint", "deployment", "list", "-e", "my-endpoint", "--json")
    assert [d["name"] for d in listed.json()] == ["green"]
    assert answer(run, request) == pytest.approx(green_answer)

    gone = run("endpoint", "delete", "-n", "my-endpoint", "--yes")
    assert gone.code == 0, gone.err
    assert not running_under(Path(ws.path))
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids)
    shown = run("endpoint", "show", "-n", "my-endpoint")
    assert shown.code != 0 and "my-endpoint" in shown.err


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cli_errors_are_clear(ws: Workspace, guide: Path, run: Run) -> None:
    nowhere = run("endpoint", "create", "-f", guide / "endpoint.yml")
    assert nowhere.code != 0 and "pass --local" in nowhere.err
    bad = run("endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=90 green=20")
    assert bad.code == 2 and "adds up to 110" in bad.err
    missing = run("endpoint", "deployment", "create", "-f", guide / "nope.yml")
    assert missing.code == 2 and "nope.yml does not exist" in missing.err
    no_endpoint = run("endpoint", "deployment", "create", "-f", guide / "blue-deployment.yml", "--local")
    assert no_endpoint.code != 0 and "my-endpoint" in no_endpoint.err
    assert run("endpoint", "create", "-f", guide / "endpoint.yml", "--local").code == 0
    again = run("endpoint", "create", "-f", guide / "endpoint.yml", "--local")
    assert again.code != 0 and "already exists" in again.err
    unknown = run("endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=100")
    assert unknown.code != 0 and "no deployment blue" in unknown.err
    listed = run("endpoint", "list", "--json")
    assert [e["name"] for e in listed.json()] == ["my-endpoint"]
    score = guide.parent.parent / "model-1" / "onlinescoring" / "score.py"
    score.write_text(score.read_text().replace('logging.info("Init complete")', 'raise RuntimeError("no init")'))
    broken = run("endpoint", "deployment", "create", "-f", guide / "blue-deployment.yml", "--local")
    assert broken.code != 0 and "no init" in broken.err
    assert "edgepack endpoint get-logs -n my-endpoint --deployment blue" in broken.err
    assert run("endpoint", "delete", "-n", "my-endpoint", "--yes").code == 0
