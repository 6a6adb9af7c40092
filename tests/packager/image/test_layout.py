"""OCI documents and local outputs; a hand-assembled image is loaded and run by the real Docker daemon.

The slow tests take the dev-services base image (``library/python:3.11-slim-<arch>``, fetched with
plain requests), add the four layers, write a docker-archive and an OCI layout, and check them with
``docker load`` + ``docker run`` (amd64 natively, arm64 under qemu) and ``skopeo``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests

from packager import Model, Workspace
from packager.image import content, deps, layout, oci, tarball
from packager.image.spec import APP_ROOT, ENTRYPOINT, PORT, FileEntry, Layer, LayerSource, Platform
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "examples" / "models" / "digits-linear.onnx"
AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")
BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "debootstrap"}],
}
BASE_LAYER = {"mediaType": oci.DOCKER_LAYER_GZIP, "digest": "sha256:" + "2" * 64, "size": 10}


def fake_layer(tmp_path: Path, name: str = "app") -> Layer:
    return tarball.build_layer(LayerSource.of(name, [FileEntry(f"/x/{name}.txt", data=name.encode())]), tmp_path)


# -- documents ------------------------------------------------------------------------------------


def test_image_config_merges_the_base(tmp_path: Path) -> None:
    layer = fake_layer(tmp_path)
    env = {"PATH": "/nope", "LANG": "en_US.UTF-8", "AZUREML_MODEL_DIR": "/m"}
    raw = oci.image_config(BASE_CONFIG, [layer], env, ENTRYPOINT, None, {"a": "b"}, PORT, platform=ARM64)
    assert raw == oci.canonical_json(json.loads(raw))
    cfg = json.loads(raw)
    c = cfg["config"]
    assert c["Env"] == ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=en_US.UTF-8", "AZUREML_MODEL_DIR=/m"]
    assert c["Entrypoint"] == ENTRYPOINT and "Cmd" not in c
    assert c["WorkingDir"] == APP_ROOT and c["ExposedPorts"] == {f"{PORT}/tcp": {}} and c["Labels"] == {"a": "b"}
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, layer.diff_id]
    assert [h["created_by"] for h in cfg["history"]] == ["debootstrap", "edgepack: app layer"]
    assert (cfg["architecture"], cfg["created"]) == ("arm64", "1970-01-01T00:00:00Z")
    assert BASE_CONFIG["config"]["Cmd"] == ["python3"]  # the base document is not modified
    no_history = {**BASE_CONFIG, "history": []}
    cfg2 = json.loads(oci.image_config(no_history, [layer], {}, platform=AMD64))
    assert len(cfg2["history"]) == len(cfg2["rootfs"]["diff_ids"])


def test_manifest_and_index(tmp_path: Path) -> None:
    layer = fake_layer(tmp_path)
    config = oci.image_config(BASE_CONFIG, [layer], {})
    manifest = json.loads(oci.image_manifest(config, [BASE_LAYER], [layer], {"k": "v"}))
    assert manifest["mediaType"] == oci.OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": oci.OCI_CONFIG, "digest": oci.digest_bytes(config), "size": len(config)}
    assert manifest["layers"] == [
        {**BASE_LAYER, "mediaType": oci.OCI_LAYER_GZIP},  # same bytes, OCI media type
        {"mediaType": oci.OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size},
    ]
    index = json.loads(oci.image_index([("sha256:" + "3" * 64, 99, AMD64), ("sha256:" + "4" * 64, 98, ARM64)]))
    assert index["mediaType"] == oci.OCI_INDEX
    assert [m["platform"] for m in index["manifests"]] == [AMD64.as_oci(), ARM64.as_oci()]
    image = oci.PlatformImage.assemble(AMD64, config, [BASE_LAYER], [layer], cache=tmp_path)
    assert image.manifest_digest == oci.digest_bytes(image.manifest)
    assert image.blobs(base_source="library/python") == [
        oci.BlobSpec(image.config_digest, len(config), data=config, label="config linux/amd64"),
        oci.BlobSpec(BASE_LAYER["digest"], 10, source="library/python", label="base layer"),
        oci.BlobSpec(layer.digest, layer.size, layer.path, label=f"{layer.name} layer linux/amd64"),
    ]
    assert image.config_path is not None and image.config_path.read_bytes() == config


def test_local_outputs_offline(tmp_path: Path) -> None:
    base = fake_layer(tmp_path, "base")
    ours = fake_layer(tmp_path, "app")
    base_desc = {"mediaType": oci.DOCKER_LAYER_GZIP, "digest": base.digest, "size": base.size}
    base_cfg = {**BASE_CONFIG, "rootfs": {"type": "layers", "diff_ids": [base.diff_id]}}
    images = [
        oci.PlatformImage.assemble(p, oci.image_config(base_cfg, [ours], {}, platform=p), [base_desc], [ours])
        for p in (AMD64, ARM64)
    ]
    blobs = {base.digest: base.path}
    out = tmp_path / "out" / "oci"
    digest = layout.write_oci_layout(out, images, {"x": "y"}, blobs.__getitem__)
    top = json.loads((out / "index.json").read_text())
    assert top["manifests"][0]["digest"] == digest
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for name in (digest, *(i.manifest_digest for i in images), base.digest, ours.digest):
        assert (out / "blobs" / "sha256" / name[7:]).is_file()
    assert layout.write_oci_layout(out, images, {"x": "y"}, blobs.__getitem__) == digest  # replaced in place
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["oci"]

    archive = tmp_path / "img.tar"
    layout.write_docker_archive(archive, images[0], ["example/img:1"], blobs.__getitem__)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest == [
            {
                "Config": f"{images[0].config_digest[7:]}.json",
                "RepoTags": ["example/img:1"],
                "Layers": [f"{base.digest[7:]}.tar.gz", f"{ours.digest[7:]}.tar.gz"],
            }
        ]
        assert gzip.decompress(tar.extractfile(f"{ours.digest[7:]}.tar.gz").read())  # type: ignore[union-attr]
    with pytest.raises(Exception, match="not available locally"):
        layout.write_docker_archive(tmp_path / "x.tar", images[0], [], lambda d: tmp_path / "missing")
    assert not (tmp_path / "x.tar").exists()


# -- a real image, run by dockerd -----------------------------------------------------------------


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, f"docker {' '.join(args)}: {run.stderr}"
    return run


def fetch_base(registry: str, tag: str, into: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Manifest and config of ``library/python:<tag>``; its blobs are saved under ``into``."""
    accept = ", ".join([oci.OCI_MANIFEST, oci.DOCKER_MANIFEST])
    url = f"http://{registry}/v2/library/python"
    manifest = requests.get(f"{url}/manifests/{tag}", headers={"Accept": accept}, timeout=30).json()
    into.mkdir(parents=True, exist_ok=True)
    for desc in [manifest["config"], *manifest["layers"]]:
        path = into / desc["digest"][7:]
        if not path.is_file():
            with requests.get(f"{url}/blobs/{desc['digest']}", stream=True, timeout=120) as resp:
                resp.raise_for_status()
                with open(path, "wb") as fh:
                    shutil.copyfileobj(resp.raw, fh)
        assert oci.digest_bytes(path.read_bytes()) == desc["digest"]
    config = json.loads((into / manifest["config"]["digest"][7:]).read_bytes())
    return manifest, config


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Model]:
    ws = Workspace.from_path(tmp_path_factory.mktemp("ws") / "ws")
    return ws, Model.register(ws, DIGITS, "digits")


@pytest.fixture(scope="module")
def build(
    registry: str, cache: Path, model: tuple[Workspace, Model]
) -> Callable[[Platform], tuple[oci.PlatformImage, Callable[[str], Path]]]:
    ws, m = model
    images: dict[Platform, tuple[oci.PlatformImage, Callable[[str], Path]]] = {}

    def make(platform: Platform) -> tuple[oci.PlatformImage, Callable[[str], Path]]:
        if platform in images:
            return images[platform]
        blobs = cache / "base-blobs"
        manifest, base_config = fetch_base(registry, f"3.11-slim-{platform.architecture}", blobs)
        layers = [
            tarball.build_layer(src, cache)
            for src in (
                deps.stage_dependencies(deps.runtime_requirements(), platform, cache),
                content.stage_edge_module(),
                content.stage_models(ws, [m]),
                content.stage_app(None, None, {"models": [{"name": m.name, "version": m.version}]}),
            )
        ]
        config = oci.image_config(
            base_config,
            layers,
            content.image_env([m], None),
            ENTRYPOINT,
            None,
            {"org.opencontainers.image.title": "digits:1"},
            PORT,
            platform=platform,
        )
        image = oci.PlatformImage.assemble(platform, config, manifest["layers"], layers, cache=cache)
        images[platform] = (image, lambda d: blobs / d[7:])
        return images[platform]

    return make


