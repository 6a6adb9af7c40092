"""Sockets for the server tests: a free port, and raw bytes in and out (for hostile-client cases)."""

from __future__ import annotations

import socket
from collections.abc import Iterable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_http(port: int, data: bytes, read_until_close: bool = True, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_until_close:
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def request_head(method: str, path: str, headers: Iterable[tuple[str, str]] = (), host: str = "x") -> bytes:
    """The request line and headers of an HTTP/1.1 request, up to and including the blank line."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_head(sock: socket.socket) -> bytes:
    """Read one response's status line and headers (``b""`` when the server closes first); what follows
    the blank line is left unread only if it came in a later packet, so use it for bodiless answers
    such as ``100 Continue`` or before reading the rest with :func:`read_to_close`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_to_close(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends until it closes: ``(data, closed)``; ``closed`` is False when the
    socket's timeout ran out first (the server kept the connection open)."""
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks), True
    except TimeoutError:
        return b"".join(chunks), False


def send_until_refused(sock: socket.socket, total: int, chunk: bytes) -> int:
    """Send ``chunk`` repeatedly up to ``total`` bytes; return how many were sent before the server
    closed the connection on us (``total`` when it took them all)."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response with a Content-Length: status, headers (lower-case names), body; the next
    response on the connection is left unread."""
    head = read_head(sock).decode("latin-1")
    if not head:
        raise ConnectionError("the server closed the connection without answering")
    lines = head.split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if ": " in line)}
    body = b""
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            raise ConnectionError("the server closed the connection in the middle of a body")
        body += chunk
    return int(lines[0].split()[1]), headers, body
