"""Acceptance: `edgepack edge run` of a three-module deployment on the real Docker engine and registry.

generator (a tiny module: the scoring image's Python, entrypoint replaced) -> scorer (the image
builder's image, two versions of the digits model) -> $upstream, and a ``WHERE above_threshold = 'true'``
route back to the generator. Twin changes (threshold, then model_version) are applied to the running
runtime; the scorer is stopped mid-stream and nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.packager.image.support import docker, edgepack, expected
from tests.support.scorers import make_mlp

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "examples" / "models" / "digits-linear.onnx"
GEN = Path(__file__).parent / "edge_generator" / "gen.py"
N = 40
DEVICE = f"edgetest-{uuid.uuid4().hex[:6]}"


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "packager", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait(what: str, check: Any, timeout: float = 120.0, interval: float = 0.3) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def manifest(image: str, gen_dir: Path, scorer: dict[str, Any], generator: dict[str, Any]) -> dict[str, Any]:
    module = {"version": "1.0", "type": "docker", "status": "running"}
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
                    "systemModules": {
                        "edgeAgent": {
                            "type": "docker",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"},
                        },
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"},
                        },
                    },
                    "modules": {
                        "scorer": {
                            **module,
                            "restartPolicy": "always",
                            "startupOrder": 1,
                            "env": {"EDGEPACK_IOTEDGE": {"value": "true"}},
                            "settings": {
                                "image": image,
                                "createOptions": json.dumps({"HostConfig": {"NetworkMode": "host"}}),
                            },
                        },
                        "generator": {
                            **module,
                            "restartPolicy": "on-failure",
                            "startupOrder": 2,
                            "settings": {
                                "image": image,
                                "createOptions": json.dumps(
                                    {
                                        "Entrypoint": ["python3", "/gen/gen.py"],
                                        "HostConfig": {"Binds": [f"{gen_dir}:/gen:ro"]},
                                    }
                                ),
                            },
                        },
                    },
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {
                        "toScorer": "FROM /messages/modules/generator/outputs/samples"
                        ' INTO BrokeredEndpoint("/modules/scorer/inputs/input1")',
                        "up": "FROM /messages/modules/scorer/outputs/output1 INTO $upstream",
                        "high": "FROM /messages/modules/scorer/outputs/output1 WHERE above_threshold = 'true'"
                        ' INTO BrokeredEndpoint("/modules/generator/inputs/high")',
                    },
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
            "scorer": {"properties.desired": scorer},
            "generator": {"properties.desired": generator},
        }
    }


@pytest.fixture(scope="module")
def image(dev_services: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The image builder's scoring image with digits versions 1 (linear) and 2 (an MLP); and the MLP."""
    registry = dev_services["EDGEPACK_TEST_REGISTRY"]
    base = dev_services.get("EDGEPACK_TEST_BASE_IMAGE", f"{registry}/library/python:3.11-slim")
    tmp = tmp_path_factory.mktemp("edgeimg")
    mlp = tmp / "digits-mlp.onnx"
    mlp.write_bytes(make_mlp((64, 32, 10), seed=7))
    ws = tmp / "ws"
    edgepack(ws, "model", "register", "-n", "digits", "-p", str(DIGITS))
    edgepack(ws, "model", "register", "-n", "digits", "-p", str(mlp))
    ref = f"{registry}/test/edge-digits-{uuid.uuid4().hex[:8]}:1"
    out = json.loads(
        edgepack(
            ws,
            "build-and-push",
            "-m",
            "digits:1",
            "-m",
            "digits:2",
            "--platform",
            "linux/amd64",
            "--base",
            base,
            "-t",
            ref,
            "--json",
        ).stdout
    )
    docker("pull", out["reference"])
    return out["reference"], mlp


