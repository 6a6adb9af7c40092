"""A base image read from an OCI image layout folder (``--base oci:DIR[:TAG]``): builds with no registry.

:class:`OciLayoutBase` answers the calls :func:`packager.image.builder.stage` makes on a
:class:`~packager.image.registry.RegistryClient` for the base (``resolve_platform``,
``last_index_digest``, ``fetch_blob``), from the layout's ``index.json`` and ``blobs/<alg>/<hex>``.
Every blob is read by its digest and its content is hashed against it before use (a damaged or
replaced blob fails the build naming it); blob files that are symbolic links are refused. A layout
is what ``skopeo copy --all docker://... oci:DIR:TAG`` or ``edgepack build --output oci:DIR`` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from packager.errors import IntegrityError, InvalidInputError, NotFoundError
from packager.image.oci import INDEX_TYPES, MANIFEST_TYPES
from packager.image.reference import validate_digest
from packager.image.registry import MAX_SMALL_BLOB, _platform_args, _platform_key, _platform_text, _usable
from packager.image.spec import Platform, Reporter

PREFIX = "oci:"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_INDEX = 4 << 20
_CHUNK = 1 << 20


def is_layout_ref(text: str | None) -> bool:
    """Whether a ``--base`` value names an OCI layout folder (``oci:DIR[:TAG]``)."""
    return bool(text) and str(text).startswith(PREFIX)


def _split(text: str) -> tuple[Path, str | None]:
    """``oci:DIR[:TAG]`` → (DIR, TAG or None); a colon is a tag separator only when DIR exists without it."""
    rest = text[len(PREFIX) :]
    if not rest:
        raise InvalidInputError(f"base {text!r}: use oci:DIR or oci:DIR:TAG (an OCI image layout folder)")
    head, sep, tag = rest.rpartition(":")
    if sep and head and "/" not in tag and not Path(rest).is_dir():
        return Path(head), tag
    return Path(rest), None


class OciLayoutBase:
    """The base image ``oci:DIR[:TAG]``: the index (or manifest) tagged TAG, or the layout's only image."""

    registry = "oci-layout"  # never the same registry as a push target: base layers are uploaded from DIR

    def __init__(self, directory: str | os.PathLike[str], tag: str | None = None) -> None:
        self.directory = Path(directory).absolute()
        self.tag = tag
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        layout = self.directory / "oci-layout"
        if not self.directory.is_dir() or not layout.is_file():
            raise NotFoundError(
                f"{self.directory} is not an OCI image layout (no oci-layout file): save one with "
                f"`skopeo copy --all docker://IMAGE oci:{self.directory}:TAG` "
                "or `bash scripts/dev-services.sh start base-images`"
            )
        self._top = self._pick(self._json(self.directory / "index.json", MAX_INDEX, "index.json"))
        self.top_digest = validate_digest(str(self._top["digest"]))
        self.top_data = self.read_blob(self.top_digest, MAX_SMALL_BLOB)
        self.top_media_type = self._media_type(self.top_data, str(self._top.get("mediaType", "")))

    @classmethod
    def parse(cls, text: str) -> OciLayoutBase:
        directory, tag = _split(text)
        return cls(directory, tag)

    # ------------------------------------------------------------------ naming
    @property
    def repository(self) -> str:
        return str(self.directory)

    def __str__(self) -> str:
        return f"{PREFIX}{self.directory}" + (f":{self.tag}" if self.tag else "")

    def with_digest(self, digest: str) -> str:
        return f"{self}@{digest}"

    def same_registry(self, other: object) -> bool:
        return False

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ reading
    def _json(self, path: Path, limit: int, what: str) -> Any:
        data = self._read(path, limit, what)
        try:
            return json.loads(data)
        except ValueError:
            raise InvalidInputError(f"{what} of OCI layout {self.directory} is not JSON") from None

    def _read(self, path: Path, limit: int, what: str) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFoundError(f"OCI layout {self.directory} has no {what}: copy the layout again") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read {what} of OCI layout {self.directory}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidInputError(f"{what} of OCI layout {self.directory} is not a regular file")
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidInputError(f"{what} of OCI layout {self.directory} is over {limit} bytes")
        return data

    def _pick(self, index: Any) -> dict[str, Any]:
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InvalidInputError(f"OCI layout {self.directory} has no image in index.json")
        named = {str((e.get("annotations") or {}).get(REF_NAME, "")): e for e in entries if isinstance(e, dict)}
        if self.tag is not None:
            if self.tag not in named:
                have = ", ".join(sorted(n for n in named if n)) or "none"
                raise NotFoundError(f"OCI layout {self.directory} has no image tagged {self.tag!r} (tags: {have})")
            return named[self.tag]
        if len(entries) == 1:
            return entries[0]
        if "latest" in named:
            return named["latest"]
        have = ", ".join(sorted(n for n in named if n)) or "none"
        raise InvalidInputError(
            f"OCI layout {self.directory} holds several images: say which, oci:DIR:TAG (tags: {have})"
        )

    def blob_file(self, digest: str) -> Path:
        algorithm, _, hexpart = validate_digest(digest).partition(":")
        return self.directory / "blobs" / algorithm / hexpart

    def read_blob(self, digest: str, limit: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob (index, manifest, config), its content checked against ``digest``."""
        data = self._read(self.blob_file(digest), limit, f"blob {digest}")
        self._check(digest, hashlib.new(digest.partition(":")[0], data).hexdigest())
        return data

    def _check(self, digest: str, actual_hex: str) -> None:
        if f"{digest.partition(':')[0]}:{actual_hex}" != digest:
            raise IntegrityError(
                f"blob {digest} of OCI layout {self.directory} has other content: the layout is damaged; save it again"
            )

    @staticmethod
    def _media_type(data: bytes, given: str) -> str:
        doc = json.loads(data)
        media_type = str(doc.get("mediaType") or given)
        if not media_type:
            media_type = INDEX_TYPES[0] if "manifests" in doc else MANIFEST_TYPES[0]
        return media_type

    # ------------------------------------------------------------------ what the builder calls
    def last_index_digest(self, ref: object = None) -> str:
        return self.top_digest

    def platforms(self, ref: object = None) -> list[str]:
        doc = json.loads(self.top_data)
        if self.top_media_type in INDEX_TYPES:
            return [_platform_text(m.get("platform") or {}) for m in doc.get("manifests", []) if _usable(m)]
        return [_platform_text(json.loads(self.read_blob(doc["config"]["digest"])))]

    def resolve_platform(self, ref: object, platform: Platform) -> tuple[bytes, str, dict[str, Any]]:
        """The layout's image for ``platform``: ``(manifest bytes, manifest digest, config)``."""
        doc = json.loads(self.top_data)
        want = _platform_key(platform.os, platform.architecture, platform.variant)
        data, digest = self.top_data, self.top_digest
        if self.top_media_type in INDEX_TYPES:
            entries = [m for m in doc.get("manifests", []) if _usable(m)]
            match = [m for m in entries if _platform_key(**_platform_args(m["platform"])) == want]
            if not match:
                have = ", ".join(_platform_text(m["platform"]) for m in entries) or "none"
                raise NotFoundError(
                    f"base image {self} has no {platform} image (it has {have}): "
                    "build for one of those platforms or pick a base image that has this one"
                )
            digest = validate_digest(str(match[0]["digest"]))
            data = self.read_blob(digest)
            doc = json.loads(data)
        elif self.top_media_type not in MANIFEST_TYPES:
            raise InvalidInputError(f"base image {self} is a {self.top_media_type}, not an image or an index")
        config = json.loads(self.read_blob(str(doc["config"]["digest"])))
        if self.top_media_type not in INDEX_TYPES:
            got = _platform_key(**_platform_args(config))
            if got[:2] != want[:2]:
                raise NotFoundError(f"base image {self} is a single {_platform_text(config)} image, not {platform}")
        missing = [la["digest"] for la in doc.get("layers", []) if not self.blob_file(la["digest"]).is_file()]
        if missing:
            raise NotFoundError(f"OCI layout {self.directory} lacks layer {missing[0]} of its {platform} image")
        return data, digest, config

    def fetch_blob(
        self, repo: str, digest: str, dest_dir: Path, reporter: Reporter | None = None, size: int | None = None
    ) -> Path:
        """The layout's file for ``digest`` (hashed once per process against its digest; never copied)."""
        path = self.blob_file(digest)
        with self._lock:
            if digest in self._verified:
                return path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise NotFoundError(f"OCI layout {self.directory} has no usable blob {digest} ({exc.strerror})") from None
        h = hashlib.new(digest.partition(":")[0])
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidInputError(f"blob {digest} of OCI layout {self.directory} is not a regular file")
            actual_size = os.fstat(f.fileno()).st_size
            if size is not None and actual_size != size:
                raise IntegrityError(
                    f"blob {digest} of OCI layout {self.directory} has {actual_size} bytes, not {size}: save it again"
                )
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        self._check(digest, h.hexdigest())
        with self._lock:
            self._verified.add(digest)
        return path


__all__ = ["PREFIX", "OciLayoutBase", "is_layout_ref"]
