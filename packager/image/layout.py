"""Local outputs: an OCI image layout folder (all platforms) and a docker-archive tarball (one platform).

Docker 20.10's ``docker load`` does not read OCI layouts, hence the docker-archive: ``manifest.json``
(``Config``, ``RepoTags``, ``Layers``), the config JSON and the layer blobs (gzip is fine: ``docker
load`` decompresses what it finds). Both are written next to their destination and renamed into
place, so a reader never sees half an output.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from packager.errors import EdgepackError, InvalidInputError
from packager.fs import atomic_writer, replace_dir
from packager.image.oci import OCI_INDEX, PlatformImage, canonical_json, digest_bytes, image_index
from packager.image.tarball import source_date_epoch

BlobPath = Callable[[str], Path]
REF_NAME = "org.opencontainers.image.ref.name"


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise EdgepackError(f"unsupported digest {digest!r}: only sha256 is handled")
    return hexpart


def _local_file(digest: str, size: int, known: Path | None, blob_path: BlobPath) -> Path:
    path = known if known is not None and known.is_file() else Path(blob_path(digest))
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise EdgepackError(f"blob {digest} is not available locally ({path}); build or pull the image again") from None
    if actual != size:
        raise EdgepackError(f"blob {digest} at {path} has {actual} bytes, expected {size}; clear the cache and rebuild")
    return path


def _copy(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    try:
        os.link(src, dest)  # same file system: no copy; blobs are immutable (written once, renamed into place)
    except OSError:
        shutil.copyfile(src, dest)


def write_oci_layout(
    directory: Path,
    images: Sequence[PlatformImage],
    index_annotations: Mapping[str, str] | None,
    blob_path: BlobPath,
    ref_name: str = "latest",
) -> str:
    """Write all ``images`` and their image index as an OCI image layout at ``directory``; return the index digest.

    ``index.json`` points at the image index (tagged ``ref_name``), so ``skopeo copy oci:DIR:latest``
    and ``oci:DIR`` both work. An existing layout at ``directory`` is replaced.
    """
    if not images:
        raise InvalidInputError("no image to write: build at least one platform")
    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    index = image_index([(img.manifest_digest, len(img.manifest), img.platform) for img in images], index_annotations)
    index_digest = digest_bytes(index)
    staged = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        blobs = staged / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for img in images:
            for blob in img.blobs():
                if blob.data is not None:
                    (blobs / _hex(blob.digest)).write_bytes(blob.data)
                else:
                    _copy(_local_file(blob.digest, blob.size, blob.path, blob_path), blobs / _hex(blob.digest))
            (blobs / _hex(img.manifest_digest)).write_bytes(img.manifest)
        (blobs / _hex(index_digest)).write_bytes(index)
        (staged / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        top = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_INDEX,
                    "digest": index_digest,
                    "size": len(index),
                    "annotations": {REF_NAME: ref_name},
                }
            ],
        }
        (staged / "index.json").write_bytes(canonical_json(top))
        os.chmod(staged, 0o755)
        if (directory.exists() or directory.is_symlink()) and not directory.is_dir():
            raise InvalidInputError(f"{directory} exists and is not a folder; remove it or choose another output")
        replace_dir(staged, directory)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return index_digest


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = source_date_epoch()
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        assert path is not None
        with open(path, "rb") as fh:
            info.size = os.fstat(fh.fileno()).st_size
            tar.addfile(info, fh)


def write_docker_archive(file: Path, image: PlatformImage, repo_tags: Sequence[str], blob_path: BlobPath) -> None:
    """Write ``image`` as a tarball ``docker load`` accepts (Docker 20.10 and later), tagged ``repo_tags``."""
    file = Path(file).absolute()
    file.parent.mkdir(parents=True, exist_ok=True)
    config_name = f"{_hex(image.config_digest)}.json"
    layer_names: list[str] = []
    layer_files: dict[str, Path] = {}
    for desc in image.layer_descriptors():
        digest, size = desc["digest"], int(desc["size"])
        name = f"{_hex(digest)}.tar.gz" if desc["mediaType"].endswith("gzip") else f"{_hex(digest)}.tar"
        layer_names.append(name)
        if name not in layer_files:
            known = next((la.path for la in image.layers if la.digest == digest), None)
            layer_files[name] = _local_file(digest, size, known, blob_path)
    manifest = [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    with atomic_writer(file) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, config_name, data=image.config)
        for name in sorted(layer_files):
            _add(tar, name, path=layer_files[name])
        _add(tar, "manifest.json", data=json.dumps(manifest, separators=(",", ":")).encode())
