"""Local endpoints for real (process mode): the split, zero-drop changes, keys, state files, clean delete.

The acceptance of issue 16: two versions split 80/20 take 3,000 requests from concurrent clients within
3 points of the split, every answer right for the version that served it (the router's
``azureml-model-deployment`` header); moving to 0/100 and deleting the first version, and replacing a
version's model, under load, drop no request.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cloud_targets import Endpoint, WebserviceException
from cloud_targets.endpoints.store import EndpointStore
from cloud_targets.targets.local import process
from packager import Workspace
from tests.cloud_targets.endpoints.support import Tally, app, client, register, run_clients

CLIENTS = 6


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    workspace = Workspace.from_path(tmp_path / "ws")
    yield workspace
    for ep in Endpoint.list(workspace):  # never leave a router or version process behind
        ep.delete()


@pytest.fixture
def two_versions(ws: Workspace, tmp_path: Path) -> Endpoint:
    """``split-ep``: blue (weight 3, default) at 80 %, green (weight 5) at 20 %."""
    ep = Endpoint.create(ws, "split-ep")
    ep.create_version("blue", [register(ws, tmp_path, 3)], app(tmp_path, "blue"), traffic_percentile=80)
    ep.create_version("green", [register(ws, tmp_path, 5)], app(tmp_path, "green"), traffic_percentile=20)
    return ep


def pids(ep: Endpoint) -> list[dict]:
    handle = EndpointStore(ep.workspace).read(ep.name).target
    return [handle["router"]] + [v["handle"] for v in handle["versions"].values()]


def test_split_80_20_over_3000_requests(two_versions: Endpoint) -> None:
    ep = two_versions
    assert ep.state == "Healthy"
    assert {n: (v.traffic_percentile, v.is_default) for n, v in ep.versions.items()} == {
        "blue": (80.0, True),
        "green": (20.0, False),
    }
    tally = Tally()
    for t in run_clients(ep.scoring_uri, ep.get_keys()[0], tally, CLIENTS, count=3000 // CLIENTS):
        t.join()
    assert tally.failures == []
    assert tally.total == 3000
    assert abs(tally.share("blue") - 80) <= 3 and abs(tally.share("green") - 20) <= 3, tally.served
    assert tally.weights == {"blue": {3}, "green": {5}}


def test_move_to_0_100_then_delete_first_version_drops_nothing(two_versions: Endpoint) -> None:
    ep = two_versions
    old = pids(ep)
    tally, stop = Tally(), threading.Event()
    threads = run_clients(ep.scoring_uri, ep.get_keys()[0], tally, CLIENTS, stop=stop)
    ep.set_traffic({"blue": 0, "green": 100})
    moved = tally.total
    ep.delete_version("blue")
    deleted = tally.total
    client(ep.scoring_uri, ep.get_keys()[0], tally, count=50)  # and after: all green
    stop.set()
    for t in threads:
        t.join()
    assert tally.failures == [], tally.failures[:5]
    assert moved > 0 and deleted > moved  # requests were flowing through both changes
    assert tally.served["blue"] > 0 and tally.served["green"] > 0
    assert list(ep.versions) == ["green"] and ep.versions["green"].is_default  # the default moved (a warning says so)
    assert process.start_time(old[1]["pid"]) is None  # blue's process is gone
    assert process.start_time(old[0]["pid"]) == old[0]["start_time"]  # the router never restarted


def test_update_version_models_under_load_drops_nothing(two_versions: Endpoint, ws: Workspace, tmp_path: Path) -> None:
    ep = two_versions
    before = pids(ep)
    tally, stop = Tally(), threading.Event()
    threads = run_clients(ep.scoring_uri, ep.get_keys()[0], tally, CLIENTS, stop=stop)
    ep.update_version("green", models=[register(ws, tmp_path, 7)], traffic_percentile=20)
    switched = tally.total
    tally_after = Tally()
    client(ep.scoring_uri, ep.get_keys()[0], tally_after, count=200)
    stop.set()
    for t in threads:
        t.join()
    assert tally.failures == [] and tally_after.failures == []
    assert switched > 0
    assert tally.weights["green"] <= {5, 7} and tally_after.weights["green"] == {7}  # the new model, once switched
    assert ep.versions["green"].models == ["tiny:3"]
    assert process.start_time(before[2]["pid"]) is None  # green's old instance was drained and stopped
    assert process.start_time(before[1]["pid"]) == before[1]["start_time"]  # blue untouched


def test_pinned_version_and_keys(two_versions: Endpoint) -> None:
    ep = two_versions
    assert ep.run({"x": 2}, version="green") == {"version": "green", "weight": 5, "y": 10}
    body = json.dumps({"x": 1})
    assert requests.post(ep.scoring_uri, data=body, timeout=30).status_code == 401
    primary, secondary = ep.get_keys()
    for key in (primary, secondary):
        resp = requests.post(ep.scoring_uri, data=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert resp.status_code == 200
    ep.regen_key("Primary")
    new_primary = ep.get_keys()[0]
    assert new_primary != primary
    old = requests.post(ep.scoring_uri, data=body, headers={"Authorization": f"Bearer {primary}"}, timeout=30)
    assert old.status_code == 401
    assert ep.run({"x": 1})["y"] in (3, 5)
    assert "listening" in ep.get_logs("green") and "revision" in ep.get_logs()  # a version's log, the router's
    ep.update(token_auth_enabled=True)  # key -> token: the router restarts with the new secret
    assert not ep.auth_enabled and ep.token_auth_enabled
    token = ep.get_token()[0]
    assert requests.post(ep.scoring_uri, data=body, headers={"Authorization": f"Bearer {new_primary}"},
                         timeout=30).status_code == 401  # fmt: skip
    assert requests.post(ep.scoring_uri, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=30).ok
    ep.update(token_auth_enabled=False)
    assert requests.post(ep.scoring_uri, data=body, timeout=30).ok  # auth off


def test_token_auth(ws: Workspace, tmp_path: Path) -> None:
    ep = Endpoint.create(ws, "token-ep", auth_mode="token")
    ep.create_version("only", [register(ws, tmp_path, 2)], app(tmp_path, "only"))
    token, _ = ep.get_token()
    resp = requests.post(ep.scoring_uri, json={"x": 4}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.json() == {"version": "only", "weight": 2, "y": 8}
    assert requests.post(ep.scoring_uri, json={"x": 4}, timeout=30).status_code == 401


def test_state_files_private_and_delete_leaves_no_process(two_versions: Endpoint) -> None:
    ep = two_versions
    folder = EndpointStore(ep.workspace).endpoint_dir(ep.name)
    primary, secondary = ep.get_keys()
    for name in ("endpoint.json", "secrets.json", "routes.json", "logs/router.log"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    for name in ("endpoint.json", "routes.json", "logs/router.log"):
        text = (folder / name).read_text()
        assert primary not in text and secondary not in text, name
    assert primary not in json.dumps(ep.serialize()) and primary not in repr(ep)
    router = pids(ep)[0]
    cmdline = Path(f"/proc/{router['pid']}/cmdline").read_bytes().decode()
    assert "edge_module.router" in cmdline and primary not in cmdline  # keys reach it by env, not argv
    handles = pids(ep)
    ep.delete()
    assert all(process.start_time(h["pid"]) is None for h in handles)
    assert not folder.exists()
    assert Endpoint.list(ep.workspace) == []


def test_a_version_that_fails_to_start_changes_nothing(two_versions: Endpoint, ws: Workspace, tmp_path: Path) -> None:
    ep = two_versions
    before = pids(ep)
    broken = app(tmp_path, "red")
    Path(broken.source_directory, "score.py").write_text(
        "def init():\n    raise RuntimeError('boom at init')\n\n\ndef run(raw):\n    return raw\n"
    )
    with pytest.raises(WebserviceException) as exc:
        ep.create_version("red", [register(ws, tmp_path, 9)], broken, traffic_percentile=0)
    assert "version red failed to start" in str(exc.value) and "boom at init" in exc.value.logs
    assert list(Endpoint(ws, ep.name).versions) == ["blue", "green"]
    assert pids(ep) == before and ep.state == "Healthy"
    assert not (EndpointStore(ws).endpoint_dir(ep.name) / "versions" / "red").exists()  # its process and content
    assert ep.run({"x": 1}, version="blue") == {"version": "blue", "weight": 3, "y": 3}


@pytest.mark.slow
def test_docker_mode_versions(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_services: dict[str, str]
) -> None:
    from cloud_targets.targets.local.docker_mode import LABEL, engine

    client = engine()
    if client is None:
        pytest.fail("no Docker engine: run scripts/dev-services.sh")
    monkeypatch.setenv("EDGEPACK_BASE_IMAGE", dev_services["EDGEPACK_TEST_BASE_IMAGE"])
    monkeypatch.delenv("EDGEPACK_LOCAL_REGISTRY", raising=False)
    ep = Endpoint.create(ws, "docker-ep", mode="docker")
    ep.create_version("blue", [register(ws, tmp_path, 3)], app(tmp_path, "blue"), traffic_percentile=50)
    ep.create_version("green", [register(ws, tmp_path, 5)], app(tmp_path, "green"), traffic_percentile=50)
    handle = EndpointStore(ws).read(ep.name).target
    assert handle["mode"] == "docker" and all(v["handle"]["mode"] == "docker" for v in handle["versions"].values())
    tally = Tally()
    for t in run_clients(ep.scoring_uri, ep.get_keys()[0], tally, 4, count=100):
        t.join()
    assert tally.failures == [] and set(tally.served) == {"blue", "green"}
    ep.delete()
    names = {v["instance"] for v in handle["versions"].values()}
    left = [c for c in client.containers.list(all=True) if c.labels.get(LABEL) in names]
    assert left == [] and process.start_time(handle["router"]["pid"]) is None


def test_instances_a_failed_switch_left_running_are_stopped_by_the_next_apply(
    two_versions: Endpoint, ws: Workspace, tmp_path: Path
) -> None:
    ep = two_versions
    store = EndpointStore(ws)
    handle = store.read(ep.name).target
    old_green = handle["versions"]["green"]["handle"]
    process.stop(handle["router"])  # the router died, and something else took its port meanwhile
    with socket.create_server(("127.0.0.1", handle["port"])):
        with pytest.raises(WebserviceException):
            ep.update_version("green", models=[register(ws, tmp_path, 7)])
        retired = store.read(ep.name).target["retired"]
        assert [r["handle"]["pid"] for r in retired.values()] == [old_green["pid"]]
    ep.set_traffic({"blue": 50, "green": 50})  # the port is free again: this apply completes
    assert process.start_time(old_green["pid"]) is None  # the replaced green instance no longer runs
    assert "retired" not in store.read(ep.name).target
    assert ep.run({"x": 1}, version="green") == {"version": "green", "weight": 7, "y": 7}
