"""Deploy and update on the Local target: how long from ``Model.deploy`` to the first 200 on ``/score``.

    python benchmarks/deploy_local.py [--rounds N] [--mode process|docker|docker-registry]... [--json]

Run from the repository root (Docker rows need the dev services: ``bash scripts/dev-services.sh``).
The app is the Azure docs' shape: a registered ONNX MLP (64-256-256-10), a v1 ``score.py`` with
inference-schema decorators, ``inferenceconfig.json`` with a conda file. Per mode, one warm-up round
(fills the image builder's layer cache and the engine's layers), then ``--rounds`` measured rounds of:

- ``deploy``: ``Model.deploy`` of version A (a service name new to the workspace) → the first 200 on
  ``/score``;
- ``update``: ``service.update(models=[B])`` with B a version registered just before (new weights, so a
  new models layer) → the first ``/score`` answer computed by B;
- ``delete``: ``service.delete()`` until it returns (no container or process left).

Modes: ``process`` (the scoring module as a local process), ``docker`` (image built without a daemon,
``docker load``), ``docker-registry`` (pushed to the dev registry, then ``docker pull``: only missing
layers move). Medians are printed, with the build/transfer split the service records.
Goals (issue 14): deploy and update ≤ 10 s in Docker, ≤ 3 s in process mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from cloud_targets import Model  # noqa: E402
from packager import Workspace  # noqa: E402
from packager.image.inference_config import InferenceConfig  # noqa: E402
from tests.cloud_targets.local.support import body, expected, register, write_app  # noqa: E402

GOALS = {"process": 3.0, "docker": 10.0, "docker-registry": 10.0}
DEV_ENV = Path(os.environ.get("EDGEPACK_DEV_DIR", "/var/lib/edgepack-dev")) / "services.env"


def dev_services() -> dict[str, str]:
    values = {}
    if DEV_ENV.is_file():
        for line in DEV_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def first_answer(url: str, want: np.ndarray | None, deadline: float) -> float:
    """Poll ``/score`` until it answers 200 (and, with ``want``, answers ``want``); returns the time then."""
    data = body()
    while time.monotonic() < deadline:
        try:
            resp = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)
            ok = resp.status_code == 200
            if ok and (want is None or np.allclose(np.array(resp.json()["output"]), want, rtol=1e-5, atol=1e-6)):
                return time.perf_counter()
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no expected answer from {url}")


def one_round(ws: Workspace, tmp: Path, ic: InferenceConfig, name: str, seed: int) -> dict[str, Any]:
    a = register(ws, tmp, seed=0) if not Model.list(ws, name="mlp") else Model(ws, "mlp", version=1)
    b = register(ws, tmp, seed=seed)
    want_b = expected(b)
    t0 = time.perf_counter()
    service = Model.deploy(ws, name, [a], ic)
    deploy_s = first_answer(service.scoring_uri, None, time.monotonic() + 300) - t0
    deploy_build = dict(service._record.build)
    t1 = time.perf_counter()
    service.update(models=[b])
    update_s = first_answer(service.scoring_uri, want_b, time.monotonic() + 300) - t1
    update_build = dict(service._record.build)
    t2 = time.perf_counter()
    service.delete()
    delete_s = time.perf_counter() - t2
    return {
        "deploy": deploy_s,
        "update": update_s,
        "delete": delete_s,
        "deploy_build": deploy_build,
        "update_build": update_build,
    }


def run_mode(mode: str, rounds: int, services: dict[str, str]) -> dict[str, Any]:
    os.environ["EDGEPACK_LOCAL_MODE"] = "process" if mode == "process" else "docker"
    os.environ.pop("EDGEPACK_LOCAL_REGISTRY", None)
    if mode.startswith("docker"):
        os.environ["EDGEPACK_BASE_IMAGE"] = services.get(
            "EDGEPACK_TEST_BASE_IMAGE", "127.0.0.1:5000/library/python:3.11-slim"
        )
    if mode == "docker-registry":
        os.environ["EDGEPACK_LOCAL_REGISTRY"] = services.get("EDGEPACK_TEST_REGISTRY", "127.0.0.1:5000")
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-deploy-") as tmp_name:
        tmp = Path(tmp_name)
        ws = Workspace.from_path(tmp / "ws")
        ic = InferenceConfig.load(write_app(tmp))
        one_round(ws, tmp, ic, "warm-up", seed=100)  # cache warm: dependencies layer, base layers in the engine
        results = [one_round(ws, tmp, ic, f"bench-{i}", seed=200 + i) for i in range(rounds)]
    return {
        "mode": mode,
        "rounds": rounds,
        "deploy_s": statistics.median(r["deploy"] for r in results),
        "update_s": statistics.median(r["update"] for r in results),
        "delete_s": statistics.median(r["delete"] for r in results),
        "goal_s": GOALS[mode],
        "all": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", action="append", choices=list(GOALS), help="repeatable; default: all")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    services = dev_services()
    rows = [run_mode(mode, args.rounds, services) for mode in args.mode or list(GOALS)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    head = f"{'mode':<16} {'deploy→200 s':>13} {'update→new s':>13} {'delete s':>9} {'goal s':>7}"
    print(f"{head}  build/transfer (update)")
    for row in rows:
        split = row["all"][-1]["update_build"]
        print(
            f"{row['mode']:<16} {row['deploy_s']:>13.2f} {row['update_s']:>13.2f} {row['delete_s']:>9.2f} "
            f"{row['goal_s']:>7.1f}  {split.get('transfer')} {split.get('seconds')}"
        )


if __name__ == "__main__":
    main()
