"""``edgepack serve`` / ``score`` / ``token`` and ``python -m edge_module``, as real processes over 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import requests
from click.testing import CliRunner

from edge_module.server.auth import verify_token
from edge_module.server.main import TerminalReporter
from edge_module.settings import Settings
from tests.support.net import free_port
from tests.support.procs import LAUNCH, ROOT, Proc
from tests.support.scorers import make_mlp

X = np.random.default_rng(3).random((1, 64)).astype(np.float32)
SCORE_PY = """
import json
import numpy as np
import onnxruntime as ort
from azureml.core.model import Model

session = None

def init():
    global session
    path = Model.get_model_path("mlp")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

def run(raw_data):
    x = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    return {"scores": session.run(None, {"input": x})[0].tolist(), "script": True}
"""


@pytest.fixture
def cli() -> Iterator[click.Group]:
    """The edgepack group with this package's commands added (the real wiring lives in packager/cli/__init__.py)."""
    from packager.cli import cli as group
    from packager.cli.serve import score, serve, token

    added = [c for c in (serve, score, token) if c.name not in group.commands]
    for command in added:
        group.add_command(command)
    yield group
    for command in added:
        group.commands.pop(command.name, None)


def test_serve_registered_model_and_score_it(cli: click.Group, ws_with_model: Path) -> None:
    port = free_port()
    proc = Proc(
        ["--workspace", str(ws_with_model), "serve", "--model", "mlp:1", "--port", str(port), "--host", "127.0.0.1"]
    )
    try:
        proc.wait_for(rf"listening on http://127\.0\.0\.1:{port}")
        proc.wait_for(r"ready in [0-9.]+ s; V2 models: mlp")
        url = f"http://127.0.0.1:{port}"
        runner = CliRunner()
        r = runner.invoke(cli, ["score", url, "--data", json.dumps({"data": X.tolist()})], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert np.asarray(json.loads(r.output)["output"]).shape == (1, 10)
        data_file = ws_with_model.parent / "body.json"
        data_file.write_text(json.dumps({"data": X.tolist()}))
        r = runner.invoke(cli, ["score", url + "/score", "--data", str(data_file)], catch_exceptions=False)
        assert r.exit_code == 0 and "output" in json.loads(r.output)
        r = runner.invoke(cli, ["score", url, "--v2", "mlp", "--data", json.dumps(X.tolist())], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.output)
        assert doc["model_name"] == "mlp" and doc["outputs"][0]["shape"] == [1, 10]
        # a bad request: one error line, exit 1
        r = runner.invoke(cli, ["score", url, "--data", '{"data": [[1, 2]]}'])
        assert r.exit_code == 1
        assert isinstance(r.exception, Exception) and "HTTP 400" in str(r.exception) and "input" in str(r.exception)
    finally:
        assert proc.stop() == 0
    tmp_dirs = re.findall(r"(/\S*edgepack-serve-\w+)", "".join(proc.lines))
    assert all(not Path(d).exists() for d in tmp_dirs)


def test_score_client_errors_exit_1(ws_with_model: Path) -> None:
    from packager.cli import main

    port = free_port()
    env = {**os.environ}
    for argv, expected in (
        (["score", f"http://127.0.0.1:{port}", "--data", "{}"], "cannot reach"),
        (["score", f"http://127.0.0.1:{port}", "--data", "{not json"], "neither a file nor valid JSON"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                LAUNCH.replace("import serve", "import serve, score").replace(
                    "cli.add_command(serve)", "cli.add_command(serve); cli.add_command(score)"
                ),
                *argv,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode in (1, 2), proc.stderr
        assert proc.stderr.count("error:") == 1 and expected in proc.stderr, proc.stderr
    assert main  # the console entry point exists


def test_serve_entry_script_with_get_model_path(cli: click.Group, ws_with_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text(textwrap.dedent(SCORE_PY))
    port = free_port()
    proc = Proc(
        [
            "--workspace",
            str(ws_with_model),
            "serve",
            "--model",
            "mlp",
            "--entry-script",
            str(src / "score.py"),
            "--source-dir",
            str(src),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ]
    )
    try:
        proc.wait_for(r"ready in")
        r = requests.post(f"http://127.0.0.1:{port}/score", json={"data": X.tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["script"] is True and np.asarray(r.json()["scores"]).shape == (1, 10)
        assert float(r.headers["x-ms-run-fn-exec-ms"]) > 0
        r = requests.post(f"http://127.0.0.1:{port}/score", data=b"{oops", timeout=10)
        assert r.status_code in (400, 500)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Healthy"
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("source", ["relative", "absolute"])
def test_serve_entry_script_inside_source_dir_from_another_folder(
    ws_with_model: Path, tmp_path: Path, source: str
) -> None:
    """The Azure docs' layout (``app/score.py`` beside ``app/env.yml``), served from another working folder with
    ``--entry-script score.py --source-dir app``: the script is found inside the source directory, as in v1."""
    app = tmp_path / "proj" / "app"
    (app / "lib").mkdir(parents=True)
    (app / "lib" / "__init__.py").write_text("TAG = 'from-app'\n")
    (app / "score.py").write_text(
        textwrap.dedent(SCORE_PY).replace('"script": True', '"script": __import__("lib").TAG')
    )
    (app / "env.yml").write_text("dependencies:\n  - python=3.11\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    src = "../proj/app" if source == "relative" else str(app)
    port = free_port()
    args = ["--workspace", str(ws_with_model), "serve", "--model", "mlp", "--entry-script", "score.py"]
    proc = Proc(
        [*args, "--source-dir", src, "--port", str(port), "--host", "127.0.0.1"],
        env={"PYTHONPATH": ROOT},
        cwd=str(elsewhere),
    )
    try:
        proc.wait_for(r"ready in")
        r = requests.post(f"http://127.0.0.1:{port}/score", json={"data": X.tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["script"] == "from-app" and np.asarray(r.json()["scores"]).shape == (1, 10)
    finally:
        assert proc.stop() == 0


def test_serve_entry_script_errors_name_the_places(
    cli: click.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (tmp_path / "other.py").write_text("def init(): pass\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ws = str(tmp_path / "ws")
    r = CliRunner().invoke(cli, ["--workspace", ws, "serve", "--entry-script", "score.py", "--source-dir", str(app)])
    assert r.exit_code != 0
    assert str(r.exception) == (
        f"entry script 'score.py' not found: looked in {app}/score.py (inside --source-dir {app}) "
        f"and {elsewhere}/score.py"
    )
    r = CliRunner().invoke(
        cli, ["--workspace", ws, "serve", "--entry-script", str(tmp_path / "other.py"), "--source-dir", str(app)]
    )
    assert r.exit_code != 0 and f"is outside --source-dir {app}" in str(r.exception)
    # checked before any model is looked up or downloaded
    r = CliRunner().invoke(
        cli, ["--workspace", ws, "serve", "--model", "nosuch", "--entry-script", "x.py", "--source-dir", str(app)]
    )
    assert str(r.exception).startswith("entry script 'x.py' not found: looked in")


def test_init_failure_is_reported_at_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(
        "def init():\n    raise FileNotFoundError('weights.bin is missing')\n\ndef run(d):\n    return d\n"
    )
    port = free_port()
    proc = Proc(["serve", "--entry-script", str(tmp_path / "score.py"), "--port", str(port), "--host", "127.0.0.1"])
    try:
        line = proc.wait_for(r"error: load\(\) failed")
        assert "weights.bin is missing" in line
        proc.wait_for(r"Traceback|File .*score\.py")
        proc.wait_for(r"stays up")
        time.sleep(0.2)
        assert proc.p.poll() is None  # no crash, no restart loop
        r = requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
        assert r.status_code == 503 and "weights.bin is missing" in r.json()["error"]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        proc.stop()
    assert sum("load() failed" in line for line in proc.lines) == 1


def test_two_workers_share_the_port(tmp_path: Path) -> None:
    model_dir = tmp_path / "azureml-models" / "mlp" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "mlp.onnx").write_bytes(make_mlp())
    port = free_port()
    proc = Proc(
        ["--model-dir", str(model_dir), "--port", str(port), "--host", "127.0.0.1", "--workers", "2"], module=True
    )
    try:
        proc.wait_for(r"worker \d ready in")
        proc.wait_for(r"ready in .*POST /score")  # both workers
        url = f"http://127.0.0.1:{port}"
        for _ in range(40):  # new connections: SO_REUSEPORT spreads them over both workers
            assert requests.post(url + "/score", json={"data": X.tolist()}, timeout=5).status_code == 200
        time.sleep(1.2)  # workers publish their counters about once a second
        text = requests.get(url + "/metrics", timeout=5).text
        assert re.search(r'^edgepack_ready\{worker="0"\} 1$', text, re.M)
        assert re.search(r'^edgepack_ready\{worker="1"\} 1$', text, re.M)
        total = int(
            re.search(r'edgepack_requests_total\{route="/score",method="POST",status="200"\} (\d+)', text).group(1)
        )
        assert total == 40
        # a worker that dies is replaced; the other one keeps serving meanwhile
        children = Path(f"/proc/{proc.p.pid}/task/{proc.p.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        proc.wait_for(r"warning: worker \d exited with code -9; restarting")
        assert requests.get(url + "/", timeout=5).status_code == 200
        # while the replacement starts and loads, every new connection still gets a scoring worker:
        # a restarted worker joins the port only once it is ready (no 503 from it meanwhile)
        statuses = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            statuses.append(requests.post(url + "/score", json={"data": X.tolist()}, timeout=5).status_code)
        assert set(statuses) == {200}, statuses
        proc.wait_for(r"worker \d ready in|ready in .*POST /score")
        assert requests.post(url + "/score", json={"data": X.tolist()}, timeout=5).status_code == 200
    finally:
        assert proc.stop() == 0


def test_token_command(cli: click.Group, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["token"], env={"EDGEPACK_TOKEN_SECRET": ""})
    assert r.exit_code == 1
    secret = "a-token-secret-of-some-length"
    r = runner.invoke(cli, ["token", "--ttl", "120", "--json"], env={"EDGEPACK_TOKEN_SECRET": secret})
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["tokenType"] == "Bearer" and doc["expiryOn"] - doc["refreshAfter"] == 30
    assert verify_token(secret, doc["accessToken"])["exp"] == doc["expiryOn"]


def test_serve_needs_something_to_serve(cli: click.Group, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), "serve"], env={"AZUREML_MODEL_DIR": ""})
    assert r.exit_code == 2 or "nothing to serve" in str(r.exception)
    r = CliRunner().invoke(cli, ["serve", "--model", "a", "--model-dir", str(tmp_path)])
    assert "not both" in str(r.exception)


SECRET = "a-token-secret-never-printed"


@pytest.mark.parametrize(
    ("settings", "auth", "warned"),
    [
        ({}, "auth: none", False),
        ({"primary_key": "k1"}, "auth: key", False),
        ({"token_auth": True, "token_secret": SECRET}, "auth: token", False),
        ({"token_secret": SECRET}, "auth: none", True),  # the secret alone does not turn token auth on
        ({"primary_key": "k1", "token_secret": SECRET}, "auth: key", True),
    ],
    ids=["none", "key", "token", "secret-without-token-auth", "secret-beside-keys"],
)
def test_start_up_says_which_auth_is_on(settings: dict[str, Any], auth: str, warned: bool) -> None:
    out = io.StringIO()
    reporter = TerminalReporter(Settings(port=0, **settings), out)
    reporter("listening", {"port": 5001, "host": "127.0.0.1", "worker": 0})
    text = out.getvalue()
    assert f"edgepack: {auth} " in text
    assert ("warning:" in text) is warned
    assert SECRET not in text and "k1" not in text


def test_a_token_secret_without_token_auth_is_warned_about(tmp_path: Path) -> None:
    model_dir = tmp_path / "azureml-models" / "mlp" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "mlp.onnx").write_bytes(make_mlp())
    port = free_port()
    args = ["--model-dir", str(model_dir), "--port", str(port), "--host", "127.0.0.1"]
    proc = Proc(args, env={"EDGEPACK_TOKEN_SECRET": SECRET}, module=True)
    try:
        assert "auth: none" in proc.wait_for(r"edgepack: auth: ")
        assert "--token-auth" in proc.wait_for(r"warning: EDGEPACK_TOKEN_SECRET is set .*WITHOUT auth")
        proc.wait_for(r"ready in")
    finally:
        proc.stop()
    assert not any(SECRET in line for line in proc.lines)
