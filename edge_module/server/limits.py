"""Per-replica concurrency, as Azure ML v1's ``maxConcurrentRequestsPerContainer`` and ``maxQueueWaitMs``.

At most ``max_concurrent_requests`` scoring requests are in progress in the whole server (the
replica: every worker process together); the next ones wait, first come first served, up to
``max_queue_wait_ms`` for a slot, then are answered 503 with ``Retry-After`` and the server's usual
JSON error body. Off (no limiter at all, nothing on the hot path) unless a limit is set.

What counts: an HTTP request to a scoring route (``/score``, V2 infer) from when its body has been
read whole and it is dispatched until its response is written. Health, metadata, swagger and metrics
routes never wait; neither do MQTT / IoT Edge messages. With adaptive batching each request holds
its own slot, so a batch of 8 requests holds 8 slots (the limit counts requests, not model calls).
A waiting request has been read whole, so the connection stays in step for keep-alive; requests
pipelined behind it on the same connection wait behind it, as they would behind a slow scorer.
A request answered 504 on the scoring timeout frees its slot, even if its call still runs on a
thread the lane gave up on. Scorers that run inline on the event loop (the no-code ONNX app) finish
a request before the worker reads the next, so with them each worker holds at most one slot.

One worker process: a plain counter on its event loop. Several workers (``--workers``): a semaphore
in shared memory, created before the workers fork (:class:`SharedLimit`), holds the limit for all of
them. A worker hands a slot it frees to its own oldest waiter directly; a worker with waiters also
polls the semaphore every millisecond for slots freed in other workers, so across workers the
order is first come, first served only roughly. Each worker records how many slots it holds in
shared memory; a worker that dies holding some has them given back by its successor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
from typing import TYPE_CHECKING

from edge_module.server.connection import Connection, HttpRequest, error_body

if TYPE_CHECKING:
    from edge_module.server.metrics import Metrics
    from edge_module.server.service import Route, Service

POLL_INTERVAL = 0.001  # seconds between looks at the shared semaphore while this worker has waiters
RETRY_AFTER = b"retry-after: 1\r\n"


class SharedLimit:
    """The limit shared by the worker processes: a bounded semaphore and per-worker held counts.

    Made by the supervisor before it forks; each worker writes only its own count."""

    def __init__(self, limit: int, workers: int):
        ctx = multiprocessing.get_context("fork")
        self.limit = limit
        self.semaphore = ctx.BoundedSemaphore(limit)
        self.held = ctx.RawArray("q", workers)

    def reclaim(self, worker: int) -> int:
        """Give back the slots a dead predecessor of ``worker`` held; how many there were."""
        stale = int(self.held[worker])
        self.held[worker] = 0
        for _ in range(stale):
            with contextlib.suppress(ValueError):  # BoundedSemaphore: never above the limit
                self.semaphore.release()
        return stale


class _Waiter:
    __slots__ = ("conn", "req", "route", "timer")

    def __init__(self, conn: Connection, req: HttpRequest, route: Route):
        self.conn = conn
        self.req = req
        self.route = route
        self.timer: asyncio.TimerHandle | None = None


class ConcurrencyLimit:
    """Admits scoring requests of one worker: :meth:`enter` when dispatched, :meth:`leave` when answered."""

    def __init__(
        self,
        service: Service,
        limit: int,
        max_wait: float,
        shared: SharedLimit | None = None,
        worker: int = 0,
    ):
        self.service = service
        self.loop = service.loop
        self.metrics: Metrics = service.metrics
        self.limit = limit
        self.max_wait = max_wait  # seconds
        self.shared = shared
        self.worker = worker
        self.active = 0  # slots this worker holds
        self.waiting: collections.deque[_Waiter] = collections.deque()
        self._poll: asyncio.TimerHandle | None = None
        if shared is not None:
            shared.reclaim(worker)
        self._message = (
            f"the server is busy: {limit} scoring requests are in progress and this one waited "
            f"{max_wait * 1000:g} ms for a slot; retry later "
            "(EDGEPACK_MAX_CONCURRENT_REQUESTS, EDGEPACK_MAX_QUEUE_WAIT_MS)"
        )

    # -- slots --------------------------------------------------------------------------------------
    def _take(self) -> bool:
        shared = self.shared
        if shared is None:
            if self.active < self.limit:
                self.active += 1
                return True
            return False
        if not shared.semaphore.acquire(False):
            return False
        self.active += 1
        shared.held[self.worker] = self.active
        return True

    def _give(self) -> None:
        self.active -= 1
        shared = self.shared
        if shared is not None:
            shared.held[self.worker] = self.active
            with contextlib.suppress(ValueError):
                shared.semaphore.release()

    # -- requests -----------------------------------------------------------------------------------
    def enter(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        """Run ``route``'s handler for ``req`` now if a slot is free, else queue it or answer 503."""
        if not self.waiting and self._take():
            req.slot = True
            route.handler(conn, req, route)
            return
        if self.max_wait <= 0:
            self._reject(req, conn)
            return
        waiter = _Waiter(conn, req, route)
        waiter.timer = self.loop.call_later(self.max_wait, self._expire, waiter)
        self.waiting.append(waiter)
        self.metrics.queued += 1
        self.metrics.waiting += 1
        if self.shared is not None and self._poll is None:
            self._poll = self.loop.call_later(POLL_INTERVAL, self._poll_shared)

    def leave(self) -> None:
        """A request holding a slot was answered: the slot goes to the oldest waiter, else back."""
        waiter = self._next()
        if waiter is None:
            self._give()
        else:
            self.loop.call_soon(self._run, waiter)  # not inside the reply that freed the slot

    def _next(self) -> _Waiter | None:
        """The oldest waiter whose client is still there (the others are answered, unsent)."""
        waiting = self.waiting
        while waiting:
            waiter = waiting.popleft()
            self.metrics.waiting -= 1
            waiter.timer.cancel()  # type: ignore[union-attr]
            if waiter.conn.transport is not None:
                return waiter
            waiter.conn.reply(waiter.req, 503, error_body("the client closed the connection while it waited"))
        return None

    def _run(self, waiter: _Waiter) -> None:
        waiter.req.slot = True
        self.service.run_route(waiter.conn, waiter.req, waiter.route)

    def _expire(self, waiter: _Waiter) -> None:
        waiting = self.waiting
        if waiting and waiting[0] is waiter:
            waiting.popleft()
        else:
            waiting.remove(waiter)
        self.metrics.waiting -= 1
        self._reject(waiter.req, waiter.conn)

    def _reject(self, req: HttpRequest, conn: Connection) -> None:
        self.metrics.rejected += 1
        key = "error" if req.path.startswith("/v2") else "message"
        conn.reply(req, 503, error_body(self._message, key), headers=[RETRY_AFTER])

    def _poll_shared(self) -> None:
        """Several workers: take the slots other workers freed for this worker's waiters."""
        self._poll = None
        while self.waiting and self._take():
            waiter = self._next()
            if waiter is None:
                self._give()
                break
            self._run(waiter)
        if self.waiting:
            self._poll = self.loop.call_later(POLL_INTERVAL, self._poll_shared)

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for waiter in self.waiting:
            waiter.timer.cancel()  # type: ignore[union-attr]
