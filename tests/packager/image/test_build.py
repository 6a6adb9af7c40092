"""Acceptance: `edgepack build` / `build-and-push` against the dev-services registry and dockerd.

The images are pulled back by the real Docker daemon and run (amd64 natively, arm64 under qemu);
skopeo reads what was pushed; the docker-archive output is loaded with `docker load`.
"""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_module.transports.mqtt import mqtt_request
from packager.image import builder
from packager.workspace import Workspace
from tests.packager.image.support import (
    DIGITS,
    X,
    docker,
    edgepack,
    edgepack_json,
    expected,
    score,
    serving_container,
    skopeo_inspect,
    wait_logged,
)
from tests.support.net import free_port

pytestmark = pytest.mark.slow


def test_build_and_push_runs_on_amd64_and_arm64(ws: Path, repo: str, base: str, dev_services: dict[str, str]) -> None:
    out = edgepack_json(ws, "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:v1")
    assert set(out["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert out["index_digest"].startswith("sha256:")
    assert out["reference"] == f"{repo}:v1@{out['index_digest']}"
    # what skopeo sees: an index with both platforms, each an image with our labels
    raw = skopeo_inspect("--tls-verify=false", "--raw", f"docker://{repo}:v1")
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {(m["platform"]["architecture"], m["digest"]) for m in raw["manifests"]} == {
        ("amd64", out["platforms"]["linux/amd64"]["digest"]),
        ("arm64", out["platforms"]["linux/arm64"]["digest"]),
    }
    for arch in ("amd64", "arm64"):
        info = skopeo_inspect("--tls-verify=false", "--override-arch", arch, f"docker://{repo}:v1")
        assert info["Architecture"] == arch
        assert json.loads(info["Labels"]["io.edgepack.models"])[0]["name"] == "digits"
    # dockerd pulls each platform and the module scores right on both, over HTTP and over MQTT
    want = expected(DIGITS, X)
    broker = f"mqtt://{dev_services['EDGEPACK_TEST_MQTT_HOST']}:{dev_services['EDGEPACK_TEST_MQTT_PORT']}"
    for platform in ("linux/amd64", "linux/arm64"):
        ref = f"{repo}@{out['platforms'][platform]['digest']}"
        docker("pull", "--platform", platform, ref)
        service = f"img-{uuid.uuid4().hex[:8]}"
        env = {"EDGEPACK_MQTT_URL": broker, "EDGEPACK_MQTT_SERVICE": service}
        with serving_container(ref, platform, env) as (url, cid):
            np.testing.assert_allclose(np.array(score(url, X)["output"]), want, rtol=1e-5, atol=1e-6)
            arch = docker("exec", cid, "python3", "-c", "import platform; print(platform.machine())").stdout.strip()
            assert arch == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
            wait_logged(cid, f"subscribed to edgepack/{service}/score/request/#")  # else the request finds no one
            doc = mqtt_request(broker, f"edgepack/{service}/score/request", {"data": X.tolist()}, timeout=60)
            np.testing.assert_allclose(np.array(doc["output"]), want, rtol=1e-5, atol=1e-6)
            probe = "import azure.iot.device, paho.mqtt; print(paho.mqtt.__version__)"
            assert docker("exec", cid, "python3", "-c", probe).stdout.strip() == "1.6.1"  # the IoT Edge transport's


def test_rebuild_is_identical_and_a_new_model_pushes_only_its_layer(ws: Path, repo: str, base: str, tmp_path: Path):
    first = edgepack_json(ws, "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:a")
    again = edgepack_json(ws, "build-and-push", "-m", "digits:1", "--base", base, "-t", f"{repo}:a")
    assert again["index_digest"] == first["index_digest"]
    assert again["push"]["bytes_sent"] == 0 and again["push"]["blobs_uploaded"] == 0

    # a second version of the model: other weights, same everything else
    model = onnx.load(DIGITS)
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 2, w.name))
    changed = tmp_path / "digits-v2.onnx"
    onnx.save(model, changed)
    edgepack(ws, "model", "register", "-n", "digits", "-p", str(changed))
    second = edgepack_json(ws, "build-and-push", "-m", "digits:2", "--base", base, "-t", f"{repo}:b")
    assert second["index_digest"] != first["index_digest"]

    def layers(out: dict[str, Any], platform: str) -> dict[str, str]:
        return {la["name"]: la["digest"] for la in out["platforms"][platform]["layers"]}

    for platform in ("linux/amd64", "linux/arm64"):
        old, new = layers(first, platform), layers(second, platform)
        assert [name for name in old if old[name] != new[name]] == ["models"]
    model_layer = next(la for la in second["platforms"]["linux/amd64"]["layers"] if la["name"] == "models")
    configs = {p["config"]: p["config_size"] for p in second["platforms"].values()}
    uploaded = set(second["push"]["uploaded"])
    assert uploaded == {model_layer["digest"], *configs}
    assert second["push"]["bytes_sent"] == model_layer["size"] + sum(configs.values())


