"""The IoT Hub service connection string: where it comes from, what it must hold, and keeping it out of text.

Looked up in order: an explicit value, ``$EDGEPACK_IOTHUB_CONNECTION_STRING``, ``$IOTHUB_CONNECTION_STRING``
(or the one variable named by ``--connection-string-env``), then the workspace file ``<workspace>/iothub.json``
(``{"connectionString": "..."}``, mode 0600, never a symlink). The string is never printed or logged:
:func:`redact` removes keys and signatures from any text that may echo it.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from packager.errors import InvalidInputError
from packager.fs import publish_file

__all__ = [
    "CONFIG_FILE",
    "ENV_VARS",
    "ConnectionString",
    "parse_connection_string",
    "redact",
    "resolve_connection_string",
    "save_connection_string",
]

ENV_VARS = ("EDGEPACK_IOTHUB_CONNECTION_STRING", "IOTHUB_CONNECTION_STRING")
CONFIG_FILE = "iothub.json"
_MAX_CONFIG_BYTES = 64 * 1024
_MAX_CS_CHARS = 4096

_SECRET_RE = re.compile(r"(?i)(SharedAccessKey\s*=\s*|sig=|SharedAccessSignature\s+)[^;&\s\"',]*")


def redact(text: str) -> str:
    """``text`` with every ``SharedAccessKey=...``, ``sig=...`` and SAS token value replaced by ``***``."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


@dataclass(frozen=True)
class ConnectionString:
    """A parsed service connection string; ``repr`` and ``str`` never show the key."""

    host_name: str
    key_name: str
    _value: str

    @property
    def value(self) -> str:
        """The full string, for the SDK only."""
        return self._value

    def __repr__(self) -> str:
        return f"ConnectionString(host_name={self.host_name!r}, key_name={self.key_name!r}, key=***)"

    __str__ = __repr__


def parse_connection_string(value: str) -> ConnectionString:
    """Check a service connection string (``HostName=...;SharedAccessKeyName=...;SharedAccessKey=...``);
    errors name the missing or bad part, never the key."""
    value = value.strip()
    if not value or len(value) > _MAX_CS_CHARS:
        raise InvalidInputError("the IoT Hub connection string is empty or too long")
    parts: dict[str, str] = {}
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep:
            raise InvalidInputError("the IoT Hub connection string is not a list of Name=value pairs separated by ';'")
        parts[key.strip()] = val
    if "SharedAccessSignature" in parts and "SharedAccessKey" not in parts:
        raise InvalidInputError(
            "the IoT Hub connection string holds a SAS token: give the policy's SharedAccessKey instead "
            "(az iot hub connection-string show --policy-name iothubowner)"
        )
    missing = [k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not parts.get(k)]
    if missing:
        hint = " (this is a device connection string)" if "DeviceId" in parts else ""
        raise InvalidInputError(
            f"the IoT Hub connection string lacks {', '.join(missing)}{hint}: use a service policy's connection string "
            "(az iot hub connection-string show --policy-name iothubowner)"
        )
    try:
        base64.b64decode(parts["SharedAccessKey"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("the IoT Hub connection string's SharedAccessKey is not base64") from None
    host = parts["HostName"]
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
        raise InvalidInputError(f"the IoT Hub connection string's HostName {host!r} is not a host name")
    return ConnectionString(host, parts["SharedAccessKeyName"], value)


def _read_config(path: Path) -> str | None:
    """The connection string from a workspace file: owner-only, no symlinks, bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInputError(
                f"{path} is a symlink: edgepack reads credentials only from a regular file"
            ) from None
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise InvalidInputError(f"{path} holds a secret but others can read it: chmod 600 {path}")
        data = f.read(_MAX_CONFIG_BYTES + 1)
    if len(data) > _MAX_CONFIG_BYTES:
        raise InvalidInputError(f"{path} is over {_MAX_CONFIG_BYTES // 1024} KiB: not an edgepack IoT Hub config")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError(f'{path} is not JSON: expected {{"connectionString": "..."}}') from None
    value = doc.get("connectionString") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        raise InvalidInputError(f"{path} has no connectionString string")
    return value


def resolve_connection_string(
    explicit: str | None = None, env_var: str | None = None, workspace: str | os.PathLike[str] | None = None
) -> ConnectionString:
    """The connection string from ``explicit``, the environment (``env_var`` alone when given, else
    :data:`ENV_VARS`), or ``<workspace>/iothub.json``; :class:`InvalidInputError` says where to put one."""
    if explicit:
        return parse_connection_string(explicit)
    names = (env_var,) if env_var else ENV_VARS
    for name in names:
        value = os.environ.get(name)
        if value:
            return parse_connection_string(value)
    if workspace is not None:
        value = _read_config(Path(workspace) / CONFIG_FILE)
        if value:
            return parse_connection_string(value)
    where = f"${env_var}" if env_var else " or ".join(f"${n}" for n in ENV_VARS)
    raise InvalidInputError(
        f"no IoT Hub connection string: set {where}"
        + (f" or write {Path(workspace) / CONFIG_FILE} (mode 0600)" if workspace is not None else "")
    )


def save_connection_string(workspace: str | os.PathLike[str], value: str) -> Path:
    """Check ``value`` and write it to ``<workspace>/iothub.json`` atomically with mode 0600."""
    parse_connection_string(value)
    path = Path(workspace) / CONFIG_FILE
    if path.is_symlink():
        raise InvalidInputError(f"{path} is a symlink: remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    # created 0600 before the secret is written (write_atomic would chmod only after writing)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(json.dumps({"connectionString": value.strip()}).encode())
        publish_file(tmp, path, mode=0o600)
    finally:
        tmp.unlink(missing_ok=True)
    return path
