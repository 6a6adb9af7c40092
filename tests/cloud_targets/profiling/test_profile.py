"""``Model.profile`` / ``edgepack profile`` on the reference MLP, for real: process mode (cgroup or affinity)
and (slow) Docker with --cpus; the figures are measurements, so comparisons allow a margin."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from cloud_targets import Model
from cloud_targets.profiling import SCHEMA, limits
from cloud_targets.profiling.recommend import memory_gb, recommend
from cloud_targets.profiling.run import SettingResult
from packager import Workspace
from packager.errors import EdgepackError, InvalidInputError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model as RegistryModel
from tests.cloud_targets.cli_support import Run, runner
from tests.cloud_targets.local.support import write_app

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "bench" / "make_model.py"
PERCENTILE_KEYS = ["p50", "p90", "p95", "p99", "p99.9"]


def _make_model(path: Path) -> None:
    if SHARED.is_file():  # the reference model of the benchmarks
        subprocess.run([sys.executable, str(SHARED), str(path)], check=True, capture_output=True)
        return
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims, inits, nodes, prev = [64, 256, 256, 10], [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits += [numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32) * 0.1, f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]  # fmt: skip
        out = "output" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if out == "output" else f"g{i}"]))
        if out != "output":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])]
    graph = helper.make_graph(nodes, "mlp", inputs, outputs, inits)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Workspace, RegistryModel, InferenceConfig, Path]]:
    ws = Workspace.from_path(tmp_path / "ws")
    onnx_path = tmp_path / "mlp" / "mlp.onnx"
    onnx_path.parent.mkdir()
    _make_model(onnx_path)
    model = RegistryModel.register(ws, model_path=str(onnx_path), model_name="mlp")
    ic = write_app(tmp_path)
    rows = np.random.default_rng(3).standard_normal((4, 1, 64)).round(4).tolist()
    data = tmp_path / "samples.json"
    data.write_text(json.dumps([json.dumps({"data": r}) for r in rows]))  # v1's dataset: JSON strings
    yield ws, model, InferenceConfig.load(str(ic)), data
    _assert_clean()


def _our_cgroups() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").rglob("edgepack-profile-*") if p.is_dir()]


def _assert_clean() -> None:
    assert _our_cgroups() == []
    from cloud_targets.targets.local.docker_mode import engine

    client = engine()
    if client is not None:
        assert client.containers.list(all=True, filters={"label": "edgepack.profile"}) == []


def _check(doc: dict, cpus: list[float]) -> None:
    jsonschema.validate(doc, SCHEMA)
    rows = {r["cpu"]: r for r in doc["settings"]}
    assert sorted(rows) == cpus
    for row in rows.values():
        values = [row["latencyMs"][k] for k in PERCENTILE_KEYS]
        assert values == sorted(values) and values[0] > 0
        assert row["successRate"] == 1.0 and row["errors"] == {}
        assert row["requests"] > 50 and row["peakMemoryBytes"] > 10 * 2**20
        assert row["workers"] == limits.workers_for(row["cpu"])
    small, large = rows[cpus[0]], rows[cpus[1]]
    assert large["requestsPerSecond"] >= 0.9 * small["requestsPerSecond"]  # more CPU, not less throughput
    rec = doc["recommendation"]
    assert rec["cpu"] in cpus and rec["memoryInGB"] >= 0.1
    assert doc["deploymentConfig"] == {
        "containerResourceRequirements": {"cpu": rec["cpu"], "memoryInGB": rec["memoryInGB"]}
    }
    assert doc["loadGenerator"]["maxRequestsPerSecond"] > 0


@pytest.mark.slow  # a measurement: run where the machine is quiet (CI), not in the parallel quick loop
def test_process_mode_two_settings(app: tuple) -> None:
    ws, model, ic, data = app
    result = Model.profile(ws, "mlp-prof", [model], ic, json.loads(data.read_text()), cpu=(0.5, 1), duration_s=3,
                           mode="process")  # fmt: skip
    doc = result.get_details()
    _check(doc, [0.5, 1.0])
    assert result.recommended_cpu == doc["recommendation"]["cpu"]
    assert result.requests_per_second > 0 and result.latency_percentile_99 >= result.latency_percentile_50
    result.wait_for_completion()
    assert json.loads((Path(ws.path) / "profiles" / "mlp-prof.json").read_text()) == doc
    if limits.cgroups_writable():
        assert {r["limitMethod"] for r in doc["settings"]} <= {"cgroup v1", "cgroup v2"}


@pytest.mark.slow
def test_docker_mode_two_settings(app: tuple, dev_services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud_targets.targets.local.docker_mode import engine

    if engine() is None:
        pytest.fail("no Docker engine: run scripts/dev-services.sh")
    monkeypatch.setenv("EDGEPACK_BASE_IMAGE", dev_services["EDGEPACK_TEST_BASE_IMAGE"])
    monkeypatch.delenv("EDGEPACK_LOCAL_REGISTRY", raising=False)
    ws, model, ic, data = app
    result = Model.profile(ws, "mlp-docker", [model], ic, json.loads(data.read_text()), cpu=(0.5, 1), duration_s=3,
                           mode="docker", latency_target_ms=1000)  # fmt: skip
    doc = result.get_details()
    _check(doc, [0.5, 1.0])
    assert {r["limitMethod"] for r in doc["settings"]} == {"docker"}
    assert doc["recommendation"]["cpu"] == 0.5  # a loose target: the smallest setting meets it


def test_cli_json_and_table(app: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    ws, _model, _ic, data = app
    run: Run = runner(capsys)
    ic = Path(ws.path).parent / "inferenceconfig.json"
    res = run("-w", ws.path, "profile", "-m", "mlp:1", "--ic", ic, "--input-data", data, "--cpu", "0.5,1",
              "--duration", "2s", "--mode", "process", "--latency-target-ms", "1000", "--json")  # fmt: skip
    assert res.code == 0, res.err
    _check(res.json(), [0.5, 1.0])
    res = run("-w", ws.path, "profile", "-m", "mlp", "--ic", ic, "--input-data", data, "--cpu", "1",
              "--duration", "1s", "--mode", "process")  # fmt: skip
    assert res.code == 0, res.err
    assert "req/s" in res.out and "containerResourceRequirements" in res.out and "recommended: cpu 1" in res.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "nosuch"], "nosuch"),
        (["--cpu", "0"], "positive number"),
        (["--cpu", "-1,1"], "positive number"),
        (["--cpu", "64"], "this machine has"),
        (["--cpu", "a"], "--cpu"),
        (["--duration", "soon"], "duration 'soon'"),
        (["--duration", "0.2s"], "at least 1 s"),
        (["--input-data", "EMPTY"], "empty"),
        (["--input-data", "MISSING"], "no such file"),
    ],
)
def test_cli_bad_input(app: tuple, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    ws, _model, _ic, data = app
    empty = data.parent / "empty.json"
    empty.write_text("[]")
    args = [str(empty) if a == "EMPTY" else str(data.parent / "missing.json") if a == "MISSING" else a for a in args]
    flags = {"-m": "mlp", "--input-data": str(data), "--cpu": "1", "--duration": "1s", "--mode": "process"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        flags[flag] = value
    ic = Path(ws.path).parent / "inferenceconfig.json"
    res = runner(capsys)("-w", ws.path, "profile", "--ic", ic, *[x for kv in flags.items() for x in kv])
    assert res.code != 0
    assert message in res.err, res.err
    assert not (Path(ws.path) / "profiles" / "mlp.json").exists()


def test_api_bad_input(app: tuple) -> None:
    ws, model, ic, _data = app
    with pytest.raises(InvalidInputError, match="empty"):
        Model.profile(ws, "p", [model], ic, [], cpu=(1,), duration_s=1, mode="process")
    with pytest.raises(InvalidInputError, match="not a JSON request body"):
        Model.profile(ws, "p", [model], ic, ["{nope"], cpu=(1,), duration_s=1, mode="process")
    with pytest.raises(InvalidInputError, match="positive"):
        Model.profile(ws, "p", [model], ic, [{"data": [[0.0] * 64]}], cpu=(0,), duration_s=1, mode="process")
    with pytest.raises(EdgepackError):
        Model.profile(ws, "p", ["nosuch"], ic, [{"data": [[0.0] * 64]}], cpu=(1,), duration_s=1, mode="process")
    with pytest.raises(InvalidInputError, match="profile name"):
        Model.profile(ws, "Bad Name", [model], ic, [{"data": []}], cpu=(1,), duration_s=1, mode="process")


def test_affinity_refuses_fractional_cpu() -> None:
    with pytest.raises(InvalidInputError, match="whole cores"):
        limits.affinity_cores(0.5)
    assert limits.affinity_cores(1) == sorted(limits.os.sched_getaffinity(0))[:1]


def test_recommendation_rules() -> None:
    def row(cpu: float, rps: float, p99: float, success: float = 1.0) -> SettingResult:
        r = SettingResult(cpu, None, 1, 2, "test", 1.0, requests_per_second=rps, success_rate=success)
        r.latency_ms = {"p99": p99}
        r.peak_memory_bytes = 300 * 2**20
        return r

    rows = [row(0.5, 100, 50), row(1, 195, 20), row(2, 200, 10, success=0.99)]
    assert recommend(rows).cpu == 1  # within 10 % of the best successful throughput
    assert recommend(rows, latency_target_ms=30).cpu == 1
    assert recommend(rows, latency_target_ms=60).cpu == 0.5
    assert recommend(rows, latency_target_ms=15).cpu is None  # cpu 2 fails the success rate
    assert memory_gb(300 * 2**20) == 0.5  # 300 MiB x 1.5 = 0.44 GiB, rounded up
    assert memory_gb(None) is None
