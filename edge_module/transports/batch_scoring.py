"""Scoring the requests a message transport collected, as few model runs as possible.

Both transports (MQTT, the IoT Edge hub) hand a micro-batch of ``/score`` requests to
:func:`score_requests`, which drives the shared batching core synchronously: a
:class:`~edge_module.runtime.BatchableApp` (the built-in ONNX scorer) has each request parsed,
requests for the same runtime and input :func:`~edge_module.batching.signature` scored together by
:func:`~edge_module.batching.score_batch` (one ``predict`` on the merged inputs, cut back per request;
one by one when that fails, so each failure is reported against the request that caused it) and
answered with ``respond``. Other apps (entry scripts) score request by request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_module.batching import score_batch, signature
from edge_module.protocol.errors import as_scoring_error
from edge_module.runtime import BatchableApp, ModelRuntime, Request, Response, ScoringApp, ScoringError

Outcome = Response | ScoringError
"""What one request came to: the app's response, or the error to answer with (status and text)."""


def score_requests(app: ScoringApp, requests: list[Request]) -> list[Outcome]:
    """The outcome of each request, in order."""
    if len(requests) > 1 and isinstance(app, BatchableApp):
        return _score_grouped(app, requests)
    return [_score_one(app, request) for request in requests]


def _score_one(app: ScoringApp, request: Request) -> Outcome:
    try:
        return app.score(request)
    except Exception as exc:
        return as_scoring_error(exc)


def _score_grouped(app: BatchableApp, requests: list[Request]) -> list[Outcome]:
    out: list[Outcome | None] = [None] * len(requests)
    groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
    runtimes: dict[int, ModelRuntime] = {}
    for i, request in enumerate(requests):
        try:
            runtime, feeds = app.parse(request)
        except Exception as exc:
            out[i] = as_scoring_error(exc, "parsing a request")
            continue
        sig = signature(feeds)
        key = (id(runtime), sig if sig is not None else ("alone", i))  # no common row count: a group of its own
        runtimes[id(runtime)] = runtime
        groups.setdefault(key, []).append((i, feeds))
    for key, members in groups.items():
        runtime = runtimes[key[0]]
        outcomes: list[Any] = score_batch(runtime.predict, [feeds for _, feeds in members])
        for (i, _), outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, Exception):
                out[i] = as_scoring_error(outcome)
                continue
            try:
                out[i] = app.respond(runtime, outcome)
            except Exception as exc:
                out[i] = as_scoring_error(exc)
    return out  # type: ignore[return-value]  # every index is set above
