"""Image reference parsing: docker's rules, Docker Hub aliases, validation, insecure registries."""

from __future__ import annotations

import pytest

from packager.errors import InvalidInputError
from packager.image.reference import DOCKER_HUB, ImageRef, is_insecure
from packager.image.registry import RegistryClient

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:3.11-slim", DOCKER_HUB, "library/python", "3.11-slim", None),
        ("python", DOCKER_HUB, "library/python", "latest", None),
        ("docker.io/python:3.11", DOCKER_HUB, "library/python", "3.11", None),
        ("index.docker.io/library/python", DOCKER_HUB, "library/python", "latest", None),
        ("registry-1.docker.io/bitnami/redis:7", DOCKER_HUB, "bitnami/redis", "7", None),
        ("someuser/img:v1", DOCKER_HUB, "someuser/img", "v1", None),
        ("127.0.0.1:5000/library/python:3.11-slim", "127.0.0.1:5000", "library/python", "3.11-slim", None),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None),
        ("localhost/x/y", "localhost", "x/y", "latest", None),
        ("ghcr.io/org/team/app:1.0", "ghcr.io", "org/team/app", "1.0", None),
        ("myacr.azurecr.io/edge/model@" + DIGEST, "myacr.azurecr.io", "edge/model", None, DIGEST),
        ("myacr.azurecr.io/edge/model:v2@" + DIGEST, "myacr.azurecr.io", "edge/model", "v2", DIGEST),
        ("[::1]:5000/a/b:t", "[::1]:5000", "a/b", "t", None),
        ("reg.example.com:8443/a__b/c-d.e_f:T.1-x", "reg.example.com:8443", "a__b/c-d.e_f", "T.1-x", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ImageRef.parse(str(ref)) == ref


def test_str_and_familiar_forms() -> None:
    ref = ImageRef.parse("python:3.11-slim")
    assert str(ref) == "docker.io/library/python:3.11-slim"
    assert ref.familiar() == "python:3.11-slim"
    assert ref.name == "docker.io/library/python"
    local = ImageRef.parse("127.0.0.1:5000/library/python:3.11-slim")
    assert str(local) == local.familiar() == "127.0.0.1:5000/library/python:3.11-slim"
    assert str(ImageRef.parse("127.0.0.1:5000/x@" + DIGEST)) == "127.0.0.1:5000/x@" + DIGEST


def test_with_digest_with_tag_and_reference() -> None:
    ref = ImageRef.parse("127.0.0.1:5000/library/python:3.11-slim")
    assert ref.reference == "3.11-slim"
    pinned = ref.with_digest(DIGEST)
    assert pinned.tag == "3.11-slim" and pinned.digest == DIGEST and pinned.reference == DIGEST
    assert str(pinned) == f"127.0.0.1:5000/library/python:3.11-slim@{DIGEST}"
    retagged = pinned.with_tag("v2")
    assert (retagged.tag, retagged.digest) == ("v2", None)
    other = ref.in_repository("edge/model", "v1")
    assert (other.registry, other.repository, other.tag) == ("127.0.0.1:5000", "edge/model", "v1")
    assert ref.same_registry(other)
    with pytest.raises(InvalidInputError, match="not a digest"):
        ref.with_digest("sha256:123")
    with pytest.raises(InvalidInputError, match="invalid tag"):
        ref.with_tag("-bad")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty image reference"),
        ("   ", "empty image reference"),
        ("Python:3.11", "invalid repository name 'Python'"),
        ("ghcr.io/Org/app", "invalid repository name 'Org/app'"),
        ("python:", "invalid tag ''"),
        ("python:-x", "invalid tag '-x'"),
        ("python:" + "x" * 129, "invalid tag"),
        ("python@", "has no digest"),
        ("python@sha256:abc", "not a digest"),
        ("python@sha256:" + "G" * 64, "not a digest"),
        ("https://ghcr.io/a/b", "invalid image reference"),
        ("python 3", "invalid image reference"),
        ("ghcr.io/", "no repository name"),
        ("a//b", "invalid repository name"),
        ("my_host.io:99x/a", "invalid registry host"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        ImageRef.parse(text)
    assert info.value.exit_code == 2


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEPACK_INSECURE_REGISTRIES", raising=False)
    assert ImageRef.parse("127.0.0.1:5000/x").base_url == "http://127.0.0.1:5000"
    assert ImageRef.parse("localhost/x").insecure
    assert ImageRef.parse("[::1]:5000/x").scheme == "http"
    assert ImageRef.parse("python").base_url == "https://registry-1.docker.io"
    assert not is_insecure("myreg.lan:5000")
    monkeypatch.setenv("EDGEPACK_INSECURE_REGISTRIES", "myreg.lan:5000, other.lan")
    assert is_insecure("myreg.lan:5000")
    assert is_insecure("other.lan:8080")  # a listed host covers every port
    assert not is_insecure("myreg.lan:6000")
    assert ImageRef.parse("myreg.lan:5000/a/b").base_url == "http://myreg.lan:5000"


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1.nip.io:443/x:1", "127.evil.com/x:1", "localhost.example.com/x:1", "127.0.0.1.nip.io/x", "[::2]:5000/x"],
)
def test_names_that_look_like_loopback_get_https(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain HTTP (credentials in clear) only for a parsed loopback address or ``localhost``, never by prefix."""
    monkeypatch.delenv("EDGEPACK_INSECURE_REGISTRIES", raising=False)
    ref = ImageRef.parse(text)
    assert (ref.scheme, ref.insecure) == ("https", False)
    client = RegistryClient(ref.registry)
    assert client.base_url.startswith("https://") and client._proxies == {}


@pytest.mark.parametrize(
    "text", ["127.0.0.1:5000/x", "127.5.6.7:5000/x", "[::1]:5000/x", "localhost:5000/x", "LOCALHOST:5000/x", "[::1]/x"]
)
def test_loopback_registries_get_http(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEPACK_INSECURE_REGISTRIES", raising=False)
    ref = ImageRef.parse(text)
    assert (ref.scheme, ref.insecure) == ("http", True)
    client = RegistryClient(ref.registry)
    assert client.base_url == f"http://{ref.registry}" and client._proxies == {"http": None, "https": None}
