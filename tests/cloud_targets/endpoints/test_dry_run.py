"""``endpoint deployment create/update --dry-run``: the endpoint as it would be after the change, nothing changed.

Kubernetes: blue really goes to the local API server (its image build is replaced by a pinned reference: the
build is not what is tested); the dry run of green prints both versions' Deployments and the router's split
with green in it, and the API server receives no write request. Local: the plan, no process, no record change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloud_targets.endpoints.store import EndpointStore
from packager import Workspace
from packager.registry import Model
from tests.cloud_targets.cli_support import Run
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer
from tests.support.workspaces import user_workspace

EP = "tiny-ep"
NS = "default"
REGISTRY = "127.0.0.1:5000/edgepack"
BLUE_IMAGE = f"{REGISTRY}/{EP}-blue@sha256:{'b' * 64}"
DEPLOYMENT = """\
name: {name}
endpoint_name: tiny-ep
model:
  path: weight-{name}.txt
code_configuration:
  code: app
  scoring_script: score.py
instance_count: 2
"""


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(auto_rollout=True).start()
    labels = {"edgepack.service": EP}  # the router pods serve every routes revision at once
    server.pods[NS] = [{"metadata": {"name": f"{EP}-{i}", "namespace": NS, "labels": labels}} for i in "ab"]
    for pod in (f"{EP}-a", f"{EP}-b"):
        server.pod_proxy[(NS, pod, "/-/router")] = {"endpoint": EP, "revision": 10**6, "versions": {}}
    yield server
    server.stop()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    yield from user_workspace(tmp_path, monkeypatch)


@pytest.fixture
def kws(apiserver: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The workspace, cleaned up (endpoint deleted) while the API server still runs."""
    yield from user_workspace(tmp_path, monkeypatch)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "yml"
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (folder / "endpoint.yml").write_text(f"name: {EP}\nauth_mode: key\n")
    for name, weight in (("blue", 2), ("green", 3)):
        (folder / f"weight-{name}.txt").write_text(str(weight))
        (folder / f"{name}.yml").write_text(DEPLOYMENT.format(name=name))
    return folder


def running_under(folder: Path) -> list[str]:
    """Live processes whose command line names ``folder`` (a version or router the endpoint started)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and str(folder) in cmdline:
            found.append(cmdline)
    return found


def writes(server: FakeApiServer, after: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests[after:] if r.method != "GET"]


def record_bytes(ws: Workspace) -> bytes:
    return (EndpointStore(ws).endpoint_dir(EP) / "endpoint.json").read_bytes()


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d and d["kind"] == kind}


def test_kubernetes_dry_run_shows_the_whole_endpoint_and_sends_nothing(
    kws: Workspace, files: Path, run: Run, apiserver: FakeApiServer, kubeconf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = kws
    import cloud_targets.endpoints.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "push_image", lambda *a: (BLUE_IMAGE, f"sha256:{'b' * 64}"))
    made = run("endpoint", "create", "-f", files / "endpoint.yml", "--kubeconfig", kubeconf,
               "--image-registry", REGISTRY)  # fmt: skip
    assert made.code == 0, made.err
    blue = run("endpoint", "deployment", "create", "-f", files / "blue.yml", "--all-traffic")
    assert blue.code == 0, blue.err
    before, sent = record_bytes(ws), len(apiserver.requests)
    models = [m.id for m in Model.list(ws)]

    dry = run("endpoint", "deployment", "create", "-f", files / "green.yml", "--all-traffic", "--dry-run")
    assert dry.code == 0, dry.err
    docs = list(yaml.safe_load_all(dry.out))
    deployments = by_kind(docs, "Deployment")
    image = {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in deployments.items()}
    assert image[f"{EP}-blue"] == BLUE_IMAGE  # the running version as it is
    assert image[f"{EP}-green"] == f"{REGISTRY}/{EP}-green:dry-run"  # the one not built
    assert deployments[f"{EP}-green"]["spec"]["replicas"] == 2
    assert EP in deployments  # the router
    routes = yaml.safe_load(by_kind(docs, "ConfigMap")[f"{EP}-routes"]["data"]["routes.json"])
    assert {v["name"]: v["traffic"] for v in routes["versions"]} == {"blue": 0.0, "green": 100.0}
    for secret in by_kind(docs, "Secret").values():
        assert all(v == "" for v in (secret.get("data") or {}).values()), secret["metadata"]["name"]
    assert writes(apiserver, sent) == []  # reads only (the endpoint's state)
    assert record_bytes(ws) == before and [m.id for m in Model.list(ws)] == models  # nothing registered

    update = run("endpoint", "deployment", "update", "-f", files / "blue.yml", "--set", "instance_count=3",
                 "--dry-run", "--json")  # fmt: skip
    assert update.code == 0, update.err
    objects = update.json()["objects"]
    blue_dep = by_kind(objects, "Deployment")[f"{EP}-blue"]
    assert blue_dep["spec"]["replicas"] == 3
    assert blue_dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REGISTRY}/{EP}-blue:dry-run"
    assert writes(apiserver, sent) == [] and record_bytes(ws) == before

    # `deploy --dry-run` with AKSENDPOINT shares the path: the existing endpoint with the version added
    (files / "dc.json").write_text('{"computeType": "AKSENDPOINT", "versionName": "red", "trafficPercentile": 0}')
    planned = run("deploy", "-n", EP, "-m", models[0], "--sd", files / "app", "--es", "score.py",
                  "--dc", files / "dc.json", "--kubeconfig", kubeconf, "--dry-run")  # fmt: skip
    assert planned.code == 0, planned.err
    docs = list(yaml.safe_load_all(planned.out))
    assert {f"{EP}-blue", f"{EP}-red", EP} <= set(by_kind(docs, "Deployment"))
    routes = yaml.safe_load(by_kind(docs, "ConfigMap")[f"{EP}-routes"]["data"]["routes.json"])
    assert {v["name"]: v["traffic"] for v in routes["versions"]} == {"blue": 100.0, "red": 0.0}
    assert writes(apiserver, sent) == [] and record_bytes(ws) == before

    unknown = run("endpoint", "deployment", "update", "-f", files / "green.yml", "--dry-run")
    assert unknown.code != 0 and "has no deployment green" in unknown.err


def test_local_dry_run_changes_nothing(ws: Workspace, files: Path, run: Run) -> None:
    made = run("endpoint", "create", "-f", files / "endpoint.yml", "--local")
    assert made.code == 0, made.err
    before, processes = record_bytes(ws), running_under(Path(ws.path))  # the router runs from create on
    dry = run("endpoint", "deployment", "create", "-f", files / "blue.yml", "--all-traffic", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    plan = dry.json()
    assert plan["dryRun"] is True and plan["computeType"] == "LOCAL" and plan["port"]
    assert plan["versions"] == [{"name": "blue", "traffic": 100.0, "default": True, "change": "new", "port": None}]
    text = run("endpoint", "deployment", "create", "-f", files / "blue.yml", "--dry-run")
    assert text.code == 0 and "would add deployment blue" in text.out and "nothing was built" in text.out
    assert f"router on port {plan['port']}" in text.out
    assert record_bytes(ws) == before
    assert running_under(Path(ws.path)) == processes and Model.list(ws) == []
