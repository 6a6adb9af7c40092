"""The OCI distribution client against real registries: the dev registry, throwaway auth registries."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from packager.errors import EdgepackError, IntegrityError, InvalidInputError, NotFoundError
from packager.image.auth import (
    Credentials,
    RegistryAuth,
    covers,
    credentials_from_docker_config,
    parse_challenge,
)
from packager.image.oci import DOCKER_MANIFEST_LIST as DOCKER_LIST
from packager.image.oci import OCI_INDEX, OCI_MANIFEST
from packager.image.reference import ImageRef
from packager.image.registry import BlobSpec, RegistryClient, sha256_digest
from packager.image.spec import Platform
from tests.conftest import ROOT, unavailable
from tests.packager.image import registries
from tests.packager.image.registries import TokenServer, basic_auth_entry, write_docker_config

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


# ------------------------------------------------------------------------------------------------ helpers
def make_layer(directory: Path, size: int, name: str = "") -> dict[str, Any]:
    """A real gzip tar layer of ``size`` random bytes: digest, diff_id, path, size."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name or f"data-{uuid.uuid4().hex}.bin")
        payload = os.urandom(size)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    digest = sha256_digest(blob)
    path = directory / digest.split(":")[1]
    path.write_bytes(blob)
    return {"digest": digest, "diff_id": sha256_digest(tar_bytes), "path": path, "size": len(blob)}


def make_image(directory: Path, platform: Platform, layer_sizes: list[int]) -> dict[str, Any]:
    """Layers, config and OCI manifest of a small made-up image."""
    layers = [make_layer(directory, n) for n in layer_sizes]
    config = json.dumps(
        {
            **platform.as_oci(),
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [la["diff_id"] for la in layers]},
            "created": "1970-01-01T00:00:00Z",
        },
        sort_keys=True,
    ).encode()
    config_digest = sha256_digest(config)
    config_path = directory / config_digest.split(":")[1]
    config_path.write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": la["digest"], "size": la["size"]}
                for la in layers
            ],
        }
    ).encode()
    blobs = [BlobSpec(la["digest"], la["size"], la["path"]) for la in layers]
    blobs.append(BlobSpec(config_digest, len(config), data=config))  # a mix: layers in files, the config in memory
    return {"platform": platform, "layers": layers, "blobs": blobs, "manifest": manifest, "config_path": config_path}


def make_index(images: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256_digest(img["manifest"]),
                    "size": len(img["manifest"]),
                    "platform": img["platform"].as_oci(),
                }
                for img in images
            ],
        }
    ).encode()


def unique_repo(prefix: str = "edgepack-test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


class RecordingReporter:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def start(self, task: str, total: int | None = None) -> None:
        self.events.append(("start", task, total))

    def advance(self, task: str, amount: int) -> None:
        self.events.append(("advance", task, amount))

    def done(self, task: str, note: str = "") -> None:
        self.events.append(("done", task, note))

    def notes(self) -> list[str]:
        return [note for kind, _, note in self.events if kind == "done"]


# ------------------------------------------------------------------------------------------------ auth units
def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/python:pull repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") == ("", {})


def test_scope_cover() -> None:
    assert covers(["repository:a:pull,push"], ["repository:a:pull"])
    assert covers(["repository:a:pull,push", "repository:b:pull"], ["repository:b:pull", "repository:a:push"])
    assert not covers(["repository:a:pull"], ["repository:a:pull,push"])
    assert not covers(["repository:a:pull,push"], ["repository:b:pull"])
    assert covers(["repository:a:pull"], [])


def test_credentials_coerce() -> None:
    assert Credentials.coerce(None) is None
    assert Credentials.coerce(("", "")) is None
    assert Credentials.coerce(("u", "p")) == Credentials("u", "p", source="--username/--password")
    assert Credentials.coerce({"username": "u", "password": "p"}).username == "u"
    with pytest.raises(InvalidInputError, match="both a registry username and a password"):
        Credentials.coerce(("u", ""))
    assert "p" not in repr(Credentials("u", "secret-pw"))


def test_docker_config_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    write_docker_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": basic_auth_entry("hubuser", "hub:pw"),
                "127.0.0.1:5000": {"username": "alice", "password": "pw"},
                "http://myacr.azurecr.io/v2/": {"identitytoken": "refresh-me"},
                "empty.example.com": {},
            }
        },
    )
    hub = credentials_from_docker_config("registry-1.docker.io")
    assert (hub.username, hub.password) == ("hubuser", "hub:pw")
    assert credentials_from_docker_config("docker.io") == hub
    assert hub.source == str(tmp_path / "config.json")
    local = credentials_from_docker_config("127.0.0.1:5000")
    assert (local.username, local.password) == ("alice", "pw")
    assert credentials_from_docker_config("myacr.azurecr.io").identity_token == "refresh-me"
    assert credentials_from_docker_config("empty.example.com") is None
    assert credentials_from_docker_config("127.0.0.1:5001") is None


