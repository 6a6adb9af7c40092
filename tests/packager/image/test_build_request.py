"""The builder's one-call API (BuildRequest, Destination) and the CLI flags that make one: checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from packager.errors import InvalidInputError
from packager.image import builder
from packager.image.builder import BuildRequest, Destination
from packager.image.inference_config import InferenceConfig
from packager.image.reference import ImageRef
from tests.packager.image.support import edgepack


def test_destinations() -> None:
    pushed = Destination.from_options("127.0.0.1:5000/models/digits:1", True, None)
    assert pushed == Destination.registry("127.0.0.1:5000/models/digits:1")
    assert pushed.kind == "registry" and pushed.ref == ImageRef.parse("127.0.0.1:5000/models/digits:1")
    assert Destination.from_options(None, False, "oci:out/layout") == Destination("oci", path=Path("out/layout"))
    assert Destination.from_options("digits:v1", False, "oci:x").tag == "digits:v1"  # the layout's ref name, as given
    archive = Destination.from_options("docker.io/library/digits:v1", False, "docker-archive:d.tar")
    assert (archive.kind, archive.path, archive.tag) == ("docker-archive", Path("d.tar"), "digits:v1")


@pytest.mark.parametrize(
    ("tag", "push", "output", "message"),
    [
        (None, False, "zip:x", "--output 'zip:x': use oci:DIR or docker-archive:FILE"),
        (None, False, "oci:", "--output 'oci:': use oci:DIR or docker-archive:FILE"),
        ("r/x:1", True, "oci:x", "give either --push or --output, not both"),
        (None, False, None, "say where the image goes: --push (with -t REGISTRY/REPO:TAG) or --output oci:DIR"),
        (None, True, None, "--push needs -t REGISTRY/REPO:TAG"),
    ],
)
def test_destination_flags_are_checked(tag: str | None, push: bool, output: str | None, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        Destination.from_options(tag, push, output)
    assert str(err.value) == message


def test_requests_that_cannot_run_are_refused_when_made(tmp_path: Path) -> None:
    oci = Destination.oci_layout(tmp_path / "o")
    request = BuildRequest(["digits:1"], oci)
    assert request.backend == "oci" and request.platforms == builder.DEFAULT_PLATFORMS
    with pytest.raises(InvalidInputError, match=r"--backend docker pushes what it builds: use --push"):
        BuildRequest(["digits:1"], oci, backend="docker")
    with pytest.raises(InvalidInputError, match=r"backend 'podman': use one of oci, docker"):
        BuildRequest(["digits:1"], oci, backend="podman")
    steps = tmp_path / "steps.txt"
    steps.write_text("RUN echo hi\n")
    config = InferenceConfig(extra_docker_file_steps=steps)
    with pytest.raises(InvalidInputError, match="extraDockerfileSteps, which only a Docker build can run"):
        BuildRequest(["digits:1"], oci, config=config)
    assert BuildRequest(["digits:1"], Destination.registry("r.io/x:1"), config=config, backend="docker")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "zip:x"], "--output 'zip:x': use oci:DIR or docker-archive:FILE"),
        (["--push", "-t", "r.io/x:1", "--output", "oci:x"], "give either --push or --output, not both"),
        ([], "say where the image goes"),
        (["--push"], "--push needs -t REGISTRY/REPO:TAG"),
        (["--output", "oci:x", "--username", "u"], "give --username and --password together"),
        (["--output", "oci:x", "--platform", ","], "no platform given: use e.g. --platform linux/amd64,linux/arm64"),
        (["--output", "oci:x", "--backend", "docker"], "--backend docker pushes what it builds"),
    ],
)
def test_build_flags_fail_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    ws = tmp_path / "no-workspace"
    res = edgepack(ws, "build", "-m", "digits:1", *args, expect=2)
    assert message in res.output
    assert not ws.exists()
