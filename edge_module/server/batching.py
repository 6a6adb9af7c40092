"""Adaptive batching of a model's calls on the event loop (V2 infer and ``/score``), off unless ``max_batch_size > 1``.

This module only schedules; merging, scoring and cutting back is :func:`edge_module.batching.score_batch`.
Requests that agree on input names, dtypes and per-row shapes go out together. The batcher never
waits when the model has a free scoring thread: a batch goes out on the next loop iteration (so it
holds whatever arrived in the same read). While every scoring thread is busy, requests accumulate
until one frees up, the batch is full (``max_batch_size`` rows) or the oldest has waited
``max_wait`` seconds. At low load this adds no latency; under load the batch size grows with the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge_module.batching import score_batch, signature
from edge_module.server.executor import ScoringLane

Done = Callable[[Any, BaseException | None], None]


class Batcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        predict: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]],
        lane: ScoringLane,
        max_batch_size: int,
        max_wait: float,
        concurrency: int = 1,
        observe: Callable[[int], None] | None = None,
        cancel: Callable[[], None] | None = None,
    ):
        self.loop = loop
        self.predict = predict
        self.lane = lane
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.observe = observe
        self.cancel = cancel  # the runtime's cancel(), for a batch that overruns the scoring timeout
        self._pending: list[tuple[Mapping[str, np.ndarray], Done]] = []
        self._rows = 0
        self._key: tuple | None = None
        self._in_flight = 0
        self._scheduled: asyncio.Handle | None = None

    def submit(self, inputs: Mapping[str, np.ndarray], rows: int, done: Done) -> None:
        """Score ``inputs`` (``rows`` along axis 0) in the next batch; ``done(outputs, error)`` on the loop."""
        key = signature(inputs)
        if key is None or rows >= self.max_batch_size:
            self._run([(inputs, done)], rows)
            return
        if self._pending and (key != self._key or self._rows + rows > self.max_batch_size):
            self._flush()
        self._key = key
        self._pending.append((inputs, done))
        self._rows += rows
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self._scheduled is None:
            if self._in_flight < self.concurrency:
                self._scheduled = self.loop.call_soon(self._flush)
            else:
                self._scheduled = self.loop.call_later(self.max_wait, self._flush)

    def _flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        batch, rows, self._pending, self._rows, self._key = self._pending, self._rows, [], 0, None
        if batch:
            self._run(batch, rows)

    def _run(self, batch: list[tuple[Mapping[str, np.ndarray], Done]], rows: int) -> None:
        if self.observe is not None:
            self.observe(rows)
        self._in_flight += 1

        def finished(outcomes: Any, error: BaseException | None) -> None:
            self._in_flight -= 1
            if error is not None:  # the scoring timeout, or a BaseException from the model
                for _, done in batch:
                    done(None, error)
            else:
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        done(None, outcome)
                    else:
                        done(outcome, None)
            if self._pending and self._in_flight < self.concurrency:
                self._flush()

        self.lane.submit(score_batch, (self.predict, [inputs for inputs, _ in batch]), finished, self.cancel)
