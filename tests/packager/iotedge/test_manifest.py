"""Generated deployment manifests: structure, routes, digests, createOptions, per-platform, the CLI, secrets."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from packager.errors import InvalidInputError
from packager.iotedge import create_options as co
from packager.iotedge.manifest import (
    ModuleSpec,
    build_manifest,
    manifests_from_build,
    registry_credentials_for,
    scoring_module,
    write_manifest,
)
from tests.packager.iotedge.support import agent, assert_valid, edgepack, hub

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DI = "sha256:" + "3" * 64
IMAGE = f"127.0.0.1:5000/models/digits@{D1}"
SECRET = "s3cr3t-Pa55-w0rd"


def test_one_scoring_module() -> None:
    doc = build_manifest([scoring_module(IMAGE, threshold=0.8, model_version="3")])
    assert_valid(doc)
    a = agent(doc)
    assert a["schemaVersion"] == "1.1"
    assert a["runtime"] == {"type": "docker", "settings": {"minDockerVersion": "v1.25", "loggingOptions": ""}}
    assert a["systemModules"]["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    edge_hub = a["systemModules"]["edgeHub"]
    assert edge_hub["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.5"
    assert edge_hub["startupOrder"] == 0 and edge_hub["status"] == "running"
    ports = co.from_settings(edge_hub["settings"])["HostConfig"]["PortBindings"]
    assert set(ports) == {"443/tcp", "5671/tcp", "8883/tcp"}
    module = a["modules"]["scoring"]
    assert module == {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "startupOrder": 1,
        "imagePullPolicy": "on-create",
        "env": {"EDGEPACK_IOTEDGE": {"value": "true"}},
        "settings": {"image": IMAGE, "createOptions": "{}"},
    }
    assert hub(doc) == {
        "schemaVersion": "1.1",
        "routes": {"scoringToUpstream": "FROM /messages/modules/scoring/outputs/* INTO $upstream"},
        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
    }
    twin = doc["modulesContent"]["scoring"]["properties.desired"]
    assert twin == {"max_batch_size": 1, "drop_below_threshold": False, "threshold": 0.8, "model_version": "3"}


def test_three_modules_routes_as_string_and_object_and_options() -> None:
    modules = [
        scoring_module(IMAGE, name="scorer", max_batch_size=8, create_options=co.host_network()),
        ModuleSpec("camera", "127.0.0.1:5000/cam:1", env={"FPS": "5"}, startup_order=2, restart_policy="on-failure"),
        ModuleSpec("sink", f"127.0.0.1:5000/sink@{D2}", status="stopped", image_pull_policy="never", desired={"a": 1}),
    ]
    into = 'INTO BrokeredEndpoint("/modules/scorer/inputs/input1")'
    up = {"route": "FROM /messages/modules/scorer/outputs/output1 INTO $upstream", "priority": 0, "timeToLiveSecs": 6}
    routes = {"camToScorer": f"FROM /messages/modules/camera/outputs/frames {into}", "up": up}
    doc = build_manifest(modules, routes, runtime_version="1.4", store_and_forward_ttl=600)
    assert_valid(doc)
    a = agent(doc)
    assert list(a["modules"]) == ["scorer", "camera", "sink"]
    assert a["systemModules"]["edgeHub"]["settings"]["image"].endswith("azureiotedge-hub:1.4")
    assert a["modules"]["camera"]["env"] == {"FPS": {"value": "5"}} and a["modules"]["camera"]["startupOrder"] == 2
    assert a["modules"]["sink"]["status"] == "stopped" and a["modules"]["sink"]["imagePullPolicy"] == "never"
    assert co.from_settings(a["modules"]["scorer"]["settings"])["HostConfig"]["NetworkMode"] == "host"
    assert hub(doc)["routes"] == routes and hub(doc)["storeAndForwardConfiguration"] == {"timeToLiveSecs": 600}
    assert doc["modulesContent"]["scorer"]["properties.desired"]["max_batch_size"] == 8
    assert doc["modulesContent"]["sink"]["properties.desired"] == {"a": 1}
    assert "camera" not in doc["modulesContent"]  # no twin given: no section
    listed = build_manifest(modules[:1], ["FROM /messages/* INTO $upstream"])
    assert hub(listed)["routes"] == {"route": "FROM /messages/* INTO $upstream"}


def test_long_create_options_are_chunked_and_joined_back() -> None:
    options = co.merge(
        co.host_network(),
        co.port_bindings({5001: 5001, "8080/tcp": "18080"}),
        co.binds([f"/data/volume{i}:/mnt/volume{i}:ro" for i in range(20)]),
        co.devices(["/dev/xdma0", "/dev/dri:/dev/dri"]),
        co.limits(memory_mb=512, cpus=1.5),
    )
    doc = build_manifest([scoring_module(IMAGE, create_options=options)])
    assert_valid(doc)
    settings = agent(doc)["modules"]["scoring"]["settings"]
    chunks = [k for k in settings if k.startswith("createOptions")]
    assert chunks[:2] == ["createOptions", "createOptions01"] and len(chunks) >= 2
    assert all(len(settings[k]) <= 512 for k in chunks)
    assert co.from_settings(settings) == options
    assert co.from_settings(settings)["HostConfig"]["NanoCpus"] == 1_500_000_000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ModuleSpec("edgeHub", IMAGE), "module name"),
        (lambda: ModuleSpec("a.b", IMAGE), "module name"),
        (lambda: ModuleSpec("m", "not a ref"), "image reference"),
        (lambda: ModuleSpec("m", IMAGE, restart_policy="sometimes"), "restart policy"),
        (lambda: build_manifest([ModuleSpec("m", IMAGE), ModuleSpec("m", IMAGE)]), "given twice"),
        (lambda: build_manifest([ModuleSpec("m", IMAGE)], {"r": {"priority": 1}}), "route 'r'"),
        (lambda: build_manifest([ModuleSpec("m", IMAGE)], store_and_forward_ttl=-1), "time to live"),
    ],
)
def test_bad_input_is_refused(call: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()


def summary(reference: str | None = "127.0.0.1:5000/models/digits:v1@" + DI) -> dict[str, Any]:
    """The keys of a real builder.run summary (see test_manifest_build.py for a real one)."""
    doc: dict[str, Any] = {
        "index_digest": DI,
        "platforms": {"linux/amd64": {"digest": D1}, "linux/arm64": {"digest": D2}},
        "models": [{"name": "digits", "version": "1", "framework": "onnx", "files": 1}],
    }
    if reference:
        doc["reference"] = reference
    return doc


def test_per_platform_manifests_from_a_build_summary() -> None:
    found = manifests_from_build(summary(), module_options={"threshold": 0.5})
    assert set(found) == {"amd64", "arm64"}
    for key, digest in (("amd64", D1), ("arm64", D2)):
        assert_valid(found[key])
        assert agent(found[key])["modules"]["scoring"]["settings"]["image"] == f"127.0.0.1:5000/models/digits@{digest}"
        assert found[key]["modulesContent"]["scoring"]["properties.desired"]["model_version"] == "1"
    index = manifests_from_build(summary(), per_platform=False, name="digits")
    assert agent(index["index"])["modules"]["digits"]["settings"]["image"] == f"127.0.0.1:5000/models/digits@{DI}"
    only = manifests_from_build(summary(None), repository="127.0.0.1:5000/x/y", platforms=["linux/arm64"])
    assert list(only) == ["arm64"] and agent(only["arm64"])["modules"]["scoring"]["settings"]["image"].endswith(D2)
    with pytest.raises(InvalidInputError, match="not pushed"):
        manifests_from_build(summary(None))
    with pytest.raises(InvalidInputError, match="linux/arm/v7 was not built"):
        manifests_from_build(summary(), platforms=["linux/arm/v7"])


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "docker"
    folder.mkdir()
    auth = base64.b64encode(f"edge-user:{SECRET}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {"myreg.example.com": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


def test_registry_credentials_from_docker_login(docker_config: Path, tmp_path: Path) -> None:
    images = ["myreg.example.com/models/a:1", "127.0.0.1:5000/other:1"]
    creds = registry_credentials_for(images)
    assert creds == {"myreg.example.com": ("edge-user", SECRET)}
    doc = build_manifest([scoring_module(images[0])], registry_credentials=creds)
    assert_valid(doc)
    assert agent(doc)["runtime"]["settings"]["registryCredentials"] == {
        "myreg_example_com": {"username": "edge-user", "password": SECRET, "address": "myreg.example.com"}
    }
    path = write_manifest(tmp_path / "out" / "deployment.json", doc)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    plain = write_manifest(tmp_path / "plain.json", build_manifest([scoring_module(images[1])]))
    assert json.loads(plain.read_text())["modulesContent"]


def test_cli_gen_from_images_with_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    out = tmp_path / "deployment.json"
    into = 'INTO BrokeredEndpoint("/modules/scoring/inputs/input1")'
    route = f"in=FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) {into}"
    up = '{"route": "FROM /messages/modules/scoring/outputs/* INTO $upstream", "priority": 1}'
    res = edgepack(
        "manifest", "gen", "--module", f"scoring={IMAGE}", "--extra-module", "cam=127.0.0.1:5000/cam:1",
        "--route", route, "--route", up,
        "--threshold", "0.7", "--max-batch-size", "4", "--desired", "scoring=model_version=\"2\"",
        "--env", "cam=FPS=5", "--port", "scoring=5001:5001", "--device", "scoring=/dev/xdma0",
        "--memory", "cam=256", "--cpus", "scoring=2", "--host-network", "cam", "--runtime-version", "1.4",
        "-o", str(out), "--json",
    )  # fmt: skip
    written = json.loads(res.stdout)["manifests"]
    assert written == [
        {
            "platform": "manifest",
            "file": str(out),
            "modules": {"scoring": IMAGE, "cam": "127.0.0.1:5000/cam:1"},
            "registries": [],
            "private": False,
        }
    ]
    doc = json.loads(out.read_text())
    assert_valid(doc)
    a = agent(doc)
    scoring = co.from_settings(a["modules"]["scoring"]["settings"])
    assert scoring["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert scoring["HostConfig"]["Devices"][0]["PathOnHost"] == "/dev/xdma0"
    assert scoring["HostConfig"]["NanoCpus"] == 2_000_000_000
    cam = co.from_settings(a["modules"]["cam"]["settings"])
    assert cam["HostConfig"] == {"NetworkMode": "host", "Memory": 256 * 2**20}
    assert a["modules"]["cam"].get("env") == {"FPS": {"value": "5"}}
    assert a["modules"]["scoring"]["env"] == {"EDGEPACK_IOTEDGE": {"value": "true"}}
    assert doc["modulesContent"]["scoring"]["properties.desired"] == {
        "max_batch_size": 4, "drop_below_threshold": False, "threshold": 0.7, "model_version": "2"
    }  # fmt: skip
    assert "cam" not in doc["modulesContent"]
    assert set(hub(doc)["routes"]) == {"in", "route2"}
    assert hub(doc)["routes"]["route2"]["priority"] == 1


def test_cli_gen_maps_an_fpga_device_and_tells_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--fpga-device: HostConfig.Devices like --device, and EDGEPACK_FPGA_DEVICE (the path inside the
    container) for the FPGA runtime's vendor driver; valid against the schema."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    out = tmp_path / "deployment.json"
    edgepack(
        "manifest", "gen", "--module", f"scoring={IMAGE}", "--fpga-device", "/dev/xdma0",
        "--env", "EDGEPACK_FPGA_DRIVER=vendor.card:open_card", "-o", str(out),
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert_valid(doc)
    module = agent(doc)["modules"]["scoring"]
    devices = co.from_settings(module["settings"])["HostConfig"]["Devices"]
    assert devices == [{"PathOnHost": "/dev/xdma0", "PathInContainer": "/dev/xdma0", "CgroupPermissions": "rwm"}]
    assert module["env"]["EDGEPACK_FPGA_DEVICE"] == {"value": "/dev/xdma0"}
    assert module["env"]["EDGEPACK_FPGA_DRIVER"] == {"value": "vendor.card:open_card"}
    edgepack("manifest", "gen", "--module", f"scoring={IMAGE}", "--extra-module", "cam=127.0.0.1:5000/cam:1",
             "--fpga-device", "scoring=/dev/xdma1:/dev/fpga0", "-o", str(out))  # fmt: skip
    module = agent(json.loads(out.read_text()))["modules"]["scoring"]
    assert co.from_settings(module["settings"])["HostConfig"]["Devices"][0]["PathInContainer"] == "/dev/fpga0"
    assert module["env"]["EDGEPACK_FPGA_DEVICE"] == {"value": "/dev/fpga0"}
    res = edgepack(
        "manifest", "gen", "--module", f"scoring={IMAGE}", "--fpga-device", "/tmp/x", "-o", str(out), expect=2
    )
    assert "/dev/" in res.stderr


def test_cli_gen_from_build_json_writes_one_file_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    build = tmp_path / "build.json"
    build.write_text(json.dumps(summary()))
    edgepack("manifest", "gen", "--from-build", str(build), "-o", str(tmp_path / "config"))
    for arch, digest in (("amd64", D1), ("arm64", D2)):
        doc = json.loads((tmp_path / "config" / f"deployment.{arch}.json").read_text())
        assert_valid(doc)
        assert agent(doc)["modules"]["scoring"]["settings"]["image"].endswith(digest)
    edgepack("manifest", "gen", "--from-build", str(build), "--index", "-o", str(tmp_path / "index.json"))
    index = json.loads((tmp_path / "index.json").read_text())
    assert agent(index)["modules"]["scoring"]["settings"]["image"].endswith(DI)
    res = edgepack("manifest", "gen", "--from-build", str(build), "-o", str(tmp_path / "one.json"), expect=2)
    assert "2 manifests" in res.stderr
    edgepack("manifest", "gen", "--from-build", str(build), "--platform", "linux/arm64", "-o", str(tmp_path / "a.json"))
    assert agent(json.loads((tmp_path / "a.json").read_text()))["modules"]["scoring"]["settings"]["image"].endswith(D2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one of"),
        (["--module", "scoring"], "NAME=IMAGE"),
        (["--module", "a=x:1", "--module", "b=y:1", "--port", "1:1"], "say which module"),
        (["--module", "a=x:1", "--route", "FROM nowhere"], "not valid"),
        (["--module", "a=x:1", "--device", "/tmp/x"], "/dev/"),
        (["--module", "a=x:1", "--host-network", "b"], "no such module"),
    ],
)
def test_cli_gen_bad_input_exits_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "d.json"
    res = edgepack("manifest", "gen", *args, "-o", str(out), expect=2)
    assert message in res.stderr and res.stderr.startswith("error:")
    assert not out.exists()


def test_secrets_never_printed_or_logged(
    docker_config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "d.json"
    results = [
        edgepack("manifest", "gen", "--module", "scoring=myreg.example.com/m:1", "-o", str(out)),
        edgepack("manifest", "gen", "--module", "scoring=myreg.example.com/m:1", "-o", str(out), "--json"),
        edgepack("--debug", "manifest", "gen", "--module", "scoring=myreg.example.com/m:1", "-o", str(out)),
        edgepack("manifest", "validate", str(out)),
    ]
    captured = capfd.readouterr()
    shown = "".join(r.stdout + r.stderr for r in results) + captured.out + captured.err + caplog.text
    assert SECRET not in shown and base64.b64encode(SECRET.encode()).decode() not in shown
    assert "myreg.example.com" in results[1].stdout and "0600" in results[0].stdout
    assert SECRET in out.read_text()  # the edge agent needs it, so it is in the file, readable by its owner only
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "edge-user" not in shown  # not even the user name is shown
