"""What every edgepack module image contains, and where: the contract shared by both backends.

An image is a base image (pulled from a registry, pinned by digest) plus four layers appended in
this order, each built from a :class:`LayerSource` (a sorted list of files and where they go):

1. ``dependencies``  Python packages for the platform, ``pip install --target`` → :data:`DEPS_DIR`
2. ``edge_module``   the scoring module itself → :data:`MODULE_DIR` ``/edge_module``
3. ``models``        registered models in the Azure ML layout → :data:`MODELS_ROOT` ``/<name>/<version>/``
4. ``app``           entry script, source directory → :data:`APP_ROOT`

The OCI builder tars each source deterministically; the Docker backend COPYs the same staged
files, so both give the same filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

APP_ROOT = "/var/azureml-app"
MODELS_ROOT = "/var/azureml-app/azureml-models"
DEPS_DIR = "/opt/edgepack/site-packages"
MODULE_DIR = "/opt/edgepack/lib"
PYTHONPATH = f"{MODULE_DIR}:{DEPS_DIR}"
PORT = 5001
ENTRYPOINT = ["python3", "-m", "edge_module"]
LAYER_NAMES = ("dependencies", "edge_module", "models", "app")
#: The Python every image runs: the default base image's; the dependency layer's wheels are for it.
PYTHON_VERSION = "3.11"
DEFAULT_BASE = f"python:{PYTHON_VERSION}-slim"


def cache_dir() -> Path:
    """Where downloads and built layers are cached: ``$EDGEPACK_CACHE_DIR`` or ``~/.cache/edgepack``."""
    env = os.environ.get("EDGEPACK_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepack"


@dataclass(frozen=True, order=True)
class Platform:
    """``os/architecture[/variant]`` as OCI writes it (``linux/amd64``, ``linux/arm64``, ``linux/arm/v7``)."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")
        os_, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if arch == "arm64" and variant == "v8":
            variant = ""
        return cls(os_, arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_oci(self) -> dict[str, str]:
        doc = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            doc["variant"] = self.variant
        return doc


@dataclass(frozen=True)
class FileEntry:
    """One regular file (or symlink) of a layer: where it goes in the image and where its bytes are.

    ``path`` is absolute in the image (``/opt/edgepack/lib/edge_module/runtime.py``); exactly one of
    ``source`` (a host file), ``data`` (bytes) or ``link`` (a symlink target) is set. Parent
    directories are implied (0755, uid/gid 0). ``sha256`` (hex), when set, is what ``source``'s bytes
    must hash to: they are hashed as they are copied into a layer or context, and a mismatch fails the
    build naming ``origin`` (e.g. ``model digits:1, file model.onnx``).
    """

    path: str
    source: Path | None = None
    data: bytes | None = None
    link: str | None = None
    mode: int = 0o644
    sha256: str = ""
    origin: str = ""

    def check_digest(self, actual: str) -> None:
        """Raise :class:`~packager.errors.IntegrityError` when ``actual`` (hex) is not the recorded ``sha256``."""
        if self.sha256 and actual != self.sha256:
            from packager.errors import IntegrityError

            raise IntegrityError(
                f"{self.origin or self.path}: the stored content is damaged (expected sha256:{self.sha256}, "
                f"read sha256:{actual} from {self.source}); nothing was built from it: restore the file or, "
                "for a model, register it again"
            )


@dataclass(frozen=True)
class LayerSource:
    """The files of one layer, sorted by path, plus a key that changes whenever their content may."""

    name: str
    files: tuple[FileEntry, ...]
    cache_key: str = ""
    comment: str = ""

    @classmethod
    def of(cls, name: str, files: Iterable[FileEntry], cache_key: str = "", comment: str = "") -> LayerSource:
        return cls(name, tuple(sorted(files, key=lambda f: f.path)), cache_key, comment)


@dataclass
class Layer:
    """A built layer blob: gzip tar at ``path`` with its digest, uncompressed ``diff_id`` and size."""

    name: str
    path: Path
    digest: str
    diff_id: str
    size: int
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
    comment: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


class Reporter(Protocol):
    """Progress sink (the CLI's is rich): a task per layer, download or upload, counted in bytes."""

    def start(self, task: str, total: int | None = None) -> None: ...

    def advance(self, task: str, amount: int) -> None: ...

    def done(self, task: str, note: str = "") -> None: ...


class NullReporter:
    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, amount: int) -> None:
        pass

    def done(self, task: str, note: str = "") -> None:
        pass
