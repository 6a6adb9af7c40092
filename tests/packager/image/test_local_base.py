"""Base images from OCI layout folders (``--base oci:DIR[:TAG]``): platforms, tags, verified blobs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from packager.errors import IntegrityError, InvalidInputError, NotFoundError
from packager.image.local_base import OciLayoutBase, is_layout_ref
from packager.image.oci import OCI_INDEX, OCI_MANIFEST
from packager.image.spec import Platform


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(text: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/arch")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_layout(root: Path, tags: tuple[str, ...] = ("3.11-slim",)) -> Path:
    """A two-platform base (amd64, arm64/v8) as skopeo writes it: index.json -> image index -> manifests."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entries = []
    for arch, variant in (("amd64", ""), ("arm64", "v8")):
        config = {"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/usr/bin"]}, "rootfs": {}}
        if variant:
            config["variant"] = variant
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(root, _layer(arch))}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(root, json.dumps(config).encode()),
            },
            "layers": [layer],
        }
        platform = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        entries.append({"mediaType": OCI_MANIFEST, **_blob(root, json.dumps(manifest).encode()), "platform": platform})
    index = _blob(root, json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode())
    top = [{"mediaType": OCI_INDEX, **index, "annotations": {"org.opencontainers.image.ref.name": t}} for t in tags]
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": top}))
    return root


def test_platforms_manifests_and_layers_from_a_layout(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "base")
    assert is_layout_ref(f"oci:{layout}:3.11-slim") and not is_layout_ref("python:3.11-slim")
    base = OciLayoutBase.parse(f"oci:{layout}:3.11-slim")
    assert base.tag == "3.11-slim" and base.directory == layout
    assert base.platforms() == ["linux/amd64", "linux/arm64/v8"]
    assert OciLayoutBase.parse(f"oci:{layout}").last_index_digest() == base.last_index_digest()  # the only image
    for arch in ("amd64", "arm64"):
        data, digest, config = base.resolve_platform(None, Platform("linux", arch))
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert config["architecture"] == arch
        layer = json.loads(data)["layers"][0]
        path = base.fetch_blob(str(base), layer["digest"], tmp_path / "unused", None, layer["size"])
        assert path.parent == layout / "blobs" / "sha256"  # read in place, not copied
    with pytest.raises(NotFoundError, match=r"no linux/arm/v7 image \(it has linux/amd64, linux/arm64/v8\)"):
        base.resolve_platform(None, Platform("linux", "arm", "v7"))


def test_tags_choose_the_image(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "base", tags=("a", "b"))
    assert OciLayoutBase(layout, "b").last_index_digest() == OciLayoutBase(layout, "a").last_index_digest()
    with pytest.raises(NotFoundError, match=r"no image tagged 'c' \(tags: a, b\)"):
        OciLayoutBase(layout, "c")
    with pytest.raises(InvalidInputError, match="holds several images: say which"):
        OciLayoutBase(layout)


def test_damaged_blobs_are_refused(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "base")
    base = OciLayoutBase(layout, "3.11-slim")
    data, _, _ = base.resolve_platform(None, Platform("linux", "amd64"))
    layer = json.loads(data)["layers"][0]
    path = base.blob_file(layer["digest"])
    path.write_bytes(_layer("tampered-amd64"))
    with pytest.raises(IntegrityError, match=r"has \d+ bytes, not|has other content"):
        OciLayoutBase(layout, "3.11-slim").fetch_blob("", layer["digest"], tmp_path, None, layer["size"])
    with pytest.raises(IntegrityError, match="has other content"):
        OciLayoutBase(layout, "3.11-slim").fetch_blob("", layer["digest"], tmp_path, None, None)
    # a manifest changed on disk fails before anything is built from it
    index = json.loads(base.top_data)
    base.blob_file(index["manifests"][1]["digest"]).write_bytes(b'{"schemaVersion":2}')
    with pytest.raises(IntegrityError, match="the layout is damaged"):
        OciLayoutBase(layout, "3.11-slim").resolve_platform(None, Platform("linux", "arm64"))


def test_symlinked_blobs_and_non_layouts_are_refused(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "base")
    base = OciLayoutBase(layout, "3.11-slim")
    data, _, _ = base.resolve_platform(None, Platform("linux", "amd64"))
    layer = json.loads(data)["layers"][0]
    path = base.blob_file(layer["digest"])
    outside = tmp_path / "outside"
    path.rename(outside)
    path.symlink_to(outside)
    with pytest.raises(NotFoundError, match="no usable blob"):
        OciLayoutBase(layout, "3.11-slim").fetch_blob("", layer["digest"], tmp_path, None, layer["size"])
    with pytest.raises(NotFoundError, match=r"is not an OCI image layout.*dev-services\.sh start base-images"):
        OciLayoutBase.parse(f"oci:{tmp_path / 'nothing'}")