def test_docker_config_missing_or_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert credentials_from_docker_config("ghcr.io") is None
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"config.json is not valid JSON"):
        credentials_from_docker_config("ghcr.io")
    write_docker_config(tmp_path, {"auths": {"ghcr.io": {"auth": "bm9jb2xvbg=="}}})  # "nocolon"
    with pytest.raises(InvalidInputError, match="not base64 of user:password"):
        credentials_from_docker_config("ghcr.io")


def fake_helper(bin_dir: Path, name: str, known: dict[str, tuple[str, str]]) -> None:
    """A ``docker-credential-<name>`` that knows ``known`` (server -> (user, secret))."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    table = json.dumps({k: {"ServerURL": k, "Username": u, "Secret": s} for k, (u, s) in known.items()})
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"table = json.loads({table!r})\n"
        "assert sys.argv[1] == 'get'\n"
        "server = sys.stdin.read().strip()\n"
        "if server not in table:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(table[server]))\n"
    )
    script.chmod(0o755)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    fake_helper(bin_dir, "edgepacktest", {"ghcr.io": ("gh", "s1"), "https://index.docker.io/v1/": ("hub", "s2")})
    fake_helper(bin_dir, "edgepackstore", {"store.example.com": ("<token>", "refresh-token")})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    write_docker_config(
        tmp_path,
        {
            "credHelpers": {"ghcr.io": "edgepacktest", "docker.io": "edgepacktest"},
            "credsStore": "edgepackstore",
            "auths": {"fallback.example.com": basic_auth_entry("fb", "pw")},
        },
    )
    gh = credentials_from_docker_config("ghcr.io")
    assert (gh.username, gh.password) == ("gh", "s1") and "docker-credential-edgepacktest" in gh.source
    assert credentials_from_docker_config("registry-1.docker.io").username == "hub"
    store = credentials_from_docker_config("store.example.com")
    assert store.identity_token == "refresh-token" and not store.username
    # the store has nothing for this one: the plain auths entry is used
    assert credentials_from_docker_config("fallback.example.com").username == "fb"
    assert credentials_from_docker_config("nothing.example.com") is None
    write_docker_config(tmp_path, {"credsStore": "not-installed-xyz"})
    with pytest.raises(EdgepackError, match=r"docker-credential-not-installed-xyz .* is not installed"):
        credentials_from_docker_config("ghcr.io")


def test_unreachable_registry() -> None:
    port = registries.free_port()
    client = RegistryClient(f"127.0.0.1:{port}", retries=1, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(EdgepackError, match=rf"cannot reach registry 127\.0\.0\.1:{port} \(connection refused\)"):
        client.get_manifest(ImageRef.parse(f"127.0.0.1:{port}/library/python:3.11-slim"))
    assert time.monotonic() - t0 < 5
    with pytest.raises(EdgepackError, match=r"cannot reach registry no-such-host\.invalid:443 \(unknown host name\)"):
        RegistryClient("no-such-host.invalid", retries=0).ping()


def test_client_refuses_refs_of_other_registries() -> None:
    client = RegistryClient("127.0.0.1:5000")
    with pytest.raises(InvalidInputError, match=r"is on registry registry-1\.docker\.io, not 127\.0\.0\.1:5000"):
        client.get_manifest(ImageRef.parse("python:3.11-slim"))


# ------------------------------------------------------------------------------------------------ dev registry
@pytest.fixture(scope="module")
def dev_registry(dev_services: dict[str, str]) -> str:
    return dev_services["EDGEPACK_TEST_REGISTRY"]


@pytest.fixture(scope="module")
def base_ref(dev_services: dict[str, str]) -> ImageRef:
    return ImageRef.parse(dev_services["EDGEPACK_TEST_BASE_IMAGE"])


@pytest.fixture
def client(dev_registry: str, tmp_path: Path) -> Iterator[RegistryClient]:
    with RegistryClient(dev_registry, cache=tmp_path / "blob-cache") as c:
        yield c


@pytest.mark.slow
def test_resolve_base_index_for_both_platforms(client: RegistryClient, base_ref: ImageRef) -> None:
    index, media_type, index_digest = client.get_manifest(base_ref)
    assert media_type in (OCI_INDEX, DOCKER_LIST)
    assert index_digest == sha256_digest(index) == client.last_index_digest(base_ref)
    assert client.head_manifest(base_ref) == index_digest
    assert set(client.platforms(base_ref)) >= {"linux/amd64"}
    digests = set()
    for platform in (AMD64, ARM64):
        manifest, digest, config = client.resolve_platform(base_ref, platform)
        assert digest == sha256_digest(manifest)
        assert config["architecture"] == platform.architecture and config["os"] == "linux"
        doc = json.loads(manifest)
        assert doc["layers"] and len(config["rootfs"]["diff_ids"]) == len(doc["layers"])
        digests.add(digest)
    assert len(digests) == 2
    # pinned by digest: the same index, verified
    pinned = base_ref.with_digest(index_digest)
    assert client.get_manifest(pinned)[2] == index_digest
    assert client.resolve_platform(pinned, AMD64)[1] == client.resolve_platform(base_ref, AMD64)[1]


@pytest.mark.slow
def test_missing_platform_lists_what_the_base_has(client: RegistryClient, base_ref: ImageRef) -> None:
    with pytest.raises(NotFoundError, match=r"has no linux/arm/v7 image \(it has linux/amd64, linux/arm64"):
        client.resolve_platform(base_ref, Platform("linux", "arm", "v7"))
    single = base_ref.with_tag(f"{base_ref.tag}-amd64")
    _, _, config = client.resolve_platform(single, AMD64)
    assert config["architecture"] == "amd64"
    with pytest.raises(NotFoundError, match=r"is a single linux/amd64 image, not linux/arm64"):
        client.resolve_platform(single, ARM64)
    with pytest.raises(NotFoundError, match="MANIFEST_UNKNOWN"):
        client.get_manifest(base_ref.with_tag("no-such-tag"))


@pytest.mark.slow
def test_fetch_blob_verifies_and_caches(client: RegistryClient, base_ref: ImageRef, tmp_path: Path) -> None:
    manifest, _, _ = client.resolve_platform(base_ref, AMD64)
    layer = min(json.loads(manifest)["layers"], key=lambda la: la["size"])
    reporter = RecordingReporter()
    dest = tmp_path / "cache"
    path = client.fetch_blob(base_ref.repository, layer["digest"], dest, reporter, layer["size"])
    assert path == dest / "sha256" / layer["digest"].split(":")[1]
    assert sha256_digest(path.read_bytes()) == layer["digest"] and path.stat().st_size == layer["size"]
    assert reporter.notes() == ["downloaded"]
    assert sum(n for kind, _, n in reporter.events if kind == "advance") == layer["size"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    mtime = path.stat().st_mtime_ns
    again = RecordingReporter()
    assert client.fetch_blob(base_ref.repository, layer["digest"], dest, again, layer["size"]) == path
    assert path.stat().st_mtime_ns == mtime and again.events == []  # served from the cache
    with pytest.raises(NotFoundError):
        client.fetch_blob(base_ref.repository, "sha256:" + "0" * 64, dest)


@pytest.mark.slow
def test_push_image_then_repush_sends_nothing(client: RegistryClient, tmp_path: Path) -> None:
    repo = unique_repo()
    images = [make_image(tmp_path / "blobs", p, [300_000, 50_000]) for p in (AMD64, ARM64)]
    blobs = [b for img in images for b in img["blobs"]]
    reporter = RecordingReporter()
    stats = client.push_blobs(repo, blobs, reporter)
    total = sum(b.size for b in blobs)
    assert (stats.blobs, stats.uploaded, stats.existed, stats.mounted) == (6, 6, 0, 0)
    assert stats.bytes_sent == total
    assert reporter.notes().count("pushed") == 6
    for img in images:
        assert client.put_manifest(
            repo, sha256_digest(img["manifest"]), img["manifest"], OCI_MANIFEST
        ) == sha256_digest(img["manifest"])
    index = make_index(images)
    assert client.put_manifest(repo, "v1", index, OCI_INDEX) == sha256_digest(index)
    ref = ImageRef(client.registry, repo, "v1")
    assert client.get_manifest(ref) == (index, OCI_INDEX, sha256_digest(index))
    _, digest, config = client.resolve_platform(ref, ARM64)
    assert digest == sha256_digest(images[1]["manifest"]) and config["architecture"] == "arm64"
    assert all(client.blob_exists(repo, b.digest) for b in blobs)

    before = client.bytes_sent
    again = RecordingReporter()
    stats = client.push_blobs(repo, blobs, again)
    assert (stats.existed, stats.uploaded, stats.bytes_sent) == (6, 0, 0)
    assert client.bytes_sent == before
    assert again.notes() == ["exists"] * 6

    skopeo = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--override-arch", "arm64", f"docker://{ref}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert skopeo.returncode == 0, skopeo.stderr
    assert json.loads(skopeo.stdout)["Architecture"] == "arm64"


@pytest.mark.slow
def test_push_of_files_and_bytes_uploads_only_what_is_missing(client: RegistryClient, tmp_path: Path) -> None:
    repo = unique_repo()
    image = make_image(tmp_path / "blobs", AMD64, [30_000, 20_000, 10_000])
    first_layer, config = image["blobs"][0], image["blobs"][-1]
    assert first_layer.path is not None and config.data is not None
    client.push_blobs(repo, [first_layer, config])
    reporter = RecordingReporter()
    stats = client.push_blobs(repo, image["blobs"], reporter)
    assert (stats.blobs, stats.existed, stats.uploaded) == (4, 2, 2)
    assert sorted(stats.uploaded_digests) == sorted(b.digest for b in image["blobs"][1:3])
    assert stats.bytes_sent == sum(b.size for b in image["blobs"][1:3])
    assert client.get_blob(repo, config.digest) == config.data


def test_blob_spec_holds_its_bytes_one_way() -> None:
    digest = sha256_digest(b"abc")
    assert BlobSpec(digest, 3, data=b"abc").task == f"push {digest[7:19]}"
    assert BlobSpec(digest, 3, label="config linux/amd64").task == "push config linux/amd64"
    with pytest.raises(ValueError, match="either as a file or in memory"):
        BlobSpec(digest, 3, Path("/tmp/x"), b"abc")
    with pytest.raises(ValueError, match="3 bytes in memory, size says 4"):
        BlobSpec(digest, 4, data=b"abc")


@pytest.mark.slow
def test_cross_repository_mount(client: RegistryClient, tmp_path: Path) -> None:
    source, target = unique_repo(), unique_repo()
    image = make_image(tmp_path / "blobs", AMD64, [200_000, 10_000])
    client.push_blobs(source, image["blobs"])
    mounts = [BlobSpec(b.digest, b.size, source=source, label=f"layer{i}") for i, b in enumerate(image["blobs"])]
    reporter = RecordingReporter()
    stats = client.push_blobs(target, mounts, reporter)
    assert (stats.mounted, stats.uploaded, stats.bytes_sent) == (3, 0, 0)
    assert reporter.notes() == [f"mounted from {source}"] * 3
    assert {task for _, task, _ in reporter.events} == {"push layer0", "push layer1", "push layer2"}
    assert all(client.blob_exists(target, b.digest) for b in image["blobs"])
    assert client.mount_blob(unique_repo(), "sha256:" + "1" * 64, source) is False


@pytest.mark.slow
def test_base_blobs_without_local_file_are_fetched_then_uploaded(
    client: RegistryClient, base_ref: ImageRef, tmp_path: Path
) -> None:
    """A blob that only the base (on another registry) holds: fetched into the cache, then pushed."""
    manifest, _, _ = client.resolve_platform(base_ref, AMD64)
    layer = min(json.loads(manifest)["layers"], key=lambda la: la["size"])
    with registries.running(registries.start_registry(tmp_path / "other")) as other:
        target = RegistryClient(other.address, cache=tmp_path / "cache")
        stats = target.push_blobs("copy/base", [BlobSpec(layer["digest"], layer["size"], source=base_ref)])
        assert (stats.uploaded, stats.bytes_sent) == (1, layer["size"])
        assert target.blob_exists("copy/base", layer["digest"])
        assert (tmp_path / "cache" / "sha256" / layer["digest"].split(":")[1]).is_file()
        with pytest.raises(NotFoundError, match=r"neither in .* nor in a local file"):
            target.push_blobs("copy/base", [BlobSpec("sha256:" + "2" * 64, 10)])


@pytest.mark.slow
def test_chunked_upload_and_digest_mismatch(dev_registry: str, tmp_path: Path) -> None:
    repo = unique_repo()
    layer = make_layer(tmp_path, 300_000)
    chunked = RegistryClient(dev_registry, chunk_size=64 * 1024)
    assert chunked.upload_blob(repo, layer["digest"], layer["path"], layer["size"]) == layer["size"]
    assert chunked.get_blob(repo, layer["digest"]) == layer["path"].read_bytes()
    other = make_layer(tmp_path, 1000)
    plain = RegistryClient(dev_registry, retries=0)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        plain.upload_blob(repo, "sha256:" + "3" * 64, other["path"], other["size"])
    with pytest.raises(IntegrityError, match=r"has 1\d* bytes, expected 5"):
        plain.upload_blob(repo, other["digest"], other["path"], 5)


PUSH_SCRIPT = """
import json, sys, time
from pathlib import Path
from packager.image.registry import BlobSpec, RegistryClient
args = json.loads(sys.argv[1])
class Slow:
    finished = 0
    def start(self, task, total=None): pass
    def advance(self, task, amount):
        if self.finished >= 3:
            print("advance", task, flush=True)
            time.sleep(0.05)
    def done(self, task, note=""):
        self.finished += 1
        print("done", task, note, flush=True)
        time.sleep(0.1)