def test_three_modules_twin_routes_store_and_forward(image: tuple[str, Path], tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    ref, mlp = image
    x = (load_digits().data[:N] / 16.0).astype(np.float32)
    want = {"1": expected(DIGITS, x), "2": expected(mlp, x)}
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    shutil.copy(GEN, gen_dir / "gen.py")
    (gen_dir / "samples.json").write_text(json.dumps(x.tolist()))
    os.chmod(gen_dir, 0o755)
    maxes = want["1"].max(axis=1)
    thresholds = [float(np.quantile(maxes, 0.5)), float(np.quantile(maxes, 0.2))]
    scorer = {"threshold": thresholds[0], "model_version": "1"}
    generator: dict[str, Any] = {"round": 0}
    path = tmp_path / "deployment.json"
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEPACK_STATE_DIR": str(state)}

    def write(**changes: Any) -> None:
        for key, value in changes.items():
            (generator if key in ("round", "interval") else scorer)[key] = value
        path.write_text(json.dumps(manifest(ref, gen_dir, scorer, generator)))

    def status() -> dict[str, Any]:
        res = _cli(env, "edge", "status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def apply(**changes: Any) -> list[str]:
        write(**changes)
        res = _cli(env, "edge", "apply", str(path), "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["changes"]

    def upstream(round_: int) -> dict[int, dict[str, Any]]:
        file = state / "upstream.jsonl"
        lines = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
        return {int(m["properties"]["sample"]): m for m in lines if m["properties"].get("round") == str(round_)}

    def reported(module: str) -> dict[str, Any]:
        return status()["modules"][module]["reported"]

    write()
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "packager", "edge", "run", str(path), "--device", DEVICE, "--no-watch"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(
            "the modules to connect and be ready",
            lambda: (
                (state / "state.json").exists()
                and reported("scorer").get("status") == "ready"
                and reported("generator").get("status") == "ready"
            ),
        )
        s = status()
        assert {m["status"] for m in s["modules"].values()} == {"running"}
        assert reported("scorer")["settings"]["threshold"] == thresholds[0]
        started_at = docker("inspect", "-f", "{{.State.StartedAt}}", f"edgepack-{DEVICE}-scorer").stdout

        def check_round(r: int, version: str, threshold: float, timeout: float = 120) -> None:
            got = _wait(f"round {r} on $upstream", lambda: len(upstream(r)) == N and upstream(r), timeout)
            for i, m in got.items():
                np.testing.assert_allclose(json.loads(m["body"])["output"][0], want[version][i], rtol=1e-4, atol=1e-5)
                above = want[version][i].max() >= threshold
                assert m["properties"]["above_threshold"] == ("true" if above else "false"), (r, i)
            high = sorted(i for i in range(N) if want[version][i].max() >= threshold)
            _wait(f"round {r}'s high route", lambda: reported("generator").get("high", {}).get(str(r), []) == high, 30)

        t0 = time.monotonic()
        assert "module generator: desired properties patched" in apply(round=1)
        check_round(1, "1", thresholds[0])
        assert time.monotonic() - t0 < 60
        # threshold, then model_version: applied to the running scorer, reported, no restart
        apply(threshold=thresholds[1])
        _wait("threshold reported", lambda: reported("scorer")["settings"]["threshold"] == thresholds[1])
        apply(round=2)
        check_round(2, "1", thresholds[1])
        apply(model_version="2")
        _wait("model_version reported", lambda: reported("scorer")["models"]["digits"]["version"] == "2")
        apply(round=3)
        check_round(3, "2", thresholds[1])
        assert docker("inspect", "-f", "{{.State.StartedAt}}", f"edgepack-{DEVICE}-scorer").stdout == started_at
        assert status()["modules"]["scorer"]["restarts"] == 0
        # store-and-forward: the scorer stopped mid-stream; restarted (restartPolicy always); nothing lost
        apply(interval=0.1)
        apply(round=4)
        _wait("round 4 under way", lambda: len(upstream(4)) >= 5, 60, 0.05)
        docker("stop", "-t", "10", f"edgepack-{DEVICE}-scorer")
        _wait("the scorer restarted", lambda: status()["modules"]["scorer"]["restarts"] >= 1, 60)
        check_round(4, "2", thresholds[1], timeout=180)
        text = _cli(env, "edge", "messages", "-n", "1").stdout
        assert "scorer/output1" in text and "round=4" in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            log.close()
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()
    assert docker("ps", "-a", "-q", "--filter", f"label=edgepack.edge={DEVICE}").stdout.strip() == ""
    assert status()["running"] is False


def test_broken_manifest_starts_nothing(tmp_path: Path) -> None:
    doc = manifest("127.0.0.1:5000/x/y:1", tmp_path, {}, {})
    routes = doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    routes["bad"] = 'FROM /messages/modules/nope/outputs/* INTO BrokeredEndpoint("/modules/nope/inputs/x")'
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEPACK_STATE_DIR": str(tmp_path / "state")}
    res = _cli(env, "edge", "run", str(path), "--device", DEVICE)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and "routes.bad" in res.stderr
    assert not (tmp_path / "state" / "state.json").exists()
