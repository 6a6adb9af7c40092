"""``azureml.contrib.services.aml_request`` for entry scripts: ``rawhttp`` and ``AMLRequest``.

v1's ``@rawhttp`` made the server call ``run(request)`` with the Flask request instead of the body
as a string. :class:`AMLRequest` offers the parts of Flask's request that scoring scripts use
(``data``/``get_data()``, ``headers``, ``method``, ``args``, ``path``/``full_path``/``url``,
``json``/``get_json()``, ``form``/``files`` for multipart uploads, ``cookies``) without Flask.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable, Iterable, Mapping
from http.cookies import SimpleCookie
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from edge_module.runtime import BadInputError, UnsupportedMediaTypeError

_UNSET: Any = object()
_rawHttpRequested = False  # v1's module-level flag (set by any @rawhttp); read by EntryScriptApp
RAWHTTP_ATTR = "_edgepack_rawhttp"

F = TypeVar("F", bound=Callable[..., Any])


def rawhttp(func: F) -> F:
    """Decorate ``run`` to receive the :class:`AMLRequest` instead of the body as a string (as v1)."""
    global _rawHttpRequested
    _rawHttpRequested = True
    with contextlib.suppress(AttributeError, TypeError):  # builtins and the like take no attributes
        setattr(func, RAWHTTP_ATTR, True)
    return func


def _title(name: str) -> str:
    # What Flask/werkzeug showed under gunicorn: the WSGI environ's HTTP_X_MS_REQUEST_ID -> X-Ms-Request-Id.
    return name.replace("_", "-").title()


def _converted(value: Any, default: Any, convert: Callable[[Any], Any] | None) -> Any:
    """werkzeug's ``get(key, default, type)`` for a found ``value``: ``type(value)``, ``default`` when it raises."""
    if convert is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError):
        return default


