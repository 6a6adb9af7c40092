"""Service state kept in the workspace: one folder per service, a record, a private secrets file, a lock.

:class:`RecordStore` is the pattern; :class:`ServiceStore` keeps services and
:class:`cloud_targets.endpoints.store.EndpointStore` endpoints the same way.

Layout::

    <workspace>/services/                    0700
    <workspace>/services/<name>/             0700, never a symbolic link
    <workspace>/services/<name>/service.json the record (no secrets), written atomically
    <workspace>/services/<name>/secrets.json keys and token secret, 0600, opened with O_NOFOLLOW
    <workspace>/services/<name>/.lock        flock held around every read-modify-write
    <workspace>/services/<name>/...          what the target keeps (process-mode content, logs)

Two CLI calls on one service serialise on the lock, so neither loses the other's change.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from cloud_targets.services.names import check_service_name
from packager.errors import EdgepackError, InvalidInputError, NotFoundError
from packager.fs import write_atomic
from packager.workspace import Workspace

SERVICES_DIR = "services"
RECORD_FILE = "service.json"
SECRETS_FILE = "secrets.json"
LOCK_FILE = ".lock"


def now_iso() -> str:
    """The current UTC time as v1 printed it (ISO 8601)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ServiceSecrets:
    """A service's keys and token secret; only ever stored in ``secrets.json`` (0600)."""

    primary_key: str | None = None
    secondary_key: str | None = None
    token_secret: str | None = None

    def __repr__(self) -> str:  # never print a secret
        shown = [f.name for f in fields(self) if getattr(self, f.name)]
        return f"ServiceSecrets(set={shown})"


@dataclass
class ServiceRecord:
    """What ``service.json`` holds: everything about a service but its secrets."""

    name: str
    compute_type: str
    deployment_config: dict[str, Any] = field(default_factory=dict)  # no keys
    models: list[str] = field(default_factory=list)  # NAME:VERSION ids
    inference_config: dict[str, Any] = field(default_factory=dict)  # InferenceConfig.serialize()
    app: dict[str, Any] = field(default_factory=dict)  # entry script / source dir / conda file paths, for reload
    image: str | None = None
    image_digest: str | None = None
    scoring_uri: str | None = None
    swagger_uri: str | None = None
    state: str = "Transitioning"
    error: str | None = None
    target: dict[str, Any] = field(default_factory=dict)  # container id, or pid + start time; port
    auth: str = "none"  # none | key | token
    build: dict[str, Any] = field(default_factory=dict)  # how the last image was made: transfer, seconds
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    created_time: str = field(default_factory=now_iso)
    updated_time: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ServiceRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


