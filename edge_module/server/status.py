"""HTTP status phrases for the status lines the scoring server and the router write (standard library only)."""

from __future__ import annotations

PHRASES = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def phrase(status: int) -> str:
    """The reason phrase of ``status`` (RFC 9110's names), ``Unknown`` for one not listed."""
    return PHRASES.get(status, "Unknown")


__all__ = ["PHRASES", "phrase"]
