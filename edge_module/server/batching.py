"""Adaptive batching of ``ModelRuntime.predict`` calls (V2 infer), off unless ``max_batch_size > 1``.

Requests that agree on input names, dtypes and per-row shapes are concatenated along axis 0 and
scored in one call, then the outputs are cut back per request. The batcher never waits when the
model has a free scoring thread: a batch goes out on the next loop iteration (so it holds whatever
arrived in the same read). While every scoring thread is busy, requests accumulate until one frees
up, the batch is full (``max_batch_size`` rows) or the oldest has waited ``max_wait`` seconds. At low
load this adds no latency; under load the batch size grows with the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_module.server.executor import ScoringLane
from edge_module.server.v2 import split_batch

Done = Callable[[Any, BaseException | None], None]


class Batcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        lane: ScoringLane,
        max_batch_size: int,
        max_wait: float,
        concurrency: int = 1,
        observe: Callable[[int], None] | None = None,
    ):
        self.loop = loop
        self.predict = predict
        self.lane = lane
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.observe = observe
        self._pending: list[tuple[dict[str, np.ndarray], int, Done]] = []
        self._rows = 0
        self._key: tuple | None = None
        self._in_flight = 0
        self._scheduled: asyncio.Handle | None = None

    @staticmethod
    def _signature(inputs: dict[str, np.ndarray]) -> tuple | None:
        sig = []
        for name, arr in inputs.items():
            if arr.ndim == 0:
                return None
            sig.append((name, arr.dtype.str, arr.shape[1:]))
        return tuple(sig)

    def submit(self, inputs: dict[str, np.ndarray], rows: int, done: Done) -> None:
        key = self._signature(inputs)
        if key is None or rows >= self.max_batch_size:
            self._run([(inputs, rows, done)])
            return
        if self._pending and (key != self._key or self._rows + rows > self.max_batch_size):
            self._flush()
        self._key = key
        self._pending.append((inputs, rows, done))
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
        batch, self._pending, self._rows, self._key = self._pending, [], 0, None
        if batch:
            self._run(batch)

    def _run(self, batch: list[tuple[dict[str, np.ndarray], int, Done]]) -> None:
        rows = [r for _, r, _ in batch]
        if len(batch) == 1:
            merged = batch[0][0]
        else:
            names = list(batch[0][0])
            merged = {n: np.concatenate([b[0][n] for b in batch], axis=0) for n in names}
        if self.observe is not None:
            self.observe(sum(rows))
        self._in_flight += 1

        def finished(result: Any, error: BaseException | None) -> None:
            self._in_flight -= 1
            if error is None and len(batch) > 1:
                try:
                    parts: list[Any] = split_batch(result, rows)
                except ValueError as exc:
                    error = exc
            elif error is None:
                parts = [result]
            for i, (_, _, done) in enumerate(batch):
                done(None, error) if error is not None else done(parts[i], None)
            if self._pending and self._in_flight < self.concurrency:
                self._flush()

        self.lane.submit(self.predict, (merged,), finished)
