"""The little HTTP/1.1 the router parses: a request's head, a response's framing, its own answers.

The router forwards bytes unchanged; it reads only what it must: the request line and headers
(bounded in size, count and URL length; the body's size from ``Content-Length``), and of a
response the status line and the headers that frame its body (``Content-Length``, chunked,
``Connection``) so both connections can be kept alive. Standard library only.
"""

from __future__ import annotations

import json

CRLF = b"\r\n"
END = b"\r\n\r\n"
MAX_CHUNK_LINE = 1024  # a chunk-size line (with extensions) of a response
MAX_TRAILERS = 65536

_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the router answers itself with ``status`` and a JSON ``{"message": ...}`` body, then closes."""

    def __init__(self, status: int, message: str, headers: bytes = b""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def response(
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: bytes = b"",
    close: bool = False,
) -> bytes:
    """A whole response (``headers``: extra header lines, each ending in CRLF)."""
    phrase = _PHRASES.get(status, "Unknown")
    return b"".join(
        (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: ".encode(),
            content_type,
            b"\r\ncontent-length: %d\r\n" % len(body),
            headers,
            b"connection: close\r\n" if close else b"",
            CRLF,
            body,
        )
    )


def json_response(status: int, data: object, headers: bytes = b"", close: bool = False) -> bytes:
    return response(status, json.dumps(data).encode(), headers=headers, close=close)


def error_response(status: int, message: str, headers: bytes = b"", close: bool = False) -> bytes:
    return json_response(status, {"message": message}, headers, close)


class RequestHead:
    """A parsed request line and headers (names lower-cased, values as bytes)."""

    __slots__ = ("headers", "keep_alive", "length", "method", "path", "raw")

    def __init__(self, raw: bytes, method: bytes, path: bytes, headers: dict[bytes, bytes], length: int, keep: bool):
        self.raw = raw
        self.method = method
        self.path = path
        self.headers = headers
        self.length = length
        self.keep_alive = keep


def parse_request_head(raw: bytes, max_headers: int, max_url: int, max_body: int) -> RequestHead:
    """Parse ``raw`` (the head, ending in the blank line); raise :class:`HttpError` naming what is wrong."""
    lines = raw[:-4].split(CRLF)
    if raw.count(b"\n") != len(lines) + 1:
        raise HttpError(400, "malformed HTTP request: lines must end with CRLF")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed HTTP request line: expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise HttpError(400, "malformed HTTP request line: bad method")
    if len(target) > max_url:
        raise HttpError(414, f"the request URL is over the {max_url}-byte limit")
    if not target.startswith(b"/"):
        raise HttpError(400, "malformed HTTP request line: the target must be a path starting with '/'")
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        raise HttpError(505 if version.startswith(b"HTTP/") else 400, "only HTTP/1.1 and HTTP/1.0 are supported")
    if len(lines) - 1 > max_headers:
        raise HttpError(431, f"a request may have at most {max_headers} headers")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in b" \t" or name[:1] in b" \t":
            raise HttpError(400, "malformed HTTP header line: expected 'Name: value' (no folding)")
        name = name.lower()
        value = value.strip()
        if name == b"content-length" and name in headers and headers[name] != value:
            raise HttpError(400, "conflicting Content-Length headers")
        headers[name] = value
    length = 0
    te = headers.get(b"transfer-encoding")
    if te is not None:
        if b"content-length" in headers:
            raise HttpError(400, "a request may not have both Transfer-Encoding and Content-Length")
        raise HttpError(
            411,
            "the router does not take chunked (Transfer-Encoding) request bodies: send the body with a Content-Length",
        )
    cl = headers.get(b"content-length")
    if cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise HttpError(400, "Content-Length must be a number of bytes")
        length = int(cl)
        if length > max_body:
            raise HttpError(413, f"request body of {length} bytes is over the {max_body}-byte limit")
    conn = headers.get(b"connection")
    if http11:
        keep = conn is None or b"close" not in conn.lower()
    else:
        keep = conn is not None and b"keep-alive" in conn.lower()
    return RequestHead(raw, method, target, headers, length, keep)


# -- responses ---------------------------------------------------------------------------------------
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


class ResponseHead:
    """The framing of an upstream response: its status, body mode and length, and whether it keeps alive."""

    __slots__ = ("keep_alive", "length", "mode", "status")

    def __init__(self, status: int, mode: int, length: int, keep_alive: bool):
        self.status = status
        self.mode = mode
        self.length = length
        self.keep_alive = keep_alive


def parse_response_head(raw: bytes, head_request: bool) -> ResponseHead:
    """Parse a response's status line and framing headers; raise ``ValueError`` on a malformed one."""
    lines = raw[:-4].split(CRLF)
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise ValueError("malformed status line")
    status = int(status_line[9:12])
    keep = status_line[7:8] == b"1"
    length = -1
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        first = name[:1]
        if first in b"cCtT":
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.lower()
                if b"close" in v:
                    keep = False
                elif b"keep-alive" in v:
                    keep = True
    if head_request or status < 200 or status in (204, 304):
        return ResponseHead(status, NONE, 0, keep)
    if chunked:
        return ResponseHead(status, CHUNKED, 0, keep)
    if length >= 0:
        return ResponseHead(status, LENGTH if length else NONE, length, keep)
    return ResponseHead(status, UNTIL_CLOSE, 0, False)


class ChunkedEnd:
    """Finds where a chunked body ends, without copying it: :meth:`feed` returns how many bytes of
    ``data`` belong to the body and whether the body ended there."""

    __slots__ = ("buf", "left", "state")

    SIZE, DATA, DATA_END, TRAILER = range(4)

    def __init__(self) -> None:
        self.state = self.SIZE
        self.left = 0
        self.buf = b""

    def feed(self, data: bytes) -> tuple[int, bool]:
        pos = 0
        n = len(data)
        while pos < n:
            if self.state == self.DATA:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = self.DATA_END
                    self.left = 2
                continue
            if self.state == self.DATA_END:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = self.SIZE
                continue
            # SIZE or TRAILER: a line
            end = data.find(b"\n", pos)
            if end < 0:
                self.buf += data[pos:]
                limit = MAX_CHUNK_LINE if self.state == self.SIZE else MAX_TRAILERS
                if len(self.buf) > limit:
                    raise ValueError("chunk line too long")
                return n, False
            line = self.buf + data[pos:end]
            self.buf = b""
            pos = end + 1
            if self.state == self.SIZE:
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    self.state = self.TRAILER
                else:
                    self.state = self.DATA
                    self.left = size
            elif line.strip() == b"":  # the blank line after the trailers
                return pos, True
        return n, False
