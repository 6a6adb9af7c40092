"""Deployment -> plan, createOptions -> docker run arguments, the edge CLI without a runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.edge.containers import run_kwargs
from packager.edge.plan import plan_from_manifest
from packager.errors import InvalidInputError
from tests.packager.image.support import edgepack
from tests.packager.iotedge.test_validate import manifest


def test_plan_orders_modules_and_reads_twins_routes_ttl():
    plan = plan_from_manifest(manifest())
    assert list(plan.modules) == ["scorer", "generator"]  # startupOrder 2, then the default (last)
    scorer = plan.modules["scorer"]
    assert scorer.env == {"EDGEPACK_IOTEDGE_INPUT": "in1"} and scorer.restart_policy == "always"
    assert plan.modules["generator"].restart_policy == "on-failure"
    assert plan.desired == {"scorer": {"max_batch_size": 32, "threshold": 0.5, "model_version": "1.0"}, "generator": {}}
    assert set(plan.routes) == {"toScorer", "upstream"} and plan.routes["upstream"].time_to_live_secs == 86400
    assert plan.ttl == 7200


def test_broken_manifest_is_refused_with_the_path():
    doc = manifest()
    doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["x"] = "FROM nowhere"
    with pytest.raises(InvalidInputError, match=r"routes\.x"):
        plan_from_manifest(doc)


def test_create_options_map_onto_docker_run():
    doc = manifest()
    options = {
        "Env": ["A=1", "B=2"],
        "Entrypoint": ["python3", "x.py"],
        "ExposedPorts": {"5001/tcp": {}},
        "HostConfig": {
            "Binds": ["/data:/data:ro"],
            "Memory": 268435456,
            "NanoCpus": 500000000,
            "PortBindings": {"5001/tcp": [{"HostPort": "5001"}]},
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "r"}],
            "Weird": 1,
        },
    }
    settings = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["scorer"]["settings"]
    settings["createOptions"] = json.dumps(options)
    module = plan_from_manifest(doc).modules["scorer"]
    kwargs, warnings = run_kwargs(module, "dev", "run1", {"B": "hub", "C": "3"}, ["/ca:/ca:ro"], {"EDGEPACK_PORT": "9"})
    assert kwargs["network_mode"] == "host" and kwargs["name"] == "edgepack-dev-scorer"
    assert kwargs["environment"] == {
        "EDGEPACK_PORT": "9",
        "A": "1",
        "B": "hub",
        "C": "3",
        "EDGEPACK_IOTEDGE_INPUT": "in1",
    }
    assert kwargs["entrypoint"] == ["python3", "x.py"] and kwargs["mem_limit"] == 268435456
    assert kwargs["nano_cpus"] == 500000000 and kwargs["devices"] == ["/dev/null:/dev/x:r"]
    assert kwargs["volumes"] == ["/data:/data:ro", "/ca:/ca:ro"]
    assert kwargs["labels"]["edgepack.edge"] == "dev" and kwargs["labels"]["edgepack.edge.module"] == "scorer"
    assert any("PortBindings ignored" in w for w in warnings) and any("ExposedPorts ignored" in w for w in warnings)
    assert any("HostConfig.Weird is not mapped" in w for w in warnings)


def test_cli_without_a_runtime(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_STATE_DIR", str(tmp_path / "state"))
    res = edgepack(tmp_path / "ws", "edge", "status", expect=1)
    assert "no local edge runtime" in res.stderr
    path = tmp_path / "d.json"
    path.write_text(json.dumps(manifest()))
    assert "no local edge runtime is running" in edgepack(tmp_path / "ws", "edge", "apply", str(path), expect=1).stderr
    path.write_text("{")
    assert "is not JSON" in edgepack(tmp_path / "ws", "edge", "run", str(path), expect=2).stderr
    assert "no $upstream messages" in edgepack(tmp_path / "ws", "edge", "messages", expect=1).stderr
