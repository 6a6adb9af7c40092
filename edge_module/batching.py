"""The batching core every transport shares: merge requests' inputs, score once, cut the outputs back.

Requests whose inputs agree on names, dtypes and per-row shapes (:func:`signature`) can be scored
together: their arrays are concatenated along axis 0 (:func:`merge`), scored in one call, and the
outputs cut back per request (:func:`split`). :func:`score_batch` does all three and falls back to
one call per request when the merged call fails (one request's values may break it) or its outputs
do not have one row per input row, so every failure lands on the request that caused it.

Scheduling is the callers' part: the HTTP server's :class:`~edge_module.server.batching.Batcher`
collects requests on its event loop, the MQTT and IoT Edge transports score the micro-batch they
received (:mod:`edge_module.transports.batch_scoring`). Works for any
:class:`~edge_module.runtime.ModelRuntime` (``predict`` outputs by name) and for any callable whose
outputs are a mapping or a sequence of arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from edge_module.runtime import ScoringError

Feeds = Mapping[str, np.ndarray]
Outputs = TypeVar("Outputs", Mapping[str, Any], Sequence[Any])

_NOT_AGAIN = frozenset({503, 504})  # not ready, cancelled or timed out: one call per request would not help


class RowMismatchError(ValueError):
    """A merged call's outputs do not have one row per input row: the model cannot batch."""


def signature(feeds: Feeds) -> tuple | None:
    """What requests must share to be merged: input names, dtypes and per-row shapes. None when the
    request cannot be merged with others (a 0-d input, or inputs with different row counts)."""
    sig = []
    rows = -1
    for name, arr in feeds.items():
        shape = arr.shape
        if not shape or (rows >= 0 and shape[0] != rows):
            return None
        rows = shape[0]
        sig.append((name, arr.dtype.str, shape[1:]))
    return tuple(sig)


def rows(feeds: Feeds) -> int:
    """The batch size of a request: the first dimension of its first input (1 for 0-d or no inputs)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def merge(batch: Sequence[Feeds]) -> Feeds:
    """The inputs of ``batch`` concatenated along axis 0 (the first request's names and order)."""
    if len(batch) == 1:
        return batch[0]
    return {name: np.concatenate([feeds[name] for feeds in batch], axis=0) for name in batch[0]}


def split(outputs: Outputs, counts: Sequence[int]) -> list[Outputs]:
    """Cut a merged call's outputs back per request along axis 0: a mapping into mappings, a
    sequence into lists. :class:`RowMismatchError` when an output does not have ``sum(counts)`` rows."""
    total = sum(counts)
    by_name = isinstance(outputs, Mapping)
    items = list(outputs.items()) if by_name else list(enumerate(outputs))
    for key, arr in items:
        if np.ndim(arr) == 0 or np.shape(arr)[0] != total:
            what = f"output '{key}'" if by_name else f"output {key}"
            raise RowMismatchError(f"{what} has shape {np.shape(arr)}, not {total} rows: the model cannot batch")
    parts: list[Any] = []
    start = 0
    for n in counts:
        end = start + n
        parts.append({k: a[start:end] for k, a in items} if by_name else [a[start:end] for _, a in items])
        start = end
    return parts


def score_batch(score: Callable[[Feeds], Outputs], batch: Sequence[Feeds]) -> list[Outputs | Exception]:
    """Each request's outputs, or the exception its own call raised, in order.

    Several requests (which must share a :func:`signature`) are scored in one call on their merged
    inputs; when that call raises or its outputs cannot be split, each request is scored alone. A
    merged call that was cancelled, timed out or found the model not ready (503/504) is not repeated:
    every request gets that error."""
    if len(batch) == 1:
        try:
            return [score(batch[0])]
        except Exception as exc:
            return [exc]
    try:
        return split(score(merge(batch)), [rows(feeds) for feeds in batch])
    except Exception as exc:
        if isinstance(exc, ScoringError) and exc.status in _NOT_AGAIN:
            return [exc] * len(batch)
    outcomes: list[Outputs | Exception] = []
    for feeds in batch:
        try:
            outcomes.append(score(feeds))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes
