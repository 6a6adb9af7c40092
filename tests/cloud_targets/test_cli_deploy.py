"""``edgepack deploy`` and ``edgepack service``: the Azure docs' local flow through the CLI (process mode),
``--dry-run`` for AKS and ACI, and bad configurations refused before anything is built."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import requests
import yaml

from cloud_targets import Webservice
from cloud_targets.targets.local import process
from packager import Workspace
from tests.cloud_targets.cli_support import Run
from tests.cloud_targets.local.support import SAMPLE, body, expected, register, write_app
from tests.support.workspaces import user_workspace

AKS_KEYS = {"primaryKey": "aks-primary-Zq8xW3vT5pLm9nR2", "secondaryKey": "aks-secondary-Hy4kD7fJ1sXc6bN0"}
AKS_YAML = f"""
computeType: aks
autoScaler:
  autoscaleEnabled: true
  minReplicas: 2
  maxReplicas: 6
  targetUtilization: 65
authEnabled: true
keys:
  primaryKey: {AKS_KEYS["primaryKey"]}
  secondaryKey: {AKS_KEYS["secondaryKey"]}
containerResourceRequirements:
  cpu: 0.5
  memoryInGB: 1.5
  cpuLimit: 1
  memoryInGBLimit: 2
scoringTimeoutMs: 5000
maxConcurrentRequestsPerContainer: 3
maxQueueWaitMs: 750
namespace: ml-prod
appInsightsEnabled: false
schemaVersion: legacy
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    yield from user_workspace(tmp_path, monkeypatch)


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def nothing_deployed(ws: Workspace) -> bool:
    services = ws.path / "services"
    return Webservice.list(ws) == [] and (not services.exists() or not any(services.iterdir()))


