"""Scoring the requests a message transport collected, as few model runs as possible.

Both transports (MQTT, the IoT Edge hub) hand a micro-batch of ``/score`` requests to
:func:`score_requests`. Apps with ``parse``/``respond`` (the built-in ONNX scorer) have each request
parsed, requests for the same model and per-row input shapes concatenated along axis 0 and run
once, and the outputs cut back per request; if a merged run fails (one request's values break it)
or its outputs do not have one row per input row, those requests run one by one, so each failure is
reported against the request that caused it. Other apps (entry scripts) score request by request.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_module.runtime import Request, Response, ScoringApp, ScoringError

log = logging.getLogger("edgepack.transports")

Outcome = Response | ScoringError
"""What one request came to: the app's response, or the error to answer with (status and text)."""


def batchable(app: ScoringApp) -> bool:
    """True for apps whose requests can share model runs (they split scoring into parse/respond)."""
    return callable(getattr(app, "parse", None)) and callable(getattr(app, "respond", None))


def unexpected(exc: Exception, what: str = "scoring a request") -> ScoringError:
    """A 500 for an exception that is not a :class:`ScoringError`, logged with its traceback."""
    log.error("%s failed", what, exc_info=exc)
    return ScoringError(f"{type(exc).__name__}: {exc}", 500)


def score_requests(app: ScoringApp, requests: list[Request]) -> list[Outcome]:
    """The outcome of each request, in order."""
    if len(requests) > 1 and batchable(app):
        return _score_grouped(app, requests)
    return [_score_one(app, request) for request in requests]


def _score_one(app: ScoringApp, request: Request) -> Outcome:
    try:
        return app.score(request)
    except ScoringError as exc:
        return exc
    except Exception as exc:
        return unexpected(exc)


_Member = tuple[int, dict[str, np.ndarray], int]  # request index, feeds, rows


def _score_grouped(app: Any, requests: list[Request]) -> list[Outcome]:
    out: list[Outcome | None] = [None] * len(requests)
    groups: dict[tuple, list[_Member]] = {}
    runtimes: dict[int, Any] = {}
    for i, request in enumerate(requests):
        try:
            runtime, feeds = app.parse(request)
        except ScoringError as exc:
            out[i] = exc
            continue
        except Exception as exc:
            out[i] = unexpected(exc, "parsing a request")
            continue
        rows = {a.shape[0] if a.ndim else -1 for a in feeds.values()}
        if len(rows) == 1 and -1 not in rows:
            key: tuple = (id(runtime), tuple((n, a.dtype.str, a.shape[1:]) for n, a in feeds.items()))
        else:
            key = (id(runtime), "alone", i)  # no common row count: a group of its own
        runtimes[id(runtime)] = runtime
        groups.setdefault(key, []).append((i, feeds, rows.pop() if len(rows) == 1 else 0))
    for key, members in groups.items():
        runtime = runtimes[key[0]]
        parts = _run_merged(runtime, members) if len(members) > 1 else None
        for j, (i, feeds, _) in enumerate(members):
            try:
                outputs = parts[j] if parts is not None else runtime.run(feeds)
                out[i] = app.respond(runtime, outputs)
            except ScoringError as exc:
                out[i] = exc
            except Exception as exc:
                out[i] = unexpected(exc)
    return out  # type: ignore[return-value]  # every index is set above


def _run_merged(runtime: Any, members: list[_Member]) -> list[list[Any]] | None:
    """One run over the concatenated feeds, cut back per request; None to run them one by one."""
    names = list(members[0][1])
    try:
        merged = {n: np.concatenate([m[1][n] for m in members], axis=0) for n in names}
        outputs = runtime.run(merged)
    except Exception:
        return None
    total = sum(m[2] for m in members)
    if any(not isinstance(o, np.ndarray) or o.ndim == 0 or o.shape[0] != total for o in outputs):
        return None
    parts, start = [], 0
    for _, _, rows in members:
        parts.append([o[start : start + rows] for o in outputs])
        start += rows
    return parts
