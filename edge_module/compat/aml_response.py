"""``azureml.contrib.services.aml_response`` for entry scripts: ``AMLResponse``.

``AMLResponse(message, status_code, response_headers={}, json_str=False)`` as in v1: with
``json_str`` the message is JSON-encoded (``application/json``); otherwise str/bytes are sent as
they are, as ``text/html; charset=utf-8`` (Flask's default) unless ``response_headers`` sets a
``Content-Type``; ``None`` sends ``{}``. Status code and headers pass through to the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge_module.runtime import Response

DEFAULT_MIMETYPE = "text/html; charset=utf-8"


class AMLResponse:
    """An HTTP response returned by ``run()`` (the parts of Flask's response scripts use)."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ):
        self.status_code = int(status_code)
        headers = {str(k): str(v) for k, v in (response_headers or {}).items()}
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        self.headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if message is None:
            body, mimetype = b"{}", "application/json"
        elif json_str:
            body, mimetype = json.dumps(message).encode(), "application/json"
        elif isinstance(message, str):
            body, mimetype = message.encode("utf-8"), DEFAULT_MIMETYPE
        elif isinstance(message, bytes | bytearray | memoryview):
            body, mimetype = bytes(message), DEFAULT_MIMETYPE
        elif isinstance(message, dict | list):  # what Flask's make_response does with these
            body, mimetype = json.dumps(message).encode(), "application/json"
        else:  # an iterable of str/bytes chunks, as werkzeug accepts
            try:
                body = b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in message)
            except TypeError as exc:
                raise TypeError(
                    f"AMLResponse message must be str, bytes or JSON data (with json_str=True), "
                    f"not {type(message).__name__}"
                ) from exc
            mimetype = DEFAULT_MIMETYPE
        self._body = body
        self.content_type = content_type or mimetype
        self.run_function_failed = run_function_failed

    @property
    def data(self) -> bytes:
        return self._body

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def set_data(self, value: str | bytes) -> None:
        self._body = value.encode("utf-8") if isinstance(value, str) else bytes(value)

    @property
    def mimetype(self) -> str:
        return self.content_type.split(";", 1)[0].strip()

    @property
    def status(self) -> str:
        return str(self.status_code)

    def to_response(self) -> Response:
        return Response(self._body, self.status_code, self.content_type, dict(self.headers))

    def __repr__(self) -> str:
        return f"<AMLResponse {self.status_code} {self.content_type!r} {len(self._body)} bytes>"


__all__ = ["AMLResponse"]