@pytest.fixture
def loaded(request: pytest.FixtureRequest, build: Callable, tmp_path: Path) -> Iterator[tuple[str, Platform]]:
    platform: Platform = request.param
    image, blob_path = build(platform)
    tag = f"edgepack-test/layout-{platform.architecture}:{uuid.uuid4().hex[:8]}"
    archive = tmp_path / "image.tar"
    layout.write_docker_archive(archive, image, [tag], blob_path)
    docker("load", "-i", str(archive))
    try:
        yield tag, platform
    finally:
        docker("rmi", "-f", tag, check=False)


def wait_ready(port: int, container: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    logs = docker("logs", container, check=False)
    pytest.fail(f"container not ready after {timeout}s:\n{logs.stdout}\n{logs.stderr}")


@pytest.mark.slow
@pytest.mark.parametrize("loaded", [AMD64, ARM64], ids=str, indirect=True)
def test_docker_archive_loads_and_serves(loaded: tuple[str, Platform]) -> None:
    tag, platform = loaded
    inspect = json.loads(docker("image", "inspect", tag).stdout)[0]
    assert inspect["Architecture"] == platform.architecture
    assert inspect["Config"]["Entrypoint"] == ENTRYPOINT
    port = free_port()
    name = f"edgepack-layout-{uuid.uuid4().hex[:8]}"
    extra = ["--init", "--tmpfs", "/sys/devices/system/cpu:ro"] if platform == ARM64 else []
    docker(
        "run", "-d", "--rm", "--name", name, "--platform", str(platform), "--network", "host",
        "-e", f"EDGEPACK_PORT={port}", *extra, tag,
    )  # fmt: skip
    try:
        wait_ready(port, name, 60 if platform == AMD64 else 300)
        x = np.random.default_rng(7).random((3, 64)).astype(np.float32)
        resp = requests.post(f"http://127.0.0.1:{port}/score", json={"data": x.tolist()}, timeout=60)
        assert resp.status_code == 200, resp.text
        want = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        got = np.asarray(resp.json()["output"], dtype=np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert (got.argmax(1) == want.argmax(1)).all()
    finally:
        docker("rm", "-f", name, check=False)


@pytest.mark.slow
def test_oci_layout_is_read_by_skopeo(build: Callable, tmp_path: Path, registry: str) -> None:
    (amd, amd_blobs), (arm, arm_blobs) = build(AMD64), build(ARM64)

    def blob_path(digest: str) -> Path:
        path = amd_blobs(digest)
        return path if path.is_file() else arm_blobs(digest)

    out = tmp_path / "oci"
    digest = layout.write_oci_layout(out, [amd, arm], {"org.opencontainers.image.title": "digits"}, blob_path)
    raw = json.loads(
        subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}"], capture_output=True, check=True).stdout
    )
    assert raw["mediaType"] == oci.OCI_INDEX and len(raw["manifests"]) == 2
    info = json.loads(
        subprocess.run(["skopeo", "inspect", f"oci:{out}:latest"], capture_output=True, check=True).stdout
    )
    assert info["Architecture"] == "amd64" and info["Labels"]["org.opencontainers.image.title"] == "digits:1"
    assert len(info["Layers"]) == len(amd.base_layers) + 4
    # the registry (CNCF distribution) takes the OCI index and manifests as they are, digests unchanged
    dest = f"{registry}/test/layout-{uuid.uuid4().hex[:8]}:v1"
    subprocess.run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{out}", f"docker://{dest}"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    pushed = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"], capture_output=True, check=True
    ).stdout
    assert oci.digest_bytes(pushed) == digest
    try:
        for platform in (AMD64, ARM64):  # and dockerd 20.10 pulls each platform from that index
            try:
                docker("pull", "--platform", str(platform), dest)
                assert json.loads(docker("image", "inspect", dest).stdout)[0]["Architecture"] == platform.architecture
            finally:
                docker("rmi", "-f", dest, check=False)
    finally:
        repo, _, _tag = dest.partition("/")[2].rpartition(":")
        requests.delete(f"http://{registry}/v2/{repo}/manifests/{digest}", timeout=30)
    assert digest == layout.write_oci_layout(
        tmp_path / "again", [amd, arm], {"org.opencontainers.image.title": "digits"}, blob_path
    )