blobs = [BlobSpec(d, s, Path(p)) for d, p, s in args["blobs"]]
RegistryClient(args["registry"]).push_blobs(args["repo"], blobs, Slow(), max_workers=1)
print("finished", flush=True)
"""


@pytest.mark.slow
def test_interrupted_push_completes_on_rerun(client: RegistryClient, tmp_path: Path) -> None:
    repo = unique_repo()
    image = make_image(tmp_path / "blobs", AMD64, [400_000] * 6)
    args = {
        "registry": client.registry,
        "repo": repo,
        "blobs": [[b.digest, str(b.path or image["config_path"]), b.size] for b in image["blobs"]],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PUSH_SCRIPT, json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("advance"):  # three blobs are in, the fourth is half sent
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL and "finished\n" not in lines
    present = [b.digest for b in image["blobs"] if client.blob_exists(repo, b.digest)]
    assert len(present) == 3

    stats = client.push_blobs(repo, image["blobs"])
    assert (stats.existed, stats.uploaded) == (3, len(image["blobs"]) - 3)
    assert stats.bytes_sent == sum(b.size for b in image["blobs"] if b.digest not in present)
    digest = client.put_manifest(repo, "v1", image["manifest"], OCI_MANIFEST)
    _, got, config = client.resolve_platform(ImageRef(client.registry, repo, "v1"), AMD64)
    assert got == digest and config["architecture"] == "amd64"


# ------------------------------------------------------------------------------------------------ auth registries
@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registries.Registry]:
    if not registries.REGISTRY_BIN.exists():
        unavailable(f"{registries.REGISTRY_BIN} is missing: run scripts/dev-services.sh")
    with registries.running(registries.htpasswd_registry(tmp_path_factory.mktemp("basic"), {"alice": "s3cret"})) as r:
        yield r


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    server = TokenServer({"alice": "s3cret"}, refresh_tokens={"refresh-alice": "alice"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[registries.Registry]:
    if not registries.REGISTRY_BIN.exists():
        unavailable(f"{registries.REGISTRY_BIN} is missing: run scripts/dev-services.sh")
    with registries.running(registries.token_registry(tmp_path_factory.mktemp("token"), token_server)) as r:
        yield r


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG for the test (tests write config.json into it)."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def roundtrip(client: RegistryClient, repo: str, tmp_path: Path) -> dict[str, Any]:
    """Push a small image to ``repo`` and read it back."""
    image = make_image(tmp_path / uuid.uuid4().hex, AMD64, [20_000, 5_000])
    stats = client.push_blobs(repo, image["blobs"])
    assert stats.uploaded == 3
    client.put_manifest(repo, "v1", image["manifest"], OCI_MANIFEST)
    ref = ImageRef(client.registry, repo, "v1")
    assert client.get_manifest(ref)[0] == image["manifest"]
    assert client.resolve_platform(ref, AMD64)[2]["architecture"] == "amd64"
    return image


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["basic", "token"])
def test_anonymous_and_wrong_password_are_refused(
    kind: str, request: pytest.FixtureRequest, docker_config: Path, tmp_path: Path
) -> None:
    registry = request.getfixturevalue(f"{kind}_registry")
    layer = make_layer(tmp_path, 100)
    login = rf"run `docker login {registry.address}` or pass --username/--password"
    anonymous = RegistryClient(registry.address)
    with pytest.raises(EdgepackError, match=rf"registry {registry.address} requires authentication for .*: {login}"):
        anonymous.push_blobs("team/app", [BlobSpec(layer["digest"], layer["size"], layer["path"])])
    with pytest.raises(EdgepackError, match="requires authentication"):
        anonymous.get_manifest(ImageRef(registry.address, "team/app", "v1"))
    wrong = RegistryClient(registry.address, credentials=("alice", "wrong"))
    with pytest.raises(
        EdgepackError,
        match=rf"refused the credentials of user 'alice' \(from --username/--password\) for .*: {login}",
    ):
        wrong.blob_exists("team/app", layer["digest"])
    # a wrong password stored by docker login names where it came from
    write_docker_config(docker_config, {"auths": {registry.address: basic_auth_entry("alice", "nope")}})
    with pytest.raises(EdgepackError, match=rf"credentials of user 'alice' \(from {docker_config}/config.json\)"):
        RegistryClient(registry.address).blob_exists("team/app", layer["digest"])


@pytest.mark.slow
def test_basic_auth_with_docker_config_and_explicit_override(
    basic_registry: registries.Registry, docker_config: Path, tmp_path: Path
) -> None:
    write_docker_config(docker_config, {"auths": {basic_registry.address: basic_auth_entry("alice", "s3cret")}})
    roundtrip(RegistryClient(basic_registry.address), unique_repo(), tmp_path)
    # explicit credentials win over docker login's
    write_docker_config(docker_config, {"auths": {basic_registry.address: basic_auth_entry("alice", "stale")}})
    roundtrip(RegistryClient(basic_registry.address, credentials=("alice", "s3cret")), unique_repo(), tmp_path)


@pytest.mark.slow
def test_token_auth_reuses_tokens_per_scope(
    token_registry: registries.Registry, token_server: TokenServer, docker_config: Path, tmp_path: Path
) -> None:
    write_docker_config(docker_config, {"auths": {token_registry.address: basic_auth_entry("alice", "s3cret")}})
    client = RegistryClient(token_registry.address)
    repo, other = unique_repo(), unique_repo()
    first = len(token_server.requests)
    image = roundtrip(client, repo, tmp_path)  # parallel HEADs, uploads, a manifest, reads
    assert client.blob_exists(repo, image["blobs"][0].digest)
    assert token_server.count(f"repository:{repo}:pull,push") == 1
    assert client.auth.token_requests == 1
    assert [user for user, _ in token_server.requests[first:]] == ["alice"]

    # a push that mounts asks once for push on the target and pull on the source
    stats = client.push_blobs(other, [BlobSpec(b.digest, b.size, source=repo) for b in image["blobs"]])
    assert (stats.mounted, stats.bytes_sent) == (3, 0)
    assert client.blob_exists(other, image["blobs"][0].digest)
    assert client.auth.token_requests == 2
    assert token_server.count(f"repository:{other}:pull,push") == 1
    user, scopes = token_server.requests[-1]
    assert user == "alice" and f"repository:{repo}:pull" in scopes


@pytest.mark.slow
def test_token_auth_with_credential_helper_and_identity_token(
    token_registry: registries.Registry, docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_helper(bin_dir, "edgepacktest", {token_registry.address: ("alice", "s3cret")})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    write_docker_config(docker_config, {"credHelpers": {token_registry.address: "edgepacktest"}})
    roundtrip(RegistryClient(token_registry.address), unique_repo(), tmp_path)

    write_docker_config(docker_config, {"auths": {token_registry.address: {"identitytoken": "refresh-alice"}}})
    roundtrip(RegistryClient(token_registry.address), unique_repo(), tmp_path)
    write_docker_config(docker_config, {"auths": {token_registry.address: {"identitytoken": "revoked"}}})
    with pytest.raises(EdgepackError, match="refused the credentials of a token"):
        RegistryClient(token_registry.address).blob_exists("team/app", "sha256:" + "4" * 64)


class _NoNetwork:
    """A session that records what would be sent and answers a token."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def get(self, url: str, **kw: Any) -> Any:
        self.sent.append(url)
        return type("R", (), {"status_code": 200, "json": lambda self: {"token": "t"}, "text": ""})()

    post = get


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("http://auth.example.com/token", False),
        ("http://127.0.0.1.nip.io/token", False),
        ("ftp://auth.example.com/token", False),
        ("https://auth.example.com/token", True),
        ("http://127.0.0.1:5001/token", True),
        ("http://[::1]:5001/token", True),
        ("http://localhost/token", True),
    ],
)
def test_credentials_go_to_a_plain_http_token_realm_only_on_loopback(
    realm: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEPACK_INSECURE_REGISTRIES", raising=False)
    session = _NoNetwork()
    auth = RegistryAuth("myreg.example.com", session, Credentials("me", "secret"))  # type: ignore[arg-type]
    auth._params = {"realm": realm, "service": "reg"}
    if allowed:
        assert auth.fetch_token(("repository:x:pull",)) == "t" and session.sent == [realm]
    else:
        with pytest.raises(EdgepackError, match="not HTTPS"):
            auth.fetch_token(("repository:x:pull",))
        assert session.sent == []
    anonymous = RegistryAuth("myreg.example.com", _NoNetwork(), None)  # type: ignore[arg-type]
    anonymous._looked_up = True
    anonymous._params = {"realm": "http://auth.example.com/token"}
    assert anonymous.fetch_token(("repository:x:pull",)) == "t"  # nothing secret to protect
