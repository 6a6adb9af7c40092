"""iotedgedev templates: ${MODULES.x}, ${MODULES.x.platform}, ${VAR}/$VAR from .env, errors naming the JSON path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from packager.errors import InvalidInputError
from packager.iotedge import create_options as co
from packager.iotedge.template import expand_template, load_dotenv, load_module_json
from tests.packager.iotedge.iotedgedev_project import SECRET, make_project
from tests.packager.iotedge.support import agent, assert_valid, edgepack, hub

ENV: dict[str, str] = {}  # not the process environment: the project's .env only


def test_iotedgedev_project_expands_without_edits(tmp_path: Path) -> None:
    project = make_project(tmp_path / "solution")
    used: dict[str, str] = {}
    doc = expand_template(project / "deployment.template.json", env=ENV, used=used)
    assert_valid(doc)
    assert "$schema-template" not in doc
    a = agent(doc)
    assert a["modules"]["SampleModule"]["settings"]["image"] == "myregistry.azurecr.io/samplemodule:0.0.1-amd64"
    assert a["modules"]["filter"]["settings"]["image"] == "myregistry.azurecr.io/filter:0.0.1-arm64v8"
    assert used == {
        "${MODULES.SampleModule}": "myregistry.azurecr.io/samplemodule:0.0.1-amd64",
        "${MODULES.filter.arm64v8}": "myregistry.azurecr.io/filter:0.0.1-arm64v8",
    }
    assert a["runtime"]["settings"]["registryCredentials"]["myregistry"] == {
        "username": "projuser",
        "password": SECRET,
        "address": "myregistry.azurecr.io",
    }
    assert a["modules"]["filter"]["env"] == {"LOG_LEVEL": {"value": "info"}}
    # createOptions objects became strings, chunked past 512 characters
    filter_settings = a["modules"]["filter"]["settings"]
    assert "createOptions01" in filter_settings
    assert co.from_settings(filter_settings) == {"HostConfig": {"Binds": ["/data:/data"] * 40}}
    assert a["systemModules"]["edgeAgent"]["settings"]["createOptions"] == "{}"
    assert "$upstream" in hub(doc)["routes"]["filterToUpstream"]  # a bare $name that is no variable stays
    assert doc["modulesContent"]["filter"]["properties.desired"] == {"TemperatureThreshold": 25}


def test_environment_wins_over_dotenv_and_images_can_be_given(tmp_path: Path) -> None:
    project = make_project(tmp_path / "solution")
    env = {"CONTAINER_REGISTRY_SERVER": "127.0.0.1:5000", "DEFAULT_PLATFORM": "arm64v8"}
    pinned = "127.0.0.1:5000/filter@sha256:" + "4" * 64
    doc = expand_template(project / "deployment.template.json", env=env, modules={"filter": {"arm64v8": pinned}})
    a = agent(doc)
    assert a["modules"]["SampleModule"]["settings"]["image"] == "127.0.0.1:5000/samplemodule:0.0.1-arm64v8"
    assert a["modules"]["filter"]["settings"]["image"] == pinned
    assert a["runtime"]["settings"]["registryCredentials"]["myregistry"]["address"] == "127.0.0.1:5000"
    doc = expand_template(
        project / "deployment.template.json", env=ENV, default_platform="amd64", modules={"SampleModule": "x/y:1"}
    )
    assert agent(doc)["modules"]["SampleModule"]["settings"]["image"] == "x/y:1"


def test_unexpanded_placeholder_names_it_and_its_json_path(tmp_path: Path) -> None:
    project = make_project(tmp_path / "solution")
    (project / ".env").write_text((project / ".env").read_text().replace("LOG_LEVEL=info  # comment\n", ""))
    with pytest.raises(InvalidInputError) as exc:
        expand_template(project / "deployment.template.json", env=ENV)
    message = str(exc.value)
    assert "${LOG_LEVEL}" in message
    assert "modulesContent.$edgeAgent.properties.desired.modules.filter.env.LOG_LEVEL.value" in message
    template = json.loads((project / "deployment.template.json").read_text())
    template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["SampleModule"]["settings"]["image"] = (
        "${MODULES.Missing}"
    )
    (project / "deployment.template.json").write_text(json.dumps(template))
    with pytest.raises(InvalidInputError, match=r"modules\.SampleModule\.settings\.image: \$\{MODULES\.Missing\}"):
        expand_template(project / "deployment.template.json", env={"LOG_LEVEL": "x"})
    with pytest.raises(InvalidInputError, match="has no arm32v7 image"):
        expand_template(
            project / "deployment.template.json",
            env={"LOG_LEVEL": "x"},
            modules={"Missing": {}},
            default_platform="arm32v7",
        )


def test_dotenv_and_module_json(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# c\nA=1\nexport B='two words'\nC=\"x # y\"\nD=v # note\n\n")
    assert load_dotenv(tmp_path / ".env") == {"A": "1", "B": "two words", "C": "x # y", "D": "v"}
    assert load_dotenv(tmp_path / "missing") == {}
    (tmp_path / "bad.env").write_text("not a line\n")
    with pytest.raises(InvalidInputError, match=r"bad\.env:1"):
        load_dotenv(tmp_path / "bad.env")
    project = make_project(tmp_path / "p")
    module = load_module_json(project / "modules" / "filter", {"CONTAINER_REGISTRY_SERVER": "reg:5000"})
    assert module.images() == {"amd64": "reg:5000/filter:0.0.1-amd64", "arm64v8": "reg:5000/filter:0.0.1-arm64v8"}
    with pytest.raises(InvalidInputError, match="CONTAINER_REGISTRY_SERVER"):
        load_module_json(project / "modules" / "filter", {})


def test_cli_gen_from_template_writes_0600_and_prints_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "solution")
    monkeypatch.delenv("CONTAINER_REGISTRY_PASSWORD", raising=False)
    out = tmp_path / "config" / "deployment.amd64.json"
    res = edgepack(
        "manifest", "gen", "-f", str(project / "deployment.template.json"), "--platform", "linux/amd64",
        "--image", "filter.arm64v8=127.0.0.1:5000/filter:9", "-o", str(out.parent), "--json",
    )  # fmt: skip
    written = json.loads(res.stdout)["manifests"][0]
    assert written["private"] is True and written["registries"] == ["myregistry.azurecr.io"]
    assert written["modules"]["filter"] == "127.0.0.1:5000/filter:9"
    assert SECRET not in res.stdout + res.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert_valid(json.loads(out.read_text()))
    edgepack("manifest", "validate", str(out))
    (project / "deployment.template.json").write_text('{"modulesContent": {"$edgeAgent": {"x": "${NOPE}"}}}')
    res = edgepack("manifest", "gen", "-f", str(project / "deployment.template.json"), "-o", str(out), expect=2)
    assert "modulesContent.$edgeAgent.x: unexpanded placeholder ${NOPE}" in res.stderr
    for flag in (["--route", "FROM /messages/* INTO $upstream"], ["--cpus", "2"], ["--no-credentials"]):
        res = edgepack(
            "manifest", "gen", "-f", str(project / "deployment.template.json"), *flag, "-o", str(out), expect=2
        )
        assert f"{flag[0]} does not apply to -f" in res.stderr