def _check_private_dir(path: Path, kind: str = "service") -> None:
    """Refuse a symbolic link or another user's folder; make ours 0700."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # another call may make it at the same moment
            path.mkdir(mode=0o700)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EdgepackError(
            f"{kind} state folder {path} is a symbolic link or not a folder: remove it (links are not followed)"
        )
    if st.st_uid != os.getuid():
        raise EdgepackError(f"{kind} state folder {path} belongs to another user (uid {st.st_uid}): remove it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


class RecordStore:
    """Records of one kind (services, endpoints) in a workspace: create, read, update under a lock, list, remove.

    Subclasses name the folder (``DIR``), the record file and class, the kind (for messages) and the name rule.
    """

    DIR: ClassVar[str] = SERVICES_DIR
    RECORD_FILE: ClassVar[str] = RECORD_FILE
    KIND: ClassVar[str] = "service"
    LIST_COMMAND: ClassVar[str] = "edgepack service list"
    record_cls: ClassVar[Any] = None

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.root = workspace.path / self.DIR

    def check_name(self, name: str) -> str:
        return check_service_name(name)

    def _ensure_root(self) -> Path:
        _check_private_dir(self.root, self.KIND)
        return self.root

    def record_dir(self, name: str) -> Path:
        """``<workspace>/<DIR>/<name>`` (checked: a valid name, a private folder that is no link)."""
        self.check_name(name)
        self._ensure_root()
        path = self.root / name
        if os.path.lexists(path):
            _check_private_dir(path, self.KIND)
        return path

    def exists(self, name: str) -> bool:
        return (self.record_dir(name) / self.RECORD_FILE).is_file()

    @contextlib.contextmanager
    def lock(self, name: str, create: bool = False, wait: bool = True) -> Iterator[Path | None]:
        """Hold the record's lock (exclusive flock); yields its folder. ``create`` makes the folder.

        With ``wait=False`` it yields None at once when another call holds the lock. A lock won on a lock
        file that was removed meanwhile (the holder deleted the record) is retaken on the current one."""
        path = self.record_dir(name)
        while True:
            if create and not os.path.lexists(path):
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)
                _check_private_dir(path, self.KIND)
            if not path.is_dir():
                raise self.not_found(name)
            try:
                fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the folder went away between the check and the open
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                yield None
                return
            if _same_file(fd, path / LOCK_FILE):
                break
            os.close(fd)  # the record was removed while we waited: lock the current file (or none)
        try:
            yield path
        finally:
            os.close(fd)  # releases the lock

    def not_found(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"no {self.KIND} named {name!r} in workspace {self.workspace.path}; see `{self.LIST_COMMAND}`"
        )

    # -- records ---------------------------------------------------------------------------------------
    def read(self, name: str) -> Any:
        path = self.record_dir(name) / self.RECORD_FILE
        try:
            doc = json.loads(_read_nofollow(path))
        except FileNotFoundError:
            raise self.not_found(name) from None
        except ValueError as exc:
            raise EdgepackError(
                f"{self.KIND} record {path} is damaged ({exc}); delete the {self.KIND} and deploy again"
            ) from None
        return self.record_cls.from_dict(doc)

    def write(self, record: Any) -> None:
        """Replace the record atomically (call under :meth:`lock`)."""
        record.updated_time = now_iso()
        data = json.dumps(record.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(self.record_dir(record.name) / self.RECORD_FILE, data, mode=0o600)

    def list(self) -> list[Any]:
        if not self.root.is_dir():
            return []
        self._ensure_root()
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_symlink() or not (entry / self.RECORD_FILE).is_file():
                continue
            with contextlib.suppress(InvalidInputError, NotFoundError, EdgepackError):
                out.append(self.read(entry.name))
        return out

    # -- secrets ---------------------------------------------------------------------------------------
    def read_secrets(self, name: str) -> ServiceSecrets:
        path = self.record_dir(name) / SECRETS_FILE
        try:
            doc = json.loads(_read_nofollow(path, private=True))
        except FileNotFoundError:
            return ServiceSecrets()
        return ServiceSecrets(**{f.name: doc.get(f.name) for f in fields(ServiceSecrets)})

    def write_secrets(self, name: str, secrets: ServiceSecrets) -> None:
        """Write ``secrets.json`` (0600; created exclusively, renamed over any link rather than through it)."""
        data = json.dumps(asdict(secrets), sort_keys=True).encode()
        write_atomic(self.record_dir(name) / SECRETS_FILE, data, mode=0o600)

    def remove(self, name: str) -> None:
        """Remove the record's folder (record, secrets, staged content, logs)."""
        path = self.record_dir(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


class ServiceStore(RecordStore):
    """The services of one workspace (``<workspace>/services/<name>/service.json``)."""

    record_cls: ClassVar[Any] = ServiceRecord

    def service_dir(self, name: str) -> Path:
        """``<workspace>/services/<name>`` (checked: a valid name, a private folder that is no link)."""
        return self.record_dir(name)

    def read(self, name: str) -> ServiceRecord:
        return super().read(name)

    def list(self) -> list[ServiceRecord]:
        return super().list()


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd`` (not removed or replaced)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _read_nofollow(path: Path, private: bool = False) -> bytes:
    """Read a file without following a symbolic link; ``private`` also refuses one others can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EdgepackError(f"{path} is a symbolic link: remove it (links are not followed)") from None
        raise
    try:
        st = os.fstat(fd)
        if private and (st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077):
            raise EdgepackError(f"{path} must be private to you (mode 0600): run chmod 600 {path}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


__all__ = ["RecordStore", "ServiceRecord", "ServiceSecrets", "ServiceStore", "now_iso"]