def test_outputs_oci_layout_and_docker_archive(ws: Path, base: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    out = edgepack_json(ws, "build", "-m", "digits:1", "--base", base, "--output", f"oci:{layout}", "-t", "digits:v1")
    info = skopeo_inspect("--override-arch", "arm64", f"oci:{layout}:digits:v1")
    assert info["Architecture"] == "arm64"
    assert (layout / "index.json").is_file() and out["index_digest"].startswith("sha256:")

    archive = tmp_path / "digits-amd64.tar"
    tag = f"edgepack-test/digits:{uuid.uuid4().hex[:8]}"
    edgepack_json(
        ws,
        "build",
        "-m",
        "digits:1",
        "--base",
        base,
        "--platform",
        "linux/amd64",
        "--output",
        f"docker-archive:{archive}",
        "-t",
        tag,
    )
    loaded = docker("load", "-i", str(archive))
    assert tag in loaded.stdout
    try:
        with serving_container(tag, "linux/amd64") as (url, _):
            np.testing.assert_allclose(np.array(score(url, X)["output"]), expected(DIGITS, X), rtol=1e-5, atol=1e-6)
    finally:
        docker("rmi", "-f", tag, check=False)


def test_python_api_builds_an_oci_layout_in_one_call(ws: Path, base: str, tmp_path: Path) -> None:
    """builder.run does what `edgepack build --output oci:DIR` does: same images, same summary keys."""
    layout = tmp_path / "api"
    request = builder.BuildRequest(["digits:1"], builder.Destination.oci_layout(layout, "digits:v1"), base=base)
    doc = builder.run(Workspace.from_path(ws), request)
    cli = edgepack_json(
        ws, "build", "-m", "digits:1", "--base", base, "--output", f"oci:{tmp_path / 'cli'}", "-t", "digits:v1"
    )
    assert doc["oci_layout"] == str(layout) and set(doc) == set(cli)
    assert doc["index_digest"] == cli["index_digest"] and doc["platforms"] == cli["platforms"]
    assert skopeo_inspect("--override-arch", "arm64", f"oci:{layout}:digits:v1")["Architecture"] == "arm64"


def test_clear_errors(ws: Path, base: str, tmp_path: Path) -> None:
    closed = free_port()
    res = edgepack(ws, "build-and-push", "-m", "digits:1", "--base", base, "-t", f"127.0.0.1:{closed}/x/y:1", expect=1)
    assert f"127.0.0.1:{closed}" in res.output and "reach" in res.output.lower()
    res = edgepack(
        ws,
        "build",
        "-m",
        "digits:1",
        "--base",
        base,
        "--platform",
        "linux/arm/v7",
        "--output",
        f"oci:{tmp_path / 'o'}",
        expect=2,
    )
    assert "onnxruntime" in res.output and "linux/arm/v7" in res.output
    ic = tmp_path / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "missing.py", "runtime": "python"}))
    res = edgepack(
        ws, "build", "-m", "digits:1", "--inference-config", str(ic), "--output", f"oci:{tmp_path / 'o'}", expect=2
    )
    assert "missing.py" in res.output
    # docopt 0.6.2 is published as a source distribution only: no wheel for any platform
    res = edgepack(
        ws, "build", "-m", "digits:1", "--base", base, "--platform", "linux/arm64", "-r", "docopt==0.6.2",
        "--output", f"oci:{tmp_path / 'o'}", expect=2,
    )  # fmt: skip
    assert "docopt" in res.output and "linux/arm64" in res.output, res.output
    res = edgepack(ws, "build", "-m", "nope", "--output", f"oci:{tmp_path / 'o'}", expect=1)
    assert "nope" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_source_dir_leaves_out_the_workspace_inside_it(base: str, tmp_path: Path) -> None:
    """`--workspace` (or EDGEPACK_WORKSPACE) inside --source-dir, .git and ignored files stay out; .env stays 0600."""
    src = tmp_path / "app"
    (src / ".git").mkdir(parents=True)
    (src / ".git" / "config").write_text("[core]\n")
    (src / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (src / "notes.tmp").write_text("scratch\n")
    (src / ".edgepackignore").write_text("*.tmp\n")
    (src / ".env").write_text("TOKEN=not-a-secret\n")
    (src / ".env").chmod(0o600)
    inner = src / "my-ws"
    edgepack(inner, "model", "register", "-n", "digits", "-p", str(DIGITS))
    layout = tmp_path / "layout"
    out = edgepack_json(
        inner, "build", "-m", "digits:1", "--base", base, "--platform", "linux/amd64",
        "--entry-script", str(src / "score.py"), "--source-dir", str(src), "--output", f"oci:{layout}",
    )  # fmt: skip
    app = next(la for la in out["platforms"]["linux/amd64"]["layers"] if la["name"] == "app")
    with tarfile.open(layout / "blobs" / "sha256" / app["digest"][7:]) as tar:
        files = {m.name.removeprefix("var/azureml-app/"): m.mode for m in tar.getmembers() if m.isfile()}
    assert files == {".edgepackignore": 0o644, ".env": 0o600, "edgepack-image.json": 0o644, "score.py": 0o644}