class Headers(dict):
    """Request headers as Flask showed them under gunicorn (``Content-Type``, ``X-Ms-Request-Id``),
    looked up case-insensitively, with werkzeug's ``get(key, default, type)`` and ``getlist``."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        super().__init__()
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            key = _title(key)
            dict.__setitem__(self, key, f"{dict.__getitem__(self, key)}, {value}" if key in self else value)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, _title(key))

    def __setitem__(self, key: str, value: str) -> None:
        dict.__setitem__(self, _title(key), value)

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, _title(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, _title(key))

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        value = dict.get(self, _title(key), None)
        if value is None:
            return default
        return _converted(value, default, type)

    def getlist(self, key: str) -> list[str]:
        value = dict.get(self, _title(key))
        return [] if value is None else [v.strip() for v in value.split(",")]


class MultiDict(dict):
    """Query or form fields: ``d[key]``/``d.get(key)`` give the first value, ``getlist`` all of them."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()):
        super().__init__()
        self._lists: dict[str, list[Any]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
            if key not in self:
                dict.__setitem__(self, key, value)

    def get(self, key: str, default: Any = None, type: Callable[[Any], Any] | None = None) -> Any:
        if key not in self:
            return default
        value = self[key]
        return _converted(value, default, type)

    def getlist(self, key: str) -> list[Any]:
        return list(self._lists.get(key, []))

    def lists(self) -> Iterable[tuple[str, list[Any]]]:
        return ((k, list(v)) for k, v in self._lists.items())


class FileStorage:
    """An uploaded file of a ``multipart/form-data`` request (werkzeug's ``FileStorage`` subset)."""

    def __init__(self, data: bytes, filename: str | None, name: str | None, content_type: str | None):
        self.stream = io.BytesIO(data)
        self.filename = filename
        self.name = name
        self.content_type = content_type
        self.mimetype = (content_type or "").split(";", 1)[0].strip().lower()
        self.content_length = len(data)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def save(self, dst: Any, buffer_size: int = 16384) -> None:
        self.stream.seek(0)
        if isinstance(dst, str | bytes) or hasattr(dst, "__fspath__"):
            with open(dst, "wb") as out:
                shutil.copyfileobj(self.stream, out, buffer_size)
        else:
            shutil.copyfileobj(self.stream, dst, buffer_size)

    def __bool__(self) -> bool:
        return bool(self.filename)

    def __repr__(self) -> str:
        return f"<FileStorage: {self.filename!r} ({self.content_type!r})>"


class AMLRequest:
    """The request a ``@rawhttp`` ``run(request)`` receives (the parts of Flask's request scripts use)."""

    def __init__(
        self,
        data: bytes = b"",
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        path: str = "/score",
        query_string: str | bytes = "",
    ):
        self._data = bytes(data)
        self.method = method.upper()
        self.headers = Headers(headers or {})
        self.path = path
        self.query_string = query_string.encode("latin-1") if isinstance(query_string, str) else bytes(query_string)
        self._args: MultiDict | None = None
        self._form: tuple[MultiDict, MultiDict] | None = None
        self._json: Any = _UNSET

    @classmethod
    def from_request(cls, request: Any) -> AMLRequest:
        """Build from an :class:`edge_module.runtime.Request`."""
        headers = dict(request.headers)
        if request.content_type and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = request.content_type
        return cls(request.body, request.method, headers, request.path, request.query)

    # body ---------------------------------------------------------------------------------
    @property
    def data(self) -> bytes:
        return self._data

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> bytes | str:
        return self._data.decode(self.charset, "replace") if as_text else self._data

    @property
    def stream(self) -> io.BytesIO:
        return io.BytesIO(self._data)

    input_stream = stream

    @property
    def charset(self) -> str:
        return self.mimetype_params.get("charset", "utf-8")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    @property
    def mimetype_params(self) -> dict[str, str]:
        params = {}
        for part in (self.content_type or "").split(";")[1:]:
            key, sep, value = part.partition("=")
            if sep:
                params[key.strip().lower()] = value.strip().strip('"')
        return params

    @property
    def content_length(self) -> int:
        return len(self._data)

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or self.is_json):
            if silent:
                return None
            raise UnsupportedMediaTypeError(
                "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
            )
        if self._json is _UNSET or not cache:
            from edge_module.protocol.json_codec import loads_json

            try:
                value = loads_json(self._data)
            except BadInputError:
                if silent:
                    return None
                raise
            if not cache:
                return value
            self._json = value
        return self._json

    @property
    def json(self) -> Any:
        return self.get_json()

    # URL ----------------------------------------------------------------------------------
    @property
    def args(self) -> MultiDict:
        if self._args is None:
            self._args = MultiDict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))
        return self._args

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string.decode('latin-1')}"  # werkzeug keeps the "?" when empty

    @property
    def scheme(self) -> str:
        return self.headers.get("X-Forwarded-Proto", "http")

    @property
    def host(self) -> str:
        return self.headers.get("Host", "localhost")

    @property
    def host_url(self) -> str:
        return f"{self.scheme}://{self.host}/"

    url_root = host_url

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def url(self) -> str:
        qs = self.query_string.decode("latin-1")
        return self.base_url + (f"?{qs}" if qs else "")

    @property
    def remote_addr(self) -> str | None:
        forwarded = self.headers.get("X-Forwarded-For")
        return forwarded.split(",")[0].strip() if forwarded else None

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        jar.load(self.headers.get("Cookie", ""))
        return {k: m.value for k, m in jar.items()}

    # forms --------------------------------------------------------------------------------
    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        if self._form is None:
            form: list[tuple[str, Any]] = []
            files: list[tuple[str, Any]] = []
            if self.mimetype == "application/x-www-form-urlencoded":
                form = parse_qsl(self._data.decode(self.charset, "replace"), keep_blank_values=True)
            elif self.mimetype == "multipart/form-data":
                from email.message import EmailMessage
                from email.parser import BytesParser
                from email.policy import HTTP

                header = f"Content-Type: {self.content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
                message = BytesParser(policy=HTTP).parsebytes(header + self._data)
                if isinstance(message, EmailMessage) and message.is_multipart():
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        filename = part.get_filename()
                        payload = part.get_payload(decode=True) or b""
                        if filename is not None:
                            files.append((name, FileStorage(payload, filename, name, part.get("Content-Type"))))
                        else:
                            charset = part.get_content_charset() or "utf-8"
                            form.append((name, payload.decode(charset, "replace")))
            self._form = (MultiDict(form), MultiDict(files))
        return self._form

    @property
    def form(self) -> MultiDict:
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        return self._parse_form()[1]

    @property
    def values(self) -> MultiDict:
        return MultiDict([*((k, v) for k, vs in self.args.lists() for v in vs), *self.form.items()])

    def __repr__(self) -> str:
        return f"<AMLRequest {self.url!r} [{self.method}]>"


__all__ = ["AMLRequest", "FileStorage", "Headers", "MultiDict", "rawhttp"]
