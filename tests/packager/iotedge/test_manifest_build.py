"""Manifests for real builds: builder.run to an OCI layout, `build-and-push --manifest` to the dev registry,
an iotedgedev project whose images are in the registry (``--pin``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from packager.image import builder
from packager.image.reference import ImageRef
from packager.image.registry import RegistryClient
from packager.iotedge.manifest import manifests_from_build
from packager.workspace import Workspace
from tests.packager.image.support import DIGITS
from tests.packager.image.support import edgepack as edgepack_ws
from tests.packager.iotedge.iotedgedev_project import make_project
from tests.packager.iotedge.support import agent, assert_valid, edgepack

pytestmark = pytest.mark.slow
SECRET = "bu1ld-Secret-pw"


@pytest.fixture(scope="module")
def registry(dev_services: dict[str, str]) -> str:
    return dev_services["EDGEPACK_TEST_REGISTRY"]


@pytest.fixture(scope="module")
def base(dev_services: dict[str, str], registry: str) -> str:
    return dev_services.get("EDGEPACK_TEST_BASE_IMAGE", f"{registry}/library/python:3.11-slim")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ws") / "ws"
    edgepack_ws(path, "model", "register", "-n", "digits", "-p", str(DIGITS))
    return path


def registry_digest(image: str) -> str | None:
    ref = ImageRef.parse(image)
    with RegistryClient.for_ref(ref) as client:
        return client.head_manifest(ref)


def test_manifests_from_a_real_build_to_an_oci_layout(ws: Path, base: str, tmp_path: Path) -> None:
    request = builder.BuildRequest(["digits:1"], builder.Destination.oci_layout(tmp_path / "oci"), base=base)
    summary = builder.run(Workspace.from_path(ws), request)
    found = manifests_from_build(summary, repository="127.0.0.1:5000/models/digits", module_options={"threshold": 0.5})
    assert set(found) == {"amd64", "arm64"}
    for arch in ("amd64", "arm64"):
        assert_valid(found[arch])
        image = agent(found[arch])["modules"]["scoring"]["settings"]["image"]
        assert image == f"127.0.0.1:5000/models/digits@{summary['platforms'][f'linux/{arch}']['digest']}"
        twin = found[arch]["modulesContent"]["scoring"]["properties.desired"]
        assert twin["model_version"] == "1" and twin["threshold"] == 0.5


def test_build_and_push_writes_manifests_for_what_it_pushed(
    ws: Path, base: str, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"ci-user:{SECRET}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    repo = f"{registry}/test/manifest-{uuid.uuid4().hex[:8]}"
    single, folder = tmp_path / "deployment.json", tmp_path / "config"
    res = edgepack(
        "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:v1", "--manifest", str(single),
        "--threshold", "0.9", "--route", "FROM /messages/modules/scoring/outputs/output1 INTO $upstream", "--json",
        workspace=ws,
    )  # fmt: skip
    doc = json.loads(res.stdout)
    assert doc["manifests"][0]["file"] == str(single) and doc["manifests"][0]["private"] is True
    manifest = json.loads(single.read_text())
    assert_valid(manifest)
    image = agent(manifest)["modules"]["scoring"]["settings"]["image"]
    assert image == f"{repo}@{doc['index_digest']}" and registry_digest(image) == doc["index_digest"]
    assert agent(manifest)["runtime"]["settings"]["registryCredentials"] == {
        registry.replace(".", "_").replace(":", "_"): {"username": "ci-user", "password": SECRET, "address": registry}
    }
    assert manifest["modulesContent"]["scoring"]["properties.desired"]["threshold"] == 0.9
    assert stat.S_IMODE(os.stat(single).st_mode) == 0o600
    # per platform: the same build again (nothing new to push), one file each, pinned by platform digest
    res2 = edgepack(
        "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:v1", "-o", str(folder), "--no-credentials",
        workspace=ws,
    )  # fmt: skip
    assert "wrote manifest" in res2.stdout
    for arch in ("amd64", "arm64"):
        per = json.loads((folder / f"deployment.{arch}.json").read_text())
        assert_valid(per)
        digest = doc["platforms"][f"linux/{arch}"]["digest"]
        image = agent(per)["modules"]["scoring"]["settings"]["image"]
        assert image == f"{repo}@{digest}" and registry_digest(image) == digest
        assert "registryCredentials" not in agent(per)["runtime"]["settings"]
    # --username/--password push, and are the pull credentials in the manifest too (over docker login's)
    given = tmp_path / "given.json"
    res3 = edgepack(
        "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:v1", "--manifest", str(given),
        "--username", "push-user", "--password", SECRET + "2", workspace=ws,
    )  # fmt: skip
    creds = agent(json.loads(given.read_text()))["runtime"]["settings"]["registryCredentials"]
    assert [(c["username"], c["password"], c["address"]) for c in creds.values()] == [
        ("push-user", SECRET + "2", registry)
    ]
    assert stat.S_IMODE(os.stat(given).st_mode) == 0o600
    captured = capfd.readouterr()
    shown = "".join(r.stdout + r.stderr for r in (res, res2, res3)) + captured.out + captured.err
    assert SECRET not in shown and auth not in shown


def test_iotedgedev_project_with_pushed_images_pinned(registry: str, base: str, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo must be installed: run scripts/dev-services.sh")
    server = f"{registry}/iotedgedev-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path / "solution", registry=server)
    for name, arch in (("samplemodule", "amd64"), ("filter", "arm64v8")):
        target = f"docker://{server}/{name}:0.0.1-{arch}"
        subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{base}", target],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    out = tmp_path / "deployment.amd64.json"
    edgepack("manifest", "gen", "-f", str(project / "deployment.template.json"), "--pin", "-o", str(out))
    doc = json.loads(out.read_text())
    assert_valid(doc)
    for module, name, arch in (("SampleModule", "samplemodule", "amd64"), ("filter", "filter", "arm64v8")):
        image = agent(doc)["modules"][module]["settings"]["image"]
        assert image.startswith(f"{server}/{name}@sha256:")
        assert registry_digest(image) == registry_digest(f"{server}/{name}:0.0.1-{arch}")


def test_iotedgedev_project_builds_pushes_and_generates_without_edits(registry: str, base: str, tmp_path: Path) -> None:
    """`manifest gen -f ... --build`: each module's Dockerfile.<platform> built by dockerd, pushed, pinned."""
    server = f"{registry}/iotedgedev-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path / "solution", registry=server)
    # Docker 20.10 keeps one local image per name: FROM pins each platform's base by its manifest digest
    index = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{base}"], capture_output=True, text=True
    )
    digests = {m["platform"]["architecture"]: m["digest"] for m in json.loads(index.stdout)["manifests"]}
    name = base.rsplit(":", 1)[0]
    for folder in (project / "modules").iterdir():
        (folder / "main.py").write_text(f"print('{folder.name}')\n")
        for arch, docker_arch in (("amd64", "amd64"), ("arm64v8", "arm64")):  # as iotedgedev scaffolds them
            steps = 'WORKDIR /app\nCOPY main.py .\nCMD ["python3", "main.py"]\n'
            (folder / f"Dockerfile.{arch}").write_text(f"FROM {name}@{digests[docker_arch]}\n{steps}")
    out = tmp_path / "config" / "deployment.amd64.json"
    res = edgepack(
        "manifest", "gen", "-f", str(project / "deployment.template.json"), "--build", "-o", str(out), "--json"
    )
    written = json.loads(res.stdout)["manifests"][0]
    doc = json.loads(out.read_text())
    assert_valid(doc)
    for module, name, arch in (("SampleModule", "samplemodule", "amd64"), ("filter", "filter", "arm64v8")):
        image = agent(doc)["modules"][module]["settings"]["image"]
        assert written["modules"][module] == image and image.startswith(f"{server}/{name}@sha256:")
        assert registry_digest(image) == registry_digest(f"{server}/{name}:0.0.1-{arch}")  # iotedgedev's tag
        inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{image}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert json.loads(inspect.stdout)["Architecture"] == {"amd64": "amd64", "arm64v8": "arm64"}[arch]


def test_gen_pins_images_by_platform(base: str, tmp_path: Path) -> None:
    index = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{base}"], capture_output=True, text=True
    )
    digests = {m["platform"]["architecture"]: m["digest"] for m in json.loads(index.stdout)["manifests"]}
    name = ImageRef.parse(base)
    for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
        args = ("manifest", "gen", "--module", f"scoring={base}", "--platform", platform, "--pin", "-o", str(tmp_path))
        edgepack(*args)
        doc = json.loads((tmp_path / f"deployment.{arch}.json").read_text())
        assert_valid(doc)
        assert (
            agent(doc)["modules"]["scoring"]["settings"]["image"]
            == f"{name.registry}/{name.repository}@{digests[arch]}"
        )
    res = edgepack(
        "manifest",
        "gen",
        "--module",
        f"scoring={base}",
        "--platform",
        "linux/arm/v7",
        "--pin",
        "-o",
        str(tmp_path),
        expect=1,
    )
    assert "has no linux/arm/v7 image" in res.stderr
    res = edgepack(
        "manifest", "gen", "--module", f"scoring={base}", "--platform", "linux/arm64", "-o", str(tmp_path), expect=2
    )
    assert "add --pin" in res.stderr
