"""One mapping from a scoring failure to what a client is told: a status and a message.

A :class:`~edge_module.runtime.ScoringError` carries both (4xx: the request, 5xx: the model or the
server, 504: :class:`~edge_module.runtime.ScoringTimeout`). Any other exception is a bug in the
scorer: it is logged once, with its traceback, and answered 500 with its type and message. Every
transport (HTTP ``/score`` and V2, MQTT, the IoT Edge hub) answers failures through :func:`as_scoring_error`.
"""

from __future__ import annotations

import logging

from edge_module.runtime import ScoringError

log = logging.getLogger("edgepack.scoring")


def as_scoring_error(exc: Exception, what: str = "scoring a request", blame: str = "", hint: str = "") -> ScoringError:
    """``exc`` itself when it is a :class:`ScoringError`; else a 500 ``"<blame><type>: <message><hint>"``
    after logging ``"<what> failed"`` with the traceback."""
    if isinstance(exc, ScoringError):
        return exc
    log.error("%s failed", what, exc_info=exc)
    return ScoringError(f"{blame}{type(exc).__name__}: {exc}{hint}", 500)
