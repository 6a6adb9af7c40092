"""MQTT beside HTTP in one server process: ``python -m edge_module --mqtt``, ``edgepack serve --mqtt``,
``edgepack mqtt score``, against a Mosquitto of the test's own."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from edge_module.runtime import Response, ScoringError
from edge_module.server.lifecycle import BackgroundServer, Server
from edge_module.settings import Settings, SettingsError
from edge_module.transports.mqtt import MqttTransport, mqtt_request
from edge_module.transports.settings import MqttSettings
from tests.support.mqtt import Mosquitto, expected_outputs
from tests.support.net import free_port
from tests.support.procs import ROOT, Proc
from tests.support.scorers import FunctionApp

X = np.random.default_rng(11).random((1, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


def _mqtt_count(text: str, status: int) -> int:
    m = re.search(rf'edgepack_requests_total\{{route="mqtt",method="PUBLISH",status="{status}"\}} (\d+)', text)
    return int(m.group(1)) if m else 0


def _metrics_until(url: str, check: Any, timeout: float = 5.0) -> str:
    """Scrape /metrics until ``check(text)`` holds (other workers publish their counts about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = requests.get(url + "/metrics", timeout=5).text
        if check(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@pytest.mark.slow
def test_one_process_scores_over_http_and_mqtt(broker: Mosquitto, mlp_path: Path, tmp_path: Path) -> None:
    port = free_port()
    args = ["--model-dir", str(mlp_path.parent), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    args += ["--mqtt", broker.url, "--mqtt-service", "both"]
    proc = Proc(args, env={"EDGEPACK_MQTT_SPOOL_DIR": str(tmp_path / "spool")}, module=True)
    try:
        proc.wait_for(r"ready in [0-9.]+ s")
        proc.wait_seen(r"subscribed to edgepack/\w+/score/request/# on mqtt://")  # before it, requests find no one
        url = f"http://127.0.0.1:{port}"
        expected = expected_outputs(mlp_path, X)
        http = requests.post(url + "/score", json={"data": X.tolist()}, timeout=5).json()
        topic = "edgepack/both/score/request"
        over_mqtt = mqtt_request(broker.url, topic, {"data": X.tolist()}, timeout=15)
        assert np.allclose(http["output"], expected, atol=1e-5)
        assert over_mqtt == http  # the same body as HTTP /score
        with pytest.raises(ScoringError, match="input") as info:
            mqtt_request(broker.url, topic, {"data": [[1.0, 2.0]]}, timeout=10)
        assert info.value.status == 400
        # two workers, one MQTT client: each request is answered once (by worker 0)
        for _ in range(5):
            assert mqtt_request(broker.url, topic, {"data": X.tolist()}, timeout=10, protocol=311)["id"]
        text = _metrics_until(url, lambda t: _mqtt_count(t, 200) >= 6 and _mqtt_count(t, 400) >= 1)
        assert _mqtt_count(text, 200) == 6 and _mqtt_count(text, 400) == 1, text
    finally:
        assert proc.stop() == 0
    log = "".join(proc.lines)
    assert "scoring over MQTT" in log and log.count("scoring over MQTT") == 1, log  # worker 0 only


@pytest.mark.slow
def test_failed_init_is_answered_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent(
            """
            def init():
                raise RuntimeError("the weights file is missing")

            def run(data):
                return data
            """
        )
    )
    port = free_port()
    args = ["--entry-script", str(script), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--mqtt", broker.url, "--mqtt-service", "broken"]
    proc = Proc(args, env={"EDGEPACK_MQTT_SPOOL_DIR": str(tmp_path / "spool")}, module=True)
    try:
        proc.wait_for(r"load\(\) failed")
        proc.wait_seen(r"subscribed to edgepack/broken/score/request/#")
        with pytest.raises(ScoringError, match="weights file is missing") as info:
            mqtt_request(broker.url, "edgepack/broken/score/request", {"data": [1]}, timeout=15)
        assert info.value.status == 503
        assert requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 503
    finally:
        proc.stop()


@pytest.mark.slow
def test_edgepack_serve_mqtt_and_the_mqtt_score_client(broker: Mosquitto, ws_with_model: Path, tmp_path: Path) -> None:
    from packager.cli import cli

    port = free_port()
    args = ["--workspace", str(ws_with_model), "serve", "--model", "mlp", "--port", str(port), "--host", "127.0.0.1"]
    args += ["--mqtt", broker.url]
    proc = Proc(args, env={"EDGEPACK_MQTT_SPOOL_DIR": str(tmp_path / "spool")})
    try:
        proc.wait_for(r"ready in [0-9.]+ s")
        proc.wait_seen(r"subscribed to edgepack/\w+/score/request/# on mqtt://")  # before it, requests find no one
        runner = CliRunner()
        body = tmp_path / "body.json"
        body.write_text(json.dumps({"data": X.tolist()}))
        # the MQTT service is named after the model: edgepack/mlp/score/request
        r = runner.invoke(cli, ["mqtt", "score", "--broker", broker.url, "--service", "mlp", "--data", str(body)])
        assert r.exit_code == 0, r.output
        assert np.asarray(json.loads(r.output)["output"]).shape == (1, 10)
        r = runner.invoke(
            cli, ["mqtt", "score", "--broker", broker.url, "--service", "mlp", "--protocol", "3.1.1", "-d", str(body)]
        )
        assert r.exit_code == 0 and json.loads(r.output)["id"], r.output
        r = runner.invoke(cli, ["mqtt", "score", "--broker", broker.url, "--service", "mlp", "-d", '{"data": [[1]]}'])
        assert r.exit_code == 1 and "answered 400" in str(r.exception), r.output
    finally:
        assert proc.stop() == 0


def _edgepack(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from packager.cli import main; main(sys.argv[1:])", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mqtt_client_errors_name_the_problem(tmp_path: Path) -> None:
    closed = f"mqtt://127.0.0.1:{free_port()}"
    for argv, code, expected in (
        (["mqtt", "score", "--broker", closed, "--data", "{}"], 1, "cannot reach"),
        (["mqtt", "score", "--broker", "http://x:1", "--data", "{}"], 2, "invalid MQTT url"),
        (["mqtt", "score", "--data", "{not json"], 2, "neither a file nor valid JSON"),
        (["serve", "--model-dir", str(tmp_path), "--mqtt-topic", "a/#"], 2, "need --mqtt"),
        (["serve", "--model-dir", str(tmp_path), "--mqtt", "mqtt://h:1", "--mqtt-ca", "/nope.pem"], 2, "no such"),
    ):
        proc = _edgepack(*argv)
        assert proc.returncode == code, (argv, proc.stderr)
        assert proc.stderr.count("error:") == 1 and expected in proc.stderr, proc.stderr


def test_settings_switch_the_transports_on_from_the_environment() -> None:
    assert Settings.from_env({}).mqtt is None and Settings.from_env({}).iotedge is None
    s = Settings.from_env(
        {"EDGEPACK_MQTT_URL": "mqtts://broker:8884", "EDGEPACK_MQTT_MAX_BATCH": "8", "SERVICE_NAME": "digits"}
    )
    assert s.mqtt is not None and s.mqtt.address == ("broker", 8884, True) and s.mqtt.max_batch == 8
    assert s.mqtt.service == "digits"
    hub = Settings.from_env({"EDGEPACK_IOTEDGE": "true", "EDGEPACK_IOTEDGE_INPUT": "frames"}).iotedge
    assert hub is not None and hub.input_name == "frames"
    assert Settings.from_env({"EDGEPACK_IOTEDGE": "0"}).iotedge is None
    with pytest.raises(SettingsError, match="EDGEPACK_IOTEDGE"):
        Settings.from_env({"EDGEPACK_IOTEDGE": "maybe"})
    with pytest.raises(SettingsError, match="EDGEPACK_MQTT_MAX_BATCH"):
        Settings.from_env({"EDGEPACK_MQTT_URL": "mqtt://b:1883", "EDGEPACK_MQTT_MAX_BATCH": "lots"})


# a transport that fails for good ----------------------------------------------------------------------
def _disk_full(self: MqttTransport) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _mqtt_settings(tmp_path: Path, **kwargs: Any) -> Settings:
    mqtt = MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}", spool_dir=str(tmp_path / "spool"))
    return Settings(port=0, host="127.0.0.1", mqtt=mqtt, **kwargs)


def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_dead_transport_makes_the_server_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the MQTT thread died and /v2/health/ready still answered 200."""
    monkeypatch.setattr(MqttTransport, "_try_connect", _disk_full)  # the loop's first step fails for good
    app = FunctionApp(lambda request: Response(b'{"ok":true}'))
    with BackgroundServer(app, _mqtt_settings(tmp_path)) as srv:
        assert srv.wait_ready()
        _until(lambda: srv.server.transport_error is not None)
        r = requests.get(srv.url + "/v2/health/ready", timeout=5)
        assert r.status_code == 503, r.text
        assert r.json() == {
            "ready": False,
            "error": "the MQTT transport failed: OSError: [Errno 28] No space left on device",
        }
        assert requests.get(srv.url + "/v2/health/live", timeout=5).status_code == 200
        assert requests.post(srv.url + "/score", json={}, timeout=5).json() == {"ok": True}  # HTTP goes on
        assert srv.server.exit_code == 0  # embedded: the caller decides
        (transport,) = srv.server.transports
        assert transport.error == "OSError: [Errno 28] No space left on device"


def test_a_server_process_stops_with_exit_code_3_when_its_transport_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MqttTransport, "_try_connect", _disk_full)
    app = FunctionApp(lambda request: Response(b"{}"))
    server = Server(app, _mqtt_settings(tmp_path), exit_on_transport_failure=True)
    thread = threading.Thread(target=server.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and server.exit_code == 3
    assert server.transport_error is not None and "No space left on device" in server.transport_error


@pytest.mark.parametrize("workers", [1, 2])
def test_python_m_edge_module_exits_3_when_mqtt_cannot_start(tmp_path: Path, workers: int) -> None:
    """An unsafe spool folder: the process says why and exits non-zero (before: it served HTTP only, ready)."""
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    args = ["--entry-script", str(script), "--host", "127.0.0.1", "--port", str(free_port()), "--workers", str(workers)]
    args += ["--mqtt", f"mqtt://127.0.0.1:{free_port()}"]
    env = {**os.environ, "EDGEPACK_MQTT_SPOOL_DIR": str(spool), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_module", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert f"the spool folder {spool} is writable by group or others" in proc.stderr, proc.stderr
    assert "exit code 3" in proc.stderr, proc.stderr
