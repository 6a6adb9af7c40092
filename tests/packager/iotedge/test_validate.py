"""Deployment manifests validated offline: the published schema, then routes, names, images,
createOptions, env, twin limits and placeholders; layered deployments; the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from packager.cli import main
from packager.iotedge.validate import (
    MAX_FILE_BYTES,
    Problem,
    is_layered,
    load_schema,
    validate_file,
    validate_manifest,
    validate_text,
)

ROOT = Path(__file__).resolve().parents[3]
AGENT = "modulesContent.$edgeAgent.properties.desired"
HUB = "modulesContent.$edgeHub.properties.desired"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def manifest() -> dict[str, Any]:
    """A valid hand-written deployment: one scoring module and a generator, routes with WHERE."""
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {
                        "type": "docker",
                        "settings": {
                            "minDockerVersion": "v1.25",
                            "registryCredentials": {
                                "local": {"username": "u", "password": "p", "address": "127.0.0.1:5000"}
                            },
                        },
                    },
                    "systemModules": {
                        "edgeAgent": {
                            "type": "docker",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"},
                        },
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {
                                "image": "mcr.microsoft.com/azureiotedge-hub:1.5",
                                "createOptions": json.dumps(
                                    {"HostConfig": {"PortBindings": {"8883/tcp": [{"HostPort": "8883"}]}}}
                                ),
                            },
                        },
                    },
                    "modules": {
                        "scorer": {
                            "version": "1.0",
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "startupOrder": 2,
                            "env": {"EDGEPACK_IOTEDGE_INPUT": {"value": "in1"}},
                            "settings": {
                                "image": "127.0.0.1:5000/models/iris:1.0",
                                "createOptions": json.dumps({"HostConfig": {"NetworkMode": "host"}}),
                            },
                        },
                        "generator": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "on-failure",
                            "settings": {"image": f"127.0.0.1:5000/tools/generator@{DIGEST}"},
                        },
                    },
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {
                        "toScorer": "FROM /messages/modules/generator/outputs/samples WHERE $body.temperature > 20 "
                        "AND kind = 'sample' INTO BrokeredEndpoint(\"/modules/scorer/inputs/in1\")",
                        "upstream": {
                            "route": "FROM /messages/modules/scorer/outputs/* WHERE NOT IS_DEFINED(debug) "
                            "INTO $upstream",
                            "priority": 0,
                            "timeToLiveSecs": 86400,
                        },
                    },
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
            "scorer": {"properties.desired": {"max_batch_size": 32, "threshold": 0.5, "model_version": "1.0"}},
        }
    }


def layered() -> dict[str, Any]:
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired.modules.scorer": {
                    "type": "docker",
                    "status": "running",
                    "restartPolicy": "always",
                    "settings": {"image": "127.0.0.1:5000/models/iris:1.0", "createOptions": "{}"},
                },
                "properties.desired.runtime.settings.registryCredentials.local": {
                    "username": "u",
                    "password": "p",
                    "address": "127.0.0.1:5000",
                },
            },
            "$edgeHub": {
                "properties.desired.routes.scorerToUpstream": "FROM /messages/modules/scorer/* INTO $upstream",
                "properties.desired.routes.fromBase": {
                    "route": 'FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/scorer/inputs/in1")',
                    "priority": 1,
                },
            },
            "scorer": {"properties.desired.threshold": 0.7, "properties.desired.tuning": {"max_batch_size": 8}},
        }
    }


def _modules(doc: dict) -> dict:
    return doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]


def _routes(doc: dict) -> dict:
    return doc["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]


def _set(**settings: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        target = _modules(doc)["scorer"]["settings"]
        for key in [k for k in target if k.startswith("createOptions")]:
            del target[key]
        target.update(settings)

    return mutate


def _big_options() -> dict[str, str]:
    text = json.dumps({"Env": ["X=" + "a" * 4200]})
    return {"createOptions" + (f"{i:02d}" if i else ""): text[i * 512 : (i + 1) * 512] for i in range(9)}


def _deep(levels: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(levels):
        node = {"n": node}
    return node


def test_valid_manifest_has_no_problems():
    assert validate_manifest(manifest()) == []
    assert not is_layered(manifest())


def test_schema_is_package_data_and_draft4():
    from jsonschema import Draft4Validator

    schema = load_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    Draft4Validator.check_schema(schema)
    folder = resources.files("packager.iotedge").joinpath("schemas")
    assert "Apache" in folder.joinpath("NOTICE").read_text()
    assert folder.joinpath("azure-iot-edge-deployment-2.0.json").is_file()


def _route(name: str, text: str) -> Callable[[dict], None]:
    return lambda doc: _routes(doc).__setitem__(name, text)


CASES: list[tuple[str, Callable[[dict], None], str, str]] = [
    (
        "missing schemaVersion",
        lambda d: d["modulesContent"]["$edgeAgent"]["properties.desired"].pop("schemaVersion"),
        AGENT,
        "missing required property 'schemaVersion': add it",
    ),
    (
        "bad restart policy",
        lambda d: _modules(d)["scorer"].__setitem__("restartPolicy", "sometimes"),
        f"{AGENT}.modules.scorer.restartPolicy",
        'use one of "never", "on-failure", "on-unhealthy", "always"',
    ),
    (
        "unknown property",
        lambda d: _modules(d)["scorer"].__setitem__("restart", "always"),
        f"{AGENT}.modules.scorer",
        "unexpected property 'restart': remove it or fix its spelling",
    ),
    (
        "route not a string",
        _route("x", 5),  # type: ignore[arg-type]
        f"{HUB}.routes.x",
        "a route is a string",
    ),
    (
        "bad route syntax",
        _route("x", "FROM /messages/* WHERE a = INTO $upstream"),
        f"{HUB}.routes.x",
        "route does not parse: at character 28: expected an operand",
    ),
    (
        "bad route syntax in the object form",
        lambda d: _routes(d)["upstream"].__setitem__("route", "FROM /messages/modules INTO $upstream"),
        f"{HUB}.routes.upstream.route",
        "route does not parse: at character 6: expected a source",
    ),
    (
        "route to a missing module",
        _route("x", 'FROM /messages/* INTO BrokeredEndpoint("/modules/scorer2/inputs/in1")'),
        f"{HUB}.routes.x",
        "route 'x' sends to module 'scorer2', which is not in $edgeAgent modules (deployed: generator, scorer): "
        "add the module or fix the route",
    ),
    (
        "route from a missing module",
        _route("x", "FROM /messages/modules/sensor/outputs/* INTO $upstream"),
        f"{HUB}.routes.x",
        "route 'x' reads from module 'sensor'",
    ),
    (
        "route priority with schemaVersion 1.0",
        lambda d: d["modulesContent"]["$edgeHub"]["properties.desired"].__setitem__("schemaVersion", "1.0"),
        f"{HUB}.routes.upstream",
        'need $edgeHub schemaVersion "1.1"',
    ),
    (
        "unexpanded placeholder in an image",
        lambda d: _modules(d)["scorer"]["settings"].__setitem__("image", "${ACR_ADDRESS}/models/iris:1.0"),
        f"{AGENT}.modules.scorer.settings.image",
        "unexpanded placeholder ${ACR_ADDRESS}: set ACR_ADDRESS",
    ),
    (
        "unexpanded placeholder in the twin",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("model_version", "${VERSION}"),
        "modulesContent.scorer.properties.desired.model_version",
        "unexpanded placeholder ${VERSION}",
    ),
    (
        "createOptions over 8 chunks",
        _set(**_big_options()),
        f"{AGENT}.modules.scorer.settings",
        "createOptions08 is not a createOptions chunk",
    ),
    (
        "createOptions chunk too long",
        _set(createOptions=json.dumps({"Env": ["X=" + "a" * 600]})),
        f"{AGENT}.modules.scorer.settings.createOptions",
        "split it into 512-character chunks",
    ),
    (
        "createOptions bad JSON",
        _set(createOptions='{"HostConfig": '),
        f"{AGENT}.modules.scorer.settings.createOptions",
        "not valid JSON",
    ),
    (
        "createOptions not an object",
        _set(createOptions="[1]"),
        f"{AGENT}.modules.scorer.settings.createOptions",
        "must be a JSON object",
    ),
    (
        "createOptions chunk gap",
        _set(createOptions='{"a":', createOptions02="1}"),
        f"{AGENT}.modules.scorer.settings",
        "createOptions02 without createOptions01: chunks must follow each other",
    ),
    (
        "twin too large",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].update({f"k{i}": "v" * 4000 for i in range(9)}),
        "modulesContent.scorer.properties.desired",
        "a module twin allows 32768",
    ),
    (
        "twin string too long",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("labels", "x" * 5000),
        "modulesContent.scorer.properties.desired.labels",
        "twin values are at most 4096",
    ),
    (
        "twin too deep",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("deep", _deep(11)),
        "modulesContent.scorer.properties.desired.deep" + ".n" * 10,
        "IoT Hub allows 10",
    ),
    (
        "twin key with a dot",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("a.b", 1),
        "modulesContent.scorer.properties.desired.a.b",
        "twin property names cannot hold '.'",
    ),
    (
        "twin key with a $",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("$x", 1),
        "modulesContent.scorer.properties.desired.$x",
        "twin property names cannot hold '$'",
    ),
    (
        "twin key too long",
        lambda d: d["modulesContent"]["scorer"]["properties.desired"].__setitem__("k" * 1025, 1),
        "modulesContent.scorer.properties.desired." + "k" * 1025,
        "twin property name is 1025 bytes",
    ),
    (
        "twin for a module that is not deployed",
        lambda d: d["modulesContent"].__setitem__("ghost", {"properties.desired": {}}),
        "modulesContent.ghost",
        "not in $edgeAgent modules",
    ),
    (
        "bad module name: space",
        lambda d: _modules(d).__setitem__("my scorer", _modules(d)["scorer"]),
        f"{AGENT}.modules.my scorer",
        "IoT Hub module ids allow ASCII letters",
    ),
    (
        "bad module name: schema pattern",
        lambda d: _modules(d).__setitem__("my.scorer", _modules(d)["scorer"]),
        f"{AGENT}.modules.my.scorer",
        "deployment manifests allow only letters, digits, '-' and '_'",
    ),
    (
        "bad module name: too long",
        lambda d: _modules(d).__setitem__("m" * 129, _modules(d)["scorer"]),
        f"{AGENT}.modules." + "m" * 129,
        "IoT Hub module ids have at most 128",
    ),
    (
        "bad module name: container name",
        lambda d: _modules(d).__setitem__("_x", _modules(d)["scorer"]),
        f"{AGENT}.modules._x",
        "container names start with a letter or digit",
    ),
    (
        "bad module name: reserved",
        lambda d: _modules(d).__setitem__("edgeHub", _modules(d)["scorer"]),
        f"{AGENT}.modules.edgeHub",
        "reserved for the IoT Edge runtime",
    ),
    (
        "bad image reference",
        lambda d: _modules(d)["generator"]["settings"].__setitem__("image", "127.0.0.1:5000/Tools/gen:1"),
        f"{AGENT}.modules.generator.settings.image",
        "not a valid image reference",
    ),
    (
        "bad image digest",
        lambda d: _modules(d)["generator"]["settings"].__setitem__("image", "127.0.0.1:5000/tools/gen@sha256:12"),
        f"{AGENT}.modules.generator.settings.image",
        "not a valid image reference",
    ),
    (
        "env value not a string",
        lambda d: _modules(d)["scorer"]["env"].__setitem__("BATCH", {"value": 8}),
        f"{AGENT}.modules.scorer.env.BATCH.value",
        'environment values are strings: write "8" instead of 8',
    ),
    (
        "startupOrder with schemaVersion 1.0",
        lambda d: d["modulesContent"]["$edgeAgent"]["properties.desired"].__setitem__("schemaVersion", "1.0"),
        f"{AGENT}.modules.scorer.startupOrder",
        "startupOrder needs $edgeAgent schemaVersion",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_manifests_name_path_and_fix(mutate, path, message):
    doc = manifest()
    mutate(doc)
    problems = validate_manifest(doc)
    assert any(p.path == path and message in p.message for p in problems), "\n".join(map(str, problems))


def test_bad_module_name_reported_once():
    doc = manifest()
    _modules(doc)["my scorer"] = _modules(doc)["scorer"]
    problems = [p for p in validate_manifest(doc) if p.path == f"{AGENT}.modules.my scorer"]
    assert len(problems) == 1, problems


def test_placeholder_in_route_is_not_a_parse_error():
    doc = manifest()
    _routes(doc)["x"] = "FROM /messages/modules/${GEN}/* INTO $upstream"
    problems = validate_manifest(doc)
    assert [str(p) for p in problems] == [
        f"{HUB}.routes.x: unexpanded placeholder ${{GEN}}: set GEN (environment or .env) and generate the "
        "manifest again, or write the value"
    ]


def test_not_an_object():
    assert validate_manifest([]) == [Problem("", "a deployment manifest is a JSON object, not array")]


def test_layered_valid():
    doc = layered()
    assert is_layered(doc)
    assert validate_manifest(doc) == []


LAYERED_CASES: list[tuple[str, Callable[[dict], None], str, str]] = [
    (
        "system modules belong to the base",
        lambda d: d["modulesContent"]["$edgeAgent"].__setitem__("properties.desired.systemModules.edgeHub", {}),
        "modulesContent.$edgeAgent.properties.desired.systemModules.edgeHub",
        "runtime and systemModules belong to the base deployment",
    ),
    (
        "module schema",
        lambda d: d["modulesContent"]["$edgeAgent"]["properties.desired.modules.scorer"].pop("status"),
        "modulesContent.$edgeAgent.properties.desired.modules.scorer",
        "missing required property 'status'",
    ),
    (
        "module image",
        lambda d: d["modulesContent"]["$edgeAgent"]["properties.desired.modules.scorer"]["settings"].__setitem__(
            "image", "bad image"
        ),
        "modulesContent.$edgeAgent.properties.desired.modules.scorer.settings.image",
        "not a valid image reference",
    ),
    (
        "module name",
        lambda d: d["modulesContent"]["$edgeAgent"].__setitem__(
            "properties.desired.modules.a", d["modulesContent"]["$edgeAgent"]["properties.desired.modules.scorer"]
        ),
        "modulesContent.$edgeAgent.properties.desired.modules.a",
        "at least 2 characters",
    ),
    (
        "route syntax",
        lambda d: d["modulesContent"]["$edgeHub"].__setitem__("properties.desired.routes.r", "FROM /* INTO nowhere"),
        "modulesContent.$edgeHub.properties.desired.routes.r",
        "route does not parse",
    ),
    (
        "route priority",
        lambda d: d["modulesContent"]["$edgeHub"]["properties.desired.routes.fromBase"].__setitem__("priority", 12),
        "modulesContent.$edgeHub.properties.desired.routes.fromBase.priority",
        "out of range: use 9 or less",
    ),
    (
        "hub content",
        lambda d: d["modulesContent"]["$edgeHub"].__setitem__("properties.desired.schemaVersion", "1.1"),
        "modulesContent.$edgeHub.properties.desired.schemaVersion",
        "only properties.desired.routes.<name>",
    ),
    (
        "module twin key",
        lambda d: d["modulesContent"]["scorer"].__setitem__("properties.desired.bad key", 1),
        "modulesContent.scorer.properties.desired.bad key",
        "twin property name 'bad key' is not valid",
    ),
    (
        "module twin not desired",
        lambda d: d["modulesContent"]["scorer"].__setitem__("tags", {}),
        "modulesContent.scorer.tags",
        "module twin content is properties.desired",
    ),
    (
        "placeholder",
        lambda d: d["modulesContent"]["scorer"].__setitem__("properties.desired.url", "${URL}"),
        "modulesContent.scorer.properties.desired.url",
        "unexpanded placeholder ${URL}",
    ),
    (
        "twin too deep",
        lambda d: d["modulesContent"]["scorer"].__setitem__("properties.desired.deep", _deep(11)),
        "modulesContent.scorer.properties.desired.deep" + ".n" * 10,
        "IoT Hub allows 10",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"), [c[1:] for c in LAYERED_CASES], ids=[c[0] for c in LAYERED_CASES]
)
def test_layered_broken(mutate, path, message):
    doc = layered()
    mutate(doc)
    assert is_layered(doc)
    problems = validate_manifest(doc)
    assert any(p.path == path and message in p.message for p in problems), "\n".join(map(str, problems))


def test_layered_routes_may_name_base_modules():
    doc = layered()
    doc["modulesContent"]["$edgeHub"]["properties.desired.routes.x"] = (
        'FROM /messages/modules/elsewhere/* INTO BrokeredEndpoint("/modules/other/inputs/in")'
    )
    assert validate_manifest(doc) == []


def test_schema_refuses_layered_shape_when_not_detected():
    """A full deployment ($edgeAgent properties.desired) with a dotted key is a schema error, not layered."""
    doc = manifest()
    doc["modulesContent"]["$edgeHub"]["properties.desired.routes.x"] = "FROM /* INTO $upstream"
    assert not is_layered(doc)
    problems = validate_manifest(doc)
    assert any(p.path == "modulesContent.$edgeHub" and "unexpected property" in p.message for p in problems)


def test_validate_file_and_text(tmp_path: Path):
    good = tmp_path / "deployment.json"
    good.write_text(json.dumps(manifest()))
    assert validate_file(good) == []
    (tmp_path / "bad.json").write_text('{"modulesContent": ')
    [problem] = validate_file(tmp_path / "bad.json")
    assert problem.path == "" and "not valid JSON" in problem.message and "line 1" in problem.message
    assert "not UTF-8" in validate_text(b'{"a": "\xff"}')[0].message
    assert "nested too deeply" in validate_text("[" * 100_000 + "]" * 100_000)[0].message
    with pytest.raises(ValueError, match="is over 4 MiB"):
        validate_text(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="cannot read"):
        validate_file(tmp_path / "missing.json")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)

    def _run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    return _run


def test_cli_valid(run, tmp_path: Path):
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(manifest()))
    assert run("manifest", "validate", str(path)) == (0, "valid\n", "")
    code, out, _ = run("manifest", "validate", "--json", str(path))
    assert (code, json.loads(out)) == (0, [])


def test_cli_problems(run, tmp_path: Path):
    doc = manifest()
    doc["modulesContent"]["$edgeAgent"]["properties.desired"].pop("schemaVersion")
    _routes(doc)["x"] = 'FROM /* INTO BrokeredEndpoint("/modules/nope/inputs/in")'
    _modules(doc)["scorer"]["settings"]["image"] = "${ACR_ADDRESS}/iris:1\x1b[31m"
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(doc))
    code, out, err = run("manifest", "validate", str(path))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert f"{AGENT}: missing required property 'schemaVersion': add it (e.g. \"1.1\")" in lines
    assert any(line.startswith(f"{HUB}.routes.x: route 'x' sends to module 'nope'") for line in lines)
    assert any(line.startswith(f"{AGENT}.modules.scorer.settings.image: unexpanded") for line in lines)
    assert "\x1b" not in err  # untrusted text is escaped
    assert lines[-1] == f"error: 3 problems in {path}"
    code, out, err = run("manifest", "validate", "--json", str(path))
    assert code == 2 and err == ""
    problems = json.loads(out)
    assert len(problems) == 3 and set(problems[0]) == {"path", "message"}


def test_cli_bad_input(run, tmp_path: Path):
    code, _, err = run("manifest", "validate", str(tmp_path / "missing.json"))
    assert code == 2 and err.startswith("error: cannot read") and len(err.splitlines()) == 1
    (tmp_path / "bad.json").write_text("{")
    code, _, err = run("manifest", "validate", str(tmp_path / "bad.json"))
    assert code == 2 and "not valid JSON" in err
    code, _, err = run("manifest", "validate")
    assert code == 2 and "Missing argument" in err


def test_cli_stdin(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "packager", "manifest", "validate", "-"],
        input=json.dumps(manifest()),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (0, "valid\n"), proc.stderr


@pytest.mark.slow
def test_wheel_ships_the_schema(tmp_path: Path):
    """A wheel built from (a copy of) the tree carries the schema and its notice (package data)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("packager", "edge_module", "fpga", "cloud_targets"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = out.glob("edgepack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "packager/iotedge/schemas/azure-iot-edge-deployment-2.0.json" in names
    assert "packager/iotedge/schemas/NOTICE" in names


def test_problem_strings():
    assert str(Problem("a.b", "fix it")) == "a.b: fix it"
    assert str(Problem("", "not JSON")) == "not JSON"
    assert Problem("a", "b").to_dict() == {"path": "a", "message": "b"}