MODES = [pytest.param("process", id="process"), pytest.param("docker", id="docker", marks=pytest.mark.slow)]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Local target's mode; Docker needs the dev services' base image."""
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", request.param)
    if request.param == "docker":
        services = request.getfixturevalue("dev_services")
        monkeypatch.setenv("EDGEPACK_BASE_IMAGE", services["EDGEPACK_TEST_BASE_IMAGE"])
        monkeypatch.delenv("EDGEPACK_LOCAL_REGISTRY", raising=False)
    return request.param


def gone(handle: dict) -> bool:
    if handle["mode"] == "process":
        return process.start_time(handle["pid"]) is None
    import docker

    return all(c.id != handle["container_id"] for c in docker.from_env().containers.list(all=True))


def test_docs_flow_deploy_run_update_delete(ws: Workspace, mode: str, tmp_path: Path, run: Run) -> None:
    v1 = register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    dc = write(tmp_path / "deploymentconfig.json", {"computeType": "LOCAL", "authEnabled": True})
    input_file = write(tmp_path / "input.json", body())

    r = run("deploy", "-n", "digits-cli", "-m", "mlp:1", "--ic", ic, "--dc", dc, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["name"] == "digits-cli" and doc["computeType"] == "LOCAL" and doc["state"] == "Healthy"
    assert doc["scoringUri"].startswith("http://localhost:") and doc["scoringUri"].endswith("/score")
    assert doc["swaggerUri"].endswith("/swagger.json") and doc["models"] == ["mlp:1"]
    if mode == "process":  # the conda file's packages are not installed in process mode: said, not dropped
        assert "process mode runs with this machine's Python packages" in r.err

    r = run("service", "run", "digits-cli", "-f", input_file)
    assert r.code == 0, r.err
    np.testing.assert_allclose(np.array(r.json()["output"]), expected(v1), rtol=1e-5, atol=1e-6)
    assert requests.post(doc["scoringUri"], data=body(), timeout=30).status_code == 401  # run added the key

    # people's output: the state and both URIs
    r = run("service", "show", "digits-cli")
    assert r.code == 0 and "Healthy" in r.out and doc["scoringUri"] in r.out and doc["swaggerUri"] in r.out

    # a new model version: update and the new answers
    v2 = register(ws, tmp_path, seed=1)
    r = run("service", "update", "digits-cli", "-m", "mlp:2")
    assert r.code == 0, r.err
    assert "Healthy" in r.out and "mlp:2" in r.out
    r = run("service", "run", "digits-cli", "-d", json.dumps({"data": SAMPLE.tolist()}), "--json")
    np.testing.assert_allclose(np.array(r.json()["output"]), expected(v2), rtol=1e-5, atol=1e-6)

    r = run("service", "logs", "digits-cli", "-l", "50")
    assert r.code == 0 and "ready" in r.out

    handle = dict(Webservice(ws, "digits-cli")._record.target)
    assert handle["mode"] == mode and not gone(handle)
    r = run("service", "delete", "digits-cli", "-y")
    assert r.code == 0, r.err
    assert gone(handle)  # no process or container left behind
    assert run("service", "list", "--json").json() == []
    r = run("service", "show", "digits-cli")
    assert r.code == 1 and "digits-cli" in r.err and "edgepack service list" in r.err


def test_free_port_without_dc_flags_instead_of_ic_and_overwrite(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    write_app(tmp_path)
    flags = ("--es", "score.py", "--sd", "app", "--cf", "env.yml", "--rt", "python")
    r = run("deploy", "-n", "plain", "-m", "mlp", *flags)
    assert r.code == 0, r.err
    assert "service plain (LOCAL): Healthy" in r.out and "http://localhost:" in r.out
    assert "scoring URI" in r.out and "swagger URI" in r.out
    r = run("deploy", "-n", "plain", "-m", "mlp")
    assert r.code == 1 and "--overwrite" in r.err
    r = run("deploy", "-n", "plain", "-m", "mlp", "--overwrite", "--no-wait", "--json")
    assert r.code == 0, r.err
    assert r.json()["state"] in ("Transitioning", "Healthy")
    r = run("service", "list", "--compute-type", "local")
    assert r.code == 0 and "plain" in r.out and "LOCAL" in r.out
    assert run("service", "list", "--compute-type", "AKS", "--json").json() == []
    r = run("deploy", "-n", "twice", "-m", "mlp", "--ic", "inferenceconfig.json", "--es", "score.py")
    assert r.code == 2 and "--ic" in r.err and "--es" in r.err


def test_dry_run_aks_yaml_passes_the_schemas_and_holds_no_secret(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    dc = write(tmp_path / "deploymentconfig.yml", AKS_YAML)
    r = run("deploy", "-n", "digits-aks", "-m", "mlp:1", "--ic", ic, "--dc", dc, "--dry-run",
            "--image-registry", "myacr.azurecr.io/models", "--ct", "aks-prod")  # fmt: skip
    assert r.code == 0, r.err
    for key in AKS_KEYS.values():
        assert key not in r.out and key not in r.err
    docs = list(yaml.safe_load_all(r.out))
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"Namespace", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert set(by_kind["Secret"]["data"]) == {"EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY"}
    assert set(by_kind["Secret"]["data"].values()) == {""}  # redacted
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SCORING_TIMEOUT_MS"] == "5000" and env["EDGEPACK_MAX_CONCURRENT_REQUESTS"] == "3"
    assert env["EDGEPACK_MAX_QUEUE_WAIT_MS"] == "750"
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1536Mi"},
                                      "limits": {"cpu": "1", "memory": "2048Mi"}}  # fmt: skip
    assert container["image"] == "myacr.azurecr.io/models/digits-aks:dry-run"
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
    assert {d["metadata"].get("namespace", "ml-prod") for d in docs} == {"ml-prod"}
    assert "unknown key 'schemaVersion' ignored" in r.err  # v1 ignored it; said, not refused
    assert nothing_deployed(ws)

    r = run("deploy", "-n", "digits-aks", "-m", "mlp:1", "--ic", ic, "--dc", dc, "--dry-run", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["dryRun"] is True and [o["kind"] for o in out["objects"]][-1] == "HorizontalPodAutoscaler"
    assert "<registry>" in json.dumps(out["objects"]) and "no image registry" in r.err
    for key in AKS_KEYS.values():
        assert key not in r.out


def test_dry_run_token_auth_and_aci_body(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    token = write(tmp_path / "token.json", {"computeType": "AKS", "tokenAuthEnabled": True, "numReplicas": 2,
                                            "autoScaler": {"autoscaleEnabled": False}})  # fmt: skip
    r = run("deploy", "-n", "tok", "-m", "mlp", "--dc", token, "--dry-run")
    assert r.code == 0, r.err
    by_kind = {d["kind"]: d for d in yaml.safe_load_all(r.out)}
    assert set(by_kind["Secret"]["data"]) == {"EDGEPACK_TOKEN_SECRET"} and "HorizontalPodAutoscaler" not in by_kind
    assert by_kind["Deployment"]["spec"]["replicas"] == 2

    aci = write(tmp_path / "aci.json", {"computeType": "ACI", "authEnabled": True, "location": "westeurope",
                                        "containerResourceRequirements": {"cpu": 1, "memoryInGB": 2},
                                        "dnsNameLabel": "digits-demo",
                                        "keys": {"primaryKey": "aci-primary-Lk3Jd9Qw0Zx7Vb2N"}})  # fmt: skip
    r = run("deploy", "-n", "digits-aci", "-m", "mlp", "--dc", aci, "--dry-run", "--image-registry", "reg.io/m")
    assert r.code == 0, r.err
    assert "aci-primary-Lk3Jd9Qw0Zx7Vb2N" not in r.out
    group = r.json()
    assert group["location"] == "westeurope"
    props = group["properties"]
    assert props["ipAddress"]["dnsNameLabel"] == "digits-demo"
    container = props["containers"][0]["properties"]
    assert container["image"] == "reg.io/m/digits-aci:dry-run"
    assert container["resources"]["requests"] == {"cpu": 1.0, "memoryInGB": 2.0}
    secure = {e["name"]: e["secureValue"] for e in container["environmentVariables"] if "secureValue" in e}
    assert secure == {"EDGEPACK_PRIMARY_KEY": "", "EDGEPACK_SECONDARY_KEY": ""}
    assert nothing_deployed(ws)


def test_dry_run_local_prints_the_plan(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    dc = write(tmp_path / "dc.json", {"computeType": "LOCAL", "port": 0 + 18765, "sslEnabled": True})
    r = run("deploy", "-n", "planned", "-m", "mlp", "--ic", ic, "--dc", dc, "--dry-run")
    assert r.code == 0, r.err
    assert "would deploy planned (LOCAL, process mode) on http://localhost:18765/score" in r.out
    assert "nothing was built or started" in r.out
    assert "sslEnabled is not a setting of computeType LOCAL" in r.err
    r = run("deploy", "-n", "planned", "-m", "mlp", "--dry-run", "--json")
    plan = r.json()
    assert plan["dryRun"] is True and plan["mode"] == "process" and plan["port"] is None and plan["auth"] == "none"
    assert nothing_deployed(ws)


@pytest.mark.parametrize(
    ("name", "dc", "rule"),
    [
        ("digits", {"authEnabled": True}, "computeType is required"),
        ("digits", {"computeType": "AKS", "authEnabled": True, "tokenAuthEnabled": True}, "cannot both be true"),
        ("digits", {"computeType": "AKS", "autoScaler": {"minReplicas": 2}, "numReplicas": 3},
         "provided without enabling autoscaling"),
        ("digits", {"computeType": "ACI", "tokenAuthEnabled": True}, "only available on AKS"),
        ("Digits_Svc", {"computeType": "LOCAL"}, "between 3 and 32 characters"),
        ("ab", None, "start with a letter"),
    ],
)  # fmt: skip
def test_bad_configs_exit_2_with_v1_rule_and_deploy_nothing(
    ws: Workspace, tmp_path: Path, run: Run, name: str, dc: dict | None, rule: str
) -> None:
    register(ws, tmp_path, seed=0)
    args = ["deploy", "-n", name, "-m", "mlp"]
    if dc is not None:
        args += ["--dc", write(tmp_path / "dc.json", dc)]
    for extra in ([], ["--dry-run"]):
        r = run(*args, *extra)
        assert r.code == 2, r.err
        assert r.err.startswith("error:") and rule in r.err and "Traceback" not in r.err
        assert nothing_deployed(ws)


def test_usage_errors_and_iotedge_still_works(ws: Workspace, tmp_path: Path, run: Run) -> None:
    r = run("deploy")
    assert r.code == 2 and "-n NAME and -m MODEL" in r.err
    r = run("deploy", "-n", "only-name")
    assert r.code == 2 and "-m MODEL" in r.err
    r = run("deploy", "iotedge", "--help")
    assert r.code == 0 and "--device" in r.out and "--deployment-id" in r.out
    r = run("deploy", "-n", "digits", "iotedge", "--help")
    assert r.code == 2 and "-n" in r.err and "iotedge" in r.err
    manifest = write(tmp_path / "m.json", {"modulesContent": {}})
    r = run("deploy", "iotedge", "-f", manifest, "--device", "edge-1", "--dry-run")
    assert r.code in (0, 2) and "Traceback" not in r.err  # parsed by iotedge's own checks
    r = run("deploy", "-n", "digits", "-m", "nope:3")
    assert r.code == 1 and "nope" in r.err
    r = run("deploy", "-n", "digits", "-m", "mlp", "--dc", tmp_path / "missing.json")
    assert r.code == 2 and "missing.json" in r.err
    assert run("--help").out.count("service") >= 1


def test_init_failure_exits_1_with_the_log_lines(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path, init_extra="raise RuntimeError('model store unreachable: boom-42')")
    r = run("deploy", "-n", "broken", "-m", "mlp", "--ic", ic)
    assert r.code == 1
    assert "boom-42" in r.err and "last log lines" in r.err and "edgepack service logs broken" in r.err
    assert run("service", "list", "--json").json()[0]["state"] == "Failed"


def test_two_deploys_of_one_name_at_once(tmp_path: Path) -> None:
    """Two ``edgepack deploy`` processes for the same name: one deploys, the other is refused cleanly
    (exit 1, "already exists"); one record, one process, both keys working."""
    import os
    import subprocess
    import sys

    ws = Workspace.from_path(tmp_path / "ws", create=True)
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    dc = tmp_path / "dc.json"
    dc.write_text(json.dumps({"computeType": "LOCAL", "authEnabled": True}))
    env = {**os.environ, "EDGEPACK_WORKSPACE": str(ws.path), "EDGEPACK_LOCAL_MODE": "process",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    cmd = [sys.executable, "-c", "import sys; from packager.cli import main; main(sys.argv[1:])",
           "deploy", "-n", "racing", "-m", "mlp", "--ic", str(ic), "--dc", str(dc), "--json"]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    try:
        results = sorted((p.wait(120), *p.communicate()) for p in procs)
        (ok, out, _), (refused, _, err) = results
        assert (ok, refused) == (0, 1) and "already exists" in err, results
        services = Webservice.list(ws)
        assert [s.name for s in services] == ["racing"] and services[0].state == "Healthy"
        assert json.loads(out)["target"]["pid"] == services[0]._record.target["pid"]
        primary, secondary = services[0].get_keys()
        assert primary and secondary and services[0].run(body())["tag"] == "v1"
    finally:
        for svc in Webservice.list(ws):
            handle = dict(svc._record.target)
            svc.delete()
            assert process.start_time(handle["pid"]) is None
