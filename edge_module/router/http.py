"""The little HTTP/1.1 the router parses: a request's head, a response's framing, its own answers.

The router forwards bodies unchanged; it reads only what it must: the request line and headers
(bounded in size, count and URL length; the body's size from ``Content-Length``), and of a
response the status line and the headers that frame its body (``Content-Length``, chunked,
``Connection``) so both connections can be kept alive. Heads are forwarded without their hop-by-hop
headers (:func:`strip_hop_by_hop`, RFC 9110 7.6.1). Standard library only.
"""

from __future__ import annotations

import json
import re

from edge_module.server.status import phrase as status_phrase

CRLF = b"\r\n"
END = b"\r\n\r\n"
MAX_CHUNK_LINE = 1024  # a chunk-size line (with extensions) of a response
MAX_TRAILERS = 65536
VIA_11 = b"via: 1.1 edgepack-router\r\n"
VIA_10 = b"via: 1.0 edgepack-router\r\n"


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
    phrase = status_phrase(status)
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


# the header lines after the request line: "token: value" each ending in CRLF (no folding, no bare CR or LF,
# nothing between a name and its colon, no control byte but HTAB in a value), then the blank line
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n")
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # origin-form: visible ASCII only (no space, control byte or LF)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


# -- hop-by-hop headers (RFC 9110 7.6.1, RFC 9112) ---------------------------------------------------
# Dropped from every head the router forwards, with the headers a Connection header names. Transfer-Encoding
# and Trailer are not among them: the router passes a chunked body and its trailer section through as framed
# (and refuses chunked requests). Each side's Connection/keep-alive is the router's own (proxy.py, upstream.py).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# a hop-by-hop header line (lower-cased head) from the CRLF before it, with any folded continuation
_HOP_LINE = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|upgrade|proxy-authenticate|proxy-authorization)[ \t]*:"
    rb"[^\r\n]*(?:\r\n[ \t][^\r\n]*)*"
)
_NO_NAME = frozenset({b"close", b"keep-alive"})  # Connection options that name no other header
# never dropped for being named in Connection: the framing of the body the router forwards, the target's
# host, and the endpoint's credentials (forwarded to versions as before: not hop-by-hop)
NOT_HOP = frozenset({b"content-length", b"transfer-encoding", b"host", b"authorization"})


_CONNECTION = re.compile(rb"\r\nconnection[ \t]*:([^\r\n]*)")


def connection_tokens(low: bytes) -> set[bytes]:
    """The options of every ``Connection`` header of a lower-cased head (``close``, ``keep-alive``, names)."""
    values = _CONNECTION.findall(low)
    if len(values) == 1 and b"," not in values[0]:  # the usual one option
        token = values[0].strip(b" \t")
        return {token} if token else set()
    tokens = set()
    for value in values:
        tokens.update(t.strip(b" \t") for t in value.split(b","))
    tokens.discard(b"")
    return tokens


def strip_hop_by_hop(raw: bytes, low: bytes, tokens: set[bytes] | None = None) -> bytes:
    """``raw`` (a head ending in the blank line; ``low`` lower-cased) without its hop-by-hop header lines:
    those of :data:`HOP_BY_HOP` and those a Connection header names (but :data:`NOT_HOP`). A head without
    any is returned as is (no copy); when Connection names no other header, the lines are cut out whole.
    ``tokens``: the head's :func:`connection_tokens` when known."""
    first = _HOP_LINE.search(low)
    if first is None:
        return raw
    spans = [m.span() for m in _HOP_LINE.finditer(low, first.start())]
    named = (connection_tokens(low) if tokens is None else tokens) - _NO_NAME - HOP_BY_HOP - NOT_HOP
    if named or any(low[end : end + 2] != CRLF for _, end in spans):  # a bare CR in a value: line by line
        return _strip_lines(raw, (HOP_BY_HOP | named) - NOT_HOP)
    pieces = []
    at = 0
    for start, end in spans:
        pieces.append(raw[at:start])
        at = end
    pieces.append(raw[at:])
    return b"".join(pieces)


def _strip_lines(raw: bytes, drop: frozenset[bytes] | set[bytes]) -> bytes:
    """``raw`` without the header lines named in ``drop`` (lower-case), folded continuations with them."""
    lines = raw[:-4].split(b"\r\n")
    kept = [lines[0]]
    dropping = False
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # an obsolete folded continuation (responses only): goes with its header
            if not dropping:
                kept.append(line)
            continue
        dropping = line[: line.find(b":")].strip(b" \t").lower() in drop
        if not dropping:
            kept.append(line)
    kept.append(b"\r\n")
    return b"\r\n".join(kept)


class RequestHead:
    """A parsed request line, and the raw head to look headers up in (:meth:`get`)."""

    __slots__ = ("http11", "keep_alive", "length", "low", "method", "path", "raw", "tokens")

    def __init__(self, raw: bytes, low: bytes, method: bytes, path: bytes) -> None:
        self.raw = raw
        self.low = low  # raw, lower-cased: header names are found in it, values are sliced from raw
        self.method = method
        self.path = path
        self.length = 0
        self.keep_alive = True
        self.http11 = True
        self.tokens: set[bytes] = set()  # the Connection header's options

    def get(self, name: bytes) -> bytes | None:
        """The value of the header ``name`` (lower-case), or None; the first one when it is repeated."""
        i = self.low.find(b"\r\n" + name + b":")
        if i < 0:
            return None
        start = i + len(name) + 3
        return self.raw[start : self.raw.find(b"\r\n", start)].strip(b" \t")

    def count(self, name: bytes) -> int:
        return self.low.count(b"\r\n" + name + b":")


def parse_request_head(raw: bytes, max_headers: int, max_url: int, max_body: int) -> RequestHead:
    """Parse ``raw`` (the head, ending in the blank line); raise :class:`HttpError` naming what is wrong."""
    eol = raw.find(b"\r\n")
    parts = raw[:eol].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed HTTP request line: expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise HttpError(400, "malformed HTTP request line: bad method")
    if len(target) > max_url:
        raise HttpError(414, f"the request URL is over the {max_url}-byte limit")
    if not target.startswith(b"/"):
        raise HttpError(400, "malformed HTTP request line: the target must be a path starting with '/'")
    if _TARGET.fullmatch(target) is None:
        raise HttpError(
            400, "malformed HTTP request line: the target has a control or non-ASCII byte; percent-encode it"
        )
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        raise HttpError(505 if version.startswith(b"HTTP/") else 400, "only HTTP/1.1 and HTTP/1.0 are supported")
    if raw.count(b"\r\n") - 2 > max_headers:
        raise HttpError(431, f"a request may have at most {max_headers} headers")
    if _HEADER_LINES.fullmatch(raw, eol + 2) is None:
        raise HttpError(400, "malformed HTTP header line: expected 'Name: value' lines ending in CRLF (no folding)")
    head = RequestHead(raw, raw.lower(), method, target)
    if head.count(b"transfer-encoding"):
        if head.count(b"content-length"):
            raise HttpError(400, "a request may not have both Transfer-Encoding and Content-Length")
        raise HttpError(
            411,
            "the router does not take chunked (Transfer-Encoding) request bodies: send the body with a Content-Length",
        )
    if head.count(b"upgrade"):
        raise HttpError(
            501, "the router does not switch protocols (Upgrade: WebSocket, h2c): send plain HTTP/1.1 requests"
        )
    cl = head.get(b"content-length")
    if cl is not None:
        if head.count(b"content-length") > 1:
            raise HttpError(400, "a request may have one Content-Length header")
        if not cl.isdigit() or len(cl) > 18:
            raise HttpError(400, "Content-Length must be a number of bytes")
        length = head.length = int(cl)
        if length > max_body:
            raise HttpError(413, f"request body of {length} bytes is over the {max_body}-byte limit")
    head.http11 = http11
    tokens = head.tokens = connection_tokens(head.low) if b"\r\nconnection" in head.low else set()
    head.keep_alive = b"close" not in tokens if http11 else b"keep-alive" in tokens
    return head


def forward_request_head(head: RequestHead) -> bytes:
    """The head to send a version: without hop-by-hop headers, ``Via`` added; an HTTP/1.0 request asks to
    keep the router's pooled connection alive (an HTTP/1.1 one does by default)."""
    raw = strip_hop_by_hop(head.raw, head.low, head.tokens)
    own = VIA_11 if head.http11 else VIA_10 + b"connection: keep-alive\r\n"
    return raw[:-2] + own + CRLF


# -- responses ---------------------------------------------------------------------------------------
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


class ResponseHead:
    """The framing of an upstream response: its status, body mode and length, and whether it keeps alive."""

    __slots__ = ("keep_alive", "length", "low", "mode", "status")

    def __init__(self, status: int, mode: int, length: int, keep_alive: bool, low: bytes = b""):
        self.low = low  # the head, lower-cased
        self.status = status
        self.mode = mode
        self.length = length
        self.keep_alive = keep_alive


def parse_response_head(raw: bytes, head_request: bool) -> ResponseHead:
    """Parse a response's status line and framing headers; raise ``ValueError`` on a malformed one."""
    if not raw.startswith(b"HTTP/1.") or raw[12:13] not in (b" ", b"\r"):
        raise ValueError("malformed status line")
    status = int(raw[9:12])
    keep = raw[7:8] == b"1"
    low = raw.lower()
    length = -1
    i = low.find(b"\r\ncontent-length:")
    if i >= 0:
        length = int(raw[i + 17 : raw.find(b"\r\n", i + 17)])
    if b"\r\nconnection" in low:
        tokens = connection_tokens(low)
        if b"close" in tokens:
            keep = False
        elif b"keep-alive" in tokens:
            keep = True
    if head_request or status < 200 or status in (204, 304):
        return ResponseHead(status, NONE, 0, keep, low)
    i = low.find(b"\r\ntransfer-encoding:")
    if i >= 0 and b"chunked" in low[i : low.find(b"\r\n", i + 2)]:
        return ResponseHead(status, CHUNKED, 0, keep, low)
    if length >= 0:
        return ResponseHead(status, LENGTH if length else NONE, length, keep, low)
    return ResponseHead(status, UNTIL_CLOSE, 0, False, low)


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
                digits = line.split(b";", 1)[0].strip(b" \t\r")
                if _CHUNK_SIZE.fullmatch(digits) is None:
                    raise ValueError("malformed chunk size")
                size = int(digits, 16)
                if size == 0:
                    self.state = self.TRAILER
                else:
                    self.state = self.DATA
                    self.left = size
            elif line.strip() == b"":  # the blank line after the trailers
                return pos, True
        return n, False
