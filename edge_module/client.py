"""A small HTTP client for a scoring server: ``/score`` and V2 infer (``edgepack score`` wraps it).

The HTTP counterpart of :func:`edge_module.transports.mqtt.mqtt_request`. It needs ``requests``,
which images do not install: the server never imports this module.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from edge_module.runtime import ScoringError


class HttpError(ScoringError):
    """The server answered with an error status (``status``); the message has the server's reason."""


def load_body(data: str) -> tuple[bytes, Any]:
    """A request body from a file path or inline JSON: its bytes and parsed JSON (None when not JSON).

    Raises ValueError for text that is neither an existing file nor JSON."""
    path = Path(data)
    try:
        is_file = path.is_file()
    except OSError:  # a long inline JSON is not a valid path
        is_file = False
    raw = path.read_bytes() if is_file else data.encode("utf-8")
    try:
        return raw, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if not is_file:
            raise ValueError(f"neither a file nor valid JSON: {data[:80]!r}") from None
        return raw, None


def score_url(url: str, v2_model: str | None = None) -> str:
    """The endpoint to post to: ``url`` as given, or with ``/score`` (or V2 infer on ``v2_model``) added.

    ``127.0.0.1:5001`` means ``http://127.0.0.1:5001/score``. Raises ValueError for a URL that is not http(s)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid URL {url!r}: expected http://HOST:PORT[/score]")
    path = parts.path.rstrip("/")
    if v2_model:
        if not path.endswith("/infer"):
            path = f"{path}/v2/models/{quote(v2_model)}/infer"
    elif not path:
        path = "/score"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def http_request(
    url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float = 60.0
) -> requests.Response:
    """POST ``body`` (GET without one); returns the answer when its status is below 400.

    Raises :class:`HttpError` (with the status and the server's message) for an error answer,
    ConnectionError when the server cannot be reached and TimeoutError when it does not answer in time."""
    try:
        resp = requests.request(
            "POST" if body is not None else "GET", url, data=body, headers=dict(headers or {}), timeout=timeout
        )
    except requests.Timeout:
        raise TimeoutError(f"no answer from {url} within {timeout:g} s") from None
    except requests.ConnectionError as exc:
        raise ConnectionError(f"cannot reach {url}: {_reason(exc)}") from None
    if resp.status_code >= 400:
        detail = resp.text.strip()
        with contextlib.suppress(ValueError, AttributeError):
            doc = resp.json()
            detail = doc.get("message") or doc.get("error") or detail
        raise HttpError(f"HTTP {resp.status_code} {resp.reason} from {url}: {detail}", resp.status_code)
    return resp


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure (``[Errno 111] Connection refused``), not urllib3's wrappers."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return f"[Errno {current.errno}] {current.strerror}"
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        inner = inner or current.__cause__ or current.__context__
        if inner is None:
            break
        current = inner
    return str(current)


def v2_body(infer_url: str, doc: Any, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Any:
    """A V2 infer request from ``doc``: as it is when it has ``"inputs"``, else its data
    (``{"data": ...}`` or a nested list) as the model's only input (named and typed from the model's metadata).

    Raises ValueError when ``doc`` has no data or the model has several inputs."""
    if isinstance(doc, dict) and "inputs" in doc:
        return doc
    data = doc.get("data") if isinstance(doc, dict) else doc
    if data is None:
        raise ValueError('V2 data must be a V2 request ({"inputs": [...]}), {"data": ...} or an array')
    meta_url = infer_url.rsplit("/infer", 1)[0]
    meta = http_request(meta_url, None, headers, timeout).json()
    if len(meta.get("inputs", [])) != 1:
        raise ValueError(f"model {meta.get('name', meta_url)!r} has several inputs: send a full V2 request")
    spec = meta["inputs"][0]
    import numpy as np

    arr = np.asarray(data)
    return {
        "inputs": [
            {"name": spec["name"], "shape": list(arr.shape), "datatype": spec["datatype"], "data": arr.ravel().tolist()}
        ]
    }


def score_request(
    url: str,
    data: bytes | str | Mapping[str, Any] | list[Any],
    *,
    v2_model: str | None = None,
    key: str | None = None,
    content_type: str | None = None,
    timeout: float = 60.0,
) -> requests.Response:
    """Send one scoring request to a server (``http://HOST:PORT``, ``/score`` added) or an endpoint URL.

    ``data``: bytes, text, or JSON-able data; with ``v2_model`` it goes to V2 infer, plain data
    wrapped for the model's only input (see :func:`v2_body`). ``key`` (a key or token) is sent as
    ``Authorization: Bearer``. Raises what :func:`http_request` raises, and ValueError for bad input."""
    endpoint = score_url(url, v2_model)
    if isinstance(data, bytes | str):
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            doc = None
    else:
        doc = data
        raw = json.dumps(data).encode()
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if v2_model:
        if doc is None:
            raise ValueError("V2 infer needs JSON data")
        raw = json.dumps(v2_body(endpoint, doc, headers, timeout)).encode()
    headers["Content-Type"] = content_type or (
        "application/json" if doc is not None or v2_model else "application/octet-stream"
    )
    return http_request(endpoint, raw, headers, timeout)
